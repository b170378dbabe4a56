//! Sliding-window ops: Conv, ConvTranspose, MaxPool, AveragePool, with `auto_pad` and
//! ConvTranspose `output_shape` resolved to explicit pads (see [`crate::geometry`]). The
//! conv geometry reader is shared with QLinearConv and ConvInteger.

use super::emit_main;
use crate::attrs::NodeCx;
use crate::error::OnnxError;
use crate::geometry::{check_window_extent, conv_transpose_pads, window_pads, AutoPad};
use crate::importer::Importer;
use kiln_ir::{ConvAttrs, ConvTransposeAttrs, Op, PoolAttrs, ValueId};

/// A per-spatial-dim attribute (`strides`, `dilations`), all positive; `1`s when absent.
fn spatial_ints(cx: &NodeCx, name: &str, spatial: usize) -> Result<Vec<usize>, OnnxError> {
    match cx.ints_opt(name)? {
        None => Ok(vec![1; spatial]),
        Some(v) if v.len() != spatial => Err(cx.err(format!(
            "{name} {v:?} has {} entries, expected {spatial} (one per spatial dim)",
            v.len()
        ))),
        Some(v) => v
            .iter()
            .map(|&s| {
                usize::try_from(s)
                    .ok()
                    .filter(|&s| s > 0)
                    .ok_or_else(|| cx.err(format!("{name} {v:?} must be positive")))
            })
            .collect(),
    }
}

fn auto_pad(cx: &NodeCx) -> Result<AutoPad, OnnxError> {
    AutoPad::parse(&cx.string("auto_pad", "NOTSET")?).map_err(|m| cx.err(m))
}

/// Check `x` has rank ≥ 3 (N, C, spatial...) and return its spatial dims.
fn spatial_dims(im: &Importer, cx: &NodeCx, x: ValueId) -> Result<Vec<usize>, OnnxError> {
    let shape = im.shape(x);
    if shape.len() < 3 {
        return Err(cx.err(format!(
            "input X must have rank ≥ 3 (N, C, spatial dims...), got shape {shape:?}"
        )));
    }
    Ok(shape[2..].to_vec())
}

/// The kernel size from the weight shape, checked against `kernel_shape` if given.
fn kernel_from_weight(
    im: &Importer,
    cx: &NodeCx,
    x: ValueId,
    w: ValueId,
) -> Result<Vec<usize>, OnnxError> {
    let (xs, ws) = (im.shape(x), im.shape(w));
    if ws.len() != xs.len() {
        return Err(cx.err(format!(
            "weight shape {ws:?} must have the rank of the input {xs:?}"
        )));
    }
    let kernel = ws[2..].to_vec();
    if let Some(k) = cx.ints_opt("kernel_shape")? {
        if k.iter()
            .map(|&d| d as i128)
            .ne(kernel.iter().map(|&d| d as i128))
        {
            return Err(cx.err(format!(
                "kernel_shape {k:?} does not match the weight's spatial dims {kernel:?}"
            )));
        }
    }
    Ok(kernel)
}

/// Conv geometry (Conv, QLinearConv, ConvInteger) for input `x` and weight `w`.
pub(crate) fn conv_attrs(
    im: &Importer,
    cx: &NodeCx,
    x: ValueId,
    w: ValueId,
) -> Result<ConvAttrs, OnnxError> {
    let input = spatial_dims(im, cx, x)?;
    let kernel = kernel_from_weight(im, cx, x, w)?;
    let strides = spatial_ints(cx, "strides", input.len())?;
    let dilations = spatial_ints(cx, "dilations", input.len())?;
    let groups = cx.int("group", 1)?;
    let groups = usize::try_from(groups)
        .ok()
        .filter(|&g| g > 0)
        .ok_or_else(|| cx.err(format!("group must be positive, got {groups}")))?;
    let pads = window_pads(
        auto_pad(cx)?,
        &input,
        &kernel,
        &strides,
        &dilations,
        cx.ints_opt("pads")?.as_deref(),
    )
    .map_err(|m| cx.err(m))?;
    check_window_extent(&input, &kernel, &strides, &dilations, &pads).map_err(|m| cx.err(m))?;
    Ok(ConvAttrs {
        kernel,
        strides,
        pads,
        dilations,
        groups,
        act: None,
    })
}

