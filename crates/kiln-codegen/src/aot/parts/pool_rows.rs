//! `RowPool::into_aot` (a child module of `pool_rows`): the widen and compute functions
//! per batch item, the divisors (average pools) as a blob.

use super::RowPool;
use crate::aot::parts::fill_then_compute;
use crate::aot::{AotKernel, CallArg, KernelCall};

impl RowPool {
    pub(crate) fn into_aot(mut self) -> AotKernel {
        let scratch_bytes = self.scratch_bytes();
        let geo = &self.geo;
        let eb = self.elem_bytes;
        let batch = geo.batch.max(1);
        let x_image = eb * geo.x_shape.iter().product::<usize>() / batch;
        let out_image = eb * geo.out_shape.iter().product::<usize>() / batch;
        let with_divisors = !self.divisors.as_slice().is_empty();
        let calls = fill_then_compute(geo.batch, x_image, out_image, 0, &[], |_, out| {
            // never read without divisors: any valid address
            let divisors = if with_divisors {
                CallArg::Blob(0)
            } else {
                CallArg::Scratch(0)
            };
            vec![KernelCall {
                function: 1,
                args: vec![CallArg::Scratch(0), out, divisors],
            }]
        });
        let blobs = if with_divisors {
            vec![self.divisors.as_slice().to_vec()]
        } else {
            Vec::new()
        };
        AotKernel {
            name: self.code.name().to_string(),
            // recorded in build order: widen, then compute
            functions: self.code.take_recorded(),
            blobs,
            scratch_bytes,
            calls,
        }
    }
}
