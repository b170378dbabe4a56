//! Streaming histograms of observed values and the range choices made from them (percentile,
//! entropy, MSE, distribution), reproducing onnxruntime's `HistogramCollector` bin for bin.
//!
//! Two kinds, as in onnxruntime:
//! - [`Histogram`] spans `[−t, t]` (`t` = the largest |x| seen) — `collect_value`, used by
//!   the entropy, distribution, MSE and asymmetric percentile methods;
//! - [`AbsHistogram`] counts |x| over `[0, max |x|]` — `collect_absolute_value`, used by the
//!   symmetric percentile method.
//!
//! When a later tensor exceeds the range, both grow onnxruntime's way: keep the bin width and
//! add bins (at both ends of the signed one, at the top of the absolute one), so old counts
//! never move. Bin edges are computed with numpy's f32 `linspace`/`histogram` arithmetic so
//! that the counts equal numpy's exactly. Unlike onnxruntime, the bin count is capped
//! (`max_bins`): a range that grows past the cap merges neighbouring bins (old edges are
//! kept as a subset, so counts move exactly), keeping memory bounded however the range grows.
//! Non-finite values are skipped and counted.

use crate::scheme::{scale_zero_point, SchemeError, TensorScheme};

/// onnxruntime's default for percentile and distribution, and TensorRT's for entropy.
pub const DEFAULT_BINS: usize = 2048;
/// The default cap on the number of bins a growing histogram may reach.
pub const DEFAULT_MAX_BINS: usize = 8 * DEFAULT_BINS;
/// Candidate clip positions tried on each side of zero by [`Histogram::mse_candidates`].
pub const MSE_POSITIONS_PER_SIDE: usize = 256;

/// A real range `[min, max]`.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Range {
    pub min: f32,
    pub max: f32,
}

/// The finite minimum and maximum of `values` and how many values were not finite.
pub(crate) fn finite_min_max(values: &[f32]) -> (Option<(f32, f32)>, u64) {
    let mut lo = f32::INFINITY;
    let mut hi = f32::NEG_INFINITY;
    let mut non_finite = 0u64;
    for &v in values {
        if v.is_finite() {
            lo = lo.min(v);
            hi = hi.max(v);
        } else {
            non_finite += 1;
        }
    }
    let range = (lo <= hi).then_some((lo, hi));
    (range, non_finite)
}

/// numpy's `linspace(first, last, n + 1)` in f32, as `np.histogram` computes uniform bin
/// edges for float32 data: `edges[i] = f32(i) · step + first` with `step = (last − first) / n`,
/// and the last edge exactly `last`.
fn linspace_edges(first: f32, last: f32, n: usize) -> Vec<f32> {
    let delta = last - first;
    if !delta.is_finite() {
        // a range wider than f32::MAX (numpy would produce NaN edges): step in f64
        let step = (last as f64 - first as f64) / n as f64;
        let mut edges: Vec<f32> = (0..=n)
            .map(|i| (first as f64 + i as f64 * step) as f32)
            .collect();
        edges[n] = last;
        return edges;
    }
    let step = delta / n as f32;
    let mut edges: Vec<f32> = if step == 0.0 && delta != 0.0 {
        // numpy's branch for a subnormal step: divide first, then multiply by delta
        (0..=n)
            .map(|i| (i as f32 / n as f32) * delta + first)
            .collect()
    } else {
        (0..=n).map(|i| i as f32 * step + first).collect()
    };
    edges[n] = last;
    edges
}

/// `np.histogram(values, n, range=(first, last))` for f32 values: numpy's approximate bin
/// index in f32, then its one-step correction against the edges. Values outside
/// `[first, last]` (and non-finite ones) are not counted.
fn add_uniform(values: impl Iterator<Item = f32>, edges: &[f32], counts: &mut [u64]) {
    let n = counts.len();
    let (first, last) = (edges[0], edges[n]);
    let denom = last - first;
    if !denom.is_finite() {
        let edges: Vec<f64> = edges.iter().map(|&e| e as f64).collect();
        return add_by_edges(values, &edges, counts);
    }
    for x in values {
        if !(x >= first && x <= last) {
            continue;
        }
        let mut k = (((x - first) / denom) * n as f32) as usize;
        if k >= n {
            k = n - 1;
        }
        if x < edges[k] {
            k = k.saturating_sub(1);
        } else if k != n - 1 && x >= edges[k + 1] {
            k += 1;
        }
        counts[k] += 1;
    }
}

/// `np.histogram(values, bins=edges)` for explicit (f64) edges: bin `i` counts
/// `edges[i] <= x < edges[i+1]`, the last bin includes its right edge, values outside are
/// not counted.
fn add_by_edges(values: impl Iterator<Item = f32>, edges: &[f64], counts: &mut [u64]) {
    let n = counts.len();
    let (first, last) = (edges[0], edges[n]);
    let width = (last - first) / n as f64;
    for x in values {
        let x = x as f64;
        if !(x >= first && x <= last) {
            continue;
        }
        let mut k = if width > 0.0 {
            (((x - first) / width) as usize).min(n - 1)
        } else {
            0
        };
        while k > 0 && x < edges[k] {
            k -= 1;
        }
        while k + 1 < n && x >= edges[k + 1] {
            k += 1;
        }
        counts[k] += 1;
    }
}

/// Edges of a symmetric histogram over `[−t, t]`; numpy widens an empty range to ±0.5.
fn symmetric_edges(t: f32, n: usize) -> Vec<f32> {
    if t == 0.0 {
        linspace_edges(-0.5, 0.5, n)
    } else {
        linspace_edges(-t, t, n)
    }
}

/// numpy's float32 `floor_divide` (`npy_divmodf`) for positive operands.
fn floor_divide_f32(a: f32, b: f32) -> f32 {
    let rem = a % b;
    let div = (a - rem) / b;
    if div == 0.0 {
        return 0.0;
    }
    let floor = div.floor();
    if div - floor > 0.5 {
        floor + 1.0
    } else {
        floor
    }
}

