//! f32 elementwise kernels: [`ActivationKernel`] (`Op::Activation`), [`BinaryKernel`]
//! (`Op::Binary` add/sub/mul/div with numpy broadcasting) and [`BatchNormKernel`]
//! (inference BatchNorm as a per-channel `x·s + b`).
//!
//! All three are one generated "row program": a table of rows, each giving per operand a
//! byte offset; a row is `n` output elements, each operand either a contiguous run of `n`
//! values or one value broadcast over the row. The JIT'd function walks the table, runs 4
//! elements per F32X4 step and the row's last `n % 4` one at a time through the same vector
//! code (splat in, lane 0 out), so every element gets the same instructions. Broadcasting
//! is resolved at compile time by collapsing the output's dims into `rows × n`: adjacent
//! dims merge while every operand stays row-major across them, and the innermost run is
//! contiguous or broadcast for each operand.

// AOT: `into_aot` of this kernel (crate::aot).
#[path = "aot/parts/felem.rs"]
mod aot_parts;

use crate::clif::{counted_loop, mem, mem_aligned, scaled};
use crate::fact::activate;
use crate::jit::{kernel_identity, Jit, JitOptions, KernelCode};
use crate::qconv::AlignedBytes;
use crate::tensor_io::{check_same_len, f32_operand, f32_result, shape_name};
use crate::CodegenError;
use cranelift_codegen::ir::{types, Function, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::{Activation, BinaryOp, DType, Tensor, TensorData, TensorType};

/// How an operand is read along a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// `n` consecutive values.
    Run,
    /// One value for the whole row.
    Broadcast,
}

/// `(table, p0, p1, p2, out)`: up to three operands (unused ones get any valid pointer).
type RowFn = unsafe extern "C" fn(*const u8, *const f32, *const f32, *const f32, *mut f32);

/// The compiled row program shared by the elementwise kernels.
struct Rows {
    /// Element counts each operand buffer must have.
    operand_lens: Vec<usize>,
    out_len: usize,
    /// Per row, per operand, a byte offset (u32).
    table: AlignedBytes,
    function: RowFn,
    /// Declared last: `function` points into it.
    code: KernelCode,
}

impl Rows {
    /// `body(builder, operand vectors) → result vector`, over `rows` rows of `n` elements
    /// whose operand offsets (in elements) are `offsets[row][operand]`.
    fn compile(
        name: String,
        reads: &[Read],
        operand_lens: Vec<usize>,
        n: usize,
        offsets: &[Vec<usize>],
        body: &dyn Fn(&mut FunctionBuilder, &[Value]) -> Value,
        options: &JitOptions,
    ) -> Result<Rows, CodegenError> {
        if operand_lens.iter().any(|&l| 4 * l > u32::MAX as usize) {
            return Err(CodegenError::Unsupported {
                op: "elementwise",
                reason: "tensors exceed the kernel's 32-bit offsets".to_string(),
            });
        }
        let mut words = Vec::with_capacity(offsets.len() * reads.len());
        for row in offsets {
            words.extend(row.iter().map(|&o| 4 * o as u32));
        }
        let table = AlignedBytes::from_bytes(
            &words
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .collect::<Vec<u8>>(),
        );
        let mut jit = Jit::host(options)?;
        let func = build_rows(&jit, reads, offsets.len(), n, body);
        // SAFETY: `build_rows` builds five pointer parameters and no results — `RowFn`;
        // the kernel owns `jit`, so the code outlives every call.
        let function: RowFn = unsafe { jit.compile_as(&name, func)? };
        Ok(Rows {
            operand_lens,
            out_len: offsets.len() * n,
            table,
            function,
            code: KernelCode::new(jit, name),
        })
    }

