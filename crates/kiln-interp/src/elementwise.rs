//! Elementwise ops: activations (standalone and as fused epilogues), broadcasting binary
//! arithmetic and Sum, and inference-mode BatchNorm.

use crate::elem::{make_tensor, view, Elem};
use crate::movement::{broadcast_shape, broadcast_strides};
use kiln_ir::{Activation, BinaryOp, DType, Tensor, TensorData};

/// Apply a (fused or standalone) activation in place to f32 values, with onnxruntime's
/// formulas. NaN propagates through Relu/Clip (as numpy's `maximum`/`clip` do).
pub(crate) fn activate_f32(act: &Activation, v: &mut [f32]) {
    match *act {
        Activation::Relu => v.iter_mut().for_each(|x| {
            if *x < 0.0 {
                *x = 0.0
            }
        }),
        Activation::Clip { min, max } => {
            let (lo, hi) = (min as f32, max as f32);
            // ONNX: min first, then max, so that min > max yields max everywhere.
            v.iter_mut().for_each(|x| {
                if *x < lo {
                    *x = lo
                }
                if *x > hi {
                    *x = hi
                }
            })
        }
        Activation::LeakyRelu { alpha } => v.iter_mut().for_each(|x| {
            if *x < 0.0 {
                *x *= alpha
            }
        }),
        Activation::Sigmoid => v.iter_mut().for_each(|x| *x = sigmoid(*x)),
        Activation::Tanh => v.iter_mut().for_each(|x| *x = x.tanh()),
        Activation::HardSigmoid { alpha, beta } => v
            .iter_mut()
            .for_each(|x| *x = (alpha * *x + beta).clamp(0.0, 1.0)),
        Activation::HardSwish => v
            .iter_mut()
            .for_each(|x| *x *= (*x * (1.0 / 6.0) + 0.5).clamp(0.0, 1.0)),
    }
}

/// Logistic function without overflow: `exp` only ever sees a non-positive argument.
fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// An integer type on which ONNX defines Relu/Clip.
trait IntClamp: Elem + Ord {
    const ZERO: Self;
    fn bound(v: f64) -> Self;
}

macro_rules! int_clamp {
    ($($t:ty),*) => {$(
        impl IntClamp for $t {
            const ZERO: Self = 0;
            // an f64 bound beyond the type's range saturates (±inf = unbounded)
            fn bound(v: f64) -> Self { v as $t }
        }
    )*};
}
int_clamp!(i8, u8, i32, i64);

fn activate_int<T: IntClamp>(act: &Activation, x: &Tensor) -> Result<Tensor, String> {
    let src = view::<T>(x)?;
    let out: Vec<T> = match *act {
        Activation::Relu => src.iter().map(|&v| v.max(T::ZERO)).collect(),
        Activation::Clip { min, max } => {
            let (lo, hi) = (T::bound(min), T::bound(max));
            src.iter().map(|&v| v.max(lo).min(hi)).collect()
        }
        _ => {
            return Err(format!(
                "{} is defined on float tensors only, got {}",
                act.name(),
                x.dtype()
            ))
        }
    };
    make_tensor(x.shape().to_vec(), out)
}

/// Standalone activation op. Relu and Clip also accept integer tensors (as ONNX Relu-14 and
/// Clip-12 do); the rest are float-only.
pub(crate) fn activation(act: &Activation, x: &Tensor) -> Result<Tensor, String> {
    match x.data() {
        TensorData::F32(v) => {
            let mut out = v.clone();
            activate_f32(act, &mut out);
            make_tensor(x.shape().to_vec(), out)
        }
        TensorData::I8(_) => activate_int::<i8>(act, x),
        TensorData::U8(_) => activate_int::<u8>(act, x),
        TensorData::I32(_) => activate_int::<i32>(act, x),
        TensorData::I64(_) => activate_int::<i64>(act, x),
        _ => Err(format!("{} of a {} tensor", act.name(), x.dtype())),
    }
}

/// Arithmetic of one element type: floats are IEEE, integers wrap on overflow (two's
/// complement, as onnxruntime's C++ does) and divide truncating toward zero.
trait Arith: Elem {
    fn apply(op: BinaryOp, a: Self, b: Self) -> Result<Self, String>;
}

