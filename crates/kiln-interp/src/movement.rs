//! Data-movement ops, written once for every dtype: reshape-likes, transpose, slice,
//! concat/split, gather, pad, cast. None of them does arithmetic, so quantized tensors pass
//! through them unchanged (their type's quantization still describes the moved values).

use crate::elem::{dispatch_dtype, make_tensor, view, Elem};
use half::f16;
use kiln_ir::tensor::strides_of;
use kiln_ir::{DType, PadMode, SliceAxis, Tensor, TensorData};

/// Same elements, new shape (Reshape, Flatten, Squeeze, Unsqueeze, Identity).
pub(crate) fn with_shape(x: &Tensor, shape: Vec<usize>) -> Result<Tensor, String> {
    let n: usize = shape.iter().product();
    if n != x.numel() {
        return Err(format!(
            "cannot view {:?} ({} elements) as {:?} ({} elements)",
            x.shape(),
            x.numel(),
            shape,
            n
        ));
    }
    Tensor::new(shape, x.data().clone()).map_err(|e| e.to_string())
}

pub(crate) fn flatten(x: &Tensor, axis: usize) -> Result<Tensor, String> {
    if axis > x.shape().len() {
        return Err(format!(
            "axis {axis} out of range for rank {}",
            x.shape().len()
        ));
    }
    let outer: usize = x.shape()[..axis].iter().product();
    let inner: usize = x.shape()[axis..].iter().product();
    with_shape(x, vec![outer, inner])
}

pub(crate) fn squeeze(x: &Tensor, axes: &[usize]) -> Result<Tensor, String> {
    for &a in axes {
        match x.shape().get(a) {
            Some(1) => {}
            Some(d) => return Err(format!("cannot squeeze axis {a} of size {d}")),
            None => {
                return Err(format!(
                    "axis {a} out of range for rank {}",
                    x.shape().len()
                ))
            }
        }
    }
    let shape = x
        .shape()
        .iter()
        .enumerate()
        .filter(|(i, _)| !axes.contains(i))
        .map(|(_, &d)| d)
        .collect();
    with_shape(x, shape)
}

pub(crate) fn unsqueeze(x: &Tensor, axes: &[usize]) -> Result<Tensor, String> {
    let rank = x.shape().len() + axes.len();
    let mut shape = Vec::with_capacity(rank);
    let mut dims = x.shape().iter();
    for i in 0..rank {
        if axes.contains(&i) {
            shape.push(1);
        } else {
            shape.push(
                *dims
                    .next()
                    .ok_or_else(|| format!("axes {axes:?} do not fit an output of rank {rank}"))?,
            );
        }
    }
    if axes.iter().any(|&a| a >= rank) || dims.next().is_some() {
        return Err(format!("axes {axes:?} out of range for output rank {rank}"));
    }
    with_shape(x, shape)
}

/// Copy `src` viewed through `shape` with per-dimension element `strides` (may be negative
/// or zero) starting at `offset`: the one loop behind transpose, slice and broadcasting.
pub(crate) fn strided_copy<T: Elem>(
    src: &[T],
    shape: &[usize],
    strides: &[isize],
    offset: isize,
) -> Vec<T> {
    let n: usize = shape.iter().product();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let rank = shape.len();
    if rank == 0 {
        out.push(src[offset as usize]);
        return out;
    }
    let inner = shape[rank - 1];
    let inner_stride = strides[rank - 1];
    let mut coord = vec![0usize; rank - 1];
    let mut base = offset;
    loop {
        if inner_stride == 1 {
            let b = base as usize;
            out.extend_from_slice(&src[b..b + inner]);
        } else {
            out.extend((0..inner as isize).map(|i| src[(base + i * inner_stride) as usize]));
        }
        // odometer over the outer dimensions
        let mut d = rank - 1;
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            coord[d] += 1;
            base += strides[d];
            if coord[d] < shape[d] {
                break;
            }
            base -= strides[d] * shape[d] as isize;
            coord[d] = 0;
        }
    }
}

