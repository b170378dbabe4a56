//! `PoolKernel::into_aot` (a child module of `fpool`): the window kernel, padded with the
//! pool's identity (−∞ for max, 0 for average).

use super::PoolKernel;
use crate::aot::{AotKernel, AotTarget};
use crate::CodegenError;

impl PoolKernel {
    pub(crate) fn into_aot(self, target: &AotTarget) -> Result<AotKernel, CodegenError> {
        let padding = self.kind.padding().to_bits();
        Ok(self.window.into_aot(target, padding))
    }
}
