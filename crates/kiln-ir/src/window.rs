//! Pooling window geometry shared by the reference interpreter (kiln-interp) and the JIT
//! pools (kiln-codegen), which must agree on every output extent: the attribute checks and
//! onnxruntime's output size rule, `ceil_mode` included.

use crate::PoolAttrs;

/// The output spatial extents of a pool with `attrs` over an input of shape
/// `x = [N, C, spatial..]` (1 to 3 spatial dims), or why the pool is invalid.
pub fn pool_output_extents(x: &[usize], attrs: &PoolAttrs) -> Result<Vec<usize>, String> {
    let nsp = attrs.kernel.len();
    if !(1..=3).contains(&nsp) || x.len() != nsp + 2 {
        return Err(format!(
            "input {x:?} with kernel {:?}: 1 to 3 spatial dims",
            attrs.kernel
        ));
    }
    if attrs.strides.len() != nsp || attrs.dilations.len() != nsp || attrs.pads.len() != 2 * nsp {
        return Err(format!(
            "attribute lengths strides {:?}, pads {:?}, dilations {:?} do not fit kernel {:?}",
            attrs.strides, attrs.pads, attrs.dilations, attrs.kernel
        ));
    }
    if attrs.kernel.contains(&0) || attrs.strides.contains(&0) || attrs.dilations.contains(&0) {
        return Err("kernel, strides and dilations must be positive".to_string());
    }
    let mut out = vec![0; nsp];
    for d in 0..nsp {
        let (pb, pe) = (attrs.pads[d], attrs.pads[nsp + d]);
        let span = attrs.dilations[d] * (attrs.kernel[d] - 1) + 1;
        let padded = x[2 + d] + pb + pe;
        if padded < span {
            return Err(format!(
                "kernel {:?} does not fit the padded input {x:?}",
                attrs.kernel
            ));
        }
        let s = attrs.strides[d];
        let mut o = if attrs.ceil_mode {
            (padded - span).div_ceil(s) + 1
        } else {
            (padded - span) / s + 1
        };
        // onnxruntime (like PyTorch): the last window must start inside the input or
        // its leading padding, so ceil_mode never adds a window of pure end padding.
        if attrs.ceil_mode && (o - 1) * s >= x[2 + d] + pb {
            o -= 1;
        }
        out[d] = o;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_follow_onnxruntime() {
        let stride_2 = PoolAttrs {
            kernel: vec![2],
            strides: vec![2],
            pads: vec![0, 0],
            dilations: vec![1],
            ceil_mode: false,
            count_include_pad: false,
            storage_order: 0,
        };
        let with = |pads: [usize; 2], ceil_mode: bool| PoolAttrs {
            pads: pads.to_vec(),
            ceil_mode,
            ..stride_2.clone()
        };
        // 5 inputs, kernel 2, stride 2: floor (5−2)/2+1 = 2, ceil 3 (the last window starts
        // at 4, inside the input)
        assert_eq!(
            pool_output_extents(&[1, 1, 5], &with([0, 0], false)),
            Ok(vec![2])
        );
        assert_eq!(
            pool_output_extents(&[1, 1, 5], &with([0, 0], true)),
            Ok(vec![3])
        );
        // 4 inputs, pad end 1, kernel 2, stride 2, ceil: ⌈3/2⌉+1 = 3, but the third window
        // would start at 4 = in the end padding only: dropped
        assert_eq!(
            pool_output_extents(&[1, 1, 4], &with([0, 1], true)),
            Ok(vec![2])
        );
        assert!(pool_output_extents(&[1, 1, 1], &stride_2).is_err());
        assert!(pool_output_extents(&[1, 1], &stride_2).is_err());
        let no_stride = PoolAttrs {
            strides: vec![0],
            ..stride_2.clone()
        };
        assert!(pool_output_extents(&[1, 1, 4], &no_stride).is_err());
    }
}