/// Running counters shared by both histogram kinds.
#[derive(Clone, Debug, Default, PartialEq)]
struct Extremes {
    /// Finite minimum and maximum of everything added.
    min_max: Option<(f32, f32)>,
    finite: u64,
    non_finite: u64,
}

impl Extremes {
    /// Scan a tensor's values: its finite extremes (merged into the running ones), counts.
    fn scan(&mut self, values: &[f32]) -> Option<(f32, f32)> {
        let (range, non_finite) = finite_min_max(values);
        self.non_finite += non_finite;
        self.finite += values.len() as u64 - non_finite;
        if let Some((lo, hi)) = range {
            self.min_max = Some(match self.min_max {
                None => (lo, hi),
                Some((a, b)) => (a.min(lo), b.max(hi)),
            });
        }
        range
    }
}

/// A histogram over `[−t, t]` that grows symmetrically (onnxruntime's `collect_value` and
/// `merge_histogram`).
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    counts: Vec<u64>,
    edges: Vec<f32>,
    /// onnxruntime's `threshold`: the half-width the edges were computed from (0 while only
    /// zeros were seen, when the edges are ±0.5).
    threshold: f32,
    initial_bins: usize,
    max_bins: usize,
    extremes: Extremes,
}

impl Histogram {
    /// A histogram that starts with `bins` bins (even, ≥ 2) and may grow to `max_bins`.
    pub fn new(bins: usize, max_bins: usize) -> Histogram {
        let bins = bins.max(2) & !1;
        Histogram {
            counts: Vec::new(),
            edges: Vec::new(),
            threshold: 0.0,
            initial_bins: bins,
            max_bins: max_bins.max(bins),
            extremes: Extremes::default(),
        }
    }

    /// Add one tensor's values (one onnxruntime `collect` call).
    pub fn add(&mut self, values: &[f32]) {
        let Some((lo, hi)) = self.extremes.scan(values) else {
            return; // nothing finite: nothing to bin
        };
        let finite = || values.iter().copied().filter(|v| v.is_finite());
        let t = lo.abs().max(hi.abs());
        if self.counts.is_empty() {
            self.threshold = t;
            self.edges = symmetric_edges(t, self.initial_bins);
            self.counts = vec![0; self.initial_bins];
            add_uniform(finite(), &self.edges, &mut self.counts);
        } else if t <= self.threshold {
            add_uniform(finite(), &self.edges, &mut self.counts);
        } else if self.threshold == 0.0 {
            // only zeros so far (in the middle bin of ±0.5): re-bin over ±t with as many bins
            // and add the old counts index for index, as onnxruntime does
            let edges = symmetric_edges(t, self.counts.len());
            let mut counts = vec![0; self.counts.len()];
            add_uniform(finite(), &edges, &mut counts);
            counts
                .iter_mut()
                .zip(&self.counts)
                .for_each(|(c, o)| *c += o);
            (self.counts, self.edges, self.threshold) = (counts, edges, t);
        } else {
            let old_n = self.counts.len();
            let old_stride = 2.0 * self.threshold / old_n as f32;
            let half = floor_divide_f32(t - self.threshold, old_stride) + 1.0;
            // in f64: a tiny first range followed by a large one can ask for more bins than
            // usize holds; NaN means the old stride underflowed to 0 — merge in both cases
            let wanted = old_n as f64 + 2.0 * half as f64;
            if wanted.is_nan() || wanted > self.max_bins as f64 {
                self.grow_merging(finite(), t);
                return;
            }
            let new_t = half * old_stride + self.threshold;
            let half = half as usize;
            let edges = symmetric_edges(new_t, old_n + 2 * half);
            let mut counts = vec![0; old_n + 2 * half];
            add_uniform(finite(), &edges, &mut counts);
            counts[half..half + old_n]
                .iter_mut()
                .zip(&self.counts)
                .for_each(|(c, o)| *c += o);
            (self.counts, self.edges, self.threshold) = (counts, edges, new_t);
        }
    }

    /// Growth past `max_bins`: merge `f` old bins into one so that `[−t, t]` fits in at most
    /// `max_bins` bins. With `d` old bins of padding on the left, old bin `j` lies exactly in
    /// new bin `(j + d) / f`, and zero stays an edge.
    fn grow_merging(&mut self, values: impl Iterator<Item = f32>, t: f32) {
        // bin counts and offsets in f64: exact for any realistic growth, and no overflow
        // (only clamped placement) when a tiny first range meets a huge one
        let old_n = self.counts.len();
        let old_half = (old_n / 2) as f64;
        let stride = 2.0 * self.threshold as f64 / old_n as f64;
        let needed_half = (t as f64 / stride).ceil().max(old_half + 1.0);
        let max_half = (self.max_bins / 2).max(1) as f64;
        let factor = (needed_half / max_half).ceil();
        let new_half = (needed_half / factor).ceil();
        let pad = new_half * factor - old_half;
        let new_n = 2 * new_half as usize;
        // new_half·factor ≥ t/stride; the max guards the last rounding
        let new_t = ((new_half * factor * stride) as f32).max(t);
        let edges = symmetric_edges(new_t, new_n);
        let mut counts = vec![0; new_n];
        add_uniform(values, &edges, &mut counts);
        for (j, &c) in self.counts.iter().enumerate() {
            let k = ((j as f64 + pad) / factor).floor() as usize;
            counts[k.min(new_n - 1)] += c;
        }
        (self.counts, self.edges, self.threshold) = (counts, edges, new_t);
    }

    /// Bin counts (empty before the first finite value).
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Bin edges, `counts().len() + 1` of them.
    pub fn edges(&self) -> &[f32] {
        &self.edges
    }

    /// Finite minimum and maximum of everything added.
    pub fn min_max(&self) -> Option<(f32, f32)> {
        self.extremes.min_max
    }

