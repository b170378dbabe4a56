//! Quantize (`Op::Quantize`, f32 → u8/i8) and Dequantize (`Op::Dequantize`, u8/i8/i32 →
//! f32) kernels, per tensor or per axis, bit-exact with `kiln-interp`:
//!
//! - quantize: `q = sat(round_half_even(x / s[c]) + zp[c])`, NaN → the low bound, computed
//!   as QConv's epilogue does it: `divps`, clamp to `[q_min − zp, q_max − zp]` with
//!   `f32::max`/`min`'s NaN rule (`maxps`/`minps`: a NaN gives the low bound), round half
//!   to even (`roundps`), convert (exact: integral and in range), add `zp`, narrow (exact).
//!   The clamp before rounding equals the interpreter's clamp after it: the bounds are
//!   integers.
//! - dequantize: `(q − zp[c]) as f32 · s[c]`, the subtraction in i32 (wrapping, as the
//!   interpreter's: only an i32 input with a far-off zero point can wrap) and the
//!   conversion rounding to nearest (`cvtsi2ss`, exact below 2²⁴). i32 inputs are the
//!   quantizer's biases, dequantized where a float island reads them.
//!
//! The tensor is seen as `[rows][inner]` with `rows = outer · n` (per axis: `n` the axis
//! length, `inner` the product of the dims after it; per tensor: one row), each row with one
//! parameter set from a table; a row runs 4 elements per vector step, and its last
//! `inner % 4` elements one at a time through the same vector code (splat in, lane 0 out),
//! so every element takes exactly the same instructions.

// AOT: `into_aot` of this kernel (crate::aot).
#[path = "aot/parts/quantize.rs"]
mod aot_parts;

use crate::clif::{
    counted_loop, fmax_to_bound, fmin_to_bound, mem, scaled, splat_f32, splat_i32, vcast,
};
use crate::jit::{kernel_identity, Jit, JitOptions, KernelCode};
use crate::qconv::Int8;
use crate::CodegenError;
use cranelift_codegen::ir::{types, Function, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::{DType, Quant, Tensor, TensorData, TensorType};

/// Quantize four f32 lanes to i32 lanes holding the quantized values: `v / scale`, clamped
/// to `[lo, hi]` (the dtype's range minus the zero point: clamping before rounding keeps
/// the result in range), rounded half to even, converted, plus `zp` — every operand an
/// F32X4 / I32X4 splat `[scale, lo, hi, zp]`. `exact_cvtt` uses x86's `cvttps2dq`, exact
/// on the already-rounded, in-range values. [`QuantizeKernel`] and the fused element-wise
/// chains (`felem_chain.rs`) both run exactly this, so their results agree bit for bit.
pub(crate) fn quantize_lanes(
    b: &mut FunctionBuilder,
    v: Value,
    [scale, lo, hi, zp]: [Value; 4],
    exact_cvtt: bool,
) -> Value {
    let f = b.ins().fdiv(v, scale);
    let f = fmax_to_bound(b, f, lo);
    let f = fmin_to_bound(b, f, hi);
    let f = b.ins().nearest(f);
    let i = if exact_cvtt {
        b.ins().x86_cvtt2dq(types::I32X4, f)
    } else {
        b.ins().fcvt_to_sint_sat(types::I32X4, f)
    };
    b.ins().iadd(i, zp)
}

/// Dequantize four i32 lanes holding u8/i8 values: `(q − zp) → f32 · scale` (the
/// subtraction and the conversion are exact, the product rounds once: the scalar
/// [`DequantizeKernel`]'s IEEE operations, lane by lane).
pub(crate) fn dequantize_lanes(b: &mut FunctionBuilder, q: Value, scale: f32, zp: i32) -> Value {
    let zp = splat_i32(b, zp);
    let centered = b.ins().isub(q, zp);
    let f = b.ins().fcvt_from_sint(types::F32X4, centered);
    let s = splat_f32(b, scale);
    b.ins().fmul(f, s)
}

/// A per-tensor u8/i8 quantization as the int8 pools and the fused chains apply it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Int8Quant {
    pub signed: bool,
    pub scale: f32,
    pub zero_point: i32,
}

