//! [`MatMulIntegerKernel`] (`Op::MatMulInteger`, ONNX MatMulInteger): `Σ (a − a_zp)(b −
//! b_zp)` in wrapping i32, bit-exact with `kiln-interp` (integer sums do not depend on
//! their order). `b` (2-D) and its zero point are constants, packed centered as i32 with
//! the columns padded to a multiple of 4; `a` (u8/i8, any batch dims) and its zero point
//! (absent, a scalar or one per row) are read at run time — the `kiln quantize --dynamic`
//! graphs, whose activation zero point comes from a `dynamic_quantize`. Each output row
//! runs 4 columns per I32X4 accumulator over `k`.

use crate::clif::{counted_loop, mem, scaled};
use crate::jit::{kernel_identity, Jit, JitOptions, KernelCode};
use crate::qconv::AlignedBytes;
use crate::tensor_io::{bad_buffer, shape_name};
use crate::CodegenError;
use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::{DType, Tensor, TensorData, TensorType};

const OP: &str = "matmul_integer";

/// `(a, a_zero_point, packed b, out)`.
type MatMulIntegerFn = unsafe extern "C" fn(*const u8, *const u8, *const u8, *mut i32);

/// How `a`'s zero point is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ZeroPoint {
    Absent,
    Scalar,
    PerRow,
}

/// A compiled MatMulInteger with a constant `b`.
pub struct MatMulIntegerKernel {
    a_dtype: DType,
    a_len: usize,
    zero_point: ZeroPoint,
    m: usize,
    out_len: usize,
    shape: Vec<usize>,
    /// `b − b_zp` as i32, `[K][N rounded up to 4]`.
    packed_b: AlignedBytes,
    function: MatMulIntegerFn,
    /// Declared last: `function` points into it.
    code: KernelCode,
}

kernel_identity!(MatMulIntegerKernel, code);

fn ints(t: &Tensor) -> Option<Vec<i32>> {
    match t.data() {
        TensorData::U8(v) => Some(v.iter().map(|&x| x as i32).collect()),
        TensorData::I8(v) => Some(v.iter().map(|&x| x as i32).collect()),
        _ => None,
    }
}

