//! `FConvTransposeKernel::into_aot` (a child module of `fconv_transpose`): one micro-kernel
//! per phase, plus a generated CLIF fill of the zero-padded scratch (the JIT fills it in
//! Rust), per batch item.

use super::FConvTransposeKernel;
use crate::aot::fill::build_fill_zero_padded;
use crate::aot::parts::{fill_then_compute, pointer_signature};
use crate::aot::{AotKernel, AotTarget, CallArg, KernelCall};

impl FConvTransposeKernel {
    pub(crate) fn into_aot(mut self, target: &AotTarget) -> AotKernel {
        let isa = &**target.isa();
        let plan = &self.plan;
        let scratch_bytes = plan.scratch_bytes();
        // recorded in build order: phase 0, 1, …
        let mut functions = self.code.take_recorded();
        debug_assert_eq!(functions.len(), self.phases.len());
        let fill = functions.len();
        functions.push((
            "fill".to_string(),
            build_fill_zero_padded(
                plan.c_in,
                plan.input,
                plan.padded,
                plan.pad_begin,
                scratch_bytes,
                pointer_signature(isa, 2),
                isa.frontend_config(),
            ),
        ));
        let mut blobs = Vec::with_capacity(2 * self.phases.len());
        for phase in &self.phases {
            blobs.push(phase.packed.as_slice().to_vec());
            blobs.push(phase.tables.as_slice().to_vec());
        }
        let batch = plan.batch.max(1);
        let x_image = 4 * plan.x_shape.iter().product::<usize>() / batch;
        let out_image = 4 * plan.out_shape.iter().product::<usize>() / batch;
        let phases = self.phases.len();
        let calls = fill_then_compute(plan.batch, x_image, out_image, fill, &[], |_, out| {
            // no residual: the out pointer stands in, as in `run_into`
            (0..phases)
                .map(|index| KernelCall {
                    function: index,
                    args: vec![
                        CallArg::Blob(2 * index),
                        CallArg::Blob(2 * index + 1),
                        CallArg::Scratch(0),
                        out.clone(),
                        out.clone(),
                    ],
                })
                .collect()
        });
        AotKernel {
            name: self.code.name().to_string(),
            functions,
            blobs,
            scratch_bytes,
            calls,
        }
    }
}
