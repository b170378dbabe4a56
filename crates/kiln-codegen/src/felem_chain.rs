//! A fused elementwise kernel, [`ElementwiseChainKernel`]: a small DAG of per-tensor
//! Dequantize, Quantize, f32 activations and f32 add/sub/mul/div, evaluated element by
//! element in registers, reading its external operands (u8, i8 or f32, numpy-broadcast to
//! the output) and writing one output (u8, i8 or f32). It replaces the float "islands" a
//! quantized model keeps between its int8 kernels (`dequantize → hard_swish → quantize`,
//! `quantize(dequantize(a) + dequantize(b))`), whose intermediate tensors the per-node
//! kernels would write and read back.
//!
//! Every op runs the instructions of its per-node kernel, lane for lane, so the results are
//! those of the nodes run one by one, bit for bit: activations through `fact::activate` and
//! the binary ops as `felem`'s row program; Quantize as `quantize.rs` (`divps`, clamp to
//! `[q_min − zp, q_max − zp]` with `maxps`/`minps`, `roundps` to even, convert, `+ zp`,
//! narrow); Dequantize as `quantize.rs`'s `(q − zp) as f32 · s` (there one element at a
//! time in scalar f32; here four lanes of the same IEEE operations: the subtraction is
//! exact and the conversion exact below 2²⁴). A Quantize feeding a Dequantize inside the
//! chain passes its integer (already in range: the clamp precedes the rounding) in an
//! I32X4 register.
//!
//! The loop is `felem`'s row program generalized to any number of operands of any element
//! size: the output is collapsed into `rows × n` ([`broadcast_rows_n`]; a few long rows are
//! cut into sub-rows, [`split_rows`], so that threads can split the rows), a table gives per
//! row each operand's byte offset (the operand pointers come in an array), and each row
//! runs 16 elements per step (int8 operands loaded as one 16-byte vector and widened to four
//! I32X4, an int8 output narrowed back into one 16-byte store; four independent
//! evaluations), then 4 at a time, then its last `n % 4` one at a time through the same
//! vector code (splat in, lane 0 out), so every element takes the same instructions.

use crate::clif::{at, counted_loop, mem, mem_aligned, range_loop, scaled, vcast, widen_half};
use crate::fact::activate;
use crate::felem::{broadcast_rows_n, Read};
use crate::jit::{kernel_identity, Jit, JitOptions, KernelCode};
use crate::parallel::for_each_part;
use crate::qconv::AlignedBytes;
use crate::quantize::{dequantize_lanes, Int8Quant};
use crate::tensor_io::{bad_buffer, shape_name, tensor_data_from_le_bytes};
use crate::CodegenError;
use cranelift_codegen::ir::{types, Function, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::infer::broadcast_shapes;
use kiln_ir::{Activation, BinaryOp, DType, Quant, Tensor, TensorType};

/// What a chain node computes.
#[derive(Clone, Debug, PartialEq)]
pub enum ChainOp {
    /// u8/i8 per tensor → f32.
    Dequantize,
    /// f32 → u8/i8 per tensor.
    Quantize,
    /// f32 → f32.
    Activation(Activation),
    /// f32, f32 → f32 with numpy broadcasting.
    Binary(BinaryOp),
}

impl ChainOp {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            ChainOp::Dequantize => "dequantize",
            ChainOp::Quantize => "quantize",
            ChainOp::Activation(act) => act.name(),
            ChainOp::Binary(op) => op.name(),
        }
    }
}

/// An argument of a chain node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainArg {
    /// The kernel's external operand `k`.
    Operand(usize),
    /// The value of an earlier node of the chain.
    Node(usize),
}

/// One node of a chain: its op, arguments and output type.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainNode {
    pub op: ChainOp,
    pub args: Vec<ChainArg>,
    pub out_ty: TensorType,
}

/// `(table, operand pointer array, out, first row, end row)`.
type ChainFn = unsafe extern "C" fn(*const u8, *const *const u8, *mut u8, usize, usize);

/// Rows fewer than this are cut into sub-rows (when their length allows) so that threads
/// can split the kernel ([`split_rows`]).
const MIN_ROWS: usize = 16;
/// The shortest sub-row [`split_rows`] makes.
const MIN_SUB_ROW: usize = 512;

/// Cut each of `rows` rows of `n` elements into `k` sub-rows of `n / k` (the smallest `k`
/// giving at least [`MIN_ROWS`] rows, `n / k` a multiple of the 16-element step and at
/// least [`MIN_SUB_ROW`]; none when no such `k` exists): an operand read as a run moves
/// `n / k` elements per sub-row, a broadcast one keeps its row's element. Every element
/// keeps the instructions it is computed with (a sub-row's steps are the row's), so the
/// results do not change.
fn split_rows(n: usize, reads: &[Read], offsets: Vec<Vec<usize>>) -> (usize, Vec<Vec<usize>>) {
    let rows = offsets.len();
    if rows >= MIN_ROWS || rows == 0 {
        return (n, offsets);
    }
    let Some(k) = (MIN_ROWS.div_ceil(rows)..=n / MIN_SUB_ROW)
        .find(|&k| n.is_multiple_of(k) && (n / k).is_multiple_of(STEP) && n / k >= MIN_SUB_ROW)
    else {
        return (n, offsets);
    };
    let m = n / k;
    let split = offsets
        .iter()
        .flat_map(|row| {
            (0..k).map(move |j| {
                row.iter()
                    .zip(reads)
                    .map(|(&o, read)| match read {
                        Read::Run => o + j * m,
                        Read::Broadcast => o,
                    })
                    .collect()
            })
        })
        .collect();
    (m, split)
}

