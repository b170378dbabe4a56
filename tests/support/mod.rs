//! Helpers shared by the asset-driven test binaries (`tests/conformance.rs`,
//! `tests/differential.rs`): locating the assets `tools/prepare_assets.py` writes, running a
//! case with panics turned into errors, and comparing tensors against a reference; `cli`
//! runs the `kiln` binary for the CLI tests.

// Each test binary includes this module with `#[path]` and uses only part of it.
#![allow(dead_code)]

pub mod cli;
pub mod onnx_scan;

use kiln_ir::{Tensor, TensorData};
use std::cell::RefCell;
use std::path::PathBuf;
use std::process::ExitCode;

/// The assets directory from `KILN_ASSETS`, or the exit code to leave with when it is unset:
/// success with a "skipped" line locally, failure under CI (`CI=true`), where a skipped suite
/// would hide a broken `tools/test.sh`.
pub fn assets_dir(suite: &str) -> Result<PathBuf, ExitCode> {
    match std::env::var_os("KILN_ASSETS") {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                eprintln!("{suite}: KILN_ASSETS is not set under CI=true: run tools/test.sh");
                Err(ExitCode::FAILURE)
            } else {
                println!("{suite}: skipped — KILN_ASSETS not set (run tools/test.sh)");
                Err(ExitCode::SUCCESS)
            }
        }
    }
}

/// Positional command-line arguments (a name filter); cargo's own flags such as
/// `--nocapture` are ignored because a `harness = false` binary receives them too.
pub fn name_filters() -> Vec<String> {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect()
}

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Replace the panic hook with one that records the message and location for
/// [`catch_panic`] instead of printing it: a panic in the importer or interpreter is
/// reported as that case's failure, in the suite's own output.
pub fn install_quiet_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_string());
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("PANIC: {msg}{location}")));
    }));
}

/// Run `f`, turning a panic into `Err` with the recorded panic message.
pub fn catch_panic<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(_) => Err(LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| "PANIC (no message recorded)".to_string())),
    }
}

/// Elementwise closeness of f32 results: `|a − b| ≤ atol + rtol·|b|`, NaN only matching NaN.
#[derive(Copy, Clone, Debug)]
pub struct Tolerance {
    pub rtol: f64,
    pub atol: f64,
}

/// Check `actual` against `expected`: same dtype and shape; floats within `tol` (NaN matches
/// NaN, infinities must be equal), integers and bools exact. The error names the first
/// offending element and the largest absolute error.
pub fn compare_tensors(actual: &Tensor, expected: &Tensor, tol: Tolerance) -> Result<(), String> {
    if actual.dtype() != expected.dtype() {
        return Err(format!(
            "dtype {} (expected {})",
            actual.dtype(),
            expected.dtype()
        ));
    }
    if actual.shape() != expected.shape() {
        return Err(format!(
            "shape {:?} (expected {:?})",
            actual.shape(),
            expected.shape()
        ));
    }
    match (actual.data(), expected.data()) {
        (TensorData::F32(_), TensorData::F32(_)) | (TensorData::F16(_), TensorData::F16(_)) => {
            compare_floats(
                &actual.to_f64_vec(),
                &expected.to_f64_vec(),
                expected.shape(),
                tol,
            )
        }
        _ => {
            let a = actual
                .to_i64_vec()
                .expect("non-float dtypes convert to i64");
            let b = expected
                .to_i64_vec()
                .expect("non-float dtypes convert to i64");
            let mismatches = a.iter().zip(&b).filter(|(x, y)| x != y).count();
            match a.iter().zip(&b).position(|(x, y)| x != y) {
                None => Ok(()),
                Some(i) => Err(format!(
                    "{mismatches} of {} elements differ; first at {:?}: got {}, expected {}",
                    a.len(),
                    unravel(i, expected.shape()),
                    a[i],
                    b[i]
                )),
            }
        }
    }
}

fn compare_floats(a: &[f64], b: &[f64], shape: &[usize], tol: Tolerance) -> Result<(), String> {
    let mut first_bad: Option<usize> = None;
    let mut bad = 0usize;
    let mut max_abs = 0.0f64;
    let mut max_abs_at = 0usize;
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let ok = if x.is_nan() || y.is_nan() {
            x.is_nan() && y.is_nan()
        } else if x.is_infinite() || y.is_infinite() {
            x == y
        } else {
            let err = (x - y).abs();
            if err > max_abs {
                max_abs = err;
                max_abs_at = i;
            }
            err <= tol.atol + tol.rtol * y.abs()
        };
        if !ok {
            bad += 1;
            first_bad.get_or_insert(i);
        }
    }
    match first_bad {
        None => Ok(()),
        Some(i) => Err(format!(
            "{bad} of {} elements outside rtol {:e} atol {:e}; first at {:?}: got {}, expected {}; \
             max abs err {:.3e} at {:?}",
            a.len(),
            tol.rtol,
            tol.atol,
            unravel(i, shape),
            a[i],
            b[i],
            max_abs,
            unravel(max_abs_at, shape)
        )),
    }
}

/// The multi-index of flat row-major index `i` in `shape`.
pub fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (axis, &dim) in shape.iter().enumerate().rev() {
        if dim > 0 {
            index[axis] = i % dim;
            i /= dim;
        }
    }
    index
}

