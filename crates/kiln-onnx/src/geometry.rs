//! Static-shape arithmetic of the ONNX ops: `auto_pad` and ConvTranspose `output_shape`
//! resolved to explicit pads, Reshape targets with `0`/`-1`, Slice bounds, Split sizes.
//! Pure functions over shapes; the caller adds the node to any error. Attribute values
//! come from the model, so arithmetic on them is checked: an overflow is an error.

use kiln_ir::tensor::checked_numel;

/// ONNX `auto_pad`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

impl AutoPad {
    pub fn parse(s: &str) -> Result<AutoPad, String> {
        match s {
            "NOTSET" | "" => Ok(AutoPad::NotSet),
            "SAME_UPPER" => Ok(AutoPad::SameUpper),
            "SAME_LOWER" => Ok(AutoPad::SameLower),
            "VALID" => Ok(AutoPad::Valid),
            other => Err(format!(
                "auto_pad '{other}' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID"
            )),
        }
    }
}

/// Extent of a dilated kernel: `(k − 1)·d + 1`, or an error when attribute values make it
/// overflow.
fn dilated(kernel: usize, dilation: usize) -> Result<usize, String> {
    (kernel.max(1) - 1)
        .checked_mul(dilation)
        .and_then(|v| v.checked_add(1))
        .ok_or_else(|| format!("dilated kernel extent ({kernel} − 1)·{dilation} + 1 overflows"))
}

/// Explicit pads in ONNX order from the `pads` attribute (must be non-negative).
pub(crate) fn explicit_pads(pads: Option<&[i64]>, spatial: usize) -> Result<Vec<usize>, String> {
    match pads {
        None => Ok(vec![0; 2 * spatial]),
        Some(p) if p.len() != 2 * spatial => Err(format!(
            "pads {p:?} has {} entries, expected {} (begin and end for {spatial} spatial dims)",
            p.len(),
            2 * spatial
        )),
        Some(p) => p
            .iter()
            .map(|&v| usize::try_from(v).map_err(|_| format!("pads {p:?} has a negative entry")))
            .collect(),
    }
}

/// The largest padded input, dilated kernel extent or stride of a sliding window kiln
/// accepts along one axis: 2^31 − 1 (TensorRT's dimension limit too). Real models stay
/// far below; the values attributes can name (up to 2^63) would overflow the index
/// arithmetic of every later stage, and with SAME padding a huge kernel or dilation is
/// otherwise legal.
pub(crate) const MAX_WINDOW_EXTENT: usize = (1 << 31) - 1;

/// Check a resolved sliding window against [`MAX_WINDOW_EXTENT`], per spatial axis:
/// `input + pad_begin + pad_end`, the dilated kernel extent and the stride.
pub(crate) fn check_window_extent(
    input: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
    pads: &[usize],
) -> Result<(), String> {
    let n = input.len();
    for i in 0..n {
        let extent = dilated(kernel[i], dilations[i])?;
        let padded = input[i]
            .checked_add(pads[i])
            .and_then(|v| v.checked_add(pads[n + i]));
        let (what, value) = if extent > MAX_WINDOW_EXTENT {
            ("the dilated kernel extent", Some(extent))
        } else if strides[i] > MAX_WINDOW_EXTENT {
            ("the stride", Some(strides[i]))
        } else if padded.is_none_or(|p| p > MAX_WINDOW_EXTENT) {
            ("the padded input", padded)
        } else {
            continue;
        };
        let value = value.map_or("more than a usize holds".to_string(), |v| v.to_string());
        return Err(format!(
            "spatial dim {i}: {what} ({value}) exceeds {MAX_WINDOW_EXTENT}, the largest window \
             kiln supports"
        ));
    }
    Ok(())
}

