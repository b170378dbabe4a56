//! What the conv and pool geometries share: 1-D to 3-D problems run as 3-D with leading
//! unit dims ([`SP`], [`widen`]), and the window attributes are checked as the interpreter
//! checks them before any extent is computed ([`check_window`]).

use crate::CodegenError;

/// Spatial rank inside the kernels.
pub(crate) const SP: usize = 3;

/// Left-pad a per-spatial-dim list to [`SP`] entries with `fill`.
pub(crate) fn widen(v: &[usize], fill: usize) -> [usize; SP] {
    let mut out = [fill; SP];
    out[SP - v.len()..].copy_from_slice(v);
    out
}

/// A window's attribute lists: one entry per spatial dim (`pads`: begins then ends), 1 to 3
/// spatial dims, positive strides and dilations; the error names `op`.
pub(crate) fn check_window(
    op: &'static str,
    kernel: &[usize],
    strides: &[usize],
    pads: &[usize],
    dilations: &[usize],
) -> Result<(), CodegenError> {
    let invalid = |reason: String| CodegenError::InvalidOp { op, reason };
    let nsp = kernel.len();
    if !(1..=SP).contains(&nsp) {
        return Err(invalid(format!("{nsp} spatial dims; 1 to 3 are supported")));
    }
    if strides.len() != nsp || dilations.len() != nsp || pads.len() != 2 * nsp {
        return Err(invalid(format!(
            "attribute lengths kernel {kernel:?}, strides {strides:?}, pads {pads:?}, \
             dilations {dilations:?} do not fit {nsp} spatial dims"
        )));
    }
    if strides.contains(&0) || dilations.contains(&0) {
        return Err(invalid(format!(
            "strides {strides:?} and dilations {dilations:?} must be positive"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widens_and_checks() {
        assert_eq!(widen(&[5, 7], 1), [1, 5, 7]);
        assert_eq!(widen(&[2, 3, 4], 0), [2, 3, 4]);
        assert!(check_window("conv", &[3], &[1], &[0, 0], &[1]).is_ok());
        for (k, s, p, d) in [
            (vec![], vec![], vec![], vec![]),
            (vec![3], vec![1, 1], vec![0, 0], vec![1]),
            (vec![3], vec![0], vec![0, 0], vec![1]),
            (vec![3, 3, 3, 3], vec![1; 4], vec![0; 8], vec![1; 4]),
        ] {
            assert!(matches!(
                check_window("conv", &k, &s, &p, &d),
                Err(CodegenError::InvalidOp { op: "conv", .. })
            ));
        }
    }
}
