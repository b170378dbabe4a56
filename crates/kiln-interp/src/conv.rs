//! Convolution and transposed convolution (1-D, 2-D, 3-D; strides, pads, dilations, groups).
//!
//! Conv lowers to im2col + the blocked [`gemm`](crate::gemm) per (batch, group), except
//! 1×1 unpadded stride-1 convs (the input already is the GEMM operand) and convs with one
//! input channel per group (depthwise), which use a direct loop. Every path sums the
//! reduction in the same order — input channel, then kernel position, row-major — so they
//! agree bit for bit. The same code accumulates i32 for QConv and ConvInteger.
//! ConvTranspose is a GEMM (`Wᵀ·X`) followed by col2im, as onnxruntime does it.

use crate::elem::{make_tensor, view};
use crate::elementwise::activate_f32;
use crate::gemm::{gemm, GemmScalar, MatRef};
use kiln_ir::{Activation, ConvAttrs, ConvTransposeAttrs, Tensor};

/// Spatial rank handled internally: 1-D and 2-D convs are 3-D convs with leading unit dims.
const SP: usize = 3;

/// A validated convolution problem, spatial dims padded to three.
#[derive(Clone, Debug)]
pub(crate) struct ConvGeometry {
    pub batch: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub groups: usize,
    pub input: [usize; SP],
    pub output: [usize; SP],
    pub kernel: [usize; SP],
    pub stride: [usize; SP],
    pub pad_begin: [usize; SP],
    pub dilation: [usize; SP],
    /// The real spatial rank (1, 2 or 3), for the output shape.
    pub spatial_rank: usize,
}

/// Left-pad a per-spatial-dim attribute to three entries with `fill`.
fn widen(v: &[usize], fill: usize) -> [usize; SP] {
    let mut out = [fill; SP];
    out[SP - v.len()..].copy_from_slice(v);
    out
}

/// Checks the shared attribute lists: one entry per spatial dim (pads: two), no zeros.
fn check_lists(
    nsp: usize,
    kernel: &[usize],
    strides: &[usize],
    pads: &[usize],
    dilations: &[usize],
) -> Result<(), String> {
    if !(1..=SP).contains(&nsp) {
        return Err(format!("{nsp} spatial dims; 1 to 3 are supported"));
    }
    if kernel.len() != nsp
        || strides.len() != nsp
        || dilations.len() != nsp
        || pads.len() != 2 * nsp
    {
        return Err(format!(
            "attribute lengths kernel {kernel:?}, strides {strides:?}, pads {pads:?}, dilations \
             {dilations:?} do not fit {nsp} spatial dims"
        ));
    }
    if strides.contains(&0) || dilations.contains(&0) {
        return Err(format!(
            "strides {strides:?} and dilations {dilations:?} must be positive"
        ));
    }
    Ok(())
}

impl ConvGeometry {
    /// Geometry of a Conv/QConv/ConvInteger with input `x` `[N, C_in, spatial..]` and weight
    /// `[C_out, C_in/groups, k..]`.
    pub fn new(x: &[usize], w: &[usize], attrs: &ConvAttrs) -> Result<ConvGeometry, String> {
        let nsp = attrs.kernel.len();
        check_lists(
            nsp,
            &attrs.kernel,
            &attrs.strides,
            &attrs.pads,
            &attrs.dilations,
        )?;
        if x.len() != nsp + 2 || w.len() != nsp + 2 {
            return Err(format!(
                "input {x:?} and weight {w:?} must have rank {} for a {nsp}-D conv",
                nsp + 2
            ));
        }
        if w[2..] != attrs.kernel[..] {
            return Err(format!(
                "weight {w:?} does not match kernel {:?}",
                attrs.kernel
            ));
        }
        let groups = attrs.groups;
        if groups == 0 || !w[0].is_multiple_of(groups) || x[1] != w[1] * groups {
            return Err(format!(
                "input channels {} and weight {w:?} do not fit groups={groups}",
                x[1]
            ));
        }
        let mut output = [1; SP];
        for d in 0..nsp {
            let padded = x[2 + d] + attrs.pads[d] + attrs.pads[nsp + d];
            let span = attrs.dilations[d] * attrs.kernel[d].saturating_sub(1) + 1;
            if attrs.kernel[d] == 0 || padded < span {
                return Err(format!(
                    "kernel {:?} (dilations {:?}) does not fit the padded input {x:?}",
                    attrs.kernel, attrs.dilations
                ));
            }
            output[SP - nsp + d] = (padded - span) / attrs.strides[d] + 1;
        }
        Ok(ConvGeometry {
            batch: x[0],
            c_in: x[1],
            c_out: w[0],
            groups,
            input: widen(&x[2..], 1),
            output,
            kernel: widen(&attrs.kernel, 1),
            stride: widen(&attrs.strides, 1),
            pad_begin: widen(&attrs.pads[..nsp], 0),
            dilation: widen(&attrs.dilations, 1),
            spatial_rank: nsp,
        })
    }

