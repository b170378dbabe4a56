//! f32 Gemm (`Op::Gemm`: alpha, beta, transposes, C, fused activation) and MatMul
//! (`Op::MatMul`) with a constant `B`, on the f32 conv's micro-kernel (`fconv::build_micro`):
//! a row of A is a "pixel", a column of B an output channel, so B is packed at compile
//! time as `[column tile][k][NR]` F32X4 vectors and each k-step broadcasts one element of A
//! per row. `beta · C` is evaluated at compile time: a C that broadcasts along the rows
//! becomes the per-column bias, any other C a `[M, N]` addend read like Conv's residual.
//! The epilogue is the interpreter's `alpha · (A·B) + beta·C`, then the activation.
//!
//! A `B` computed at run time (`compile_gemm_runtime_b`, `compile_matmul_runtime_b`) takes
//! the same code: each call packs B (per batch entry of a batched MatMul, with numpy batch
//! broadcasting) into the same layout first, then runs the micro-kernel on that entry's
//! rows of A.

use crate::fconv::{build_micro, micro_pack, micro_tables, vectors_for, Micro};
use crate::jit::{kernel_identity, Jit, JitOptions, KernelCode};
use crate::qconv::AlignedBytes;
use crate::tensor_io::{f32_constant, f32_operand, f32_result};
use crate::CodegenError;
use kiln_ir::{Activation, DType, GemmAttrs, Tensor, TensorType};

/// `(packed, tables, a, addend, out)`.
type GemmFn = unsafe extern "C" fn(*const u8, *const u8, *const f32, *const f32, *mut f32);

/// What a kernel with a run-time `B` needs to pack it on every call.
struct RuntimeB {
    micro: Micro,
    k: usize,
    n: usize,
    trans_b: bool,
    bias: Vec<f32>,
    b_len: usize,
    /// Per batch entry, in output order: the element offsets of its A and B matrices.
    batches: Vec<(usize, usize)>,
    /// Elements of one entry's A and output.
    a_matrix: usize,
    out_matrix: usize,
}

/// A compiled f32 Gemm or MatMul with a constant right operand (or one read at run time).
pub struct GemmKernel {
    a_len: usize,
    /// `Some` when B is an operand of every call.
    runtime_b: Option<RuntimeB>,
    out_shape: Vec<usize>,
    packed: AlignedBytes,
    tables: AlignedBytes,
    /// `beta · C` broadcast to `[M, N]`, when C does not broadcast along the rows.
    addend: Option<Vec<f32>>,
    macs: u64,
    function: GemmFn,
    /// Declared last: `function` points into it.
    code: KernelCode,
}

kernel_identity!(GemmKernel, code);

/// The problem after validation: `out[m][n] = alpha · Σ_k A(m, k) · B(k, n) + …`.
struct Problem<'a> {
    op: &'static str,
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
    /// `None`: B is read at run time (`b_len` elements, batch entries at `batches`).
    b: Option<&'a [f32]>,
    alpha: f32,
    /// Per-column bias and the full addend (at most one is non-trivial).
    bias: Vec<f32>,
    addend: Option<Vec<f32>>,
    act: Option<&'a Activation>,
    a_len: usize,
    out_shape: Vec<usize>,
    b_len: usize,
    batches: Vec<(usize, usize)>,
}

