//! Resize (`Op::Resize`), every mode, coordinate transform and nearest mode of
//! `kiln-interp`'s resize, bit-exact with it; index tables and weights computed at compile
//! time.
//!
//! - *nearest* selects, so it runs on any dtype (u8/i8 quantized values included) as a
//!   gather: the output is `rows × cols` (`cols` the last axis); per row a table gives the
//!   source row's byte offset (the other axes' nearest indices), per column the offset in
//!   the row. `tf_crop_and_resize` positions outside the input take the extrapolation value
//!   (converted to the dtype as the interpreter does: floats round, integers truncate and
//!   saturate).
//! - *linear* and *cubic* (antialiased or not, `exclude_outside`) run on f32 as the
//!   interpreter does: separable, one pass per axis that changes, carried in f64 and rounded
//!   to f32 once at the end. A pass computes each output row as `0 + w₀·s₀ + w₁·s₁ + …` in
//!   tap order, in f64, with the interpreter's taps and weights (its code, evaluated here at
//!   compile time): the same IEEE operations in the same order, so the same bits. Rows are
//!   contiguous along the axes after the pass's one, so a pass runs two f64 lanes per
//!   vector along them.
//!
//! Coordinates map back to input coordinates in f32 with onnxruntime's formulas; the
//! coordinate, tap and weight math is the interpreter's own (`kiln_ir::resize_math`).

// AOT: `into_aot` of this kernel (crate::aot).
#[path = "aot/parts/resize.rs"]
mod aot_parts;

use crate::clif::{counted_loop, mem, mem_aligned, scaled};
use crate::jit::{kernel_identity, Jit, JitOptions, KernelCode};
use crate::qconv::AlignedBytes;
use crate::tensor_io::{bad_buffer, shape_name, tensor_data_from_le_bytes};
use crate::CodegenError;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, ConstantData, Function, InstBuilder, Type, Value};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::resize_math::{axis_taps, is_identity_axis, nearest_maps, roi, Taps};
use kiln_ir::{CoordTransform, DType, ResizeAttrs, ResizeMode, Tensor, TensorType};

const OP: &str = "resize";

/// A table entry for a position outside the input (`tf_crop_and_resize`).
const FILL: u32 = u32::MAX;

/// The extrapolation value as the bits of a `dtype` element (little-endian, `size` bytes
/// used), converted as the interpreter's `from_f64_saturating`: floats round to nearest,
/// integers truncate toward zero and saturate, bool is `!= 0`.
pub(crate) fn fill_bits(dtype: DType, v: f64) -> u64 {
    match dtype {
        DType::F32 => (v as f32).to_bits() as u64,
        DType::F16 => half::f16::from_f64(v).to_bits() as u64,
        DType::I8 => (v as i8) as u8 as u64,
        DType::U8 => (v as u8) as u64,
        DType::I32 => (v as i32) as u32 as u64,
        DType::I64 => (v as i64) as u64,
        DType::Bool => u64::from(v != 0.0),
    }
}

/// The integer type moving one element of `bytes` bytes.
fn element_type(bytes: usize) -> Type {
    match bytes {
        1 => types::I8,
        2 => types::I16,
        4 => types::I32,
        _ => types::I64,
    }
}

/// One interpolation pass: `outer × [in_len → out_len] × inner` f64 elements.
#[derive(Clone, Debug)]
struct Pass {
    outer: usize,
    out_len: usize,
    inner: usize,
    /// Source bytes per outer block.
    src_block: usize,
    /// Taps per output position.
    taps: usize,
    /// Byte offset of this pass's table in the tables blob: per output position an 8-byte
    /// flag (1: extrapolate), then per tap the source row's byte offset (u64) and weight
    /// (f64).
    table: usize,
    extrapolates: bool,
}

impl Pass {
    fn entry_bytes(&self) -> usize {
        8 + 16 * self.taps
    }
}

