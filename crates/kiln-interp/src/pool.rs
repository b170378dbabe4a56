//! Pooling (MaxPool with optional Indices, AveragePool, global pools) and LRN, following
//! onnxruntime's CPU kernels: windows are clipped to the input (padding never wins a max),
//! and with `ceil_mode` a window that would start past the padded input is dropped.

use crate::elem::{make_tensor, view, Elem};
use kiln_ir::window::pool_output_extents;
use kiln_ir::{DType, PoolAttrs, Tensor, TensorData};

const SP: usize = 3;

/// Pool geometry with spatial dims padded to three (leading unit dims).
struct PoolGeometry {
    /// N·C: pooling never mixes channels.
    planes: usize,
    input: [usize; SP],
    output: [usize; SP],
    kernel: [usize; SP],
    stride: [usize; SP],
    dilation: [usize; SP],
    pad_begin: [usize; SP],
    pad_end: [usize; SP],
    nsp: usize,
    /// `[N, C, out_spatial..]`
    out_shape: Vec<usize>,
}

fn widen(v: &[usize], fill: usize) -> [usize; SP] {
    let mut out = [fill; SP];
    out[SP - v.len()..].copy_from_slice(v);
    out
}

impl PoolGeometry {
    fn new(x: &[usize], attrs: &PoolAttrs) -> Result<PoolGeometry, String> {
        let out = pool_output_extents(x, attrs)?;
        let nsp = out.len();
        let mut out_shape = x[..2].to_vec();
        out_shape.extend_from_slice(&out);
        Ok(PoolGeometry {
            planes: x[0] * x[1],
            input: widen(&x[2..], 1),
            output: widen(&out, 1),
            kernel: widen(&attrs.kernel, 1),
            stride: widen(&attrs.strides, 1),
            dilation: widen(&attrs.dilations, 1),
            pad_begin: widen(&attrs.pads[..nsp], 0),
            pad_end: widen(&attrs.pads[nsp..], 0),
            nsp,
            out_shape,
        })
    }

    /// Window taps of output index `o` along dim `d`: (real input indices, count of taps
    /// inside the padded extent `[-pad_begin, in + pad_end)`).
    fn taps(&self, d: usize, o: usize) -> (Vec<usize>, usize) {
        let start = (o * self.stride[d]) as isize - self.pad_begin[d] as isize;
        let padded_end = (self.input[d] + self.pad_end[d]) as isize;
        let mut real = Vec::with_capacity(self.kernel[d]);
        let mut in_padded = 0;
        for k in 0..self.kernel[d] {
            let i = start + (k * self.dilation[d]) as isize;
            if i < padded_end {
                in_padded += 1;
            }
            if i >= 0 && (i as usize) < self.input[d] {
                real.push(i as usize);
            }
        }
        (real, in_padded)
    }

    /// Per-dim tap tables for every output index.
    fn tap_tables(&self) -> [Vec<(Vec<usize>, usize)>; SP] {
        std::array::from_fn(|d| (0..self.output[d]).map(|o| self.taps(d, o)).collect())
    }
}

/// The lowest value of a type, which an all-padding max window yields (onnxruntime starts
/// its running max at `numeric_limits::lowest()`).
trait Lowest: Elem {
    const LOWEST: Self;
}
impl Lowest for f32 {
    const LOWEST: f32 = f32::MIN;
}
impl Lowest for i8 {
    const LOWEST: i8 = i8::MIN;
}
impl Lowest for u8 {
    const LOWEST: u8 = u8::MIN;
}

