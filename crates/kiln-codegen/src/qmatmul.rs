//! The int8 matrix multiply (`Op::QMatMul`, ONNX QLinearMatMul): `a` (u8/i8, per tensor)
//! times `b` (u8/i8, per tensor or per column), requantized to the output (u8/i8, per
//! tensor), numpy batch broadcasting and 1-D operands included. The same micro-kernel as
//! QConv (a 1×1 convolution whose pixels are `a`'s rows): `mr` rows × `nr` I32X4 vectors
//! of columns, one `pmaddwd` per 8 MACs or one `vpdpbusd` per 16. Bit-exact with
//! `kiln-interp`.
//!
//! - `b` is packed into the micro-kernel's layout — at compile time when it is a constant,
//!   else per call into the scratch: per tile of `4·nr` columns, per k-step (2 or 4 rows
//!   of `b`), `nr` 16-byte vectors; lane `j` of vector `r` holds column `4r + j`'s centered
//!   values `b − zp_b[col]` of the step's rows (zero past `K` and `N`). Then per tile the
//!   folded bias `−(zp_a + offset) · Σ_k (b − zp_b)[k, col]` (wrapping i32) and the
//!   multipliers `s_a · s_b[col] / s_y` (f32, in that order), as QConv's epilogue reads
//!   them.
//! - `a` is widened per call into the scratch: per row, per k-step, the step's values
//!   (i16 pairs, or byte quads shifted to the signedness of the byte dot product,
//!   [`InnerProduct::activation_offset`]) as one 32-bit word repeated in the four lanes.
//! - A byte dot product (`vpdpbusd`, AArch64 `usdot`/`sdot`, [`InnerProduct::select`]) is
//!   used where the target has it, [`QMatMulTuning::allow_vnni`] holds and the
//!   centered `b` fits i8: checked on the values of a constant `b`; for a run-time `b`,
//!   when it is i8 with all zero points 0.

use crate::clif::{
    at, counted_loop, define_function, pmaddwd_accumulate, range_loop, scaled, sdot_accumulate,
    splat_i32, usdot_accumulate, vpdpbusd_accumulate, Accumulate,
};
use crate::jit::{kernel_identity, IsaFeatures, Jit, JitOptions, KernelCode};
use crate::parallel::for_each_part;
use crate::qconv::emit::{epilogue, ro, Requant, TileConsts};
use crate::qconv::layout::{STEPS_PER_ITERATION, STEP_BYTES};
use crate::qconv::{AlignedBytes, InnerProduct, Int8};
use crate::CodegenError;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, Function, InstBuilder, Signature, Value};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, Variable};
use kiln_ir::{DType, Quant, Tensor, TensorData, TensorType};

const OP: &str = "qmatmul";

fn invalid(reason: impl Into<String>) -> CodegenError {
    CodegenError::InvalidOp {
        op: OP,
        reason: reason.into(),
    }
}

/// A QMatMul node's operands: the types of `a`, `b` and the output, and `b`'s value when
/// it is a constant (packed at compile time; else it is an input of every run).
#[derive(Clone, Copy, Debug)]
pub struct QMatMulNode<'a> {
    pub a_ty: &'a TensorType,
    pub b_ty: &'a TensorType,
    pub b: Option<&'a Tensor>,
    pub out_ty: &'a TensorType,
}

/// Micro-kernel shape and inner-product choice of a [`QMatMulKernel`] (as
/// [`crate::QConvTuning`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QMatMulTuning {
    /// Rows of `a` per tile.
    pub rows: usize,
    /// I32X4 vectors of output columns per tile.
    pub col_vectors: usize,
    /// Use a byte dot product (`vpdpbusd`, `sdot`, `usdot`) where possible; `false` forces
    /// `pmaddwd`.
    pub allow_vnni: bool,
}

impl Default for QMatMulTuning {
    fn default() -> Self {
        QMatMulTuning {
            rows: 4,
            col_vectors: 2,
            allow_vnni: true,
        }
    }
}

/// Working memory of a [`QMatMulKernel`] (widened `a`, packed run-time `b`).
#[derive(Debug)]
pub struct QMatMulScratch {
    bytes: AlignedBytes,
}

/// The compiled multiply of one pair of matrices over the column tiles `first..end`:
/// `(packed b, widened a, out, first, end)`.
type ComputeFn = unsafe extern "C" fn(*const u8, *const u8, *mut u8, usize, usize);