/// What the compiled function does.
#[derive(Clone, Debug)]
enum Plan {
    /// Nearest: `rows × cols` elements of `elem_bytes`; tables: row offsets then column
    /// offsets (u32 bytes, [`FILL`] outside the input).
    Gather {
        rows: usize,
        cols: usize,
        elem_bytes: usize,
        fill: u64,
        fills: bool,
        /// Every column is each input column twice (`cols[j] = j / 2`, nothing filled) and
        /// elements are 1, 2 or 4 bytes: a row is 16 input bytes → two output vectors by
        /// byte shuffles (a 2× nearest upsample, FPN-style), not one element at a time.
        doubled: bool,
    },
    /// Linear / cubic on f32: promote, the passes (ping-pong between two f64 buffers of
    /// `buffer_elems`), demote.
    Interpolate {
        in_elems: usize,
        out_elems: usize,
        passes: Vec<Pass>,
        buffer_elems: usize,
        extrapolation: f64,
    },
}

/// `(tables, x, out, scratch)`.
type ResizeFn = unsafe extern "C" fn(*const u8, *const u8, *mut u8, *mut u8);

/// A compiled Resize.
pub struct ResizeKernel {
    dtype: DType,
    x_shape: Vec<usize>,
    out_shape: Vec<usize>,
    plan: Plan,
    tables: AlignedBytes,
    function: ResizeFn,
    /// Declared last: `function` points into it.
    code: KernelCode,
}

kernel_identity!(ResizeKernel, code);

/// Working memory of a [`ResizeKernel`]: the two f64 buffers of an interpolating resize
/// (none for nearest).
#[derive(Debug)]
pub struct ResizeScratch {
    bytes: AlignedBytes,
}

impl ResizeKernel {
    /// Compile a Resize node: `x_ty` any dtype for nearest, f32 (not quantized) for linear
    /// and cubic; `out_ty` of `x_ty`'s dtype and shape `attrs.sizes`.
    pub fn compile(
        attrs: &ResizeAttrs,
        x_ty: &TensorType,
        out_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<ResizeKernel, CodegenError> {
        let invalid = |reason: String| CodegenError::InvalidOp { op: OP, reason };
        let shape = &x_ty.shape;
        let rank = shape.len();
        if attrs.sizes.len() != rank || attrs.scales.len() != rank {
            return Err(invalid(format!(
                "sizes {:?} and scales {:?} must have one entry per axis of {shape:?}",
                attrs.sizes, attrs.scales
            )));
        }
        if let Some(s) = attrs.scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(invalid(format!(
                "scale {s} is not a positive finite number"
            )));
        }
        let crop = attrs.coord == CoordTransform::TfCropAndResize;
        if crop && attrs.roi.len() != 2 * rank {
            return Err(invalid(format!(
                "tf_crop_and_resize needs a roi of {} values, got {:?}",
                2 * rank,
                attrs.roi
            )));
        }
        if shape.contains(&0) && attrs.sizes.iter().any(|&s| s > 0) {
            return Err(invalid(format!(
                "cannot resize the empty tensor {shape:?} to {:?}",
                attrs.sizes
            )));
        }
        if out_ty.shape != attrs.sizes || out_ty.dtype != x_ty.dtype {
            return Err(invalid(format!(
                "output {out_ty}, the resize gives {}{:?}",
                x_ty.dtype, attrs.sizes
            )));
        }
        let identity = |d: usize| is_identity_axis(attrs, d, shape[d]);
        let (plan, blob) = if attrs.mode == ResizeMode::Nearest {
            if attrs.antialias {
                return Err(invalid(
                    "antialias is not defined for nearest resize".to_string(),
                ));
            }
            let maps = nearest_maps(attrs, shape);
            gather_plan(x_ty, &maps, attrs.extrapolation_value as f64)
        } else {
            if x_ty.quant.is_some() || x_ty.dtype != DType::F32 {
                return Err(CodegenError::Unsupported {
                    op: OP,
                    reason: format!(
                        "{:?} resize of {x_ty} (defined on f32; a quantized tensor needs a \
                         dequantize first)",
                        attrs.mode
                    ),
                });
            }
            let mut current = shape.clone();
            let mut passes = Vec::new();
            let mut blob = Vec::new();
            for d in 0..rank {
                if identity(d) {
                    continue;
                }
                let taps = axis_taps(attrs, d, current[d], attrs.sizes[d], roi(attrs, d));
                passes.push(interpolation_pass(&current, d, &taps, &mut blob));
                current[d] = attrs.sizes[d];
            }
            // every stage's elements: the input, then each pass's output
            let mut stage = shape.clone();
            let mut buffer_elems = stage.iter().product::<usize>();
            for d in (0..rank).filter(|&d| !identity(d)) {
                stage[d] = attrs.sizes[d];
                buffer_elems = buffer_elems.max(stage.iter().product());
            }
            let plan = Plan::Interpolate {
                in_elems: shape.iter().product(),
                out_elems: attrs.sizes.iter().product(),
                passes,
                buffer_elems,
                extrapolation: attrs.extrapolation_value as f64,
            };
            (plan, blob)
        };
        if blob.len() > i32::MAX as usize
            || out_ty.byte_size().max(x_ty.byte_size()) > u32::MAX as usize / 2
        {
            return Err(CodegenError::Unsupported {
                op: OP,
                reason: "tensors exceed the kernel's 32-bit offsets".to_string(),
            });
        }
        let mut jit = Jit::host(options)?;
        let func = build_function(&jit, &plan);
        let name = format!("resize_{}_{}", x_ty.dtype, shape_name(&attrs.sizes));
        // SAFETY: `build_function` builds four pointer parameters and no results —
        // `ResizeFn`; the kernel owns `jit`, so the code outlives every call.
        let function: ResizeFn = unsafe { jit.compile_as(&name, func)? };
        Ok(ResizeKernel {
            dtype: x_ty.dtype,
            x_shape: shape.clone(),
            out_shape: attrs.sizes.clone(),
            plan,
            tables: AlignedBytes::from_bytes(&blob),
            function,
            code: KernelCode::new(jit, name),
        })
    }

