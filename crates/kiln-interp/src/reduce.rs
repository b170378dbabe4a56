//! Reductions: Softmax (opset 13 per-axis semantics, and the legacy opset < 13
//! coerce-to-2-D semantics) and ReduceMean.

use crate::elem::{make_tensor, view};
use kiln_ir::tensor::strides_of;
use kiln_ir::{Tensor, TensorData};

/// Softmax over `axis` (or, `legacy`, over all dims from `axis` on, flattened).
pub(crate) fn softmax(x: &Tensor, axis: usize, legacy: bool) -> Result<Tensor, String> {
    let shape = x.shape();
    if axis >= shape.len().max(1) {
        return Err(format!("axis {axis} out of range for {shape:?}"));
    }
    let src = view::<f32>(x)?;
    if src.is_empty() {
        return make_tensor::<f32>(shape.to_vec(), Vec::new());
    }
    let (dim, inner) = if legacy {
        (shape[axis..].iter().product::<usize>(), 1)
    } else if shape.is_empty() {
        (1, 1)
    } else {
        (shape[axis], shape[axis + 1..].iter().product::<usize>())
    };
    let outer = src.len() / (dim * inner);
    let mut out = vec![0f32; src.len()];
    let mut exps = vec![0f32; dim];
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * dim + k) * inner + i;
            // subtract the max so exp never overflows (what every runtime does)
            let max = (0..dim)
                .map(|k| src[at(k)])
                .fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for (k, e) in exps.iter_mut().enumerate() {
                *e = (src[at(k)] - max).exp();
                sum += *e;
            }
            for (k, e) in exps.iter().enumerate() {
                out[at(k)] = e / sum;
            }
        }
    }
    make_tensor(shape.to_vec(), out)
}

/// ReduceMean over `axes` (all axes when empty, the ONNX default). f32 sums in input order;
/// integer means sum in i64 and divide truncating toward zero (as onnxruntime's integer
/// kernels do).
pub(crate) fn reduce_mean(x: &Tensor, axes: &[usize], keepdims: bool) -> Result<Tensor, String> {
    let shape = x.shape();
    let rank = shape.len();
    if let Some(a) = axes.iter().find(|&&a| a >= rank) {
        return Err(format!("axis {a} out of range for {shape:?}"));
    }
    let reduced = |d: usize| axes.is_empty() || axes.contains(&d);
    let kept_shape: Vec<usize> = (0..rank)
        .map(|d| if reduced(d) { 1 } else { shape[d] })
        .collect();
    let out_shape: Vec<usize> = if keepdims {
        kept_shape.clone()
    } else {
        (0..rank)
            .filter(|&d| !reduced(d))
            .map(|d| shape[d])
            .collect()
    };
    let count: usize = (0..rank)
        .filter(|&d| reduced(d))
        .map(|d| shape[d])
        .product();
    if count == 0 {
        return Err(format!("mean over an empty extent of {shape:?}"));
    }
    let kept_strides = strides_of(&kept_shape);
    // Where each input element lands: its coordinates with the reduced ones zeroed.
    let out_len: usize = kept_shape.iter().product();
    let target = |mut flat: usize| -> usize {
        let mut t = 0;
        for d in (0..rank).rev() {
            let c = flat % shape[d];
            flat /= shape[d];
            if !reduced(d) {
                t += c * kept_strides[d];
            }
        }
        t
    };
    match x.data() {
        TensorData::F32(v) => {
            let mut sums = vec![0f32; out_len];
            for (i, &e) in v.iter().enumerate() {
                sums[target(i)] += e;
            }
            let out = sums.into_iter().map(|s| s / count as f32).collect();
            make_tensor(out_shape, out)
        }
        TensorData::I32(v) => {
            let mut sums = vec![0i64; out_len];
            for (i, &e) in v.iter().enumerate() {
                sums[target(i)] += e as i64;
            }
            let out = sums
                .into_iter()
                .map(|s| (s / count as i64) as i32)
                .collect();
            make_tensor(out_shape, out)
        }
        TensorData::I64(v) => {
            let mut sums = vec![0i64; out_len];
            for (i, &e) in v.iter().enumerate() {
                sums[target(i)] = sums[target(i)].wrapping_add(e);
            }
            let out = sums.into_iter().map(|s| s / count as i64).collect();
            make_tensor(out_shape, out)
        }
        _ => Err(format!("reduce_mean of a {} tensor", x.dtype())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_per_axis_and_legacy() {
        // rows [0, ln 3] → [1/4, 3/4]; softmax over axis 0 of a [2,1] column of equal
        // values → [1/2, 1/2]
        let l3 = 3f32.ln();
        let x = Tensor::from_f32(vec![2, 2], vec![0.0, l3, 0.0, l3]).unwrap();
        let y = softmax(&x, 1, false).unwrap();
        for (g, w) in y.as_f32().unwrap().iter().zip([0.25, 0.75, 0.25, 0.75]) {
            assert!((g - w).abs() < 1e-6);
        }
        let y = softmax(&x, 0, false).unwrap();
        assert_eq!(y.as_f32().unwrap(), &[0.5; 4]);
        // legacy axis 0: the whole tensor is one row: 1,3,1,3 over 8
        let y = softmax(&x, 0, true).unwrap();
        for (g, w) in y.as_f32().unwrap().iter().zip([0.125, 0.375, 0.125, 0.375]) {
            assert!((g - w).abs() < 1e-6);
        }
        // huge inputs do not overflow
        let big = Tensor::from_f32(vec![2], vec![1000.0, 1000.0]).unwrap();
        assert_eq!(
            softmax(&big, 0, false).unwrap().as_f32().unwrap(),
            &[0.5, 0.5]
        );
    }

    #[test]
    fn reduce_mean_axes_and_keepdims() {
        // [[1,2,3],[4,5,6]]: mean over axis 1 = [2,5]; over axis 0 = [2.5,3.5,4.5]; all = 3.5
        let x = Tensor::from_f32(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap();
        let y = reduce_mean(&x, &[1], true).unwrap();
        assert_eq!(
            (y.shape(), y.as_f32().unwrap()),
            (&[2, 1][..], &[2., 5.][..])
        );
        let y = reduce_mean(&x, &[0], false).unwrap();
        assert_eq!(
            (y.shape(), y.as_f32().unwrap()),
            (&[3][..], &[2.5, 3.5, 4.5][..])
        );
        let y = reduce_mean(&x, &[], false).unwrap();
        assert_eq!((y.shape(), y.as_f32().unwrap()), (&[][..], &[3.5][..]));
        // integer mean truncates toward zero: (-1 + -2) / 2 = -1
        let i = Tensor::from_i64(vec![2], vec![-1, -2]).unwrap();
        assert_eq!(
            reduce_mean(&i, &[0], false).unwrap().as_i64().unwrap(),
            &[-1]
        );
    }
}
