//! `MaxPoolKernel::into_aot` (a child module of `maxpool`): the window kernel, padded with
//! the dtype's lowest value, or the row path's widen and compute functions per batch item.

use super::{lowest, Body, MaxPoolKernel};
use crate::aot::{AotKernel, AotTarget};
use crate::CodegenError;

impl MaxPoolKernel {
    pub(crate) fn into_aot(self, target: &AotTarget) -> Result<AotKernel, CodegenError> {
        let padding = u32::from(lowest(self.dtype));
        let rows = match self.body {
            Body::Window(window) => return Ok(window.into_aot(target, padding)),
            Body::Rows(rows) => rows,
        };
        Ok(rows.into_aot())
    }
}