    pub fn output_shape(&self) -> &[usize] {
        &self.out_shape
    }

    /// How the compiled function works: `"gather"` (nearest, one element at a time through
    /// the tables), `"gather-doubled"` (nearest ×2 along the last axis, byte shuffles) or
    /// `"interpolate"` (linear/cubic passes in f64).
    pub fn strategy(&self) -> &'static str {
        match self.plan {
            Plan::Gather { doubled: true, .. } => "gather-doubled",
            Plan::Gather { .. } => "gather",
            Plan::Interpolate { .. } => "interpolate",
        }
    }

    fn scratch_bytes(&self) -> usize {
        match &self.plan {
            Plan::Gather { .. } => 16,
            Plan::Interpolate { buffer_elems, .. } => (16 * buffer_elems).max(16),
        }
    }

    pub fn new_scratch(&self) -> ResizeScratch {
        ResizeScratch {
            bytes: AlignedBytes::zeroed(self.scratch_bytes()),
        }
    }

    /// Resize `x` (the input's elements as little-endian bytes, as many as its type
    /// holds) into `out` (the output's bytes).
    pub fn run_into(
        &self,
        x: &[u8],
        out: &mut [u8],
        scratch: &mut ResizeScratch,
    ) -> Result<(), CodegenError> {
        let size = self.dtype.size_bytes();
        let (x_len, out_len) = (
            size * self.x_shape.iter().product::<usize>(),
            size * self.out_shape.iter().product::<usize>(),
        );
        if x.len() != x_len
            || out.len() != out_len
            || scratch.bytes.as_slice().len() != self.scratch_bytes()
        {
            return Err(bad_buffer(
                self.name(),
                format!(
                    "{} → {} bytes, scratch {}; expected {x_len} → {out_len}, scratch {}",
                    x.len(),
                    out.len(),
                    scratch.bytes.as_slice().len(),
                    self.scratch_bytes()
                ),
            ));
        }
        // SAFETY: valid while `self.code` lives. The function reads the tables built for
        // this plan; gathers read `x` at row + column offsets of elements inside the input
        // (the maps clamp every index into its axis) and write the `out_len` bytes of `out`;
        // interpolation reads the `x_len` bytes of `x`, the tables' row offsets inside the
        // current stage, and writes the two f64 buffers of the scratch (each of
        // `buffer_elems`, the largest stage) and `out`. Lengths are checked above.
        unsafe {
            (self.function)(
                self.tables.as_slice().as_ptr(),
                x.as_ptr(),
                out.as_mut_ptr(),
                scratch.bytes.as_mut_slice().as_mut_ptr(),
            )
        };
        Ok(())
    }

    /// Resize a tensor (allocates output and scratch).
    pub fn run(&self, x: &Tensor) -> Result<Tensor, CodegenError> {
        if x.shape() != self.x_shape.as_slice() || x.dtype() != self.dtype {
            return Err(bad_buffer(
                self.name(),
                format!(
                    "input {}{:?}, expected {}{:?}",
                    x.dtype(),
                    x.shape(),
                    self.dtype,
                    self.x_shape
                ),
            ));
        }
        let mut out = vec![0u8; self.dtype.size_bytes() * self.out_shape.iter().product::<usize>()];
        self.run_into(&x.to_le_bytes(), &mut out, &mut self.new_scratch())?;
        let data = tensor_data_from_le_bytes(self.dtype, &out);
        Tensor::new(self.out_shape.clone(), data)
            .map_err(|e| bad_buffer(self.name(), e.to_string()))
    }
}