/// Pads `[begin.., end..]` of a sliding window (Conv, ConvInteger, QLinearConv, pools).
/// SAME_*: the output is `ceil(in / stride)` and the padding that needs,
/// `max(0, (out − 1)·stride + (k − 1)·d + 1 − in)`, is split evenly; the odd element goes at
/// the end for SAME_UPPER and at the beginning for SAME_LOWER (ONNX Conv spec, and what
/// onnxruntime computes).
pub(crate) fn window_pads(
    auto_pad: AutoPad,
    input: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
    pads: Option<&[i64]>,
) -> Result<Vec<usize>, String> {
    let n = input.len();
    match auto_pad {
        AutoPad::NotSet => explicit_pads(pads, n),
        AutoPad::Valid => Ok(vec![0; 2 * n]),
        AutoPad::SameUpper | AutoPad::SameLower => {
            let mut out = vec![0; 2 * n];
            for i in 0..n {
                let target = input[i].div_ceil(strides[i]);
                // (target − 1)·stride ≤ input − 1 cannot overflow; the extent can.
                let needed = ((target.max(1) - 1) * strides[i])
                    .checked_add(dilated(kernel[i], dilations[i])?)
                    .ok_or_else(|| format!("SAME padding of spatial dim {i} overflows"))?;
                let total = needed.saturating_sub(input[i]);
                let small = total / 2;
                let (begin, end) = if auto_pad == AutoPad::SameUpper {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
                out[i] = begin;
                out[n + i] = end;
            }
            Ok(out)
        }
    }
}

/// ConvTranspose pads and output padding. With `output_shape` (or SAME_*, whose output is
/// `in·stride`) the padding is derived from the requested size:
/// `total = stride·(in − 1) + output_padding + (k − 1)·d + 1 − out`, split with the odd
/// element at the beginning unless SAME_UPPER (ONNX spec; onnxruntime agrees). A negative
/// total means the requested output is larger than the transposed convolution covers: the
/// extra rows are zeros at the end, i.e. more output padding.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_transpose_pads(
    auto_pad: AutoPad,
    input: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
    pads: Option<&[i64]>,
    output_padding: &[usize],
    output_shape: Option<&[usize]>,
) -> Result<(Vec<usize>, Vec<usize>), String> {
    let n = input.len();
    let targets: Vec<usize> = match (output_shape, auto_pad) {
        (Some(shape), _) => shape.to_vec(),
        (None, AutoPad::SameUpper | AutoPad::SameLower) => input
            .iter()
            .zip(strides)
            .map(|(&i, &s)| {
                i.checked_mul(s)
                    .ok_or_else(|| format!("SAME output size {i}·{s} overflows"))
            })
            .collect::<Result<_, _>>()?,
        (None, AutoPad::Valid) => return Ok((vec![0; 2 * n], output_padding.to_vec())),
        (None, AutoPad::NotSet) => return Ok((explicit_pads(pads, n)?, output_padding.to_vec())),
    };
    let mut out_pads = vec![0; 2 * n];
    let mut out_padding = output_padding.to_vec();
    for i in 0..n {
        // In i128 each term fits (they are below 2^64); their product and sum need not.
        let extent = dilated(kernel[i], dilations[i])?;
        let full = (strides[i] as i128)
            .checked_mul(input[i].saturating_sub(1) as i128)
            .and_then(|v| v.checked_add(output_padding[i] as i128))
            .and_then(|v| v.checked_add(extent as i128))
            .ok_or_else(|| format!("the transposed output of spatial dim {i} overflows"))?;
        let total = full - targets[i] as i128;
        if total < 0 {
            out_padding[i] = usize::try_from(output_padding[i] as i128 - total)
                .map_err(|_| format!("output padding of spatial dim {i} overflows"))?;
            continue;
        }
        let total = usize::try_from(total)
            .map_err(|_| format!("pads of spatial dim {i} ({total} in all) overflow"))?;
        let small = total / 2;
        let (begin, end) = if auto_pad == AutoPad::SameUpper {
            (small, total - small)
        } else {
            (total - small, small)
        };
        out_pads[i] = begin;
        out_pads[n + i] = end;
    }
    Ok((out_pads, out_padding))
}