    pub fn output_shape(&self) -> Vec<usize> {
        let mut shape = vec![self.batch, self.c_out];
        shape.extend_from_slice(&self.output[SP - self.spatial_rank..]);
        shape
    }

    fn in_size(&self) -> usize {
        self.input.iter().product()
    }

    fn out_size(&self) -> usize {
        self.output.iter().product()
    }

    fn kernel_size(&self) -> usize {
        self.kernel.iter().product()
    }

    /// Is this a pointwise conv whose input already is the im2col matrix?
    fn is_pointwise(&self) -> bool {
        self.kernel == [1; SP]
            && self.stride == [1; SP]
            && self.pad_begin == [0; SP]
            && self.input == self.output
    }

    /// For output index `o` along dim `d` and kernel tap `k`: the input index, if inside.
    #[inline(always)]
    fn source(&self, d: usize, o: usize, k: usize) -> Option<usize> {
        let i = (o * self.stride[d] + k * self.dilation[d]) as isize - self.pad_begin[d] as isize;
        (i >= 0 && (i as usize) < self.input[d]).then_some(i as usize)
    }
}

/// The im2col matrix of one (batch, group) slab `x` (`[C_in/groups, spatial..]`): row
/// `(c, kd, kh, kw)`, column = output position, zero where the kernel reads padding.
fn im2col<T: GemmScalar>(x: &[T], g: &ConvGeometry, channels: usize, col: &mut [T]) {
    let out_n = g.out_size();
    let in_n = g.in_size();
    let [od, oh, ow] = g.output;
    let [ih_n, iw_n] = [g.input[1], g.input[2]];
    let mut row = 0;
    for c in 0..channels {
        let xc = &x[c * in_n..(c + 1) * in_n];
        for kd in 0..g.kernel[0] {
            for kh in 0..g.kernel[1] {
                for kw in 0..g.kernel[2] {
                    let dst = &mut col[row * out_n..(row + 1) * out_n];
                    // Output columns whose input column is inside: a contiguous range.
                    let (sw, dw, pw) = (g.stride[2], g.dilation[2], g.pad_begin[2]);
                    let first = (pw.saturating_sub(kw * dw)).div_ceil(sw);
                    let limit = (g.input[2] + pw)
                        .checked_sub(kw * dw)
                        .map_or(0, |v| v.div_ceil(sw));
                    let (first, limit) = (first.min(ow), limit.min(ow));
                    for z in 0..od {
                        let iz = g.source(0, z, kd);
                        for y in 0..oh {
                            let out_row = &mut dst[(z * oh + y) * ow..(z * oh + y + 1) * ow];
                            let (Some(iz), Some(iy)) = (iz, g.source(1, y, kh)) else {
                                out_row.fill(T::default());
                                continue;
                            };
                            let base = (iz * ih_n + iy) * iw_n;
                            out_row[..first].fill(T::default());
                            if limit > first {
                                let i0 = base + first * sw + kw * dw - pw;
                                if sw == 1 {
                                    out_row[first..limit]
                                        .copy_from_slice(&xc[i0..i0 + limit - first]);
                                } else {
                                    for (o, v) in out_row[first..limit].iter_mut().enumerate() {
                                        *v = xc[i0 + o * sw];
                                    }
                                }
                            }
                            out_row[limit.max(first)..].fill(T::default());
                        }
                    }
                    row += 1;
                }
            }
        }
    }
}