impl Arith for f32 {
    fn apply(op: BinaryOp, a: f32, b: f32) -> Result<f32, String> {
        Ok(match op {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
        })
    }
}

macro_rules! int_arith {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            fn apply(op: BinaryOp, a: $t, b: $t) -> Result<$t, String> {
                Ok(match op {
                    BinaryOp::Add => a.wrapping_add(b),
                    BinaryOp::Sub => a.wrapping_sub(b),
                    BinaryOp::Mul => a.wrapping_mul(b),
                    // ONNX integer Div truncates toward zero (C semantics; the onnx reference
                    // adjusts numpy's floor division to match). Division by zero is undefined
                    // in ONNX and traps in onnxruntime: report it.
                    BinaryOp::Div => {
                        if b == 0 {
                            return Err(format!("integer division by zero ({a} / 0)"));
                        }
                        a.wrapping_div(b)
                    }
                })
            }
        }
    )*};
}
int_arith!(i8, u8, i32, i64);

/// `f(a, b)` over the numpy broadcast of two tensors' shapes.
fn broadcast_zip<T: Elem, U: Elem>(
    a: &[T],
    a_shape: &[usize],
    b: &[T],
    b_shape: &[usize],
    mut f: impl FnMut(T, T) -> Result<U, String>,
) -> Result<(Vec<usize>, Vec<U>), String> {
    let shape = broadcast_shape(a_shape, b_shape)?;
    let n: usize = shape.iter().product();
    if a_shape == b_shape {
        let out = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| f(x, y))
            .collect::<Result<_, _>>()?;
        return Ok((shape, out));
    }
    if b.len() == 1 && a.len() == n {
        let y = b[0];
        let out = a.iter().map(|&x| f(x, y)).collect::<Result<_, _>>()?;
        return Ok((shape, out));
    }
    if a.len() == 1 && b.len() == n {
        let x = a[0];
        let out = b.iter().map(|&y| f(x, y)).collect::<Result<_, _>>()?;
        return Ok((shape, out));
    }
    let sa = broadcast_strides(a_shape, &shape);
    let sb = broadcast_strides(b_shape, &shape);
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return Ok((shape, out));
    }
    let rank = shape.len();
    let inner = shape[rank - 1];
    let (ia, ib) = (sa[rank - 1], sb[rank - 1]);
    let mut coord = vec![0usize; rank.saturating_sub(1)];
    let (mut oa, mut ob) = (0isize, 0isize);
    loop {
        for i in 0..inner as isize {
            out.push(f(a[(oa + i * ia) as usize], b[(ob + i * ib) as usize])?);
        }
        let mut d = rank - 1;
        loop {
            if d == 0 {
                return Ok((shape, out));
            }
            d -= 1;
            coord[d] += 1;
            oa += sa[d];
            ob += sb[d];
            if coord[d] < shape[d] {
                break;
            }
            oa -= sa[d] * shape[d] as isize;
            ob -= sb[d] * shape[d] as isize;
            coord[d] = 0;
        }
    }
}

fn binary_typed<T: Arith>(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    let (shape, out) = broadcast_zip(
        view::<T>(a)?,
        a.shape(),
        view::<T>(b)?,
        b.shape(),
        |x, y| T::apply(op, x, y),
    )?;
    make_tensor(shape, out)
}

/// Add/Sub/Mul/Div with numpy broadcasting on f32, i8, u8, i32 or i64 (both operands of the
/// same dtype, as ONNX requires).
pub(crate) fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    if a.dtype() != b.dtype() {
        return Err(format!(
            "operands of different dtypes: {} and {}",
            a.dtype(),
            b.dtype()
        ));
    }
    match a.data() {
        TensorData::F32(_) => binary_typed::<f32>(op, a, b),
        TensorData::I8(_) => binary_typed::<i8>(op, a, b),
        TensorData::U8(_) => binary_typed::<u8>(op, a, b),
        TensorData::I32(_) => binary_typed::<i32>(op, a, b),
        TensorData::I64(_) => binary_typed::<i64>(op, a, b),
        _ => Err(format!("{} of {} tensors", op.name(), a.dtype())),
    }
}

