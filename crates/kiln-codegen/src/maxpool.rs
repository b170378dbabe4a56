//! int8 MaxPool (`Op::MaxPool` on u8/i8 tensors, without the Indices output), any kernel,
//! strides, dilations, pads and `ceil_mode`, 1-D to 3-D; bit-exact with `kiln-interp`.
//!
//! The max of int8 values is exact whatever the order, and the type's lowest value is its
//! identity, so padding is simply the lowest value: a window's padding never wins, and a
//! window of padding only yields the lowest value, as the interpreter (and onnxruntime)
//! starts its running max there. On the window reduction shared with the f32 pools
//! (`pool_window.rs`): the input is spread per batch item into a channel-last scratch
//! `[D_e][H_e][W_e][C_p]` (`C_p` = channels rounded up to 16, the extents covering every
//! window, `ceil_mode` ones included) filled with the lowest value; the kernel then takes,
//! per output pixel and block of 16 channels, the lane-wise max (`pmaxub`/`pmaxsb`) of one
//! 16-byte load per tap (a loop over a tap-offset table), and stores the valid channels
//! into the NCHW output.
//!
//! 1-D/2-D pools with horizontal stride 1 or 2 and no dilation (stems, down-sampling pools)
//! take the row path instead (`maxpool_rows.rs`): NCHW in and out, 16 output pixels of a
//! row per vector, the padded input built by generated code.

// AOT: `into_aot` of this kernel (crate::aot).
#[path = "aot/parts/maxpool.rs"]
mod aot_parts;

use crate::jit::JitOptions;
use crate::pool_rows::RowPool;
use crate::pool_window::{global_pool_attrs, PoolGeometry, Reduction, WindowKernel};
use crate::qconv::{AlignedBytes, Int8};
use crate::tensor_io::{bad_buffer, shape_name};
use crate::CodegenError;
use cranelift_codegen::ir::{types, InstBuilder};
use kiln_ir::{DType, PoolAttrs, Tensor, TensorData, TensorType};

const OP: &str = "max_pool";

/// A compiled int8 MaxPool.
pub struct MaxPoolKernel {
    body: Body,
    dtype: DType,
}

/// Which kernel does the pooling.
enum Body {
    /// The channel-last window reduction shared with the f32 pools.
    Window(WindowKernel),
    /// NCHW rows of 16 pixels (`maxpool_rows.rs`).
    Rows(RowPool),
}

impl MaxPoolKernel {
    /// The kernel's name: its op and shapes, as its machine code is named.
    pub fn name(&self) -> &str {
        match &self.body {
            Body::Window(w) => w.code.name(),
            Body::Rows(r) => r.code.name(),
        }
    }

    /// Cranelift's listing of the kernel's main function, when compiled with
    /// `capture_disassembly`.
    pub fn disassembly(&self) -> Option<&str> {
        match &self.body {
            Body::Window(w) => w.code.main_disassembly(),
            Body::Rows(r) => r.code.main_disassembly(),
        }
    }

    /// `"rows"` (NCHW rows of 16 pixels) or `"window"` (channel-last window reduction).
    pub fn path(&self) -> &'static str {
        match self.body {
            Body::Window(_) => "window",
            Body::Rows(_) => "rows",
        }
    }

    fn geo(&self) -> &PoolGeometry {
        match &self.body {
            Body::Window(w) => &w.geo,
            Body::Rows(r) => &r.geo,
        }
    }
}

impl std::fmt::Debug for MaxPoolKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaxPoolKernel")
            .field("name", &self.name())
            .field("path", &self.path())
            .finish()
    }
}

/// Working memory of a [`MaxPoolKernel`] (the channel-last padded input).
#[derive(Debug)]
pub struct MaxPoolScratch {
    bytes: AlignedBytes,
}

/// The lowest value of the dtype's bits: the max's identity and the scratch padding.
fn lowest(dtype: DType) -> u8 {
    match dtype {
        DType::I8 => i8::MIN as u8,
        _ => u8::MIN,
    }
}