/// `Σ x·w` over each output position: `[N, C_out, out_spatial..]` (flattened), no bias.
pub(crate) fn conv_accumulate<T: GemmScalar>(x: &[T], w: &[T], g: &ConvGeometry) -> Vec<T> {
    let (cin_g, cout_g) = (g.c_in / g.groups, g.c_out / g.groups);
    let (in_n, out_n, k_n) = (g.in_size(), g.out_size(), g.kernel_size());
    let k = cin_g * k_n;
    let mut out = vec![T::default(); g.batch * g.c_out * out_n];
    if cin_g == 1 {
        direct_single_channel(x, w, g, &mut out);
        return out;
    }
    let mut col = if g.is_pointwise() {
        Vec::new()
    } else {
        vec![T::default(); k * out_n]
    };
    for n in 0..g.batch {
        for grp in 0..g.groups {
            let x_slab =
                &x[(n * g.c_in + grp * cin_g) * in_n..(n * g.c_in + (grp + 1) * cin_g) * in_n];
            let w_slab = &w[grp * cout_g * k..(grp + 1) * cout_g * k];
            let out_slab = &mut out
                [(n * g.c_out + grp * cout_g) * out_n..(n * g.c_out + (grp + 1) * cout_g) * out_n];
            let b = if g.is_pointwise() {
                MatRef::row_major(x_slab, k, out_n)
            } else {
                im2col(x_slab, g, cin_g, &mut col);
                MatRef::row_major(&col, k, out_n)
            };
            gemm(MatRef::row_major(w_slab, cout_g, k), b, out_slab, false);
        }
    }
    out
}

/// Direct loop for one input channel per group (depthwise and its channel multipliers),
/// where a GEMM would have a single-row operand. Sums kernel taps in im2col order.
fn direct_single_channel<T: GemmScalar>(x: &[T], w: &[T], g: &ConvGeometry, out: &mut [T]) {
    let (in_n, out_n, k_n) = (g.in_size(), g.out_size(), g.kernel_size());
    let cout_g = g.c_out / g.groups;
    let [od, oh, ow] = g.output;
    let [_, ih_n, iw_n] = g.input;
    for n in 0..g.batch {
        for co in 0..g.c_out {
            let ci = co / cout_g;
            let xc = &x[(n * g.c_in + ci) * in_n..(n * g.c_in + ci + 1) * in_n];
            let wk = &w[co * k_n..(co + 1) * k_n];
            let dst = &mut out[(n * g.c_out + co) * out_n..(n * g.c_out + co + 1) * out_n];
            for z in 0..od {
                for y in 0..oh {
                    for xo in 0..ow {
                        let mut acc = T::default();
                        let mut tap = 0;
                        for kd in 0..g.kernel[0] {
                            let iz = g.source(0, z, kd);
                            for kh in 0..g.kernel[1] {
                                let iy = g.source(1, y, kh);
                                for kw in 0..g.kernel[2] {
                                    // padding contributes 0·w, which leaves the sum unchanged
                                    // exactly as the im2col zero does
                                    let v = match (iz, iy, g.source(2, xo, kw)) {
                                        (Some(iz), Some(iy), Some(ix)) => {
                                            xc[(iz * ih_n + iy) * iw_n + ix]
                                        }
                                        _ => T::default(),
                                    };
                                    acc = T::mul_add(acc, v, wk[tap]);
                                    tap += 1;
                                }
                            }
                        }
                        dst[(z * oh + y) * ow + xo] = acc;
                    }
                }
            }
        }
    }
}

fn check_bias(bias: Option<&Tensor>, channels: usize) -> Result<Option<&[f32]>, String> {
    match bias {
        None => Ok(None),
        Some(b) => {
            let v = view::<f32>(b).map_err(|e| format!("bias: {e}"))?;
            if v.len() != channels || b.shape().len() != 1 {
                return Err(format!(
                    "bias {:?} for {channels} output channels",
                    b.shape()
                ));
            }
            Ok(Some(v))
        }
    }
}

/// Bias, then the fused residual (same layout as `out`), then the activation, over
/// `[N, C, inner]`, as onnxruntime's conv epilogue (FusedConv with Sum) does.
fn epilogue(
    out: &mut [f32],
    batch: usize,
    channels: usize,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    act: Option<&Activation>,
) {
    let inner = out.len().checked_div(batch * channels).unwrap_or(0);
    if let Some(b) = bias {
        for (i, chunk) in out
            .chunks_mut(inner.max(1))
            .enumerate()
            .filter(|_| inner > 0)
        {
            let bc = b[i % channels];
            chunk.iter_mut().for_each(|v| *v += bc);
        }
    }
    if let Some(r) = residual {
        out.iter_mut().zip(r).for_each(|(v, r)| *v += r);
    }
    if let Some(a) = act {
        activate_f32(a, out);
    }
}