    pub fn finite_count(&self) -> u64 {
        self.extremes.finite
    }

    pub fn non_finite_count(&self) -> u64 {
        self.extremes.non_finite
    }

    /// onnxruntime's `compute_percentile` on this (signed) histogram: cut `(100 − p)/2`
    /// percent on each side.
    pub fn percentile_range(&self, percentile: f64) -> Option<Range> {
        let (min, max) = self.extremes.min_max?;
        Some(percentile_of(
            &self.counts,
            &self.edges,
            min,
            max,
            percentile,
            false,
        ))
    }

    /// The range and KL divergence of every threshold candidate onnxruntime's
    /// `get_entropy_threshold` tries, in its order (see [`Histogram::entropy_range`]).
    pub fn entropy_candidates(&self, quantized_bins: usize) -> Vec<(Range, f64)> {
        entropy_candidates(&self.counts, &self.edges, quantized_bins)
    }

    /// onnxruntime's entropy method (TensorRT's KL calibration on a symmetric histogram):
    /// for `i` from `quantized_bins/2` to `n/2` take the bins `[n/2 − i, n/2 + i + 1)`, fold
    /// the outliers into the first and last of them (`p`), merge those bins into
    /// `quantized_bins` groups and spread each group's count evenly over its non-empty bins
    /// (`q`, truncated to integers), smooth both with ε = 1e-4, and keep the `i` with the
    /// smallest KL(p‖q); its edges, clamped to the observed min/max, are the range. KL is
    /// computed in f64 here (onnxruntime: f32), so near-ties may pick a neighbouring
    /// candidate. `None` if nothing was observed or the histogram has fewer bins than
    /// `quantized_bins`.
    pub fn entropy_range(&self, quantized_bins: usize) -> Option<Range> {
        let (min, max) = self.extremes.min_max?;
        let candidates = self.entropy_candidates(quantized_bins);
        let mut best: Option<(Range, f64)> = None;
        for (r, kl) in candidates {
            if best.is_none_or(|(_, b)| kl < b) {
                best = Some((r, kl));
            }
        }
        let (r, _) = best?;
        Some(Range {
            min: if r.min < min { min } else { r.min },
            max: if r.max > max { max } else { r.max },
        })
    }

    /// onnxruntime's `distribution` method's range: the histogram's outer edges.
    pub fn distribution_range(&self) -> Option<Range> {
        Some(Range {
            min: *self.edges.first()?,
            max: *self.edges.last()?,
        })
    }

    /// Mean and standard deviation of the histogram (bin centres weighted by counts), as
    /// onnxruntime's `_avg_std` computes them for the distribution method: centres in f32,
    /// sums in f64, results rounded to f32.
    pub fn mean_std(&self) -> Option<(f32, f32)> {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return None;
        }
        let (mut sum, mut sum_sq) = (0.0f64, 0.0f64);
        for (i, &c) in self.counts.iter().enumerate() {
            let centre = (self.edges[i] + self.edges[i + 1]) * 0.5;
            sum += c as f64 * centre as f64;
            sum_sq += c as f64 * (centre * centre) as f64;
        }
        let avg = sum / total as f64;
        let std = (sum_sq / total as f64 - avg * avg).max(0.0).sqrt();
        Some((avg as f32, std as f32))
    }

    /// The clip ranges the MSE method chooses from: pairs (left edge at or below the middle
    /// edge, right edge at or above it), each side stepping over the edges with a stride that
    /// keeps at most [`MSE_POSITIONS_PER_SIDE`] + 1 positions (always including the outermost
    /// edge and the middle one), clamped to the observed min/max, in order of left position
    /// then right position. Candidates whose parameters would be degenerate (the range
    /// widened to include 0 is empty) are left out.
    pub fn mse_candidates(&self, scheme: &TensorScheme) -> Vec<Range> {
        let Some((min, max)) = self.extremes.min_max else {
            return Vec::new();
        };
        let Ok((qmin, qmax)) = scheme.int_range() else {
            return Vec::new();
        };
        let n = self.counts.len();
        let mid = n / 2;
        let positions = |from: usize, to: usize| -> Vec<usize> {
            // from `from` towards `to` (inclusive both), stride chosen to bound the count
            let len = from.abs_diff(to);
            let stride = len.div_ceil(MSE_POSITIONS_PER_SIDE).max(1);
            let mut p: Vec<usize> = (0..=len / stride)
                .map(|k| {
                    if to >= from {
                        from + k * stride
                    } else {
                        from - k * stride
                    }
                })
                .collect();
            if p.last() != Some(&to) {
                p.push(to);
            }
            p
        };
        let mut left = positions(mid, 0);
        left.reverse();
        let right = positions(mid, n);
        let mut out = Vec::with_capacity(left.len() * right.len());
        for &a in &left {
            let lo = self.edges[a].max(min);
            for &b in &right {
                let hi = self.edges[b].min(max);
                let span = hi.max(0.0) as f64 - lo.min(0.0) as f64;
                if lo <= hi && span / (qmax - qmin) as f64 >= f32::MIN_POSITIVE as f64 {
                    out.push(Range { min: lo, max: hi });
                }
            }
        }
        out
    }

    /// The expected squared quantization error of clipping to `range` under `scheme`, per
    /// observed value, modelling the values of each bin as spread uniformly over it: the
    /// parameters are [`scale_zero_point`]`(range)`, the representable interval is
    /// `[s·(qmin − zp), s·(qmax − zp)]`, a value outside it costs its squared distance to
    /// the nearer end (integrated exactly over each bin), and a value inside costs the
    /// rounding noise `s²/12`.
    pub fn mse_error(&self, range: Range, scheme: &TensorScheme) -> Result<f64, SchemeError> {
        let (qmin, qmax) = scheme.int_range()?;
        let (s, zp) = scale_zero_point(range.min, range.max, scheme)?;
        let table = MseTable::new(&self.counts, &self.edges);
        let lo = s as f64 * (qmin - zp) as f64;
        let hi = s as f64 * (qmax - zp) as f64;
        Ok(table.error(lo, hi, s as f64) / table.total().max(1.0))
    }

    /// The MSE method: the candidate of [`Histogram::mse_candidates`] with the smallest
    /// [`Histogram::mse_error`] (the first one on ties); `None` when nothing was observed,
    /// the observed min/max when every candidate is degenerate (an all-zero tensor).
    pub fn mse_range(&self, scheme: &TensorScheme) -> Result<Option<Range>, SchemeError> {
        let Some((min, max)) = self.extremes.min_max else {
            return Ok(None);
        };
        let (qmin, qmax) = scheme.int_range()?;
        let table = MseTable::new(&self.counts, &self.edges);
        let mut best: Option<(Range, f64)> = None;
        for r in self.mse_candidates(scheme) {
            let (s, zp) = scale_zero_point(r.min, r.max, scheme)?;
            let lo = s as f64 * (qmin - zp) as f64;
            let hi = s as f64 * (qmax - zp) as f64;
            let e = table.error(lo, hi, s as f64);
            if best.is_none_or(|(_, b)| e < b) {
                best = Some((r, e));
            }
        }
        Ok(Some(best.map_or(Range { min, max }, |(r, _)| r)))
    }
}