/// Shapes, quantization and layout of one QMatMul, resolved at compile time.
#[derive(Clone, Debug)]
struct Plan {
    m: usize,
    k: usize,
    n: usize,
    a_shape: Vec<usize>,
    b_shape: Vec<usize>,
    out_shape: Vec<usize>,
    /// Per output matrix (in output order): the indices of its `a` and `b` matrices.
    pairs: Vec<(usize, usize)>,
    a_dtype: DType,
    b_dtype: DType,
    out_dtype: DType,
    a_zero_point: i32,
    b_zero_points: Vec<i32>,
    multipliers: Vec<f32>,
    requant: Requant,
    // layout
    inner: InnerProduct,
    activation_offset: i32,
    mr: usize,
    nr: usize,
    steps: usize,
    full_tiles: usize,
    partial_columns: usize,
    tiles: usize,
    tile_weight_bytes: usize,
    bias_offset: usize,
    multiplier_offset: usize,
    /// Bytes of one packed `b` matrix (weights, bias, multipliers).
    blob_bytes: usize,
    /// Bytes of one widened `a` matrix.
    a_bytes: usize,
}

fn int8_range(dtype: DType, what: &str) -> Result<(i32, i32), CodegenError> {
    match dtype {
        DType::I8 => Ok((i8::MIN as i32, i8::MAX as i32)),
        DType::U8 => Ok((0, u8::MAX as i32)),
        d => Err(invalid(format!("{what} must be i8 or u8, got {d}"))),
    }
}

/// Scales and zero points of `ty` for `n` entries: per tensor (repeated), or per axis along
/// `axis` with `n` entries when `axis` is given; checked like the interpreter.
fn params(
    ty: &TensorType,
    axis: Option<usize>,
    n: usize,
    range: (i32, i32),
    what: &str,
) -> Result<(Vec<f32>, Vec<i32>), CodegenError> {
    let (scales, zps) = match &ty.quant {
        Some(Quant::PerTensor { scale, zero_point }) => (vec![*scale; n], vec![*zero_point; n]),
        Some(Quant::PerAxis {
            axis: qa,
            scales,
            zero_points,
        }) => {
            if Some(*qa) != axis || scales.len() != n || zero_points.len() != n {
                return Err(invalid(format!(
                    "{what}: per-axis quantization along axis {qa} with {} scales, expected \
                     {n} entries along axis {axis:?}",
                    scales.len()
                )));
            }
            (scales.clone(), zero_points.clone())
        }
        None => {
            return Err(invalid(format!(
                "{what} ({ty}) has no quantization parameters"
            )))
        }
    };
    if let Some(z) = zps.iter().find(|&&z| z < range.0 || z > range.1) {
        return Err(invalid(format!(
            "{what}: zero point {z} outside [{}, {}]",
            range.0, range.1
        )));
    }
    if let Some(s) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(invalid(format!(
            "{what}: scale {s} is not a positive finite number"
        )));
    }
    Ok((scales, zps))
}

/// numpy broadcasting of two batch shapes.
fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, CodegenError> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| (i + s.len()).checked_sub(rank).map_or(1, |j| s[j]);
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y || y == 1 => Ok(x),
            (1, y) => Ok(y),
            _ => Err(invalid(format!(
                "batch dimensions {a:?} and {b:?} do not broadcast"
            ))),
        })
        .collect()
}

/// The matrix index of each broadcast batch entry (row-major over `batch`) in an operand
/// with batch dims `dims`.
fn matrix_indices(dims: &[usize], batch: &[usize]) -> Vec<usize> {
    let count: usize = batch.iter().product();
    let offset = batch.len() - dims.len();
    (0..count)
        .map(|flat| {
            let (mut rest, mut index, mut stride) = (flat, 0, 1);
            for i in (0..batch.len()).rev() {
                let coord = rest % batch[i];
                rest /= batch[i];
                if i >= offset {
                    let d = dims[i - offset];
                    if d != 1 {
                        index += coord * stride;
                    }
                    stride *= d;
                }
            }
            index
        })
        .collect()
}