pub(crate) fn conv(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let (x, w) = (im.req_input(cx, 0)?, im.req_input(cx, 1)?);
    let attrs = conv_attrs(im, cx, x, w)?;
    let mut inputs = vec![x, w];
    inputs.extend(im.input(cx, 2)?);
    emit_main(im, cx, Op::Conv(attrs), &inputs)
}

pub(crate) fn conv_transpose(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let (x, w) = (im.req_input(cx, 0)?, im.req_input(cx, 1)?);
    let input = spatial_dims(im, cx, x)?;
    let n = input.len();
    let kernel = kernel_from_weight(im, cx, x, w)?;
    let strides = spatial_ints(cx, "strides", n)?;
    let dilations = spatial_ints(cx, "dilations", n)?;
    let groups = cx.int("group", 1)?;
    let groups = usize::try_from(groups)
        .ok()
        .filter(|&g| g > 0)
        .ok_or_else(|| cx.err(format!("group must be positive, got {groups}")))?;
    let output_padding = match cx.ints_opt("output_padding")? {
        None => vec![0; n],
        Some(p) if p.len() == n => cx.to_usizes("output_padding", &p)?,
        Some(p) => {
            return Err(cx.err(format!(
                "output_padding {p:?} has {} entries, expected {n}",
                p.len()
            )))
        }
    };
    let output_shape = match cx.ints_opt("output_shape")? {
        None => None,
        Some(s) if s.len() == n => Some(cx.to_usizes("output_shape", &s)?),
        // Some exporters write the full N, C, spatial... shape.
        Some(s) if s.len() == n + 2 => Some(cx.to_usizes("output_shape", &s[2..])?),
        Some(s) => {
            return Err(cx.err(format!(
                "output_shape {s:?} has {} entries, expected {n}",
                s.len()
            )))
        }
    };
    let (pads, output_padding) = conv_transpose_pads(
        auto_pad(cx)?,
        &input,
        &kernel,
        &strides,
        &dilations,
        cx.ints_opt("pads")?.as_deref(),
        &output_padding,
        output_shape.as_deref(),
    )
    .map_err(|m| cx.err(m))?;
    // The transposed output spans stride·(in − 1) + output_padding + extent before the
    // pads crop it: bound that span, the pads and the kernel like a forward window's.
    let full_output: Vec<usize> = (0..n)
        .map(|i| {
            strides[i]
                .checked_mul(input[i].saturating_sub(1))
                .and_then(|v| v.checked_add(output_padding[i]))
                .unwrap_or(usize::MAX)
        })
        .collect();
    check_window_extent(&full_output, &kernel, &strides, &dilations, &pads)
        .map_err(|m| cx.err(m))?;
    let attrs = ConvTransposeAttrs {
        kernel,
        strides,
        pads,
        dilations,
        output_padding,
        groups,
        act: None,
    };
    let mut inputs = vec![x, w];
    inputs.extend(im.input(cx, 2)?);
    emit_main(im, cx, Op::ConvTranspose(attrs), &inputs)
}

/// Pool geometry. `dilations` exist for MaxPool from opset 10 and AveragePool from 19;
/// `ceil_mode` from 10 for both.
fn pool_attrs(
    im: &Importer,
    cx: &NodeCx,
    x: ValueId,
    is_max: bool,
) -> Result<PoolAttrs, OnnxError> {
    let input = spatial_dims(im, cx, x)?;
    let n = input.len();
    let kernel = cx
        .ints_opt("kernel_shape")?
        .ok_or_else(|| cx.err("attribute 'kernel_shape' is required"))?;
    if kernel.len() != n {
        return Err(cx.err(format!(
            "kernel_shape {kernel:?} has {} entries, expected {n}",
            kernel.len()
        )));
    }
    let kernel = cx.to_usizes("kernel_shape", &kernel)?;
    let strides = spatial_ints(cx, "strides", n)?;
    let dilations = spatial_ints(cx, "dilations", n)?;
    let pads = window_pads(
        auto_pad(cx)?,
        &input,
        &kernel,
        &strides,
        &dilations,
        cx.ints_opt("pads")?.as_deref(),
    )
    .map_err(|m| cx.err(m))?;
    check_window_extent(&input, &kernel, &strides, &dilations, &pads).map_err(|m| cx.err(m))?;
    let storage_order = if is_max {
        cx.int("storage_order", 0)?
    } else {
        0
    };
    let storage_order = match storage_order {
        0 | 1 => storage_order as u8,
        v => return Err(cx.err(format!("storage_order must be 0 or 1, got {v}"))),
    };
    Ok(PoolAttrs {
        kernel,
        strides,
        pads,
        dilations,
        ceil_mode: cx.bool("ceil_mode", false)?,
        count_include_pad: !is_max && cx.bool("count_include_pad", false)?,
        storage_order,
    })
}