/// Prefix sums over the bins for O(log n) evaluation of [`Histogram::mse_error`].
struct MseTable {
    /// f64 edges.
    edges: Vec<f64>,
    counts: Vec<f64>,
    /// Σ n, Σ n·m, Σ n·m², Σ n·w²/12 over bins `[0, j)` (m: bin centre, w: bin width).
    n: Vec<f64>,
    m1: Vec<f64>,
    m2: Vec<f64>,
    w2: Vec<f64>,
}

impl MseTable {
    fn new(counts: &[u64], edges: &[f32]) -> MseTable {
        let len = counts.len();
        let mut t = MseTable {
            edges: edges.iter().map(|&e| e as f64).collect(),
            counts: counts.iter().map(|&c| c as f64).collect(),
            n: vec![0.0; len + 1],
            m1: vec![0.0; len + 1],
            m2: vec![0.0; len + 1],
            w2: vec![0.0; len + 1],
        };
        for j in 0..len {
            let (u, v, c) = (t.edges[j], t.edges[j + 1], t.counts[j]);
            let (m, w) = ((u + v) / 2.0, v - u);
            t.n[j + 1] = t.n[j] + c;
            t.m1[j + 1] = t.m1[j] + c * m;
            t.m2[j + 1] = t.m2[j] + c * m * m;
            t.w2[j + 1] = t.w2[j] + c * w * w / 12.0;
        }
        t
    }

    fn total(&self) -> f64 {
        self.n.last().copied().unwrap_or(0.0)
    }

    /// Σ over bins `[a, b)` of ∫ (x − c)² for values uniform in each bin.
    fn clipped(&self, a: usize, b: usize, c: f64) -> f64 {
        if a >= b {
            return 0.0;
        }
        let n = self.n[b] - self.n[a];
        let m1 = self.m1[b] - self.m1[a];
        let m2 = self.m2[b] - self.m2[a];
        let w2 = self.w2[b] - self.w2[a];
        (m2 - 2.0 * c * m1 + c * c * n + w2).max(0.0)
    }

    /// Exact error of one bin (for the bins the clip points fall in).
    fn bin(&self, j: usize, lo: f64, hi: f64, noise: f64) -> f64 {
        let (u, v, c) = (self.edges[j], self.edges[j + 1], self.counts[j]);
        if c == 0.0 {
            return 0.0;
        }
        let w = v - u;
        if w <= 0.0 {
            let d = if u < lo {
                (lo - u).powi(2)
            } else if u > hi {
                (u - hi).powi(2)
            } else {
                noise
            };
            return c * d;
        }
        let mut e = 0.0;
        let below_end = v.min(lo);
        if below_end > u {
            e += ((lo - u).powi(3) - (lo - below_end).powi(3)) / 3.0;
        }
        let above_start = u.max(hi);
        if above_start < v {
            e += ((v - hi).powi(3) - (above_start - hi).powi(3)) / 3.0;
        }
        let (in_lo, in_hi) = (u.max(lo), v.min(hi));
        if in_hi > in_lo {
            e += (in_hi - in_lo) * noise;
        }
        c * e / w
    }

    /// Total squared error for the representable interval `[lo, hi]` and scale `s`.
    fn error(&self, lo: f64, hi: f64, s: f64) -> f64 {
        let len = self.counts.len();
        let noise = s * s / 12.0;
        // bins [0, jl) lie entirely at or below lo; bins [jh, len) at or above hi
        let jl = self.edges[1..].partition_point(|&v| v <= lo).min(len);
        let jh = self.edges[..len].partition_point(|&u| u < hi).max(jl);
        let mut e = self.clipped(0, jl, lo) + self.clipped(jh, len, hi);
        if jl < jh {
            e += self.bin(jl, lo, hi, noise);
            if jh - 1 > jl {
                e += self.bin(jh - 1, lo, hi, noise);
                e += (self.n[jh - 1] - self.n[jl + 1]) * noise;
            }
        }
        e
    }
}

/// A histogram of |x| over `[0, max |x|]` that grows upwards (onnxruntime's
/// `collect_absolute_value`). onnxruntime starts the first histogram at the smallest |x| of
/// the first tensor, so later values below it are silently dropped; this one starts at 0 and
/// drops nothing (the two agree whenever the first tensor contains a 0).
#[derive(Clone, Debug, PartialEq)]
pub struct AbsHistogram {
    counts: Vec<u64>,
    edges: Vec<f32>,
    initial_bins: usize,
    max_bins: usize,
    extremes: Extremes,
}

