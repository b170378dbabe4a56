//! `PoolKernel::into_aot` (a child module of `fpool`): the window kernel, padded with the
//! pool's identity (−∞ for max, 0 for average), or the global pool's one function, which
//! reads the input in place, per batch item.

use super::{GlobalPool, PoolBody, PoolKernel};
use crate::aot::parts::per_image_calls;
use crate::aot::{AotKernel, AotTarget};
use crate::CodegenError;

impl PoolKernel {
    pub(crate) fn into_aot(self, target: &AotTarget) -> Result<AotKernel, CodegenError> {
        match self.body {
            PoolBody::Window(window) => {
                let padding = self.kind.padding().to_bits();
                Ok(window.into_aot(target, padding))
            }
            PoolBody::Global(global) => Ok(global.into_aot()),
            PoolBody::Rows(rows) => Ok(rows.into_aot()),
        }
    }
}

impl GlobalPool {
    fn into_aot(mut self) -> AotKernel {
        let batch = self.geo.batch.max(1);
        let x_image = self.io_bytes * self.geo.x_shape.iter().product::<usize>() / batch;
        let out_image = self.io_bytes * self.geo.channels;
        let calls = per_image_calls(self.geo.batch, x_image, out_image, &[], &[]);
        AotKernel {
            name: self.code.name().to_string(),
            functions: self.code.take_recorded(),
            blobs: Vec::new(),
            scratch_bytes: 0,
            calls,
        }
    }
}