pub(crate) fn transpose(x: &Tensor, perm: &[usize]) -> Result<Tensor, String> {
    let rank = x.shape().len();
    let mut seen = vec![false; rank];
    if perm.len() != rank
        || perm
            .iter()
            .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
    {
        return Err(format!("perm {perm:?} is not a permutation of rank {rank}"));
    }
    let in_strides = strides_of(x.shape());
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
    let strides: Vec<isize> = perm.iter().map(|&p| in_strides[p] as isize).collect();
    dispatch_dtype!(x.dtype(), T => {
        let data = strided_copy::<T>(view::<T>(x)?, &shape, &strides, 0);
        make_tensor(shape, data)
    })
}

/// Number of elements `start, start+step, ...` strictly before `end` (in step direction).
fn slice_len(a: &SliceAxis) -> usize {
    let n = if a.step > 0 {
        (a.end - a.start + a.step - 1).div_euclid(a.step)
    } else {
        (a.start - a.end + (-a.step) - 1).div_euclid(-a.step)
    };
    n.max(0) as usize
}

pub(crate) fn slice(x: &Tensor, axes: &[SliceAxis]) -> Result<Tensor, String> {
    let rank = x.shape().len();
    let in_strides = strides_of(x.shape());
    let mut shape = x.shape().to_vec();
    let mut strides: Vec<isize> = in_strides.iter().map(|&s| s as isize).collect();
    let mut offset = 0isize;
    for a in axes {
        if a.axis >= rank {
            return Err(format!(
                "slice axis {} out of range for rank {rank}",
                a.axis
            ));
        }
        if a.step == 0 {
            return Err(format!("slice step 0 on axis {}", a.axis));
        }
        let dim = x.shape()[a.axis] as i64;
        let len = slice_len(a);
        if len > 0 {
            let last = a.start + (len as i64 - 1) * a.step;
            if a.start < 0 || a.start >= dim || last < 0 || last >= dim {
                return Err(format!(
                    "slice {}..{} step {} runs outside axis {} of size {dim}",
                    a.start, a.end, a.step, a.axis
                ));
            }
            offset += a.start as isize * in_strides[a.axis] as isize;
        }
        shape[a.axis] = len;
        strides[a.axis] = a.step as isize * in_strides[a.axis] as isize;
    }
    dispatch_dtype!(x.dtype(), T => {
        let data = strided_copy::<T>(view::<T>(x)?, &shape, &strides, offset);
        make_tensor(shape, data)
    })
}

