//! Guard-page tests of every JIT kernel family: each input and output buffer is placed flush
//! against a `PROT_NONE` page — once ending right at one, once starting right after one —
//! and every allocation the calling thread makes while a kernel builds its scratch and runs
//! (scratch buffers, any working memory) gets the same treatment from this binary's global
//! allocator (threads a kernel spawns allocate normally; their tiles still read and write
//! the guarded input, output and scratch).
//! A read or write one byte outside any of them is a SIGSEGV, so a passing run means no
//! out-of-bounds access; the output is also compared with the reference interpreter
//! (bit for bit where the kernel is exact, within 1e-5 of the largest value for the f32
//! reductions, as the kernel suites do).
//!
//! Scratch buffers come from the crate's 16-byte-aligned allocation (`vec![0u8; n + 15]`
//! and an offset), so under "ends at the guard" their usable end can lie up to 15 bytes
//! before the guard page; their start is exact under "starts after the guard".
//!
//! `PROPTEST_CASES` sets the number of random problems (default 48 per family).

use kiln_codegen::{
    ActivationKernel, BatchNormKernel, BinaryKernel, CodegenError, ConcatKernel, DequantizeKernel,
    FConvKernel, FConvNode, FConvTransposeKernel, FConvTransposeNode, GemmKernel, JitOptions,
    LrnKernel, MaxPoolKernel, MoveKernel, PoolKernel, PoolKind, QConvKernel, QConvNode,
    QConvTuning, QMatMulKernel, QMatMulNode, QMatMulTuning, QuantizeKernel, ResizeKernel,
    SoftmaxKernel,
};
use kiln_codegen::{
    CastKernel, DynamicQuantizeKernel, MatMulIntegerKernel, ReduceMeanKernel, SumKernel,
};
use kiln_ir::{
    Activation, BinaryOp, ConvAttrs, ConvTransposeAttrs, DType, GemmAttrs, Op, PadMode, PoolAttrs,
    Quant, ResizeMode, SliceAxis, Tensor, TensorData, TensorType,
};
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

mod common;
use common::{cases_from_env, interpret, resize_problem, spatial, spatial_1d_to_3d};

// ---------------------------------------------------------------------------------------
// Guarded memory

/// Where a buffer sits relative to its guard pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    /// The last byte is the one before a `PROT_NONE` page: overruns fault.
    EndsAtGuard,
    /// The first byte is the one after a `PROT_NONE` page: underruns fault.
    StartsAfterGuard,
}

const PLACEMENTS: [Placement; 2] = [Placement::EndsAtGuard, Placement::StartsAfterGuard];

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions; _SC_PAGESIZE is always available on Linux.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).expect("the page size is positive")
}

/// `[guard page][data pages][guard page]`, with a `len`-byte buffer placed in the data
/// pages per a [`Placement`] (and aligned down to `align` when it ends at the guard).
struct GuardedRegion {
    base: *mut u8,
    map_len: usize,
    data: *mut u8,
    len: usize,
}

impl GuardedRegion {
    /// `None` when the kernel refuses the mapping (out of address space); the bytes are
    /// zero.
    fn map(len: usize, align: usize, placement: Placement) -> Option<GuardedRegion> {
        let page = page_size();
        let data_len = len.div_ceil(page).max(1) * page;
        let map_len = data_len + 2 * page;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing
        // aliases nothing; the result is checked before use.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        let base = base.cast::<u8>();
        // SAFETY: the first and last page lie inside the mapping just created.
        let protected = unsafe {
            libc::mprotect(base.cast(), page, libc::PROT_NONE) == 0
                && libc::mprotect(base.add(page + data_len).cast(), page, libc::PROT_NONE) == 0
        };
        let data = match placement {
            // SAFETY: `page` is inside the mapping.
            Placement::StartsAfterGuard => unsafe { base.add(page) },
            Placement::EndsAtGuard => {
                let end = base as usize + page + data_len;
                ((end - len) & !(align - 1)) as *mut u8
            }
        };
        // Owned from here on: dropped (unmapped) on every path.
        let region = GuardedRegion {
            base,
            map_len,
            data,
            len,
        };
        protected.then_some(region)
    }

    /// A guarded copy of `bytes`.
    fn copy_of(bytes: &[u8], placement: Placement) -> GuardedRegion {
        let mut region = GuardedRegion::zeroed(bytes.len(), placement);
        region.bytes_mut().copy_from_slice(bytes);
        region
    }

    /// `len` zero bytes, aligned for any element type the kernels take.
    fn zeroed(len: usize, placement: Placement) -> GuardedRegion {
        GuardedRegion::map(len, 1, placement).expect("mmap of a small test buffer succeeds")
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `data..data + len` lies in the mapping's read-write pages (zero-length
        // slices at a page boundary are valid too), owned by `self` for its lifetime.
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.data, self.len) }
    }

    /// The bytes as elements of `T`.
    fn typed<T: Plain>(&self) -> &[T] {
        let (n, ptr) = self.elements::<T>();
        // SAFETY: `elements` checked the alignment and size; every bit pattern is a valid
        // `T` (the `Plain` contract).
        unsafe { std::slice::from_raw_parts(ptr, n) }
    }

    fn typed_mut<T: Plain>(&mut self) -> &mut [T] {
        let (n, ptr) = self.elements::<T>();
        // SAFETY: as in `typed`, and `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(ptr, n) }
    }

    fn elements<T: Plain>(&self) -> (usize, *mut T) {
        let size = std::mem::size_of::<T>();
        assert_eq!(
            self.len % size,
            0,
            "{} bytes are not whole elements",
            self.len
        );
        assert_eq!(self.data as usize % std::mem::align_of::<T>(), 0);
        (self.len / size, self.data.cast::<T>())
    }
}

impl Drop for GuardedRegion {
    fn drop(&mut self) {
        // SAFETY: `base..base + map_len` is the mapping `map` created, unmapped once here.
        unsafe {
            libc::munmap(self.base.cast(), self.map_len);
        }
    }
}

/// Element types every bit pattern of which is a value.
///
/// # Safety
/// Implement only for types without invalid bit patterns or padding.
unsafe trait Plain: Copy {}
// SAFETY: integers and floats have no invalid bit patterns.
unsafe impl Plain for u8 {}
// SAFETY: as above.
unsafe impl Plain for i8 {}
// SAFETY: as above.
unsafe impl Plain for i32 {}
// SAFETY: as above.
unsafe impl Plain for f32 {}

// ---------------------------------------------------------------------------------------
// The global allocator: guarded allocations on request

thread_local! {
    /// While set, this thread's allocations get their own guarded region.
    static GUARD_ALLOCATIONS: Cell<Option<Placement>> = const { Cell::new(None) };
}

/// Live guarded allocations: (user pointer, mapping base, mapping length). A fixed table
/// behind a `Mutex` (which does not allocate), so the allocator never recurses.
const SLOTS: usize = 1024;
static GUARDED: Mutex<[(usize, usize, usize); SLOTS]> = Mutex::new([(0, 0, 0); SLOTS]);
static LIVE_GUARDED: AtomicUsize = AtomicUsize::new(0);

struct GuardAllocator;

impl GuardAllocator {
    fn guarded_alloc(layout: Layout, placement: Placement) -> Option<*mut u8> {
        if layout.size() == 0 || layout.align() > page_size() {
            return None;
        }
        let region = GuardedRegion::map(layout.size(), layout.align(), placement)?;
        let mut table = GUARDED.lock().unwrap_or_else(|e| e.into_inner());
        let slot = table.iter_mut().find(|s| s.0 == 0)?;
        *slot = (region.data as usize, region.base as usize, region.map_len);
        LIVE_GUARDED.fetch_add(1, Ordering::SeqCst);
        let ptr = region.data;
        std::mem::forget(region);
        Some(ptr)
    }

    /// Unmap `ptr` if it is a guarded allocation; `false` if it is not one.
    fn guarded_free(ptr: *mut u8) -> bool {
        if LIVE_GUARDED.load(Ordering::SeqCst) == 0 {
            return false;
        }
        let mut table = GUARDED.lock().unwrap_or_else(|e| e.into_inner());
        let Some(slot) = table.iter_mut().find(|s| s.0 == ptr as usize) else {
            return false;
        };
        let (_, base, map_len) = *slot;
        *slot = (0, 0, 0);
        LIVE_GUARDED.fetch_sub(1, Ordering::SeqCst);
        drop(table);
        // SAFETY: `base..base + map_len` is a mapping made by `guarded_alloc`, whose slot
        // was just cleared, so it is unmapped exactly once.
        unsafe {
            libc::munmap(base as *mut libc::c_void, map_len);
        }
        true
    }

    fn placement() -> Option<Placement> {
        GUARD_ALLOCATIONS.try_with(Cell::get).ok().flatten()
    }
}

