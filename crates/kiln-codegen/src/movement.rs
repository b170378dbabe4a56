//! Data movement of any dtype (Transpose, Slice, Split, Pad, Gather with constant indices)
//! as one JIT'd "gather by per-axis offset plan": output element `(i_0, .., i_{r-1})`
//! reads the input byte at `base + Σ_d src_d(i_d)`, where each axis's source offset is
//! affine (`i · stride`, strides may be negative) or read from a table built at compile
//! time (Pad's reflect/edge/wrap maps, Gather's indices). Constant padding first fills the
//! output with the pad value, then copies the input into its box. Exact by construction:
//! bytes are moved, never computed.

use crate::clif::{at, counted_loop, mem, scaled};
use crate::jit::{kernel_identity, Jit, JitOptions, KernelCode};
use crate::qconv::AlignedBytes;
use crate::resize::fill_bits;
use crate::tensor_io::{bad_buffer, shape_name, tensor_data_from_le_bytes};
use crate::CodegenError;
use cranelift_codegen::ir::{types, Function, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::{DType, PadMode, SliceAxis, Tensor, TensorData, TensorType};

/// `(x, table, out)`.
type MoveFn = unsafe extern "C" fn(*const u8, *const u8, *mut u8);

/// Where an output axis reads along the input, in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    /// Index `i` reads `i · stride` bytes further.
    Affine(i64),
    /// Index `i` reads `table[i]` bytes further.
    Table(Vec<i64>),
}

/// One axis of the copied box: `count` positions, read per [`Source`], written `dst_stride`
/// bytes apart.
#[derive(Clone, Debug)]
struct Axis {
    count: usize,
    src: Source,
    dst_stride: usize,
}

/// A whole data-movement op, before simplification.
struct Plan {
    elem: usize,
    /// Byte offset of the box's first source element.
    src_base: i64,
    /// Byte offset of the box's first output element.
    dst_base: usize,
    axes: Vec<Axis>,
    /// One element's bytes to fill the whole output with before copying (constant Pad).
    fill: Option<Vec<u8>>,
}

/// The loop nest that [`Plan::simplify`] leaves: the axes looped over (outermost first) and
/// the bytes each innermost step copies.
struct Nest {
    axes: Vec<Axis>,
    run: usize,
    /// Nothing is copied (an axis of extent 0).
    empty: bool,
}

impl Plan {
    /// Copy the box `axes` from the input's first element to the output's, no fill.
    fn copying(elem: usize, axes: Vec<Axis>) -> Plan {
        Plan {
            elem,
            src_base: 0,
            dst_base: 0,
            axes,
            fill: None,
        }
    }

    /// Row-major output strides of `shape` in bytes.
    fn dense_strides(shape: &[usize], elem: usize) -> Vec<usize> {
        let mut strides = vec![elem; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            strides[d] = strides[d + 1] * shape[d + 1];
        }
        strides
    }

    /// Drop axes of extent 1 (folding a table's single entry into the base), merge adjacent
    /// affine axes that stay adjacent in both input and output, and turn an innermost axis
    /// contiguous on both sides into one run of bytes.
    fn simplify(&mut self) -> Nest {
        if self.axes.iter().any(|a| a.count == 0) {
            return Nest {
                axes: Vec::new(),
                run: 0,
                empty: true,
            };
        }
        let mut axes: Vec<Axis> = Vec::new();
        for axis in std::mem::take(&mut self.axes) {
            if axis.count == 1 {
                if let Source::Table(t) = &axis.src {
                    self.src_base += t[0];
                }
                continue;
            }
            if let (Some(last), Source::Affine(s)) = (axes.last_mut(), &axis.src) {
                if let Source::Affine(outer) = last.src {
                    let n = axis.count as i64;
                    if outer == s * n && last.dst_stride == axis.dst_stride * axis.count {
                        last.count *= axis.count;
                        last.src = Source::Affine(*s);
                        last.dst_stride = axis.dst_stride;
                        continue;
                    }
                }
            }
            axes.push(axis);
        }
        let mut run = self.elem;
        if let Some(last) = axes.last() {
            if last.src == Source::Affine(self.elem as i64) && last.dst_stride == self.elem {
                run = self.elem * last.count;
                axes.pop();
            }
        }
        Nest {
            axes,
            run,
            empty: false,
        }
    }
}

