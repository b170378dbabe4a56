//! Cache-blocked matrix multiply for f32 and wrapping i32, the engine behind Conv (via
//! im2col), ConvTranspose, MatMul, Gemm and the integer ops.
//!
//! Layout follows the BLIS/GotoBLAS scheme: B is packed into `KC×NR` column panels, A into
//! `MR×KC` row panels, and a register-tile micro-kernel (plain Rust loops over fixed-size
//! arrays, which LLVM turns into SIMD) updates an `MR×NR` tile of C.
//!
//! **Determinism.** Every element of C is accumulated strictly in order `k = 0, 1, ..., K-1`
//! onto its initial value (the K blocks reload the partial sums from C instead of summing
//! block results), with separate multiply and add (never a fused multiply-add, whose
//! availability differs between machines). Threads split rows (or columns) of C, never the
//! K reduction, so the result is bit-identical for every thread count and equals the
//! textbook loop `c = c0; for k in 0..K { c = c + a[i][k]·b[k][j] }`.

use std::sync::OnceLock;

/// A scalar the GEMM can multiply-accumulate.
pub trait GemmScalar: Copy + Default + Send + Sync + 'static {
    /// `acc + a·b`, rounded after each operation (f32) or wrapping (i32).
    fn mul_add(acc: Self, a: Self, b: Self) -> Self;
}

impl GemmScalar for f32 {
    #[inline(always)]
    fn mul_add(acc: f32, a: f32, b: f32) -> f32 {
        acc + a * b
    }
}

impl GemmScalar for i32 {
    /// onnxruntime accumulates int8 products in i32; overflow (impossible for realistic
    /// K, since |x·w| ≤ 2^15) wraps like the hardware does.
    #[inline(always)]
    fn mul_add(acc: i32, a: i32, b: i32) -> i32 {
        acc.wrapping_add(a.wrapping_mul(b))
    }
}

/// A read-only strided matrix: element `(i, j)` is `data[i·row_stride + j·col_stride]`.
/// Transposed operands are just swapped strides.
#[derive(Copy, Clone, Debug)]
pub struct MatRef<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a, T: Copy> MatRef<'a, T> {
    /// A dense row-major `rows × cols` matrix.
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> MatRef<'a, T> {
        MatRef {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The same matrix transposed (no copy).
    pub fn t(self) -> MatRef<'a, T> {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    #[inline(always)]
    fn at(&self, i: usize, j: usize) -> T {
        self.data[i * self.row_stride + j * self.col_stride]
    }

    /// Rows `start..start+len` as a matrix.
    fn row_block(self, start: usize, len: usize) -> MatRef<'a, T> {
        let offset = start * self.row_stride;
        MatRef {
            data: if len == 0 {
                &self.data[..0]
            } else {
                &self.data[offset..]
            },
            rows: len,
            ..self
        }
    }

    /// Columns `start..start+len` as a matrix.
    fn col_block(self, start: usize, len: usize) -> MatRef<'a, T> {
        let offset = start * self.col_stride;
        MatRef {
            data: if len == 0 {
                &self.data[..0]
            } else {
                &self.data[offset..]
            },
            cols: len,
            ..self
        }
    }
}

/// Register tile: 4 rows × 8 columns = 8 SSE registers of accumulators, leaving room for
/// the B row and the broadcast A element on x86-64's 16 vector registers.
const MR: usize = 4;
const NR: usize = 8;
/// K block: an `MR×KC` A panel plus a `KC×NR` B panel stay in L1.
const KC: usize = 256;
/// Rows of A per packed block (L2-resident).
const MC: usize = 64;
/// Columns of B per packed block (L3-resident).
const NC: usize = 2048;

/// Work below this many multiply-adds is not worth a thread.
const PARALLEL_MIN_MACS: usize = 1 << 20;

/// Threads used by [`gemm`]: the machine's parallelism, or `KILN_INTERP_THREADS`.
pub fn default_threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| {
        std::env::var("KILN_INTERP_THREADS")
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    })
}

