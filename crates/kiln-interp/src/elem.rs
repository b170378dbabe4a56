//! Typed access to tensor elements: the [`Elem`] trait ties a Rust scalar type to its
//! [`DType`] and `TensorData` variant, so that data-movement kernels are written once,
//! generically, and dispatched on the runtime dtype with [`dispatch_dtype!`].

use half::f16;
use kiln_ir::{DType, Tensor, TensorData};

/// A scalar type that a tensor can hold.
pub(crate) trait Elem: Copy + Send + Sync + PartialOrd + std::fmt::Debug + 'static {
    const DTYPE: DType;
    /// The elements, if `data` holds this type.
    fn slice(data: &TensorData) -> Option<&[Self]>;
    fn into_data(v: Vec<Self>) -> TensorData;
    /// Conversion of an attribute value (a pad fill, a clip bound) to this type: floats round
    /// to nearest, integers truncate toward zero and saturate at the type's range.
    fn from_f64_saturating(v: f64) -> Self;
}

macro_rules! impl_elem {
    ($t:ty, $variant:ident, $from:expr) => {
        impl Elem for $t {
            const DTYPE: DType = DType::$variant;
            fn slice(data: &TensorData) -> Option<&[Self]> {
                match data {
                    TensorData::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn into_data(v: Vec<Self>) -> TensorData {
                TensorData::$variant(v)
            }
            fn from_f64_saturating(v: f64) -> Self {
                let convert: fn(f64) -> $t = $from;
                convert(v)
            }
        }
    };
}

// `as` from f64 to an integer truncates toward zero, saturates and maps NaN to 0.
impl_elem!(f32, F32, |v| v as f32);
impl_elem!(f16, F16, f16::from_f64);
impl_elem!(i8, I8, |v| v as i8);
impl_elem!(u8, U8, |v| v as u8);
impl_elem!(i32, I32, |v| v as i32);
impl_elem!(i64, I64, |v| v as i64);
impl_elem!(bool, Bool, |v| v != 0.0);

/// Runs `$body` with the type alias `$T` bound to the Rust type of `$dtype`.
macro_rules! dispatch_dtype {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            kiln_ir::DType::F32 => {
                type $T = f32;
                $body
            }
            kiln_ir::DType::F16 => {
                type $T = half::f16;
                $body
            }
            kiln_ir::DType::I8 => {
                type $T = i8;
                $body
            }
            kiln_ir::DType::U8 => {
                type $T = u8;
                $body
            }
            kiln_ir::DType::I32 => {
                type $T = i32;
                $body
            }
            kiln_ir::DType::I64 => {
                type $T = i64;
                $body
            }
            kiln_ir::DType::Bool => {
                type $T = bool;
                $body
            }
        }
    };
}
pub(crate) use dispatch_dtype;

/// The elements of `t` as `T`, or an error naming both dtypes.
pub(crate) fn view<T: Elem>(t: &Tensor) -> Result<&[T], String> {
    T::slice(t.data()).ok_or_else(|| {
        format!(
            "expected a {} tensor, got {} {:?}",
            T::DTYPE,
            t.dtype(),
            t.shape()
        )
    })
}

/// A tensor from a shape and elements whose count is known to match.
pub(crate) fn make_tensor<T: Elem>(shape: Vec<usize>, data: Vec<T>) -> Result<Tensor, String> {
    Tensor::new(shape, T::into_data(data)).map_err(|e| e.to_string())
}