/// A compiled data-movement op (one output).
pub struct MoveKernel {
    dtype: DType,
    out_shape: Vec<usize>,
    in_bytes: usize,
    out_bytes: usize,
    /// The fill pattern (16 bytes) and the axes' offset tables (i64).
    table: AlignedBytes,
    function: MoveFn,
    /// Declared last: `function` points into it.
    code: KernelCode,
}

kernel_identity!(MoveKernel, code);

fn invalid(op: &'static str, reason: String) -> CodegenError {
    CodegenError::InvalidOp { op, reason }
}

/// The output type must have `dtype` and `shape`.
fn check_output(
    op: &'static str,
    out_ty: &TensorType,
    dtype: DType,
    shape: &[usize],
) -> Result<(), CodegenError> {
    if out_ty.dtype != dtype || out_ty.shape != shape {
        return Err(invalid(
            op,
            format!("output {out_ty}, the op gives {dtype} {shape:?}"),
        ));
    }
    Ok(())
}

impl MoveKernel {
    /// Transpose `x_ty` by `perm` (output axis `d` is input axis `perm[d]`).
    pub fn compile_transpose(
        perm: &[usize],
        x_ty: &TensorType,
        out_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<MoveKernel, CodegenError> {
        const OP: &str = "transpose";
        let rank = x_ty.shape.len();
        let mut seen = vec![false; rank];
        if perm.len() != rank
            || perm
                .iter()
                .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
        {
            return Err(invalid(
                OP,
                format!("perm {perm:?} is not a permutation of rank {rank}"),
            ));
        }
        let shape: Vec<usize> = perm.iter().map(|&p| x_ty.shape[p]).collect();
        check_output(OP, out_ty, x_ty.dtype, &shape)?;
        let elem = x_ty.dtype.size_bytes();
        let in_strides = Plan::dense_strides(&x_ty.shape, elem);
        let out_strides = Plan::dense_strides(&shape, elem);
        let axes = perm
            .iter()
            .zip(&out_strides)
            .map(|(&p, &dst_stride)| Axis {
                count: x_ty.shape[p],
                src: Source::Affine(in_strides[p] as i64),
                dst_stride,
            })
            .collect();
        MoveKernel::build(OP, Plan::copying(elem, axes), x_ty, &shape, options)
    }

    /// Slice `x_ty` along `axes` (normalized as in the IR: output index `i` of an axis reads
    /// `start + i·step`).
    pub fn compile_slice(
        slices: &[SliceAxis],
        x_ty: &TensorType,
        out_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<MoveKernel, CodegenError> {
        MoveKernel::slice_as("slice", slices, x_ty, out_ty, options)
    }

    /// [`MoveKernel::compile_slice`] named (in errors and the kernel's name) `op`.
    fn slice_as(
        op: &'static str,
        slices: &[SliceAxis],
        x_ty: &TensorType,
        out_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<MoveKernel, CodegenError> {
        let rank = x_ty.shape.len();
        let elem = x_ty.dtype.size_bytes();
        let in_strides = Plan::dense_strides(&x_ty.shape, elem);
        let mut shape = x_ty.shape.clone();
        let mut src: Vec<i64> = in_strides.iter().map(|&s| s as i64).collect();
        let mut src_base = 0i64;
        for a in slices {
            if a.axis >= rank {
                return Err(invalid(
                    op,
                    format!("slice axis {} out of range for rank {rank}", a.axis),
                ));
            }
            if a.step == 0 {
                return Err(invalid(op, format!("slice step 0 on axis {}", a.axis)));
            }
            let dim = x_ty.shape[a.axis] as i64;
            // positions start, start+step, … strictly before end, in the step's direction
            let distance = if a.step > 0 {
                a.end - a.start
            } else {
                a.start - a.end
            };
            let len = (distance + a.step.abs() - 1)
                .div_euclid(a.step.abs())
                .max(0);
            if len > 0 {
                let last = a.start + (len - 1) * a.step;
                if a.start < 0 || a.start >= dim || last < 0 || last >= dim {
                    return Err(invalid(
                        op,
                        format!(
                            "slice {}..{} step {} runs outside axis {} of size {dim}",
                            a.start, a.end, a.step, a.axis
                        ),
                    ));
                }
                src_base += a.start * in_strides[a.axis] as i64;
            }
            shape[a.axis] = len as usize;
            src[a.axis] = a.step * in_strides[a.axis] as i64;
        }
        check_output(op, out_ty, x_ty.dtype, &shape)?;
        let out_strides = Plan::dense_strides(&shape, elem);
        let axes = (0..rank)
            .map(|d| Axis {
                count: shape[d],
                src: Source::Affine(src[d]),
                dst_stride: out_strides[d],
            })
            .collect();
        let plan = Plan {
            src_base,
            ..Plan::copying(elem, axes)
        };
        MoveKernel::build(op, plan, x_ty, &shape, options)
    }

    /// Split `x_ty` along `axis` into parts of `sizes`: one kernel per output, in order.
    pub fn compile_split(
        axis: usize,
        sizes: &[usize],
        x_ty: &TensorType,
        out_tys: &[&TensorType],
        options: &JitOptions,
    ) -> Result<Vec<MoveKernel>, CodegenError> {
        const OP: &str = "split";
        let rank = x_ty.shape.len();
        if axis >= rank {
            return Err(invalid(
                OP,
                format!("axis {axis} out of range for rank {rank}"),
            ));
        }
        if sizes.iter().sum::<usize>() != x_ty.shape[axis] || sizes.len() != out_tys.len() {
            return Err(invalid(
                OP,
                format!(
                    "split sizes {sizes:?} into {} outputs do not add up to axis {axis} of {:?}",
                    out_tys.len(),
                    x_ty.shape
                ),
            ));
        }
        let mut start = 0i64;
        let mut kernels = Vec::with_capacity(sizes.len());
        for (&size, out_ty) in sizes.iter().zip(out_tys) {
            let part = SliceAxis {
                axis,
                start,
                end: start + size as i64,
                step: 1,
            };
            kernels.push(MoveKernel::slice_as(OP, &[part], x_ty, out_ty, options)?);
            start += size as i64;
        }
        Ok(kernels)
    }

    /// Pad (or crop, for negative pads) `x_ty`: `pads = [begin_0.., end_0..]`; constant
    /// padding writes `value` converted to the dtype as the interpreter does (truncated and
    /// saturated for integers, non-zero for true).
    pub fn compile_pad(
        mode: PadMode,
        pads: &[i64],
        value: f64,
        x_ty: &TensorType,
        out_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<MoveKernel, CodegenError> {
        const OP: &str = "pad";
        let rank = x_ty.shape.len();
        if pads.len() != 2 * rank {
            return Err(invalid(OP, format!("{} pads for rank {rank}", pads.len())));
        }
        let elem = x_ty.dtype.size_bytes();
        let in_strides = Plan::dense_strides(&x_ty.shape, elem);
        // per axis: (cropped from the front, kept, padded in front, padded behind)
        let mut extents = Vec::with_capacity(rank);
        for (d, &dim) in x_ty.shape.iter().enumerate() {
            let (begin, end) = (pads[d], pads[rank + d]);
            let cropped = (-begin).max(0) as usize + (-end).max(0) as usize;
            let kept = dim.checked_sub(cropped).ok_or_else(|| {
                invalid(
                    OP,
                    format!("pads {pads:?} crop more than axis {d} of size {dim}"),
                )
            })?;
            let (front, back) = (begin.max(0) as usize, end.max(0) as usize);
            if kept == 0 && front + back > 0 && mode != PadMode::Constant {
                return Err(invalid(
                    OP,
                    format!("{mode:?} padding of an empty axis {d}"),
                ));
            }
            extents.push(((-begin).max(0) as usize, kept, front, back));
        }
        let shape: Vec<usize> = extents.iter().map(|&(_, k, f, b)| k + f + b).collect();
        check_output(OP, out_ty, x_ty.dtype, &shape)?;
        let out_strides = Plan::dense_strides(&shape, elem);
        let plan = if mode == PadMode::Constant {
            // fill, then copy the kept input into the box after the front pads
            let mut src_base = 0i64;
            let mut dst_base = 0usize;
            let mut axes = Vec::with_capacity(rank);
            for d in 0..rank {
                let (crop, kept, front, _) = extents[d];
                src_base += (crop * in_strides[d]) as i64;
                dst_base += front * out_strides[d];
                axes.push(Axis {
                    count: kept,
                    src: Source::Affine(in_strides[d] as i64),
                    dst_stride: out_strides[d],
                });
            }
            Plan {
                elem,
                src_base,
                dst_base,
                axes,
                fill: Some(fill_bytes(x_ty.dtype, value)),
            }
        } else {
            let axes = (0..rank)
                .map(|d| {
                    let (crop, kept, front, _) = extents[d];
                    let table = (0..shape[d])
                        .map(|o| {
                            let inside = wrap_into(o as i64 - front as i64, kept as i64, mode);
                            (crop as i64 + inside) * in_strides[d] as i64
                        })
                        .collect();
                    Axis {
                        count: shape[d],
                        src: Source::Table(table),
                        dst_stride: out_strides[d],
                    }
                })
                .collect();
            Plan::copying(elem, axes)
        };
        MoveKernel::build(OP, plan, x_ty, &shape, options)
    }

    /// Gather slices of `x_ty` along `axis` at the constant `indices` (i32 or i64, negative
    /// ones counting from the back).
    pub fn compile_gather(
        axis: usize,
        indices: &Tensor,
        x_ty: &TensorType,
        out_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<MoveKernel, CodegenError> {
        const OP: &str = "gather";
        let rank = x_ty.shape.len();
        if axis >= rank {
            return Err(invalid(
                OP,
                format!("axis {axis} out of range for rank {rank}"),
            ));
        }
        let dim = x_ty.shape[axis] as i64;
        let raw: Vec<i64> = match indices.data() {
            TensorData::I64(v) => v.clone(),
            TensorData::I32(v) => v.iter().map(|&i| i as i64).collect(),
            _ => {
                return Err(invalid(
                    OP,
                    format!("indices must be i32 or i64, got {}", indices.dtype()),
                ))
            }
        };
        let elem = x_ty.dtype.size_bytes();
        let in_strides = Plan::dense_strides(&x_ty.shape, elem);
        let mut table = Vec::with_capacity(raw.len());
        for i in raw {
            let wrapped = if i < 0 { i + dim } else { i };
            if !(0..dim).contains(&wrapped) {
                return Err(invalid(
                    OP,
                    format!("index {i} out of range for axis {axis} of size {dim}"),
                ));
            }
            table.push(wrapped * in_strides[axis] as i64);
        }
        let mut shape = x_ty.shape[..axis].to_vec();
        shape.extend_from_slice(indices.shape());
        shape.extend_from_slice(&x_ty.shape[axis + 1..]);
        check_output(OP, out_ty, x_ty.dtype, &shape)?;
        // the indices' dims act as one output axis: [outer.., indices, inner..]
        let mut axes: Vec<Axis> = Vec::with_capacity(rank);
        let out_strides = Plan::dense_strides(&shape, elem);
        for d in 0..axis {
            axes.push(Axis {
                count: x_ty.shape[d],
                src: Source::Affine(in_strides[d] as i64),
                dst_stride: out_strides[d],
            });
        }
        let inner_bytes: usize = x_ty.shape[axis + 1..].iter().product::<usize>() * elem;
        axes.push(Axis {
            count: table.len(),
            src: Source::Table(table),
            dst_stride: inner_bytes,
        });
        for d in axis + 1..rank {
            axes.push(Axis {
                count: x_ty.shape[d],
                src: Source::Affine(in_strides[d] as i64),
                dst_stride: out_strides[d - 1 + indices.shape().len()],
            });
        }
        MoveKernel::build(OP, Plan::copying(elem, axes), x_ty, &shape, options)
    }

    fn build(
        op: &'static str,
        mut plan: Plan,
        x_ty: &TensorType,
        shape: &[usize],
        options: &JitOptions,
    ) -> Result<MoveKernel, CodegenError> {
        let in_bytes = x_ty.byte_size();
        let elem = plan.elem;
        let out_bytes = shape.iter().product::<usize>() * elem;
        if in_bytes.max(out_bytes) > i32::MAX as usize {
            return Err(CodegenError::Unsupported {
                op,
                reason: "tensors exceed the kernel's 32-bit offsets".to_string(),
            });
        }
        let fill = plan.fill.take();
        let nest = plan.simplify();
        // the blob: 16 bytes of fill pattern, then each table axis's entries
        let mut blob: Vec<u8> = Vec::new();
        let mut pattern = [0u8; 16];
        if let Some(f) = &fill {
            for (k, p) in pattern.iter_mut().enumerate() {
                *p = f[k % f.len()];
            }
        }
        blob.extend_from_slice(&pattern);
        let mut table_offsets = Vec::with_capacity(nest.axes.len());
        for axis in &nest.axes {
            table_offsets.push(blob.len());
            if let Source::Table(t) = &axis.src {
                blob.extend(t.iter().flat_map(|v| v.to_le_bytes()));
            }
        }
        let mut jit = Jit::host(options)?;
        let func = build_function(
            &jit,
            &nest,
            &table_offsets,
            plan.src_base,
            plan.dst_base,
            fill.is_some().then_some(out_bytes),
        );
        let name = format!("{op}_{}_{}", x_ty.dtype, shape_name(shape));
        // SAFETY: `build_function` builds three pointer parameters and no results —
        // `MoveFn`; the kernel owns `jit`, so the code outlives every call.
        let function: MoveFn = unsafe { jit.compile_as(&name, func)? };
        Ok(MoveKernel {
            dtype: x_ty.dtype,
            out_shape: shape.to_vec(),
            in_bytes,
            out_bytes,
            table: AlignedBytes::from_bytes(&blob),
            function,
            code: KernelCode::new(jit, name),
        })
    }

    /// Move the input's bytes (little-endian elements) into `out`.
    pub fn run_into(&self, x: &[u8], out: &mut [u8]) -> Result<(), CodegenError> {
        if x.len() != self.in_bytes || out.len() != self.out_bytes {
            return Err(bad_buffer(
                self.name(),
                format!(
                    "{} input bytes → {}; expected {} → {}",
                    x.len(),
                    out.len(),
                    self.in_bytes,
                    self.out_bytes
                ),
            ));
        }
        // SAFETY: valid while `self.code` lives. Every offset the plan reads is inside the
        // input (validated at compile time against the input's shape, whose byte size is
        // checked above), every write inside `out` (its size checked above), and the table
        // is the blob the function was built for.
        unsafe { (self.function)(x.as_ptr(), self.table.as_slice().as_ptr(), out.as_mut_ptr()) };
        Ok(())
    }

    /// [`MoveKernel::run_into`] on a tensor, allocating the result.
    pub fn run(&self, x: &Tensor) -> Result<Tensor, CodegenError> {
        if x.dtype() != self.dtype {
            return Err(bad_buffer(
                self.name(),
                format!("a {} tensor, expected {}", x.dtype(), self.dtype),
            ));
        }
        let mut out = vec![0u8; self.out_bytes];
        self.run_into(&x.to_le_bytes(), &mut out)?;
        Tensor::new(
            self.out_shape.clone(),
            tensor_data_from_le_bytes(self.dtype, &out),
        )
        .map_err(|e| bad_buffer(self.name(), e.to_string()))
    }
}

/// Where position `i` (relative to the kept input's first element, possibly outside it)
/// of a padded axis reads in the kept input of `n > 0` elements.
fn wrap_into(i: i64, n: i64, mode: PadMode) -> i64 {
    if (0..n).contains(&i) {
        return i;
    }
    match mode {
        // constant padding never reads outside (handled by the fill)
        PadMode::Constant | PadMode::Edge => i.clamp(0, n - 1),
        PadMode::Wrap => i.rem_euclid(n),
        // mirror about the edge elements (numpy 'reflect'), period 2(n − 1)
        PadMode::Reflect if n == 1 => 0,
        PadMode::Reflect => {
            let period = 2 * (n - 1);
            let r = i.rem_euclid(period);
            r.min(period - r)
        }
    }
}

/// `value` as one element of `dtype` (little-endian bytes), converted like the
/// interpreter's fill (Resize's extrapolation value is converted the same way).
fn fill_bytes(dtype: DType, value: f64) -> Vec<u8> {
    fill_bits(dtype, value).to_le_bytes()[..dtype.size_bytes()].to_vec()
}

/// `fn(x, table, out)`: fill the output when `fill_bytes` is given, then the loop nest.
fn build_function(
    jit: &Jit,
    nest: &Nest,
    table_offsets: &[usize],
    src_base: i64,
    dst_base: usize,
    fill_bytes: Option<usize>,
) -> Function {
    jit.define_kernel(3, |b, p| {
        let (x, table, out) = (p[0], p[1], p[2]);
        if let Some(len) = fill_bytes {
            let pattern = b.ins().load(types::I8X16, mem().with_readonly(), table, 0);
            counted_loop(b, len / 16, |b, v| {
                let to = scaled(b, out, v, 16);
                b.ins().store(mem(), pattern, to, 0);
            });
            for byte in len / 16 * 16..len {
                let v = b
                    .ins()
                    .load(types::I8, mem().with_readonly(), table, (byte % 16) as i32);
                b.ins().store(mem(), v, out, byte as i32);
            }
        }
        if nest.empty {
            return;
        }
        let src = b.ins().iadd_imm_s(x, src_base);
        let dst = b.ins().iadd_imm_u(out, dst_base as i64);
        emit_axes(b, nest, table_offsets, table, 0, src, dst);
    })
}

/// The loops over `nest.axes[k..]` from the byte pointers `src` and `dst`.
fn emit_axes(
    b: &mut FunctionBuilder,
    nest: &Nest,
    table_offsets: &[usize],
    table: Value,
    k: usize,
    src: Value,
    dst: Value,
) {
    let Some(axis) = nest.axes.get(k) else {
        copy_bytes(b, src, dst, nest.run);
        return;
    };
    counted_loop(b, axis.count, |b, i| {
        let from = match &axis.src {
            Source::Affine(stride) => {
                let off = b.ins().imul_imm_s(i, *stride);
                b.ins().iadd(src, off)
            }
            Source::Table(_) => {
                let entries = b.ins().iadd_imm_u(table, table_offsets[k] as i64);
                let entry = scaled(b, entries, i, 8);
                let off = b.ins().load(types::I64, mem().with_readonly(), entry, 0);
                b.ins().iadd(src, off)
            }
        };
        let to = scaled(b, dst, i, axis.dst_stride);
        emit_axes(b, nest, table_offsets, table, k + 1, from, to);
    });
}

/// Copy `len` bytes from `src` to `dst`: 16-byte vector moves in a loop, then the rest in
/// 8-, 4-, 2- and 1-byte moves.
fn copy_bytes(b: &mut FunctionBuilder, src: Value, dst: Value, len: usize) {
    let vectors = len / 16;
    if vectors <= 4 {
        for v in 0..vectors {
            let (s, so) = at(b, src, 16 * v);
            let x = b.ins().load(types::I8X16, mem().with_readonly(), s, so);
            let (d, dof) = at(b, dst, 16 * v);
            b.ins().store(mem(), x, d, dof);
        }
    } else {
        counted_loop(b, vectors, |b, v| {
            let s = scaled(b, src, v, 16);
            let d = scaled(b, dst, v, 16);
            let x = b.ins().load(types::I8X16, mem().with_readonly(), s, 0);
            b.ins().store(mem(), x, d, 0);
        });
    }
    let mut done = vectors * 16;
    for (size, ty) in [
        (8, types::I64),
        (4, types::I32),
        (2, types::I16),
        (1, types::I8),
    ] {
        while len - done >= size {
            let x = b.ins().load(ty, mem().with_readonly(), src, done as i32);
            b.ins().store(mem(), x, dst, done as i32);
            done += size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_edge_and_wrap_maps() {
        // n = 3 (elements a b c); reflect of -2..5: c b | a b c | b a
        let reflect: Vec<i64> = (-2..5).map(|i| wrap_into(i, 3, PadMode::Reflect)).collect();
        assert_eq!(reflect, [2, 1, 0, 1, 2, 1, 0]);
        let edge: Vec<i64> = (-2..5).map(|i| wrap_into(i, 3, PadMode::Edge)).collect();
        assert_eq!(edge, [0, 0, 0, 1, 2, 2, 2]);
        let wrap: Vec<i64> = (-2..5).map(|i| wrap_into(i, 3, PadMode::Wrap)).collect();
        assert_eq!(wrap, [1, 2, 0, 1, 2, 0, 1]);
        assert_eq!(wrap_into(-3, 1, PadMode::Reflect), 0);
    }

    #[test]
    fn transpose_collapses_to_runs() {
        // [2, 3, 4, 5] f32 with perm [0, 2, 1, 3]... keeps the last axis contiguous (run of
        // 20 bytes); [1, 0] on [6, 8] i8 reads element by element
        let x_ty = TensorType::new(DType::F32, vec![2, 3, 4, 5]);
        let out_ty = TensorType::new(DType::F32, vec![2, 4, 3, 5]);
        let k =
            MoveKernel::compile_transpose(&[0, 2, 1, 3], &x_ty, &out_ty, &JitOptions::default())
                .expect("valid transpose");
        let x: Vec<f32> = (0..120).map(|v| v as f32).collect();
        let t = k
            .run(&Tensor::from_f32(vec![2, 3, 4, 5], x).expect("sized"))
            .expect("runs");
        let got = t.as_f32().expect("f32");
        // out[n, h, c, w] = x[n, c, h, w] = 60n + 20c + 5h + w
        for n in 0..2 {
            for h in 0..4 {
                for c in 0..3 {
                    for w in 0..5 {
                        let at = ((n * 4 + h) * 3 + c) * 5 + w;
                        assert_eq!(got[at], (60 * n + 20 * c + 5 * h + w) as f32);
                    }
                }
            }
        }
        let bad = TensorType::new(DType::F32, vec![2, 3, 4, 5]);
        assert!(
            MoveKernel::compile_transpose(&[0, 2, 1, 3], &x_ty, &bad, &JitOptions::default())
                .is_err()
        );
        assert!(MoveKernel::compile_transpose(
            &[0, 0, 1, 3],
            &x_ty,
            &out_ty,
            &JitOptions::default()
        )
        .is_err());
        assert!(k.run_into(&[0u8; 479], &mut [0u8; 480]).is_err());
    }
}