    fn run(&self, operands: &[&[f32]], out: &mut [f32]) -> Result<(), CodegenError> {
        let lens: Vec<usize> = operands.iter().map(|o| o.len()).collect();
        if lens != self.operand_lens || out.len() != self.out_len {
            return Err(CodegenError::BadBuffer {
                kernel: self.code.name().to_string(),
                what: format!(
                    "operands of {lens:?} → {} elements; expected {:?} → {}",
                    out.len(),
                    self.operand_lens,
                    self.out_len
                ),
            });
        }
        let pointer = |k: usize| operands.get(k).map_or(out.as_ptr(), |o| o.as_ptr());
        // SAFETY: valid while `self.code` lives. The table holds, per row, byte offsets
        // built so that every read (a run of `n` or one element) lies inside its operand,
        // whose length is checked above to be the compiled one; the function writes the
        // `out_len` elements of `out` (checked) and reads nothing through unused pointers.
        unsafe {
            (self.function)(
                self.table.as_slice().as_ptr(),
                pointer(0),
                pointer(1),
                pointer(2),
                out.as_mut_ptr(),
            )
        };
        Ok(())
    }
}

fn build_rows(
    jit: &Jit,
    reads: &[Read],
    rows: usize,
    n: usize,
    body: &dyn Fn(&mut FunctionBuilder, &[Value]) -> Value,
) -> Function {
    jit.define_kernel(5, |b, p| emit_rows(b, reads, rows, n, body, p))
}

/// The body of [`build_rows`] over its parameters `(table, p0, p1, p2, out)`.
fn emit_rows(
    b: &mut FunctionBuilder,
    reads: &[Read],
    rows: usize,
    n: usize,
    body: &dyn Fn(&mut FunctionBuilder, &[Value]) -> Value,
    params: &[Value],
) {
    let (table, out) = (params[0], params[4]);
    let operands = &params[1..1 + reads.len()];
    let ro = mem().with_readonly();
    counted_loop(b, rows, |b, row| {
        let entry = scaled(b, table, row, 4 * reads.len());
        // per operand: its row pointer, or the row's broadcast vector
        let mut bases = Vec::with_capacity(reads.len());
        for (k, (&read, &operand)) in reads.iter().zip(operands).enumerate() {
            let off = b
                .ins()
                .uload32(mem_aligned().with_readonly(), entry, (4 * k) as i32);
            let ptr = b.ins().iadd(operand, off);
            bases.push(match read {
                Read::Run => ptr,
                Read::Broadcast => {
                    let s = b.ins().load(types::F32, ro, ptr, 0);
                    b.ins().splat(types::F32X4, s)
                }
            });
        }
        let out_row = b.ins().imul_imm_u(row, (4 * n) as i64);
        let out_row = b.ins().iadd(out, out_row);
        counted_loop(b, n / 4, |b, j| {
            let vs: Vec<Value> = reads
                .iter()
                .zip(&bases)
                .map(|(&read, &base)| match read {
                    Read::Run => {
                        let addr = scaled(b, base, j, 16);
                        b.ins().load(types::F32X4, ro, addr, 0)
                    }
                    Read::Broadcast => base,
                })
                .collect();
            let v = body(b, &vs);
            let addr = scaled(b, out_row, j, 16);
            b.ins().store(mem(), v, addr, 0);
        });
        for e in n / 4 * 4..n {
            let vs: Vec<Value> = reads
                .iter()
                .zip(&bases)
                .map(|(&read, &base)| match read {
                    Read::Run => {
                        let s = b.ins().load(types::F32, ro, base, (4 * e) as i32);
                        b.ins().splat(types::F32X4, s)
                    }
                    Read::Broadcast => base,
                })
                .collect();
            let v = body(b, &vs);
            let s = b.ins().extractlane(v, 0);
            b.ins().store(mem(), s, out_row, (4 * e) as i32);
        }
    });
}

fn require_f32(op: &'static str, tys: &[&TensorType]) -> Result<(), CodegenError> {
    match tys.iter().find(|t| t.dtype != DType::F32) {
        Some(t) => Err(CodegenError::Unsupported {
            op,
            reason: format!("{} operand (f32 only)", t.dtype),
        }),
        None => Ok(()),
    }
}

/// A compiled f32 activation (`Op::Activation` on an f32 tensor).
pub struct ActivationKernel {
    rows: Rows,
    shape: Vec<usize>,
}

kernel_identity!(ActivationKernel, rows.code);