/// Whether values of `dtype` are held as integers (u8/i8, each lane of an I32X4) rather
/// than as f32 (an F32X4).
fn is_int(dtype: DType) -> bool {
    matches!(dtype, DType::U8 | DType::I8)
}

/// A per-tensor quantization's `(scale, zero point)` and the range of its dtype, or why
/// `ty` is no u8/i8 per-tensor quantized type.
pub(crate) fn per_tensor(ty: &TensorType) -> Result<(f32, i32, (i32, i32)), String> {
    let range = match ty.dtype {
        DType::U8 => (0, u8::MAX as i32),
        DType::I8 => (i8::MIN as i32, i8::MAX as i32),
        d => return Err(format!("{d} quantized side (u8 or i8 only)")),
    };
    match &ty.quant {
        Some(Quant::PerTensor { scale, zero_point }) => {
            if !(scale.is_finite() && *scale > 0.0) {
                return Err(format!("scale {scale} is not a positive finite number"));
            }
            if *zero_point < range.0 || *zero_point > range.1 {
                return Err(format!(
                    "zero point {zero_point} outside [{}, {}]",
                    range.0, range.1
                ));
            }
            Ok((*scale, *zero_point, range))
        }
        Some(Quant::PerAxis { .. }) => Err(format!("{ty} is quantized per axis")),
        None => Err(format!("{ty} has no quantization parameters")),
    }
}

use kiln_ir::infer::trimmed_shape as trimmed;

/// A compiled chain of elementwise nodes.
pub struct ElementwiseChainKernel {
    operand_bytes: Vec<usize>,
    out_ty: TensorType,
    out_bytes: usize,
    /// Per row, per operand, a byte offset (u32).
    table: AlignedBytes,
    /// Rows of the table (the parts threads split).
    rows: usize,
    /// Output elements.
    elements: usize,
    function: ChainFn,
    /// Declared last: `function` points into it.
    code: KernelCode,
}

kernel_identity!(ElementwiseChainKernel, code);

impl ElementwiseChainKernel {
    /// Compile `nodes` (in evaluation order, each argument an operand or an earlier node;
    /// the last node's value is the output) over operands of types `operands`. Every node's
    /// output has the output's elements in the output's order (its shape equal up to
    /// leading unit dims): only the operands broadcast.
    pub fn compile(
        operands: &[TensorType],
        nodes: &[ChainNode],
        options: &JitOptions,
    ) -> Result<ElementwiseChainKernel, CodegenError> {
        const OP: &str = "elementwise_chain";
        let invalid = |reason: String| CodegenError::InvalidOp { op: OP, reason };
        let out_ty = validate(operands, nodes)?;
        let shapes: Vec<&[usize]> = operands.iter().map(|t| t.shape.as_slice()).collect();
        let (n, reads, offsets) = broadcast_rows_n(&shapes, &out_ty.shape).map_err(invalid)?;
        let (n, offsets) = split_rows(n, &reads, offsets);
        let element_bytes: Vec<usize> = operands.iter().map(|t| t.dtype.size_bytes()).collect();
        let too_large = operands
            .iter()
            .map(|t| t.byte_size())
            .chain([out_ty.byte_size()])
            .any(|b| b > u32::MAX as usize);
        if too_large {
            return Err(CodegenError::Unsupported {
                op: OP,
                reason: "tensors exceed the kernel's 32-bit offsets".to_string(),
            });
        }
        let mut table = Vec::with_capacity(4 * offsets.len() * operands.len());
        for row in &offsets {
            for (&o, &size) in row.iter().zip(&element_bytes) {
                table.extend_from_slice(&((o * size) as u32).to_le_bytes());
            }
        }
        let table = AlignedBytes::from_bytes(&table);
        let name = format!(
            "{}_{}",
            nodes
                .iter()
                .map(|node| node.op.name())
                .collect::<Vec<_>>()
                .join("_"),
            shape_name(&out_ty.shape)
        );
        let mut jit = Jit::host(options)?;
        let exact_cvtt = jit.features().is_x86_64();
        let program = Program {
            operands,
            operand_dtypes: operands.iter().map(|t| t.dtype).collect(),
            reads,
            nodes,
            exact_cvtt,
        };
        let func = build_chain(&jit, &program, n);
        // SAFETY: `build_chain` builds five pointer-sized parameters and no results —
        // `ChainFn` (the last two are integers of pointer size); the kernel owns `jit`, so
        // the code outlives every call.
        let function: ChainFn = unsafe { jit.compile_as(&name, func)? };
        Ok(ElementwiseChainKernel {
            operand_bytes: operands.iter().map(TensorType::byte_size).collect(),
            out_bytes: out_ty.byte_size(),
            out_ty,
            rows: offsets.len(),
            elements: n * offsets.len(),
            table,
            function,
            code: KernelCode::new(jit, name),
        })
    }

    /// The output's type.
    pub fn out_ty(&self) -> &TensorType {
        &self.out_ty
    }

    /// Output elements of one run (for sizing the thread split).
    pub fn elements(&self) -> usize {
        self.elements
    }

    /// Run on the operands' bytes (native-endian elements of their dtypes) into `out`'s.
    pub fn run_into(&self, operands: &[&[u8]], out: &mut [u8]) -> Result<(), CodegenError> {
        self.run_into_threads(operands, out, 1)
    }