// SAFETY: every pointer handed out is either System's or a fresh mapping of at least
// `layout.size()` bytes aligned to `layout.align()`; `dealloc` returns each to its source.
unsafe impl GlobalAlloc for GuardAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(placement) = Self::placement() {
            if let Some(ptr) = Self::guarded_alloc(layout, placement) {
                return ptr;
            }
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if let Some(placement) = Self::placement() {
            // fresh anonymous mappings are zero-filled
            if let Some(ptr) = Self::guarded_alloc(layout, placement) {
                return ptr;
            }
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !Self::guarded_free(ptr) {
            // SAFETY: not a guarded allocation, so System's, with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let guarded_now = Self::placement().is_some();
        let was_guarded = LIVE_GUARDED.load(Ordering::SeqCst) > 0 && {
            let table = GUARDED.lock().unwrap_or_else(|e| e.into_inner());
            table.iter().any(|s| s.0 == ptr as usize)
        };
        if !guarded_now && !was_guarded {
            // SAFETY: System's pointer, forwarded with the caller's arguments.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        let new_layout =
            Layout::from_size_align(new_size, layout.align()).expect("the caller's layout");
        // SAFETY: as `alloc`/`dealloc` above; the copy stays within both blocks.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[global_allocator]
static ALLOCATOR: GuardAllocator = GuardAllocator;

/// Run `f` with every allocation of this thread in its own guarded region.
fn with_guarded_allocations<R>(placement: Placement, f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            GUARD_ALLOCATIONS.with(|g| g.set(None));
        }
    }
    GUARD_ALLOCATIONS.with(|g| g.set(Some(placement)));
    let _reset = Reset;
    f()
}

// ---------------------------------------------------------------------------------------
// Running a kernel on guarded buffers

/// How the guarded output is compared with the interpreter's.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Compare {
    Exact,
    /// Within `1e-5 · max|want|` (the f32 kernels that sum in another order).
    Close,
}

type RunFn<'a> = dyn Fn(&[&GuardedRegion], &mut GuardedRegion) -> Result<(), CodegenError> + 'a;

/// Copy `inputs` into guarded regions, run `run` into a guarded output (with guarded
/// allocations), in both placements, and compare with `want`.
fn check_guarded(
    inputs: &[&Tensor],
    want: &Tensor,
    compare: Compare,
    run: &RunFn<'_>,
) -> Result<(), TestCaseError> {
    for placement in PLACEMENTS {
        let regions: Vec<GuardedRegion> = inputs
            .iter()
            .map(|t| GuardedRegion::copy_of(&t.to_le_bytes(), placement))
            .collect();
        let region_refs: Vec<&GuardedRegion> = regions.iter().collect();
        let mut out = GuardedRegion::zeroed(want.byte_size(), placement);
        with_guarded_allocations(placement, || run(&region_refs, &mut out))
            .map_err(|e| TestCaseError::fail(format!("{placement:?}: run: {e}")))?;
        let got = Tensor::new(
            want.shape().to_vec(),
            kiln_codegen::tensor_data_from_le_bytes(want.dtype(), out.bytes()),
        )
        .expect("the output region holds the expected shape's bytes");
        match compare {
            Compare::Exact => prop_assert!(
                got.bitwise_eq(want),
                "{:?}: got {:?}, want {:?}",
                placement,
                got,
                want
            ),
            Compare::Close => assert_close(&got, want)?,
        }
    }
    Ok(())
}

fn assert_close(got: &Tensor, want: &Tensor) -> Result<(), TestCaseError> {
    let (TensorData::F32(g), TensorData::F32(w)) = (got.data(), want.data()) else {
        return Err(TestCaseError::fail("both outputs must be f32"));
    };
    let scale = w
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    for (i, (a, b)) in g.iter().zip(w).enumerate() {
        prop_assert!(
            (a - b).abs() <= 1e-5 * scale,
            "element {}: got {} want {} (max |want| {})",
            i,
            a,
            b,
            scale
        );
    }
    Ok(())
}

/// Bind `$X`/`$Y` to the Rust types of two int8 dtypes for `$body`.
macro_rules! with_int8_types {
    ($x:expr, $y:expr, $X:ident, $Y:ident, $body:block) => {
        match ($x, $y) {
            (DType::U8, DType::U8) => {
                type $X = u8;
                type $Y = u8;
                $body
            }
            (DType::U8, DType::I8) => {
                type $X = u8;
                type $Y = i8;
                $body
            }
            (DType::I8, DType::U8) => {
                type $X = i8;
                type $Y = u8;
                $body
            }
            (DType::I8, DType::I8) => {
                type $X = i8;
                type $Y = i8;
                $body
            }
            other => panic!("int8 dtypes expected, got {other:?}"),
        }
    };
}

fn compile_err(e: CodegenError) -> TestCaseError {
    TestCaseError::fail(format!("compile: {e}"))
}

// ---------------------------------------------------------------------------------------
// Random data

/// SplitMix64: tensor contents come from one seed, so failures shrink to a shape.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    /// Uniform in `[lo, hi)`.
    fn float(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }

    fn f32_tensor(&mut self, shape: Vec<usize>, scale: f32) -> Tensor {
        let n = shape.iter().product();
        let data = (0..n).map(|_| self.float(-scale, scale)).collect();
        Tensor::new(shape, TensorData::F32(data)).expect("shape and data agree")
    }

    fn int8_tensor(&mut self, shape: Vec<usize>, dtype: DType) -> Tensor {
        let n: usize = shape.iter().product();
        let data = match dtype {
            DType::I8 => TensorData::I8((0..n).map(|_| self.int(-128, 127) as i8).collect()),
            DType::U8 => TensorData::U8((0..n).map(|_| self.int(0, 255) as u8).collect()),
            other => panic!("int8 dtype expected, got {other}"),
        };
        Tensor::new(shape, data).expect("shape and data agree")
    }

    /// A per-tensor quantization for `dtype` with a random scale and zero point.
    fn quant(&mut self, dtype: DType) -> Quant {
        let (lo, hi) = int8_range(dtype);
        Quant::per_tensor(self.float(0.002, 0.1), self.int(lo, hi) as i32)
    }
}

fn int8_range(dtype: DType) -> (i64, i64) {
    if dtype == DType::I8 {
        (-128, 127)
    } else {
        (0, 255)
    }
}

fn int8_dtype(signed: bool) -> DType {
    if signed {
        DType::I8
    } else {
        DType::U8
    }
}

fn f32_type(shape: Vec<usize>) -> TensorType {
    TensorType::new(DType::F32, shape)
}

fn activation() -> impl Strategy<Value = Option<Activation>> {
    prop_oneof![
        Just(None),
        Just(Some(Activation::Relu)),
        Just(Some(Activation::Clip {
            min: -0.5,
            max: 1.0
        })),
        Just(Some(Activation::LeakyRelu { alpha: 0.1 })),
        Just(Some(Activation::Sigmoid)),
        Just(Some(Activation::Tanh)),
        Just(Some(Activation::HardSigmoid {
            alpha: 0.2,
            beta: 0.5
        })),
        Just(Some(Activation::HardSwish)),
    ]
}

// ---------------------------------------------------------------------------------------
// int8 kernels

#[derive(Clone, Debug)]
struct QConvCase {
    batch: usize,
    groups: usize,
    cin_g: usize,
    cout_g: usize,
    spatial: common::Spatial,
    x_signed: bool,
    out_signed: bool,
    per_channel: bool,
    bias: bool,
    relu: bool,
    /// Threads for `run_into_threads` (1: `run_into`).
    threads: usize,
    tuning: QConvTuning,
    seed: u64,
}

/// General (plain and grouped), 1×1 (pointwise, any stride) and depthwise convs, 1-D to
/// 3-D, with random micro-kernel tiles.
fn qconv_case() -> impl Strategy<Value = QConvCase> {
    let shape = prop_oneof![
        // general: odd channel counts
        (Just(1usize), 1usize..=19, 1usize..=21, Just(false)),
        // grouped
        (2usize..=3, 1usize..=5, 1usize..=6, Just(false)),
        // 1×1
        (Just(1usize), 1usize..=23, 1usize..=17, Just(true)),
        // depthwise: one channel per group
        (1usize..=37, Just(1usize), Just(1usize), Just(false)),
    ];
    (
        shape,
        (1usize..=3).prop_flat_map(spatial),
        1usize..=2,
        any::<[bool; 6]>(),
        1usize..=3,
        (1usize..=6, 1usize..=3),
        any::<u64>(),
    )
        .prop_map(
            |((groups, cin_g, cout_g, pointwise), mut sp, batch, f, threads, tile, seed)| {
                if pointwise {
                    let rank = sp.kernel.len();
                    sp.kernel = vec![1; rank];
                    sp.dilations = vec![1; rank];
                    sp.pads = vec![0; 2 * rank];
                }
                QConvCase {
                    batch,
                    groups,
                    cin_g,
                    cout_g,
                    spatial: sp,
                    x_signed: f[0],
                    out_signed: f[1],
                    per_channel: f[2],
                    bias: f[3],
                    relu: f[4],
                    threads,
                    tuning: QConvTuning {
                        rows: tile.0,
                        col_vectors: tile.1,
                        allow_vnni: f[5],
                        allow_depthwise: true,
                    },
                    seed,
                }
            },
        )
}

