//! `into_aot` of [`QuantizeKernel`] and [`DequantizeKernel`] (a child module of
//! `quantize`): one function over the whole tensor, its parameter table as the blob.

use super::{DequantizeKernel, QuantizeKernel};
use crate::aot::parts::whole_tensor_call;
use crate::aot::AotKernel;

impl QuantizeKernel {
    pub(crate) fn into_aot(mut self) -> AotKernel {
        AotKernel {
            name: self.code.name().to_string(),
            functions: self.code.take_recorded(),
            blobs: vec![self.params],
            scratch_bytes: 0,
            calls: whole_tensor_call(true),
        }
    }
}

impl DequantizeKernel {
    pub(crate) fn into_aot(mut self) -> AotKernel {
        AotKernel {
            name: self.code.name().to_string(),
            functions: self.code.take_recorded(),
            blobs: vec![self.params],
            scratch_bytes: 0,
            calls: whole_tensor_call(true),
        }
    }
}