pub(crate) fn max_pool(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let x = im.req_input(cx, 0)?;
    let attrs = pool_attrs(im, cx, x, true)?;
    let mut outputs = vec![im.main_output(cx)?];
    outputs.extend(im.output_name(cx, 1).map(str::to_string));
    im.emit(cx, Op::MaxPool(attrs), &[x], &outputs)?;
    Ok(())
}

pub(crate) fn average_pool(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let x = im.req_input(cx, 0)?;
    let attrs = pool_attrs(im, cx, x, false)?;
    emit_main(im, cx, Op::AveragePool(attrs), &[x])
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;
    use kiln_ir::{ConvAttrs, ConvTransposeAttrs, Op, PoolAttrs, Tensor};

    fn conv_model(auto_pad: &str) -> ModelBuilder {
        ModelBuilder::new(13)
            .input("x", &[1, 1, 5, 6])
            .init(tensor_f32("w", &[2, 1, 3, 3], &[0.5; 18]))
            .node(named(
                node(
                    "Conv",
                    &["x", "w"],
                    &["y"],
                    vec![
                        attr_str("auto_pad", auto_pad),
                        attr_ints("strides", &[2, 2]),
                    ],
                ),
                "conv",
            ))
            .output("y")
    }

    #[test]
    fn conv_auto_pad_becomes_explicit_pads() {
        // H: in 5, stride 2 → out 3 needs (3-1)·2 + 3 = 7 rows, 2 more: 1 and 1.
        // W: in 6, stride 2 → out 3 needs 7 columns, 1 more: at the end (SAME_UPPER) or the
        // beginning (SAME_LOWER). Pads are [h_begin, w_begin, h_end, w_end].
        for (auto_pad, pads) in [
            ("SAME_UPPER", [1, 0, 1, 1]),
            ("SAME_LOWER", [1, 1, 1, 0]),
            ("VALID", [0, 0, 0, 0]),
        ] {
            let g = conv_model(auto_pad).import().unwrap();
            let Op::Conv(attrs) = output_op(&g, 0) else {
                panic!("conv expected")
            };
            assert_eq!(
                attrs,
                &ConvAttrs {
                    kernel: vec![3, 3],
                    strides: vec![2, 2],
                    pads: pads.to_vec(),
                    dilations: vec![1, 1],
                    groups: 1,
                    act: None
                },
                "{auto_pad}"
            );
        }
        let same = conv_model("SAME_UPPER").import().unwrap();
        assert_eq!(same.value_type(same.outputs()[0]).shape, vec![1, 2, 3, 3]);
        let valid = conv_model("VALID").import().unwrap();
        assert_eq!(valid.value_type(valid.outputs()[0]).shape, vec![1, 2, 2, 2]);
    }

    #[test]
    fn conv_geometry_errors_name_the_node() {
        let err = ModelBuilder::new(13)
            .input("x", &[1, 1, 5, 5])
            .init(tensor_f32("w", &[1, 1, 3, 3], &[0.0; 9]))
            .node(named(
                node(
                    "Conv",
                    &["x", "w"],
                    &["y"],
                    vec![attr_ints("kernel_shape", &[2, 2])],
                ),
                "c1",
            ))
            .output("y")
            .import()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "node 'c1' (Conv, domain ai.onnx, opset 13): kernel_shape [2, 2] does not match the weight's spatial dims [3, 3]"
        );
        let err = conv_model("SAME").import().unwrap_err();
        assert!(
            err.to_string().contains("auto_pad 'SAME' is not one of"),
            "{err}"
        );
    }

    /// x = [1..5] (1-D), w = [1, 1, 1], stride 2: the full transposed convolution puts x_i at
    /// positions 2i, 2i+1, 2i+2, giving [1,1,3,2,5,3,7,4,9,5,5] (11 elements).
    fn conv_transpose_1d(attrs: Vec<crate::proto::AttributeProto>) -> (Op, Vec<f32>) {
        let mut attrs = attrs;
        attrs.push(attr_ints("strides", &[2]));
        let g = ModelBuilder::new(13)
            .input("x", &[1, 1, 5])
            .init(tensor_f32("w", &[1, 1, 3], &[1.0; 3]))
            .node(node("ConvTranspose", &["x", "w"], &["y"], attrs))
            .output("y")
            .import()
            .unwrap();
        let x = Tensor::from_f32(vec![1, 1, 5], vec![1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        let y = run(&g, &[x]).remove(0);
        (output_op(&g, 0).clone(), y.as_f32().unwrap().to_vec())
    }

    #[test]
    fn conv_transpose_output_shape_is_resolved_to_pads_and_output_padding() {
        // output_shape 9 drops one element at each end.
        let (op, y) = conv_transpose_1d(vec![attr_ints("output_shape", &[9])]);
        let Op::ConvTranspose(ConvTransposeAttrs {
            pads,
            output_padding,
            ..
        }) = op
        else {
            panic!()
        };
        assert_eq!((pads, output_padding), (vec![1, 1], vec![0]));
        assert_eq!(y, [1.0, 3.0, 2.0, 5.0, 3.0, 7.0, 4.0, 9.0, 5.0]);
        // output_shape 12 appends a zero.
        let (op, y) = conv_transpose_1d(vec![attr_ints("output_shape", &[12])]);
        let Op::ConvTranspose(ConvTransposeAttrs {
            pads,
            output_padding,
            ..
        }) = op
        else {
            panic!()
        };
        assert_eq!((pads, output_padding), (vec![0, 0], vec![1]));
        assert_eq!(
            y,
            [1.0, 1.0, 3.0, 2.0, 5.0, 3.0, 7.0, 4.0, 9.0, 5.0, 5.0, 0.0]
        );
        // SAME_UPPER: output 5·2 = 10, the extra element cropped at the end.
        let (_, y) = conv_transpose_1d(vec![attr_str("auto_pad", "SAME_UPPER")]);
        assert_eq!(y, [1.0, 1.0, 3.0, 2.0, 5.0, 3.0, 7.0, 4.0, 9.0, 5.0]);
        // SAME_LOWER crops it at the beginning.
        let (_, y) = conv_transpose_1d(vec![attr_str("auto_pad", "SAME_LOWER")]);
        assert_eq!(y, [1.0, 3.0, 2.0, 5.0, 3.0, 7.0, 4.0, 9.0, 5.0, 5.0]);
    }

    #[test]
    fn pools_resolve_padding_and_keep_their_flags() {
        let g = ModelBuilder::new(13)
            .input("x", &[1, 1, 5, 5])
            .node(node(
                "MaxPool",
                &["x"],
                &["y", "idx"],
                vec![
                    attr_ints("kernel_shape", &[2, 2]),
                    attr_str("auto_pad", "SAME_LOWER"),
                    attr_int("storage_order", 1),
                ],
            ))
            .node(node(
                "AveragePool",
                &["x"],
                &["z"],
                vec![
                    attr_ints("kernel_shape", &[3, 3]),
                    attr_ints("strides", &[2, 2]),
                    attr_int("ceil_mode", 1),
                    attr_int("count_include_pad", 1),
                ],
            ))
            .output("y")
            .output("idx")
            .output("z")
            .import()
            .unwrap();
        // k 2, stride 1 on 5: out 5 needs 6, one more, at the beginning for SAME_LOWER.
        assert_eq!(
            output_op(&g, 0),
            &Op::MaxPool(PoolAttrs {
                kernel: vec![2, 2],
                strides: vec![1, 1],
                pads: vec![1, 1, 0, 0],
                dilations: vec![1, 1],
                ceil_mode: false,
                count_include_pad: false,
                storage_order: 1
            })
        );
        assert_eq!(
            g.outputs()[0].node,
            g.outputs()[1].node,
            "Indices is the max pool's second output"
        );
        assert_eq!(g.value_type(g.outputs()[1]).dtype, kiln_ir::DType::I64);
        assert_eq!(
            output_op(&g, 2),
            &Op::AveragePool(PoolAttrs {
                kernel: vec![3, 3],
                strides: vec![2, 2],
                pads: vec![0; 4],
                dilations: vec![1, 1],
                ceil_mode: true,
                count_include_pad: true,
                storage_order: 0
            })
        );
    }
}