/// Error statistics of an f32 result against a reference, for the differential table.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct ErrorStats {
    /// max|a − b| / max|b| over the whole tensor.
    pub max_rel_to_peak: f64,
    /// max over elements of |a − b| / max(|b|, floor), floor = `ELEMENT_FLOOR`·max|b|.
    pub max_elementwise_rel: f64,
    pub max_abs: f64,
    pub max_abs_at: usize,
    /// Number of elements where exactly one side is NaN or infinite, or both are but differ.
    pub non_finite_mismatches: usize,
}

/// Elements smaller than this fraction of the tensor's peak are compared against the floor
/// `ELEMENT_FLOOR·max|b|` instead of their own magnitude, so that near-zero outputs (after a
/// ReLU, far tails of a softmax) do not turn rounding noise into huge relative errors.
pub const ELEMENT_FLOOR: f64 = 1e-3;

pub fn error_stats(actual: &[f32], expected: &[f32]) -> ErrorStats {
    let peak = expected
        .iter()
        .filter(|v| v.is_finite())
        .fold(0.0f64, |m, &v| m.max((v as f64).abs()));
    let floor = (ELEMENT_FLOOR * peak).max(f64::MIN_POSITIVE);
    let mut stats = ErrorStats {
        max_rel_to_peak: 0.0,
        max_elementwise_rel: 0.0,
        max_abs: 0.0,
        max_abs_at: 0,
        non_finite_mismatches: 0,
    };
    for (i, (&a, &b)) in actual.iter().zip(expected).enumerate() {
        if !a.is_finite() || !b.is_finite() {
            let same = (a.is_nan() && b.is_nan()) || a == b;
            if !same {
                stats.non_finite_mismatches += 1;
            }
            continue;
        }
        let err = (a as f64 - b as f64).abs();
        if err > stats.max_abs {
            stats.max_abs = err;
            stats.max_abs_at = i;
        }
        stats.max_elementwise_rel = stats
            .max_elementwise_rel
            .max(err / (b as f64).abs().max(floor));
    }
    stats.max_rel_to_peak = if peak > 0.0 {
        stats.max_abs / peak
    } else if stats.max_abs == 0.0 {
        0.0
    } else {
        f64::INFINITY
    };
    stats
}

/// Sanity checks of the comparison rules on hand-made tensors, run by each suite before it
/// starts (the suites are `harness = false` binaries, so `#[test]` functions here would never
/// run): a comparator that accepted everything would make every case "pass".
pub fn check_comparator() -> Result<(), String> {
    let tol = Tolerance {
        rtol: 1e-3,
        atol: 1e-5,
    };
    let f = |v: Vec<f32>| Tensor::from_f32(vec![v.len()], v).expect("length matches shape");
    let expect_ok = |a: &Tensor, b: &Tensor, what: &str| {
        compare_tensors(a, b, tol).map_err(|e| format!("comparator rejected {what}: {e}"))
    };
    let expect_err = |a: &Tensor, b: &Tensor, what: &str| match compare_tensors(a, b, tol) {
        Ok(()) => Err(format!("comparator accepted {what}")),
        Err(_) => Ok(()),
    };
    // 1000·(1 + 1e-3) is within rtol; 1000 + 2 is not (atol is negligible at that size).
    expect_ok(
        &f(vec![1000.0, 1.0]),
        &f(vec![1000.9, 1.0]),
        "a value within rtol",
    )?;
    expect_err(
        &f(vec![1002.0, 1.0]),
        &f(vec![1000.0, 1.0]),
        "a value outside rtol",
    )?;
    expect_ok(&f(vec![f32::NAN]), &f(vec![f32::NAN]), "NaN against NaN")?;
    expect_err(&f(vec![0.0]), &f(vec![f32::NAN]), "a number against NaN")?;
    expect_err(&f(vec![f32::NAN]), &f(vec![0.0]), "NaN against a number")?;
    expect_ok(
        &f(vec![f32::INFINITY]),
        &f(vec![f32::INFINITY]),
        "inf against inf",
    )?;
    expect_err(
        &f(vec![f32::MAX]),
        &f(vec![f32::INFINITY]),
        "a finite value against inf",
    )?;
    let shape_2x1 = Tensor::from_f32(vec![2, 1], vec![1.0, 1.0]).expect("2 elements");
    expect_err(&shape_2x1, &f(vec![1.0, 1.0]), "a shape mismatch")?;
    let ints = Tensor::from_i64(vec![2], vec![1, 2]).expect("2 elements");
    expect_err(&ints, &f(vec![1.0, 2.0]), "a dtype mismatch")?;
    let off_by_one = Tensor::from_i64(vec![2], vec![1, 3]).expect("2 elements");
    expect_err(&off_by_one, &ints, "integers that differ by one")?;
    expect_ok(&ints.clone(), &ints, "equal integers")?;
    if unravel(5, &[2, 3]) != vec![1, 2] {
        return Err(format!("unravel(5, [2, 3]) = {:?}", unravel(5, &[2, 3])));
    }
    // |b| peaks at 4; the largest error is 0.02 → 0.005 of the peak.
    let stats = error_stats(&[1.0, -3.98, 0.0], &[1.0, -4.0, 0.0]);
    if (stats.max_rel_to_peak - 0.005).abs() > 1e-6 || stats.max_abs_at != 1 {
        return Err(format!("error_stats gave {stats:?}"));
    }
    Ok(())
}
