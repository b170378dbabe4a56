//! `MaxPoolKernel::into_aot` (a child module of `maxpool`): the window kernel, padded with
//! the dtype's lowest value, or the row path's widen and compute functions per batch item.

use super::{lowest, Body, MaxPoolKernel};
use crate::aot::{AotKernel, AotTarget, CallArg, KernelCall};
use crate::CodegenError;

impl MaxPoolKernel {
    pub(crate) fn into_aot(self, target: &AotTarget) -> Result<AotKernel, CodegenError> {
        let padding = u32::from(lowest(self.dtype));
        let mut rows = match self.body {
            Body::Window(window) => return Ok(window.into_aot(target, padding)),
            Body::Rows(rows) => rows,
        };
        let scratch_bytes = rows.scratch_bytes();
        let geo = &rows.geo;
        let batch = geo.batch.max(1);
        let x_image = geo.x_shape.iter().product::<usize>() / batch;
        let out_image = geo.out_shape.iter().product::<usize>() / batch;
        let mut calls = Vec::with_capacity(2 * batch);
        for n in 0..geo.batch {
            calls.push(KernelCall {
                function: 0,
                args: vec![
                    CallArg::Read {
                        operand: 0,
                        offset: n * x_image,
                    },
                    CallArg::Scratch(0),
                ],
            });
            calls.push(KernelCall {
                function: 1,
                args: vec![
                    CallArg::Scratch(0),
                    CallArg::Write {
                        offset: n * out_image,
                    },
                ],
            });
        }
        let name = rows.code.name().to_string();
        // recorded in build order: widen, then compute
        let functions = rows.take_recorded();
        Ok(AotKernel {
            name,
            functions,
            blobs: Vec::new(),
            scratch_bytes,
            calls,
        })
    }
}