impl Plan {
    fn new(
        node: &QMatMulNode,
        tuning: &QMatMulTuning,
        features: &IsaFeatures,
    ) -> Result<Plan, CodegenError> {
        let (a, b) = (&node.a_ty.shape, &node.b_ty.shape);
        if a.is_empty() || b.is_empty() {
            return Err(invalid(format!("matmul of a scalar: {a:?} × {b:?}")));
        }
        let a2: Vec<usize> = if a.len() == 1 {
            vec![1, a[0]]
        } else {
            a.clone()
        };
        let b2: Vec<usize> = if b.len() == 1 {
            vec![b[0], 1]
        } else {
            b.clone()
        };
        let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
        let (kb, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
        if k != kb {
            return Err(invalid(format!("inner dimensions differ: {a:?} × {b:?}")));
        }
        let (a_batch, b_batch) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
        let batch = broadcast(a_batch, b_batch)?;
        let pairs: Vec<(usize, usize)> = matrix_indices(a_batch, &batch)
            .into_iter()
            .zip(matrix_indices(b_batch, &batch))
            .collect();
        let mut out_shape = batch.clone();
        if a.len() > 1 {
            out_shape.push(m);
        }
        if b.len() > 1 {
            out_shape.push(n);
        }
        if node.out_ty.shape != out_shape {
            return Err(invalid(format!(
                "output type {} does not have the product's shape {out_shape:?}",
                node.out_ty
            )));
        }
        let a_range = int8_range(node.a_ty.dtype, "a")?;
        let b_range = int8_range(node.b_ty.dtype, "b")?;
        let out_range =
            int8_range(node.out_ty.dtype, "output").map_err(|_| CodegenError::Unsupported {
                op: OP,
                reason: format!("{} output (u8 or i8 only)", node.out_ty.dtype),
            })?;
        let (sa, za) = params(node.a_ty, None, 1, a_range, "a")?;
        let (sb, zb) = params(node.b_ty, Some(b.len() - 1), n, b_range, "b")?;
        let (sy, zy) = params(node.out_ty, None, 1, out_range, "output")?;
        if let Some(bt) = node.b {
            if bt.dtype() != node.b_ty.dtype || bt.shape() != b.as_slice() {
                return Err(invalid(format!(
                    "constant b {} {:?} does not match its type {}",
                    bt.dtype(),
                    bt.shape(),
                    node.b_ty
                )));
            }
        }
        let b_fits_i8 = match node.b.map(|t| t.data()) {
            Some(TensorData::I8(v)) => v
                .iter()
                .enumerate()
                .all(|(i, &q)| (-128..=127).contains(&(q as i32 - zb[i % n]))),
            Some(TensorData::U8(v)) => v
                .iter()
                .enumerate()
                .all(|(i, &q)| (-128..=127).contains(&(q as i32 - zb[i % n]))),
            _ => node.b_ty.dtype == DType::I8 && zb.iter().all(|&z| z == 0),
        };
        let inner = if tuning.allow_vnni && b_fits_i8 {
            InnerProduct::select(features, node.a_ty.dtype)
        } else {
            InnerProduct::Pmaddwd
        };
        let steps = match k.div_ceil(inner.channels_per_step()) {
            s if s <= STEPS_PER_ITERATION => s,
            s => s.next_multiple_of(STEPS_PER_ITERATION),
        };
        let nr = tuning.col_vectors.clamp(1, n.div_ceil(4).max(1));
        let mr = tuning.rows.clamp(1, m.max(1));
        let tile_columns = 4 * nr;
        let tiles = n.div_ceil(tile_columns);
        let tile_weight_bytes = steps * nr * 16;
        let bias_offset = tiles * tile_weight_bytes;
        let multiplier_offset = bias_offset + tiles * nr * 16;
        let blob_bytes = multiplier_offset + tiles * nr * 16;
        let a_bytes = (m * steps * STEP_BYTES).max(16);
        if blob_bytes > i32::MAX as usize || a_bytes > i32::MAX as usize {
            return Err(CodegenError::Unsupported {
                op: OP,
                reason: "operands exceed the kernel's 32-bit offsets".to_string(),
            });
        }
        Ok(Plan {
            m,
            k,
            n,
            a_shape: a.clone(),
            b_shape: b.clone(),
            out_shape,
            pairs,
            a_dtype: node.a_ty.dtype,
            b_dtype: node.b_ty.dtype,
            out_dtype: node.out_ty.dtype,
            a_zero_point: za[0],
            b_zero_points: zb,
            multipliers: sb.iter().map(|&s| sa[0] * s / sy[0]).collect(),
            requant: Requant {
                requant_bounds: (
                    (out_range.0 as i64 - zy[0] as i64) as f32,
                    (out_range.1 as i64 - zy[0] as i64) as f32,
                ),
                zero_point: zy[0],
                act_bounds: out_range,
                signed_out: node.out_ty.dtype == DType::I8,
            },
            inner,
            activation_offset: inner.activation_offset(node.a_ty.dtype),
            mr,
            nr,
            steps,
            full_tiles: n / tile_columns,
            partial_columns: n % tile_columns,
            tiles,
            tile_weight_bytes,
            bias_offset,
            multiplier_offset,
            blob_bytes,
            a_bytes,
        })
    }

    fn value<X: Int8>(x: X) -> i32 {
        match X::DTYPE {
            DType::I8 => x.bits() as i8 as i32,
            _ => x.bits() as i32,
        }
    }

    /// Pack one `[K, N]` matrix of `b` (raw values) into `blob` (`blob_bytes` long).
    fn pack_b<B: Int8>(&self, b: &[B], blob: &mut [u8]) {
        let (k, n, nr) = (self.k, self.n, self.nr);
        let cps = self.inner.channels_per_step();
        let tile_columns = 4 * nr;
        let centered =
            |row: usize, col: usize| Self::value(b[row * n + col]) - self.b_zero_points[col];
        let mut at = 0;
        for t in 0..self.tiles {
            for step in 0..self.steps {
                for lane in 0..tile_columns {
                    let col = t * tile_columns + lane;
                    for h in 0..cps {
                        let row = step * cps + h;
                        let w = if col < n && row < k {
                            centered(row, col)
                        } else {
                            0
                        };
                        match self.inner {
                            // centered values lie in [-255, 255]: exact in i16
                            InnerProduct::Pmaddwd => {
                                blob[at..at + 2].copy_from_slice(&(w as i16).to_le_bytes());
                                at += 2;
                            }
                            // chosen only when they fit i8
                            InnerProduct::Vpdpbusd | InnerProduct::Usdot | InnerProduct::Sdot => {
                                blob[at] = w as i8 as u8;
                                at += 1;
                            }
                        }
                    }
                }
            }
        }
        debug_assert_eq!(at, self.bias_offset);
        // Σ (a + offset)·b' overcounts Σ (a − zp_a)·b' by (zp_a + offset)·Σ b'
        let fold = self.a_zero_point.wrapping_add(self.activation_offset);
        for t in 0..self.tiles {
            for lane in 0..tile_columns {
                let col = t * tile_columns + lane;
                let bias = if col < n {
                    let sum = (0..k).fold(0i32, |s, row| s.wrapping_add(centered(row, col)));
                    fold.wrapping_mul(sum).wrapping_neg()
                } else {
                    0
                };
                blob[at..at + 4].copy_from_slice(&bias.to_le_bytes());
                at += 4;
            }
        }
        for t in 0..self.tiles {
            for lane in 0..tile_columns {
                let col = t * tile_columns + lane;
                // padding lanes are computed and discarded; 1.0 keeps them finite
                let m = if col < n { self.multipliers[col] } else { 1.0 };
                blob[at..at + 4].copy_from_slice(&m.to_le_bytes());
                at += 4;
            }
        }
        debug_assert_eq!(at, self.blob_bytes);
    }

    /// Widen one `[M, K]` matrix of `a` into `dst` (`a_bytes` long).
    fn widen_a<A: Int8>(&self, a: &[A], dst: &mut [u8]) {
        let cps = self.inner.channels_per_step();
        for (row, values) in a.chunks_exact(self.k.max(1)).take(self.m).enumerate() {
            let entries =
                &mut dst[row * self.steps * STEP_BYTES..(row + 1) * self.steps * STEP_BYTES];
            for (step, entry) in entries.chunks_exact_mut(STEP_BYTES).enumerate() {
                let mut word = 0u32;
                for h in 0..cps {
                    // values past K meet zero weights
                    let v = values.get(step * cps + h).map_or(0, |&x| Self::value(x));
                    word |= match self.inner {
                        InnerProduct::Pmaddwd => (v as i16 as u16 as u32) << (16 * h),
                        InnerProduct::Vpdpbusd | InnerProduct::Usdot | InnerProduct::Sdot => {
                            ((v + self.activation_offset) as u8 as u32) << (8 * h)
                        }
                    };
                }
                for lane in entry.chunks_exact_mut(4) {
                    lane.copy_from_slice(&word.to_le_bytes());
                }
            }
        }
    }
}

/// `extern "C" fn(blob, a, out, first, end)`: one output matrix, the column tiles
/// `first..end` × every row tile through the micro-kernel and QConv's requantizing epilogue.
fn build_compute_function(
    plan: &Plan,
    signature: Signature,
    target: TargetFrontendConfig,
    exact_cvtt: bool,
) -> Function {
    define_function(signature, target, |b, p| {
        let (blob, a, out) = (p[0], p[1], p[2]);
        let accs: Vec<Vec<Variable>> = (0..plan.mr)
            .map(|_| (0..plan.nr).map(|_| b.declare_var(types::I32X4)).collect())
            .collect();
        let sweep = |b: &mut FunctionBuilder, t: Value, columns: usize| {
            column_tile(b, plan, &accs, blob, a, out, t, columns, exact_cvtt)
        };
        // the column tiles `first..end`: a call writes only their columns of every row, so
        // disjoint ranges can run on separate threads
        let (first, end) = (p[3], p[4]);
        range_loop(b, first, end, |b, t| {
            if plan.partial_columns == 0 {
                sweep(b, t, 4 * plan.nr);
                return;
            }
            // the last tile stores only its valid columns
            let (full, partial, merge) = (b.create_block(), b.create_block(), b.create_block());
            let is_partial = b.ins().icmp_imm_u(IntCC::Equal, t, plan.full_tiles as i64);
            b.ins().brif(is_partial, partial, &[], full, &[]);
            b.switch_to_block(full);
            sweep(b, t, 4 * plan.nr);
            b.ins().jump(merge, &[]);
            b.switch_to_block(partial);
            sweep(b, t, plan.partial_columns);
            b.ins().jump(merge, &[]);
            b.switch_to_block(merge);
        });
    })
}

/// All row tiles of column tile `t` (an i64 value), `columns` of them valid.
#[allow(clippy::too_many_arguments)]
fn column_tile(
    b: &mut FunctionBuilder,
    plan: &Plan,
    accs: &[Vec<Variable>],
    blob: Value,
    a: Value,
    out: Value,
    t: Value,
    columns: usize,
    exact_cvtt: bool,
) {
    let (mr, nr) = (plan.mr, plan.nr);
    let weights = scaled(b, blob, t, plan.tile_weight_bytes);
    let consts = scaled(b, blob, t, nr * 16);
    let tile_out = scaled(b, out, t, 4 * nr);
    let (vector, accumulate): (_, Accumulate) = match plan.inner {
        InnerProduct::Pmaddwd => (types::I16X8, pmaddwd_accumulate),
        InnerProduct::Vpdpbusd => (types::I8X16, vpdpbusd_accumulate),
        InnerProduct::Usdot => (types::I8X16, usdot_accumulate),
        InnerProduct::Sdot => (types::I8X16, sdot_accumulate),
    };
    let row_bytes = plan.steps * STEP_BYTES;
    let step_weights = nr * 16;
    counted_loop(b, plan.m.div_ceil(mr), |b, pt| {
        // r_m = min(pt·mr + m, M − 1): the last tile repeats the last row
        let first = b.ins().imul_imm_u(pt, mr as i64);
        let last = b.ins().iconst(types::I64, plan.m as i64 - 1);
        let rows: Vec<Value> = (0..mr)
            .map(|m| {
                let r = b.ins().iadd_imm_u(first, m as i64);
                b.ins().umin(r, last)
            })
            .collect();
        let bases: Vec<Value> = rows.iter().map(|&r| scaled(b, a, r, row_bytes)).collect();
        let zero = splat_i32(b, 0);
        for row in accs {
            for &acc in row {
                b.def_var(acc, zero);
            }
        }
        let step =
            |b: &mut FunctionBuilder, bases: &[Value], wbase: Value, a_off: usize, w_off: usize| {
                let w: Vec<Value> = (0..nr)
                    .map(|r| b.ins().load(vector, ro(), wbase, (w_off + 16 * r) as i32))
                    .collect();
                for (m, &base) in bases.iter().enumerate() {
                    let (addr, off) = at(b, base, a_off);
                    let x = b.ins().load(vector, ro(), addr, off);
                    for (r, &wv) in w.iter().enumerate() {
                        let acc = b.use_var(accs[m][r]);
                        let acc = accumulate(b, acc, x, wv);
                        b.def_var(accs[m][r], acc);
                    }
                }
            };
        if plan.steps > STEPS_PER_ITERATION {
            // two k-steps per iteration (`steps` is even here), as QConv's reduction
            counted_loop(b, plan.steps / STEPS_PER_ITERATION, |b, i| {
                let moved: Vec<Value> = bases
                    .iter()
                    .map(|&base| scaled(b, base, i, STEPS_PER_ITERATION * STEP_BYTES))
                    .collect();
                let wbase = scaled(b, weights, i, STEPS_PER_ITERATION * step_weights);
                for u in 0..STEPS_PER_ITERATION {
                    step(b, &moved, wbase, STEP_BYTES * u, u * step_weights);
                }
            });
        } else {
            for s in 0..plan.steps {
                step(b, &bases, weights, STEP_BYTES * s, s * step_weights);
            }
        }
        let row_out: Vec<Value> = rows
            .iter()
            .map(|&r| scaled(b, tile_out, r, plan.n))
            .collect();
        let tile_consts = TileConsts {
            nr,
            bias_offset: plan.bias_offset,
            multiplier_offset: plan.multiplier_offset,
            channel_stride: 1,
        };
        epilogue(
            b,
            &plan.requant,
            &tile_consts,
            accs,
            consts,
            &row_out,
            columns,
            exact_cvtt,
        );
    });
}

/// A compiled QMatMul. Owns its machine code, packed constant `b` (if any) and its JIT.
pub struct QMatMulKernel {
    plan: Plan,
    /// Every matrix of a constant `b`, packed (`blob_bytes` each).
    packed_b: Option<AlignedBytes>,
    compute: ComputeFn,
    /// Declared last: dropped after everything else; `compute` points into it.
    code: KernelCode,
}

kernel_identity!(QMatMulKernel, code);

impl QMatMulKernel {
    /// Compile a QMatMul node for the host.
    pub fn compile(
        node: &QMatMulNode,
        options: &JitOptions,
        tuning: &QMatMulTuning,
    ) -> Result<QMatMulKernel, CodegenError> {
        let mut jit = Jit::host(options)?;
        let plan = Plan::new(node, tuning, jit.features())?;
        let packed_b = match node.b.map(|t| t.data()) {
            None => None,
            Some(data) => {
                let matrices = plan.b_shape[..plan.b_shape.len().saturating_sub(2)]
                    .iter()
                    .product::<usize>();
                let mut blob = AlignedBytes::zeroed(matrices * plan.blob_bytes);
                let size = plan.k * plan.n;
                for (i, dst) in blob
                    .as_mut_slice()
                    .chunks_exact_mut(plan.blob_bytes)
                    .enumerate()
                {
                    match data {
                        TensorData::I8(v) => plan.pack_b(&v[i * size..(i + 1) * size], dst),
                        TensorData::U8(v) => plan.pack_b(&v[i * size..(i + 1) * size], dst),
                        _ => unreachable!("Plan::new accepted only i8 and u8 b"),
                    }
                }
                Some(blob)
            }
        };
        let name = format!("qmatmul_{}x{}x{}", plan.m, plan.k, plan.n);
        // three pointers and two pointer-sized tile indices
        let func = build_compute_function(
            &plan,
            jit.pointer_signature(5),
            jit.target_config(),
            jit.features().is_x86_64(),
        );
        // SAFETY: the function has five pointer-sized parameters and no results —
        // `ComputeFn` (the last two are integers of pointer size); `jit` is owned by the
        // kernel.
        let compute: ComputeFn = unsafe { jit.compile_as(&name, func)? };
        Ok(QMatMulKernel {
            plan,
            packed_b,
            compute,
            code: KernelCode::new(jit, name),
        })
    }