    /// [`ElementwiseChainKernel::run_into`] on up to `threads` threads (the calling one
    /// included), claiming rows one at a time: each element is computed by the same
    /// instructions whatever the split, so the bytes are the same for every count.
    pub fn run_into_threads(
        &self,
        operands: &[&[u8]],
        out: &mut [u8],
        threads: usize,
    ) -> Result<(), CodegenError> {
        let lens: Vec<usize> = operands.iter().map(|o| o.len()).collect();
        if lens != self.operand_bytes || out.len() != self.out_bytes {
            return Err(bad_buffer(
                self.name(),
                format!(
                    "operands of {lens:?} → {} bytes; expected {:?} → {}",
                    out.len(),
                    self.operand_bytes,
                    self.out_bytes
                ),
            ));
        }
        let pointers: Vec<*const u8> = operands.iter().map(|o| o.as_ptr()).collect();
        // addresses, not pointers, cross to the threads (pointers are not Send)
        let (table_at, pointers_at) = (
            self.table.as_slice().as_ptr() as usize,
            pointers.as_ptr() as usize,
        );
        let out_at = out.as_mut_ptr() as usize;
        let run_rows = |first: usize, end: usize| {
            // SAFETY: valid while `self.code` lives (`self` is borrowed for the whole call).
            // The table holds, per row and operand, a byte offset built so that every read
            // (a run of `n` elements or one) lies inside that operand, whose byte length is
            // checked above to be the compiled one; the function reads one pointer per
            // operand from `pointers` (alive until the threads finish) and writes the
            // output elements of rows `first..end` (`end <= rows`) of the `out_bytes`
            // bytes at `out_at` (checked): `for_each_part` hands every row out once, so no
            // byte is written by two threads, and `out` stays exclusively borrowed until
            // they finish. Loads and stores are unaligned-safe.
            unsafe {
                (self.function)(
                    table_at as *const u8,
                    pointers_at as *const *const u8,
                    out_at as *mut u8,
                    first,
                    end,
                )
            }
        };
        for_each_part(self.rows, threads, run_rows);
        Ok(())
    }

    /// Run on tensors (allocates the output).
    pub fn run(&self, operands: &[&Tensor]) -> Result<Tensor, CodegenError> {
        let bytes: Vec<Vec<u8>> = operands.iter().map(|t| t.to_le_bytes()).collect();
        let views: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
        let mut out = vec![0u8; self.out_bytes];
        self.run_into(&views, &mut out)?;
        Tensor::new(
            self.out_ty.shape.clone(),
            tensor_data_from_le_bytes(self.out_ty.dtype, &out),
        )
        .map_err(|e| bad_buffer(self.name(), e.to_string()))
    }
}

/// Check a chain (see [`ElementwiseChainKernel::compile`]) and return its output type.
pub(crate) fn validate(
    operands: &[TensorType],
    nodes: &[ChainNode],
) -> Result<TensorType, CodegenError> {
    let invalid = |reason: String| CodegenError::InvalidOp {
        op: "elementwise_chain",
        reason,
    };
    let Some(last) = nodes.last() else {
        return Err(invalid("a chain of no nodes".to_string()));
    };
    let out_ty = last.out_ty.clone();
    let mut read = vec![false; operands.len()];
    for (i, node) in nodes.iter().enumerate() {
        let node_invalid =
            |reason: String| invalid(format!("node {i} ({}): {reason}", node.op.name()));
        let mut arg_tys = Vec::with_capacity(node.args.len());
        for &arg in &node.args {
            arg_tys.push(match arg {
                ChainArg::Operand(k) => operands
                    .get(k)
                    .ok_or_else(|| node_invalid(format!("operand {k} of {}", operands.len())))?,
                ChainArg::Node(j) if j < i => &nodes[j].out_ty,
                ChainArg::Node(j) => {
                    return Err(node_invalid(format!("reads node {j}, not an earlier one")))
                }
            });
        }
        check_node(node, &arg_tys).map_err(node_invalid)?;
        if trimmed(&node.out_ty.shape) != trimmed(&out_ty.shape)
            || node.out_ty.shape.len() > out_ty.shape.len()
        {
            return Err(node_invalid(format!(
                "output {} is not laid out as the chain's output {out_ty}",
                node.out_ty
            )));
        }
        for &arg in &node.args {
            if let ChainArg::Operand(k) = arg {
                read[k] = true;
            }
        }
    }
    if let Some(k) = read.iter().position(|&r| !r) {
        return Err(invalid(format!("operand {k} is never read")));
    }
    Ok(out_ty)
}

/// Check one node against the interpreter's rules for its op, given its argument types.
fn check_node(node: &ChainNode, args: &[&TensorType]) -> Result<(), String> {
    let out = &node.out_ty;
    let arity = match node.op {
        ChainOp::Binary(_) => 2,
        _ => 1,
    };
    if args.len() != arity {
        return Err(format!("{} arguments, expected {arity}", args.len()));
    }
    let same_shape = || {
        if args[0].shape == out.shape {
            Ok(())
        } else {
            Err(format!("input {} and output {out} shapes differ", args[0]))
        }
    };
    let f32_only = |tys: &[&TensorType]| match tys.iter().find(|t| t.dtype != DType::F32) {
        Some(t) => Err(format!("{t} (f32 only)")),
        None => Ok(()),
    };
    match &node.op {
        ChainOp::Dequantize => {
            same_shape()?;
            f32_only(&[out])?;
            per_tensor(args[0]).map(|_| ())
        }
        ChainOp::Quantize => {
            same_shape()?;
            f32_only(&[args[0]])?;
            per_tensor(out).map(|_| ())
        }
        ChainOp::Activation(_) => {
            same_shape()?;
            f32_only(&[args[0], out])
        }
        ChainOp::Binary(_) => {
            f32_only(&[args[0], args[1], out])?;
            match broadcast_shapes(&args[0].shape, &args[1].shape) {
                Some(shape) if shape == out.shape => Ok(()),
                _ => Err(format!(
                    "{} and {} do not broadcast to {out}",
                    args[0], args[1]
                )),
            }
        }
    }
}

