//! `MaxPoolKernel::into_aot` (a child module of `maxpool`): the window kernel, padded with
//! the dtype's lowest value.

use super::{lowest, MaxPoolKernel};
use crate::aot::{AotKernel, AotTarget};
use crate::CodegenError;

impl MaxPoolKernel {
    pub(crate) fn into_aot(self, target: &AotTarget) -> Result<AotKernel, CodegenError> {
        let padding = u32::from(lowest(self.dtype));
        Ok(self.window.into_aot(target, padding))
    }
}
