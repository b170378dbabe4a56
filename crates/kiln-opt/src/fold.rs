//! The arithmetic of the folds, on plain tensors: BatchNorm scale and shift, scaling a weight
//! along its output- or input-channel axis for every conv layout, bias updates. Computed in
//! f64 and rounded once to f32, so a folded weight is as close to the exact product as f32
//! allows. Every function returns `None` when its inputs do not fit (wrong dtype or length):
//! the rule that called it then does not apply.

use kiln_ir::{DType, Tensor};

/// The data of an f32 tensor.
pub fn f32_data(t: &Tensor) -> Option<&[f32]> {
    if t.dtype() == DType::F32 {
        t.as_f32()
    } else {
        None
    }
}

/// Where the output channel lives in a weight tensor.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ChannelLayout {
    /// Channel `c` is index `c` of `axis` (Conv: axis 0 of `[C_out, C_in/g, k..]`; Gemm B
    /// with transB: axis 0 of `[N, K]`; Gemm B / MatMul W: axis 1 of `[K, N]`).
    Axis(usize),
    /// ConvTranspose `[C_in, C_out/g, k..]` with `groups`: row `i` belongs to group
    /// `i / (C_in/g)`, and its column `j` is output channel `group·(C_out/g) + j`.
    Grouped1 { groups: usize },
}

/// For every element of a weight of `shape`, the output channel it contributes to; `None`
/// when the layout does not fit the shape.
fn channel_of_each(shape: &[usize], layout: ChannelLayout) -> Option<(usize, Vec<usize>)> {
    let numel: usize = shape.iter().product();
    match layout {
        ChannelLayout::Axis(axis) => {
            let dim = *shape.get(axis)?;
            let inner: usize = shape[axis + 1..].iter().product();
            Some((dim, (0..numel).map(|e| (e / inner) % dim).collect()))
        }
        ChannelLayout::Grouped1 { groups } => {
            if shape.len() < 2 || groups == 0 || !shape[0].is_multiple_of(groups) {
                return None;
            }
            let (c_in, per_group) = (shape[0], shape[1]);
            let rows_per_group = c_in / groups;
            let inner: usize = shape[2..].iter().product();
            let channels = per_group * groups;
            Some((
                channels,
                (0..numel)
                    .map(|e| {
                        let row = e / (per_group * inner);
                        let col = (e / inner) % per_group;
                        (row / rows_per_group) * per_group + col
                    })
                    .collect(),
            ))
        }
    }
}

/// `W' = W · s` along the output channels of `layout`.
pub fn scale_channels(w: &Tensor, s: &[f64], layout: ChannelLayout) -> Option<Tensor> {
    let data = f32_data(w)?;
    let (channels, channel) = channel_of_each(w.shape(), layout)?;
    if channels != s.len() {
        return None;
    }
    let out = data
        .iter()
        .zip(&channel)
        .map(|(&x, &c)| (x as f64 * s[c]) as f32)
        .collect();
    Tensor::from_f32(w.shape().to_vec(), out).ok()
}

/// The per-channel values of a vector constant, as f64 (`None` unless f32).
pub fn vector(t: &Tensor) -> Option<Vec<f64>> {
    Some(f32_data(t)?.iter().map(|&x| x as f64).collect())
}

/// `s = γ / sqrt(σ² + ε)` (DESIGN §4), per channel.
pub fn bn_scale(gamma: &[f64], var: &[f64], epsilon: f32) -> Option<Vec<f64>> {
    if gamma.len() != var.len() {
        return None;
    }
    Some(
        gamma
            .iter()
            .zip(var)
            .map(|(g, v)| g / (v + epsilon as f64).sqrt())
            .collect(),
    )
}