/// What the generated code needs of a checked chain ([`validate`]).
pub(crate) struct Program<'a> {
    pub(crate) operands: &'a [TensorType],
    pub(crate) operand_dtypes: Vec<DType>,
    /// How the row loop reads each operand (unused by [`Program::eval`]).
    reads: Vec<Read>,
    pub(crate) nodes: &'a [ChainNode],
    /// `x86_cvtt2dq` for the exact conversion of Quantize (as `QuantizeKernel`).
    exact_cvtt: bool,
}

impl<'a> Program<'a> {
    /// A checked chain evaluated lane by lane by another kernel (the int8 convolution's
    /// fused epilogue), whose operands it loads itself.
    pub(crate) fn for_lanes(
        operands: &'a [TensorType],
        nodes: &'a [ChainNode],
        exact_cvtt: bool,
    ) -> Program<'a> {
        Program {
            operands,
            operand_dtypes: operands.iter().map(|t| t.dtype).collect(),
            reads: vec![Read::Run; operands.len()],
            nodes,
            exact_cvtt,
        }
    }

    /// The output's dtype.
    pub(crate) fn out_dtype(&self) -> DType {
        self.nodes.last().expect("a chain has nodes").out_ty.dtype
    }

    /// The chain's value for one vector step: `operands` are the operands' lanes (F32X4 for
    /// f32, I32X4 for u8/i8).
    pub(crate) fn eval(&self, b: &mut FunctionBuilder, operands: &[Value]) -> Value {
        let mut values: Vec<Value> = Vec::with_capacity(self.nodes.len());
        for node in self.nodes {
            let args: Vec<Value> = node
                .args
                .iter()
                .map(|&a| match a {
                    ChainArg::Operand(k) => operands[k],
                    ChainArg::Node(j) => values[j],
                })
                .collect();
            let v = match &node.op {
                ChainOp::Activation(act) => activate(b, act, args[0]),
                ChainOp::Binary(op) => match op {
                    BinaryOp::Add => b.ins().fadd(args[0], args[1]),
                    BinaryOp::Sub => b.ins().fsub(args[0], args[1]),
                    BinaryOp::Mul => b.ins().fmul(args[0], args[1]),
                    BinaryOp::Div => b.ins().fdiv(args[0], args[1]),
                },
                ChainOp::Dequantize => {
                    let input_ty = match node.args[0] {
                        ChainArg::Operand(k) => &self.operands[k],
                        ChainArg::Node(j) => &self.nodes[j].out_ty,
                    };
                    let (scale, zero_point, _) =
                        per_tensor(input_ty).expect("checked when compiling");
                    dequantize_lanes(b, args[0], scale, zero_point)
                }
                ChainOp::Quantize => {
                    // `QuantizeKernel`'s formula, its table's values as constants
                    let quant = Int8Quant::of(&node.out_ty).expect("checked when compiling");
                    quant.quantize_lanes(b, args[0], self.exact_cvtt)
                }
            };
            values.push(v);
        }
        *values.last().expect("a chain has nodes")
    }
}

fn build_chain(jit: &Jit, program: &Program, n: usize) -> Function {
    jit.define_kernel(5, |b, p| emit_chain(b, program, n, p))
}

/// Elements per step of the main loop: four vectors, so that the int8 operands and
/// outputs move as whole 16-byte vectors and four independent evaluations overlap.
const STEP: usize = 16;

/// Load `lanes` (1, 4 or 16) consecutive elements of an operand at `ptr + offset` as
/// vectors of four lanes (f32 as F32X4, u8/i8 widened to I32X4): one vector (a one-element
/// load splat) for 1 and 4, four for 16.
pub(crate) fn load_run(
    b: &mut FunctionBuilder,
    dtype: DType,
    ptr: Value,
    offset: i32,
    lanes: usize,
) -> Vec<Value> {
    load_run_with(b, mem().with_readonly(), dtype, ptr, offset, lanes)
}

/// [`load_run`] with the loads' flags (not `readonly` for memory the function writes).
fn load_run_with(
    b: &mut FunctionBuilder,
    ro: MemFlagsData,
    dtype: DType,
    ptr: Value,
    offset: i32,
    lanes: usize,
) -> Vec<Value> {
    let int = is_int(dtype);
    let widen =
        |b: &mut FunctionBuilder, v: Value, high: bool| widen_half(b, v, dtype == DType::I8, high);
    match lanes {
        1 => vec![match dtype {
            DType::U8 => {
                let q = b.ins().uload8(types::I32, ro, ptr, offset);
                b.ins().splat(types::I32X4, q)
            }
            DType::I8 => {
                let q = b.ins().sload8(types::I32, ro, ptr, offset);
                b.ins().splat(types::I32X4, q)
            }
            _ => {
                let f = b.ins().load(types::F32, ro, ptr, offset);
                b.ins().splat(types::F32X4, f)
            }
        }],
        4 if int => {
            let word = b.ins().load(types::I32, ro, ptr, offset);
            let v = b.ins().scalar_to_vector(types::I32X4, word);
            let bytes = vcast(b, types::I8X16, v);
            let halves = widen(b, bytes, false);
            vec![widen(b, halves, false)]
        }
        4 => vec![b.ins().load(types::F32X4, ro, ptr, offset)],
        _ if int => {
            let bytes = b.ins().load(types::I8X16, ro, ptr, offset);
            let mut out = Vec::with_capacity(4);
            for high in [false, true] {
                let halves = widen(b, bytes, high);
                out.push(widen(b, halves, false));
                out.push(widen(b, halves, true));
            }
            out
        }
        _ => (0..4)
            .map(|q| b.ins().load(types::F32X4, ro, ptr, offset + 16 * q))
            .collect(),
    }
}