impl ActivationKernel {
    pub fn compile(
        act: &Activation,
        x_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<ActivationKernel, CodegenError> {
        require_f32(act.name(), &[x_ty])?;
        let len = x_ty.shape.iter().product();
        let act = act.clone();
        let rows = Rows::compile(
            format!("{}_f32_{}", act.name(), shape_name(&x_ty.shape)),
            &[Read::Run],
            vec![len],
            len,
            &[vec![0]],
            &|b, v| activate(b, &act, v[0]),
            options,
        )?;
        Ok(ActivationKernel {
            rows,
            shape: x_ty.shape.clone(),
        })
    }

    pub fn run_into(&self, x: &[f32], out: &mut [f32]) -> Result<(), CodegenError> {
        self.rows.run(&[x], out)
    }

    pub fn run(&self, x: &Tensor) -> Result<Tensor, CodegenError> {
        let mut out = vec![0f32; self.rows.out_len];
        self.run_into(f32_operand(self.name(), x, None)?, &mut out)?;
        f32_result(self.name(), &self.shape, out)
    }
}

/// Rows of a broadcast binary op: `(n, reads, per-row element offsets)`.
type BroadcastRows = (usize, [Read; 2], Vec<Vec<usize>>);

/// Numpy broadcasting of `a` and `b` to `out` collapsed to rows: `(n, reads, per-row
/// element offsets)`, or why the shapes do not broadcast.
fn broadcast_rows(a: &[usize], b: &[usize], out: &[usize]) -> Result<BroadcastRows, String> {
    let (n, reads, offsets) = broadcast_rows_n(&[a, b], out)?;
    Ok((n, [reads[0], reads[1]], offsets))
}

/// Rows of an elementwise program over any number of operands: `(n, per-operand read,
/// per-row per-operand element offsets)`.
pub(crate) type RowsPlan = (usize, Vec<Read>, Vec<Vec<usize>>);

/// Numpy broadcasting of every operand shape to `out` collapsed to rows of `n` elements:
/// adjacent output dims merge while every operand stays row-major across them (unit dims
/// dropped); the innermost run is contiguous or broadcast for each operand. Errors when an
/// operand does not broadcast to `out`.
pub(crate) fn broadcast_rows_n(operands: &[&[usize]], out: &[usize]) -> Result<RowsPlan, String> {
    let rank = out.len();
    // right-aligned element strides, 0 along broadcast dims
    let strides = |shape: &[usize]| -> Result<Vec<usize>, String> {
        if shape.len() > rank {
            return Err(format!("{shape:?} is not broadcast to {out:?}"));
        }
        let mut padded = vec![1; rank - shape.len()];
        padded.extend_from_slice(shape);
        let mut strides = vec![0; rank];
        let mut step = 1;
        for d in (0..rank).rev() {
            if padded[d] == out[d] {
                strides[d] = if out[d] == 1 { 0 } else { step };
            } else if padded[d] != 1 {
                return Err(format!("{shape:?} does not broadcast to {out:?}"));
            }
            step *= padded[d];
        }
        Ok(strides)
    };
    let all: Vec<Vec<usize>> = operands
        .iter()
        .map(|s| strides(s))
        .collect::<Result<_, _>>()?;
    if let Some(d) = (0..rank).find(|&d| out[d] > 1 && all.iter().all(|s| s[d] == 0)) {
        return Err(format!(
            "output dim {d} of {out:?} is none of {operands:?}'s"
        ));
    }
    // collapse: dims (extent, stride per operand), innermost last; unit dims dropped
    let mut dims: Vec<(usize, Vec<usize>)> = Vec::new();
    for d in 0..rank {
        if out[d] == 1 {
            continue;
        }
        let next: Vec<usize> = all.iter().map(|s| s[d]).collect();
        match dims.last_mut() {
            Some((extent, last)) if last.iter().zip(&next).all(|(&l, &s)| l == s * out[d]) => {
                *extent *= out[d];
                *last = next;
            }
            _ => dims.push((out[d], next)),
        }
    }
    let (n, inner) = dims.pop().unwrap_or((1, vec![0; operands.len()]));
    let reads = inner
        .iter()
        .map(|&stride| {
            if stride == 0 {
                Read::Broadcast
            } else {
                Read::Run
            }
        })
        .collect();
    let mut offsets = vec![vec![0usize; operands.len()]];
    for (extent, step) in &dims {
        offsets = offsets
            .iter()
            .flat_map(|o| {
                (0..*extent).map(move |i| o.iter().zip(step).map(|(&o, &s)| o + i * s).collect())
            })
            .collect();
    }
    Ok((n, reads, offsets))
}

/// A compiled f32 `Op::Binary` (add, sub, mul, div) with numpy broadcasting.
pub struct BinaryKernel {
    rows: Rows,
    shape: Vec<usize>,
}

kernel_identity!(BinaryKernel, rows.code);

impl BinaryKernel {
    pub fn compile(
        op: BinaryOp,
        a_ty: &TensorType,
        b_ty: &TensorType,
        out_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<BinaryKernel, CodegenError> {
        require_f32(op.name(), &[a_ty, b_ty, out_ty])?;
        let (n, reads, offsets) =
            broadcast_rows(&a_ty.shape, &b_ty.shape, &out_ty.shape).map_err(|reason| {
                CodegenError::InvalidOp {
                    op: op.name(),
                    reason,
                }
            })?;
        let body = move |b: &mut FunctionBuilder, v: &[Value]| match op {
            BinaryOp::Add => b.ins().fadd(v[0], v[1]),
            BinaryOp::Sub => b.ins().fsub(v[0], v[1]),
            BinaryOp::Mul => b.ins().fmul(v[0], v[1]),
            BinaryOp::Div => b.ins().fdiv(v[0], v[1]),
        };
        let rows = Rows::compile(
            format!("{}_f32_{}", op.name(), shape_name(&out_ty.shape)),
            &reads,
            vec![a_ty.shape.iter().product(), b_ty.shape.iter().product()],
            n,
            &offsets,
            &body,
            options,
        )?;
        Ok(BinaryKernel {
            rows,
            shape: out_ty.shape.clone(),
        })
    }

    pub fn run_into(&self, a: &[f32], b: &[f32], out: &mut [f32]) -> Result<(), CodegenError> {
        self.rows.run(&[a, b], out)
    }

    pub fn run(&self, a: &Tensor, b: &Tensor) -> Result<Tensor, CodegenError> {
        let mut out = vec![0f32; self.rows.out_len];
        self.run_into(
            f32_operand(self.name(), a, None)?,
            f32_operand(self.name(), b, None)?,
            &mut out,
        )?;
        f32_result(self.name(), &self.shape, out)
    }
}

/// A compiled inference BatchNorm with constant parameters: per channel
/// `s = scale · (1/√(var + ε))`, `b = bias − mean · s` (the interpreter's f32 expressions,
/// evaluated at compile time), then `x·s + b` (`mulps`, `addps`: the same roundings, so the
/// result equals the interpreter's bit for bit).
pub struct BatchNormKernel {
    rows: Rows,
    /// `s` for every channel, then `b`.
    params: Vec<f32>,
    shape: Vec<usize>,
}

kernel_identity!(BatchNormKernel, rows.code);

impl BatchNormKernel {
    /// `params` are the constant scale, bias, mean and var (one value per channel).
    pub fn compile(
        x_ty: &TensorType,
        params: [&Tensor; 4],
        epsilon: f32,
        options: &JitOptions,
    ) -> Result<BatchNormKernel, CodegenError> {
        const OP: &str = "batch_norm";
        require_f32(OP, &[x_ty])?;
        let shape = &x_ty.shape;
        if shape.len() < 2 {
            return Err(CodegenError::InvalidOp {
                op: OP,
                reason: format!("input of rank {} has no channel axis", shape.len()),
            });
        }
        let channels = shape[1];
        let mut vals = Vec::with_capacity(4);
        for (name, t) in ["scale", "bias", "mean", "var"].iter().zip(params) {
            match t.data() {
                TensorData::F32(v) if v.len() == channels => vals.push(v),
                _ => {
                    return Err(CodegenError::InvalidOp {
                        op: OP,
                        reason: format!(
                            "{name} is {} {:?}, expected f32 [{channels}]",
                            t.dtype(),
                            t.shape()
                        ),
                    })
                }
            }
        }
        let mut s = Vec::with_capacity(2 * channels);
        for (gamma, var) in vals[0].iter().zip(vals[3].iter()) {
            s.push(gamma * (1.0 / (var + epsilon).sqrt()));
        }
        for c in 0..channels {
            s.push(vals[1][c] - vals[2][c] * s[c]);
        }
        let inner: usize = shape[2..].iter().product();
        let offsets: Vec<Vec<usize>> = (0..shape[0] * channels)
            .map(|row| vec![row * inner, row % channels, channels + row % channels])
            .collect();
        let rows = Rows::compile(
            format!("batch_norm_f32_{}", shape_name(shape)),
            &[Read::Run, Read::Broadcast, Read::Broadcast],
            vec![shape.iter().product(), 2 * channels, 2 * channels],
            inner,
            &offsets,
            &|b, v| {
                let scaled = b.ins().fmul(v[0], v[1]);
                b.ins().fadd(scaled, v[2])
            },
            options,
        )?;
        Ok(BatchNormKernel {
            rows,
            params: s,
            shape: shape.clone(),
        })
    }