    pub fn a_shape(&self) -> &[usize] {
        &self.plan.a_shape
    }

    pub fn b_shape(&self) -> &[usize] {
        &self.plan.b_shape
    }

    pub fn output_shape(&self) -> &[usize] {
        &self.plan.out_shape
    }

    /// Whether `b` was a constant packed at compile time (run with [`Self::run_into`]) or
    /// is an input of every run ([`Self::run_with_b_into`]).
    pub fn has_constant_b(&self) -> bool {
        self.packed_b.is_some()
    }

    pub fn inner_product(&self) -> InnerProduct {
        self.plan.inner
    }

    /// `(rows, columns)` per micro-kernel tile.
    pub fn tile(&self) -> (usize, usize) {
        (self.plan.mr, 4 * self.plan.nr)
    }

    /// Multiply-accumulates of one run.
    pub fn macs(&self) -> u64 {
        (self.plan.pairs.len() * self.plan.m * self.plan.k * self.plan.n) as u64
    }

    fn scratch_bytes(&self) -> usize {
        let b = if self.packed_b.is_some() {
            0
        } else {
            self.plan.blob_bytes
        };
        self.plan.a_bytes + b
    }

    pub fn new_scratch(&self) -> QMatMulScratch {
        QMatMulScratch {
            bytes: AlignedBytes::zeroed(self.scratch_bytes()),
        }
    }