/// ONNX Sum: left-to-right broadcasting addition of every input.
pub(crate) fn sum(xs: &[&Tensor]) -> Result<Tensor, String> {
    let (first, rest) = xs.split_first().ok_or("sum of no inputs")?;
    if !matches!(
        first.dtype(),
        DType::F32 | DType::I8 | DType::U8 | DType::I32 | DType::I64
    ) {
        return Err(format!("sum of {} tensors", first.dtype()));
    }
    let mut acc = (*first).clone();
    for x in rest {
        acc = binary(BinaryOp::Add, &acc, x)?;
    }
    Ok(acc)
}

/// Inference BatchNormalization on channel axis 1, computed as onnxruntime does: per
/// channel `s = scale · (1 / sqrt(var + eps))`, `b = bias − mean · s` (all f32), then
/// `y = x · s + b`.
pub(crate) fn batch_norm(inputs: &[&Tensor], epsilon: f32) -> Result<Tensor, String> {
    let [x, scale, bias, mean, var] = inputs else {
        return Err(format!(
            "expects 5 inputs (x, scale, bias, mean, var), got {}",
            inputs.len()
        ));
    };
    let xs = view::<f32>(x)?;
    if x.shape().len() < 2 {
        return Err(format!(
            "input of rank {} has no channel axis",
            x.shape().len()
        ));
    }
    let channels = x.shape()[1];
    let params = [
        ("scale", scale),
        ("bias", bias),
        ("mean", mean),
        ("var", var),
    ];
    let mut vals = Vec::with_capacity(4);
    for (name, t) in params {
        let v = view::<f32>(t).map_err(|e| format!("{name}: {e}"))?;
        if v.len() != channels {
            return Err(format!(
                "{name} has {} elements for {channels} channels",
                v.len()
            ));
        }
        vals.push(v);
    }
    let (scale, bias, mean, var) = (vals[0], vals[1], vals[2], vals[3]);
    let inner: usize = x.shape()[2..].iter().product();
    let mut out = Vec::with_capacity(xs.len());
    // `inner == 0` means an empty tensor: nothing to compute
    for (i, chunk) in xs.chunks(inner.max(1)).enumerate().filter(|_| inner > 0) {
        let c = i % channels;
        let s = scale[c] * (1.0 / (var[c] + epsilon).sqrt());
        let b = bias[c] - mean[c] * s;
        out.extend(chunk.iter().map(|&v| v * s + b));
    }
    make_tensor(x.shape().to_vec(), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), v.to_vec()).unwrap()
    }

    #[test]
    fn activations_by_hand() {
        let x = f32s(&[5], &[-2.0, -0.5, 0.0, 0.5, 8.0]);
        let run = |a: Activation| activation(&a, &x).unwrap().as_f32().unwrap().to_vec();
        assert_eq!(run(Activation::Relu), [0.0, 0.0, 0.0, 0.5, 8.0]);
        assert_eq!(
            run(Activation::Clip {
                min: -1.0,
                max: 6.0
            }),
            [-1.0, -0.5, 0.0, 0.5, 6.0]
        );
        assert_eq!(
            run(Activation::LeakyRelu { alpha: 0.1 }),
            [-0.2, -0.05, 0.0, 0.5, 8.0]
        );
        // hard_sigmoid(0.2x + 0.5): -2 → 0.1, -0.5 → 0.4, 0 → 0.5, 0.5 → 0.6, 8 → 1 (clamped)
        let hs = run(Activation::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        });
        for (got, want) in hs.iter().zip([0.1, 0.4, 0.5, 0.6, 1.0]) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        // hard_swish: x·clamp(x/6+1/2): -2 → -2/6, 8 → 8
        let hw = run(Activation::HardSwish);
        assert!((hw[0] - (-2.0 / 6.0)).abs() < 1e-6);
        assert_eq!(hw[4], 8.0);
        // sigmoid(0) = 1/2; tanh(0) = 0; sigmoid(-200) underflows to 0 without NaN
        assert_eq!(run(Activation::Sigmoid)[2], 0.5);
        assert_eq!(run(Activation::Tanh)[2], 0.0);
        assert_eq!(sigmoid(-200.0), 0.0);
        assert_eq!(sigmoid(200.0), 1.0);
    }

    #[test]
    fn clip_on_integers_and_min_above_max() {
        let x = Tensor::new(vec![3], TensorData::I8(vec![-128, 5, 127])).unwrap();
        let y = activation(
            &Activation::Clip {
                min: -10.0,
                max: f64::INFINITY,
            },
            &x,
        )
        .unwrap();
        assert_eq!(y.data(), &TensorData::I8(vec![-10, 5, 127]));
        // ONNX: when min > max every value becomes max
        let x = f32s(&[2], &[-5.0, 5.0]);
        let y = activation(&Activation::Clip { min: 2.0, max: 1.0 }, &x).unwrap();
        assert_eq!(y.as_f32().unwrap(), &[1.0, 1.0]);
        let x = Tensor::from_i64(vec![2], vec![i64::MIN, 3]).unwrap();
        let y = activation(&Activation::Relu, &x).unwrap();
        assert_eq!(y.data(), &TensorData::I64(vec![0, 3]));
        assert!(activation(&Activation::Sigmoid, &x).is_err());
    }

    #[test]
    fn binary_broadcasts_numpy_style() {
        // [2,1] + [3] → [2,3]: rows 10, 20 plus columns 1, 2, 3
        let a = f32s(&[2, 1], &[10.0, 20.0]);
        let b = f32s(&[3], &[1.0, 2.0, 3.0]);
        let y = binary(BinaryOp::Add, &a, &b).unwrap();
        assert_eq!(y.shape(), &[2, 3]);
        assert_eq!(y.as_f32().unwrap(), &[11., 12., 13., 21., 22., 23.]);
        let y = binary(BinaryOp::Sub, &b, &a).unwrap();
        assert_eq!(y.as_f32().unwrap(), &[-9., -8., -7., -19., -18., -17.]);
        assert!(binary(BinaryOp::Add, &f32s(&[2], &[0.0; 2]), &b).is_err());
    }

    #[test]
    fn integer_division_truncates_and_overflow_wraps() {
        let a = Tensor::from_i64(vec![4], vec![7, -7, 7, -7]).unwrap();
        let b = Tensor::from_i64(vec![4], vec![2, 2, -2, -2]).unwrap();
        // C semantics: 7/2=3, -7/2=-3, 7/-2=-3, -7/-2=3
        let y = binary(BinaryOp::Div, &a, &b).unwrap();
        assert_eq!(y.data(), &TensorData::I64(vec![3, -3, -3, 3]));
        let z = Tensor::from_i64(vec![1], vec![0]).unwrap();
        assert!(binary(BinaryOp::Div, &a, &z).is_err());
        // 100 + 100 in i8 wraps to 200 - 256 = -56
        let c = Tensor::new(vec![1], TensorData::I8(vec![100])).unwrap();
        let y = binary(BinaryOp::Add, &c, &c).unwrap();
        assert_eq!(y.data(), &TensorData::I8(vec![-56]));
    }

    #[test]
    fn sum_of_three_with_broadcast() {
        let a = f32s(&[2], &[1.0, 2.0]);
        let b = f32s(&[], &[10.0]);
        let c = f32s(&[1, 2], &[100.0, 200.0]);
        let y = sum(&[&a, &b, &c]).unwrap();
        assert_eq!(y.shape(), &[1, 2]);
        assert_eq!(y.as_f32().unwrap(), &[111.0, 212.0]);
        assert_eq!(sum(&[&a]).unwrap(), a);
    }

    #[test]
    fn batch_norm_by_hand() {
        // channel 0: (x-1)/sqrt(3+1)*2+0.5 = (x-1)+0.5; channel 1: (x-0)/1*1+0 = x
        let x = f32s(&[1, 2, 2], &[3.0, 5.0, 7.0, 9.0]);
        let p = |v: [f32; 2]| f32s(&[2], &v);
        let (s, b, m, v) = (p([2.0, 1.0]), p([0.5, 0.0]), p([1.0, 0.0]), p([3.0, 1.0]));
        let y = batch_norm(&[&x, &s, &b, &m, &v], 1.0).unwrap();
        // channel 1 uses var 1 + eps 1 = 2: x / sqrt(2)
        let r = 1.0 / 2f32.sqrt();
        let want = [2.5, 4.5, 7.0 * r, 9.0 * r];
        for (g, w) in y.as_f32().unwrap().iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
    }
}