/// `C = A·B` (or `C += A·B` when `accumulate`), C dense row-major `a.rows × b.cols`.
/// Uses [`default_threads`] threads for large products; the result does not depend on it.
pub fn gemm<T: GemmScalar>(a: MatRef<'_, T>, b: MatRef<'_, T>, c: &mut [T], accumulate: bool) {
    gemm_with_threads(default_threads(), a, b, c, accumulate)
}

/// [`gemm`] with an explicit thread count (1 = on the calling thread).
pub fn gemm_with_threads<T: GemmScalar>(
    threads: usize,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: &mut [T],
    accumulate: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "gemm: inner dimensions differ");
    assert_eq!(c.len(), m * n, "gemm: C has the wrong size");
    if m == 0 || n == 0 {
        return;
    }
    let threads = if m * n * k.max(1) < PARALLEL_MIN_MACS {
        1
    } else {
        threads.max(1)
    };
    if threads > 1 && m >= threads * 2 * MR {
        // Split rows of C: each thread owns a contiguous band of C.
        let band = m.div_ceil(threads).next_multiple_of(MR);
        std::thread::scope(|s| {
            for (t, c_band) in c.chunks_mut(band * n).enumerate() {
                let rows = c_band.len() / n;
                let a_band = a.row_block(t * band, rows);
                s.spawn(move || gemm_serial(a_band, b, c_band, n, accumulate));
            }
        });
    } else if threads > 1 && n >= threads * 4 * NR {
        // Few rows (e.g. a batch-1 fully connected layer): split columns of C, each thread
        // computing its columns into a private buffer, then copy them back.
        let band = n.div_ceil(threads).next_multiple_of(NR);
        let starts: Vec<usize> = (0..n).step_by(band).collect();
        let parts: Vec<Vec<T>> = std::thread::scope(|s| {
            let handles: Vec<_> = starts
                .iter()
                .map(|&j0| {
                    let cols = band.min(n - j0);
                    let b_band = b.col_block(j0, cols);
                    let mut part = vec![T::default(); m * cols];
                    if accumulate {
                        for i in 0..m {
                            part[i * cols..(i + 1) * cols]
                                .copy_from_slice(&c[i * n + j0..i * n + j0 + cols]);
                        }
                    }
                    s.spawn(move || {
                        gemm_serial(a, b_band, &mut part, cols, accumulate);
                        part
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("gemm worker thread does not panic"))
                .collect()
        });
        for (&j0, part) in starts.iter().zip(&parts) {
            let cols = band.min(n - j0);
            for i in 0..m {
                c[i * n + j0..i * n + j0 + cols].copy_from_slice(&part[i * cols..(i + 1) * cols]);
            }
        }
    } else {
        gemm_serial(a, b, c, n, accumulate);
    }
}

/// Single-threaded blocked GEMM into `c` with leading dimension `ldc`.
fn gemm_serial<T: GemmScalar>(
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(T::default());
            }
        }
        return;
    }
    let mut packed_b = vec![T::default(); KC * NC.min(n.next_multiple_of(NR))];
    let mut packed_a = vec![T::default(); MC * KC];
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            let load_c = accumulate || pc > 0;
            pack_b(&b, pc, kc, jc, nc, &mut packed_b);
            for ic in (0..m).step_by(MC) {
                let mc = MC.min(m - ic);
                pack_a(&a, ic, mc, pc, kc, &mut packed_a);
                for jr in (0..nc).step_by(NR) {
                    let b_panel = &packed_b[(jr / NR) * kc * NR..(jr / NR + 1) * kc * NR];
                    for ir in (0..mc).step_by(MR) {
                        let a_panel = &packed_a[(ir / MR) * kc * MR..(ir / MR + 1) * kc * MR];
                        let tile = Tile {
                            row: ic + ir,
                            col: jc + jr,
                            rows: MR.min(mc - ir),
                            cols: NR.min(nc - jr),
                        };
                        micro_kernel(a_panel, b_panel, c, ldc, tile, load_c);
                    }
                }
            }
        }
    }
}