/// f32 Conv with optional bias, fused residual and fused activation.
pub(crate) fn conv(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    attrs: &ConvAttrs,
) -> Result<Tensor, String> {
    let g = ConvGeometry::new(x.shape(), w.shape(), attrs)?;
    let xs = view::<f32>(x).map_err(|e| format!("input: {e}"))?;
    let ws = view::<f32>(w).map_err(|e| format!("weight: {e}"))?;
    let b = check_bias(bias, g.c_out)?;
    let r = match residual {
        None => None,
        Some(r) if r.shape() == g.output_shape().as_slice() => {
            Some(view::<f32>(r).map_err(|e| format!("residual: {e}"))?)
        }
        Some(r) => {
            return Err(format!(
                "residual has shape {:?}, the conv output {:?}",
                r.shape(),
                g.output_shape()
            ))
        }
    };
    let mut out = conv_accumulate(xs, ws, &g);
    epilogue(&mut out, g.batch, g.c_out, b, r, attrs.act.as_ref());
    make_tensor(g.output_shape(), out)
}

/// f32 ConvTranspose: weight `[C_in, C_out/groups, k..]`; output size
/// `stride·(in−1) + output_padding + dilation·(k−1) + 1 − pad_begin − pad_end`.
pub(crate) fn conv_transpose(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    attrs: &ConvTransposeAttrs,
) -> Result<Tensor, String> {
    let nsp = attrs.kernel.len();
    check_lists(
        nsp,
        &attrs.kernel,
        &attrs.strides,
        &attrs.pads,
        &attrs.dilations,
    )?;
    let (xsh, wsh) = (x.shape(), w.shape());
    if xsh.len() != nsp + 2 || wsh.len() != nsp + 2 || wsh[2..] != attrs.kernel[..] {
        return Err(format!(
            "input {xsh:?} and weight {wsh:?} do not fit a {nsp}-D transposed conv with kernel {:?}",
            attrs.kernel
        ));
    }
    if attrs.output_padding.len() != nsp {
        return Err(format!(
            "output_padding {:?} for {nsp} spatial dims",
            attrs.output_padding
        ));
    }
    let groups = attrs.groups;
    if groups == 0 || xsh[1] != wsh[0] || !wsh[0].is_multiple_of(groups) {
        return Err(format!(
            "input channels {} and weight {wsh:?} do not fit groups={groups}",
            xsh[1]
        ));
    }
    let (batch, c_in) = (xsh[0], xsh[1]);
    let (cin_g, cout_g) = (c_in / groups, wsh[1]);
    let c_out = cout_g * groups;
    let mut out_sp = [1usize; SP];
    for d in 0..nsp {
        let full = attrs.strides[d] * (xsh[2 + d].max(1) - 1)
            + attrs.output_padding[d]
            + attrs.dilations[d] * (attrs.kernel[d].max(1) - 1)
            + 1;
        let cut = attrs.pads[d] + attrs.pads[nsp + d];
        out_sp[SP - nsp + d] = full
            .checked_sub(cut)
            .filter(|&s| s > 0 && xsh[2 + d] > 0 && attrs.kernel[d] > 0)
            .ok_or_else(|| format!("pads {:?} leave no output for input {xsh:?}", attrs.pads))?;
    }
    let input = widen(&xsh[2..], 1);
    let kernel = widen(&attrs.kernel, 1);
    let stride = widen(&attrs.strides, 1);
    let dil = widen(&attrs.dilations, 1);
    let pad = widen(&attrs.pads[..nsp], 0);
    let (in_n, out_n, k_n) = (
        input.iter().product::<usize>(),
        out_sp.iter().product::<usize>(),
        kernel.iter().product::<usize>(),
    );
    let xs = view::<f32>(x).map_err(|e| format!("input: {e}"))?;
    let ws = view::<f32>(w).map_err(|e| format!("weight: {e}"))?;
    let b = check_bias(bias, c_out)?;
    let mut out = vec![0f32; batch * c_out * out_n];
    let rows = cout_g * k_n;
    let mut col = vec![0f32; rows * in_n];
    for n in 0..batch {
        for grp in 0..groups {
            let x_slab =
                &xs[(n * c_in + grp * cin_g) * in_n..(n * c_in + (grp + 1) * cin_g) * in_n];
            let w_slab = &ws[grp * cin_g * rows..(grp + 1) * cin_g * rows];
            // col[(co, k), i] = Σ_ci W[ci, co, k] · X[ci, i]
            gemm(
                MatRef::row_major(w_slab, cin_g, rows).t(),
                MatRef::row_major(x_slab, cin_g, in_n),
                &mut col,
                false,
            );
            let out_slab = &mut out
                [(n * c_out + grp * cout_g) * out_n..(n * c_out + (grp + 1) * cout_g) * out_n];
            col2im(
                &col, cout_g, input, out_sp, kernel, stride, dil, pad, out_slab,
            );
        }
    }
    epilogue(&mut out, batch, c_out, b, None, attrs.act.as_ref());
    let mut shape = vec![batch, c_out];
    shape.extend_from_slice(&out_sp[SP - nsp..]);
    make_tensor(shape, out)
}