impl MatMulIntegerKernel {
    /// `a_ty` (u8/i8, rank ≥ 1) times the constant 2-D `b` (u8/i8) with an optional
    /// constant `b_zero_point` (scalar or one per column) and an optional run-time
    /// `a_zero_point` of type `a_zp_ty` (a's dtype; scalar or one per row), into `out_ty`
    /// (i32).
    pub fn compile(
        a_ty: &TensorType,
        a_zp_ty: Option<&TensorType>,
        b: &Tensor,
        b_zero_point: Option<&Tensor>,
        out_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<MatMulIntegerKernel, CodegenError> {
        let invalid = |reason: String| CodegenError::InvalidOp { op: OP, reason };
        let unsupported = |reason: String| CodegenError::Unsupported { op: OP, reason };
        if !matches!(a_ty.dtype, DType::U8 | DType::I8) {
            return Err(invalid(format!("a is {a_ty}, expected u8 or i8")));
        }
        if b.shape().len() != 2 {
            return Err(unsupported(format!(
                "b of shape {:?}: a 2-D constant only",
                b.shape()
            )));
        }
        let bs =
            ints(b).ok_or_else(|| invalid(format!("b is {}, expected u8 or i8", b.dtype())))?;
        let (k, n) = (b.shape()[0], b.shape()[1]);
        let a_shape = &a_ty.shape;
        let (m, mut expected) = match a_shape.len() {
            0 => return Err(invalid("a is a scalar".to_string())),
            1 => (1, vec![]),
            r => (a_shape[r - 2], a_shape[..r - 1].to_vec()),
        };
        if a_shape[a_shape.len() - 1] != k {
            return Err(invalid(format!(
                "inner dimensions differ: {a_shape:?} × {:?}",
                b.shape()
            )));
        }
        expected.push(n);
        if out_ty.dtype != DType::I32 || out_ty.shape != expected {
            return Err(invalid(format!(
                "output {out_ty}, expected i32 {expected:?}"
            )));
        }
        let zero_point = match a_zp_ty {
            None => ZeroPoint::Absent,
            Some(t) if t.dtype != a_ty.dtype => {
                return Err(invalid(format!("a's zero point is {t}, a is {a_ty}")))
            }
            Some(t) if t.numel() == 1 => ZeroPoint::Scalar,
            Some(t) if t.shape == [m] => ZeroPoint::PerRow,
            Some(t) => {
                return Err(invalid(format!(
                    "a's zero point {t}: a scalar or [{m}] expected"
                )))
            }
        };
        let b_zps = match b_zero_point {
            None => vec![0; n],
            Some(z) if z.dtype() != b.dtype() => {
                return Err(invalid(format!(
                    "b's zero point is {}, b is {}",
                    z.dtype(),
                    b.dtype()
                )))
            }
            Some(z) => {
                let v = ints(z).expect("the dtype of b, an 8-bit type");
                match v.len() {
                    1 => vec![v[0]; n],
                    len if len == n && z.shape().len() == 1 => v,
                    _ => {
                        return Err(invalid(format!(
                            "b's zero point of shape {:?}: a scalar or [{n}] expected",
                            z.shape()
                        )))
                    }
                }
            }
        };
        let a_len = a_ty.numel();
        let out_len = out_ty.numel();
        if 4 * out_len.max(a_len) > i32::MAX as usize {
            return Err(unsupported(
                "tensors exceed the kernel's 32-bit offsets".to_string(),
            ));
        }
        let padded = n.div_ceil(4) * 4;
        let mut packed = Vec::with_capacity(4 * k * padded);
        for kk in 0..k {
            for col in 0..padded {
                let v = if col < n {
                    bs[kk * n + col].wrapping_sub(b_zps[col])
                } else {
                    0
                };
                packed.extend_from_slice(&v.to_le_bytes());
            }
        }
        let geometry = Geometry {
            // the output has one row of n per row of a (also when k is 0); no columns, no
            // work
            rows: out_len.checked_div(n).unwrap_or(0),
            m,
            k,
            n,
            padded,
            signed: a_ty.dtype == DType::I8,
            zero_point,
        };
        let mut jit = Jit::host(options)?;
        let func = jit.define_kernel(4, |b, p| emit_matmul(b, &geometry, p));
        let name = format!("matmul_integer_{}_{}x{}", shape_name(a_shape), k, n);
        // SAFETY: `define_kernel(4, ..)` builds four pointer parameters and no results —
        // `MatMulIntegerFn`; the kernel owns `jit`, so the code outlives every call.
        let function: MatMulIntegerFn = unsafe { jit.compile_as(&name, func)? };
        Ok(MatMulIntegerKernel {
            a_dtype: a_ty.dtype,
            a_len,
            zero_point,
            m,
            out_len,
            shape: expected,
            packed_b: AlignedBytes::from_bytes(&packed),
            function,
            code: KernelCode::new(jit, name),
        })
    }

    /// `a` and its zero point (`None` exactly when compiled without one): bytes of a's
    /// dtype.
    pub fn run_into(
        &self,
        a: &[u8],
        a_zero_point: Option<&[u8]>,
        out: &mut [i32],
    ) -> Result<(), CodegenError> {
        let zp_len = match self.zero_point {
            ZeroPoint::Absent => 0,
            ZeroPoint::Scalar => 1,
            ZeroPoint::PerRow => self.m,
        };
        let given = a_zero_point.map(<[u8]>::len);
        let zp_ok = match given {
            None => zp_len == 0,
            Some(len) => zp_len > 0 && len == zp_len,
        };
        if a.len() != self.a_len || out.len() != self.out_len || !zp_ok {
            return Err(bad_buffer(
                self.name(),
                format!(
                    "a of {} bytes, zero point {given:?}, {} outputs; expected {}, {zp_len}, {}",
                    a.len(),
                    out.len(),
                    self.a_len,
                    self.out_len
                ),
            ));
        }
        let zp = a_zero_point.unwrap_or(a);
        // SAFETY: valid while `self.code` lives. The function reads the `a_len` bytes of
        // `a`, the zero point's `zp_len` bytes (none when absent), the packed `b` it was
        // compiled with, and writes the `out_len` i32s of `out`; lengths checked above.
        unsafe {
            (self.function)(
                a.as_ptr(),
                zp.as_ptr(),
                self.packed_b.as_slice().as_ptr(),
                out.as_mut_ptr(),
            )
        };
        Ok(())
    }

    /// `a` and its zero point as tensors (allocates the output).
    pub fn run(&self, a: &Tensor, a_zero_point: Option<&Tensor>) -> Result<Tensor, CodegenError> {
        if a.dtype() != self.a_dtype {
            return Err(bad_buffer(self.name(), format!("a is {}", a.dtype())));
        }
        let zp = a_zero_point.map(Tensor::to_le_bytes);
        let mut out = vec![0i32; self.out_len];
        self.run_into(&a.to_le_bytes(), zp.as_deref(), &mut out)?;
        Tensor::new(self.shape.clone(), TensorData::I32(out))
            .map_err(|e| bad_buffer(self.name(), e.to_string()))
    }
}

struct Geometry {
    /// Rows of `a` (batch · m).
    rows: usize,
    m: usize,
    k: usize,
    n: usize,
    padded: usize,
    signed: bool,
    zero_point: ZeroPoint,
}

/// The body over `(a, zero point, packed b, out)`.
fn emit_matmul(b: &mut FunctionBuilder, g: &Geometry, p: &[Value]) {
    let (a, zp, packed, out) = (p[0], p[1], p[2], p[3]);
    let ro = mem().with_readonly();
    let acc = b.declare_var(types::I32X4);
    let load_byte = |b: &mut FunctionBuilder, addr: Value, offset: i32| {
        if g.signed {
            b.ins().sload8(types::I32, ro, addr, offset)
        } else {
            b.ins().uload8(types::I32, ro, addr, offset)
        }
    };
    counted_loop(b, g.rows, |b, row| {
        let za = match g.zero_point {
            ZeroPoint::Absent => b.ins().iconst(types::I32, 0),
            ZeroPoint::Scalar => load_byte(b, zp, 0),
            ZeroPoint::PerRow => {
                let mi = b.ins().urem_imm_u(row, g.m as i64);
                let addr = b.ins().iadd(zp, mi);
                load_byte(b, addr, 0)
            }
        };
        let a_row = scaled(b, a, row, g.k);
        let out_row = scaled(b, out, row, 4 * g.n);
        let block = |b: &mut FunctionBuilder, nb: Value, lanes: usize| {
            let zero = b.ins().iconst(types::I32, 0);
            let zeros = b.ins().splat(types::I32X4, zero);
            b.def_var(acc, zeros);
            let b_col = scaled(b, packed, nb, 16);
            counted_loop(b, g.k, |b, kk| {
                let addr = b.ins().iadd(a_row, kk);
                let av = load_byte(b, addr, 0);
                let av = b.ins().isub(av, za);
                let av = b.ins().splat(types::I32X4, av);
                let addr = scaled(b, b_col, kk, 4 * g.padded);
                let bv = b.ins().load(types::I32X4, ro, addr, 0);
                let prod = b.ins().imul(av, bv);
                let s = b.use_var(acc);
                let s = b.ins().iadd(s, prod);
                b.def_var(acc, s);
            });
            let s = b.use_var(acc);
            let dst = scaled(b, out_row, nb, 16);
            if lanes == 4 {
                b.ins().store(mem(), s, dst, 0);
            } else {
                for lane in 0..lanes {
                    let v = b.ins().extractlane(s, lane as u8);
                    b.ins().store(mem(), v, dst, (4 * lane) as i32);
                }
            }
        };
        counted_loop(b, g.n / 4, |b, nb| block(b, nb, 4));
        if !g.n.is_multiple_of(4) {
            let nb = b.ins().iconst(types::I64, (g.n / 4) as i64);
            block(b, nb, g.n % 4);
        }
    });
}