impl Int8Quant {
    /// `ty`'s quantization, or why it is no valid u8/i8 per-tensor one (a scale that is not
    /// positive and finite, a zero point outside the dtype's range).
    pub(crate) fn of(ty: &TensorType) -> Result<Int8Quant, String> {
        let (scale, zero_point, _) = crate::felem_chain::per_tensor(ty)?;
        Ok(Int8Quant {
            signed: ty.dtype == DType::I8,
            scale,
            zero_point,
        })
    }

    /// The dtype's range.
    fn range(&self) -> (i32, i32) {
        if self.signed {
            (i8::MIN as i32, i8::MAX as i32)
        } else {
            (0, u8::MAX as i32)
        }
    }

    /// Quantize four f32 lanes: [`quantize_lanes`] with this quantization's constants (I32X4
    /// lanes holding the quantized values).
    pub(crate) fn quantize_lanes(
        &self,
        b: &mut FunctionBuilder,
        v: Value,
        exact_cvtt: bool,
    ) -> Value {
        let (q_min, q_max) = self.range();
        let s = splat_f32(b, self.scale);
        let lo = splat_f32(b, (q_min as i64 - self.zero_point as i64) as f32);
        let hi = splat_f32(b, (q_max as i64 - self.zero_point as i64) as f32);
        let zp = splat_i32(b, self.zero_point);
        quantize_lanes(b, v, [s, lo, hi, zp], exact_cvtt)
    }

    /// Quantize four f32 lanes ([`quantize_lanes`] with this quantization's constants)
    /// and narrow them to the low four bytes of the result (an I32 word; exact: in range).
    pub(crate) fn quantize_word(
        &self,
        b: &mut FunctionBuilder,
        v: Value,
        exact_cvtt: bool,
    ) -> Value {
        let q = self.quantize_lanes(b, v, exact_cvtt);
        let halves = b.ins().snarrow(q, q);
        let bytes = if self.signed {
            b.ins().snarrow(halves, halves)
        } else {
            b.ins().unarrow(halves, halves)
        };
        let words = vcast(b, types::I32X4, bytes);
        b.ins().extractlane(words, 0)
    }
}

/// `(x, params, out)`.
type ElementwiseFn = unsafe extern "C" fn(*const u8, *const u8, *mut u8);

/// Integer element types a [`DequantizeKernel`] reads: the int8 types and i32 (biases).
pub trait QuantizedInt: bytemuck::Pod + sealed::Sealed {
    const DTYPE: DType;
}
impl QuantizedInt for u8 {
    const DTYPE: DType = DType::U8;
}
impl QuantizedInt for i8 {
    const DTYPE: DType = DType::I8;
}
impl QuantizedInt for i32 {
    const DTYPE: DType = DType::I32;
}
mod sealed {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for i8 {}
    impl Sealed for i32 {}
}

/// The shape, parameters and dtypes shared by both kernels.
#[derive(Clone, Debug)]
struct Plan {
    shape: Vec<usize>,
    /// Rows of `inner` elements; row `r` uses parameter set `r % n`.
    rows: usize,
    inner: usize,
    n: usize,
    scales: Vec<f32>,
    zero_points: Vec<i32>,
    /// The u8/i8 side.
    int_dtype: DType,
    range: (i32, i32),
}

