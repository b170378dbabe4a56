//! `into_aot` of the f32 elementwise kernels (a child module of `felem`): Softmax, one
//! function `(x, out)`; activations and binary ops, the row program
//! `(table, p0, p1, p2, out)`.

use super::SoftmaxKernel;
use crate::aot::parts::whole_tensor_call;
use crate::aot::AotKernel;

impl SoftmaxKernel {
    pub(crate) fn into_aot(mut self) -> AotKernel {
        AotKernel {
            name: self.code.name().to_string(),
            functions: self.code.take_recorded(),
            blobs: Vec::new(),
            scratch_bytes: 0,
            calls: whole_tensor_call(false),
        }
    }
}

use super::{ActivationKernel, BinaryKernel, Rows};
use crate::aot::{CallArg, KernelCall};

impl Rows {
    /// `(table, p0, p1, p2, out)` with the `operands` runtime operands first; unused
    /// parameters get the output's address, as `Rows::run` does.
    fn into_aot(mut self, operands: usize) -> AotKernel {
        let mut args = vec![CallArg::Blob(0)];
        for k in 0..3 {
            args.push(if k < operands {
                CallArg::Read {
                    operand: k,
                    offset: 0,
                }
            } else {
                CallArg::Write { offset: 0 }
            });
        }
        args.push(CallArg::Write { offset: 0 });
        AotKernel {
            name: self.code.name().to_string(),
            functions: self.code.take_recorded(),
            blobs: vec![self.table.as_slice().to_vec()],
            scratch_bytes: 0,
            calls: vec![KernelCall { function: 0, args }],
        }
    }
}

impl ActivationKernel {
    pub(crate) fn into_aot(self) -> AotKernel {
        self.rows.into_aot(1)
    }
}

impl BinaryKernel {
    pub(crate) fn into_aot(self) -> AotKernel {
        self.rows.into_aot(2)
    }
}
