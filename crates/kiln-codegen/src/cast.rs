//! [`CastKernel`] (`Op::Cast`) between f32, i8, u8, i32, i64 and bool, with the
//! interpreter's (onnxruntime's x86-64) semantics, bit-exact: float → integer truncates,
//! NaN and values outside the i32 (i64) range give `i32::MIN` (`i64::MIN`) as `cvttss2si`
//! does, the 8-bit targets keep the low byte of that i32; integer → integer wraps; integer
//! → f32 rounds once (to nearest even); anything → bool is `!= 0` (NaN → true); bool →
//! number is 0/1. One scalar loop over the elements: every source is widened to an i64 or
//! an f32, then narrowed. f16 is not supported (`Unsupported`).

use crate::clif::{counted_loop, mem, scaled};
use crate::jit::{kernel_identity, Jit, JitOptions, KernelCode};
use crate::tensor_io::{bad_buffer, shape_name, tensor_data_from_le_bytes};
use crate::CodegenError;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::{DType, Tensor, TensorType};

const OP: &str = "cast";

/// `(x, out)`, raw little-endian element bytes.
type CastFn = unsafe extern "C" fn(*const u8, *mut u8);

/// A compiled Cast of a fixed element count between two dtypes.
pub struct CastKernel {
    from: DType,
    to: DType,
    shape: Vec<usize>,
    len: usize,
    function: CastFn,
    /// Declared last: `function` points into it.
    code: KernelCode,
}

kernel_identity!(CastKernel, code);

/// The widened value of one element.
enum Wide {
    Int(Value),
    Float(Value),
}

