//! `--max-memory` end to end: the import budget of every model-loading command, on the
//! malformed-model corpus's `huge_input.onnx` (a 98-byte model declaring a 4 TiB input)
//! and the embedded demo model.

mod support;
use support::cli::kiln;

const HUGE_INPUT: &str = "tests/bad-models/huge_input.onnx";
const DEMO: &str = "crates/kiln-cli/assets/demo.onnx";

fn failure_text(args: &[&str]) -> String {
    let out = kiln(args);
    assert!(!out.status.success(), "kiln {args:?} should fail");
    assert_eq!(
        out.status.code(),
        Some(1),
        "kiln {args:?}: a clean error exit"
    );
    String::from_utf8(out.stderr).expect("utf-8 stderr")
}

fn success_text(args: &[&str]) -> String {
    let out = kiln(args);
    assert!(
        out.status.success(),
        "kiln {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

#[test]
fn the_default_budget_refuses_a_model_declaring_terabytes() {
    // 1048576 × 1048576 f32 = 2^42 bytes = 4 TiB, over the default 16 GiB.
    let err = failure_text(&["info", HUGE_INPUT]);
    assert!(err.contains("huge_input.onnx"), "{err}");
    assert!(err.contains("graph input 'x'"), "{err}");
    assert!(err.contains("4.0 TiB"), "{err}");
    assert!(
        err.contains("over the import memory limit of 16.0 GiB"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn max_memory_raises_and_lowers_the_cap() {
    // Declared sizes are only counted, never allocated: with room for them the model
    // imports and `info` describes it.
    for size in ["unlimited", "64T"] {
        let info = success_text(&["info", HUGE_INPUT, "--max-memory", size]);
        assert!(info.contains("1048576"), "--max-memory {size}: {info}");
    }
    // A cap between the input (4 TiB) and the whole model names the value that crosses it.
    let err = failure_text(&["info", HUGE_INPUT, "--max-memory", "5T"]);
    assert!(
        err.contains("over the import memory limit of 5.0 TiB"),
        "{err}"
    );

    // The 5.4 K-parameter demo model (21.6 KB of f32 weights) fits the default and 1M,
    // not 1K.
    success_text(&["info", DEMO]);
    success_text(&["info", DEMO, "--max-memory", "1M"]);
    let err = failure_text(&["info", DEMO, "--max-memory", "1K"]);
    assert!(
        err.contains("over the import memory limit of 1.0 KiB"),
        "{err}"
    );
    // Every model-loading command takes the option.
    let err = failure_text(&["dump", DEMO, "--max-memory", "1K"]);
    assert!(err.contains("over the import memory limit"), "{err}");
}

#[test]
fn bad_sizes_are_usage_errors() {
    let out = kiln(&["info", DEMO, "--max-memory", "12X"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage-error exit");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown unit 'X'"), "{err}");
    let help = success_text(&["info", "--help"]);
    assert!(help.contains("--max-memory <SIZE>"), "{help}");
    assert!(help.contains("[default: 16G]"), "{help}");
}