pub(crate) fn concat(xs: &[&Tensor], axis: usize) -> Result<Tensor, String> {
    let first = xs.first().ok_or("concat of no tensors")?;
    let rank = first.shape().len();
    if axis >= rank {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    for x in xs {
        let same_outside_axis = x.shape().len() == rank
            && (0..rank).all(|d| d == axis || x.shape()[d] == first.shape()[d]);
        if x.dtype() != first.dtype() || !same_outside_axis {
            return Err(format!(
                "cannot concatenate {} {:?} with {} {:?} on axis {axis}",
                first.dtype(),
                first.shape(),
                x.dtype(),
                x.shape()
            ));
        }
    }
    let outer: usize = first.shape()[..axis].iter().product();
    let inner: usize = first.shape()[axis + 1..].iter().product();
    let mut shape = first.shape().to_vec();
    shape[axis] = xs.iter().map(|x| x.shape()[axis]).sum();
    dispatch_dtype!(first.dtype(), T => {
        let parts = xs.iter().map(|x| view::<T>(x)).collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(shape.iter().product());
        for o in 0..outer {
            for (part, x) in parts.iter().zip(xs) {
                let chunk = x.shape()[axis] * inner;
                out.extend_from_slice(&part[o * chunk..(o + 1) * chunk]);
            }
        }
        make_tensor(shape, out)
    })
}

pub(crate) fn split(x: &Tensor, axis: usize, sizes: &[usize]) -> Result<Vec<Tensor>, String> {
    let rank = x.shape().len();
    if axis >= rank {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    if sizes.iter().sum::<usize>() != x.shape()[axis] {
        return Err(format!(
            "split sizes {sizes:?} do not add up to axis {axis} of {:?}",
            x.shape()
        ));
    }
    let outer: usize = x.shape()[..axis].iter().product();
    let inner: usize = x.shape()[axis + 1..].iter().product();
    let dim = x.shape()[axis];
    dispatch_dtype!(x.dtype(), T => {
        let src = view::<T>(x)?;
        let mut start = 0;
        let mut outs = Vec::with_capacity(sizes.len());
        for &size in sizes {
            let mut data = Vec::with_capacity(outer * size * inner);
            for o in 0..outer {
                let base = (o * dim + start) * inner;
                data.extend_from_slice(&src[base..base + size * inner]);
            }
            let mut shape = x.shape().to_vec();
            shape[axis] = size;
            outs.push(make_tensor(shape, data)?);
            start += size;
        }
        Ok(outs)
    })
}

pub(crate) fn gather(data: &Tensor, indices: &Tensor, axis: usize) -> Result<Tensor, String> {
    let rank = data.shape().len();
    if axis >= rank {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    let dim = data.shape()[axis];
    let idx: Vec<usize> = match indices.data() {
        TensorData::I64(v) => v.clone(),
        TensorData::I32(v) => v.iter().map(|&i| i as i64).collect(),
        _ => {
            return Err(format!(
                "indices must be i32 or i64, got {}",
                indices.dtype()
            ))
        }
    }
    .into_iter()
    .map(|i| {
        // ONNX: negative indices count from the back; anything else outside is an error.
        let wrapped = if i < 0 { i + dim as i64 } else { i };
        if wrapped < 0 || wrapped >= dim as i64 {
            Err(format!(
                "index {i} out of range for axis {axis} of size {dim}"
            ))
        } else {
            Ok(wrapped as usize)
        }
    })
    .collect::<Result<_, _>>()?;
    let outer: usize = data.shape()[..axis].iter().product();
    let inner: usize = data.shape()[axis + 1..].iter().product();
    let mut shape = data.shape()[..axis].to_vec();
    shape.extend_from_slice(indices.shape());
    shape.extend_from_slice(&data.shape()[axis + 1..]);
    dispatch_dtype!(data.dtype(), T => {
        let src = view::<T>(data)?;
        let mut out = Vec::with_capacity(outer * idx.len() * inner);
        for o in 0..outer {
            for &i in &idx {
                let base = (o * dim + i) * inner;
                out.extend_from_slice(&src[base..base + inner]);
            }
        }
        make_tensor(shape, out)
    })
}

/// Where output coordinate `o` along an axis of input size `dim` reads from, after cropping
/// `crop_begin`/`crop_end` elements and padding `pad_begin`/`pad_end`; `None` = the fill value.
/// Negative ONNX pads crop first and the remaining positive pads mirror/wrap/extend the
/// *cropped* input, as onnxruntime does.
fn pad_source(
    o: usize,
    pad_begin: usize,
    kept: usize,
    crop_begin: usize,
    mode: PadMode,
) -> Option<usize> {
    let i = o as i64 - pad_begin as i64;
    let n = kept as i64;
    let inside = if (0..n).contains(&i) {
        i
    } else {
        match mode {
            PadMode::Constant => return None,
            PadMode::Edge => i.clamp(0, n - 1),
            PadMode::Wrap => i.rem_euclid(n),
            PadMode::Reflect => {
                if n == 1 {
                    0
                } else {
                    // numpy 'reflect': mirror about the edge elements, period 2(n-1)
                    let period = 2 * (n - 1);
                    let r = i.rem_euclid(period);
                    if r < n {
                        r
                    } else {
                        period - r
                    }
                }
            }
        }
    };
    Some(crop_begin + inside as usize)
}

pub(crate) fn pad(x: &Tensor, mode: PadMode, pads: &[i64], value: f64) -> Result<Tensor, String> {
    let rank = x.shape().len();
    if pads.len() != 2 * rank {
        return Err(format!("{} pads for rank {rank}", pads.len()));
    }
    let mut maps: Vec<Vec<Option<usize>>> = Vec::with_capacity(rank);
    for (d, &dim) in x.shape().iter().enumerate() {
        let (begin, end) = (pads[d], pads[rank + d]);
        let crop_begin = (-begin).max(0) as usize;
        let crop_end = (-end).max(0) as usize;
        let kept = dim
            .checked_sub(crop_begin + crop_end)
            .ok_or_else(|| format!("pads {pads:?} crop more than axis {d} of size {dim}"))?;
        let (pad_begin, pad_end) = (begin.max(0) as usize, end.max(0) as usize);
        let out_len = kept + pad_begin + pad_end;
        if kept == 0 && out_len > 0 && mode != PadMode::Constant {
            return Err(format!("{mode:?} padding of an empty axis {d}"));
        }
        maps.push(
            (0..out_len)
                .map(|o| pad_source(o, pad_begin, kept, crop_begin, mode))
                .collect(),
        );
    }
    let shape: Vec<usize> = maps.iter().map(|m| m.len()).collect();
    let strides = strides_of(x.shape());
    dispatch_dtype!(x.dtype(), T => {
        let src = view::<T>(x)?;
        let fill = T::from_f64_saturating(value);
        let mut out = Vec::with_capacity(shape.iter().product());
        gather_mapped(src, &maps, &strides, 0, 0, true, fill, &mut out);
        make_tensor(shape, out)
    })
}

/// Recursive gather through per-axis coordinate maps (`None` = fill).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gather_mapped<T: Elem>(
    src: &[T],
    maps: &[Vec<Option<usize>>],
    strides: &[usize],
    d: usize,
    base: usize,
    valid: bool,
    fill: T,
    out: &mut Vec<T>,
) {
    if d == maps.len() {
        out.push(if valid { src[base] } else { fill });
        return;
    }
    if d + 1 == maps.len() {
        for m in &maps[d] {
            out.push(match m {
                Some(i) if valid => src[base + i],
                _ => fill,
            });
        }
        return;
    }
    for m in &maps[d] {
        let next = base + m.unwrap_or(0) * strides[d];
        gather_mapped(
            src,
            maps,
            strides,
            d + 1,
            next,
            valid && m.is_some(),
            fill,
            out,
        );
    }
}

/// ONNX Cast. Float → integer truncates toward zero. ONNX leaves out-of-range values
/// undefined; this follows what onnxruntime does on x86-64 (checked with onnxruntime 1.31):
/// the conversion goes through `cvttss2si`, which yields the integer indefinite value
/// (`i32::MIN`, or `i64::MIN` for i64) for NaN and out-of-range inputs, and the 8-bit
/// targets keep the low byte of the i32 (300 → u8 44, -1.7 → u8 255, NaN → 0).
/// Integer → integer wraps (two's complement), anything → bool is `!= 0` (NaN → true),
/// bool → number is 0/1.
pub(crate) fn cast(x: &Tensor, to: DType) -> Result<Tensor, String> {
    fn convert<S: Copy, D>(v: &[S], f: impl Fn(S) -> D) -> Vec<D> {
        v.iter().map(|&s| f(s)).collect()
    }
    let shape = x.shape().to_vec();
    // Every source widened to one of three carriers, then narrowed to the target.
    enum Wide {
        F(Vec<f64>),
        I(Vec<i64>),
        B(Vec<bool>),
    }
    let wide = match x.data() {
        TensorData::F32(v) => {
            if to == DType::F32 {
                return Ok(x.clone());
            }
            if to == DType::F16 {
                return make_tensor(shape, convert(v, f16::from_f32));
            }
            Wide::F(convert(v, |s| s as f64))
        }
        TensorData::F16(v) => Wide::F(convert(v, |s| s.to_f64())),
        TensorData::I8(v) => Wide::I(convert(v, |s| s as i64)),
        TensorData::U8(v) => Wide::I(convert(v, |s| s as i64)),
        TensorData::I32(v) => Wide::I(convert(v, |s| s as i64)),
        TensorData::I64(v) => Wide::I(v.clone()),
        TensorData::Bool(v) => Wide::B(v.clone()),
    };
    let data = match (wide, to) {
        (Wide::F(v), DType::F32) => TensorData::F32(convert(&v, |s| s as f32)),
        (Wide::F(v), DType::F16) => TensorData::F16(convert(&v, f16::from_f64)),
        (Wide::F(v), DType::I8) => TensorData::I8(convert(&v, |s| float_to_i32_x86(s) as i8)),
        (Wide::F(v), DType::U8) => TensorData::U8(convert(&v, |s| float_to_i32_x86(s) as u8)),
        (Wide::F(v), DType::I32) => TensorData::I32(convert(&v, float_to_i32_x86)),
        (Wide::F(v), DType::I64) => TensorData::I64(convert(&v, float_to_i64_x86)),
        (Wide::F(v), DType::Bool) => TensorData::Bool(convert(&v, |s| s != 0.0)),
        // i64 → f32 goes through f64 first only when exact; round once, directly.
        (Wide::I(v), DType::F32) => TensorData::F32(convert(&v, |s| s as f32)),
        (Wide::I(v), DType::F16) => TensorData::F16(convert(&v, |s| f16::from_f32(s as f32))),
        (Wide::I(v), DType::I8) => TensorData::I8(convert(&v, |s| s as i8)),
        (Wide::I(v), DType::U8) => TensorData::U8(convert(&v, |s| s as u8)),
        (Wide::I(v), DType::I32) => TensorData::I32(convert(&v, |s| s as i32)),
        (Wide::I(v), DType::I64) => TensorData::I64(v),
        (Wide::I(v), DType::Bool) => TensorData::Bool(convert(&v, |s| s != 0)),
        (Wide::B(v), DType::F32) => TensorData::F32(convert(&v, |s| s as u8 as f32)),
        (Wide::B(v), DType::F16) => TensorData::F16(convert(&v, |s| f16::from_f32(s as u8 as f32))),
        (Wide::B(v), DType::I8) => TensorData::I8(convert(&v, |s| s as i8)),
        (Wide::B(v), DType::U8) => TensorData::U8(convert(&v, |s| s as u8)),
        (Wide::B(v), DType::I32) => TensorData::I32(convert(&v, |s| s as i32)),
        (Wide::B(v), DType::I64) => TensorData::I64(convert(&v, |s| s as i64)),
        (Wide::B(v), DType::Bool) => TensorData::Bool(v),
    };
    Tensor::new(shape, data).map_err(|e| e.to_string())
}

/// Truncating float → i32 as x86's `cvttss2si` does it: NaN and values outside the i32
/// range give `i32::MIN` (Rust's `as` would saturate instead); NaN fails `contains`.
fn float_to_i32_x86(v: f64) -> i32 {
    if !(-2147483648.0..2147483648.0).contains(&v) {
        i32::MIN
    } else {
        v as i32
    }
}

/// The 64-bit form of [`float_to_i32_x86`].
fn float_to_i64_x86(v: f64) -> i64 {
    if !(-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&v) {
        i64::MIN
    } else {
        v as i64
    }
}

/// Broadcast `x` to `shape` (numpy rules, `x`'s dims aligned to the right).
pub(crate) fn broadcast_to<T: Elem>(src: &[T], src_shape: &[usize], shape: &[usize]) -> Vec<T> {
    let strides = broadcast_strides(src_shape, shape);
    strided_copy(src, shape, &strides, 0)
}

/// Element strides that read a tensor of `src_shape` as if it had `shape` (stride 0 along
/// broadcast dimensions). The caller has checked that the shapes broadcast.
pub(crate) fn broadcast_strides(src_shape: &[usize], shape: &[usize]) -> Vec<isize> {
    let own = strides_of(src_shape);
    let lead = shape.len() - src_shape.len();
    (0..shape.len())
        .map(|d| {
            if d < lead || src_shape[d - lead] == 1 {
                0
            } else {
                own[d - lead] as isize
            }
        })
        .collect()
}

/// The numpy broadcast of two shapes, or an error.
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    (0..rank)
        .map(|i| {
            let da = if i + a.len() >= rank {
                a[i + a.len() - rank]
            } else {
                1
            };
            let db = if i + b.len() >= rank {
                b[i + b.len() - rank]
            } else {
                1
            };
            match (da, db) {
                (x, y) if x == y => Ok(x),
                (1, y) => Ok(y),
                (x, 1) => Ok(x),
                _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iota(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::from_f32(shape.to_vec(), (0..n).map(|i| i as f32).collect()).unwrap()
    }

    #[test]
    fn transpose_swaps_axes() {
        // [[0,1,2],[3,4,5]]ᵀ = [[0,3],[1,4],[2,5]]
        let t = transpose(&iota(&[2, 3]), &[1, 0]).unwrap();
        assert_eq!(t.shape(), &[3, 2]);
        assert_eq!(t.as_f32().unwrap(), &[0., 3., 1., 4., 2., 5.]);
        assert!(transpose(&iota(&[2, 3]), &[0, 0]).is_err());
    }

    #[test]
    fn slice_with_negative_step_runs_backwards() {
        // [0..6) with start 5, end -1 (to the front), step -2 → 5, 3, 1
        let a = SliceAxis {
            axis: 0,
            start: 5,
            end: -1,
            step: -2,
        };
        let t = slice(&iota(&[6]), &[a]).unwrap();
        assert_eq!(t.as_f32().unwrap(), &[5., 3., 1.]);
        // rows 1.. of a 3×2, columns 1..2: [[3],[5]]
        let rows = SliceAxis {
            axis: 0,
            start: 1,
            end: 3,
            step: 1,
        };
        let cols = SliceAxis {
            axis: 1,
            start: 1,
            end: 2,
            step: 1,
        };
        let t = slice(&iota(&[3, 2]), &[rows, cols]).unwrap();
        assert_eq!(t.shape(), &[2, 1]);
        assert_eq!(t.as_f32().unwrap(), &[3., 5.]);
        // empty when end == start
        let e = SliceAxis {
            axis: 0,
            start: 2,
            end: 2,
            step: 1,
        };
        assert_eq!(slice(&iota(&[6]), &[e]).unwrap().shape(), &[0]);
    }

    #[test]
    fn concat_and_split_are_inverse() {
        let a = iota(&[2, 1]);
        let b = iota(&[2, 2]);
        // rows: [0 | 0 1], [1 | 2 3]
        let c = concat(&[&a, &b], 1).unwrap();
        assert_eq!(c.as_f32().unwrap(), &[0., 0., 1., 1., 2., 3.]);
        let parts = split(&c, 1, &[1, 2]).unwrap();
        assert_eq!(parts[0], a);
        assert_eq!(parts[1], b);
    }

    #[test]
    fn gather_wraps_negative_indices_and_rejects_out_of_range() {
        let idx = Tensor::from_i64(vec![2], vec![-1, 0]).unwrap();
        // rows of a 3×2 iota: row 2 = [4,5], row 0 = [0,1]
        let t = gather(&iota(&[3, 2]), &idx, 0).unwrap();
        assert_eq!(t.as_f32().unwrap(), &[4., 5., 0., 1.]);
        let bad = Tensor::from_i64(vec![1], vec![3]).unwrap();
        assert!(gather(&iota(&[3, 2]), &bad, 0).is_err());
        // axis 1 with a scalar index drops the axis: column 1 = [1,3,5]
        let s = Tensor::from_i64(vec![], vec![1]).unwrap();
        let t = gather(&iota(&[3, 2]), &s, 1).unwrap();
        assert_eq!(t.shape(), &[3]);
        assert_eq!(t.as_f32().unwrap(), &[1., 3., 5.]);
    }

    #[test]
    fn pad_modes_match_numpy() {
        let x = Tensor::from_f32(vec![3], vec![1., 2., 3.]).unwrap();
        // np.pad([1,2,3], (2,2), mode) for each mode, by hand:
        let cases = [
            (PadMode::Constant, vec![9., 9., 1., 2., 3., 9., 9.]),
            (PadMode::Edge, vec![1., 1., 1., 2., 3., 3., 3.]),
            (PadMode::Reflect, vec![3., 2., 1., 2., 3., 2., 1.]),
            (PadMode::Wrap, vec![2., 3., 1., 2., 3., 1., 2.]),
        ];
        for (mode, want) in cases {
            let t = pad(&x, mode, &[2, 2], 9.0).unwrap();
            assert_eq!(t.as_f32().unwrap(), &want[..], "{mode:?}");
        }
        // negative pads crop: drop one in front, add one edge copy at the back
        let t = pad(&x, PadMode::Edge, &[-1, 1], 0.0).unwrap();
        assert_eq!(t.as_f32().unwrap(), &[2., 3., 3.]);
    }

    #[test]
    fn cast_truncates_toward_zero_and_wraps_integers() {
        // onnxruntime 1.31 on x86-64 (Cast opset 21, one node, CPU provider) gives
        // u8 [255, 1, 44, 0] for [-1.7, 1.7, 300, NaN], i32 [-1, MIN, MIN, MIN] for
        // [-1.7, 3e9, -3e9, NaN], i8 [-1, -56, 56, 0] for [-1.7, 200, -200, 1e10].
        let x = Tensor::from_f32(vec![4], vec![-1.7, 1.7, 300.0, f32::NAN]).unwrap();
        let t = cast(&x, DType::I32).unwrap();
        assert_eq!(t.data(), &TensorData::I32(vec![-1, 1, 300, i32::MIN]));
        let t = cast(&x, DType::U8).unwrap();
        assert_eq!(t.data(), &TensorData::U8(vec![255, 1, 44, 0]));
        let big = Tensor::from_f32(vec![3], vec![3e9, -3e9, f32::NAN]).unwrap();
        assert_eq!(
            cast(&big, DType::I32).unwrap().data(),
            &TensorData::I32(vec![i32::MIN; 3])
        );
        let x8 = Tensor::from_f32(vec![4], vec![-1.7, 200.0, -200.0, 1e10]).unwrap();
        assert_eq!(
            cast(&x8, DType::I8).unwrap().data(),
            &TensorData::I8(vec![-1, -56, 56, 0])
        );
        let t = cast(&x, DType::Bool).unwrap();
        assert_eq!(t.data(), &TensorData::Bool(vec![true, true, true, true]));
        let i = Tensor::from_i64(vec![2], vec![257, -1]).unwrap();
        assert_eq!(
            cast(&i, DType::U8).unwrap().data(),
            &TensorData::U8(vec![1, 255])
        );
    }

    #[test]
    fn squeeze_unsqueeze_flatten() {
        let x = iota(&[2, 1, 3]);
        assert_eq!(squeeze(&x, &[1]).unwrap().shape(), &[2, 3]);
        assert!(squeeze(&x, &[0]).is_err());
        assert_eq!(unsqueeze(&x, &[0, 4]).unwrap().shape(), &[1, 2, 1, 3, 1]);
        assert_eq!(flatten(&x, 2).unwrap().shape(), &[2, 3]);
        assert_eq!(flatten(&x, 0).unwrap().shape(), &[1, 6]);
    }
}