impl GemmKernel {
    /// `Op::Gemm` with a constant `b` and, when present, a constant `c`.
    pub fn compile_gemm(
        attrs: &GemmAttrs,
        a_ty: &TensorType,
        b: &Tensor,
        c: Option<&Tensor>,
        out_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<GemmKernel, CodegenError> {
        let b_values = f32_constant("gemm", b, "B")?;
        Self::gemm(attrs, a_ty, b.shape(), Some(b_values), c, out_ty, options)
    }

    /// `Op::Gemm` whose `b` (of type `b_ty`) is read at run time
    /// ([`GemmKernel::run_with_b_into`]); a present `c` is a constant.
    pub fn compile_gemm_runtime_b(
        attrs: &GemmAttrs,
        a_ty: &TensorType,
        b_ty: &TensorType,
        c: Option<&Tensor>,
        out_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<GemmKernel, CodegenError> {
        require_f32("gemm", b_ty)?;
        Self::gemm(attrs, a_ty, &b_ty.shape, None, c, out_ty, options)
    }

    fn gemm(
        attrs: &GemmAttrs,
        a_ty: &TensorType,
        bsh: &[usize],
        b: Option<&[f32]>,
        c: Option<&Tensor>,
        out_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<GemmKernel, CodegenError> {
        const OP: &str = "gemm";
        let invalid = |reason: String| CodegenError::InvalidOp { op: OP, reason };
        let ash = &a_ty.shape;
        if ash.len() != 2 || bsh.len() != 2 {
            return Err(invalid(format!(
                "gemm needs 2-D operands, got {ash:?} and {bsh:?}"
            )));
        }
        let (m, k) = if attrs.trans_a {
            (ash[1], ash[0])
        } else {
            (ash[0], ash[1])
        };
        let (kb, n) = if attrs.trans_b {
            (bsh[1], bsh[0])
        } else {
            (bsh[0], bsh[1])
        };
        if k != kb {
            return Err(invalid(format!(
                "inner dimensions differ: A {ash:?} × B {bsh:?}"
            )));
        }
        let (mut bias, mut addend) = (vec![0f32; n], None);
        if let Some(c) = c {
            let cv = f32_constant(OP, c, "C")?;
            let beta = attrs.beta;
            // C right-aligned against [m, n]; each dim 1 or equal
            let csh = c.shape();
            let padded: Vec<usize> = std::iter::repeat_n(1, 2usize.saturating_sub(csh.len()))
                .chain(csh.iter().copied())
                .collect();
            if csh.len() > 2
                || !(padded[0] == 1 || padded[0] == m)
                || !(padded[1] == 1 || padded[1] == n)
            {
                return Err(invalid(format!(
                    "C {csh:?} does not broadcast to [{m}, {n}]"
                )));
            }
            let at = |i: usize, j: usize| {
                cv[(if padded[0] == 1 { 0 } else { i }) * padded[1]
                    + if padded[1] == 1 { 0 } else { j }]
            };
            if padded[0] == 1 {
                bias = (0..n).map(|j| beta * at(0, j)).collect();
            } else {
                addend = Some(
                    (0..m)
                        .flat_map(|i| (0..n).map(move |j| (i, j)))
                        .map(|(i, j)| beta * at(i, j))
                        .collect(),
                );
            }
        }
        let problem = Problem {
            op: OP,
            m,
            k,
            n,
            trans_a: attrs.trans_a,
            trans_b: attrs.trans_b,
            b,
            alpha: attrs.alpha,
            bias,
            addend,
            act: attrs.act.as_ref(),
            a_len: m * k,
            out_shape: vec![m, n],
            b_len: k * n,
            batches: vec![(0, 0)],
        };
        Self::build(problem, a_ty, out_ty, options)
    }

    /// `Op::MatMul` of `a` (`[.., M, K]`, rank ≥ 2) by a constant 2-D `b` (`[K, N]`): the
    /// leading dims of `a` are rows of one matrix.
    pub fn compile_matmul(
        a_ty: &TensorType,
        b: &Tensor,
        out_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<GemmKernel, CodegenError> {
        const OP: &str = "matmul";
        let (ash, bsh) = (&a_ty.shape, b.shape());
        if ash.len() < 2 || bsh.len() != 2 {
            return Err(CodegenError::Unsupported {
                op: OP,
                reason: format!("a {ash:?} × b {bsh:?} (a of rank ≥ 2 by a 2-D constant b only)"),
            });
        }
        let k = ash[ash.len() - 1];
        if bsh[0] != k {
            return Err(CodegenError::InvalidOp {
                op: OP,
                reason: format!("inner dimensions differ: {ash:?} × {bsh:?}"),
            });
        }
        let m = ash[..ash.len() - 1].iter().product();
        let mut out_shape = ash[..ash.len() - 1].to_vec();
        out_shape.push(bsh[1]);
        let problem = Problem {
            op: OP,
            m,
            k,
            n: bsh[1],
            trans_a: false,
            trans_b: false,
            b: Some(f32_constant(OP, b, "b")?),
            alpha: 1.0,
            bias: vec![0.0; bsh[1]],
            addend: None,
            act: None,
            a_len: m * k,
            out_shape,
            b_len: k * bsh[1],
            batches: vec![(0, 0)],
        };
        Self::build(problem, a_ty, out_ty, options)
    }

    /// `Op::MatMul` of `a` (`[.., M, K]`) by `b` (`[.., K, N]`) read at run time
    /// ([`GemmKernel::run_with_b_into`]), both of rank ≥ 2, their batch dims broadcast
    /// (numpy).
    pub fn compile_matmul_runtime_b(
        a_ty: &TensorType,
        b_ty: &TensorType,
        out_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<GemmKernel, CodegenError> {
        const OP: &str = "matmul";
        require_f32(OP, b_ty)?;
        let (ash, bsh) = (&a_ty.shape, &b_ty.shape);
        if ash.len() < 2 || bsh.len() < 2 {
            return Err(CodegenError::Unsupported {
                op: OP,
                reason: format!("a {ash:?} × b {bsh:?} (operands of rank ≥ 2 only)"),
            });
        }
        let (m, k) = (ash[ash.len() - 2], ash[ash.len() - 1]);
        let (kb, n) = (bsh[bsh.len() - 2], bsh[bsh.len() - 1]);
        let invalid = |reason: String| CodegenError::InvalidOp { op: OP, reason };
        if kb != k {
            return Err(invalid(format!(
                "inner dimensions differ: {ash:?} × {bsh:?}"
            )));
        }
        let (a_batch, b_batch) = (&ash[..ash.len() - 2], &bsh[..bsh.len() - 2]);
        let rank = a_batch.len().max(b_batch.len());
        let padded = |s: &[usize]| -> Vec<usize> {
            std::iter::repeat_n(1, rank - s.len())
                .chain(s.iter().copied())
                .collect()
        };
        let (pa, pb) = (padded(a_batch), padded(b_batch));
        let mut batch = Vec::with_capacity(rank);
        for d in 0..rank {
            batch.push(match (pa[d], pb[d]) {
                (x, y) if x == y => x,
                (1, y) => y,
                (x, 1) => x,
                _ => {
                    return Err(invalid(format!(
                        "batch dims of {ash:?} and {bsh:?} do not broadcast"
                    )))
                }
            });
        }
        // element strides of each operand's matrices along the batch dims (0: broadcast)
        let strides = |p: &[usize], matrix: usize| -> Vec<usize> {
            let mut out = vec![0; rank];
            let mut step = matrix;
            for d in (0..rank).rev() {
                out[d] = if p[d] == 1 { 0 } else { step };
                step *= p[d];
            }
            out
        };
        let (sa, sb) = (strides(&pa, m * k), strides(&pb, k * n));
        let mut batches = vec![(0usize, 0usize)];
        for d in 0..rank {
            let (extent, da, db) = (batch[d], sa[d], sb[d]);
            batches = batches
                .iter()
                .flat_map(|&(a, b)| (0..extent).map(move |i| (a + i * da, b + i * db)))
                .collect();
        }
        let mut out_shape = batch;
        out_shape.extend([m, n]);
        let problem = Problem {
            op: OP,
            m,
            k,
            n,
            trans_a: false,
            trans_b: false,
            b: None,
            alpha: 1.0,
            bias: vec![0.0; n],
            addend: None,
            act: None,
            a_len: a_ty.numel(),
            out_shape,
            b_len: b_ty.numel(),
            batches,
        };
        Self::build(problem, a_ty, out_ty, options)
    }

    fn build(
        p: Problem,
        a_ty: &TensorType,
        out_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<GemmKernel, CodegenError> {
        if a_ty.dtype != DType::F32 || out_ty.dtype != DType::F32 {
            return Err(CodegenError::Unsupported {
                op: p.op,
                reason: format!("{} A, {} output (f32 only)", a_ty.dtype, out_ty.dtype),
            });
        }
        if out_ty.shape != p.out_shape {
            return Err(CodegenError::InvalidOp {
                op: p.op,
                reason: format!(
                    "output type {:?}, the product is {:?}",
                    out_ty.shape, p.out_shape
                ),
            });
        }
        if p.m == 0 || p.n == 0 || 4 * p.m * p.n.max(p.k) > u32::MAX as usize {
            return Err(CodegenError::Unsupported {
                op: p.op,
                reason: format!(
                    "{}×{}×{}: empty, or beyond the kernel's 32-bit offsets",
                    p.m, p.k, p.n
                ),
            });
        }
        let micro = Micro {
            groups: 1,
            group_in_bytes: 0,
            cout_g: p.n,
            vectors: vectors_for(p.n),
            k: p.k,
            pixels: p.m,
            channel_out_bytes: 4,
            alpha: p.alpha,
            residual: p.addend.is_some(),
        };
        let (m, k, n) = (p.m, p.k, p.n);
        let packed = match p.b {
            Some(b) => pack_b(&micro, b, k, n, p.trans_b, &p.bias),
            None => Vec::new(),
        };
        let rows: Vec<(u32, u32)> = (0..m)
            .map(|i| {
                let input = if p.trans_a { i } else { i * k };
                (4 * input as u32, 4 * (i * n) as u32)
            })
            .collect();
        let ks: Vec<u32> = (0..k)
            .map(|kk| 4 * (if p.trans_a { kk * m } else { kk }) as u32)
            .collect();
        let tables = micro_tables(rows, &ks);
        let mut jit = Jit::host(options)?;
        let fma = jit.features().has_fma || !jit.features().is_x86_64();
        let func = build_micro(&jit, &micro, p.act, fma);
        let name = format!("{}_f32_{m}x{k}x{n}", p.op);
        // SAFETY: `build_micro` builds five pointer parameters and no results — `GemmFn`;
        // the kernel owns `jit`, so the code outlives every call.
        let function: GemmFn = unsafe { jit.compile_as(&name, func)? };
        let runtime_b = p.b.is_none().then(|| RuntimeB {
            micro,
            k,
            n,
            trans_b: p.trans_b,
            bias: p.bias.clone(),
            b_len: p.b_len,
            a_matrix: m * k,
            out_matrix: m * n,
            batches: p.batches.clone(),
        });
        Ok(GemmKernel {
            a_len: p.a_len,
            runtime_b,
            out_shape: p.out_shape,
            packed: AlignedBytes::from_bytes(&packed),
            tables: AlignedBytes::from_bytes(&tables),
            addend: p.addend,
            macs: (m * k * n * p.batches.len()) as u64,
            function,
            code: KernelCode::new(jit, name),
        })
    }

    pub fn macs(&self) -> u64 {
        self.macs
    }

    /// Whether B is an operand of every call ([`GemmKernel::run_with_b_into`]).
    pub fn has_runtime_b(&self) -> bool {
        self.runtime_b.is_some()
    }

    /// A kernel compiled with a run-time B: pack `b` for each batch entry, then run the
    /// entry's rows.
    pub fn run_with_b_into(
        &self,
        a: &[f32],
        b: &[f32],
        out: &mut [f32],
    ) -> Result<(), CodegenError> {
        let out_len: usize = self.out_shape.iter().product();
        let Some(rb) = &self.runtime_b else {
            return Err(CodegenError::BadBuffer {
                kernel: self.name().to_string(),
                what: "B was packed at compile time: call run_into".to_string(),
            });
        };
        if a.len() != self.a_len || b.len() != rb.b_len || out.len() != out_len {
            return Err(CodegenError::BadBuffer {
                kernel: self.name().to_string(),
                what: format!(
                    "A of {}, B of {} → {} elements; expected {}, {} → {out_len}",
                    a.len(),
                    b.len(),
                    out.len(),
                    self.a_len,
                    rb.b_len
                ),
            });
        }
        for (entry, &(a_off, b_off)) in rb.batches.iter().enumerate() {
            let b_matrix = &b[b_off..b_off + rb.k * rb.n];
            let packed = AlignedBytes::from_bytes(&pack_b(
                &rb.micro, b_matrix, rb.k, rb.n, rb.trans_b, &rb.bias,
            ));
            let a_matrix = &a[a_off..a_off + rb.a_matrix];
            let out_matrix = &mut out[entry * rb.out_matrix..(entry + 1) * rb.out_matrix];
            let addend = self
                .addend
                .as_deref()
                .map_or(out_matrix.as_ptr(), <[f32]>::as_ptr);
            // SAFETY: as in `run_into`, for one batch entry: the packed B of this entry in
            // the compiled layout, the tables, the entry's `M·K` elements of A (a slice of
            // that length), the `[M, N]` addend only when the kernel has one, and the
            // entry's `M·N` outputs (a slice of that length).
            unsafe {
                (self.function)(
                    packed.as_slice().as_ptr(),
                    self.tables.as_slice().as_ptr(),
                    a_matrix.as_ptr(),
                    addend,
                    out_matrix.as_mut_ptr(),
                )
            };
        }
        Ok(())
    }

    pub fn run_into(&self, a: &[f32], out: &mut [f32]) -> Result<(), CodegenError> {
        let out_len: usize = self.out_shape.iter().product();
        if self.runtime_b.is_some() {
            return Err(CodegenError::BadBuffer {
                kernel: self.name().to_string(),
                what: "B is read at run time: call run_with_b_into".to_string(),
            });
        }
        if a.len() != self.a_len || out.len() != out_len {
            return Err(CodegenError::BadBuffer {
                kernel: self.name().to_string(),
                what: format!(
                    "{} → {} elements; expected {} → {out_len}",
                    a.len(),
                    out.len(),
                    self.a_len
                ),
            });
        }
        let addend = self.addend.as_deref().map_or(out.as_ptr(), <[f32]>::as_ptr);
        // SAFETY: valid while `self.code` lives. The function reads the packed B and
        // tables built for this problem, `a_len` elements of `a` at the table offsets
        // (rows and columns of A inside its checked length), the `[M, N]` addend only when
        // the kernel has one (owned, of that size), and writes the `M·N` elements of `out`.
        unsafe {
            (self.function)(
                self.packed.as_slice().as_ptr(),
                self.tables.as_slice().as_ptr(),
                a.as_ptr(),
                addend,
                out.as_mut_ptr(),
            )
        };
        Ok(())
    }

    pub fn run(&self, a: &Tensor) -> Result<Tensor, CodegenError> {
        let av = f32_operand(self.name(), a, None)?;
        let mut out = vec![0f32; self.out_shape.iter().product()];
        self.run_into(av, &mut out)?;
        f32_result(self.name(), &self.out_shape, out)
    }

    pub fn run_with_b(&self, a: &Tensor, b: &Tensor) -> Result<Tensor, CodegenError> {
        let av = f32_operand(self.name(), a, None)?;
        let bv = f32_operand(self.name(), b, None)?;
        let mut out = vec![0f32; self.out_shape.iter().product()];
        self.run_with_b_into(av, bv, &mut out)?;
        f32_result(self.name(), &self.out_shape, out)
    }
}

/// B (`[K, N]`, or `[N, K]` when `trans_b`) in the micro-kernel's layout, with `bias`.
fn pack_b(micro: &Micro, b: &[f32], k: usize, n: usize, trans_b: bool, bias: &[f32]) -> Vec<u8> {
    micro_pack(
        micro,
        |_, c, kk| {
            if trans_b {
                b[c * k + kk]
            } else {
                b[kk * n + c]
            }
        },
        |c| bias[c],
    )
}

fn require_f32(op: &'static str, ty: &TensorType) -> Result<(), CodegenError> {
    if ty.dtype == DType::F32 {
        return Ok(());
    }
    Err(CodegenError::Unsupported {
        op,
        reason: format!("B is {ty}, expected f32"),
    })
}
