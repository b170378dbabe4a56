//! `WindowKernel::into_aot` (a child module of `pool_window`): the window function, plus a
//! generated CLIF fill of the channel-last scratch (the JIT fills it in Rust), per batch item.

use super::WindowKernel;
use crate::aot::fill::build_fill_channel_last;
use crate::aot::parts::{fill_then_compute, pointer_signature};
use crate::aot::{AotKernel, AotTarget, CallArg, KernelCall};

impl WindowKernel {
    /// `padding_bits`: the bits of the reduction's identity, which pads the scratch.
    pub(crate) fn into_aot(mut self, target: &AotTarget, padding_bits: u32) -> AotKernel {
        let isa = &**target.isa();
        let mut functions = self.code.take_recorded();
        functions.push((
            "fill".to_string(),
            build_fill_channel_last(
                &self.geo,
                &self.layout,
                self.elem_bytes,
                padding_bits,
                pointer_signature(isa, 2),
                isa.frontend_config(),
            ),
        ));
        let batch = self.geo.batch.max(1);
        let x_image = self.geo.x_shape.iter().product::<usize>() / batch * self.elem_bytes;
        let out_image = self.geo.out_shape.iter().product::<usize>() / batch * self.elem_bytes;
        let calls = fill_then_compute(self.geo.batch, x_image, out_image, 1, &[], |_, out| {
            vec![KernelCall {
                function: 0,
                args: vec![CallArg::Blob(0), CallArg::Scratch(0), out],
            }]
        });
        AotKernel {
            name: self.code.name().to_string(),
            scratch_bytes: self.scratch_bytes(),
            blobs: vec![self.tables.as_slice().to_vec()],
            functions,
            calls,
        }
    }
}
