//! Helpers for the CLI integration tests (`tests/*_cli.rs`, `tests/cli.rs`): run the `kiln`
//! binary from the repository root and read what it printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (the tests' working directory, so relative asset paths resolve).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Run `kiln ARGS` from the repository root.
pub fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("the kiln binary runs")
}

/// Run kiln, expect success, return (stdout, stderr).
pub fn succeed(args: &[&str]) -> (String, String) {
    let out = kiln(args);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "kiln {args:?} failed: {stderr}");
    (String::from_utf8(out.stdout).unwrap(), stderr)
}

/// Run kiln, expect failure, return its stderr.
pub fn stderr_of_failure(args: &[&str]) -> String {
    let out = kiln(args);
    assert!(!out.status.success(), "kiln {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

/// A fresh scratch directory `kiln-<test crate>-<tag>-<pid>` under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "kiln-{}-{tag}-{}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A path as `&str` for an argument list (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