fn check_qconv(case: &QConvCase) -> Result<(), TestCaseError> {
    let mut rng = Rng(case.seed);
    let sp = &case.spatial;
    let (c_in, c_out) = (case.groups * case.cin_g, case.groups * case.cout_g);
    let mut x_shape = vec![case.batch, c_in];
    x_shape.extend(&sp.input);
    let mut w_shape = vec![c_out, case.cin_g];
    w_shape.extend(&sp.kernel);
    let x_dtype = int8_dtype(case.x_signed);
    let x = rng.int8_tensor(x_shape.clone(), x_dtype);
    let w = rng.int8_tensor(w_shape.clone(), DType::I8);
    let x_ty = TensorType::new(x_dtype, x_shape).with_quant(rng.quant(x_dtype));
    let w_quant = if case.per_channel {
        Quant::PerAxis {
            axis: 0,
            scales: (0..c_out).map(|_| rng.float(0.001, 0.02)).collect(),
            zero_points: vec![0; c_out],
        }
    } else {
        Quant::per_tensor(rng.float(0.001, 0.02), 0)
    };
    let w_ty = TensorType::new(DType::I8, w_shape).with_quant(w_quant);
    let bias = Tensor::new(
        vec![c_out],
        TensorData::I32((0..c_out).map(|_| rng.int(-20000, 20000) as i32).collect()),
    )
    .expect("shape matches data");
    let bias_ty = TensorType::new(DType::I32, vec![c_out]);
    let attrs = ConvAttrs {
        kernel: sp.kernel.clone(),
        strides: sp.strides.clone(),
        pads: sp.pads.clone(),
        dilations: sp.dilations.clone(),
        groups: case.groups,
        act: case.relu.then_some(Activation::Relu),
    };
    let out_dtype = int8_dtype(case.out_signed);
    let mut out_shape = vec![case.batch, c_out];
    out_shape.extend(sp.output());
    let out_ty = TensorType::new(out_dtype, out_shape).with_quant(rng.quant(out_dtype));
    let mut inputs = vec![&x, &w];
    let mut types = vec![&x_ty, &w_ty];
    if case.bias {
        inputs.push(&bias);
        types.push(&bias_ty);
    }
    let want = interpret(&Op::QConv(attrs.clone()), &inputs, &types, &out_ty)?;
    let node = QConvNode {
        attrs: &attrs,
        x_ty: &x_ty,
        w: &w,
        w_ty: &w_ty,
        bias: case.bias.then_some((&bias, &bias_ty)),
        out_ty: &out_ty,
    };
    let kernel =
        QConvKernel::compile(&node, &JitOptions::default(), &case.tuning).map_err(compile_err)?;
    check_guarded(&[&x], &want, Compare::Exact, &|ins, out| {
        with_int8_types!(x_dtype, out_dtype, X, Y, {
            let mut scratch = kernel.new_scratch();
            kernel.run_into_threads::<X, Y>(
                ins[0].typed(),
                out.typed_mut(),
                &mut scratch,
                case.threads,
            )
        })
    })
}

#[derive(Clone, Debug)]
struct QMatMulCase {
    lead: Vec<usize>,
    m: usize,
    k: usize,
    n: usize,
    a_signed: bool,
    b_signed: bool,
    out_signed: bool,
    per_column: bool,
    constant_b: bool,
    threads: usize,
    tuning: QMatMulTuning,
    seed: u64,
}

fn qmatmul_case() -> impl Strategy<Value = QMatMulCase> {
    (
        prop::collection::vec(1usize..=3, 0..=2),
        (1usize..=9, 1usize..=37, 1usize..=21),
        any::<[bool; 6]>(),
        1usize..=3,
        (1usize..=6, 1usize..=3),
        any::<u64>(),
    )
        .prop_map(|(lead, (m, k, n), f, threads, tile, seed)| QMatMulCase {
            lead,
            m,
            k,
            n,
            a_signed: f[0],
            b_signed: f[1],
            out_signed: f[2],
            per_column: f[3],
            constant_b: f[4],
            threads,
            tuning: QMatMulTuning {
                rows: tile.0,
                col_vectors: tile.1,
                allow_vnni: f[5],
            },
            seed,
        })
}

fn check_qmatmul(case: &QMatMulCase) -> Result<(), TestCaseError> {
    let mut rng = Rng(case.seed);
    let mut a_shape = case.lead.clone();
    a_shape.extend([case.m, case.k]);
    let b_shape = vec![case.k, case.n];
    let mut out_shape = case.lead.clone();
    out_shape.extend([case.m, case.n]);
    let (a_dtype, b_dtype) = (int8_dtype(case.a_signed), int8_dtype(case.b_signed));
    let out_dtype = int8_dtype(case.out_signed);
    let a = rng.int8_tensor(a_shape.clone(), a_dtype);
    let b = rng.int8_tensor(b_shape.clone(), b_dtype);
    let a_ty = TensorType::new(a_dtype, a_shape).with_quant(rng.quant(a_dtype));
    let (lo, hi) = int8_range(b_dtype);
    let b_quant = if case.per_column {
        Quant::PerAxis {
            axis: 1,
            scales: (0..case.n).map(|_| rng.float(0.001, 0.02)).collect(),
            zero_points: (0..case.n).map(|_| rng.int(lo, hi) as i32).collect(),
        }
    } else {
        Quant::per_tensor(rng.float(0.001, 0.02), rng.int(lo, hi) as i32)
    };
    let b_ty = TensorType::new(b_dtype, b_shape).with_quant(b_quant);
    let out_ty = TensorType::new(out_dtype, out_shape).with_quant(rng.quant(out_dtype));
    let want = interpret(&Op::QMatMul, &[&a, &b], &[&a_ty, &b_ty], &out_ty)?;
    let node = QMatMulNode {
        a_ty: &a_ty,
        b_ty: &b_ty,
        b: case.constant_b.then_some(&b),
        out_ty: &out_ty,
    };
    let kernel =
        QMatMulKernel::compile(&node, &JitOptions::default(), &case.tuning).map_err(compile_err)?;
    if case.constant_b {
        check_guarded(&[&a], &want, Compare::Exact, &|ins, out| {
            with_int8_types!(a_dtype, out_dtype, A, Y, {
                let mut scratch = kernel.new_scratch();
                kernel.run_into_threads::<A, Y>(
                    ins[0].typed(),
                    out.typed_mut(),
                    &mut scratch,
                    case.threads,
                )
            })
        })
    } else {
        check_guarded(&[&a, &b], &want, Compare::Exact, &|ins, out| {
            let mut scratch = kernel.new_scratch();
            with_int8_types!(a_dtype, out_dtype, A, Y, {
                match b_dtype {
                    DType::I8 => kernel.run_with_b_into_threads::<A, i8, Y>(
                        ins[0].typed(),
                        ins[1].typed(),
                        out.typed_mut(),
                        &mut scratch,
                        case.threads,
                    ),
                    _ => kernel.run_with_b_into_threads::<A, u8, Y>(
                        ins[0].typed(),
                        ins[1].typed(),
                        out.typed_mut(),
                        &mut scratch,
                        case.threads,
                    ),
                }
            })
        })
    }
}

/// Quantize f32 → u8/i8 and Dequantize u8/i8/i32 → f32, per tensor or per axis.
fn check_quantize_dequantize(
    shape: Vec<usize>,
    axis: Option<usize>,
    dtype_pick: u8,
    seed: u64,
) -> Result<(), TestCaseError> {
    let mut rng = Rng(seed);
    let int_dtype = [DType::U8, DType::I8, DType::I32][dtype_pick as usize % 3];
    let (lo, hi) = match int_dtype {
        DType::I32 => (-1000, 1000),
        d => int8_range(d),
    };
    let quant = match axis.map(|a| a % shape.len()) {
        None => Quant::per_tensor(rng.float(0.01, 0.5), rng.int(lo, hi) as i32),
        Some(axis) => Quant::PerAxis {
            axis,
            scales: (0..shape[axis]).map(|_| rng.float(0.01, 0.5)).collect(),
            zero_points: (0..shape[axis]).map(|_| rng.int(lo, hi) as i32).collect(),
        },
    };
    let f_ty = f32_type(shape.clone());
    let q_ty = TensorType::new(int_dtype, shape.clone()).with_quant(quant);
    let opts = JitOptions::default();
    if int_dtype != DType::I32 {
        let x = rng.f32_tensor(shape.clone(), 40.0);
        let want = interpret(&Op::Quantize, &[&x], &[&f_ty], &q_ty)?;
        let kernel = QuantizeKernel::compile(&f_ty, &q_ty, &opts).map_err(compile_err)?;
        check_guarded(&[&x], &want, Compare::Exact, &|ins, out| {
            with_int8_types!(int_dtype, int_dtype, Y, _Unused, {
                kernel.run_into::<Y>(ins[0].typed(), out.typed_mut())
            })
        })?;
    }
    let q = match int_dtype {
        DType::I32 => {
            let n = shape.iter().product();
            Tensor::new(
                shape.clone(),
                TensorData::I32((0..n).map(|_| rng.int(-5000, 5000) as i32).collect()),
            )
            .expect("shape matches data")
        }
        d => rng.int8_tensor(shape.clone(), d),
    };
    let want = interpret(&Op::Dequantize, &[&q], &[&q_ty], &f_ty)?;
    let kernel = DequantizeKernel::compile(&q_ty, &f_ty, &opts).map_err(compile_err)?;
    check_guarded(&[&q], &want, Compare::Exact, &|ins, out| match int_dtype {
        DType::U8 => kernel.run_into::<u8>(ins[0].typed(), out.typed_mut()),
        DType::I8 => kernel.run_into::<i8>(ins[0].typed(), out.typed_mut()),
        _ => kernel.run_into::<i32>(ins[0].typed(), out.typed_mut()),
    })
}