    pub fn run_into(&self, x: &[f32], out: &mut [f32]) -> Result<(), CodegenError> {
        self.rows.run(&[x, &self.params, &self.params], out)
    }

    pub fn run(&self, x: &Tensor) -> Result<Tensor, CodegenError> {
        let mut out = vec![0f32; self.rows.out_len];
        self.run_into(f32_operand(self.name(), x, None)?, &mut out)?;
        f32_result(self.name(), &self.shape, out)
    }
}

/// A compiled f32 Softmax over one axis (`legacy`: the opset < 13 form over all dims from
/// `axis` on, as one row). Per softmax column the interpreter's three passes: the max, then
/// `e = exp(x − max)` (the polynomial of `fact.rs`) stored and summed in order, then `e / sum`.
/// Columns are `inner`-strided; 4 adjacent ones run per F32X4 step, the last `inner % 4`
/// one at a time through the same vector code.
pub struct SoftmaxKernel {
    len: usize,
    shape: Vec<usize>,
    function: SoftmaxFn,
    /// Declared last: `function` points into it.
    code: KernelCode,
}

kernel_identity!(SoftmaxKernel, code);

/// `(x, out)`.
type SoftmaxFn = unsafe extern "C" fn(*const f32, *mut f32);

impl SoftmaxKernel {
    pub fn compile(
        axis: usize,
        legacy: bool,
        x_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<SoftmaxKernel, CodegenError> {
        const OP: &str = "softmax";
        require_f32(OP, &[x_ty])?;
        let shape = &x_ty.shape;
        if axis >= shape.len().max(1) {
            return Err(CodegenError::InvalidOp {
                op: OP,
                reason: format!("axis {axis} out of range for {shape:?}"),
            });
        }
        let len: usize = shape.iter().product();
        let (dim, inner) = if legacy {
            (shape[axis..].iter().product::<usize>(), 1)
        } else if shape.is_empty() {
            (1, 1)
        } else {
            (shape[axis], shape[axis + 1..].iter().product::<usize>())
        };
        if 4 * len > u32::MAX as usize {
            return Err(CodegenError::Unsupported {
                op: OP,
                reason: "tensors exceed the kernel's 32-bit offsets".to_string(),
            });
        }
        let outer = len.checked_div(dim * inner).unwrap_or(0);
        let mut jit = Jit::host(options)?;
        let func = build_softmax(&jit, outer, dim, inner);
        let name = format!("softmax_f32_{}", shape_name(shape));
        // SAFETY: `build_softmax` builds two pointer parameters and no results —
        // `SoftmaxFn`; the kernel owns `jit`, so the code outlives every call.
        let function: SoftmaxFn = unsafe { jit.compile_as(&name, func)? };
        Ok(SoftmaxKernel {
            len,
            shape: shape.clone(),
            function,
            code: KernelCode::new(jit, name),
        })
    }

    pub fn run_into(&self, x: &[f32], out: &mut [f32]) -> Result<(), CodegenError> {
        check_same_len(self.name(), x.len(), out.len(), self.len)?;
        // SAFETY: valid while `self.code` lives; the function reads and writes `len`
        // elements of `x` and `out` (offsets `(o·dim + k)·inner + i` below `len`), whose
        // lengths are checked above.
        unsafe { (self.function)(x.as_ptr(), out.as_mut_ptr()) };
        Ok(())
    }

    pub fn run(&self, x: &Tensor) -> Result<Tensor, CodegenError> {
        let mut out = vec![0f32; self.len];
        self.run_into(f32_operand(self.name(), x, None)?, &mut out)?;
        f32_result(self.name(), &self.shape, out)
    }
}

fn build_softmax(jit: &Jit, outer: usize, dim: usize, inner: usize) -> Function {
    jit.define_kernel(2, |b, p| emit_softmax(b, outer, dim, inner, p[0], p[1]))
}

/// The body of [`build_softmax`] over its parameters `x` and `out`.
fn emit_softmax(
    b: &mut FunctionBuilder,
    outer: usize,
    dim: usize,
    inner: usize,
    x: Value,
    out: Value,
) {
    let acc = b.declare_var(types::F32X4);
    let stride = 4 * inner;
    let rw = mem();
    // one softmax over `width` (4 or 1) adjacent columns starting at byte pointers xs, os
    let columns = |b: &mut FunctionBuilder, xs: Value, os: Value, width: usize| {
        let load = |b: &mut FunctionBuilder, base: Value, k: Value| {
            let addr = scaled(b, base, k, stride);
            if width == 4 {
                b.ins().load(types::F32X4, rw, addr, 0)
            } else {
                let s = b.ins().load(types::F32, rw, addr, 0);
                b.ins().splat(types::F32X4, s)
            }
        };
        let store = |b: &mut FunctionBuilder, base: Value, k: Value, v: Value| {
            let addr = scaled(b, base, k, stride);
            if width == 4 {
                b.ins().store(rw, v, addr, 0);
            } else {
                let s = b.ins().extractlane(v, 0);
                b.ins().store(rw, s, addr, 0);
            }
        };
        let lowest = crate::clif::splat_f32(b, f32::NEG_INFINITY);
        b.def_var(acc, lowest);
        counted_loop(b, dim, |b, k| {
            let v = load(b, xs, k);
            let m = b.use_var(acc);
            // f32::max: a NaN operand yields the other one
            let m = crate::clif::fmax_to_bound(b, v, m);
            b.def_var(acc, m);
        });
        let max = b.use_var(acc);
        let zero = crate::clif::splat_f32(b, 0.0);
        b.def_var(acc, zero);
        counted_loop(b, dim, |b, k| {
            let v = load(b, xs, k);
            let d = b.ins().fsub(v, max);
            let e = crate::fact::exp(b, d);
            store(b, os, k, e);
            let s = b.use_var(acc);
            let s = b.ins().fadd(s, e);
            b.def_var(acc, s);
        });
        let sum = b.use_var(acc);
        counted_loop(b, dim, |b, k| {
            let e = load(b, os, k);
            let q = b.ins().fdiv(e, sum);
            store(b, os, k, q);
        });
    };
    counted_loop(b, outer, |b, o| {
        let row = b.ins().imul_imm_u(o, (4 * dim * inner) as i64);
        let xs = b.ins().iadd(x, row);
        let os = b.ins().iadd(out, row);
        counted_loop(b, inner / 4, |b, i| {
            let xi = scaled(b, xs, i, 16);
            let oi = scaled(b, os, i, 16);
            columns(b, xi, oi, 4);
        });
        for i in inner / 4 * 4..inner {
            let xi = b.ins().iadd_imm_u(xs, (4 * i) as i64);
            let oi = b.ins().iadd_imm_u(os, (4 * i) as i64);
            columns(b, xi, oi, 1);
        }
    });
}
