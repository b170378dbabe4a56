//! `QConvKernel::into_aot` (a child module of `qconv`): the two functions of either path
//! (general or depthwise: a widening step, then the compute over a part range) and the
//! packed weights, called per batch item as `run_into` does on one thread.

use super::QConvKernel;
use crate::aot::parts::fill_then_compute;
use crate::aot::{AotKernel, CallArg, KernelCall};

impl QConvKernel {
    /// The recorded kernel as object-file parts (built by `crate::aot::recording`).
    pub(crate) fn into_aot(mut self) -> AotKernel {
        // objects do not fuse: the operand array is never read
        debug_assert!(self.fused.is_none(), "a fused epilogue in an object");
        let scratch_bytes = self.scratch_bytes();
        let tiles = self.parallel_parts() as u64;
        let batch = self.plan.batch.max(1);
        let x_image = self.plan.x_shape.iter().product::<usize>() / batch;
        let out_image = self.plan.out_shape.iter().product::<usize>() / batch;
        // recorded in build order: the widening step, then the compute function
        let functions = self.code.take_recorded();
        debug_assert!(functions.len() == 2 && functions[0].0.ends_with("_widen"));
        // one thread: the widening step over all its parts (rows or channels)
        let widen_parts = [CallArg::Int(0), CallArg::Int(self.widen_parts() as u64)];
        let calls = fill_then_compute(
            self.plan.batch,
            x_image,
            out_image,
            0,
            &widen_parts,
            |_, out| {
                vec![KernelCall {
                    function: 1,
                    args: vec![
                        CallArg::Blob(0),
                        CallArg::Scratch(0),
                        out,
                        CallArg::Int(0),
                        CallArg::Int(tiles),
                        // no fused epilogue (objects do not fuse): its operands unread
                        CallArg::Int(0),
                    ],
                }]
            },
        );
        AotKernel {
            name: self.code.name().to_string(),
            functions,
            blobs: vec![self.packed.as_slice().to_vec()],
            scratch_bytes,
            calls,
        }
    }
}
