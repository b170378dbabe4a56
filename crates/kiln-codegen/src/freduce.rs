//! f32 reductions across tensors and axes: [`SumKernel`] (`Op::Sum`, n-ary broadcasting
//! add as a chain of [`BinaryKernel`] adds in the interpreter's left-to-right order, so it
//! is bit-exact) and [`ReduceMeanKernel`] (`Op::ReduceMean`, every output summed in input
//! order from 0 then divided by the count, the interpreter's arithmetic: bit-exact).

use crate::clif::{counted_loop, mem, mem_aligned, scaled};
use crate::felem::BinaryKernel;
use crate::jit::{kernel_identity, Jit, JitOptions, KernelCode};
use crate::qconv::AlignedBytes;
use crate::tensor_io::{bad_buffer, f32_operand, f32_result, shape_name};
use crate::CodegenError;
use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::infer::broadcast_shapes;
use kiln_ir::{BinaryOp, DType, Tensor, TensorType};

fn require_plain_f32(op: &'static str, ty: &TensorType) -> Result<(), CodegenError> {
    if ty.dtype == DType::F32 && ty.quant.is_none() {
        return Ok(());
    }
    Err(CodegenError::Unsupported {
        op,
        reason: format!("operand {ty}, expected (unquantized) f32"),
    })
}

/// A compiled f32 `Op::Sum`: `((x0 + x1) + x2) + …` with numpy broadcasting. Step `k`
/// adds input `k + 1` to the running sum (of the broadcast shape of inputs `0..=k`); the
/// steps alternate between the output and a scratch buffer so that the last one writes
/// the output. Elementwise, every output element gets the interpreter's additions in its
/// order, so the result is bit-exact.
pub struct SumKernel {
    name: String,
    /// Step `k` adds input `k + 1`; empty for a single input (a copy).
    steps: Vec<BinaryKernel>,
    /// Element count of each step's result.
    step_lens: Vec<usize>,
    input_lens: Vec<usize>,
    shape: Vec<usize>,
    out_len: usize,
}

impl std::fmt::Debug for SumKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SumKernel")
            .field("name", &self.name)
            .finish()
    }
}

/// Working memory of a [`SumKernel`] with three or more inputs (the other half of its
/// ping-pong); reusable across calls.
#[derive(Debug, Default)]
pub struct SumScratch(Vec<f32>);

