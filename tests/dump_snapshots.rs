//! Snapshot tests of `kiln dump` text output: the embedded demo model after import and after
//! `-O1`, and the
//! hand-written `.kir` cases in tests/kir/. Snapshots live in the top-level snapshots/ folder;
//! review every diff with `cargo insta review` (never accept blindly).

use std::path::Path;
use std::process::Command;

fn kiln_dump(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("dump")
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .output()
        .expect("the kiln binary runs");
    assert!(
        out.status.success(),
        "kiln dump {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("dumps are UTF-8")
}

fn assert_dump_snapshot(name: &str, text: &str) {
    insta::with_settings!({
        snapshot_path => "../snapshots",
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, text);
    });
}

#[test]
fn demo_model_after_import() {
    let text = kiln_dump(&["crates/kiln-cli/assets/demo.onnx"]);
    assert_dump_snapshot("dump__demo_import", &text);
}

/// The demo model after the default pipeline: BatchNorms folded, the residual add and the
/// ReLUs fused into the convs.
#[test]
fn demo_model_after_o1() {
    let text = kiln_dump(&["crates/kiln-cli/assets/demo.onnx", "-O1"]);
    assert_dump_snapshot("dump__demo_o1", &text);
}

#[test]
fn kir_conv_bn_relu() {
    let text = kiln_dump(&["tests/kir/conv_bn_relu.kir"]);
    assert_dump_snapshot("dump__conv_bn_relu", &text);
}

#[test]
fn kir_residual_block() {
    let text = kiln_dump(&["tests/kir/residual_block.kir"]);
    assert_dump_snapshot("dump__residual_block", &text);
}

/// The dump of a dump is the dump: the text format round-trips through the CLI too.
#[test]
fn dump_of_a_dump_is_identical() {
    let first = kiln_dump(&["crates/kiln-cli/assets/demo.onnx"]);
    let dir = std::env::temp_dir().join(format!("kiln-dump-roundtrip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("demo.kir");
    std::fs::write(&path, &first).unwrap();
    let second = kiln_dump(&[path.to_str().unwrap()]);
    assert_eq!(first, second);
    std::fs::remove_dir_all(&dir).ok();
}