impl Plan {
    fn new(op: &'static str, shape: &[usize], q_ty: &TensorType) -> Result<Plan, CodegenError> {
        let invalid = |reason: String| CodegenError::InvalidOp { op, reason };
        let range = match q_ty.dtype {
            DType::I8 => (i8::MIN as i32, i8::MAX as i32),
            DType::U8 => (0, u8::MAX as i32),
            DType::I32 => (i32::MIN, i32::MAX),
            d => {
                return Err(CodegenError::Unsupported {
                    op,
                    reason: format!("{d} quantized side (u8, i8 or i32 only)"),
                })
            }
        };
        let Some(q) = &q_ty.quant else {
            return Err(invalid(format!("{q_ty} has no quantization parameters")));
        };
        let (axis, scales, zero_points) = match q {
            Quant::PerTensor { scale, zero_point } => (None, vec![*scale], vec![*zero_point]),
            Quant::PerAxis {
                axis,
                scales,
                zero_points,
            } => {
                if *axis >= shape.len()
                    || scales.len() != shape[*axis]
                    || zero_points.len() != shape[*axis]
                {
                    return Err(invalid(format!(
                        "per-axis quantization along axis {axis} with {} scales for shape \
                         {shape:?}",
                        scales.len()
                    )));
                }
                (Some(*axis), scales.clone(), zero_points.clone())
            }
        };
        if let Some(z) = zero_points.iter().find(|&&z| z < range.0 || z > range.1) {
            return Err(invalid(format!(
                "zero point {z} outside [{}, {}]",
                range.0, range.1
            )));
        }
        if let Some(s) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(invalid(format!(
                "scale {s} is not a positive finite number"
            )));
        }
        let numel: usize = shape.iter().product();
        let (rows, inner, n) = match axis {
            None => (1, numel, 1),
            Some(a) => {
                let inner: usize = shape[a + 1..].iter().product();
                (numel / inner.max(1), inner, shape[a])
            }
        };
        Ok(Plan {
            shape: shape.to_vec(),
            rows: if numel == 0 { 0 } else { rows },
            inner,
            n,
            scales,
            zero_points,
            int_dtype: q_ty.dtype,
            range,
        })
    }

    fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The parameter table: per set, four 32-bit words: quantize `[s, q_min − zp, q_max −
    /// zp, zp]` (f32, f32, f32, i32), dequantize `[s, 0, 0, zp]`.
    fn params(&self, quantize: bool) -> Vec<u8> {
        let mut blob = Vec::with_capacity(16 * self.n);
        for (&s, &z) in self.scales.iter().zip(&self.zero_points) {
            let words: [u32; 4] = if quantize {
                [
                    s.to_bits(),
                    ((self.range.0 as i64 - z as i64) as f32).to_bits(),
                    ((self.range.1 as i64 - z as i64) as f32).to_bits(),
                    z as u32,
                ]
            } else {
                [s.to_bits(), 0, 0, z as u32]
            };
            for w in words {
                blob.extend_from_slice(&w.to_le_bytes());
            }
        }
        blob
    }
}

/// Build `fn(x, params, out)`: for each row, its parameter set loaded and broadcast, then
/// `step(b, params, x_elem, out_elem, lanes)` over the row: `lanes` 4 while 4 remain, then 1.
fn build(
    jit: &Jit,
    plan: &Plan,
    x_bytes: usize,
    out_bytes: usize,
    step: impl Fn(&mut FunctionBuilder, &[Value], Value, Value, usize),
) -> Function {
    jit.define_kernel(3, |b, p| {
        emit_rows(b, plan, x_bytes, out_bytes, &step, [p[0], p[1], p[2]])
    })
}

/// The body of [`build`] over its parameters `x`, `params` and `out`.
fn emit_rows(
    b: &mut FunctionBuilder,
    plan: &Plan,
    x_bytes: usize,
    out_bytes: usize,
    step: &impl Fn(&mut FunctionBuilder, &[Value], Value, Value, usize),
    [x, params, out]: [Value; 3],
) {
    let inner = plan.inner;
    counted_loop(b, plan.rows, |b, row| {
        let set = if plan.n == 1 {
            b.ins().iconst(types::I64, 0)
        } else {
            b.ins().urem_imm_u(row, plan.n as i64)
        };
        let entry = scaled(b, params, set, 16);
        // the table is a plain Vec<u8>: no alignment promised
        let flags = mem().with_readonly();
        let values: Vec<Value> = (0..4)
            .map(|k| {
                let ty = if k == 3 { types::I32 } else { types::F32 };
                b.ins().load(ty, flags, entry, 4 * k)
            })
            .collect();
        let vector: Vec<Value> = values
            .iter()
            .map(|&v| {
                let ty = if b.func.dfg.value_type(v) == types::I32 {
                    types::I32X4
                } else {
                    types::F32X4
                };
                b.ins().splat(ty, v)
            })
            .collect();
        let x_row = scaled(b, x, row, inner * x_bytes);
        let out_row = scaled(b, out, row, inner * out_bytes);
        counted_loop(b, inner / 4, |b, i| {
            let xi = scaled(b, x_row, i, 4 * x_bytes);
            let oi = scaled(b, out_row, i, 4 * out_bytes);
            step(b, &vector, xi, oi, 4);
        });
        for e in (inner / 4) * 4..inner {
            let xi = b.ins().iadd_imm_u(x_row, (e * x_bytes) as i64);
            let oi = b.ins().iadd_imm_u(out_row, (e * out_bytes) as i64);
            step(b, &vector, xi, oi, 1);
        }
    });
}

