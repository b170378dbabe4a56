//! `FConvKernel::into_aot` (a child module of `fconv`): the micro-kernel, plus a generated
//! CLIF fill of the zero-padded scratch (the JIT fills it in Rust), per batch item.

use super::FConvKernel;
use crate::aot::fill::build_fill_zero_padded;
use crate::aot::parts::{fill_then_compute, pointer_signature};
use crate::aot::{AotKernel, AotTarget, CallArg, KernelCall};

impl FConvKernel {
    /// Operands: `x`, then the residual when the node has one.
    pub(crate) fn into_aot(mut self, target: &AotTarget) -> AotKernel {
        let isa = &**target.isa();
        let plan = &self.plan;
        let scratch_bytes = self.scratch_bytes();
        let mut functions = self.code.take_recorded();
        let fill = functions.len();
        functions.push((
            "fill".to_string(),
            build_fill_zero_padded(
                plan.geo.c_in,
                plan.geo.input,
                plan.padded,
                plan.geo.pad_begin,
                scratch_bytes,
                pointer_signature(isa, 2),
                isa.frontend_config(),
            ),
        ));
        let batch = plan.geo.batch.max(1);
        let x_image = 4 * plan.x_shape.iter().product::<usize>() / batch;
        let out_image = 4 * plan.out_shape.iter().product::<usize>() / batch;
        let residual = plan.residual;
        let calls = fill_then_compute(plan.geo.batch, x_image, out_image, fill, &[], |n, out| {
            // the micro-kernel reads no residual when the node has none: any valid pointer
            let residual = if residual {
                CallArg::Read {
                    operand: 1,
                    offset: n * out_image,
                }
            } else {
                out.clone()
            };
            vec![KernelCall {
                function: 0,
                args: vec![
                    CallArg::Blob(0),
                    CallArg::Blob(1),
                    CallArg::Scratch(0),
                    residual,
                    out,
                ],
            }]
        });
        AotKernel {
            name: self.code.name().to_string(),
            functions,
            blobs: vec![
                self.packed.as_slice().to_vec(),
                self.tables.as_slice().to_vec(),
            ],
            scratch_bytes,
            calls,
        }
    }
}