/// `b' = (b − μ)·s + β` with `b = 0` when there is no bias (DESIGN §4).
pub fn bn_bias(bias: Option<&[f64]>, beta: &[f64], mean: &[f64], s: &[f64]) -> Option<Vec<f64>> {
    let n = s.len();
    if beta.len() != n || mean.len() != n || bias.is_some_and(|b| b.len() != n) {
        return None;
    }
    Some(
        (0..n)
            .map(|c| (bias.map_or(0.0, |b| b[c]) - mean[c]) * s[c] + beta[c])
            .collect(),
    )
}

/// An f32 tensor from f64 values.
pub fn to_tensor(shape: Vec<usize>, values: &[f64]) -> Option<Tensor> {
    Tensor::from_f32(shape, values.iter().map(|&x| x as f32).collect()).ok()
}

/// The per-channel vector a constant `c` denotes when broadcast against a value of shape
/// `y` (channels on axis 1): `c` must broadcast to `y` without changing `y`'s shape and vary
/// along axis 1 only. A size-1 channel dimension is repeated.
pub fn channel_vector(c: &Tensor, y: &[usize]) -> Option<Vec<f64>> {
    let data = f32_data(c)?;
    if y.len() < 2 || c.shape().len() > y.len() {
        return None;
    }
    let pad = y.len() - c.shape().len();
    let dims: Vec<usize> = std::iter::repeat_n(1, pad)
        .chain(c.shape().iter().copied())
        .collect();
    for (axis, (&d, &yd)) in dims.iter().zip(y).enumerate() {
        let ok = if axis == 1 { d == yd || d == 1 } else { d == 1 };
        if !ok {
            return None;
        }
    }
    let channels = y[1];
    Some(if dims[1] == 1 {
        vec![data[0] as f64; channels]
    } else {
        data.iter().map(|&x| x as f64).collect()
    })
}

/// Scale a conv weight `[C_out, C_in/g, k..]` along its input channels: element
/// `W[o, i, ..]` reads input channel `group(o)·(C_in/g) + i`.
pub fn scale_conv_input_channels(w: &Tensor, s: &[f64], groups: usize) -> Option<Tensor> {
    let data = f32_data(w)?;
    let shape = w.shape();
    if shape.len() < 2 || groups == 0 || !shape[0].is_multiple_of(groups) {
        return None;
    }
    let (c_out, per_group) = (shape[0], shape[1]);
    if per_group * groups != s.len() {
        return None;
    }
    let out_per_group = c_out / groups;
    let inner: usize = shape[2..].iter().product();
    let out = data
        .iter()
        .enumerate()
        .map(|(e, &x)| {
            let o = e / (per_group * inner);
            let i = (e / inner) % per_group;
            (x as f64 * s[(o / out_per_group) * per_group + i]) as f32
        })
        .collect();
    Tensor::from_f32(shape.to_vec(), out).ok()
}