    /// Run with the constant `b` the kernel was compiled with: `a` and `out` of the
    /// kernel's shapes and dtypes.
    pub fn run_into<A: Int8, Y: Int8>(
        &self,
        a: &[A],
        out: &mut [Y],
        scratch: &mut QMatMulScratch,
    ) -> Result<(), CodegenError> {
        self.run_into_threads(a, out, scratch, 1)
    }

    /// [`QMatMulKernel::run_into`] on up to `threads` threads (the calling one included):
    /// per output matrix, `a` is widened once and the threads (`std::thread::scope`) claim
    /// the column tiles one at a time from a shared counter; bit-identical for every
    /// thread count.
    pub fn run_into_threads<A: Int8, Y: Int8>(
        &self,
        a: &[A],
        out: &mut [Y],
        scratch: &mut QMatMulScratch,
        threads: usize,
    ) -> Result<(), CodegenError> {
        if self.packed_b.is_none() {
            return Err(self.bad("b is not a constant of this kernel: use run_with_b_into"));
        }
        self.run_impl::<A, u8, Y>(a, None, out, scratch, threads)
    }

    /// How many parts a multiply can be split into: its column tiles.
    pub fn parallel_parts(&self) -> usize {
        self.plan.full_tiles + usize::from(self.plan.partial_columns > 0)
    }