impl AbsHistogram {
    pub fn new(bins: usize, max_bins: usize) -> AbsHistogram {
        let bins = bins.max(1);
        AbsHistogram {
            counts: Vec::new(),
            edges: Vec::new(),
            initial_bins: bins,
            max_bins: max_bins.max(bins),
            extremes: Extremes::default(),
        }
    }

    /// Add one tensor's values.
    pub fn add(&mut self, values: &[f32]) {
        let Some((lo, hi)) = self.extremes.scan(values) else {
            return;
        };
        let abs = || values.iter().filter(|v| v.is_finite()).map(|v| v.abs());
        let amax = lo.abs().max(hi.abs());
        if self.counts.is_empty() {
            self.edges = if amax == 0.0 {
                linspace_edges(-0.5, 0.5, self.initial_bins)
            } else {
                linspace_edges(0.0, amax, self.initial_bins)
            };
            self.counts = vec![0; self.initial_bins];
            add_uniform(abs(), &self.edges, &mut self.counts);
            return;
        }
        let old_n = self.counts.len();
        let last = self.edges[old_n];
        if amax <= last {
            let edges: Vec<f64> = self.edges.iter().map(|&e| e as f64).collect();
            add_by_edges(abs(), &edges, &mut self.counts);
            return;
        }
        // onnxruntime: np.arange(last + width, amax + width, width) — numpy computes the
        // length and the second element in f32 and the rest in f64 — appended to the edges
        let width = self.edges[1] - self.edges[0];
        let start = last + width;
        let stop = amax + width;
        let added = if width > 0.0 {
            (((stop - start) / width) as f64).ceil().max(0.0)
        } else {
            f64::INFINITY // the width underflowed: only merging can grow this histogram
        };
        if old_n as f64 + added > self.max_bins as f64 {
            self.grow_merging(abs(), amax);
            return;
        }
        let added = added as usize;
        let mut edges: Vec<f64> = self.edges.iter().map(|&e| e as f64).collect();
        let second = (start + width) as f64;
        let delta = second - start as f64;
        edges.extend((0..added).map(|i| match i {
            0 => start as f64,
            1 => second,
            _ => start as f64 + i as f64 * delta,
        }));
        let mut counts = vec![0; edges.len() - 1];
        add_by_edges(abs(), &edges, &mut counts);
        counts[..old_n]
            .iter_mut()
            .zip(&self.counts)
            .for_each(|(c, o)| *c += o);
        self.counts = counts;
        self.edges = edges.into_iter().map(|e| e as f32).collect();
    }

    /// Growth past `max_bins`: merge `f` old bins into one (old bin `j` → new bin `j / f`).
    fn grow_merging(&mut self, values: impl Iterator<Item = f32>, amax: f32) {
        let old_n = self.counts.len();
        let first = self.edges[0] as f64;
        let width = (self.edges[old_n] as f64 - first) / old_n as f64;
        let needed = ((amax as f64 - first) / width)
            .ceil()
            .max(old_n as f64 + 1.0);
        let factor = (needed / self.max_bins as f64).ceil();
        let new_n = (needed / factor).ceil() as usize;
        let mut edges: Vec<f64> = (0..=new_n)
            .map(|k| first + k as f64 * factor * width)
            .collect();
        // new_n·factor ≥ (amax − first)/width; the max guards the last rounding
        edges[new_n] = edges[new_n].max(amax as f64);
        let mut counts = vec![0; new_n];
        add_by_edges(values, &edges, &mut counts);
        for (j, &c) in self.counts.iter().enumerate() {
            counts[((j as f64 / factor).floor() as usize).min(new_n - 1)] += c;
        }
        self.counts = counts;
        self.edges = edges.into_iter().map(|e| e as f32).collect();
    }

    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    pub fn edges(&self) -> &[f32] {
        &self.edges
    }

    /// Finite minimum and maximum of the signed values added.
    pub fn min_max(&self) -> Option<(f32, f32)> {
        self.extremes.min_max
    }

    pub fn finite_count(&self) -> u64 {
        self.extremes.finite
    }

    pub fn non_finite_count(&self) -> u64 {
        self.extremes.non_finite
    }

    /// onnxruntime's symmetric `compute_percentile`: `±` the |x| below which `p` percent of
    /// the values lie, clamped to the observed signed min/max.
    pub fn percentile_range(&self, percentile: f64) -> Option<Range> {
        let (min, max) = self.extremes.min_max?;
        Some(percentile_of(
            &self.counts,
            &self.edges,
            min,
            max,
            percentile,
            true,
        ))
    }
}

/// onnxruntime's `compute_percentile`: `cdf = cumsum(counts / total)` (f64), the threshold is
/// the edge at `searchsorted(cdf, fraction)` (the first bin whose cdf reaches it), then
/// clamped to the observed min/max.
fn percentile_of(
    counts: &[u64],
    edges: &[f32],
    min: f32,
    max: f32,
    percentile: f64,
    absolute: bool,
) -> Range {
    let total: u64 = counts.iter().sum();
    let mut cdf = Vec::with_capacity(counts.len());
    let mut acc = 0.0f64;
    for &c in counts {
        acc += c as f64 / total as f64;
        cdf.push(acc);
    }
    let search = |v: f64| edges[cdf.partition_point(|&c| c < v)];
    let (lo, hi) = if absolute {
        let t = search(percentile / 100.0);
        (-t, t)
    } else {
        let cut = (100.0 - percentile) / 200.0;
        (search(cut), search(1.0 - cut))
    };
    Range {
        min: if lo < min { min } else { lo },
        max: if hi > max { max } else { hi },
    }
}

/// onnxruntime's `smooth_distribution` (ε = 1e-4): zeros become ε, the non-zero entries give
/// up the same total mass. `None` when everything is zero.
fn smooth(p: &[i64]) -> Option<Vec<f64>> {
    const EPS: f64 = 1e-4;
    let zeros = p.iter().filter(|&&v| v == 0).count();
    let nonzeros = p.len() - zeros;
    if nonzeros == 0 {
        return None;
    }
    let eps1 = EPS * zeros as f64 / nonzeros as f64;
    Some(
        p.iter()
            .map(|&v| if v == 0 { EPS } else { v as f64 - eps1 })
            .collect(),
    )
}