/// Resolve a Reshape target: `0` copies the input dim (unless `allowzero`), one `-1` takes
/// whatever element count remains.
pub(crate) fn reshape_target(
    input: &[usize],
    shape: &[i64],
    allowzero: bool,
) -> Result<Vec<usize>, String> {
    let numel = checked_numel(input).ok_or_else(|| format!("input shape {input:?} overflows"))?;
    let mut out = Vec::with_capacity(shape.len());
    let mut infer_at = None;
    for (i, &d) in shape.iter().enumerate() {
        match d {
            -1 if infer_at.is_some() => {
                return Err(format!("shape {shape:?} has more than one -1"))
            }
            -1 => {
                infer_at = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*input.get(i).ok_or_else(|| {
                format!(
                    "shape {shape:?} copies dim {i} (0) but the input {input:?} has rank {}",
                    input.len()
                )
            })?),
            d if d < 0 => return Err(format!("shape {shape:?} has invalid entry {d}")),
            d => out.push(
                usize::try_from(d).map_err(|_| format!("shape {shape:?}: {d} is too large"))?,
            ),
        }
    }
    if let Some(i) = infer_at {
        // An overflowing product of the known dims cannot divide the element count.
        let known = checked_numel(&out).unwrap_or(0);
        if known == 0 || !numel.is_multiple_of(known) {
            return Err(format!(
                "cannot reshape {input:?} ({numel} elements) to {shape:?}"
            ));
        }
        out[i] = numel / known;
    }
    if checked_numel(&out) != Some(numel) {
        return Err(format!(
            "cannot reshape {input:?} ({numel} elements) to {shape:?} (resolved {out:?})"
        ));
    }
    Ok(out)
}

/// Normalize one Slice axis (ONNX Slice-10+): negative `start`/`end` count from the back,
/// then clamp to `[0, dim]` for positive steps and `[0, dim − 1]` / `[-1, dim − 1]` for
/// negative ones. A step longer than the axis picks at most the start element, as a step
/// of exactly ±dim does: it is clamped to that, so that no later index arithmetic on it can
/// overflow. Returns `(start, end, step)`.
pub(crate) fn slice_bounds(
    dim: usize,
    start: i64,
    end: i64,
    step: i64,
) -> Result<(i64, i64, i64), String> {
    if step == 0 {
        return Err("slice step is 0".into());
    }
    let d = dim as i64;
    let from_back = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    let (start, end) = (from_back(start), from_back(end));
    let longest = d.max(1);
    let step = step.clamp(-longest, longest);
    Ok(if step > 0 {
        (start.clamp(0, d), end.clamp(0, d), step)
    } else if dim == 0 {
        (0, -1, step)
    } else {
        (start.clamp(0, d - 1), end.clamp(-1, d - 1), step)
    })
}