fn pool_attrs(sp: common::Spatial, ceil_mode: bool, count_include_pad: bool) -> PoolAttrs {
    PoolAttrs {
        kernel: sp.kernel,
        strides: sp.strides,
        pads: sp.pads,
        dilations: sp.dilations,
        ceil_mode,
        count_include_pad,
        storage_order: 0,
    }
}

fn check_int8_maxpool(
    sp: common::Spatial,
    batch: usize,
    channels: usize,
    ceil_mode: bool,
    signed: bool,
    global: bool,
    seed: u64,
) -> Result<(), TestCaseError> {
    let mut rng = Rng(seed);
    let attrs = pool_attrs(sp.clone(), ceil_mode, false);
    let mut shape = vec![batch, channels];
    shape.extend(&sp.input);
    let dtype = int8_dtype(signed);
    let x = rng.int8_tensor(shape.clone(), dtype);
    let x_ty = TensorType::new(dtype, shape).with_quant(rng.quant(dtype));
    let opts = JitOptions::default();
    let (kernel, op) = if global {
        (
            MaxPoolKernel::compile_global(&x_ty, &opts).map_err(compile_err)?,
            Op::GlobalMaxPool,
        )
    } else {
        (
            MaxPoolKernel::compile(&attrs, &x_ty, &opts).map_err(compile_err)?,
            Op::MaxPool(attrs.clone()),
        )
    };
    let mut out_ty = TensorType::new(dtype, kernel.output_shape().to_vec());
    out_ty.quant = x_ty.quant.clone();
    let want = interpret(&op, &[&x], &[&x_ty], &out_ty)?;
    check_guarded(&[&x], &want, Compare::Exact, &|ins, out| {
        let mut scratch = kernel.new_scratch();
        with_int8_types!(dtype, dtype, X, _Unused, {
            kernel.run_into::<X>(ins[0].typed(), out.typed_mut(), &mut scratch)
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(48)))]

    #[test]
    fn qconv_general_pointwise_depthwise_stay_in_bounds(case in qconv_case()) {
        check_qconv(&case)?;
    }

    #[test]
    fn qmatmul_stays_in_bounds(case in qmatmul_case()) {
        check_qmatmul(&case)?;
    }

    #[test]
    fn quantize_and_dequantize_stay_in_bounds(
        shape in prop::collection::vec(1usize..=9, 1..=4),
        axis in prop::option::of(0usize..4),
        dtype_pick in 0u8..3,
        seed in any::<u64>(),
    ) {
        check_quantize_dequantize(shape, axis, dtype_pick, seed)?;
    }

    #[test]
    fn int8_maxpool_stays_in_bounds(
        sp in spatial_1d_to_3d(),
        batch in 1usize..=2,
        channels in 1usize..=37,
        (ceil_mode, signed, global) in any::<(bool, bool, bool)>(),
        seed in any::<u64>(),
    ) {
        check_int8_maxpool(sp, batch, channels, ceil_mode, signed, global, seed)?;
    }
}

// ---------------------------------------------------------------------------------------
// f32 kernels

#[derive(Clone, Debug)]
struct FConvCase {
    batch: usize,
    groups: usize,
    cin_g: usize,
    cout_g: usize,
    spatial: common::Spatial,
    bias: bool,
    residual: bool,
    act: Option<Activation>,
    seed: u64,
}

fn fconv_case() -> impl Strategy<Value = FConvCase> {
    (
        spatial_1d_to_3d(),
        1usize..=2,
        prop_oneof![Just(1usize), 2usize..=3],
        1usize..=5,
        1usize..=11,
        any::<[bool; 2]>(),
        activation(),
        any::<u64>(),
    )
        .prop_map(
            |(spatial, batch, groups, cin_g, cout_g, [bias, residual], act, seed)| FConvCase {
                batch,
                groups,
                cin_g,
                cout_g,
                spatial,
                bias: bias || residual,
                residual,
                act,
                seed,
            },
        )
}

fn check_fconv(case: &FConvCase) -> Result<(), TestCaseError> {
    let mut rng = Rng(case.seed);
    let sp = &case.spatial;
    let attrs = ConvAttrs {
        kernel: sp.kernel.clone(),
        strides: sp.strides.clone(),
        pads: sp.pads.clone(),
        dilations: sp.dilations.clone(),
        groups: case.groups,
        act: case.act.clone(),
    };
    let (c_in, c_out) = (case.groups * case.cin_g, case.groups * case.cout_g);
    let mut x_shape = vec![case.batch, c_in];
    x_shape.extend(&sp.input);
    let mut w_shape = vec![c_out, case.cin_g];
    w_shape.extend(&sp.kernel);
    let mut out_shape = vec![case.batch, c_out];
    out_shape.extend(sp.output());
    let x = rng.f32_tensor(x_shape.clone(), 1.0);
    let w = rng.f32_tensor(w_shape.clone(), 1.0);
    let b = rng.f32_tensor(vec![c_out], 1.0);
    let r = rng.f32_tensor(out_shape.clone(), 1.0);
    let mut inputs = vec![&x, &w];
    let mut types = vec![f32_type(x_shape), f32_type(w_shape)];
    if case.bias {
        inputs.push(&b);
        types.push(f32_type(vec![c_out]));
    }
    if case.residual {
        inputs.push(&r);
        types.push(f32_type(out_shape.clone()));
    }
    let type_refs: Vec<&TensorType> = types.iter().collect();
    let out_ty = f32_type(out_shape);
    let want = interpret(&Op::Conv(attrs.clone()), &inputs, &type_refs, &out_ty)?;
    let node = FConvNode {
        attrs: &attrs,
        x_ty: &types[0],
        w: &w,
        bias: case.bias.then_some(&b),
        residual: case.residual,
        out_ty: &out_ty,
    };
    let kernel = FConvKernel::compile(&node, &JitOptions::default()).map_err(compile_err)?;
    check_guarded(&[&x, &r], &want, Compare::Close, &|ins, out| {
        let mut scratch = kernel.new_scratch();
        let residual = case.residual.then(|| ins[1].typed());
        kernel.run_into(ins[0].typed(), residual, out.typed_mut(), &mut scratch)
    })
}

#[derive(Clone, Debug)]
struct FConvTransposeCase {
    batch: usize,
    groups: usize,
    cin_g: usize,
    cout_g: usize,
    spatial: common::Spatial,
    output_padding: Vec<usize>,
    bias: bool,
    act: Option<Activation>,
    seed: u64,
}

fn fconv_transpose_case() -> impl Strategy<Value = FConvTransposeCase> {
    (
        spatial_1d_to_3d(),
        prop::collection::vec(0usize..=2, 3),
        1usize..=2,
        prop_oneof![Just(1usize), 2usize..=3],
        1usize..=4,
        1usize..=9,
        any::<bool>(),
        activation(),
        any::<u64>(),
    )
        .prop_map(
            |(spatial, output_padding, batch, groups, cin_g, cout_g, bias, act, seed)| {
                FConvTransposeCase {
                    batch,
                    groups,
                    cin_g,
                    cout_g,
                    spatial,
                    output_padding,
                    bias,
                    act,
                    seed,
                }
            },
        )
}

fn check_fconv_transpose(case: &FConvTransposeCase) -> Result<(), TestCaseError> {
    let mut rng = Rng(case.seed);
    let sp = &case.spatial;
    let rank = sp.kernel.len();
    // `s·(in − 1) + output_padding + dl·(k − 1) + 1 − pads`; pads that leave no output are
    // dropped
    let full: Vec<usize> = (0..rank)
        .map(|d| {
            sp.strides[d] * (sp.input[d] - 1)
                + case.output_padding[d]
                + sp.dilations[d] * (sp.kernel[d] - 1)
                + 1
        })
        .collect();
    let pads = if (0..rank).all(|d| full[d] > sp.pads[d] + sp.pads[rank + d]) {
        sp.pads.clone()
    } else {
        vec![0; 2 * rank]
    };
    let attrs = ConvTransposeAttrs {
        kernel: sp.kernel.clone(),
        strides: sp.strides.clone(),
        pads: pads.clone(),
        dilations: sp.dilations.clone(),
        output_padding: case.output_padding[..rank].to_vec(),
        groups: case.groups,
        act: case.act.clone(),
    };
    let (c_in, c_out) = (case.groups * case.cin_g, case.groups * case.cout_g);
    let mut x_shape = vec![case.batch, c_in];
    x_shape.extend(&sp.input);
    let mut w_shape = vec![c_in, case.cout_g];
    w_shape.extend(&sp.kernel);
    let mut out_shape = vec![case.batch, c_out];
    out_shape.extend((0..rank).map(|d| full[d] - pads[d] - pads[rank + d]));
    let x = rng.f32_tensor(x_shape.clone(), 1.0);
    let w = rng.f32_tensor(w_shape.clone(), 1.0);
    let b = rng.f32_tensor(vec![c_out], 1.0);
    let mut inputs = vec![&x, &w];
    let mut types = vec![f32_type(x_shape), f32_type(w_shape)];
    if case.bias {
        inputs.push(&b);
        types.push(f32_type(vec![c_out]));
    }
    let type_refs: Vec<&TensorType> = types.iter().collect();
    let out_ty = f32_type(out_shape);
    let op = Op::ConvTranspose(attrs.clone());
    let want = interpret(&op, &inputs, &type_refs, &out_ty)?;
    let node = FConvTransposeNode {
        attrs: &attrs,
        x_ty: &types[0],
        w: &w,
        bias: case.bias.then_some(&b),
        out_ty: &out_ty,
    };
    let kernel =
        FConvTransposeKernel::compile(&node, &JitOptions::default()).map_err(compile_err)?;
    check_guarded(&[&x], &want, Compare::Close, &|ins, out| {
        let mut scratch = kernel.new_scratch();
        kernel.run_into(ins[0].typed(), out.typed_mut(), &mut scratch)
    })
}

/// Gemm with every C broadcast and both transposes, and MatMul with leading batch dims.
#[allow(clippy::too_many_arguments)]
fn check_gemm(
    (m, k, n): (usize, usize, usize),
    (trans_a, trans_b): (bool, bool),
    c_kind: usize,
    act: Option<Activation>,
    matmul_lead: Option<Vec<usize>>,
    seed: u64,
) -> Result<(), TestCaseError> {
    let mut rng = Rng(seed);
    let opts = JitOptions::default();
    if let Some(lead) = matmul_lead {
        let mut a_shape = lead.clone();
        a_shape.extend([m, k]);
        let mut out_shape = lead;
        out_shape.extend([m, n]);
        let a = rng.f32_tensor(a_shape.clone(), 1.0);
        let b = rng.f32_tensor(vec![k, n], 1.0);
        let (a_ty, b_ty, out_ty) = (f32_type(a_shape), f32_type(vec![k, n]), f32_type(out_shape));
        let want = interpret(&Op::MatMul, &[&a, &b], &[&a_ty, &b_ty], &out_ty)?;
        let kernel = GemmKernel::compile_matmul(&a_ty, &b, &out_ty, &opts).map_err(compile_err)?;
        return check_guarded(&[&a], &want, Compare::Close, &|ins, out| {
            kernel.run_into(ins[0].typed(), out.typed_mut())
        });
    }
    let a_shape = if trans_a { vec![k, m] } else { vec![m, k] };
    let b_shape = if trans_b { vec![n, k] } else { vec![k, n] };
    let c_shape = [
        None,
        Some(vec![n]),
        Some(vec![1, n]),
        Some(vec![m, 1]),
        Some(vec![m, n]),
        Some(vec![]),
    ][c_kind % 6]
        .clone();
    let a = rng.f32_tensor(a_shape.clone(), 1.0);
    let b = rng.f32_tensor(b_shape.clone(), 1.0);
    let c = c_shape.clone().map(|s| rng.f32_tensor(s, 1.0));
    let attrs = GemmAttrs {
        alpha: 0.5,
        beta: -2.0,
        trans_a,
        trans_b,
        act,
    };
    let out_ty = f32_type(vec![m, n]);
    let (a_ty, b_ty) = (f32_type(a_shape), f32_type(b_shape));
    let c_ty = c_shape.map(f32_type);
    let mut inputs = vec![&a, &b];
    let mut types = vec![&a_ty, &b_ty];
    if let (Some(c), Some(c_ty)) = (&c, &c_ty) {
        inputs.push(c);
        types.push(c_ty);
    }
    let want = interpret(&Op::Gemm(attrs.clone()), &inputs, &types, &out_ty)?;
    let kernel = GemmKernel::compile_gemm(&attrs, &a_ty, &b, c.as_ref(), &out_ty, &opts)
        .map_err(compile_err)?;
    check_guarded(&[&a], &want, Compare::Close, &|ins, out| {
        kernel.run_into(ins[0].typed(), out.typed_mut())
    })
}

/// A shape of rank 0–4 and a second one broadcast against it.
fn broadcast_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, bool)> {
    (
        prop::collection::vec(1usize..=7, 0..=4),
        prop::collection::vec(any::<bool>(), 4),
        0usize..=4,
        any::<bool>(),
    )
        .prop_map(|(out, ones, drop, swap)| {
            let drop = drop.min(out.len());
            let other: Vec<usize> = out[drop..]
                .iter()
                .zip(&ones)
                .map(|(&d, &one)| if one { 1 } else { d })
                .collect();
            (out, other, swap)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(48)))]

    #[test]
    fn fconv_stays_in_bounds(case in fconv_case()) {
        check_fconv(&case)?;
    }

    #[test]
    fn fconv_transpose_stays_in_bounds(case in fconv_transpose_case()) {
        check_fconv_transpose(&case)?;
    }

    #[test]
    fn gemm_and_matmul_stay_in_bounds(
        mkn in (1usize..=9, 1usize..=13, 1usize..=11),
        trans in any::<(bool, bool)>(),
        c_kind in 0usize..6,
        act in activation(),
        matmul_lead in prop::option::of(prop::collection::vec(1usize..=3, 0..=2)),
        seed in any::<u64>(),
    ) {
        check_gemm(mkn, trans, c_kind, act, matmul_lead, seed)?;
    }

    #[test]
    fn activations_stay_in_bounds(
        shape in prop::collection::vec(1usize..=9, 0..=3),
        act in activation(),
        seed in any::<u64>(),
    ) {
        let act = act.unwrap_or(Activation::Relu);
        let x = Rng(seed).f32_tensor(shape.clone(), 8.0);
        let ty = f32_type(shape);
        let want = interpret(&Op::Activation(act.clone()), &[&x], &[&ty], &ty)?;
        let kernel = ActivationKernel::compile(&act, &ty, &JitOptions::default())
            .map_err(compile_err)?;
        check_guarded(&[&x], &want, Compare::Close, &|ins, out| {
            kernel.run_into(ins[0].typed(), out.typed_mut())
        })?;
    }

    #[test]
    fn broadcasting_binary_ops_stay_in_bounds(
        (full, other, swap) in broadcast_pair(),
        op in prop_oneof![
            Just(BinaryOp::Add),
            Just(BinaryOp::Sub),
            Just(BinaryOp::Mul),
            Just(BinaryOp::Div)
        ],
        seed in any::<u64>(),
    ) {
        let mut rng = Rng(seed);
        let (a_shape, b_shape) = if swap { (other, full.clone()) } else { (full.clone(), other) };
        let a = rng.f32_tensor(a_shape.clone(), 2.0);
        let b = rng.f32_tensor(b_shape.clone(), 2.0);
        let (a_ty, b_ty, out_ty) = (f32_type(a_shape), f32_type(b_shape), f32_type(full));
        let want = interpret(&Op::Binary(op), &[&a, &b], &[&a_ty, &b_ty], &out_ty)?;
        let kernel = BinaryKernel::compile(op, &a_ty, &b_ty, &out_ty, &JitOptions::default())
            .map_err(compile_err)?;
        check_guarded(&[&a, &b], &want, Compare::Exact, &|ins, out| {
            kernel.run_into(ins[0].typed(), ins[1].typed(), out.typed_mut())
        })?;
    }

    #[test]
    fn batch_norm_stays_in_bounds(
        shape in prop::collection::vec(1usize..=7, 2..=4),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng(seed);
        let x = rng.f32_tensor(shape.clone(), 3.0);
        let c = shape[1];
        let scale = rng.f32_tensor(vec![c], 2.0);
        let bias = rng.f32_tensor(vec![c], 2.0);
        let mean = rng.f32_tensor(vec![c], 2.0);
        let var = Tensor::from_f32(vec![c], (0..c).map(|_| rng.float(0.0, 2.0)).collect())
            .expect("shape matches data");
        let (ty, p_ty) = (f32_type(shape), f32_type(vec![c]));
        let want = interpret(
            &Op::BatchNorm { epsilon: 1e-5 },
            &[&x, &scale, &bias, &mean, &var],
            &[&ty, &p_ty, &p_ty, &p_ty, &p_ty],
            &ty,
        )?;
        let kernel = BatchNormKernel::compile(
            &ty,
            [&scale, &bias, &mean, &var],
            1e-5,
            &JitOptions::default(),
        )
        .map_err(compile_err)?;
        check_guarded(&[&x], &want, Compare::Exact, &|ins, out| {
            kernel.run_into(ins[0].typed(), out.typed_mut())
        })?;
    }

    #[test]
    fn softmax_stays_in_bounds(
        shape in prop::collection::vec(1usize..=9, 1..=4),
        axis_pick in 0usize..4,
        legacy in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let axis = axis_pick % shape.len();
        let x = Rng(seed).f32_tensor(shape.clone(), 10.0);
        let ty = f32_type(shape);
        let want = interpret(&Op::Softmax { axis, legacy }, &[&x], &[&ty], &ty)?;
        let kernel = SoftmaxKernel::compile(axis, legacy, &ty, &JitOptions::default())
            .map_err(compile_err)?;
        check_guarded(&[&x], &want, Compare::Close, &|ins, out| {
            kernel.run_into(ins[0].typed(), out.typed_mut())
        })?;
    }

    /// LRN over odd channel counts and window sizes (a power in another order: within
    /// 1e-5 relative, as its own suite).
    #[test]
    fn lrn_stays_in_bounds(
        batch in 1usize..=2,
        channels in 1usize..=11,
        spatial in prop::collection::vec(1usize..=7, 1..=3),
        size in 1usize..=7,
        seed in any::<u64>(),
    ) {
        let mut shape = vec![batch, channels];
        shape.extend(&spatial);
        let x = Rng(seed).f32_tensor(shape.clone(), 20.0);
        let ty = f32_type(shape);
        let (alpha, beta, bias) = (1e-4f32, 0.75f32, 1.0f32);
        let want = interpret(&Op::Lrn { size, alpha, beta, bias }, &[&x], &[&ty], &ty)?;
        let kernel = LrnKernel::compile(size, alpha, beta, bias, &ty, &JitOptions::default())
            .map_err(compile_err)?;
        check_guarded(&[&x], &want, Compare::Close, &|ins, out| {
            kernel.run_into(ins[0].typed(), out.typed_mut())
        })?;
    }

    /// MaxPool / AveragePool (the interpreter's operations in its order: exact) and the
    /// global pools (a sum in another order: close).
    #[test]
    fn f32_pools_stay_in_bounds(
        sp in spatial_1d_to_3d(),
        batch in 1usize..=2,
        channels in 1usize..=9,
        (ceil_mode, count_include_pad, average, global) in any::<(bool, bool, bool, bool)>(),
        seed in any::<u64>(),
    ) {
        let attrs = pool_attrs(sp.clone(), ceil_mode, count_include_pad);
        let mut shape = vec![batch, channels];
        shape.extend(&sp.input);
        let x = Rng(seed).f32_tensor(shape.clone(), 4.0);
        let x_ty = f32_type(shape);
        let kind = if average { PoolKind::Average } else { PoolKind::Max };
        let opts = JitOptions::default();
        let (kernel, op, compare) = match (global, average) {
            (false, false) => (PoolKernel::compile(kind, &attrs, &x_ty, &opts), Op::MaxPool(attrs.clone()), Compare::Exact),
            (false, true) => (PoolKernel::compile(kind, &attrs, &x_ty, &opts), Op::AveragePool(attrs.clone()), Compare::Exact),
            (true, false) => (PoolKernel::compile_global(kind, &x_ty, &opts), Op::GlobalMaxPool, Compare::Close),
            (true, true) => (PoolKernel::compile_global(kind, &x_ty, &opts), Op::GlobalAveragePool, Compare::Close),
        };
        let kernel = kernel.map_err(compile_err)?;
        let out_ty = f32_type(kernel.output_shape().to_vec());
        let want = interpret(&op, &[&x], &[&x_ty], &out_ty)?;
        check_guarded(&[&x], &want, compare, &|ins, out| {
            let mut scratch = kernel.new_scratch();
            kernel.run_into(ins[0].typed(), out.typed_mut(), &mut scratch)
        })?;
    }
}