/// A compiled Quantize (f32 → u8/i8).
pub struct QuantizeKernel {
    plan: Plan,
    params: Vec<u8>,
    function: ElementwiseFn,
    /// Declared last: `function` points into it.
    code: KernelCode,
}

kernel_identity!(QuantizeKernel, code);

impl QuantizeKernel {
    /// Compile a Quantize node: `x_ty` f32, `out_ty` u8/i8 with per-tensor or per-axis
    /// quantization, of the same shape.
    pub fn compile(
        x_ty: &TensorType,
        out_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<QuantizeKernel, CodegenError> {
        const OP: &str = "quantize";
        if x_ty.dtype != DType::F32 {
            return Err(CodegenError::Unsupported {
                op: OP,
                reason: format!("{} input (f32 only)", x_ty.dtype),
            });
        }
        if x_ty.shape != out_ty.shape {
            return Err(CodegenError::InvalidOp {
                op: OP,
                reason: format!("input {x_ty} and output {out_ty} shapes differ"),
            });
        }
        let plan = Plan::new(OP, &x_ty.shape, out_ty)?;
        if plan.int_dtype == DType::I32 {
            return Err(CodegenError::Unsupported {
                op: OP,
                reason: format!("{out_ty} output (u8 or i8 only)"),
            });
        }
        let mut jit = Jit::host(options)?;
        let exact_cvtt = jit.features().is_x86_64();
        let signed = plan.int_dtype == DType::I8;
        let func = build(&jit, &plan, 4, 1, |b, p, xi, oi, lanes| {
            let v = if lanes == 4 {
                b.ins().load(types::F32X4, mem(), xi, 0)
            } else {
                let s = b.ins().load(types::F32, mem(), xi, 0);
                b.ins().splat(types::F32X4, s)
            };
            let i = quantize_lanes(b, v, [p[0], p[1], p[2], p[3]], exact_cvtt);
            let halves = b.ins().snarrow(i, i);
            let bytes = if signed {
                b.ins().snarrow(halves, halves)
            } else {
                b.ins().unarrow(halves, halves)
            };
            if lanes == 4 {
                let words = crate::clif::vcast(b, types::I32X4, bytes);
                let word = b.ins().extractlane(words, 0);
                b.ins().store(mem(), word, oi, 0);
            } else {
                let byte = b.ins().extractlane(bytes, 0);
                b.ins().store(mem(), byte, oi, 0);
            }
        });
        let name = format!("quantize_{}", plan.numel());
        // SAFETY: `build` builds three pointer parameters and no results —
        // `ElementwiseFn`; the kernel owns `jit`, so the code outlives every call.
        let function: ElementwiseFn = unsafe { jit.compile_as(&name, func)? };
        Ok(QuantizeKernel {
            params: plan.params(true),
            plan,
            function,
            code: KernelCode::new(jit, name),
        })
    }

    pub fn shape(&self) -> &[usize] {
        &self.plan.shape
    }

    /// Quantize `x` into `out` (both of the kernel's shape; `out` of its output dtype).
    pub fn run_into<Y: Int8>(&self, x: &[f32], out: &mut [Y]) -> Result<(), CodegenError> {
        let numel = self.plan.numel();
        if Y::DTYPE != self.plan.int_dtype || x.len() != numel || out.len() != numel {
            return Err(CodegenError::BadBuffer {
                kernel: self.name().to_string(),
                what: format!(
                    "{} f32 → {} {}, expected {numel} f32 → {numel} {}",
                    x.len(),
                    out.len(),
                    Y::DTYPE,
                    self.plan.int_dtype
                ),
            });
        }
        // SAFETY: valid while `self.code` lives (`self` is borrowed). It reads `numel` f32s
        // of `x` (unaligned loads), `16 · n` bytes of the parameter table and writes
        // `numel` bytes of `out`, lengths checked above; i8 and u8 share size and alignment.
        unsafe {
            (self.function)(
                x.as_ptr().cast::<u8>(),
                self.params.as_ptr(),
                out.as_mut_ptr().cast::<u8>(),
            )
        };
        Ok(())
    }

    /// [`QuantizeKernel::run_into`] of a per-tensor u8 kernel with the parameters `scale`
    /// and `zero_point` given at run time in place of the compiled ones (dynamic
    /// quantization); the same code, so the same results as a kernel compiled with them.
    pub(crate) fn run_u8_with_params(
        &self,
        x: &[f32],
        out: &mut [u8],
        scale: f32,
        zero_point: i32,
    ) -> Result<(), CodegenError> {
        if self.plan.n != 1 || self.plan.int_dtype != DType::U8 {
            return Err(CodegenError::BadBuffer {
                kernel: self.name().to_string(),
                what: "run-time parameters need a per-tensor u8 kernel".to_string(),
            });
        }
        let plan = Plan {
            scales: vec![scale],
            zero_points: vec![zero_point],
            ..self.plan.clone()
        };
        let numel = plan.numel();
        if x.len() != numel || out.len() != numel {
            return Err(CodegenError::BadBuffer {
                kernel: self.name().to_string(),
                what: format!(
                    "{} f32 → {} u8, expected {numel} → {numel}",
                    x.len(),
                    out.len()
                ),
            });
        }
        let params = plan.params(true);
        // SAFETY: as in `run_into`: `numel` f32s of `x`, the 16-byte table of one
        // parameter set (`n == 1`, checked) and `numel` bytes of `out`, lengths checked.
        unsafe { (self.function)(x.as_ptr().cast::<u8>(), params.as_ptr(), out.as_mut_ptr()) };
        Ok(())
    }

    /// Quantize a tensor (allocates the output).
    pub fn run(&self, x: &Tensor) -> Result<Tensor, CodegenError> {
        let bad = |what: String| CodegenError::BadBuffer {
            kernel: self.name().to_string(),
            what,
        };
        let TensorData::F32(v) = x.data() else {
            return Err(bad(format!("input is {}, expected f32", x.dtype())));
        };
        if x.shape() != self.plan.shape.as_slice() {
            return Err(bad(format!(
                "input shape {:?}, expected {:?}",
                x.shape(),
                self.plan.shape
            )));
        }
        let data = if self.plan.int_dtype == DType::U8 {
            let mut out = vec![0u8; v.len()];
            self.run_into(v, &mut out)?;
            TensorData::U8(out)
        } else {
            let mut out = vec![0i8; v.len()];
            self.run_into(v, &mut out)?;
            TensorData::I8(out)
        };
        Tensor::new(self.plan.shape.clone(), data).map_err(|e| bad(e.to_string()))
    }
}

/// A compiled Dequantize (u8/i8/i32 → f32).
pub struct DequantizeKernel {
    plan: Plan,
    params: Vec<u8>,
    function: ElementwiseFn,
    /// Declared last: `function` points into it.
    code: KernelCode,
}

kernel_identity!(DequantizeKernel, code);

impl DequantizeKernel {
    /// Compile a Dequantize node: `x_ty` u8/i8/i32 with per-tensor or per-axis quantization,
    /// `out_ty` f32 of the same shape.
    pub fn compile(
        x_ty: &TensorType,
        out_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<DequantizeKernel, CodegenError> {
        const OP: &str = "dequantize";
        if out_ty.dtype != DType::F32 || x_ty.shape != out_ty.shape {
            return Err(CodegenError::InvalidOp {
                op: OP,
                reason: format!("output {out_ty} is not f32 of the input's shape {x_ty}"),
            });
        }
        let plan = Plan::new(OP, &x_ty.shape, x_ty)?;
        let mut jit = Jit::host(options)?;
        let x_bytes = plan.int_dtype.size_bytes();
        // one element at a time: `(q − zp) as f32 · s` in scalar f32, exactly the
        // interpreter's expression
        let func = build(&jit, &plan, x_bytes, 4, |b, p, xi, oi, lanes| {
            let scale = b.ins().extractlane(p[0], 0);
            let zp = b.ins().extractlane(p[3], 0);
            for e in 0..lanes as i32 {
                let q = match plan.int_dtype {
                    DType::I8 => b.ins().sload8(types::I32, mem(), xi, e),
                    DType::U8 => b.ins().uload8(types::I32, mem(), xi, e),
                    _ => b.ins().load(types::I32, mem(), xi, 4 * e),
                };
                let centered = b.ins().isub(q, zp);
                let f = b.ins().fcvt_from_sint(types::F32, centered);
                let f = b.ins().fmul(f, scale);
                b.ins().store(mem(), f, oi, 4 * e);
            }
        });
        let name = format!("dequantize_{}", plan.numel());
        // SAFETY: as for `QuantizeKernel::compile`: three pointer parameters and no
        // results — `ElementwiseFn`, valid while the owned `jit` lives.
        let function: ElementwiseFn = unsafe { jit.compile_as(&name, func)? };
        Ok(DequantizeKernel {
            params: plan.params(false),
            plan,
            function,
            code: KernelCode::new(jit, name),
        })
    }

    pub fn shape(&self) -> &[usize] {
        &self.plan.shape
    }

    /// Dequantize `x` (the kernel's shape and input dtype) into `out`.
    pub fn run_into<X: QuantizedInt>(&self, x: &[X], out: &mut [f32]) -> Result<(), CodegenError> {
        let numel = self.plan.numel();
        if X::DTYPE != self.plan.int_dtype || x.len() != numel || out.len() != numel {
            return Err(CodegenError::BadBuffer {
                kernel: self.name().to_string(),
                what: format!(
                    "{} {} → {} f32, expected {numel} {} → {numel} f32",
                    x.len(),
                    X::DTYPE,
                    out.len(),
                    self.plan.int_dtype
                ),
            });
        }
        // SAFETY: valid while `self.code` lives. It reads the `numel` elements of `x`
        // (of the dtype checked above; unaligned loads), the parameter table (`16 · n`
        // bytes) and writes `numel` f32s of `out` (unaligned stores), lengths checked above.
        unsafe {
            (self.function)(
                x.as_ptr().cast::<u8>(),
                self.params.as_ptr(),
                out.as_mut_ptr().cast::<u8>(),
            )
        };
        Ok(())
    }

    /// Dequantize a tensor (allocates the output).
    pub fn run(&self, x: &Tensor) -> Result<Tensor, CodegenError> {
        let bad = |what: String| CodegenError::BadBuffer {
            kernel: self.name().to_string(),
            what,
        };
        if x.shape() != self.plan.shape.as_slice() {
            return Err(bad(format!(
                "input shape {:?}, expected {:?}",
                x.shape(),
                self.plan.shape
            )));
        }
        let mut out = vec![0f32; self.plan.numel()];
        match x.data() {
            TensorData::U8(v) => self.run_into(v, &mut out)?,
            TensorData::I8(v) => self.run_into(v, &mut out)?,
            TensorData::I32(v) => self.run_into(v, &mut out)?,
            _ => {
                return Err(bad(format!(
                    "input is {}, expected u8, i8 or i32",
                    x.dtype()
                )))
            }
        }
        Tensor::new(self.plan.shape.clone(), TensorData::F32(out)).map_err(|e| bad(e.to_string()))
    }
}