/// Pack `B[pc..pc+kc, jc..jc+nc]` as consecutive `kc × NR` panels (zero-padded columns).
fn pack_b<T: GemmScalar>(
    b: &MatRef<'_, T>,
    pc: usize,
    kc: usize,
    jc: usize,
    nc: usize,
    out: &mut [T],
) {
    for (panel, j0) in (0..nc).step_by(NR).enumerate() {
        let cols = NR.min(nc - j0);
        let dst = &mut out[panel * kc * NR..(panel + 1) * kc * NR];
        for p in 0..kc {
            let row = &mut dst[p * NR..(p + 1) * NR];
            if b.col_stride == 1 && cols == NR {
                let start = (pc + p) * b.row_stride + jc + j0;
                row.copy_from_slice(&b.data[start..start + NR]);
            } else {
                for (j, slot) in row.iter_mut().enumerate() {
                    *slot = if j < cols {
                        b.at(pc + p, jc + j0 + j)
                    } else {
                        T::default()
                    };
                }
            }
        }
    }
}

/// Pack `A[ic..ic+mc, pc..pc+kc]` as consecutive `kc × MR` panels (zero-padded rows).
fn pack_a<T: GemmScalar>(
    a: &MatRef<'_, T>,
    ic: usize,
    mc: usize,
    pc: usize,
    kc: usize,
    out: &mut [T],
) {
    for (panel, i0) in (0..mc).step_by(MR).enumerate() {
        let rows = MR.min(mc - i0);
        let dst = &mut out[panel * kc * MR..(panel + 1) * kc * MR];
        for i in 0..MR {
            if i < rows {
                let r = ic + i0 + i;
                for p in 0..kc {
                    dst[p * MR + i] = a.at(r, pc + p);
                }
            } else {
                for p in 0..kc {
                    dst[p * MR + i] = T::default();
                }
            }
        }
    }
}

/// Where a micro-kernel tile sits in C, and how much of it is real (edge tiles are partial).
#[derive(Copy, Clone)]
struct Tile {
    row: usize,
    col: usize,
    rows: usize,
    cols: usize,
}

/// `C[tile] (=|+=) A_panel · B_panel` over one K block: C's tile is staged in a local
/// array around the register kernel, so partial edge tiles cost nothing extra there.
#[inline(always)]
fn micro_kernel<T: GemmScalar>(
    a_panel: &[T],
    b_panel: &[T],
    c: &mut [T],
    ldc: usize,
    tile: Tile,
    load_c: bool,
) {
    let mut acc = [[T::default(); NR]; MR];
    if load_c {
        for (i, acc_row) in acc.iter_mut().enumerate().take(tile.rows) {
            let start = (tile.row + i) * ldc + tile.col;
            acc_row[..tile.cols].copy_from_slice(&c[start..start + tile.cols]);
        }
    }
    register_kernel(a_panel, b_panel, &mut acc);
    for (i, acc_row) in acc.iter().enumerate().take(tile.rows) {
        let start = (tile.row + i) * ldc + tile.col;
        c[start..start + tile.cols].copy_from_slice(&acc_row[..tile.cols]);
    }
}