// ---------------------------------------------------------------------------------------
// Kernels of any dtype: Concat, Resize, data movement

/// One of the dtypes the byte-moving kernels take (bool excluded: its bytes must be 0/1).
fn any_dtype() -> impl Strategy<Value = DType> {
    prop_oneof![
        Just(DType::F32),
        Just(DType::U8),
        Just(DType::I8),
        Just(DType::I32),
        Just(DType::I64),
        Just(DType::F16),
    ]
}

/// A tensor of `dtype` from random bits (NaNs included: these kernels move bytes).
fn random_tensor(dtype: DType, shape: &[usize], rng: &mut Rng) -> Tensor {
    let bytes: Vec<u8> = (0..shape.iter().product::<usize>() * dtype.size_bytes())
        .map(|_| rng.next() as u8)
        .collect();
    Tensor::new(
        shape.to_vec(),
        kiln_codegen::tensor_data_from_le_bytes(dtype, &bytes),
    )
    .expect("sized to the shape")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(48)))]

    #[test]
    fn concat_stays_in_bounds(
        shape in prop::collection::vec(1usize..=5, 1..=4),
        extents in prop::collection::vec(1usize..=6, 1..=4),
        axis_pick in 0usize..4,
        dtype in any_dtype(),
        seed in any::<u64>(),
    ) {
        let axis = axis_pick % shape.len();
        let mut rng = Rng(seed);
        let shapes: Vec<Vec<usize>> = extents
            .iter()
            .map(|&e| {
                let mut s = shape.clone();
                s[axis] = e;
                s
            })
            .collect();
        let xs: Vec<Tensor> = shapes.iter().map(|s| random_tensor(dtype, s, &mut rng)).collect();
        let tys: Vec<TensorType> = shapes.into_iter().map(|s| TensorType::new(dtype, s)).collect();
        let mut out_shape = shape.clone();
        out_shape[axis] = extents.iter().sum();
        let out_ty = TensorType::new(dtype, out_shape);
        let x_refs: Vec<&Tensor> = xs.iter().collect();
        let ty_refs: Vec<&TensorType> = tys.iter().collect();
        let want = interpret(&Op::Concat { axis }, &x_refs, &ty_refs, &out_ty)?;
        let kernel = ConcatKernel::compile(axis, &ty_refs, &out_ty, &JitOptions::default())
            .map_err(compile_err)?;
        check_guarded(&x_refs, &want, Compare::Exact, &|ins, out| {
            let bytes: Vec<&[u8]> = ins.iter().map(|r| r.bytes()).collect();
            kernel.run_into(&bytes, out.bytes_mut())
        })?;
    }

    /// Nearest (a gather of any dtype) and linear / cubic on f32.
    #[test]
    fn resize_stays_in_bounds(
        (shape, attrs) in prop_oneof![
            resize_problem(ResizeMode::Nearest, 7, -2.0..2.0),
            resize_problem(ResizeMode::Linear, 7, -2.0..2.0),
            resize_problem(ResizeMode::Cubic, 7, -2.0..2.0),
        ],
        dtype in any_dtype(),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng(seed);
        let dtype = if attrs.mode == ResizeMode::Nearest { dtype } else { DType::F32 };
        let x = if dtype == DType::F32 {
            rng.f32_tensor(shape.clone(), 4.0)
        } else {
            random_tensor(dtype, &shape, &mut rng)
        };
        let x_ty = TensorType::new(dtype, shape);
        let out_ty = TensorType::new(dtype, attrs.sizes.clone());
        let want = interpret(&Op::Resize(attrs.clone()), &[&x], &[&x_ty], &out_ty)?;
        let kernel = ResizeKernel::compile(&attrs, &x_ty, &out_ty, &JitOptions::default())
            .map_err(compile_err)?;
        check_guarded(&[&x], &want, Compare::Exact, &|ins, out| {
            let mut scratch = kernel.new_scratch();
            kernel.run_into(ins[0].bytes(), out.bytes_mut(), &mut scratch)
        })?;
    }

    /// Transpose (random permutation) and Pad (every mode, cropping pads included).
    #[test]
    fn transpose_and_pad_stay_in_bounds(
        shape in prop::collection::vec(1usize..=6, 1..=4),
        perm_keys in prop::collection::vec(any::<u32>(), 4),
        pads in prop::collection::vec(-2i64..=3, 8),
        mode in prop_oneof![
            Just(PadMode::Constant),
            Just(PadMode::Reflect),
            Just(PadMode::Edge),
            Just(PadMode::Wrap)
        ],
        dtype in any_dtype(),
        seed in any::<u64>(),
    ) {
        let rank = shape.len();
        let mut rng = Rng(seed);
        let x = random_tensor(dtype, &shape, &mut rng);
        let x_ty = TensorType::new(dtype, shape.clone());
        let opts = JitOptions::default();

        let mut perm: Vec<usize> = (0..rank).collect();
        perm.sort_by_key(|&i| perm_keys[i]);
        let out_ty = TensorType::new(dtype, perm.iter().map(|&p| shape[p]).collect());
        let want = interpret(&Op::Transpose { perm: perm.clone() }, &[&x], &[&x_ty], &out_ty)?;
        let kernel = MoveKernel::compile_transpose(&perm, &x_ty, &out_ty, &opts)
            .map_err(compile_err)?;
        check_guarded(&[&x], &want, Compare::Exact, &|ins, out| {
            kernel.run_into(ins[0].bytes(), out.bytes_mut())
        })?;

        // pads per axis (begins, then ends); crops that would empty an axis are dropped
        let mut pads: Vec<i64> = pads[..rank].iter().chain(&pads[4..4 + rank]).copied().collect();
        for d in 0..rank {
            if shape[d] as i64 + pads[d] + pads[rank + d] < 1 {
                pads[d] = 0;
                pads[rank + d] = 0;
            }
        }
        let out_shape: Vec<usize> = (0..rank)
            .map(|d| (shape[d] as i64 + pads[d] + pads[rank + d]) as usize)
            .collect();
        let out_ty = TensorType::new(dtype, out_shape);
        let op = Op::Pad { mode, pads: pads.clone(), value: 1.5 };
        // the interpreter rejects what ONNX does (e.g. reflect wider than the axis)
        let Ok(want) = kiln_interp::eval_op(&op, &[&x], &[&x_ty], std::slice::from_ref(&out_ty)) else {
            return Ok(());
        };
        let kernel = MoveKernel::compile_pad(mode, &pads, 1.5, &x_ty, &out_ty, &opts)
            .map_err(compile_err)?;
        check_guarded(&[&x], &want[0], Compare::Exact, &|ins, out| {
            kernel.run_into(ins[0].bytes(), out.bytes_mut())
        })?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(48)))]

    /// Slice (negative steps included), Split into up to three parts and Gather with
    /// constant (negative, repeated) indices.
    #[test]
    fn slice_split_gather_stay_in_bounds(
        shape in prop::collection::vec(1usize..=6, 1..=4),
        bounds in prop::collection::vec((0usize..=6, 0usize..=6, prop_oneof![Just(1i64), Just(2), Just(-1), Just(-2)]), 4),
        axis_pick in 0usize..4,
        cut in (0usize..=6, 0usize..=6),
        indices in prop::collection::vec(-6i64..6, 0..=5),
        dtype in any_dtype(),
        seed in any::<u64>(),
    ) {
        let rank = shape.len();
        let mut rng = Rng(seed);
        let x = random_tensor(dtype, &shape, &mut rng);
        let x_ty = TensorType::new(dtype, shape.clone());
        let opts = JitOptions::default();
        let axis = axis_pick % rank;

        let axes: Vec<SliceAxis> = (0..rank)
            .map(|a| {
                let (lo, hi, step) = bounds[a];
                let (lo, hi) = (lo.min(shape[a]) as i64, hi.min(shape[a]) as i64);
                // a forward slice runs low to high, a backward one high − 1 down past low
                let (start, end) = if step > 0 { (lo.min(hi), lo.max(hi)) } else { (lo.max(hi) - 1, lo.min(hi) - 1) };
                SliceAxis { axis: a, start, end, step }
            })
            .collect();
        let op = Op::Slice { axes: axes.clone() };
        // slices the IR rejects (e.g. an empty backward range) are skipped
        let out_types = kiln_ir::infer_types(&op, &[&x_ty]);
        if let Ok(want) = out_types.map(|t| kiln_interp::eval_op(&op, &[&x], &[&x_ty], &t)) {
            let want = want.map_err(|e| TestCaseError::fail(format!("interpreter: {e}")))?;
            let out_ty = TensorType::new(dtype, want[0].shape().to_vec());
            let kernel = MoveKernel::compile_slice(&axes, &x_ty, &out_ty, &opts).map_err(compile_err)?;
            check_guarded(&[&x], &want[0], Compare::Exact, &|ins, out| {
                kernel.run_into(ins[0].bytes(), out.bytes_mut())
            })?;
        }

        let dim = shape[axis];
        let (a, b) = (cut.0.min(dim), cut.1.min(dim));
        let sizes = vec![a.min(b), a.max(b) - a.min(b), dim - a.max(b)];
        let out_tys: Vec<TensorType> = sizes
            .iter()
            .map(|&n| {
                let mut s = shape.clone();
                s[axis] = n;
                TensorType::new(dtype, s)
            })
            .collect();
        let split = Op::Split { axis, sizes: sizes.clone() };
        let want = kiln_interp::eval_op(&split, &[&x], &[&x_ty], &out_tys)
            .map_err(|e| TestCaseError::fail(format!("interpreter: {e}")))?;
        let refs: Vec<&TensorType> = out_tys.iter().collect();
        let kernels = MoveKernel::compile_split(axis, &sizes, &x_ty, &refs, &opts).map_err(compile_err)?;
        prop_assert_eq!(kernels.len(), want.len());
        for (kernel, want) in kernels.iter().zip(&want) {
            check_guarded(&[&x], want, Compare::Exact, &|ins, out| {
                kernel.run_into(ins[0].bytes(), out.bytes_mut())
            })?;
        }

        let index_values: Vec<i64> = indices.iter().map(|&i| i.rem_euclid(2 * dim as i64) - dim as i64).collect();
        let index_tensor = Tensor::from_i64(vec![index_values.len()], index_values)
            .expect("sized");
        let index_ty = TensorType::new(DType::I64, vec![index_tensor.numel()]);
        let op = Op::Gather { axis };
        let out_ty = kiln_ir::infer_types(&op, &[&x_ty, &index_ty])
            .map_err(TestCaseError::fail)?
            .remove(0);
        let want = interpret(&op, &[&x, &index_tensor], &[&x_ty, &index_ty], &out_ty)?;
        let kernel = MoveKernel::compile_gather(axis, &index_tensor, &x_ty, &out_ty, &opts)
            .map_err(compile_err)?;
        check_guarded(&[&x], &want, Compare::Exact, &|ins, out| {
            kernel.run_into(ins[0].bytes(), out.bytes_mut())
        })?;
    }
}