impl CastKernel {
    /// Cast `x_ty` to `out_ty`'s dtype (same shape). Quantization parameters on either side
    /// are ignored, as by the interpreter: Cast converts the stored values.
    pub fn compile(
        x_ty: &TensorType,
        out_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<CastKernel, CodegenError> {
        let (from, to) = (x_ty.dtype, out_ty.dtype);
        if x_ty.shape != out_ty.shape {
            return Err(CodegenError::InvalidOp {
                op: OP,
                reason: format!("input {x_ty} and output {out_ty} differ in shape"),
            });
        }
        if from == DType::F16 || to == DType::F16 {
            return Err(CodegenError::Unsupported {
                op: OP,
                reason: format!("{from} → {to}: no f16 conversions"),
            });
        }
        let len = x_ty.numel();
        if 8 * len > i32::MAX as usize {
            return Err(CodegenError::Unsupported {
                op: OP,
                reason: "the tensor exceeds the kernel's 32-bit offsets".to_string(),
            });
        }
        let mut jit = Jit::host(options)?;
        let func = jit.define_kernel(2, |b, p| {
            counted_loop(b, len, |b, i| {
                let src = scaled(b, p[0], i, from.size_bytes());
                let dst = scaled(b, p[1], i, to.size_bytes());
                let wide = load_wide(b, from, src);
                let v = narrow(b, wide, to);
                b.ins().store(mem(), v, dst, 0);
            });
        });
        let name = format!("cast_{from}_{to}_{}", shape_name(&x_ty.shape));
        // SAFETY: `define_kernel(2, ..)` builds two pointer parameters and no results —
        // `CastFn`; the kernel owns `jit`, so the code outlives every call.
        let function: CastFn = unsafe { jit.compile_as(&name, func)? };
        Ok(CastKernel {
            from,
            to,
            shape: x_ty.shape.clone(),
            len,
            function,
            code: KernelCode::new(jit, name),
        })
    }

    /// `x`: the input's little-endian element bytes; `out`: the output's.
    pub fn run_into(&self, x: &[u8], out: &mut [u8]) -> Result<(), CodegenError> {
        let (x_bytes, out_bytes) = (
            self.len * self.from.size_bytes(),
            self.len * self.to.size_bytes(),
        );
        if x.len() != x_bytes || out.len() != out_bytes {
            return Err(bad_buffer(
                self.name(),
                format!(
                    "{} → {} bytes; expected {x_bytes} → {out_bytes}",
                    x.len(),
                    out.len()
                ),
            ));
        }
        // SAFETY: valid while `self.code` lives; the function reads `len` elements of the
        // source dtype from `x` and writes `len` of the target dtype to `out` (unaligned
        // accesses are allowed), whose byte lengths are checked above.
        unsafe { (self.function)(x.as_ptr(), out.as_mut_ptr()) };
        Ok(())
    }

    pub fn run(&self, x: &Tensor) -> Result<Tensor, CodegenError> {
        if x.dtype() != self.from || x.shape() != self.shape {
            return Err(bad_buffer(
                self.name(),
                format!("a {} tensor of {:?}", x.dtype(), x.shape()),
            ));
        }
        let mut out = vec![0u8; self.len * self.to.size_bytes()];
        self.run_into(&x.to_le_bytes(), &mut out)?;
        Tensor::new(self.shape.clone(), tensor_data_from_le_bytes(self.to, &out))
            .map_err(|e| bad_buffer(self.name(), e.to_string()))
    }
}

/// Load one element of `dtype` at `addr`, integers (and bools) sign- or zero-extended to
/// i64, floats as f32.
fn load_wide(b: &mut FunctionBuilder, dtype: DType, addr: Value) -> Wide {
    let ro = mem().with_readonly();
    match dtype {
        DType::F32 => Wide::Float(b.ins().load(types::F32, ro, addr, 0)),
        DType::I8 => Wide::Int(b.ins().sload8(types::I64, ro, addr, 0)),
        // a stored bool is one byte, non-zero for true
        DType::U8 => Wide::Int(b.ins().uload8(types::I64, ro, addr, 0)),
        DType::Bool => {
            let byte = b.ins().uload8(types::I64, ro, addr, 0);
            let truth = b.ins().icmp_imm_u(IntCC::NotEqual, byte, 0);
            Wide::Int(b.ins().uextend(types::I64, truth))
        }
        DType::I32 => Wide::Int(b.ins().sload32(ro, addr, 0)),
        DType::I64 => Wide::Int(b.ins().load(types::I64, ro, addr, 0)),
        DType::F16 => unreachable!("f16 is rejected at compile time"),
    }
}

/// The value to store for `to`.
fn narrow(b: &mut FunctionBuilder, wide: Wide, to: DType) -> Value {
    match wide {
        Wide::Int(v) => match to {
            DType::F32 => b.ins().fcvt_from_sint(types::F32, v),
            DType::I8 | DType::U8 => b.ins().ireduce(types::I8, v),
            DType::I32 => b.ins().ireduce(types::I32, v),
            DType::I64 => v,
            DType::Bool => b.ins().icmp_imm_u(IntCC::NotEqual, v, 0),
            DType::F16 => unreachable!("f16 is rejected at compile time"),
        },
        Wide::Float(f) => match to {
            DType::F32 => f,
            // unordered-or-not-equal: NaN is true, as `s != 0.0`
            DType::Bool => {
                let zero = b.ins().f32const(0.0);
                b.ins().fcmp(FloatCC::NotEqual, f, zero)
            }
            DType::I8 | DType::U8 => {
                let i = float_to_int_x86(b, f, types::I32);
                b.ins().ireduce(types::I8, i)
            }
            DType::I32 => float_to_int_x86(b, f, types::I32),
            DType::I64 => float_to_int_x86(b, f, types::I64),
            DType::F16 => unreachable!("f16 is rejected at compile time"),
        },
    }
}

/// `cvttss2si`'s truncation to `ty` (I32 or I64): the saturating conversion where `f` is
/// in `[−2^(bits−1), 2^(bits−1))`, else (NaN included) the integer indefinite value
/// `MIN`. Both bounds are powers of two, exact in f32.
fn float_to_int_x86(b: &mut FunctionBuilder, f: Value, ty: types::Type) -> Value {
    let bits = ty.bits() as i32;
    let bound = 2f32.powi(bits - 1);
    let saturated = b.ins().fcvt_to_sint_sat(ty, f);
    let lo = b.ins().f32const(-bound);
    let hi = b.ins().f32const(bound);
    let above_lo = b.ins().fcmp(FloatCC::GreaterThanOrEqual, f, lo);
    let below_hi = b.ins().fcmp(FloatCC::LessThan, f, hi);
    let in_range = b.ins().band(above_lo, below_hi);
    let min = b.ins().iconst(
        ty,
        if bits == 32 {
            // an i32 immediate is given zero-extended
            i64::from(i32::MIN as u32)
        } else {
            i64::MIN
        },
    );
    b.ins().select(in_range, saturated, min)
}
