//! The malformed-model corpus (`tests/bad-models/`, written by `tools/gen_bad_models.py`):
//! every file must be rejected with the message `expected.txt` gives for it, and no file, nor
//! any truncation or one-byte corruption of one, may panic the importer or the tensor readers.
//! Needs no KILN_ASSETS: the corpus is checked in.

use kiln_onnx::{import_file, read_tensor_proto, ImportOptions};
use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn corpus_dir() -> PathBuf {
    // Both crates that can host this test (kiln-onnx, kiln-cli) live two levels down.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/bad-models")
}

/// `(file, expected message substring)` from `expected.txt`.
fn expectations() -> Vec<(String, String)> {
    let path = corpus_dir().join("expected.txt");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run tools/gen_bad_models.py)", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (file, expected) = l
                .split_once(": ")
                .unwrap_or_else(|| panic!("expected.txt: no ': ' in line {l:?}"));
            (file.to_string(), expected.to_string())
        })
        .collect()
}

/// Read one corpus file the way kiln reads files of its kind; the error's message.
fn read_as_kiln_does(path: &Path, opts: &ImportOptions) -> Result<(), String> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("onnx") => import_file(path, opts).map(drop).map_err(|e| e.to_string()),
        Some("npy") => kiln_ir::npy::read_npy_file(path)
            .map(drop)
            .map_err(|e| e.to_string()),
        Some("pb") => {
            let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
            read_tensor_proto(&bytes)
                .map(drop)
                .map_err(|e| e.to_string())
        }
        other => panic!("{}: no reader for extension {other:?}", path.display()),
    }
}

/// A panic's message, for the report.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "<non-string panic>".into())
}

#[test]
fn every_bad_model_fails_with_its_message() {
    let dir = corpus_dir();
    let cases = expectations();
    assert!(cases.len() >= 30, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for (file, expected) in &cases {
        let path = dir.join(file);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            read_as_kiln_does(&path, &ImportOptions::default())
        }));
        match outcome {
            Err(payload) => failures.push(format!("{file}: PANICKED: {}", panic_message(payload))),
            Ok(Ok(())) => failures.push(format!("{file}: was accepted; expected '{expected}'")),
            Ok(Err(msg)) if !msg.contains(expected.as_str()) => failures.push(format!(
                "{file}:\n  expected: {expected}\n  got:      {msg}"
            )),
            Ok(Err(_)) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn every_corpus_file_is_listed() {
    let listed: BTreeSet<String> = expectations().into_iter().map(|(f, _)| f).collect();
    let mut unlisted = Vec::new();
    for entry in std::fs::read_dir(corpus_dir()).expect("the corpus directory exists") {
        let name = entry.expect("a readable entry").file_name();
        let name = name.to_string_lossy().into_owned();
        // expected.txt itself, and data files that external-data cases point at.
        if name == "expected.txt" || name.ends_with(".bin") {
            continue;
        }
        if !listed.contains(&name) {
            unlisted.push(name);
        }
    }
    assert!(unlisted.is_empty(), "not in expected.txt: {unlisted:?}");
}

/// Every prefix and many one-byte corruptions of every corpus model either import or fail
/// cleanly. A small memory limit keeps corrupted shapes from allocating much.
#[test]
fn truncated_and_corrupted_models_never_panic() {
    let opts = ImportOptions {
        max_memory: Some(64 << 20),
        ..ImportOptions::default()
    };
    let dir = corpus_dir();
    let mut panics = Vec::new();
    for (file, _) in expectations() {
        if !file.ends_with(".onnx") {
            continue;
        }
        let bytes = std::fs::read(dir.join(&file)).expect("a corpus file is readable");
        let mut variants: Vec<(String, Vec<u8>)> = (0..bytes.len())
            .map(|n| (format!("first {n} bytes"), bytes[..n].to_vec()))
            .collect();
        for at in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut bad = bytes.clone();
                bad[at] ^= flip;
                variants.push((format!("byte {at} ^ {flip:#04x}"), bad));
            }
        }
        for (what, variant) in variants {
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                kiln_onnx::import_bytes(&variant, Some(&dir), &opts).map(drop)
            }));
            if let Err(payload) = outcome {
                panics.push(format!("{file} ({what}): {}", panic_message(payload)));
            }
        }
    }
    assert!(
        panics.is_empty(),
        "{} panics:\n{}",
        panics.len(),
        panics.join("\n")
    );
}