/// The harness itself: a buffer placed at a guard really faults one byte past its end, and
/// guarded allocations are flush with their guard — checked in a child process, since the
/// fault kills it.
#[test]
fn guard_pages_fault_one_byte_outside_the_buffer() {
    const CHILD: &str = "KILN_GUARD_PAGES_CHILD";
    if let Ok(which) = std::env::var(CHILD) {
        let region = GuardedRegion::zeroed(13, Placement::EndsAtGuard);
        let before = GuardedRegion::zeroed(13, Placement::StartsAfterGuard);
        let allocated = with_guarded_allocations(Placement::EndsAtGuard, || vec![7u8; 13]);
        let ptr = match which.as_str() {
            // SAFETY: deliberately one past the end: the child must die of SIGSEGV here.
            "after" => unsafe { region.bytes().as_ptr().add(13) },
            // SAFETY: deliberately one before the start: the child must die here.
            "before" => unsafe { before.bytes().as_ptr().sub(1) },
            // SAFETY: deliberately one past the guarded Vec's end.
            _ => unsafe { allocated.as_ptr().add(13) },
        };
        // SAFETY: not safe at all — the read is meant to fault (the parent checks it did).
        let value = unsafe { std::ptr::read_volatile(ptr) };
        println!("read {value}: no fault");
        std::process::exit(0);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    for which in ["after", "before", "vec"] {
        let status = std::process::Command::new(&exe)
            .args([
                "--exact",
                "guard_pages_fault_one_byte_outside_the_buffer",
                "--nocapture",
            ])
            .env(CHILD, which)
            .output()
            .expect("the test binary runs");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.status.signal(),
            Some(libc::SIGSEGV),
            "{which}: the out-of-bounds read must fault: {status:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(256)))]

    /// Sum (two inputs, the second broadcast), ReduceMean over a non-empty set of axes and
    /// Cast between any two non-f16 dtypes: the interpreter's bits.
    #[test]
    fn sum_reduce_mean_and_cast_stay_in_bounds(
        shape in prop::collection::vec(1usize..=6, 1..=4),
        mask in prop::collection::vec(any::<bool>(), 4),
        keepdims in any::<bool>(),
        from in any_dtype(),
        to in any_dtype(),
        seed in any::<u64>(),
    ) {
        let rank = shape.len();
        let mut rng = Rng(seed);
        let opts = JitOptions::default();
        let x = rng.f32_tensor(shape.clone(), 10.0);
        let x_ty = f32_type(shape.clone());
        // y: x's last dim only
        let y = rng.f32_tensor(vec![shape[rank - 1]], 10.0);
        let y_ty = f32_type(vec![shape[rank - 1]]);
        let want = interpret(&Op::Sum, &[&x, &y], &[&x_ty, &y_ty], &x_ty)?;
        let kernel = SumKernel::compile(&[&x_ty, &y_ty], &x_ty, &opts).map_err(compile_err)?;
        check_guarded(&[&x, &y], &want, Compare::Exact, &|ins, out| {
            let mut scratch = kernel.new_scratch();
            kernel.run_into(&[ins[0].typed(), ins[1].typed()], out.typed_mut(), &mut scratch)
        })?;

        let mut axes: Vec<usize> = (0..rank).filter(|&d| mask[d]).collect();
        if axes.is_empty() {
            axes.push(rank - 1);
        }
        let op = Op::ReduceMean { axes: axes.clone(), keepdims };
        let out_ty = kiln_ir::infer::infer_types(&op, &[&x_ty]).map_err(TestCaseError::fail)?.remove(0);
        let want = interpret(&op, &[&x], &[&x_ty], &out_ty)?;
        let kernel = ReduceMeanKernel::compile(&axes, keepdims, &x_ty, &out_ty, &opts)
            .map_err(compile_err)?;
        check_guarded(&[&x], &want, Compare::Exact, &|ins, out| {
            kernel.run_into(ins[0].typed(), out.typed_mut())
        })?;

        if from == DType::F16 || to == DType::F16 {
            return Ok(());
        }
        let x = random_tensor(from, &shape, &mut rng);
        let (x_ty, out_ty) = (TensorType::new(from, shape.clone()), TensorType::new(to, shape));
        let want = interpret(&Op::Cast { to }, &[&x], &[&x_ty], &out_ty)?;
        let kernel = CastKernel::compile(&x_ty, &out_ty, &opts).map_err(compile_err)?;
        check_guarded(&[&x], &want, Compare::Exact, &|ins, out| {
            kernel.run_into(ins[0].bytes(), out.bytes_mut())
        })?;
    }
}

/// `n` f32s for DynamicQuantize: a range straddling 0 or (with `positive`) not, with NaNs
/// (which the range pass must skip), exact zeros and tiny values; `all_zero` gives the
/// degenerate range `[0, 0]` (scale 1).
fn dynamic_quantize_values(rng: &mut Rng, n: usize, all_zero: bool, positive: bool) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v = match rng.int(0, 12) {
                0 => f32::NAN,
                1 => 0.0,
                2 => rng.float(-1e-3, 1e-3),
                3 | 4 => rng.float(0.0, 3.0),
                _ => rng.float(-50.0, 50.0),
            };
            if all_zero {
                0.0
            } else if positive {
                v.abs()
            } else {
                v
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(256)))]

    /// DynamicQuantize of a rank 0–3 f32 tensor (odd lengths exercise the range pass's
    /// 4-lane tail): y bit for bit, and the returned scale and zero point equal the
    /// interpreter's second and third outputs, in both placements.
    #[test]
    fn dynamic_quantize_stays_in_bounds(
        shape in prop::collection::vec(1usize..=7, 0..=3),
        all_zero in prop::bool::weighted(0.05),
        positive in prop::bool::weighted(0.2),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng(seed);
        let n: usize = shape.iter().product();
        let values = dynamic_quantize_values(&mut rng, n, all_zero, positive);
        let x = Tensor::from_f32(shape.clone(), values).expect("sized to the shape");
        let x_ty = f32_type(shape);
        let op = Op::DynamicQuantize;
        let out_tys = kiln_ir::infer::infer_types(&op, &[&x_ty]).map_err(TestCaseError::fail)?;
        let want = kiln_interp::eval_op(&op, &[&x], &[&x_ty], &out_tys)
            .map_err(|e| TestCaseError::fail(format!("interpreter: {e}")))?;
        prop_assert_eq!(want.len(), 3, "y, scale and zero point");
        let kernel = DynamicQuantizeKernel::compile(&x_ty, &JitOptions::default())
            .map_err(compile_err)?;
        // the scale and zero point are return values, not buffers: kept per placement
        let params = std::cell::RefCell::new(Vec::new());
        check_guarded(&[&x], &want[0], Compare::Exact, &|ins, out| {
            let (scale, zero_point) = kernel.run_into(ins[0].typed(), out.typed_mut())?;
            params.borrow_mut().push((scale, zero_point));
            Ok(())
        })?;
        for (scale, zero_point) in params.into_inner() {
            let scale = Tensor::new(vec![], TensorData::F32(vec![scale])).expect("a scalar");
            let zero_point = Tensor::new(vec![], TensorData::U8(vec![zero_point])).expect("a scalar");
            prop_assert!(scale.bitwise_eq(&want[1]), "scale {:?}, want {:?}", scale, want[1]);
            prop_assert!(
                zero_point.bitwise_eq(&want[2]),
                "zero point {:?}, want {:?}",
                zero_point,
                want[2]
            );
        }
    }

    /// MatMulInteger of u8/i8 `a` (1-D or batched, the run-time input) and its zero point
    /// (absent, scalar or one per row; also guarded) by a constant u8/i8 `b` with an
    /// optional zero point (scalar or per column): the interpreter's i32s bit for bit.
    #[test]
    fn matmul_integer_stays_in_bounds(
        a_lead in prop::collection::vec(1usize..=5, 0..=2),
        k in 0usize..=9,
        n in 1usize..=11,
        a_signed in any::<bool>(),
        b_signed in any::<bool>(),
        a_zp_kind in 0usize..3,
        b_zp_kind in 0usize..3,
        seed in any::<u64>(),
    ) {
        let mut rng = Rng(seed);
        let (a_dtype, b_dtype) = (int8_dtype(a_signed), int8_dtype(b_signed));
        let mut a_shape = a_lead;
        a_shape.push(k);
        let m = if a_shape.len() >= 2 { a_shape[a_shape.len() - 2] } else { 1 };
        let a = rng.int8_tensor(a_shape, a_dtype);
        let b = rng.int8_tensor(vec![k, n], b_dtype);
        let mut zero_point = |dtype: DType, kind: usize, len: usize| match kind {
            0 => None,
            1 => Some(rng.int8_tensor(vec![], dtype)),
            _ => Some(rng.int8_tensor(vec![len], dtype)),
        };
        let a_zp = zero_point(a_dtype, a_zp_kind, m);
        let b_zp = zero_point(b_dtype, b_zp_kind, n);
        // the interpreter takes a's zero point before b's: a scalar 0 when only b has one
        // (a run-time input then, so the kernel gets it too)
        let a_zp = match (a_zp, &b_zp) {
            (None, Some(_)) => Some(
                Tensor::new(vec![], kiln_codegen::tensor_data_from_le_bytes(a_dtype, &[0]))
                    .expect("a scalar"),
            ),
            (a_zp, _) => a_zp,
        };
        let type_of = |t: &Tensor| TensorType::new(t.dtype(), t.shape().to_vec());
        let mut inputs: Vec<&Tensor> = vec![&a, &b];
        inputs.extend(a_zp.as_ref());
        inputs.extend(b_zp.as_ref());
        let tys: Vec<TensorType> = inputs.iter().map(|t| type_of(t)).collect();
        let ty_refs: Vec<&TensorType> = tys.iter().collect();
        // from a and b only: IR inference wants a per-row zero point shaped like a with
        // k → 1, the interpreter (and the kernel) 1-D [m]
        let out_ty = kiln_ir::infer::infer_types(&Op::MatMulInteger, &ty_refs[..2])
            .map_err(TestCaseError::fail)?
            .remove(0);
        let want = interpret(&Op::MatMulInteger, &inputs, &ty_refs, &out_ty)?;
        let a_zp_ty = a_zp.as_ref().map(type_of);
        let kernel = MatMulIntegerKernel::compile(
            &tys[0],
            a_zp_ty.as_ref(),
            &b,
            b_zp.as_ref(),
            &out_ty,
            &JitOptions::default(),
        )
        .map_err(compile_err)?;
        let mut guarded: Vec<&Tensor> = vec![&a];
        guarded.extend(a_zp.as_ref());
        check_guarded(&guarded, &want, Compare::Exact, &|ins, out| {
            kernel.run_into(ins[0].bytes(), ins.get(1).map(|r| r.bytes()), out.typed_mut())
        })?;
    }
}