/// Sizes of an even Split into `parts` along a dim of `dim` elements: equal chunks of
/// `ceil(dim / parts)` with a smaller last one (ONNX reference `Split`).
pub(crate) fn even_split(dim: usize, parts: usize) -> Result<Vec<usize>, String> {
    if parts == 0 {
        return Err("split into 0 outputs".into());
    }
    let chunk = dim.div_ceil(parts);
    let before_last = chunk * (parts - 1);
    if before_last > dim {
        return Err(format!(
            "cannot split a dim of {dim} into {parts} chunks of {chunk} with a smaller last one"
        ));
    }
    let mut sizes = vec![chunk; parts];
    sizes[parts - 1] = dim - before_last;
    Ok(sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_upper_puts_the_odd_pad_at_the_end() {
        // in 5, k 3, stride 2: out = ceil(5/2) = 3 needs (3-1)·2 + 3 = 7 rows, 2 more than 5.
        assert_eq!(
            window_pads(AutoPad::SameUpper, &[5], &[3], &[2], &[1], None).unwrap(),
            vec![1, 1]
        );
        // in 6, k 3, stride 2: out 3 needs 7 rows, 1 more than 6: SAME_UPPER pads the end.
        assert_eq!(
            window_pads(AutoPad::SameUpper, &[6], &[3], &[2], &[1], None).unwrap(),
            vec![0, 1]
        );
        assert_eq!(
            window_pads(AutoPad::SameLower, &[6], &[3], &[2], &[1], None).unwrap(),
            vec![1, 0]
        );
        // Dilation 2 makes a 3-tap kernel span 5: in 4, stride 1 needs 4 + 4 = 8, 4 more.
        assert_eq!(
            window_pads(AutoPad::SameUpper, &[4, 4], &[3, 1], &[1, 1], &[2, 1], None).unwrap(),
            vec![2, 0, 2, 0]
        );
        // A stride larger than the kernel can need no padding at all: in 4, k 1, s 2: out 2
        // needs (2-1)·2 + 1 = 3 ≤ 4.
        assert_eq!(
            window_pads(AutoPad::SameUpper, &[4], &[1], &[2], &[1], None).unwrap(),
            vec![0, 0]
        );
    }

    #[test]
    fn valid_and_notset() {
        assert_eq!(
            window_pads(
                AutoPad::Valid,
                &[5, 5],
                &[3, 3],
                &[1, 1],
                &[1, 1],
                Some(&[1, 1, 1, 1])
            )
            .unwrap(),
            vec![0; 4]
        );
        assert_eq!(
            window_pads(
                AutoPad::NotSet,
                &[5, 5],
                &[3, 3],
                &[1, 1],
                &[1, 1],
                Some(&[1, 2, 3, 4])
            )
            .unwrap(),
            vec![1, 2, 3, 4]
        );
        assert!(window_pads(
            AutoPad::NotSet,
            &[5, 5],
            &[3, 3],
            &[1, 1],
            &[1, 1],
            Some(&[1, 2])
        )
        .is_err());
        assert!(window_pads(AutoPad::NotSet, &[5], &[3], &[1], &[1], Some(&[-1, 0])).is_err());
        assert!(AutoPad::parse("SAME").is_err());
    }

    #[test]
    fn conv_transpose_output_shape_becomes_pads_or_output_padding() {
        // in 5, k 3, stride 2: the full transposed output has 2·4 + 3 = 11 elements.
        // These match onnxruntime 1.31 on a 1-D ConvTranspose (checked by hand in Python):
        // output_shape 9, NOTSET: total 2 → crop 1 and 1.
        let ct = |ap, out: Option<&[usize]>| {
            conv_transpose_pads(ap, &[5], &[3], &[2], &[1], None, &[0], out).unwrap()
        };
        assert_eq!(ct(AutoPad::NotSet, Some(&[9])), (vec![1, 1], vec![0]));
        // output_shape 8, NOTSET: total 3 → the odd one is cropped at the beginning.
        assert_eq!(ct(AutoPad::NotSet, Some(&[8])), (vec![2, 1], vec![0]));
        // SAME_UPPER with output_shape 8: the odd one at the end.
        assert_eq!(ct(AutoPad::SameUpper, Some(&[8])), (vec![1, 2], vec![0]));
        // output_shape 12 exceeds 11: one zero row appended (output padding).
        assert_eq!(ct(AutoPad::NotSet, Some(&[12])), (vec![0, 0], vec![1]));
        // SAME_UPPER without output_shape: out = 5·2 = 10, total 1 cropped at the end;
        // SAME_LOWER crops it at the beginning.
        assert_eq!(ct(AutoPad::SameUpper, None), (vec![0, 1], vec![0]));
        assert_eq!(ct(AutoPad::SameLower, None), (vec![1, 0], vec![0]));
        // Explicit pads pass through.
        assert_eq!(
            conv_transpose_pads(
                AutoPad::NotSet,
                &[3, 3],
                &[3, 3],
                &[3, 2],
                &[1, 1],
                Some(&[1, 2, 1, 2]),
                &[0, 0],
                None
            )
            .unwrap(),
            (vec![1, 2, 1, 2], vec![0, 0])
        );
    }

    #[test]
    fn windows_past_the_extent_limit_are_errors() {
        assert!(check_window_extent(&[224], &[7], &[2], &[1], &[3, 3]).is_ok());
        let big = MAX_WINDOW_EXTENT + 1;
        assert_eq!(
            check_window_extent(&[8], &[3], &[1], &[1 << 62], &[0, 0]).unwrap_err(),
            "spatial dim 0: the dilated kernel extent (9223372036854775809) exceeds \
             2147483647, the largest window kiln supports"
        );
        assert!(
            check_window_extent(&[8, 8], &[1, 1], &[1, big], &[1, 1], &[0; 4])
                .unwrap_err()
                .starts_with("spatial dim 1: the stride (2147483648)")
        );
        assert!(
            check_window_extent(&[8], &[1], &[1], &[1], &[usize::MAX, 1])
                .unwrap_err()
                .contains("the padded input (more than a usize holds)")
        );
        // SAME padding for a 2^31-tap pooling kernel: the kernel itself is too large.
        let pads = window_pads(AutoPad::SameUpper, &[5], &[1 << 31], &[1], &[1], None).unwrap();
        assert!(check_window_extent(&[5], &[1 << 31], &[1], &[1], &pads).is_err());
    }

    #[test]
    fn attribute_values_that_overflow_are_errors() {
        let huge = 1usize << 62;
        assert_eq!(
            window_pads(AutoPad::SameUpper, &[8], &[5], &[1], &[huge], None).unwrap_err(),
            "dilated kernel extent (5 − 1)·4611686018427387904 + 1 overflows"
        );
        assert!(window_pads(AutoPad::SameUpper, &[8], &[1], &[usize::MAX], &[1], None).is_ok());
        let ct = |strides: &[usize], input: &[usize], out: Option<&[usize]>| {
            conv_transpose_pads(
                AutoPad::SameUpper,
                input,
                &[3],
                strides,
                &[1],
                None,
                &[0],
                out,
            )
        };
        assert!(ct(&[huge], &[8], None)
            .unwrap_err()
            .contains("SAME output size 8·4611686018427387904 overflows"));
        // The full extent (7·2^62 + 3) is computed in i128; the crop it asks for does not
        // fit in a usize.
        assert!(ct(&[huge], &[8], Some(&[1]))
            .unwrap_err()
            .starts_with("pads of spatial dim 0"));
        assert!(ct(&[usize::MAX], &[usize::MAX], Some(&[0])).is_err());
        assert!(reshape_target(&[2, 3], &[1 << 62, 1 << 62], false)
            .unwrap_err()
            .starts_with("cannot reshape [2, 3] (6 elements)"));
        assert!(reshape_target(&[2, 3], &[1 << 62, 1 << 62, -1], false).is_err());
    }

    #[test]
    fn reshape_zero_and_minus_one() {
        assert_eq!(
            reshape_target(&[2, 3, 4], &[0, -1], false).unwrap(),
            vec![2, 12]
        );
        assert_eq!(reshape_target(&[2, 3, 4], &[-1], false).unwrap(), vec![24]);
        assert_eq!(reshape_target(&[0, 3], &[3, 0], true).unwrap(), vec![3, 0]);
        assert!(reshape_target(&[2, 3, 4], &[-1, -1], false).is_err());
        assert!(reshape_target(&[2, 3, 4], &[5, -1], false).is_err());
        assert!(reshape_target(&[2, 3, 4], &[2, 3], false).is_err());
        assert!(reshape_target(&[2, 3], &[0, 0, 0], false).is_err());
    }

    #[test]
    fn slice_bounds_clamp_like_onnx() {
        assert_eq!(slice_bounds(10, 2, 5, 1).unwrap(), (2, 5, 1));
        assert_eq!(slice_bounds(10, -3, i64::MAX, 1).unwrap(), (7, 10, 1));
        assert_eq!(slice_bounds(10, 0, -1, 1).unwrap(), (0, 9, 1));
        // Reversal: start at the last element, run past the front.
        assert_eq!(slice_bounds(10, -1, i64::MIN, -1).unwrap(), (9, -1, -1));
        assert_eq!(slice_bounds(10, 20, -20, -2).unwrap(), (9, -1, -2));
        assert!(slice_bounds(10, 0, 1, 0).is_err());
        // Steps past the axis length pick only the start element, like ±dim.
        assert_eq!(slice_bounds(10, 0, 10, i64::MAX).unwrap(), (0, 10, 10));
        assert_eq!(slice_bounds(10, 9, -20, i64::MIN).unwrap(), (9, -1, -10));
        assert_eq!(slice_bounds(0, 0, 5, -7).unwrap(), (0, -1, -1));
    }

    #[test]
    fn even_split_has_a_smaller_last_chunk() {
        assert_eq!(even_split(6, 3).unwrap(), vec![2, 2, 2]);
        assert_eq!(even_split(7, 3).unwrap(), vec![3, 3, 1]);
        assert!(even_split(5, 4).is_err());
        assert!(even_split(5, 0).is_err());
    }
}
