//! Concat (`Op::Concat`) of any dtype as a JIT'd copy: the output is `outer` rows, each the
//! inputs' blocks of `d_k · inner` elements one after the other, so per input the function
//! copies `outer` blocks of bytes into their place, 16 bytes per vector move and a block's
//! last `len % 16` bytes one at a time. Exact by construction (bytes are moved, not
//! computed).

// AOT: `into_aot` of this kernel (crate::aot).
#[path = "aot/parts/concat.rs"]
mod aot_parts;

use crate::clif::{at, counted_loop, mem, scaled};
use crate::jit::{kernel_identity, Jit, JitOptions, KernelCode};
use crate::tensor_io::shape_name;
use crate::CodegenError;
use cranelift_codegen::ir::{types, Function, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::TensorType;

const OP: &str = "concat";

/// `(input pointers, out)`.
type ConcatFn = unsafe extern "C" fn(*const *const u8, *mut u8);

/// A compiled Concat.
pub struct ConcatKernel {
    /// Byte length of every input.
    input_bytes: Vec<usize>,
    out_bytes: usize,
    function: ConcatFn,
    /// Declared last: `function` points into it.
    code: KernelCode,
}

kernel_identity!(ConcatKernel, code);

impl ConcatKernel {
    /// Concatenate inputs of types `inputs` (one dtype, equal shapes but along `axis`).
    pub fn compile(
        axis: usize,
        inputs: &[&TensorType],
        out_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<ConcatKernel, CodegenError> {
        let invalid = |reason: String| CodegenError::InvalidOp { op: OP, reason };
        let first = inputs
            .first()
            .ok_or_else(|| invalid("no inputs".to_string()))?;
        let rank = first.shape.len();
        if axis >= rank {
            return Err(invalid(format!("axis {axis} for rank {rank}")));
        }
        let mut expected = first.shape.clone();
        expected[axis] = 0;
        for ty in inputs {
            let fits = ty.dtype == first.dtype
                && ty.shape.len() == rank
                && (0..rank).all(|d| d == axis || ty.shape[d] == first.shape[d]);
            if !fits {
                return Err(invalid(format!(
                    "input {ty} does not concatenate with {first} along axis {axis}"
                )));
            }
            expected[axis] += ty.shape[axis];
        }
        if out_ty.shape != expected || out_ty.dtype != first.dtype {
            return Err(invalid(format!(
                "output {out_ty}, the inputs concatenate to {expected:?}"
            )));
        }
        let elem = first.dtype.size_bytes();
        let outer: usize = first.shape[..axis].iter().product();
        let inner: usize = first.shape[axis + 1..].iter().product::<usize>() * elem;
        let blocks: Vec<usize> = inputs.iter().map(|t| t.shape[axis] * inner).collect();
        let out_bytes = out_ty.byte_size();
        if out_bytes > i32::MAX as usize {
            return Err(CodegenError::Unsupported {
                op: OP,
                reason: "the output exceeds the kernel's 32-bit offsets".to_string(),
            });
        }
        let mut jit = Jit::host(options)?;
        let func = build_function(&jit, outer, &blocks);
        let name = format!("concat_{}", shape_name(&expected));
        // SAFETY: `build_function` builds two pointer parameters and no results —
        // `ConcatFn`; the kernel owns `jit`, so the code outlives every call.
        let function: ConcatFn = unsafe { jit.compile_as(&name, func)? };
        Ok(ConcatKernel {
            input_bytes: blocks.iter().map(|b| b * outer).collect(),
            out_bytes,
            function,
            code: KernelCode::new(jit, name),
        })
    }

    /// Concatenate the inputs' bytes (in input order) into `out`.
    pub fn run_into(&self, inputs: &[&[u8]], out: &mut [u8]) -> Result<(), CodegenError> {
        let lens: Vec<usize> = inputs.iter().map(|i| i.len()).collect();
        if lens != self.input_bytes || out.len() != self.out_bytes {
            return Err(CodegenError::BadBuffer {
                kernel: self.name().to_string(),
                what: format!(
                    "inputs of {lens:?} bytes → {}; expected {:?} → {}",
                    out.len(),
                    self.input_bytes,
                    self.out_bytes
                ),
            });
        }
        let pointers: Vec<*const u8> = inputs.iter().map(|i| i.as_ptr()).collect();
        // SAFETY: valid while `self.code` lives. The function reads one pointer per input
        // from `pointers` (as many as were compiled, checked above), `input_bytes[k]` bytes
        // from input `k`, and writes the `out_bytes` bytes of `out` (checked above).
        unsafe { (self.function)(pointers.as_ptr(), out.as_mut_ptr()) };
        Ok(())
    }
}

/// `fn(inputs, out)`: per input `k` and row `o`, copy `blocks[k]` bytes from
/// `inputs[k] + o·blocks[k]` to `out + o·Σblocks + Σ_{j<k} blocks[j]`.
fn build_function(jit: &Jit, outer: usize, blocks: &[usize]) -> Function {
    let ptr_ty = jit.pointer_type();
    jit.define_kernel(2, |b, p| {
        let (pointers, out) = (p[0], p[1]);
        let row: usize = blocks.iter().sum();
        let mut offset = 0;
        for (k, &block) in blocks.iter().enumerate() {
            let (addr, off) = at(b, pointers, k * ptr_ty.bytes() as usize);
            let src = b.ins().load(ptr_ty, mem().with_readonly(), addr, off);
            let dst = b.ins().iadd_imm_u(out, offset as i64);
            copy_rows(b, src, dst, outer, block, row);
            offset += block;
        }
    })
}

/// Copy `outer` blocks of `block` bytes from consecutive places at `src` to places `row`
/// bytes apart from `dst`: 16 bytes per vector move, the last `block % 16` one at a time.
fn copy_rows(
    b: &mut FunctionBuilder,
    src: Value,
    dst: Value,
    outer: usize,
    block: usize,
    row: usize,
) {
    counted_loop(b, outer, |b, o| {
        let from = scaled(b, src, o, block);
        let to = scaled(b, dst, o, row);
        counted_loop(b, block / 16, |b, v| {
            let f = scaled(b, from, v, 16);
            let t = scaled(b, to, v, 16);
            let x = b.ins().load(types::I8X16, mem().with_readonly(), f, 0);
            b.ins().store(mem(), x, t, 0);
        });
        for byte in block / 16 * 16..block {
            let x = b
                .ins()
                .load(types::I8, mem().with_readonly(), from, byte as i32);
            b.ins().store(mem(), x, to, byte as i32);
        }
    });
}