impl SumKernel {
    /// Sum of f32 inputs of types `input_tys` into `out_ty` (their broadcast shape).
    pub fn compile(
        input_tys: &[&TensorType],
        out_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<SumKernel, CodegenError> {
        const OP: &str = "sum";
        let Some((first, rest)) = input_tys.split_first() else {
            return Err(CodegenError::InvalidOp {
                op: OP,
                reason: "sum of no inputs".to_string(),
            });
        };
        for ty in input_tys.iter().copied().chain([out_ty]) {
            require_plain_f32(OP, ty)?;
        }
        let mut shape = first.shape.clone();
        let mut steps = Vec::with_capacity(rest.len());
        let mut step_lens = Vec::with_capacity(rest.len());
        for ty in rest {
            let next =
                broadcast_shapes(&shape, &ty.shape).ok_or_else(|| CodegenError::InvalidOp {
                    op: OP,
                    reason: format!("{shape:?} and {:?} do not broadcast", ty.shape),
                })?;
            let acc_ty = TensorType::f32(shape.clone());
            let next_ty = TensorType::f32(next.clone());
            steps.push(BinaryKernel::compile(
                BinaryOp::Add,
                &acc_ty,
                ty,
                &next_ty,
                options,
            )?);
            step_lens.push(next.iter().product());
            shape = next;
        }
        if shape != out_ty.shape {
            return Err(CodegenError::InvalidOp {
                op: OP,
                reason: format!(
                    "the inputs broadcast to {shape:?}, but the output is {:?}",
                    out_ty.shape
                ),
            });
        }
        Ok(SumKernel {
            name: format!("sum{}_f32_{}", input_tys.len(), shape_name(&shape)),
            steps,
            step_lens,
            input_lens: input_tys.iter().map(|t| t.numel()).collect(),
            out_len: shape.iter().product(),
            shape,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Scratch for [`SumKernel::run_into`] (empty unless there are three or more inputs).
    pub fn new_scratch(&self) -> SumScratch {
        let len = if self.steps.len() >= 2 {
            self.step_lens.iter().copied().max().unwrap_or(0)
        } else {
            0
        };
        SumScratch(vec![0.0; len])
    }

    pub fn run_into(
        &self,
        inputs: &[&[f32]],
        out: &mut [f32],
        scratch: &mut SumScratch,
    ) -> Result<(), CodegenError> {
        let lens: Vec<usize> = inputs.iter().map(|x| x.len()).collect();
        if lens != self.input_lens || out.len() != self.out_len {
            return Err(bad_buffer(
                &self.name,
                format!(
                    "inputs of {lens:?} → {} elements; expected {:?} → {}",
                    out.len(),
                    self.input_lens,
                    self.out_len
                ),
            ));
        }
        let steps = self.steps.len();
        if steps == 0 {
            out.copy_from_slice(inputs[0]);
            return Ok(());
        }
        let scratch_len = self.step_lens[..steps - 1]
            .iter()
            .copied()
            .max()
            .unwrap_or(0);
        if scratch.0.len() < scratch_len {
            scratch.0.resize(scratch_len, 0.0);
        }
        for (k, step) in self.steps.iter().enumerate() {
            let len = self.step_lens[k];
            // the last step writes `out`, the one before it the scratch, and so on
            let to_out = (steps - 1 - k).is_multiple_of(2);
            let b = inputs[k + 1];
            match (k, to_out) {
                (0, true) => step.run_into(inputs[0], b, &mut out[..len])?,
                (0, false) => step.run_into(inputs[0], b, &mut scratch.0[..len])?,
                (_, true) => {
                    let prev = self.step_lens[k - 1];
                    step.run_into(&scratch.0[..prev], b, &mut out[..len])?
                }
                (_, false) => {
                    let prev = self.step_lens[k - 1];
                    step.run_into(&out[..prev], b, &mut scratch.0[..len])?
                }
            }
        }
        Ok(())
    }

    pub fn run(&self, inputs: &[&Tensor]) -> Result<Tensor, CodegenError> {
        let views = inputs
            .iter()
            .map(|t| f32_operand(&self.name, t, None))
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = vec![0f32; self.out_len];
        self.run_into(&views, &mut out, &mut self.new_scratch())?;
        f32_result(&self.name, &self.shape, out)
    }
}

/// `(row offsets, reduced offsets, x, out)`.
type ReduceFn = unsafe extern "C" fn(*const u8, *const u8, *const f32, *mut f32);

/// A compiled f32 `Op::ReduceMean`. The kept dims become `rows × n`: `n` is the product of
/// the trailing kept dims (contiguous in both `x` and the output; 1 when the last axis is
/// reduced), the rows enumerate the other kept dims. Each output sums, from 0, the input
/// elements of a table of reduced offsets in row-major (= input) order, 4 outputs of a row
/// per F32X4 step (the last `n % 4` one at a time in scalar f32), then divides by the
/// count: the interpreter's operations in its order, so bit-exact.
pub struct ReduceMeanKernel {
    x_len: usize,
    out_len: usize,
    shape: Vec<usize>,
    x_shape: Vec<usize>,
    /// Byte offsets (u32) of each row's first element in `x`.
    row_table: AlignedBytes,
    /// Byte offsets (u32) of the reduced elements relative to an output's first one.
    reduced_table: AlignedBytes,
    function: ReduceFn,
    /// Declared last: `function` points into it.
    code: KernelCode,
}

kernel_identity!(ReduceMeanKernel, code);

fn u32_table(offsets: &[usize]) -> AlignedBytes {
    let bytes: Vec<u8> = offsets
        .iter()
        .flat_map(|&o| (4 * o as u32).to_le_bytes())
        .collect();
    AlignedBytes::from_bytes(&bytes)
}

/// Row-major offsets (with `strides`) of every coordinate of `extents`.
fn offsets_of(extents: &[usize], strides: &[usize]) -> Vec<usize> {
    let mut offsets = vec![0usize];
    for (&extent, &stride) in extents.iter().zip(strides) {
        offsets = offsets
            .iter()
            .flat_map(|&o| (0..extent).map(move |i| o + i * stride))
            .collect();
    }
    offsets
}

impl ReduceMeanKernel {
    /// Mean of `x_ty` over `axes` (every axis when empty), the reduced dims kept as 1 when
    /// `keepdims`, into `out_ty`.
    pub fn compile(
        axes: &[usize],
        keepdims: bool,
        x_ty: &TensorType,
        out_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<ReduceMeanKernel, CodegenError> {
        const OP: &str = "reduce_mean";
        require_plain_f32(OP, x_ty)?;
        require_plain_f32(OP, out_ty)?;
        let shape = &x_ty.shape;
        let rank = shape.len();
        let invalid = |reason: String| CodegenError::InvalidOp { op: OP, reason };
        if let Some(a) = axes.iter().find(|&&a| a >= rank) {
            return Err(invalid(format!("axis {a} out of range for {shape:?}")));
        }
        let reduced = |d: usize| axes.is_empty() || axes.contains(&d);
        let expected: Vec<usize> = (0..rank)
            .filter(|&d| keepdims || !reduced(d))
            .map(|d| if reduced(d) { 1 } else { shape[d] })
            .collect();
        if expected != out_ty.shape {
            return Err(invalid(format!(
                "mean of {shape:?} over {axes:?} (keepdims {keepdims}) is {expected:?}, not {:?}",
                out_ty.shape
            )));
        }
        let count: usize = (0..rank)
            .filter(|&d| reduced(d))
            .map(|d| shape[d])
            .product();
        let x_len = x_ty.numel();
        if count == 0 {
            return Err(invalid(format!("mean over an empty extent of {shape:?}")));
        }
        if 4 * x_len > u32::MAX as usize {
            return Err(CodegenError::Unsupported {
                op: OP,
                reason: "the tensor exceeds the kernel's 32-bit offsets".to_string(),
            });
        }
        let mut strides = vec![1usize; rank];
        for d in (0..rank.saturating_sub(1)).rev() {
            strides[d] = strides[d + 1] * shape[d + 1];
        }
        // the trailing kept dims: one contiguous run of n in x and in the output
        let mut split = rank;
        while split > 0 && !reduced(split - 1) {
            split -= 1;
        }
        let n: usize = shape[split..].iter().product();
        let kept_outer: Vec<usize> = (0..split).filter(|&d| !reduced(d)).collect();
        let reduced_dims: Vec<usize> = (0..rank).filter(|&d| reduced(d)).collect();
        let pick = |dims: &[usize], of: &[usize]| dims.iter().map(|&d| of[d]).collect::<Vec<_>>();
        let row_offsets = offsets_of(&pick(&kept_outer, shape), &pick(&kept_outer, &strides));
        let reduced_offsets =
            offsets_of(&pick(&reduced_dims, shape), &pick(&reduced_dims, &strides));
        let out_len = row_offsets.len() * n;
        let mut jit = Jit::host(options)?;
        let func = jit.define_kernel(4, |b, p| {
            emit_reduce_mean(b, row_offsets.len(), n, count, p);
        });
        let name = format!("reduce_mean_f32_{}", shape_name(shape));
        // SAFETY: `define_kernel(4, ..)` builds four pointer parameters and no results —
        // `ReduceFn`; the kernel owns `jit`, so the code outlives every call.
        let function: ReduceFn = unsafe { jit.compile_as(&name, func)? };
        Ok(ReduceMeanKernel {
            x_len,
            out_len,
            shape: out_ty.shape.clone(),
            x_shape: shape.clone(),
            row_table: u32_table(&row_offsets),
            reduced_table: u32_table(&reduced_offsets),
            function,
            code: KernelCode::new(jit, name),
        })
    }

    pub fn run_into(&self, x: &[f32], out: &mut [f32]) -> Result<(), CodegenError> {
        if x.len() != self.x_len || out.len() != self.out_len {
            return Err(bad_buffer(
                self.name(),
                format!(
                    "{} → {} elements; expected {} → {}",
                    x.len(),
                    out.len(),
                    self.x_len,
                    self.out_len
                ),
            ));
        }
        // SAFETY: valid while `self.code` lives. Every row offset plus every reduced offset
        // plus an index below `n` is an element of `x` (the tables enumerate `x`'s
        // coordinates), whose length is checked above; the function writes the `out_len`
        // elements of `out` (checked).
        unsafe {
            (self.function)(
                self.row_table.as_slice().as_ptr(),
                self.reduced_table.as_slice().as_ptr(),
                x.as_ptr(),
                out.as_mut_ptr(),
            )
        };
        Ok(())
    }

    pub fn run(&self, x: &Tensor) -> Result<Tensor, CodegenError> {
        let mut out = vec![0f32; self.out_len];
        self.run_into(f32_operand(self.name(), x, Some(&self.x_shape))?, &mut out)?;
        f32_result(self.name(), &self.shape, out)
    }
}

/// The body over `(row offsets, reduced offsets, x, out)`.
fn emit_reduce_mean(b: &mut FunctionBuilder, rows: usize, n: usize, count: usize, p: &[Value]) {
    let (row_table, reduced_table, x, out) = (p[0], p[1], p[2], p[3]);
    let ro = mem().with_readonly();
    let table = mem_aligned().with_readonly();
    let vector_acc = b.declare_var(types::F32X4);
    let scalar_acc = b.declare_var(types::F32);
    counted_loop(b, rows, |b, row| {
        let entry = scaled(b, row_table, row, 4);
        let off = b.ins().uload32(table, entry, 0);
        let x_row = b.ins().iadd(x, off);
        let out_row = b.ins().imul_imm_u(row, (4 * n) as i64);
        let out_row = b.ins().iadd(out, out_row);
        counted_loop(b, n / 4, |b, j| {
            let x_run = scaled(b, x_row, j, 16);
            let zero = b.ins().f32const(0.0);
            let zero = b.ins().splat(types::F32X4, zero);
            b.def_var(vector_acc, zero);
            counted_loop(b, count, |b, r| {
                let entry = scaled(b, reduced_table, r, 4);
                let off = b.ins().uload32(table, entry, 0);
                let addr = b.ins().iadd(x_run, off);
                let v = b.ins().load(types::F32X4, ro, addr, 0);
                let s = b.use_var(vector_acc);
                let s = b.ins().fadd(s, v);
                b.def_var(vector_acc, s);
            });
            let s = b.use_var(vector_acc);
            let c = b.ins().f32const(count as f32);
            let c = b.ins().splat(types::F32X4, c);
            let mean = b.ins().fdiv(s, c);
            let addr = scaled(b, out_row, j, 16);
            b.ins().store(mem(), mean, addr, 0);
        });
        for e in n / 4 * 4..n {
            let zero = b.ins().f32const(0.0);
            b.def_var(scalar_acc, zero);
            counted_loop(b, count, |b, r| {
                let entry = scaled(b, reduced_table, r, 4);
                let off = b.ins().uload32(table, entry, 0);
                let addr = b.ins().iadd(x_row, off);
                let v = b.ins().load(types::F32, ro, addr, (4 * e) as i32);
                let s = b.use_var(scalar_acc);
                let s = b.ins().fadd(s, v);
                b.def_var(scalar_acc, s);
            });
            let s = b.use_var(scalar_acc);
            let c = b.ins().f32const(count as f32);
            let mean = b.ins().fdiv(s, c);
            b.ins().store(mem(), mean, out_row, (4 * e) as i32);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_major_offsets() {
        // dims of extents [2, 3] with strides [10, 1]: 0,1,2,10,11,12
        assert_eq!(offsets_of(&[2, 3], &[10, 1]), vec![0, 1, 2, 10, 11, 12]);
        assert_eq!(offsets_of(&[], &[]), vec![0]);
    }
}
