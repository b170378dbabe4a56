//! The import's resource bounds: the memory budget ([`crate::ImportOptions::max_memory`]),
//! which counts every tensor the import declares or creates from its shape before anything
//! is allocated, and the work bound on constant folding, so that a small model claiming
//! absurd shapes or windows fails (or defers work to run time) instead of exhausting memory
//! or hanging the import.

use crate::error::OnnxError;
use kiln_ir::tensor::checked_numel;
use kiln_ir::{Op, ResizeMode, TensorType};

/// The most element operations a node may cost to be folded at import (about a second of
/// reference-interpreter time). Shape arithmetic and weight preprocessing cost far less; a
/// node above it stays in the graph and is computed at run time like any other.
pub(crate) const FOLD_WORK_LIMIT: u128 = 1 << 28;

/// Bytes counted so far against an optional limit.
pub(crate) struct MemoryBudget {
    limit: Option<u64>,
    used: u64,
}

impl MemoryBudget {
    pub fn new(limit: Option<u64>) -> MemoryBudget {
        MemoryBudget { limit, used: 0 }
    }

    /// Count `bytes` for the tensor `what` describes (built only for the error), failing
    /// when the total would pass the limit.
    pub fn charge(&mut self, bytes: u64, what: impl FnOnce() -> String) -> Result<(), OnnxError> {
        let total = self.used.saturating_add(bytes);
        if let Some(limit) = self.limit {
            if total > limit {
                return Err(OnnxError::MemoryLimit {
                    what: what(),
                    bytes,
                    used: self.used,
                    limit,
                });
            }
        }
        self.used = total;
        Ok(())
    }
}

/// The byte size of a dense tensor of `shape` with `elem_bytes`-byte elements, or why no
/// such tensor can exist on this machine: its element count or byte size overflows.
pub(crate) fn byte_size(shape: &[usize], elem_bytes: usize) -> Result<u64, String> {
    let numel = checked_numel(shape)
        .ok_or_else(|| format!("shape {shape:?} has more elements than fit in memory"))?;
    numel
        .checked_mul(elem_bytes)
        .map(|b| b as u64)
        .ok_or_else(|| {
            format!(
                "shape {shape:?} ({numel} elements of {elem_bytes} bytes) has more bytes than \
                 fit in memory"
            )
        })
}