/// Store the chain's values for `lanes` (1, 4 or 16) consecutive output elements at
/// `ptr + offset`: `values` holds one vector (lane 0 stored for 1) or four (for 16);
/// u8/i8 outputs are narrowed with saturation as `QuantizeKernel` does (exact: the values
/// are already in range).
pub(crate) fn store_run(
    b: &mut FunctionBuilder,
    dtype: DType,
    values: &[Value],
    ptr: Value,
    offset: i32,
    lanes: usize,
) {
    let narrow = |b: &mut FunctionBuilder, h0: Value, h1: Value| {
        if dtype == DType::I8 {
            b.ins().snarrow(h0, h1)
        } else {
            b.ins().unarrow(h0, h1)
        }
    };
    match (is_int(dtype), lanes) {
        (true, 16) => {
            let h0 = b.ins().snarrow(values[0], values[1]);
            let h1 = b.ins().snarrow(values[2], values[3]);
            let bytes = narrow(b, h0, h1);
            b.ins().store(mem(), bytes, ptr, offset);
        }
        (true, _) => {
            let halves = b.ins().snarrow(values[0], values[0]);
            let bytes = narrow(b, halves, halves);
            if lanes == 4 {
                let words = vcast(b, types::I32X4, bytes);
                let word = b.ins().extractlane(words, 0);
                b.ins().store(mem(), word, ptr, offset);
            } else {
                let byte = b.ins().extractlane(bytes, 0);
                b.ins().store(mem(), byte, ptr, offset);
            }
        }
        (false, 16) => {
            for (q, &v) in values.iter().enumerate() {
                b.ins().store(mem(), v, ptr, offset + 16 * q as i32);
            }
        }
        (false, 4) => {
            b.ins().store(mem(), values[0], ptr, offset);
        }
        (false, _) => {
            let s = b.ins().extractlane(values[0], 0);
            b.ins().store(mem(), s, ptr, offset);
        }
    }
}

/// The chain over a run of `n` consecutive elements in place of the conv's own output:
/// operand `conv_operand` is read from `out` (written earlier by the same function, so its
/// loads are ordinary ones) and every operand's and the output's element `e` is at
/// `bases[k] + e · size` (`out + e · size`): 16 elements per step, then 4, then 1, the
/// steps of [`emit_chain`]'s rows. The output's elements must have the conv operand's size
/// (each step reads its elements before storing over them).
pub(crate) fn emit_in_place_run(
    b: &mut FunctionBuilder,
    program: &Program,
    conv_operand: usize,
    bases: &[Value],
    out: Value,
    n: usize,
) {
    emit_run(b, program, n, out, |b, k, first, e, lanes| {
        let dtype = program.operand_dtypes[k];
        let size = dtype.size_bytes();
        let base = if k == conv_operand { out } else { bases[k] };
        let at_first = scaled(b, base, first, size);
        let (ptr, offset) = at(b, at_first, e * size);
        let flags = if k == conv_operand {
            mem()
        } else {
            mem().with_readonly()
        };
        load_run_with(b, flags, dtype, ptr, offset, lanes)
    });
}

/// The chain over a run of `n` output elements from `out`: 16 elements per step in a loop,
/// then 4 at a time, then 1 (every element through the same vector code), each step's
/// operands from `load(b, k, first, e, lanes)` (operand `k`'s `lanes` elements from element
/// `first + e`, `first` an i64 value, as [`load_run`] gives them), its values stored at
/// `out + (first + e) · size`.
fn emit_run(
    b: &mut FunctionBuilder,
    program: &Program,
    n: usize,
    out: Value,
    load: impl Fn(&mut FunctionBuilder, usize, Value, usize, usize) -> Vec<Value>,
) {
    let out_dtype = program.out_dtype();
    let size = out_dtype.size_bytes();
    let step = |b: &mut FunctionBuilder, first: Value, e: usize, lanes: usize| {
        let operands: Vec<Vec<Value>> = (0..program.operand_dtypes.len())
            .map(|k| load(b, k, first, e, lanes))
            .collect();
        let values: Vec<Value> = (0..lanes.div_ceil(4))
            .map(|q| {
                let lane: Vec<Value> = operands.iter().map(|o| o[q]).collect();
                program.eval(b, &lane)
            })
            .collect();
        let at_first = scaled(b, out, first, size);
        let (ptr, offset) = at(b, at_first, e * size);
        store_run(b, out_dtype, &values, ptr, offset, lanes);
    };
    counted_loop(b, n / STEP, |b, j| {
        let first = b.ins().imul_imm_u(j, STEP as i64);
        step(b, first, 0, STEP);
    });
    let zero = b.ins().iconst(types::I64, 0);
    let mut e = n / STEP * STEP;
    while e + 4 <= n {
        step(b, zero, e, 4);
        e += 4;
    }
    while e < n {
        step(b, zero, e, 1);
        e += 1;
    }
}