    /// Run with a run-time `b` (a kernel compiled without a constant `b`).
    pub fn run_with_b_into<A: Int8, B: Int8, Y: Int8>(
        &self,
        a: &[A],
        b: &[B],
        out: &mut [Y],
        scratch: &mut QMatMulScratch,
    ) -> Result<(), CodegenError> {
        self.run_with_b_into_threads(a, b, out, scratch, 1)
    }

    /// [`QMatMulKernel::run_with_b_into`] on up to `threads` threads, as
    /// [`QMatMulKernel::run_into_threads`].
    pub fn run_with_b_into_threads<A: Int8, B: Int8, Y: Int8>(
        &self,
        a: &[A],
        b: &[B],
        out: &mut [Y],
        scratch: &mut QMatMulScratch,
        threads: usize,
    ) -> Result<(), CodegenError> {
        if self.packed_b.is_some() {
            return Err(self.bad("b is a constant of this kernel: use run_into"));
        }
        self.run_impl(a, Some(b), out, scratch, threads)
    }

    fn bad(&self, what: impl Into<String>) -> CodegenError {
        CodegenError::BadBuffer {
            kernel: self.name().to_string(),
            what: what.into(),
        }
    }

    fn run_impl<A: Int8, B: Int8, Y: Int8>(
        &self,
        a: &[A],
        b: Option<&[B]>,
        out: &mut [Y],
        scratch: &mut QMatMulScratch,
        threads: usize,
    ) -> Result<(), CodegenError> {
        let plan = &self.plan;
        if A::DTYPE != plan.a_dtype
            || Y::DTYPE != plan.out_dtype
            || (b.is_some() && B::DTYPE != plan.b_dtype)
        {
            return Err(self.bad(format!(
                "buffers are {} × {} → {}, the kernel takes {} × {} → {}",
                A::DTYPE,
                B::DTYPE,
                Y::DTYPE,
                plan.a_dtype,
                plan.b_dtype,
                plan.out_dtype
            )));
        }
        let (a_len, b_len, out_len) = (
            plan.a_shape.iter().product::<usize>(),
            plan.b_shape.iter().product::<usize>(),
            plan.out_shape.iter().product::<usize>(),
        );
        if a.len() != a_len || out.len() != out_len || b.is_some_and(|b| b.len() != b_len) {
            return Err(self.bad(format!(
                "a has {} elements (expected {a_len}), b {:?} (expected {b_len}), output {} \
                 (expected {out_len})",
                a.len(),
                b.map(|b| b.len()),
                out.len()
            )));
        }
        if scratch.bytes.as_slice().len() != self.scratch_bytes() {
            return Err(self.bad(format!(
                "scratch of {} bytes, expected {} (use new_scratch)",
                scratch.bytes.as_slice().len(),
                self.scratch_bytes()
            )));
        }
        let (m, k, n) = (plan.m, plan.k, plan.n);
        let (a_scratch, b_scratch) = scratch.bytes.as_mut_slice().split_at_mut(plan.a_bytes);
        let (mut widened_a, mut packed_b) = (None, None);
        for (i, &(ai, bi)) in plan.pairs.iter().enumerate() {
            if widened_a != Some(ai) {
                plan.widen_a(&a[ai * m * k..(ai + 1) * m * k], a_scratch);
                widened_a = Some(ai);
            }
            let blob: &[u8] = match (&self.packed_b, b) {
                (Some(constant), _) => {
                    &constant.as_slice()[bi * plan.blob_bytes..(bi + 1) * plan.blob_bytes]
                }
                (None, Some(b)) => {
                    if packed_b != Some(bi) {
                        plan.pack_b(&b[bi * k * n..(bi + 1) * k * n], b_scratch);
                        packed_b = Some(bi);
                    }
                    b_scratch
                }
                (None, None) => unreachable!("run_into and run_with_b_into check for b"),
            };
            let out_i = &mut out[i * m * n..(i + 1) * m * n];
            let tiles = self.parallel_parts();
            let a_scratch: &[u8] = a_scratch;
            // addresses, not pointers, cross to the threads (pointers are not Send)
            let (blob_at, a_at) = (blob.as_ptr() as usize, a_scratch.as_ptr() as usize);
            let out_at = out_i.as_mut_ptr() as usize;
            let compute = self.compute;
            let run_range = |first: usize, end: usize| {
                // SAFETY: `compute` is valid while `self.code` lives (`self` is borrowed for
                // the whole call). It reads `blob_bytes` of the 16-byte aligned `blob` (a
                // constant matrix's slot, `blob_bytes` a multiple of 16, or the scratch's
                // aligned tail after `a_bytes`, a multiple of 16) and `m · steps · 16` bytes
                // of the aligned `a_scratch`, both shared read-only until every part has
                // returned, and writes only the columns of the tiles `first..end`
                // (`end <= tiles`) of the `m · n` bytes at `out_at`: `for_each_part` hands
                // every tile out once, so no byte is written by two threads, and `out_i`
                // stays exclusively borrowed (unused otherwise) until they finish. Lengths
                // are checked above or by the slicing. u8 and i8 share size and alignment.
                unsafe {
                    compute(
                        blob_at as *const u8,
                        a_at as *const u8,
                        out_at as *mut u8,
                        first,
                        end,
                    )
                };
            };
            for_each_part(tiles, threads, run_range);
        }
        Ok(())
    }

