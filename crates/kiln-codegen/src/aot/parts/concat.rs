//! `ConcatKernel::into_aot` (a child module of `concat`): one function `(inputs, out)`
//! whose first argument is an array of the inputs' addresses.

use super::ConcatKernel;
use crate::aot::{AotKernel, CallArg, KernelCall};

impl ConcatKernel {
    pub(crate) fn into_aot(mut self) -> AotKernel {
        AotKernel {
            name: self.code.name().to_string(),
            functions: self.code.take_recorded(),
            blobs: Vec::new(),
            scratch_bytes: 0,
            calls: vec![KernelCall {
                function: 0,
                args: vec![CallArg::ReadPointers, CallArg::Write { offset: 0 }],
            }],
        }
    }
}