/// The body of [`build_chain`] over its parameters `(table, operand pointers, out)`.
fn emit_chain(b: &mut FunctionBuilder, program: &Program, n: usize, params: &[Value]) {
    let (table, pointers, out) = (params[0], params[1], params[2]);
    let (first, end) = (params[3], params[4]);
    let count = program.reads.len();
    let out_size = program.out_dtype().size_bytes();
    let operand_ptrs: Vec<Value> = (0..count)
        .map(|k| {
            b.ins().load(
                types::I64,
                mem_aligned().with_readonly(),
                pointers,
                (8 * k) as i32,
            )
        })
        .collect();
    range_loop(b, first, end, |b, row| {
        let entry = scaled(b, table, row, 4 * count);
        // per operand: its row pointer, or the row's broadcast vector
        let mut bases = Vec::with_capacity(count);
        for (k, &operand) in operand_ptrs.iter().enumerate() {
            let off = b
                .ins()
                .uload32(mem_aligned().with_readonly(), entry, (4 * k) as i32);
            let ptr = b.ins().iadd(operand, off);
            bases.push(match program.reads[k] {
                Read::Run => ptr,
                Read::Broadcast => load_run(b, program.operand_dtypes[k], ptr, 0, 1)[0],
            });
        }
        let out_row = b.ins().imul_imm_u(row, (out_size * n) as i64);
        let out_row = b.ins().iadd(out, out_row);
        emit_run(
            b,
            program,
            n,
            out_row,
            |b, k, first, e, lanes| match program.reads[k] {
                Read::Run => {
                    let size = program.operand_dtypes[k].size_bytes();
                    let row_at = scaled(b, bases[k], first, size);
                    let (ptr, offset) = at(b, row_at, e * size);
                    load_run(b, program.operand_dtypes[k], ptr, offset, lanes)
                }
                Read::Broadcast => vec![bases[k]; lanes.div_ceil(4)],
            },
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ActivationKernel, BinaryKernel, DequantizeKernel, QuantizeKernel};
    use kiln_ir::TensorData;

    /// xorshift64*: reproducible test data without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        /// In `[lo, hi)`.
        fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
            lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
        }
    }

    fn quantized(dtype: DType, shape: &[usize], scale: f32, zero_point: i32) -> TensorType {
        TensorType::new(dtype, shape.to_vec()).with_quant(Quant::per_tensor(scale, zero_point))
    }

    fn f32_ty(shape: &[usize]) -> TensorType {
        TensorType::new(DType::F32, shape.to_vec())
    }

    /// Quantize scales of the tests whose ties (`(k + ½)·s` rounded to f32) the data hits.
    const TIE_SCALES: [f32; 4] = [0.03, 0.05, 0.07, 0.09];

    /// Random data of `ty`; f32 values include exact halves of 1/32 (ties of a quantize by
    /// 1/16), near-ties of the [`TIE_SCALES`] and, every 17th, values far outside the
    /// quantization ranges.
    fn random(rng: &mut Rng, ty: &TensorType) -> Tensor {
        let len = ty.shape.iter().product::<usize>();
        let data = match ty.dtype {
            DType::U8 => TensorData::U8((0..len).map(|_| rng.next() as u8).collect()),
            DType::I8 => TensorData::I8((0..len).map(|_| rng.next() as i8).collect()),
            _ => TensorData::F32(
                (0..len)
                    .map(|i| match i % 17 {
                        0 => rng.uniform(-400.0, 400.0),
                        1..=4 => (rng.uniform(-256.0, 256.0) as i32) as f32 / 32.0,
                        // near-ties of a quantize by one of the tests' scales
                        5..=9 => {
                            let k = rng.uniform(-200.0, 200.0) as i32;
                            (k as f32 + 0.5) * TIE_SCALES[i % TIE_SCALES.len()]
                        }
                        _ => rng.uniform(-9.0, 9.0),
                    })
                    .collect(),
            ),
        };
        Tensor::new(ty.shape.clone(), data).expect("sized from the type")
    }

    /// The chain run node by node with the per-node kernels.
    fn per_node(operands: &[TensorType], nodes: &[ChainNode], inputs: &[Tensor]) -> Tensor {
        let options = JitOptions::default();
        let mut values: Vec<Tensor> = Vec::new();
        for node in nodes {
            let args: Vec<(&Tensor, &TensorType)> = node
                .args
                .iter()
                .map(|&a| match a {
                    ChainArg::Operand(k) => (&inputs[k], &operands[k]),
                    ChainArg::Node(j) => (&values[j], &nodes[j].out_ty),
                })
                .collect();
            let out = &node.out_ty;
            let value = match &node.op {
                ChainOp::Dequantize => DequantizeKernel::compile(args[0].1, out, &options)
                    .and_then(|k| k.run(args[0].0)),
                ChainOp::Quantize => {
                    QuantizeKernel::compile(args[0].1, out, &options).and_then(|k| k.run(args[0].0))
                }
                ChainOp::Activation(act) => ActivationKernel::compile(act, args[0].1, &options)
                    .and_then(|k| k.run(args[0].0)),
                ChainOp::Binary(op) => {
                    BinaryKernel::compile(*op, args[0].1, args[1].1, out, &options)
                        .and_then(|k| k.run(args[0].0, args[1].0))
                }
            };
            values.push(value.expect("a valid per-node kernel and run"));
        }
        values.pop().expect("a chain has nodes")
    }

    fn check(operands: &[TensorType], nodes: &[ChainNode], seeds: std::ops::Range<u64>) {
        let kernel = ElementwiseChainKernel::compile(operands, nodes, &JitOptions::default())
            .expect("a valid chain");
        for seed in seeds {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
            let inputs: Vec<Tensor> = operands.iter().map(|t| random(&mut rng, t)).collect();
            let refs: Vec<&Tensor> = inputs.iter().collect();
            let got = kernel.run(&refs).expect("buffers of the compiled types");
            let want = per_node(operands, nodes, &inputs);
            assert!(
                got.bitwise_eq(&want),
                "{} (seed {seed}): {got:?} vs {want:?}",
                kernel.name()
            );
            // the rows split over threads: the same bytes
            let bytes: Vec<Vec<u8>> = inputs.iter().map(|t| t.to_le_bytes()).collect();
            let views: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
            for threads in [2, 3] {
                let mut out = vec![0u8; kernel.out_ty().byte_size()];
                kernel
                    .run_into_threads(&views, &mut out, threads)
                    .expect("buffers of the compiled types");
                assert_eq!(out, got.to_le_bytes(), "{threads} threads (seed {seed})");
            }
        }
    }

    /// Long rows are cut into sub-rows for the threads (a plain residual add: one row of
    /// 8192 → 16 of 512; a per-channel scale: 3 rows of 4096 → 24 of 512); the results stay
    /// those of the nodes one by one, on 1, 2 and 3 threads.
    #[test]
    fn split_rows_are_exact() {
        let shape = [1, 2, 64, 64];
        let a = quantized(DType::U8, &shape, 0.05, 7);
        let r = quantized(DType::I8, &shape, 0.04, -3);
        let mut nodes = dequantized_sum(&shape);
        nodes.push(node(
            ChainOp::Activation(Activation::Relu),
            &[Node(2)],
            f32_ty(&shape),
        ));
        nodes.push(node(
            ChainOp::Quantize,
            &[Node(3)],
            quantized(DType::U8, &shape, 0.06, 0),
        ));
        let kernel = ElementwiseChainKernel::compile(
            &[a.clone(), r.clone()],
            &nodes,
            &JitOptions::default(),
        )
        .expect("a valid chain");
        assert_eq!(kernel.rows, 16);
        check(&[a, r], &nodes, 0..2);
        let shape = [1, 3, 64, 64];
        let operands = [f32_ty(&shape), f32_ty(&[1, 3, 1, 1])];
        let nodes = [node(
            ChainOp::Binary(BinaryOp::Mul),
            &[Operand(0), Operand(1)],
            f32_ty(&shape),
        )];
        let kernel = ElementwiseChainKernel::compile(&operands, &nodes, &JitOptions::default())
            .expect("a valid chain");
        assert_eq!(kernel.rows, 24);
        check(&operands, &nodes, 0..2);
    }

    fn node(op: ChainOp, args: &[ChainArg], out_ty: TensorType) -> ChainNode {
        ChainNode {
            op,
            args: args.to_vec(),
            out_ty,
        }
    }

    use ChainArg::{Node, Operand};

    /// `dequantize(operand 0) + dequantize(operand 1)` (nodes 0, 1, 2) over `shape`.
    fn dequantized_sum(shape: &[usize]) -> Vec<ChainNode> {
        vec![
            node(ChainOp::Dequantize, &[Operand(0)], f32_ty(shape)),
            node(ChainOp::Dequantize, &[Operand(1)], f32_ty(shape)),
            node(
                ChainOp::Binary(BinaryOp::Add),
                &[Node(0), Node(1)],
                f32_ty(shape),
            ),
        ]
    }

    /// `qconv → u8 → dequantize → hard_swish → quantize → u8`, with a row of 7·9 = 63
    /// elements (a 3-element scalar tail), into u8 and into i8.
    #[test]
    fn dequantize_hard_swish_quantize_is_exact() {
        let shape = [1, 5, 7, 9];
        for out_dtype in [DType::U8, DType::I8] {
            let x = quantized(DType::U8, &shape, 0.071, 121);
            let nodes = [
                node(ChainOp::Dequantize, &[Operand(0)], f32_ty(&shape)),
                node(
                    ChainOp::Activation(Activation::HardSwish),
                    &[Node(0)],
                    f32_ty(&shape),
                ),
                node(
                    ChainOp::Quantize,
                    &[Node(1)],
                    quantized(
                        out_dtype,
                        &shape,
                        0.043,
                        if out_dtype == DType::U8 { 9 } else { -3 },
                    ),
                ),
            ];
            check(&[x], &nodes, 0..4);
        }
    }

    /// `quantize(dequantize(a: u8) + dequantize(b: i8))` into i8, and the ShuffleNet
    /// residual `relu(dequantize(a) + dequantize(b))` into f32.
    #[test]
    fn dequantized_sums_are_exact() {
        let shape = [2, 3, 5, 5];
        let a = quantized(DType::U8, &shape, 0.02, 130);
        let b = quantized(DType::I8, &shape, 0.035, -7);
        let sum = dequantized_sum(&shape);
        let mut quantized_sum = sum.to_vec();
        quantized_sum.push(node(
            ChainOp::Quantize,
            &[Node(2)],
            quantized(DType::I8, &shape, 0.05, 4),
        ));
        check(&[a.clone(), b.clone()], &quantized_sum, 0..3);
        let mut relu_sum = sum.to_vec();
        relu_sum.push(node(
            ChainOp::Activation(Activation::Relu),
            &[Node(2)],
            f32_ty(&shape),
        ));
        check(&[a, b], &relu_sum, 0..3);
    }

    /// Broadcast operands: a per-channel scale `[1, C, 1, 1]` (as `x · hard_sigmoid(se)`),
    /// a lower-rank `[C, 1, W]` and a row `[W]`, through sub, mul, div, clip and a
    /// quantize into u8.
    #[test]
    fn broadcast_operands_are_exact() {
        let shape = [1, 6, 4, 7];
        let operands = [
            f32_ty(&shape),
            f32_ty(&[1, 6, 1, 1]),
            f32_ty(&[6, 1, 7]),
            f32_ty(&[7]),
        ];
        let nodes = [
            node(
                ChainOp::Binary(BinaryOp::Mul),
                &[Operand(0), Operand(1)],
                f32_ty(&shape),
            ),
            node(
                ChainOp::Binary(BinaryOp::Sub),
                &[Operand(2), Node(0)],
                f32_ty(&shape),
            ),
            node(
                ChainOp::Binary(BinaryOp::Div),
                &[Node(1), Operand(3)],
                f32_ty(&shape),
            ),
            node(
                ChainOp::Activation(Activation::Clip {
                    min: -3.0,
                    max: 6.0,
                }),
                &[Node(2)],
                f32_ty(&shape),
            ),
            node(
                ChainOp::Quantize,
                &[Node(3)],
                quantized(DType::U8, &shape, 0.07, 40),
            ),
        ];
        check(&operands, &nodes, 0..4);
    }

    /// A per-channel broadcast over rows long enough for the 16-element main step (74 =
    /// 4·16 + 2·4 + 2), into f32 and into i8.
    #[test]
    fn long_broadcast_rows_are_exact() {
        let shape = [1, 3, 2, 37];
        let operands = [f32_ty(&shape), f32_ty(&[1, 3, 1, 1])];
        let scaled = [
            node(
                ChainOp::Binary(BinaryOp::Mul),
                &[Operand(0), Operand(1)],
                f32_ty(&shape),
            ),
            node(
                ChainOp::Activation(Activation::Relu),
                &[Node(0)],
                f32_ty(&shape),
            ),
        ];
        check(&operands, &scaled, 0..3);
        let mut quantized_scaled = scaled.to_vec();
        quantized_scaled.push(node(
            ChainOp::Quantize,
            &[Node(1)],
            quantized(DType::I8, &shape, 0.09, 3),
        ));
        check(&operands, &quantized_scaled, 0..3);
    }

    /// Quantizes of f32 operands through value-preserving activations, hitting ties
    /// (rounded half to even) and saturating far-off values; a divide by the scale is not a
    /// multiply by its reciprocal.
    #[test]
    fn quantize_ties_are_exact() {
        let shape = [2, 45];
        for (act, out_ty) in [
            (Activation::Relu, quantized(DType::U8, &shape, 0.03, 3)),
            (
                Activation::LeakyRelu { alpha: 1.0 },
                quantized(DType::I8, &shape, 0.07, -1),
            ),
            (
                Activation::Clip {
                    min: -1e9,
                    max: 1e9,
                },
                quantized(DType::I8, &shape, 0.03, 0),
            ),
        ] {
            let nodes = [
                node(ChainOp::Activation(act), &[Operand(0)], f32_ty(&shape)),
                node(ChainOp::Quantize, &[Node(0)], out_ty),
            ];
            check(&[f32_ty(&shape)], &nodes, 0..4);
        }
    }

    /// A quantize feeding a dequantize inside the chain (the integer stays in a register),
    /// an operand read by two nodes, a broadcast operand added after the requantization,
    /// and the exp-based activations.
    #[test]
    fn requantize_shared_operand_and_transcendental_activations_are_exact() {
        let shape = [3, 11];
        let operands = [f32_ty(&shape), f32_ty(&[3, 1])];
        let q = quantized(DType::I8, &shape, 0.03, -5);
        let nodes = [
            node(
                ChainOp::Activation(Activation::Sigmoid),
                &[Operand(0)],
                f32_ty(&shape),
            ),
            node(
                ChainOp::Binary(BinaryOp::Mul),
                &[Operand(0), Node(0)],
                f32_ty(&shape),
            ),
            node(ChainOp::Quantize, &[Node(1)], q),
            node(ChainOp::Dequantize, &[Node(2)], f32_ty(&shape)),
            node(
                ChainOp::Binary(BinaryOp::Add),
                &[Node(3), Operand(1)],
                f32_ty(&shape),
            ),
            node(
                ChainOp::Activation(Activation::Tanh),
                &[Node(4)],
                f32_ty(&shape),
            ),
            node(
                ChainOp::Activation(Activation::LeakyRelu { alpha: 0.1 }),
                &[Node(5)],
                f32_ty(&shape),
            ),
            node(
                ChainOp::Activation(Activation::HardSigmoid {
                    alpha: 0.2,
                    beta: 0.5,
                }),
                &[Node(6)],
                f32_ty(&shape),
            ),
        ];
        check(&operands[..1], &nodes[..4], 0..3);
        check(&operands, &nodes, 0..3);
        // a node of another layout than the output (work repeated per element) is refused
        let mut wide = nodes.to_vec();
        wide.insert(
            4,
            node(
                ChainOp::Activation(Activation::Relu),
                &[Operand(1)],
                f32_ty(&[3, 1]),
            ),
        );
        wide[5].args[1] = Node(4);
        for later in &mut wide[6..] {
            for arg in &mut later.args {
                if let Node(j) = arg {
                    *j += 1;
                }
            }
        }
        let err = ElementwiseChainKernel::compile(&operands, &wide, &JitOptions::default())
            .expect_err("a node of another layout");
        assert!(err.to_string().contains("not laid out"), "{err}");
    }

    #[test]
    fn invalid_chains_are_errors() {
        let shape = [2, 4];
        let options = JitOptions::default();
        let per_axis = TensorType::new(DType::U8, shape.to_vec()).with_quant(Quant::PerAxis {
            axis: 0,
            scales: vec![0.1, 0.2],
            zero_points: vec![0, 0],
        });
        let dequantize = [node(ChainOp::Dequantize, &[Operand(0)], f32_ty(&shape))];
        let err = ElementwiseChainKernel::compile(&[per_axis], &dequantize, &options)
            .expect_err("per-axis quantization");
        assert!(err.to_string().contains("per axis"), "{err}");
        let add = [node(
            ChainOp::Binary(BinaryOp::Add),
            &[Operand(0), Operand(1)],
            f32_ty(&shape),
        )];
        let err = ElementwiseChainKernel::compile(&[f32_ty(&shape), f32_ty(&[3])], &add, &options)
            .expect_err("shapes that do not broadcast");
        assert!(err.to_string().contains("broadcast"), "{err}");
        let kernel =
            ElementwiseChainKernel::compile(&[f32_ty(&shape), f32_ty(&[4])], &add, &options)
                .expect("a valid chain");
        let mut out = vec![0u8; 32];
        let err = kernel
            .run_into(&[&[0u8; 32], &[0u8; 12]], &mut out)
            .expect_err("a short operand");
        assert!(err.to_string().contains("expected"), "{err}");
    }
}