fn max_pool_typed<T: Lowest>(
    x: &Tensor,
    g: &PoolGeometry,
    storage_order: u8,
    with_indices: bool,
) -> Result<Vec<Tensor>, String> {
    let src = view::<T>(x)?;
    let in_n: usize = g.input.iter().product();
    let out_n: usize = g.output.iter().product();
    let tables = g.tap_tables();
    let [_, ih, iw] = g.input;
    // Indices are flat offsets into the whole input; column-major (storage_order 1) orders
    // the spatial coordinates first-dim-fastest, as onnxruntime does.
    let real_dims: Vec<usize> = g.input[SP - g.nsp..].to_vec();
    let flat_index = |coord: [usize; SP]| -> i64 {
        let c = &coord[SP - g.nsp..];
        if storage_order == 0 {
            c.iter()
                .zip(&real_dims)
                .fold(0, |acc, (&i, &n)| acc * n + i) as i64
        } else {
            c.iter()
                .zip(&real_dims)
                .rev()
                .fold(0, |acc, (&i, &n)| acc * n + i) as i64
        }
    };
    let mut values = Vec::with_capacity(g.planes * out_n);
    let mut indices = Vec::with_capacity(if with_indices { g.planes * out_n } else { 0 });
    for p in 0..g.planes {
        let plane = &src[p * in_n..(p + 1) * in_n];
        for (tz, _) in &tables[0] {
            for (ty, _) in &tables[1] {
                for (tx, _) in &tables[2] {
                    let mut best = T::LOWEST;
                    let mut best_at: Option<[usize; SP]> = None;
                    for &z in tz {
                        for &y in ty {
                            for &xx in tx {
                                let v = plane[(z * ih + y) * iw + xx];
                                // strict `>`: the first maximum wins; NaN never does
                                if v > best || best_at.is_none() && v == best {
                                    best = v;
                                    best_at = Some([z, y, xx]);
                                }
                            }
                        }
                    }
                    values.push(best);
                    if with_indices {
                        indices.push(match best_at {
                            Some(c) => (p * in_n) as i64 + flat_index(c),
                            None => -1,
                        });
                    }
                }
            }
        }
    }
    let mut outs = vec![make_tensor(g.out_shape.clone(), values)?];
    if with_indices {
        outs.push(make_tensor(g.out_shape.clone(), indices)?);
    }
    Ok(outs)
}

/// MaxPool on f32, i8 or u8; the second output (when requested) holds i64 indices.
pub(crate) fn max_pool(
    x: &Tensor,
    attrs: &PoolAttrs,
    with_indices: bool,
) -> Result<Vec<Tensor>, String> {
    let g = PoolGeometry::new(x.shape(), attrs)?;
    if attrs.storage_order > 1 {
        return Err(format!("storage_order {} (0 or 1)", attrs.storage_order));
    }
    match x.dtype() {
        DType::F32 => max_pool_typed::<f32>(x, &g, attrs.storage_order, with_indices),
        DType::I8 => max_pool_typed::<i8>(x, &g, attrs.storage_order, with_indices),
        DType::U8 => max_pool_typed::<u8>(x, &g, attrs.storage_order, with_indices),
        d => Err(format!("max_pool of a {d} tensor")),
    }
}

/// AveragePool on f32. The divisor is the number of real input taps, or with
/// `count_include_pad` the taps inside the padded extent — a window that `ceil_mode` lets
/// run past the end padding is truncated there (checked against onnxruntime).
pub(crate) fn average_pool(x: &Tensor, attrs: &PoolAttrs) -> Result<Tensor, String> {
    let g = PoolGeometry::new(x.shape(), attrs)?;
    let src = view::<f32>(x)?;
    let in_n: usize = g.input.iter().product();
    let tables = g.tap_tables();
    let [_, ih, iw] = g.input;
    let mut out = Vec::with_capacity(g.planes * g.output.iter().product::<usize>());
    for p in 0..g.planes {
        let plane = &src[p * in_n..(p + 1) * in_n];
        for (tz, pz) in &tables[0] {
            for (ty, py) in &tables[1] {
                for (tx, px) in &tables[2] {
                    let mut sum = 0f32;
                    for &z in tz {
                        for &y in ty {
                            for &xx in tx {
                                sum += plane[(z * ih + y) * iw + xx];
                            }
                        }
                    }
                    let real = tz.len() * ty.len() * tx.len();
                    let divisor = if attrs.count_include_pad {
                        pz * py * px
                    } else {
                        real
                    };
                    // onnxruntime leaves an all-padding window at 0
                    out.push(if real == 0 { 0.0 } else { sum / divisor as f32 });
                }
            }
        }
    }
    make_tensor(g.out_shape, out)
}

/// GlobalAveragePool / GlobalMaxPool: reduce every spatial dim to 1.
pub(crate) fn global_pool(x: &Tensor, max: bool) -> Result<Tensor, String> {
    let shape = x.shape();
    if shape.len() < 3 {
        return Err(format!("input {shape:?} has no spatial dims"));
    }
    let inner: usize = shape[2..].iter().product();
    let planes = shape[0] * shape[1];
    let mut out_shape = shape[..2].to_vec();
    out_shape.extend(std::iter::repeat_n(1, shape.len() - 2));
    if inner == 0 {
        return Err(format!(
            "global pool over an empty spatial extent {shape:?}"
        ));
    }
    if max {
        return dispatch_max(x, planes, inner, out_shape);
    }
    let src = view::<f32>(x)?;
    let out: Vec<f32> = src
        .chunks(inner)
        .take(planes)
        .map(|c| c.iter().sum::<f32>() / inner as f32)
        .collect();
    make_tensor(out_shape, out)
}

