//! `RowPool::into_aot` (a child module of `pool_rows`): the pool's one function per batch
//! item, the divisors (average pools) as a blob.

use super::RowPool;
use crate::aot::parts::per_image_calls;
use crate::aot::{AotKernel, CallArg};

impl RowPool {
    pub(crate) fn into_aot(mut self) -> AotKernel {
        let scratch_bytes = self.scratch_bytes();
        let geo = &self.geo;
        let eb = self.io_bytes;
        let batch = geo.batch.max(1);
        let x_image = eb * geo.x_shape.iter().product::<usize>() / batch;
        let out_image = eb * geo.out_shape.iter().product::<usize>() / batch;
        let with_divisors = !self.divisors.as_slice().is_empty();
        // one call per batch item: (x, scratch, out, divisors); without divisors the last
        // argument is never read: any valid address
        let divisors = if with_divisors {
            CallArg::Blob(0)
        } else {
            CallArg::Scratch(0)
        };
        let calls = per_image_calls(
            geo.batch,
            x_image,
            out_image,
            &[CallArg::Scratch(0)],
            &[divisors],
        );
        let blobs = if with_divisors {
            vec![self.divisors.as_slice().to_vec()]
        } else {
            Vec::new()
        };
        AotKernel {
            name: self.code.name().to_string(),
            functions: self.code.take_recorded(),
            blobs,
            scratch_bytes,
            calls,
        }
    }
}
