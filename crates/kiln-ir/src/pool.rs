//! The constant pool: every weight and folded constant of a graph, referenced by id and
//! deduplicated by content hash, so that identical weights are stored (and printed) once.

use crate::dtype::DType;
use crate::error::IrError;
use crate::tensor::{checked_numel, Tensor, TensorData, TensorStats};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Index of a constant in its graph's pool; printed as `@c7`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConstId(pub u32);

/// A deterministic generator for constants in hand-written `.kir` files, so that test inputs
/// need not spell out thousands of numbers. The same generator always yields the same bits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Generator {
    /// Normal(mean, std) from a seeded SplitMix64 stream and the Box–Muller transform.
    Normal { seed: u64, mean: f32, std: f32 },
    /// Uniform in [low, high) from a seeded SplitMix64 stream.
    Uniform { seed: u64, low: f32, high: f32 },
    /// Every element equal to `value`.
    Full { value: f64 },
    /// `start + i·step` for element `i` in row-major order.
    Arange { start: f64, step: f64 },
}

/// SplitMix64: tiny, seedable, and identical on every platform (unlike `rand`'s defaults,
/// which may change between versions and would silently change test inputs).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

impl Generator {
    /// Materialize the generator as a tensor of `dtype` and `shape` (integer dtypes round the
    /// generated reals half to even and saturate).
    pub fn generate(&self, dtype: DType, shape: &[usize]) -> Result<Tensor, IrError> {
        let n = checked_numel(shape).ok_or_else(|| IrError::ShapeOverflow {
            shape: shape.to_vec(),
        })?;
        let values: Vec<f64> = match *self {
            Generator::Normal { seed, mean, std } => {
                let mut rng = SplitMix64(seed);
                (0..n)
                    .map(|_| {
                        let u1 = 1.0 - rng.next_f64(); // (0, 1]: ln is finite
                        let u2 = rng.next_f64();
                        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                        mean as f64 + std as f64 * z
                    })
                    .collect()
            }
            Generator::Uniform { seed, low, high } => {
                let mut rng = SplitMix64(seed);
                (0..n)
                    .map(|_| low as f64 + (high as f64 - low as f64) * rng.next_f64())
                    .collect()
            }
            Generator::Full { value } => vec![value; n],
            Generator::Arange { start, step } => (0..n).map(|i| start + step * i as f64).collect(),
        };
        let sat = |v: f64, lo: f64, hi: f64| v.round_ties_even().clamp(lo, hi);
        let data = match dtype {
            DType::F32 => TensorData::F32(values.iter().map(|&v| v as f32).collect()),
            DType::F16 => TensorData::F16(values.iter().map(|&v| half::f16::from_f64(v)).collect()),
            DType::I8 => TensorData::I8(
                values
                    .iter()
                    .map(|&v| sat(v, -128.0, 127.0) as i8)
                    .collect(),
            ),
            DType::U8 => TensorData::U8(values.iter().map(|&v| sat(v, 0.0, 255.0) as u8).collect()),
            DType::I32 => TensorData::I32(
                values
                    .iter()
                    .map(|&v| sat(v, i32::MIN as f64, i32::MAX as f64) as i32)
                    .collect(),
            ),
            DType::I64 => {
                TensorData::I64(values.iter().map(|&v| v.round_ties_even() as i64).collect())
            }
            DType::Bool => TensorData::Bool(values.iter().map(|&v| v != 0.0).collect()),
        };
        Tensor::new(shape.to_vec(), data)
    }
}

/// Where a constant's value comes from; decides how the text format prints it.
#[derive(Clone, Debug, PartialEq)]
pub enum ConstValue {
    /// Real data (from a model file, an inline list, or a fold).
    Data(Tensor),
    /// Data produced by a generator; printed as the generator so dumps round-trip exactly.
    Generated {
        generator: Generator,
        tensor: Tensor,
    },
    /// A constant parsed from a dump that printed only a summary: its type is known, its
    /// values are not. Printing works; executing it is an error.
    Opaque {
        dtype: DType,
        shape: Vec<usize>,
        stats: TensorStats,
    },
}