fn dispatch_max(
    x: &Tensor,
    planes: usize,
    inner: usize,
    out_shape: Vec<usize>,
) -> Result<Tensor, String> {
    fn typed<T: Lowest>(
        x: &Tensor,
        planes: usize,
        inner: usize,
        shape: Vec<usize>,
    ) -> Result<Tensor, String> {
        let out: Vec<T> = view::<T>(x)?
            .chunks(inner)
            .take(planes)
            .map(|c| c.iter().fold(T::LOWEST, |m, &v| if v > m { v } else { m }))
            .collect();
        make_tensor(shape, out)
    }
    match x.data() {
        TensorData::F32(_) => typed::<f32>(x, planes, inner, out_shape),
        TensorData::I8(_) => typed::<i8>(x, planes, inner, out_shape),
        TensorData::U8(_) => typed::<u8>(x, planes, inner, out_shape),
        _ => Err(format!("global_max_pool of a {} tensor", x.dtype())),
    }
}

/// Local response normalization across channels (ONNX LRN):
/// `y = x / (bias + alpha/size · Σ_{c'} x[c']²)^beta` with `c'` in
/// `[c − ⌊(size−1)/2⌋, c + ⌈(size−1)/2⌉]` clipped to the channels.
pub(crate) fn lrn(
    x: &Tensor,
    size: usize,
    alpha: f32,
    beta: f32,
    bias: f32,
) -> Result<Tensor, String> {
    let shape = x.shape();
    if shape.len() < 3 || size == 0 {
        return Err(format!(
            "lrn of {shape:?} with size {size}: needs [N, C, spatial..] and size ≥ 1"
        ));
    }
    let src = view::<f32>(x)?;
    let (n, c) = (shape[0], shape[1]);
    let inner: usize = shape[2..].iter().product();
    let (before, after) = ((size - 1) / 2, (size - 1).div_ceil(2));
    let scale = alpha / size as f32;
    let mut out = vec![0f32; src.len()];
    for b in 0..n {
        for ch in 0..c {
            let lo = ch.saturating_sub(before);
            let hi = (ch + after).min(c - 1);
            for i in 0..inner {
                let mut sq = 0f32;
                for cc in lo..=hi {
                    let v = src[(b * c + cc) * inner + i];
                    sq += v * v;
                }
                let at = (b * c + ch) * inner + i;
                out[at] = src[at] / (bias + scale * sq).powf(beta);
            }
        }
    }
    make_tensor(shape.to_vec(), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(
        kernel: &[usize],
        strides: &[usize],
        pads: &[usize],
        ceil: bool,
        cip: bool,
    ) -> PoolAttrs {
        PoolAttrs {
            kernel: kernel.to_vec(),
            strides: strides.to_vec(),
            pads: pads.to_vec(),
            dilations: vec![1; kernel.len()],
            ceil_mode: ceil,
            count_include_pad: cip,
            storage_order: 0,
        }
    }

    fn ones(shape: &[usize]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), vec![1.0; shape.iter().product()]).unwrap()
    }

    #[test]
    fn average_pool_divisors_with_padding_and_ceil_mode() {
        // All-ones input: each output = real taps / divisor. Length 6, kernel 3, stride 2,
        // pads (1,1), ceil → 4 windows starting at -1, 1, 3, 5. With count_include_pad the
        // divisor counts taps inside [-1, 7): 3, 3, 3, 2 (the last window is cut at 7);
        // real taps are 2, 3, 3, 1. onnxruntime 1.31 gives [0.6667, 1, 1, 0.5] here.
        let x = ones(&[1, 1, 6]);
        let y = average_pool(&x, &attrs(&[3], &[2], &[1, 1], true, true)).unwrap();
        let want = [2.0 / 3.0, 1.0, 1.0, 0.5];
        assert_eq!(y.shape(), &[1, 1, 4]);
        for (g, w) in y.as_f32().unwrap().iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
        // without count_include_pad every window of ones averages to 1
        let y = average_pool(&x, &attrs(&[3], &[2], &[1, 1], true, false)).unwrap();
        assert_eq!(y.as_f32().unwrap(), &[1.0; 4]);
        // 2-D corner of a 6×6 with the same geometry: (1 real × 1 real) / (2 × 2) = 1/4
        let y = average_pool(
            &ones(&[1, 1, 6, 6]),
            &attrs(&[3, 3], &[2, 2], &[1; 4], true, true),
        )
        .unwrap();
        assert_eq!(y.as_f32().unwrap()[15], 0.25);
    }

    #[test]
    fn ceil_mode_drops_a_window_starting_in_end_padding() {
        // length 5, kernel 2, stride 2, pads (1,1): ceil((5+2-2)/2)+1 = 4, but window 3
        // would start at 6-1 = 5 ≥ 5, past the input → 3 windows: [-1,1) [1,3) [3,5).
        // Input 0..5 → means 0, 1.5, 3.5 (onnxruntime 1.31 agrees; onnx shape inference
        // says 4).
        let x = Tensor::from_f32(vec![1, 1, 5], vec![0., 1., 2., 3., 4.]).unwrap();
        let y = average_pool(&x, &attrs(&[2], &[2], &[1, 1], true, false)).unwrap();
        assert_eq!(y.as_f32().unwrap(), &[0.0, 1.5, 3.5]);
    }

    #[test]
    fn max_pool_with_indices_and_dilation() {
        // 3×3 input 0..9 (one 5 duplicated), kernel 2, stride 1, no pads:
        // [[0,5,2],[3,5,1],[6,7,8]] → maxima 5 (first at (0,1)), 5, 7, 8
        let x =
            Tensor::from_f32(vec![1, 1, 3, 3], vec![0., 5., 2., 3., 5., 1., 6., 7., 8.]).unwrap();
        let mut a = attrs(&[2, 2], &[1, 1], &[0; 4], false, false);
        let outs = max_pool(&x, &a, true).unwrap();
        assert_eq!(outs[0].as_f32().unwrap(), &[5., 5., 7., 8.]);
        // row-major flat indices: (0,1)=1, (0,1)=1, (2,1)=7, (2,2)=8
        assert_eq!(outs[1].as_i64().unwrap(), &[1, 1, 7, 8]);
        // column-major: h + w·H → (0,1)=3, (2,1)=5, (2,2)=8
        a.storage_order = 1;
        let outs = max_pool(&x, &a, true).unwrap();
        assert_eq!(outs[1].as_i64().unwrap(), &[3, 3, 5, 8]);
        // dilation 2, kernel 2: one window of the corners 0, 2, 6, 8 → 8
        let mut d = attrs(&[2, 2], &[1, 1], &[0; 4], false, false);
        d.dilations = vec![2, 2];
        assert_eq!(max_pool(&x, &d, false).unwrap()[0].as_f32().unwrap(), &[8.]);
        // padding never wins: all-negative input padded by 1 keeps the negative max
        let neg = Tensor::from_f32(vec![1, 1, 1, 1], vec![-3.0]).unwrap();
        let p = attrs(&[2, 2], &[1, 1], &[1; 4], false, false);
        assert_eq!(
            max_pool(&neg, &p, false).unwrap()[0].as_f32().unwrap(),
            &[-3.0; 4]
        );
    }

    #[test]
    fn max_pool_on_u8_keeps_the_batch_offset_in_indices() {
        // two planes of two elements: maxima at plane offsets 1 and 0 → flat 1 and 2+0
        let x = Tensor::new(vec![1, 2, 2], TensorData::U8(vec![1, 9, 7, 3])).unwrap();
        let outs = max_pool(&x, &attrs(&[2], &[1], &[0, 0], false, false), true).unwrap();
        assert_eq!(outs[0].data(), &TensorData::U8(vec![9, 7]));
        assert_eq!(outs[1].as_i64().unwrap(), &[1, 2]);
    }

    #[test]
    fn global_pools() {
        let x = Tensor::from_f32(vec![1, 2, 2], vec![1., 3., -1., -5.]).unwrap();
        assert_eq!(
            global_pool(&x, false).unwrap().as_f32().unwrap(),
            &[2., -3.]
        );
        let y = global_pool(&x, true).unwrap();
        assert_eq!(y.shape(), &[1, 2, 1]);
        assert_eq!(y.as_f32().unwrap(), &[3., -1.]);
    }

    #[test]
    fn lrn_by_hand() {
        // 3 channels, one pixel, size 3: channel c sums squares of c-1..=c+1 (clipped).
        // x = [1,2,3]: sums 1+4=5, 1+4+9=14, 4+9=13; alpha 3 → alpha/size = 1, bias 1,
        // beta 1: y = x / (1 + sum) = 1/6, 2/15, 3/14.
        let x = Tensor::from_f32(vec![1, 3, 1], vec![1., 2., 3.]).unwrap();
        let y = lrn(&x, 3, 3.0, 1.0, 1.0).unwrap();
        for (g, w) in y
            .as_f32()
            .unwrap()
            .iter()
            .zip([1.0 / 6.0, 2.0 / 15.0, 3.0 / 14.0])
        {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
    }
}