/// KL(p‖q) after normalizing both (scipy's `entropy`); infinite where q has no mass for p.
fn kl_divergence(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    let mut kl = 0.0;
    for (&a, &b) in p.iter().zip(q) {
        let (a, b) = (a / sp, b / sq);
        if a == 0.0 {
            continue;
        }
        if !(a > 0.0 && b > 0.0) {
            return f64::INFINITY;
        }
        kl += a * (a / b).ln();
    }
    kl
}

/// See [`Histogram::entropy_range`].
fn entropy_candidates(counts: &[u64], edges: &[f32], quantized_bins: usize) -> Vec<(Range, f64)> {
    let n = counts.len();
    let zero_bin = n / 2;
    let half_quantized = quantized_bins / 2;
    if quantized_bins == 0 || half_quantized > zero_bin {
        return Vec::new();
    }
    let mut prefix = vec![0i64; n + 1];
    for j in 0..n {
        prefix[j + 1] = prefix[j] + counts[j] as i64;
    }
    let mut out = Vec::with_capacity(zero_bin - half_quantized + 1);
    for i in half_quantized..=zero_bin {
        let start = zero_bin - i;
        let end = (zero_bin + i + 1).min(n);
        let sliced: Vec<i64> = counts[start..end].iter().map(|&c| c as i64).collect();
        let mut p = sliced.clone();
        p[0] += prefix[start];
        let last = p.len() - 1;
        p[last] += prefix[n] - prefix[end];
        let merged = sliced.len() / quantized_bins;
        let mut quantized = vec![0i64; quantized_bins];
        for (k, qb) in quantized.iter_mut().enumerate() {
            *qb = sliced[k * merged..(k + 1) * merged].iter().sum();
        }
        quantized[quantized_bins - 1] += sliced[quantized_bins * merged..].iter().sum::<i64>();
        let mut q = vec![0i64; p.len()];
        for (k, &group) in quantized.iter().enumerate() {
            let (a, b) = (k * merged, (k + 1) * merged);
            let norm = p[a..b].iter().filter(|&&v| v != 0).count();
            if norm != 0 {
                // onnxruntime stores the f64 quotient into an int64 array: truncation
                let v = (group as f64 / norm as f64) as i64;
                q[a..b].iter_mut().for_each(|x| *x = v);
            }
        }
        let kl = match (smooth(&p), smooth(&q)) {
            (Some(ps), Some(qs)) if qs.iter().all(|&v| v > 0.0) && ps.iter().all(|&v| v > 0.0) => {
                kl_divergence(&ps, &qs)
            }
            _ => f64::INFINITY,
        };
        out.push((
            Range {
                min: edges[start],
                max: edges[end],
            },
            kl,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheme::QuantScheme;

    /// Deterministic pseudo-normal values (sum of uniforms) for histogram tests.
    fn values(n: usize, scale: f32, seed: u64) -> Vec<f32> {
        let mut rng = crate::calib::SplitMix64::new(seed);
        (0..n).map(|_| rng.next_normal() * scale).collect()
    }

    #[test]
    fn uniform_binning_is_consistent_with_the_edges() {
        let v = values(5000, 3.0, 1);
        let mut h = Histogram::new(64, 1024);
        h.add(&v);
        assert_eq!(h.counts().iter().sum::<u64>(), 5000);
        // every value lies in its bin: recount by edges and compare
        let edges: Vec<f64> = h.edges().iter().map(|&e| e as f64).collect();
        let mut recount = vec![0; 64];
        add_by_edges(v.iter().copied(), &edges, &mut recount);
        assert_eq!(recount, h.counts());
        // the range is ±max|x| (numpy's linspace keeps both ends exact)
        let t = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert_eq!((h.edges()[0], h.edges()[64]), (-t, t));
    }

    #[test]
    fn growth_keeps_old_counts_and_stride() {
        let mut h = Histogram::new(64, 1 << 20);
        h.add(&[-1.0, 0.5, 1.0]);
        let stride = h.edges()[1] - h.edges()[0];
        h.add(&[2.5]);
        // t grows from 1 to 2.5 with stride 2/64: half = floor(1.5 / stride) + 1 = 49
        assert_eq!(h.counts().len(), 64 + 2 * 49);
        assert_eq!(h.counts().iter().sum::<u64>(), 4);
        let new_stride = h.edges()[1] - h.edges()[0];
        assert!(
            (new_stride - stride).abs() < 1e-6,
            "{new_stride} vs {stride}"
        );
        // -1 was in old bin 0, now bin 49; 2.5 is in the last bin
        assert_eq!(h.counts()[49], 1);
        assert_eq!(*h.counts().last().unwrap(), 1);
        assert_eq!(h.min_max(), Some((-1.0, 2.5)));
    }

    #[test]
    fn all_zero_first_tensor_then_growth() {
        let mut h = Histogram::new(8, 64);
        h.add(&[0.0, 0.0]);
        // numpy widens the empty range to ±0.5: zeros sit in the bin right of the middle
        assert_eq!(h.edges()[0], -0.5);
        assert_eq!(h.counts()[4], 2);
        h.add(&[-4.0, 4.0]);
        // re-binned over ±4 with the same 8 bins, old counts added index for index
        assert_eq!(h.edges()[0], -4.0);
        assert_eq!(h.counts(), &[1, 0, 0, 0, 2, 0, 0, 1]);
    }

    #[test]
    fn capped_growth_merges_bins_and_bounds_memory() {
        let mut h = Histogram::new(64, 256);
        h.add(&values(1000, 0.01, 2));
        for k in 1..6 {
            h.add(&values(1000, 10f32.powi(k), 2 + k as u64));
            assert!(h.counts().len() <= 256, "{} bins", h.counts().len());
            assert_eq!(h.counts().iter().sum::<u64>(), 1000 * (k as u64 + 1));
        }
        // every value of the last tensor is inside the range
        let (lo, hi) = h.min_max().unwrap();
        assert!(h.edges()[0] <= lo && *h.edges().last().unwrap() >= hi);

        let mut a = AbsHistogram::new(64, 256);
        a.add(&values(1000, 0.01, 3));
        for k in 1..6 {
            a.add(&values(1000, 10f32.powi(k), 3 + k as u64));
            assert!(a.counts().len() <= 256);
            assert_eq!(a.counts().iter().sum::<u64>(), 1000 * (k as u64 + 1));
        }
    }

    #[test]
    fn extreme_ranges_neither_panic_nor_lose_counts() {
        // a subnormal first range, then a huge one: the growth would need ~1e70 bins
        let mut h = Histogram::new(2048, 4096);
        h.add(&[1e-40, -1e-40]);
        h.add(&[1e30, -2.0, 0.0]);
        assert!(h.counts().len() <= 4096);
        assert_eq!(h.counts().iter().sum::<u64>(), 5);
        // a range wider than f32::MAX: edges stay finite and ordered
        let mut h = Histogram::new(8, 64);
        h.add(&[3e38, -3e38, 0.0]);
        assert!(h
            .edges()
            .windows(2)
            .all(|w| w[0] <= w[1] && w[0].is_finite()));
        assert_eq!(h.counts(), &[1, 0, 0, 0, 1, 0, 0, 1]);
        let mut a = AbsHistogram::new(64, 128);
        a.add(&[1e-40, 0.0]);
        a.add(&[1e30]);
        assert!(a.counts().len() <= 128);
        assert_eq!(a.counts().iter().sum::<u64>(), 3);
        // the smallest subnormal: its f32 bin width underflows to 0
        let mut h = Histogram::new(2048, 4096);
        h.add(&[1e-45]);
        h.add(&[1.0, -1.0]);
        assert_eq!(h.counts().iter().sum::<u64>(), 3);
        assert!(*h.edges().last().unwrap() >= 1.0);
        let mut a = AbsHistogram::new(2048, 4096);
        a.add(&[1e-45, 0.0]);
        a.add(&[1.0]);
        assert_eq!(a.counts().iter().sum::<u64>(), 3);
        assert!(*a.edges().last().unwrap() >= 1.0);
    }

    #[test]
    fn merging_moves_counts_to_the_bins_that_contain_them() {
        // one value per old bin; after a capped growth each must land in the new bin whose
        // edges contain the old bin's centre
        let mut h = Histogram::new(16, 32);
        let stride = 2.0 / 16.0;
        let centres: Vec<f32> = (0..16).map(|j| -1.0 + (j as f32 + 0.5) * stride).collect();
        // (not +1.0: a value on the old right edge sits in the old last bin, left of the
        // new edge at 1.0 — onnxruntime's growth has the same off-by-one-edge placement)
        h.add(&[-1.0, 0.99]);
        h.add(&centres);
        h.add(&[7.3]);
        assert!(h.counts().len() <= 32);
        let edges: Vec<f64> = h.edges().iter().map(|&e| e as f64).collect();
        let mut expect = vec![0u64; h.counts().len()];
        let mut all = vec![-1.0f32, 0.99, 7.3];
        all.extend(&centres);
        add_by_edges(all.iter().copied(), &edges, &mut expect);
        assert_eq!(h.counts(), expect.as_slice());
    }

    #[test]
    fn non_finite_values_are_skipped_and_counted() {
        let mut h = Histogram::new(8, 64);
        h.add(&[f32::NAN, 1.0, f32::INFINITY, -2.0, f32::NEG_INFINITY]);
        assert_eq!(h.non_finite_count(), 3);
        assert_eq!(h.finite_count(), 2);
        assert_eq!(h.counts().iter().sum::<u64>(), 2);
        assert_eq!(h.min_max(), Some((-2.0, 1.0)));
        h.add(&[f32::NAN]);
        assert_eq!(h.non_finite_count(), 4);
        let mut a = AbsHistogram::new(8, 64);
        a.add(&[f32::NAN]);
        assert!(a.percentile_range(99.0).is_none());
    }

    #[test]
    fn percentile_hand_derived() {
        // |x| histogram of 0..=99 over [0, 99] with 99 bins of width 1: bin k holds k (and
        // 99 joins bin 98), so cdf[k] = (k+1)/100. 89.5% is first reached at bin 89 (0.90),
        // whose left edge is 89; −89 is clamped to the observed minimum 0.
        let v: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let mut a = AbsHistogram::new(99, 1000);
        a.add(&v);
        assert_eq!(
            a.percentile_range(89.5),
            Some(Range {
                min: 0.0,
                max: 89.0
            })
        );
        // signed −50..=49 over ±50 with 100 bins of width 1: value i is in bin i + 50, so
        // cdf[k] = (k+1)/100. Percentile 91 cuts 4.5% per side: 0.045 is first reached at
        // bin 4 (edge −46), 0.955 at bin 95 (edge 45).
        let v: Vec<f32> = (-50..50).map(|i| i as f32).collect();
        let mut h = Histogram::new(100, 1000);
        h.add(&v);
        let r = h.percentile_range(91.0).unwrap();
        assert_eq!(
            r,
            Range {
                min: -46.0,
                max: 45.0
            }
        );
    }

    #[test]
    fn entropy_clips_a_long_tail() {
        // a narrow normal plus one far outlier: the KL-optimal range is far inside the
        // outlier, and the candidates are symmetric histogram slices
        let mut v = values(20000, 1.0, 7);
        v.push(100.0);
        let mut h = Histogram::new(2048, 1 << 16);
        h.add(&v);
        let r = h.entropy_range(128).unwrap();
        assert!(r.max < 20.0 && r.max > 2.0, "{r:?}");
        let cands = h.entropy_candidates(128);
        assert_eq!(cands.len(), 1024 - 64 + 1);
        assert!(cands.iter().all(|(_, kl)| *kl >= 0.0));
        // too few bins for the quantized bins: no candidate
        let mut small = Histogram::new(64, 64);
        small.add(&v);
        assert!(small.entropy_range(128).is_none());
    }

    #[test]
    fn mse_error_matches_numeric_integration() {
        let v = values(5000, 1.0, 11);
        let mut h = Histogram::new(128, 1024);
        h.add(&v);
        let scheme = QuantScheme::default().activation();
        let (qmin, qmax) = scheme.int_range().unwrap();
        for r in [
            Range {
                min: -1.0,
                max: 2.0,
            },
            Range {
                min: -3.5,
                max: 0.7,
            },
            Range {
                min: -0.01,
                max: 0.02,
            },
        ] {
            let (s, zp) = scale_zero_point(r.min, r.max, &scheme).unwrap();
            let (lo, hi) = (s as f64 * (qmin - zp) as f64, s as f64 * (qmax - zp) as f64);
            // midpoint rule with 2000 points per bin of the same piecewise model
            let mut sum = 0.0;
            for (j, &c) in h.counts().iter().enumerate() {
                let (u, w) = (
                    h.edges()[j] as f64,
                    (h.edges()[j + 1] - h.edges()[j]) as f64,
                );
                let k = 2000;
                let mut e = 0.0;
                for i in 0..k {
                    let x = u + (i as f64 + 0.5) / k as f64 * w;
                    e += if x < lo {
                        (x - lo).powi(2)
                    } else if x > hi {
                        (x - hi).powi(2)
                    } else {
                        (s as f64).powi(2) / 12.0
                    };
                }
                sum += c as f64 * e / k as f64;
            }
            let numeric = sum / 5000.0;
            let closed = h.mse_error(r, &scheme).unwrap();
            assert!(
                (closed - numeric).abs() <= 1e-6 * numeric.max(1e-12),
                "{r:?}: {closed} vs {numeric}"
            );
        }
    }

    #[test]
    fn mse_range_is_the_best_candidate() {
        // brute force: evaluate every candidate independently and compare with the choice
        let mut v = values(4000, 1.0, 5);
        v.extend([40.0, -12.0]);
        let mut h = Histogram::new(256, 1024);
        h.add(&v);
        for scheme in [
            QuantScheme::default().activation(),
            QuantScheme::default().weight(),
        ] {
            let chosen = h.mse_range(&scheme).unwrap().unwrap();
            let chosen_err = h.mse_error(chosen, &scheme).unwrap();
            let best = h
                .mse_candidates(&scheme)
                .into_iter()
                .map(|r| h.mse_error(r, &scheme).unwrap())
                .fold(f64::INFINITY, f64::min);
            assert_eq!(chosen_err, best);
            // and it clips the outliers: better than min-max
            let minmax = Range {
                min: -12.0,
                max: 40.0,
            };
            assert!(chosen_err < h.mse_error(minmax, &scheme).unwrap());
            assert!(chosen.max < 40.0, "{chosen:?}");
        }
    }

    #[test]
    fn mse_choice_is_near_best_for_real_fake_quantization() {
        // the model (uniform-in-bin density, s²/12 rounding noise) against the actual error
        // of quantize → dequantize (round half even, saturate) on the raw values, for
        // heavy-tailed Student-t data (2 degrees of freedom: z / sqrt(χ²₂/2), χ²₂ = −2 ln U).
        // With 8 bits the optimum clips little (a clipped value costs its squared distance,
        // rounding only s²/12), so the check is: no worse than min-max, and within 5% of the
        // best actual error among a sample of the candidates.
        let mut rng = crate::calib::SplitMix64::new(21);
        let v: Vec<f32> = (0..10_000)
            .map(|_| {
                let z = rng.next_normal() as f64;
                let u = 1.0 - rng.next_f64();
                (z / (-u.ln()).sqrt()) as f32
            })
            .collect();
        let mut h = Histogram::new(DEFAULT_BINS, DEFAULT_BINS);
        h.add(&v);
        let scheme = QuantScheme::default().activation();
        let (qmin, qmax) = scheme.int_range().unwrap();
        let actual = |r: Range| {
            let (s, zp) = scale_zero_point(r.min, r.max, &scheme).unwrap();
            v.iter()
                .map(|&x| {
                    let q = ((x / s).round_ties_even() + zp as f32).clamp(qmin as f32, qmax as f32);
                    ((q - zp as f32) * s - x) as f64
                })
                .map(|e| e * e)
                .sum::<f64>()
                / v.len() as f64
        };
        let chosen = actual(h.mse_range(&scheme).unwrap().unwrap());
        let (lo, hi) = h.min_max().unwrap();
        let minmax = actual(Range { min: lo, max: hi });
        // every 97th candidate keeps the brute force affordable (~700 candidates)
        let best = h
            .mse_candidates(&scheme)
            .into_iter()
            .step_by(97)
            .map(actual)
            .fold(f64::INFINITY, f64::min);
        assert!(chosen <= minmax, "{chosen} vs min-max {minmax}");
        assert!(
            chosen <= best * 1.05,
            "{chosen} vs best sampled candidate {best}"
        );
    }

    #[test]
    fn mean_std_of_a_symmetric_histogram() {
        let mut h = Histogram::new(4, 16);
        // ±2 with 4 bins: centres −1.5, −0.5, 0.5, 1.5; values −2 (bin 0), 2 (bin 3)
        h.add(&[-2.0, 2.0]);
        assert_eq!(h.mean_std(), Some((0.0, 1.5)));
        assert_eq!(
            h.distribution_range(),
            Some(Range {
                min: -2.0,
                max: 2.0
            })
        );
    }
}