/// An upper estimate of the element operations evaluating `op` costs: the windowed and
/// contracting ops by their taps per output, everything else by the elements it touches.
/// Saturating, so absurd attributes give a huge number rather than an overflow.
pub(crate) fn fold_work(op: &Op, inputs: &[&TensorType], outputs: &[TensorType]) -> u128 {
    let count = |dims: &[usize]| {
        dims.iter()
            .fold(1u128, |acc, &d| acc.saturating_mul(d as u128))
    };
    // Element counts, plus every output dim on its own: the interpreter builds per-axis
    // index tables, which an empty output with one huge dim would still make enormous.
    let touched = inputs
        .iter()
        .map(|t| count(&t.shape))
        .chain(outputs.iter().map(|t| count(&t.shape)))
        .chain(
            outputs
                .iter()
                .flat_map(|t| t.shape.iter().map(|&d| d as u128)),
        )
        .fold(0u128, u128::saturating_add);
    let out = outputs.first().map_or(0, |t| count(&t.shape));
    let input_dim = |i: usize, d: usize| {
        inputs
            .get(i)
            .and_then(|t| t.shape.get(d))
            .copied()
            .unwrap_or(1)
    };
    let per_output: u128 = match op {
        Op::Conv(a) | Op::QConv(a) | Op::ConvInteger(a) => {
            count(&a.kernel).saturating_mul((input_dim(0, 1) / a.groups.max(1)) as u128)
        }
        // Each input element scatters into C_out/groups · kernel outputs; in outputs'
        // terms that is at most the same count per output element.
        Op::ConvTranspose(a) => count(&a.kernel).saturating_mul(input_dim(1, 1) as u128),
        Op::MaxPool(a) | Op::AveragePool(a) => count(&a.kernel),
        Op::MatMul | Op::QMatMul | Op::MatMulInteger => {
            let a = inputs.first().map_or(&[][..], |t| &t.shape[..]);
            a.last().copied().unwrap_or(1) as u128
        }
        Op::Gemm(g) => input_dim(0, usize::from(!g.trans_a)) as u128,
        Op::Lrn { size, .. } => *size as u128,
        // Up to 4 taps per axis (cubic), and antialiased shrinking reads every input
        // element that many times: bounded by touching everything 4^rank times.
        Op::Resize(a) => {
            let taps = match a.mode {
                ResizeMode::Nearest => 1u128,
                ResizeMode::Linear | ResizeMode::Cubic => {
                    4u128.saturating_pow(a.sizes.len() as u32)
                }
            };
            return touched.saturating_mul(taps);
        }
        _ => 0,
    };
    touched.saturating_add(out.saturating_mul(per_output))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_counts_everything_charged_so_far() {
        let mut budget = MemoryBudget::new(Some(100));
        budget.charge(60, || "a".into()).unwrap();
        budget.charge(40, || "b".into()).unwrap();
        let err = budget.charge(1, || "tensor 'c'".into()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tensor 'c' needs 1 B (1 bytes) on top of the 100 B imported before it, over the \
             import memory limit of 100 B; raise it with --max-memory if the model really is \
             that large"
        );
        // A failed charge counts nothing; without a limit only overflow could stop it.
        let mut unlimited = MemoryBudget::new(None);
        unlimited.charge(u64::MAX, || "x".into()).unwrap();
        unlimited.charge(u64::MAX, || "y".into()).unwrap();
    }

    #[test]
    fn fold_work_counts_window_taps() {
        let f32s = |shape: &[usize]| TensorType::f32(shape.to_vec());
        let pool = |kernel: Vec<usize>| {
            Op::MaxPool(kiln_ir::PoolAttrs {
                strides: vec![1; kernel.len()],
                pads: vec![0; 2 * kernel.len()],
                dilations: vec![1; kernel.len()],
                kernel,
                ceil_mode: false,
                count_include_pad: false,
                storage_order: 0,
            })
        };
        // 1·2·4·4 inputs + 1·2·2·2 outputs touched, the output dims 1 + 2 + 2 + 2, plus
        // 8 outputs · 9 taps.
        let x = f32s(&[1, 2, 4, 4]);
        let y = f32s(&[1, 2, 2, 2]);
        assert_eq!(
            fold_work(&pool(vec![3, 3]), &[&x], std::slice::from_ref(&y)),
            32 + 8 + 7 + 72
        );
        // A 2^62 · 2^62 window saturates instead of overflowing.
        let huge = fold_work(
            &pool(vec![1 << 62, 1 << 62]),
            &[&x],
            std::slice::from_ref(&y),
        );
        assert!(huge > FOLD_WORK_LIMIT);
        // Element-wise ops touch their inputs and outputs once.
        assert_eq!(
            fold_work(&Op::Identity, &[&x], std::slice::from_ref(&x)),
            64 + 11
        );
        // An empty output with a huge dim still counts that dim.
        let empty = f32s(&[1 << 40, 0]);
        assert!(fold_work(&Op::Identity, &[&x], &[empty]) > FOLD_WORK_LIMIT);
    }

    #[test]
    fn sizes_that_overflow_are_errors() {
        assert_eq!(byte_size(&[2, 3], 4), Ok(24));
        assert_eq!(byte_size(&[], 8), Ok(8));
        assert_eq!(byte_size(&[0, usize::MAX], 4), Ok(0));
        assert_eq!(
            byte_size(&[1 << 40, 1 << 40], 1).unwrap_err(),
            "shape [1099511627776, 1099511627776] has more elements than fit in memory"
        );
        // 2^62 elements fit in a 64-bit usize, 2^62 · 8 bytes do not.
        assert!(byte_size(&[1 << 31, 1 << 31], 8)
            .unwrap_err()
            .contains("has more bytes than fit in memory"));
    }
}