/// `b'[o] = b[o] + Σ_{i,k} W[o,i,k] · t[group(o)·(C_in/g) + i]`: what a per-input-channel
/// shift `t` contributes to each output of an unpadded conv.
pub fn conv_bias_of_input_shift(
    w: &Tensor,
    bias: Option<&[f64]>,
    t: &[f64],
    groups: usize,
) -> Option<Vec<f64>> {
    let data = f32_data(w)?;
    let shape = w.shape();
    if shape.len() < 2 || groups == 0 || !shape[0].is_multiple_of(groups) {
        return None;
    }
    let (c_out, per_group) = (shape[0], shape[1]);
    if per_group * groups != t.len() || bias.is_some_and(|b| b.len() != c_out) {
        return None;
    }
    let out_per_group = c_out / groups;
    let inner: usize = shape[2..].iter().product();
    let mut out: Vec<f64> = (0..c_out).map(|o| bias.map_or(0.0, |b| b[o])).collect();
    for (e, &x) in data.iter().enumerate() {
        let o = e / (per_group * inner);
        let i = (e / inner) % per_group;
        out[o] += x as f64 * t[(o / out_per_group) * per_group + i];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: Vec<usize>, v: Vec<f32>) -> Tensor {
        Tensor::from_f32(shape, v).unwrap()
    }

    #[test]
    fn bn_scale_and_bias_follow_the_design_formula() {
        // γ = 2, σ² = 3, ε = 1 → s = 2/sqrt(4) = 1; μ = 5, β = 7, b = 1 → b' = (1−5)·1 + 7 = 3
        let s = bn_scale(&[2.0], &[3.0], 1.0).unwrap();
        assert_eq!(s, vec![1.0]);
        assert_eq!(
            bn_bias(Some(&[1.0]), &[7.0], &[5.0], &s).unwrap(),
            vec![3.0]
        );
        // no bias: b' = −μ·s + β = 2
        assert_eq!(bn_bias(None, &[7.0], &[5.0], &s).unwrap(), vec![2.0]);
    }

    #[test]
    fn axis_scaling_touches_the_right_elements() {
        // W [2,3]: scaling axis 0 by [10, 100] scales rows, axis 1 by [1,2,3] scales columns.
        let w = t(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]);
        let rows = scale_channels(&w, &[10.0, 100.0], ChannelLayout::Axis(0)).unwrap();
        assert_eq!(rows.as_f32().unwrap(), &[10., 20., 30., 400., 500., 600.]);
        let cols = scale_channels(&w, &[1.0, 2.0, 3.0], ChannelLayout::Axis(1)).unwrap();
        assert_eq!(cols.as_f32().unwrap(), &[1., 4., 9., 4., 10., 18.]);
        assert!(scale_channels(&w, &[1.0], ChannelLayout::Axis(0)).is_none());
    }

    #[test]
    fn conv_transpose_groups_map_rows_to_their_group_channels() {
        // C_in = 4, groups = 2, C_out/g = 1 → rows 0,1 feed output channel 0, rows 2,3 channel 1.
        let w = t(vec![4, 1, 1], vec![1., 1., 1., 1.]);
        let scaled =
            scale_channels(&w, &[2.0, 3.0], ChannelLayout::Grouped1 { groups: 2 }).unwrap();
        assert_eq!(scaled.as_f32().unwrap(), &[2., 2., 3., 3.]);
        // groups = 1, C_out = 2: column j of every row is channel j.
        let w = t(vec![2, 2], vec![1., 1., 1., 1.]);
        let scaled =
            scale_channels(&w, &[2.0, 3.0], ChannelLayout::Grouped1 { groups: 1 }).unwrap();
        assert_eq!(scaled.as_f32().unwrap(), &[2., 3., 2., 3.]);
    }

    #[test]
    fn channel_vectors_accept_only_per_channel_broadcasts() {
        let y = [1, 3, 4, 4];
        let c = t(vec![3, 1, 1], vec![1., 2., 3.]);
        assert_eq!(channel_vector(&c, &y).unwrap(), vec![1., 2., 3.]);
        let scalar = t(vec![1], vec![5.]);
        assert_eq!(channel_vector(&scalar, &y).unwrap(), vec![5., 5., 5.]);
        // varies along the last axis: not per channel
        let spatial = t(vec![4], vec![1., 2., 3., 4.]);
        assert!(channel_vector(&spatial, &y).is_none());
        // would broadcast y to a larger shape
        let bigger = t(vec![2, 3, 1, 1], vec![1.; 6]);
        assert!(channel_vector(&bigger, &y).is_none());
    }

    #[test]
    fn input_channel_folds_respect_groups() {
        // groups = 2, C_out = 2, C_in/g = 1: output 0 reads input 0, output 1 reads input 1.
        let w = t(vec![2, 1, 1], vec![1., 1.]);
        let scaled = scale_conv_input_channels(&w, &[2.0, 3.0], 2).unwrap();
        assert_eq!(scaled.as_f32().unwrap(), &[2., 3.]);
        let b = conv_bias_of_input_shift(&w, Some(&[10.0, 20.0]), &[1.0, 2.0], 2).unwrap();
        assert_eq!(b, vec![11.0, 22.0]);
    }
}
