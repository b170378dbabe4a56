//! [`DynamicQuantizeKernel`] (`Op::DynamicQuantize`, ONNX DynamicQuantizeLinear as
//! onnxruntime computes it): u8 parameters from the input's own range at run time, then
//! the quantization, bit-exact with `kiln-interp`. A JIT'd pass finds `min(min x, 0)` and
//! `max(max x, 0)` 4 lanes at a time, skipping NaNs as `f32::min`/`max` do (`v < lo ? v :
//! lo`); the scale and zero point are the interpreter's f32 expressions, evaluated in Rust
//! once per call; the quantization is [`QuantizeKernel`]'s code, run with those
//! parameters.

use crate::clif::{counted_loop, fmax_to_bound, fmin_to_bound, mem, scaled};
use crate::jit::{kernel_identity, Jit, JitOptions, KernelCode};
use crate::quantize::QuantizeKernel;
use crate::tensor_io::{bad_buffer, f32_operand, shape_name};
use crate::CodegenError;
use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::{DType, Quant, Tensor, TensorData, TensorType};

const OP: &str = "dynamic_quantize";

/// `(x, range)`: writes `[min(min x, 0), max(max x, 0)]` to `range`.
type RangeFn = unsafe extern "C" fn(*const f32, *mut f32);

/// A compiled DynamicQuantizeLinear of an f32 tensor: outputs y (u8, x's shape), the scale
/// (f32 scalar) and the zero point (u8 scalar).
pub struct DynamicQuantizeKernel {
    shape: Vec<usize>,
    len: usize,
    quantize: QuantizeKernel,
    range: RangeFn,
    /// Declared last: `range` points into it.
    code: KernelCode,
}

kernel_identity!(DynamicQuantizeKernel, code);

impl DynamicQuantizeKernel {
    pub fn compile(
        x_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<DynamicQuantizeKernel, CodegenError> {
        if x_ty.dtype != DType::F32 || x_ty.quant.is_some() {
            return Err(CodegenError::Unsupported {
                op: OP,
                reason: format!("input {x_ty}, expected (unquantized) f32"),
            });
        }
        let len = x_ty.numel();
        if 4 * len > i32::MAX as usize {
            return Err(CodegenError::Unsupported {
                op: OP,
                reason: "the tensor exceeds the kernel's 32-bit offsets".to_string(),
            });
        }
        // the compiled parameters are replaced by each call's
        let y_ty =
            TensorType::new(DType::U8, x_ty.shape.clone()).with_quant(Quant::per_tensor(1.0, 0));
        let quantize = QuantizeKernel::compile(x_ty, &y_ty, options)?;
        let mut jit = Jit::host(options)?;
        let func = jit.define_kernel(2, |b, p| emit_range(b, len, p[0], p[1]));
        let name = format!("dynamic_quantize_{}", shape_name(&x_ty.shape));
        // SAFETY: `define_kernel(2, ..)` builds two pointer parameters and no results —
        // `RangeFn`; the kernel owns `jit`, so the code outlives every call.
        let range: RangeFn = unsafe { jit.compile_as(&name, func)? };
        Ok(DynamicQuantizeKernel {
            shape: x_ty.shape.clone(),
            len,
            quantize,
            range,
            code: KernelCode::new(jit, name),
        })
    }

    /// Quantize `x` into `y`; returns the scale and the zero point.
    pub fn run_into(&self, x: &[f32], y: &mut [u8]) -> Result<(f32, u8), CodegenError> {
        if x.len() != self.len || y.len() != self.len {
            return Err(bad_buffer(
                self.name(),
                format!(
                    "{} → {} elements; expected {} → {}",
                    x.len(),
                    y.len(),
                    self.len,
                    self.len
                ),
            ));
        }
        let mut range = [0f32; 2];
        // SAFETY: valid while `self.code` lives; the function reads the `len` elements of
        // `x` (checked above) and writes the two of `range`.
        unsafe { (self.range)(x.as_ptr(), range.as_mut_ptr()) };
        let [lo, hi] = range;
        // the interpreter's expressions (`kiln_interp`'s dynamic_quantize), op for op
        let scale = if hi == lo { 1.0 } else { (hi - lo) / 255.0 };
        let zero_point = (0.0 - lo / scale).clamp(0.0, 255.0).round_ties_even();
        self.quantize
            .run_u8_with_params(x, y, scale, zero_point as i32)?;
        Ok((scale, zero_point as u8))
    }

    /// `[y, scale, zero_point]`.
    pub fn run(&self, x: &Tensor) -> Result<Vec<Tensor>, CodegenError> {
        let x = f32_operand(self.name(), x, Some(&self.shape))?;
        let mut y = vec![0u8; self.len];
        let (scale, zero_point) = self.run_into(x, &mut y)?;
        let tensor = |shape: Vec<usize>, data| {
            Tensor::new(shape, data).map_err(|e| bad_buffer(self.name(), e.to_string()))
        };
        Ok(vec![
            tensor(self.shape.clone(), TensorData::U8(y))?,
            tensor(vec![], TensorData::F32(vec![scale]))?,
            tensor(vec![], TensorData::U8(vec![zero_point]))?,
        ])
    }
}

/// `range = [min(0, x..), max(0, x..)]`, NaNs skipped: lane-wise running bounds over 4
/// elements per step (the last `len % 4` splatted), then the lanes folded.
fn emit_range(b: &mut FunctionBuilder, len: usize, x: Value, range: Value) {
    let lo = b.declare_var(types::F32X4);
    let hi = b.declare_var(types::F32X4);
    let zero = b.ins().f32const(0.0);
    let zeros = b.ins().splat(types::F32X4, zero);
    b.def_var(lo, zeros);
    b.def_var(hi, zeros);
    let ro = mem().with_readonly();
    let step = |b: &mut FunctionBuilder, v: Value| {
        let l = b.use_var(lo);
        let l = fmin_to_bound(b, v, l);
        b.def_var(lo, l);
        let h = b.use_var(hi);
        let h = fmax_to_bound(b, v, h);
        b.def_var(hi, h);
    };
    counted_loop(b, len / 4, |b, i| {
        let addr = scaled(b, x, i, 16);
        let v = b.ins().load(types::F32X4, ro, addr, 0);
        step(b, v);
    });
    for e in len / 4 * 4..len {
        let s = b.ins().load(types::F32, ro, x, (4 * e) as i32);
        let v = b.ins().splat(types::F32X4, s);
        step(b, v);
    }
    // fold the lanes: a splat of lane k as the candidate against the running bounds
    let (l, h) = (b.use_var(lo), b.use_var(hi));
    let (mut l_acc, mut h_acc) = (l, h);
    for k in 1..4u8 {
        let lk = b.ins().extractlane(l, k);
        let lk = b.ins().splat(types::F32X4, lk);
        l_acc = fmin_to_bound(b, lk, l_acc);
        let hk = b.ins().extractlane(h, k);
        let hk = b.ins().splat(types::F32X4, hk);
        h_acc = fmax_to_bound(b, hk, h_acc);
    }
    let l0 = b.ins().extractlane(l_acc, 0);
    let h0 = b.ins().extractlane(h_acc, 0);
    b.ins().store(mem(), l0, range, 0);
    b.ins().store(mem(), h0, range, 4);
}