/// The inner loop over K. Kept out of line: inlined into the blocking loops, LLVM loses
/// track of the accumulator array and emits scalar code (measured: 4× slower).
#[inline(never)]
fn register_kernel<T: GemmScalar>(a_panel: &[T], b_panel: &[T], out: &mut [[T; NR]; MR]) {
    let mut acc = *out;
    for (a, b) in a_panel.chunks_exact(MR).zip(b_panel.chunks_exact(NR)) {
        let a: [T; MR] = a.try_into().expect("chunks_exact yields MR elements");
        let b: [T; NR] = b.try_into().expect("chunks_exact yields NR elements");
        for (row, &ai) in acc.iter_mut().zip(&a) {
            for (v, &bj) in row.iter_mut().zip(&b) {
                *v = T::mul_add(*v, ai, bj);
            }
        }
    }
    *out = acc;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random values (SplitMix64-style hash of the index).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let mut z = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The textbook triple loop with the same summation order: the result must be
    /// bit-identical.
    fn naive(a: MatRef<'_, f32>, b: MatRef<'_, f32>, c0: &[f32]) -> Vec<f32> {
        let mut c = c0.to_vec();
        for i in 0..a.rows {
            for j in 0..b.cols {
                let mut s = c[i * b.cols + j];
                for p in 0..a.cols {
                    s += a.at(i, p) * b.at(p, j);
                }
                c[i * b.cols + j] = s;
            }
        }
        c
    }

    #[test]
    fn blocked_gemm_equals_naive_loop_bitwise() {
        // sizes straddling every block boundary (MR, NR, KC, MC, NC edges)
        let shapes = [
            (1, 1, 1),
            (3, 5, 7),
            (4, 8, 256),
            (5, 9, 257),
            (65, 300, 17),
            (70, 2100, 3),
            (2, 600, 40),
            (130, 33, 520),
        ];
        for (si, &(m, k, n)) in shapes.iter().enumerate() {
            let av = values(m * k, si as u64);
            let bv = values(k * n, 100 + si as u64);
            let c0 = values(m * n, 200 + si as u64);
            for trans in [false, true] {
                let a = if trans {
                    MatRef::row_major(&av, k, m).t()
                } else {
                    MatRef::row_major(&av, m, k)
                };
                let b = MatRef::row_major(&bv, k, n);
                for accumulate in [false, true] {
                    let start = if accumulate {
                        c0.clone()
                    } else {
                        vec![0.0; m * n]
                    };
                    let want = naive(a, b, &start);
                    for threads in [1, 2, 3] {
                        let mut c = if accumulate {
                            c0.clone()
                        } else {
                            vec![f32::NAN; m * n]
                        };
                        gemm_with_threads(threads, a, b, &mut c, accumulate);
                        assert!(
                            c.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()),
                            "m={m} k={k} n={n} trans={trans} acc={accumulate} threads={threads}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn integer_gemm_wraps_and_matches_naive() {
        let (m, k, n) = (7, 300, 11);
        let a: Vec<i32> = (0..m * k).map(|i| (i as i32 * 37) % 255 - 128).collect();
        let b: Vec<i32> = (0..k * n).map(|i| (i as i32 * 91) % 255 - 127).collect();
        let mut c = vec![0i32; m * n];
        gemm_with_threads(
            2,
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&b, k, n),
            &mut c,
            false,
        );
        for i in 0..m {
            for j in 0..n {
                let want: i32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                assert_eq!(c[i * n + j], want);
            }
        }
        // i32::MAX + 1·1 wraps to i32::MIN
        let mut c = vec![i32::MAX];
        gemm_with_threads(
            1,
            MatRef::row_major(&[1], 1, 1),
            MatRef::row_major(&[1], 1, 1),
            &mut c,
            true,
        );
        assert_eq!(c, [i32::MIN]);
    }

    #[test]
    fn parallel_paths_are_taken_for_big_products() {
        // m large → row bands; m tiny → column bands. Both must match one thread exactly.
        for &(m, k, n) in &[(256, 128, 64), (1, 2048, 1000)] {
            let av = values(m * k, 1);
            let bv = values(k * n, 2);
            let a = MatRef::row_major(&av, m, k);
            let b = MatRef::row_major(&bv, k, n);
            let mut one = vec![0.0; m * n];
            let mut two = vec![0.0; m * n];
            gemm_with_threads(1, a, b, &mut one, false);
            gemm_with_threads(2, a, b, &mut two, false);
            assert!(one
                .iter()
                .zip(&two)
                .all(|(x, y)| x.to_bits() == y.to_bits()));
            assert!(m * n * k >= PARALLEL_MIN_MACS);
        }
    }
}