/// Scatter-add `col[(c, kd, kh, kw), input position]` into the output image.
#[allow(clippy::too_many_arguments)]
fn col2im(
    col: &[f32],
    channels: usize,
    input: [usize; SP],
    output: [usize; SP],
    kernel: [usize; SP],
    stride: [usize; SP],
    dil: [usize; SP],
    pad: [usize; SP],
    out: &mut [f32],
) {
    let in_n: usize = input.iter().product();
    let out_n: usize = output.iter().product();
    let target = |d: usize, i: usize, k: usize| -> Option<usize> {
        let o = (i * stride[d] + k * dil[d]) as isize - pad[d] as isize;
        (o >= 0 && (o as usize) < output[d]).then_some(o as usize)
    };
    let mut row = 0;
    for c in 0..channels {
        let dst = &mut out[c * out_n..(c + 1) * out_n];
        for kd in 0..kernel[0] {
            for kh in 0..kernel[1] {
                for kw in 0..kernel[2] {
                    let src = &col[row * in_n..(row + 1) * in_n];
                    for iz in 0..input[0] {
                        let Some(oz) = target(0, iz, kd) else {
                            continue;
                        };
                        for iy in 0..input[1] {
                            let Some(oy) = target(1, iy, kh) else {
                                continue;
                            };
                            let src_row = &src[(iz * input[1] + iy) * input[2]..][..input[2]];
                            let dst_row =
                                &mut dst[(oz * output[1] + oy) * output[2]..][..output[2]];
                            for (ix, &v) in src_row.iter().enumerate() {
                                if let Some(ox) = target(2, ix, kw) {
                                    dst_row[ox] += v;
                                }
                            }
                        }
                    }
                    row += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::Rng;

    /// A random conv problem: spatial rank 1–3, groups, strides, dilations, asymmetric pads.
    struct Case {
        x_shape: Vec<usize>,
        w_shape: Vec<usize>,
        kernel: Vec<usize>,
        strides: Vec<usize>,
        pads: Vec<usize>,
        dilations: Vec<usize>,
        groups: usize,
    }

    fn random_case(rng: &mut Rng, transposed: bool) -> Case {
        let nsp = rng.usize(1, 3);
        let groups = [1, 1, 2, 3][rng.usize(0, 3)];
        let cin_g = [1, 1, 2, 3, 5][rng.usize(0, 4)];
        let cout_g = rng.usize(1, 4);
        let mut kernel = vec![];
        let mut strides = vec![];
        let mut dilations = vec![];
        let mut spatial = vec![];
        let mut pads = vec![0; 2 * nsp];
        for d in 0..nsp {
            let small = nsp == 3;
            kernel.push(rng.usize(1, if small { 2 } else { 3 }));
            strides.push(rng.usize(1, 3));
            dilations.push(rng.usize(1, 2));
            spatial.push(rng.usize(1, if small { 5 } else { 9 }));
            let span = dilations[d] * (kernel[d] - 1) + 1;
            pads[d] = rng.usize(0, span - 1);
            pads[nsp + d] = rng.usize(0, span - 1);
            if !transposed {
                // make sure at least one output exists
                while spatial[d] + pads[d] + pads[nsp + d] < span {
                    spatial[d] += 1;
                }
            }
        }
        let batch = rng.usize(1, 2);
        let mut x_shape = vec![batch, cin_g * groups];
        x_shape.extend(&spatial);
        let mut w_shape = if transposed {
            vec![cin_g * groups, cout_g]
        } else {
            vec![cout_g * groups, cin_g]
        };
        w_shape.extend(&kernel);
        Case {
            x_shape,
            w_shape,
            kernel,
            strides,
            pads,
            dilations,
            groups,
        }
    }

    /// Left-pad to three spatial dims.
    fn w3(v: &[usize], fill: usize) -> [usize; 3] {
        let mut o = [fill; 3];
        o[3 - v.len()..].copy_from_slice(v);
        o
    }

    /// The textbook convolution: for every output, sum over its group's input channels and
    /// kernel taps (same order as im2col), skipping taps in the padding.
    fn naive_conv(c: &Case, x: &[f32], w: &[f32], bias: &[f32]) -> (Vec<usize>, Vec<f32>) {
        let nsp = c.kernel.len();
        let (n, cin) = (c.x_shape[0], c.x_shape[1]);
        let cout = c.w_shape[0];
        let (cin_g, cout_g) = (cin / c.groups, cout / c.groups);
        let inp = w3(&c.x_shape[2..], 1);
        let k = w3(&c.kernel, 1);
        let s = w3(&c.strides, 1);
        let dl = w3(&c.dilations, 1);
        let pb = w3(&c.pads[..nsp], 0);
        let pe = w3(&c.pads[nsp..], 0);
        let out: [usize; 3] =
            std::array::from_fn(|d| (inp[d] + pb[d] + pe[d] - dl[d] * (k[d] - 1) - 1) / s[d] + 1);
        let mut y = vec![];
        for b in 0..n {
            for co in 0..cout {
                let grp = co / cout_g;
                for oz in 0..out[0] {
                    for oy in 0..out[1] {
                        for ox in 0..out[2] {
                            let mut acc = 0f32;
                            for ci in 0..cin_g {
                                for kz in 0..k[0] {
                                    for ky in 0..k[1] {
                                        for kx in 0..k[2] {
                                            let iz =
                                                (oz * s[0] + kz * dl[0]) as isize - pb[0] as isize;
                                            let iy =
                                                (oy * s[1] + ky * dl[1]) as isize - pb[1] as isize;
                                            let ix =
                                                (ox * s[2] + kx * dl[2]) as isize - pb[2] as isize;
                                            let inside = (0..inp[0] as isize).contains(&iz)
                                                && (0..inp[1] as isize).contains(&iy)
                                                && (0..inp[2] as isize).contains(&ix);
                                            if !inside {
                                                continue;
                                            }
                                            let (iz, iy, ix) =
                                                (iz as usize, iy as usize, ix as usize);
                                            let xv = x[(((b * cin + grp * cin_g + ci) * inp[0]
                                                + iz)
                                                * inp[1]
                                                + iy)
                                                * inp[2]
                                                + ix];
                                            let wv = w[(((co * cin_g + ci) * k[0] + kz) * k[1]
                                                + ky)
                                                * k[2]
                                                + kx];
                                            acc += xv * wv;
                                        }
                                    }
                                }
                            }
                            y.push(acc + bias[co]);
                        }
                    }
                }
            }
        }
        let mut shape = vec![n, cout];
        shape.extend_from_slice(&out[3 - nsp..]);
        (shape, y)
    }

    fn tensor(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::from_f32(shape.to_vec(), v).unwrap()
    }

    #[test]
    fn conv_matches_naive_loop_on_random_shapes() {
        let mut rng = Rng::new(42);
        for case_no in 0..300 {
            let c = random_case(&mut rng, false);
            let x = rng.f32s(c.x_shape.iter().product());
            let w = rng.f32s(c.w_shape.iter().product());
            let bias = rng.f32s(c.w_shape[0]);
            let attrs = ConvAttrs {
                kernel: c.kernel.clone(),
                strides: c.strides.clone(),
                pads: c.pads.clone(),
                dilations: c.dilations.clone(),
                groups: c.groups,
                act: None,
            };
            let (shape, want) = naive_conv(&c, &x, &w, &bias);
            let got = conv(
                &tensor(&c.x_shape, x.clone()),
                &tensor(&c.w_shape, w.clone()),
                Some(&tensor(&[bias.len()], bias.clone())),
                None,
                &attrs,
            )
            .unwrap();
            assert_eq!(got.shape(), &shape[..], "case {case_no}");
            // Same summation order on every path (im2col, pointwise, direct): padding taps
            // add an exact zero, so results are equal (== also equates -0 and +0).
            assert!(
                got.as_f32().unwrap().iter().zip(&want).all(|(a, b)| a == b),
                "case {case_no}: x {:?} w {:?} attrs {attrs:?}",
                c.x_shape,
                c.w_shape
            );
        }
    }

    #[test]
    fn pointwise_and_fused_activation() {
        // 1×1 conv = per-pixel channel mix: out = 1·x0 + 2·x1 - 10 (bias), then the act.
        // pixel 0: 1 + 4 - 10 = -5, pixel 1: 5 + 2 - 10 = -3 → relu 0, 0; leaky(0.5) -2.5, -1.5
        let x = tensor(&[1, 2, 1, 2], vec![1., 5., 2., 1.]);
        let w = tensor(&[1, 2, 1, 1], vec![1., 2.]);
        let b = tensor(&[1], vec![-10.0]);
        let attrs = ConvAttrs {
            kernel: vec![1, 1],
            strides: vec![1, 1],
            pads: vec![0; 4],
            dilations: vec![1, 1],
            groups: 1,
            act: Some(Activation::Relu),
        };
        let y = conv(&x, &w, Some(&b), None, &attrs).unwrap();
        assert_eq!(y.as_f32().unwrap(), &[0., 0.]);
        let leaky = ConvAttrs {
            act: Some(Activation::LeakyRelu { alpha: 0.5 }),
            ..attrs.clone()
        };
        let y = conv(&x, &w, Some(&b), None, &leaky).unwrap();
        assert_eq!(y.as_f32().unwrap(), &[-2.5, -1.5]);
        // The residual is added after the bias and before the activation:
        // relu(-5 + 6) = 1, relu(-3 + 1) = 0; leaky: 1, -1.
        let r = tensor(&[1, 1, 1, 2], vec![6., 1.]);
        let y = conv(&x, &w, Some(&b), Some(&r), &attrs).unwrap();
        assert_eq!(y.as_f32().unwrap(), &[1., 0.]);
        let y = conv(&x, &w, Some(&b), Some(&r), &leaky).unwrap();
        assert_eq!(y.as_f32().unwrap(), &[1., -1.]);
        let wrong = tensor(&[1, 1, 2, 1], vec![6., 1.]);
        assert!(conv(&x, &w, Some(&b), Some(&wrong), &attrs).is_err());
    }

    #[test]
    fn conv_rejects_bad_geometry() {
        let x = tensor(&[1, 3, 4, 4], vec![0.; 48]);
        let w = tensor(&[2, 2, 3, 3], vec![0.; 36]);
        let attrs = ConvAttrs {
            kernel: vec![3, 3],
            strides: vec![1, 1],
            pads: vec![0; 4],
            dilations: vec![1, 1],
            groups: 1,
            act: None,
        };
        // 3 input channels but the weight expects 2 per group
        assert!(conv(&x, &w, None, None, &attrs).is_err());
        let big = ConvAttrs {
            kernel: vec![3, 3],
            dilations: vec![3, 3],
            ..attrs
        };
        let w3 = tensor(&[2, 3, 3, 3], vec![0.; 54]);
        // dilated span 7 > input 4
        assert!(conv(&x, &w3, None, None, &big).is_err());
    }

    /// Transposed conv as the adjoint scatter: every input element adds x·w into
    /// `out[i·s − p + k·d]`.
    fn naive_conv_transpose(
        c: &Case,
        out_pad: &[usize],
        x: &[f32],
        w: &[f32],
        bias: &[f32],
    ) -> (Vec<usize>, Vec<f32>) {
        let nsp = c.kernel.len();
        let (n, cin) = (c.x_shape[0], c.x_shape[1]);
        let cout_g = c.w_shape[1];
        let cin_g = cin / c.groups;
        let cout = cout_g * c.groups;
        let inp = w3(&c.x_shape[2..], 1);
        let k = w3(&c.kernel, 1);
        let s = w3(&c.strides, 1);
        let dl = w3(&c.dilations, 1);
        let pb = w3(&c.pads[..nsp], 0);
        let pe = w3(&c.pads[nsp..], 0);
        let op = w3(out_pad, 0);
        let out: [usize; 3] = std::array::from_fn(|d| {
            s[d] * (inp[d] - 1) + op[d] + dl[d] * (k[d] - 1) + 1 - pb[d] - pe[d]
        });
        let on: usize = out.iter().product();
        let mut y = vec![0f32; n * cout * on];
        for b in 0..n {
            for ci in 0..cin {
                let grp = ci / cin_g;
                for iz in 0..inp[0] {
                    for iy in 0..inp[1] {
                        for ix in 0..inp[2] {
                            let xv =
                                x[(((b * cin + ci) * inp[0] + iz) * inp[1] + iy) * inp[2] + ix];
                            for co in 0..cout_g {
                                for kz in 0..k[0] {
                                    for ky in 0..k[1] {
                                        for kx in 0..k[2] {
                                            let oz =
                                                (iz * s[0] + kz * dl[0]) as isize - pb[0] as isize;
                                            let oy =
                                                (iy * s[1] + ky * dl[1]) as isize - pb[1] as isize;
                                            let ox =
                                                (ix * s[2] + kx * dl[2]) as isize - pb[2] as isize;
                                            if !((0..out[0] as isize).contains(&oz)
                                                && (0..out[1] as isize).contains(&oy)
                                                && (0..out[2] as isize).contains(&ox))
                                            {
                                                continue;
                                            }
                                            let wv = w[(((ci * cout_g + co) * k[0] + kz) * k[1]
                                                + ky)
                                                * k[2]
                                                + kx];
                                            let oc = grp * cout_g + co;
                                            let at = ((b * cout + oc) * out[0] + oz as usize)
                                                * out[1]
                                                * out[2]
                                                + oy as usize * out[2]
                                                + ox as usize;
                                            y[at] += xv * wv;
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        for (i, v) in y.iter_mut().enumerate() {
            *v += bias[(i / on) % cout];
        }
        let mut shape = vec![n, cout];
        shape.extend_from_slice(&out[3 - nsp..]);
        (shape, y)
    }

    #[test]
    fn conv_transpose_matches_naive_scatter_on_random_shapes() {
        let mut rng = Rng::new(7);
        let mut checked = 0;
        while checked < 200 {
            let c = random_case(&mut rng, true);
            let nsp = c.kernel.len();
            // output_padding must be smaller than the stride or the dilation (ONNX)
            let out_pad: Vec<usize> = (0..nsp)
                .map(|d| rng.usize(0, c.strides[d].max(c.dilations[d]) - 1))
                .collect();
            let full_ok = (0..nsp).all(|d| {
                let full = c.strides[d] * (c.x_shape[2 + d] - 1)
                    + out_pad[d]
                    + c.dilations[d] * (c.kernel[d] - 1)
                    + 1;
                full > c.pads[d] + c.pads[nsp + d]
            });
            if !full_ok {
                continue;
            }
            checked += 1;
            let x = rng.f32s(c.x_shape.iter().product());
            let w = rng.f32s(c.w_shape.iter().product());
            let cout = c.w_shape[1] * c.groups;
            let bias = rng.f32s(cout);
            let attrs = ConvTransposeAttrs {
                kernel: c.kernel.clone(),
                strides: c.strides.clone(),
                pads: c.pads.clone(),
                dilations: c.dilations.clone(),
                output_padding: out_pad.clone(),
                groups: c.groups,
                act: None,
            };
            let (shape, want) = naive_conv_transpose(&c, &out_pad, &x, &w, &bias);
            let got = conv_transpose(
                &tensor(&c.x_shape, x),
                &tensor(&c.w_shape, w),
                Some(&tensor(&[cout], bias)),
                &attrs,
            )
            .unwrap();
            assert_eq!(got.shape(), &shape[..], "attrs {attrs:?} x {:?}", c.x_shape);
            // different summation order (GEMM then col2im vs scatter): compare with a
            // tolerance scaled to the number of terms (values in [-1, 1))
            for (g, w) in got.as_f32().unwrap().iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-5 * (1.0 + w.abs()) * 8.0,
                    "{g} vs {w}, attrs {attrs:?}"
                );
            }
        }
    }

    #[test]
    fn conv_transpose_by_hand() {
        // 1-D, stride 2, kernel [1, 2], x = [1, 3]: x0 writes 1·[1,2] at 0..2, x1 writes
        // 3·[1,2] at 2..4 → [1, 2, 3, 6]; output_padding 1 appends a bias-only element.
        let x = tensor(&[1, 1, 2], vec![1., 3.]);
        let w = tensor(&[1, 1, 2], vec![1., 2.]);
        let b = tensor(&[1], vec![0.5]);
        let attrs = ConvTransposeAttrs {
            kernel: vec![2],
            strides: vec![2],
            pads: vec![0, 0],
            dilations: vec![1],
            output_padding: vec![1],
            groups: 1,
            act: None,
        };
        let y = conv_transpose(&x, &w, Some(&b), &attrs).unwrap();
        assert_eq!(y.as_f32().unwrap(), &[1.5, 2.5, 3.5, 6.5, 0.5]);
    }
}