/// The gather of a nearest resize with per-axis maps (`None`: extrapolate): rows are all
/// axes but the last, columns the last one.
fn gather_plan(
    x_ty: &TensorType,
    maps: &[Vec<Option<usize>>],
    extrapolation: f64,
) -> (Plan, Vec<u8>) {
    let elem_bytes = x_ty.dtype.size_bytes();
    let shape = &x_ty.shape;
    let rank = shape.len();
    // element strides of the input
    let mut strides = vec![1usize; rank];
    for d in (0..rank.saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    let mut rows: Vec<Option<usize>> = vec![Some(0)];
    for d in 0..rank.saturating_sub(1) {
        let stride = strides[d];
        rows = rows
            .iter()
            .flat_map(|&base| {
                maps[d]
                    .iter()
                    .map(move |m| base.zip(*m).map(|(b, i)| b + i * stride))
            })
            .collect();
    }
    let cols: Vec<Option<usize>> = match maps.last() {
        Some(last) => last.clone(),
        None => vec![Some(0)],
    };
    let offset = |e: Option<usize>| e.map_or(FILL, |e| (e * elem_bytes) as u32);
    let fills = rows.iter().chain(&cols).any(Option::is_none);
    let blob: Vec<u8> = rows
        .iter()
        .chain(&cols)
        .flat_map(|&e| offset(e).to_le_bytes())
        .collect();
    let doubled = matches!(elem_bytes, 1 | 2 | 4)
        && !cols.is_empty()
        && cols.len().is_multiple_of(2)
        && cols.iter().enumerate().all(|(j, &c)| c == Some(j / 2));
    let plan = Plan::Gather {
        rows: if cols.is_empty() { 0 } else { rows.len() },
        cols: cols.len(),
        elem_bytes,
        fill: fill_bits(x_ty.dtype, extrapolation),
        fills,
        doubled,
    };
    (plan, blob)
}

/// The pass interpolating axis `d` of a stage of shape `shape` with `taps`; its table is
/// appended to `blob` (8-byte aligned).
fn interpolation_pass(shape: &[usize], d: usize, taps: &[Taps], blob: &mut Vec<u8>) -> Pass {
    let inner: usize = shape[d + 1..].iter().product();
    let footprint = taps
        .iter()
        .find_map(|t| match t {
            Taps::Weighted(w) => Some(w.len()),
            Taps::Extrapolate => None,
        })
        .unwrap_or(0);
    let table = blob.len();
    let mut extrapolates = false;
    for t in taps {
        match t {
            Taps::Extrapolate => {
                extrapolates = true;
                blob.extend_from_slice(&1u64.to_le_bytes());
                blob.resize(blob.len() + 16 * footprint, 0);
            }
            Taps::Weighted(w) => {
                debug_assert_eq!(w.len(), footprint, "an axis's taps share one footprint");
                blob.extend_from_slice(&0u64.to_le_bytes());
                for &(i, weight) in w {
                    blob.extend_from_slice(&((8 * i * inner) as u64).to_le_bytes());
                    blob.extend_from_slice(&weight.to_le_bytes());
                }
            }
        }
    }
    Pass {
        outer: shape[..d].iter().product(),
        out_len: taps.len(),
        inner,
        src_block: 8 * shape[d] * inner,
        taps: footprint,
        table,
        extrapolates,
    }
}

fn build_function(jit: &Jit, plan: &Plan) -> Function {
    jit.define_kernel(4, |b, p| {
        let (tables, x, out, scratch) = (p[0], p[1], p[2], p[3]);
        match plan {
            Plan::Gather {
                rows,
                cols,
                elem_bytes,
                fill,
                fills,
                doubled,
            } => emit_gather(
                b,
                *rows,
                *cols,
                *elem_bytes,
                fills.then_some(*fill),
                *doubled,
                [tables, x, out],
            ),
            Plan::Interpolate {
                in_elems,
                out_elems,
                passes,
                buffer_elems,
                extrapolation,
            } => {
                let buffers = [
                    scratch,
                    b.ins().iadd_imm_u(scratch, (8 * buffer_elems) as i64),
                ];
                emit_convert(b, *in_elems, x, buffers[0], true);
                for (k, pass) in passes.iter().enumerate() {
                    let table = b.ins().iadd_imm_u(tables, pass.table as i64);
                    emit_pass(
                        b,
                        pass,
                        *extrapolation,
                        table,
                        buffers[k % 2],
                        buffers[(k + 1) % 2],
                    );
                }
                emit_convert(b, *out_elems, buffers[passes.len() % 2], out, false);
            }
        }
    })
}

/// `out[r][c] = x[row[r] + col[c]]`, or the fill bits where either table says [`FILL`]
/// (`fill` is `Some` only when some entry does).
fn emit_gather(
    b: &mut FunctionBuilder,
    rows: usize,
    cols: usize,
    elem_bytes: usize,
    fill: Option<u64>,
    doubled: bool,
    [tables, x, out]: [Value; 3],
) {
    let ty = element_type(elem_bytes);
    let ro = mem_aligned().with_readonly();
    let col_table = 4 * rows;
    // output vector h of a doubled 16-byte input vector: output byte k is byte r of
    // element p = (16·h + k) / size, which is input element p / 2
    let doubling_masks = [0usize, 1].map(|h| {
        let mask: Vec<u8> = (0..16)
            .map(|k| {
                let (p, r) = ((16 * h + k) / elem_bytes, k % elem_bytes);
                ((p / 2) * elem_bytes + r) as u8
            })
            .collect();
        b.func.dfg.immediates.push(ConstantData::from(mask))
    });
    counted_loop(b, rows, |b, r| {
        let entry = scaled(b, tables, r, 4);
        let row_off = b.ins().uload32(ro, entry, 0);
        let out_row = b.ins().imul_imm_u(r, (cols * elem_bytes) as i64);
        let out_row = b.ins().iadd(out, out_row);
        if doubled && fill.is_none() {
            let src_row = b.ins().iadd(x, row_off);
            let in_cols = cols / 2;
            let vectors = in_cols * elem_bytes / 16;
            counted_loop(b, vectors, |b, i| {
                let src = scaled(b, src_row, i, 16);
                let v = b.ins().load(types::I8X16, mem().with_readonly(), src, 0);
                let dst = scaled(b, out_row, i, 32);
                for (h, &mask) in doubling_masks.iter().enumerate() {
                    let d = b.ins().shuffle(v, v, mask);
                    b.ins().store(mem(), d, dst, 16 * h as i32);
                }
            });
            for j in vectors * 16 / elem_bytes..in_cols {
                let v = b
                    .ins()
                    .load(ty, mem().with_readonly(), src_row, (j * elem_bytes) as i32);
                for copy in 0..2 {
                    let at = ((2 * j + copy) * elem_bytes) as i32;
                    b.ins().store(mem(), v, out_row, at);
                }
            }
            return;
        }
        let Some(fill) = fill else {
            let src_row = b.ins().iadd(x, row_off);
            counted_loop(b, cols, |b, c| {
                let entry = scaled(b, tables, c, 4);
                let col_off = b.ins().uload32(ro, entry, col_table as i32);
                let addr = b.ins().iadd(src_row, col_off);
                let v = b.ins().load(ty, mem().with_readonly(), addr, 0);
                let dst = scaled(b, out_row, c, elem_bytes);
                b.ins().store(mem(), v, dst, 0);
            });
            return;
        };
        // an entry of FILL reads element 0 (the input is not empty: the output is not)
        // and stores the fill instead
        let fill = b.ins().iconst(ty, fill as i64);
        let row_fills = b.ins().icmp_imm_u(IntCC::Equal, row_off, FILL as i64);
        let zero = b.ins().iconst(types::I64, 0);
        let row_off = b.ins().select(row_fills, zero, row_off);
        let src_row = b.ins().iadd(x, row_off);
        counted_loop(b, cols, |b, c| {
            let entry = scaled(b, tables, c, 4);
            let col_off = b.ins().uload32(ro, entry, col_table as i32);
            let col_fills = b.ins().icmp_imm_u(IntCC::Equal, col_off, FILL as i64);
            let col_off = b.ins().select(col_fills, zero, col_off);
            let addr = b.ins().iadd(src_row, col_off);
            let v = b.ins().load(ty, mem().with_readonly(), addr, 0);
            let fills = b.ins().bor(row_fills, col_fills);
            let v = b.ins().select(fills, fill, v);
            let dst = scaled(b, out_row, c, elem_bytes);
            b.ins().store(mem(), v, dst, 0);
        });
    });
}

/// Convert `elems` elements: f32 → f64 (`promote`) or f64 → f32 (round to nearest).
fn emit_convert(b: &mut FunctionBuilder, elems: usize, src: Value, dst: Value, promote: bool) {
    let rw = mem();
    counted_loop(b, elems, |b, i| {
        if promote {
            let from = scaled(b, src, i, 4);
            let v = b.ins().load(types::F32, rw, from, 0);
            let v = b.ins().fpromote(types::F64, v);
            let to = scaled(b, dst, i, 8);
            b.ins().store(rw, v, to, 0);
        } else {
            let from = scaled(b, src, i, 8);
            let v = b.ins().load(types::F64, rw, from, 0);
            let v = b.ins().fdemote(types::F32, v);
            let to = scaled(b, dst, i, 4);
            b.ins().store(rw, v, to, 0);
        }
    });
}

/// One pass from f64 `src` to f64 `dst`: per outer block and output position `t`, the row
/// of `inner` elements `0 + Σ w·src_row(i)` in tap order (F64X2 pairs, then a last single
/// element through the scalar form of the same operations), or the extrapolation value.
fn emit_pass(
    b: &mut FunctionBuilder,
    pass: &Pass,
    extrapolation: f64,
    table: Value,
    src: Value,
    dst: Value,
) {
    let ro = mem_aligned().with_readonly();
    let rw = mem();
    let entry_bytes = pass.entry_bytes();
    let inner = pass.inner;
    let acc2 = b.declare_var(types::F64X2);
    let acc1 = b.declare_var(types::F64);
    counted_loop(b, pass.outer, |b, o| {
        let src_o = scaled(b, src, o, pass.src_block);
        let dst_o = scaled(b, dst, o, 8 * pass.out_len * inner);
        counted_loop(b, pass.out_len, |b, t| {
            let entry = scaled(b, table, t, entry_bytes);
            let dst_t = scaled(b, dst_o, t, 8 * inner);
            let interpolate = |b: &mut FunctionBuilder| {
                // one output element (width 1) or a pair (width 2) at byte offset `at`
                let emit = |b: &mut FunctionBuilder, at: Value, width: usize| {
                    let (ty, acc) = if width == 2 {
                        (types::F64X2, acc2)
                    } else {
                        (types::F64, acc1)
                    };
                    let zero = b.ins().f64const(0.0);
                    let zero = if width == 2 {
                        b.ins().splat(types::F64X2, zero)
                    } else {
                        zero
                    };
                    b.def_var(acc, zero);
                    counted_loop(b, pass.taps, |b, k| {
                        let tap = scaled(b, entry, k, 16);
                        let row = b.ins().load(types::I64, ro, tap, 8);
                        let w = b.ins().load(types::F64, ro, tap, 16);
                        let w = if width == 2 {
                            b.ins().splat(types::F64X2, w)
                        } else {
                            w
                        };
                        let addr = b.ins().iadd(src_o, row);
                        let addr = b.ins().iadd(addr, at);
                        let s = b.ins().load(ty, rw, addr, 0);
                        let product = b.ins().fmul(w, s);
                        let sum = b.use_var(acc);
                        let sum = b.ins().fadd(sum, product);
                        b.def_var(acc, sum);
                    });
                    let v = b.use_var(acc);
                    let to = b.ins().iadd(dst_t, at);
                    b.ins().store(rw, v, to, 0);
                };
                counted_loop(b, inner / 2, |b, j| {
                    let at = b.ins().ishl_imm_u(j, 4);
                    emit(b, at, 2);
                });
                if inner % 2 == 1 {
                    let at = b.ins().iconst(types::I64, (8 * (inner - 1)) as i64);
                    emit(b, at, 1);
                }
            };
            if !pass.extrapolates {
                interpolate(b);
                return;
            }
            let (fill_block, compute, done) =
                (b.create_block(), b.create_block(), b.create_block());
            let flag = b.ins().load(types::I64, ro, entry, 0);
            b.ins().brif(flag, fill_block, &[], compute, &[]);
            b.switch_to_block(fill_block);
            let value = b.ins().f64const(extrapolation);
            counted_loop(b, inner, |b, j| {
                let to = scaled(b, dst_t, j, 8);
                b.ins().store(rw, value, to, 0);
            });
            b.ins().jump(done, &[]);
            b.switch_to_block(compute);
            interpolate(b);
            b.ins().jump(done, &[]);
            b.switch_to_block(done);
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The extrapolation value converts as the interpreter's `from_f64_saturating`.
    #[test]
    fn fill_bits_truncate_and_saturate() {
        assert_eq!(fill_bits(DType::U8, 300.7), 255);
        assert_eq!(fill_bits(DType::I8, -3.9), (-3i8) as u8 as u64);
        assert_eq!(fill_bits(DType::F32, 0.5), 0.5f32.to_bits() as u64);
        assert_eq!(fill_bits(DType::Bool, -0.0), 0);
    }

    /// Nearest ×2 along the last axis of a [2, 2] tensor: rows point at the input rows,
    /// columns repeat each element (byte offsets of f32 elements).
    #[test]
    fn gather_tables_for_a_nearest_upsample() {
        let ty = TensorType::new(DType::F32, vec![2, 2]);
        let maps = vec![
            vec![Some(0), Some(1)],
            vec![Some(0), Some(0), Some(1), Some(1)],
        ];
        let (plan, blob) = gather_plan(&ty, &maps, 0.0);
        assert!(matches!(
            plan,
            Plan::Gather {
                rows: 2,
                cols: 4,
                elem_bytes: 4,
                fills: false,
                ..
            }
        ));
        let words: Vec<u32> = blob
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(words, [0, 8, 0, 0, 4, 4]);
    }
}