    /// Run on tensors (`b` only when it is not a constant of the kernel), returning the
    /// output tensor (allocates output and scratch).
    pub fn run(&self, a: &Tensor, b: Option<&Tensor>) -> Result<Tensor, CodegenError> {
        let mut scratch = self.new_scratch();
        let len: usize = self.plan.out_shape.iter().product();
        macro_rules! with_out {
            ($run:expr) => {
                match self.plan.out_dtype {
                    DType::U8 => {
                        let mut out = vec![0u8; len];
                        ($run)(&mut out[..])?;
                        TensorData::U8(out)
                    }
                    _ => {
                        let mut out = vec![0i8; len];
                        ($run)(&mut out[..])?;
                        TensorData::I8(out)
                    }
                }
            };
        }
        macro_rules! with_b {
            ($a:expr) => {
                match b.map(|t| t.data()) {
                    None => with_out!(|o| self.run_into($a, o, &mut scratch)),
                    Some(TensorData::U8(bv)) => {
                        with_out!(|o| self.run_with_b_into($a, bv, o, &mut scratch))
                    }
                    Some(TensorData::I8(bv)) => {
                        with_out!(|o| self.run_with_b_into($a, bv, o, &mut scratch))
                    }
                    Some(_) => return Err(self.bad("b must be u8 or i8")),
                }
            };
        }
        let data = match a.data() {
            TensorData::U8(av) => with_b!(av),
            TensorData::I8(av) => with_b!(av),
            _ => return Err(self.bad(format!("a is {}, expected u8 or i8", a.dtype()))),
        };
        Tensor::new(self.plan.out_shape.clone(), data).map_err(|e| self.bad(e.to_string()))
    }
}