impl MaxPoolKernel {
    /// Compile a MaxPool node with a u8/i8 input `x_ty` (its only output: the values; the
    /// output dtype and quantization are the input's).
    pub fn compile(
        attrs: &PoolAttrs,
        x_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<MaxPoolKernel, CodegenError> {
        let geo = PoolGeometry::new(OP, &x_ty.shape, attrs)?;
        if attrs.storage_order > 1 {
            return Err(CodegenError::InvalidOp {
                op: OP,
                reason: format!("storage_order {} (0 or 1)", attrs.storage_order),
            });
        }
        let dtype = x_ty.dtype;
        if !matches!(dtype, DType::U8 | DType::I8) {
            return Err(CodegenError::Unsupported {
                op: OP,
                reason: format!("{dtype} input (u8 or i8 only)"),
            });
        }
        let init = move |b: &mut cranelift_frontend::FunctionBuilder| {
            let lowest = b.ins().iconst(types::I8, lowest(dtype) as i64);
            b.ins().splat(types::I8X16, lowest)
        };
        let combine = move |b: &mut cranelift_frontend::FunctionBuilder, a, v| {
            if dtype == DType::I8 {
                b.ins().smax(a, v)
            } else {
                b.ins().umax(a, v)
            }
        };
        let reduction = Reduction {
            vector: types::I8X16,
            lanes: 16,
            elem_bytes: 1,
            init: &init,
            combine: &combine,
            divide: false,
        };
        let name = format!("max_pool_{}", shape_name(&geo.out_shape));
        if RowPool::applies(&geo) {
            let padding = u32::from(lowest(dtype));
            let rows = RowPool::compile(name, geo, &reduction, padding, &[], None, options)?;
            return Ok(MaxPoolKernel {
                body: Body::Rows(rows),
                dtype,
            });
        }
        let layout = geo.layout(OP, 16, 1)?;
        let window = WindowKernel::compile(name, geo, layout, &reduction, &[], options)?;
        Ok(MaxPoolKernel {
            body: Body::Window(window),
            dtype,
        })
    }

    /// GlobalMaxPool on a u8/i8 input: a MaxPool whose window is the spatial extent.
    pub fn compile_global(
        x_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<MaxPoolKernel, CodegenError> {
        Self::compile(&global_pool_attrs("global_max_pool", x_ty)?, x_ty, options)
    }

    pub fn input_shape(&self) -> &[usize] {
        &self.geo().x_shape
    }

    pub fn output_shape(&self) -> &[usize] {
        &self.geo().out_shape
    }

    pub fn new_scratch(&self) -> MaxPoolScratch {
        MaxPoolScratch {
            bytes: match &self.body {
                Body::Window(w) => w.new_scratch(),
                Body::Rows(r) => AlignedBytes::zeroed(r.scratch_bytes()),
            },
        }
    }

    /// Pool `x` (the input shape and dtype) into `out` (the output shape, same dtype).
    pub fn run_into<X: Int8>(
        &self,
        x: &[X],
        out: &mut [X],
        scratch: &mut MaxPoolScratch,
    ) -> Result<(), CodegenError> {
        if X::DTYPE != self.dtype {
            return Err(bad_buffer(
                self.name(),
                format!("{} elements, expected {}", X::DTYPE, self.dtype),
            ));
        }
        // i8 and u8 share size and alignment: the kernel moves bits
        let (x, out): (&[u8], &mut [u8]) = (bytemuck::cast_slice(x), bytemuck::cast_slice_mut(out));
        match &self.body {
            Body::Window(w) => w.run_into::<u8>(x, out, &mut scratch.bytes, lowest(self.dtype)),
            Body::Rows(r) => r.run_into(x, out, &mut scratch.bytes),
        }
    }

    /// Pool a tensor (allocates output and scratch).
    pub fn run(&self, x: &Tensor) -> Result<Tensor, CodegenError> {
        let name = self.name();
        if x.shape() != self.input_shape() {
            return Err(bad_buffer(
                name,
                format!(
                    "input shape {:?}, expected {:?}",
                    x.shape(),
                    self.input_shape()
                ),
            ));
        }
        let mut scratch = self.new_scratch();
        let n: usize = self.output_shape().iter().product();
        let data = match x.data() {
            TensorData::U8(v) => {
                let mut out = vec![0u8; n];
                self.run_into(v, &mut out, &mut scratch)?;
                TensorData::U8(out)
            }
            TensorData::I8(v) => {
                let mut out = vec![0i8; n];
                self.run_into(v, &mut out, &mut scratch)?;
                TensorData::I8(out)
            }
            _ => {
                return Err(bad_buffer(
                    name,
                    format!("input is {}, expected u8 or i8", x.dtype()),
                ))
            }
        };
        Tensor::new(self.output_shape().to_vec(), data).map_err(|e| bad_buffer(name, e.to_string()))
    }
}