impl ConstValue {
    pub fn tensor(&self) -> Option<&Tensor> {
        match self {
            ConstValue::Data(t) | ConstValue::Generated { tensor: t, .. } => Some(t),
            ConstValue::Opaque { .. } => None,
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            ConstValue::Data(t) | ConstValue::Generated { tensor: t, .. } => t.dtype(),
            ConstValue::Opaque { dtype, .. } => *dtype,
        }
    }

    pub fn shape(&self) -> &[usize] {
        match self {
            ConstValue::Data(t) | ConstValue::Generated { tensor: t, .. } => t.shape(),
            ConstValue::Opaque { shape, .. } => shape,
        }
    }
}

/// Constants of one graph, deduplicated by content.
#[derive(Clone, Debug, Default)]
pub struct ConstPool {
    entries: Vec<ConstValue>,
    by_hash: HashMap<u64, Vec<ConstId>>,
}

impl ConstPool {
    pub fn new() -> ConstPool {
        ConstPool::default()
    }

    /// Add a constant, returning the id of a bitwise-identical existing one if there is one.
    pub fn intern(&mut self, value: ConstValue) -> ConstId {
        let hash = match value.tensor() {
            Some(t) => t.content_hash(),
            None => {
                // Opaque constants have no content to compare: never deduplicated.
                let id = ConstId(self.entries.len() as u32);
                self.entries.push(value);
                return id;
            }
        };
        if let Some(ids) = self.by_hash.get(&hash) {
            for &id in ids {
                let existing = &self.entries[id.0 as usize];
                let same_origin = matches!(
                    (existing, &value),
                    (ConstValue::Data(_), ConstValue::Data(_))
                ) || matches!(
                    (existing, &value),
                    (ConstValue::Generated { generator: a, .. }, ConstValue::Generated { generator: b, .. }) if a == b
                );
                if same_origin
                    && existing
                        .tensor()
                        .zip(value.tensor())
                        .is_some_and(|(a, b)| a.bitwise_eq(b))
                {
                    return id;
                }
            }
        }
        let id = ConstId(self.entries.len() as u32);
        self.entries.push(value);
        self.by_hash.entry(hash).or_default().push(id);
        id
    }

    /// Add a tensor of real data (the common case).
    pub fn intern_tensor(&mut self, tensor: Tensor) -> ConstId {
        self.intern(ConstValue::Data(tensor))
    }

    pub fn get(&self, id: ConstId) -> Option<&ConstValue> {
        self.entries.get(id.0 as usize)
    }

    /// The tensor of a constant, or an error naming it if it is missing or opaque.
    pub fn tensor(&self, id: ConstId) -> Result<&Tensor, IrError> {
        match self.get(id) {
            None => Err(IrError::MissingConst { id: id.0 }),
            Some(v) => v.tensor().ok_or(IrError::OpaqueConst { id: id.0 }),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (ConstId, &ConstValue)> {
        self.entries
            .iter()
            .enumerate()
            .map(|(i, v)| (ConstId(i as u32), v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_tensors_share_an_id() {
        let mut pool = ConstPool::new();
        let a = pool.intern_tensor(Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap());
        let b = pool.intern_tensor(Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap());
        let c = pool.intern_tensor(Tensor::from_f32(vec![2], vec![1.0, 3.0]).unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn generators_are_deterministic_and_have_the_requested_moments() {
        let g = Generator::Normal {
            seed: 7,
            mean: 1.0,
            std: 2.0,
        };
        let a = g.generate(DType::F32, &[100, 100]).unwrap();
        let b = g.generate(DType::F32, &[100, 100]).unwrap();
        assert!(a.bitwise_eq(&b));
        let s = a.stats();
        // 10k samples: the sample mean is within 4 standard errors (4·2/100) of 1.0.
        assert!((s.mean - 1.0).abs() < 0.08, "mean {}", s.mean);
        assert!((s.std - 2.0).abs() < 0.08, "std {}", s.std);
    }
}
