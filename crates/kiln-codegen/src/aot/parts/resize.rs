//! `ResizeKernel::into_aot` (a child module of `resize`): its one function
//! `(tables, x, out, scratch)` over the whole tensor, as `run_into` calls it.

use super::ResizeKernel;
use crate::aot::{AotKernel, CallArg, KernelCall};

impl ResizeKernel {
    pub(crate) fn into_aot(mut self) -> AotKernel {
        AotKernel {
            name: self.code.name().to_string(),
            functions: self.code.take_recorded(),
            blobs: vec![self.tables.as_slice().to_vec()],
            scratch_bytes: self.scratch_bytes(),
            calls: vec![KernelCall {
                function: 0,
                args: vec![
                    CallArg::Blob(0),
                    CallArg::Read {
                        operand: 0,
                        offset: 0,
                    },
                    CallArg::Write { offset: 0 },
                    CallArg::Scratch(0),
                ],
            }],
        }
    }
}
