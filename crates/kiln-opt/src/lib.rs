//! kiln's optimizer: named passes over the IR, most of them rule sets from `passes/*.rules`
//! run by equality saturation (egg) and extracted with a DAG-aware cost model.
//!
//! - [`pass_names`], [`pipelines`], [`pipeline`]: what `kiln passes` lists (with one-line
//!   descriptions) and what `-O0`/`-O1` ([`OptLevel`]) run;
//! - [`run_pass`], [`run_pipeline`]: run passes under [`OptOptions`] (limits, verifier, rule
//!   directory), with [`PassStats`] (its `Display` is the `kiln dump --stats` text) and a
//!   callback after each pass for `--after NAME` / `--print-after-all`;
//! - errors are [`OptError`]: unknown pass, malformed rule file (file:line:col), a graph that
//!   cannot be typed, an internal inconsistency (a bug, reported), a failed verification;
//! - the pieces: [`lang`] (e-graph language), [`analysis`] (types and constants per class),
//!   [`bridge`] (IR ⇄ e-graph), [`rules`] (rule-file syntax), [`functions`] (the named Rust
//!   conditions and folds rules call), [`extract`] (cost model and extraction).
//! - [`quant_functions`]: the `quantize` rule set (QDQ → integer ops) that `kiln-quant` runs,
//!   and the functions only its rules call.
//!
//! The pass catalogue, rule syntax and cost model are documented in docs/passes.md.

pub mod analysis;
pub mod bridge;
mod consteval;
pub mod error;
pub mod extract;
pub mod fold;
pub mod functions;
pub mod lang;
pub mod passes;
pub mod quant_functions;
pub mod rules;
pub mod sexp;

pub use error::OptError;
pub use passes::Pipeline;
pub use rules::{parse_rule_file, RuleSet};

use analysis::KilnAnalysis;
use egg::{BackoffScheduler, Runner, StopReason};
use kiln_ir::{ConstPool, Graph, Op};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Optimization level, as `kiln opt -O0|-O1`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum OptLevel {
    /// No optimization.
    O0,
    /// The default pipeline.
    #[default]
    O1,
}

impl OptLevel {
    /// The pipeline's name in `passes/pipelines.sexp`.
    pub fn name(self) -> &'static str {
        match self {
            OptLevel::O0 => "O0",
            OptLevel::O1 => "O1",
        }
    }
}

/// `O0`/`O1` (also `0`/`1`, as in `-O1`).
impl std::str::FromStr for OptLevel {
    type Err = OptError;

    fn from_str(s: &str) -> Result<OptLevel, OptError> {
        match s {
            "O0" | "0" => Ok(OptLevel::O0),
            "O1" | "1" => Ok(OptLevel::O1),
            _ => Err(OptError::UnknownPipeline {
                name: s.to_string(),
                known: "O0, O1".into(),
            }),
        }
    }
}

/// Limits and checks for running passes.
#[derive(Clone, Debug)]
pub struct OptOptions {
    /// Run the IR verifier on every pass result (default: in debug builds and under
    /// `KILN_VERIFY=1`, [`kiln_ir::self_checks_enabled`]).
    pub verify: bool,
    /// Stop saturating when the e-graph has this many e-nodes.
    pub node_limit: usize,
    /// Stop saturating after this many iterations.
    pub iter_limit: usize,
    /// Stop saturating after this long (per pass).
    pub time_limit: Duration,
    /// Read `NAME.rules` from this directory instead of the built-in copies.
    pub rules_dir: Option<PathBuf>,
}

impl Default for OptOptions {
    fn default() -> OptOptions {
        OptOptions {
            verify: kiln_ir::self_checks_enabled(),
            node_limit: 200_000,
            iter_limit: 30,
            time_limit: Duration::from_secs(10),
            rules_dir: None,
        }
    }
}

/// What a pass did, for `kiln dump --stats`.
#[derive(Clone, Debug, Default)]
pub struct PassStats {
    pub pass: String,
    /// `true` for rule-set passes (the e-graph fields below are meaningful).
    pub rewrite: bool,
    pub egraph_nodes: usize,
    pub egraph_classes: usize,
    pub iterations: usize,
    /// Why saturation stopped: `saturated`, `iteration limit 30`, `node limit 200000`,
    /// `time limit 10s`.
    pub stop_reason: String,
    /// How many new equalities each rule of the set added (every rule listed, 0 included).
    pub rule_fired: BTreeMap<String, usize>,
    /// Classes whose value was computed at compile time.
    pub folded_constants: usize,
    /// Rule applications skipped because the replacement's type differed from the matched
    /// value's, or could not be typed at all.
    pub rejected_type_mismatch: usize,
    pub rejected_ill_typed: usize,
    /// Op nodes (inputs and constants not counted).
    pub ops_before: usize,
    pub ops_after: usize,
    pub op_counts_before: BTreeMap<String, usize>,
    pub op_counts_after: BTreeMap<String, usize>,
    /// Cost-model value (MACs + bytes moved + kernel launches) of input and output.
    pub cost_before: f64,
    pub cost_after: f64,
    pub time: Duration,
    pub saturation_time: Duration,
    pub extraction_time: Duration,
}

/// The `--stats` text, times included (see [`PassStats::render`]).
impl std::fmt::Display for PassStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render(true))
    }
}

impl PassStats {
    /// The `--stats` text: one line per pass (ops, e-graph size, iterations and why
    /// saturation stopped, cost), then every rule with how often it fired, folded constants,
    /// rejected rewrites and the op kinds whose count changed. Times only when asked, so that
    /// snapshots stay stable.
    pub fn render(&self, with_times: bool) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "pass {}: ops {} -> {}",
            self.pass, self.ops_before, self.ops_after
        );
        if self.rewrite {
            let _ = write!(
                s,
                ", e-graph {} nodes / {} classes, {} iterations ({}), cost {:.4e} -> {:.4e}",
                self.egraph_nodes,
                self.egraph_classes,
                self.iterations,
                self.stop_reason,
                self.cost_before,
                self.cost_after
            );
        }
        if with_times {
            let _ = write!(s, ", {:.1} ms", self.time.as_secs_f64() * 1e3);
            if self.rewrite {
                let _ = write!(
                    s,
                    " (saturation {:.1} ms, extraction {:.1} ms)",
                    self.saturation_time.as_secs_f64() * 1e3,
                    self.extraction_time.as_secs_f64() * 1e3
                );
            }
        }
        s.push('\n');
        for (rule, n) in &self.rule_fired {
            let _ = writeln!(s, "  rule {rule}: {n}");
        }
        if self.folded_constants > 0 {
            let _ = writeln!(s, "  folded constants: {}", self.folded_constants);
        }
        if self.rejected_type_mismatch + self.rejected_ill_typed > 0 {
            let _ = writeln!(
                s,
                "  rejected rewrites: {} type mismatch, {} ill-typed",
                self.rejected_type_mismatch, self.rejected_ill_typed
            );
        }
        let kinds: std::collections::BTreeSet<&String> = self
            .op_counts_before
            .keys()
            .chain(self.op_counts_after.keys())
            .collect();
        for k in kinds {
            let (b, a) = (
                self.op_counts_before.get(k).copied().unwrap_or(0),
                self.op_counts_after.get(k).copied().unwrap_or(0),
            );
            if a != b {
                let _ = writeln!(s, "  {k}: {b} -> {a}");
            }
        }
        s
    }
}

/// Every pass: name and one-line description, in pipeline order.
pub fn pass_names() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = passes::builtin_rule_sets()
        .iter()
        .map(|s| (s.name.as_str(), s.description.as_str()))
        .collect();
    out.extend(passes::PLAIN_PASSES.iter().copied());
    out
}

/// Every pipeline of `passes/pipelines.sexp` (name, one-line description, passes), for
/// `kiln passes`.
pub fn pipelines() -> &'static [Pipeline] {
    passes::builtin_pipelines()
}

/// The passes an optimization level runs.
pub fn pipeline(level: OptLevel) -> Vec<&'static str> {
    passes::builtin_pipelines()
        .iter()
        .find(|p| p.name == level.name())
        .map(|p| p.passes.iter().map(String::as_str).collect())
        .unwrap_or_default()
}

/// Count op nodes (not inputs or constants) by mnemonic.
pub fn op_histogram(graph: &Graph) -> BTreeMap<String, usize> {
    let mut h = BTreeMap::new();
    for id in graph.node_ids() {
        let op = &graph.node(id).op;
        if !op.is_source() {
            *h.entry(op.mnemonic().to_string()).or_insert(0) += 1;
        }
    }
    h
}

fn rule_set_for(name: &str, opts: &OptOptions) -> Result<Option<rules::RuleSet>, OptError> {
    let Some(builtin) = passes::builtin_rule_sets().iter().find(|s| s.name == name) else {
        return Ok(None);
    };
    match &opts.rules_dir {
        Some(dir) => passes::load_rule_set(dir, name).map(Some),
        None => Ok(Some(builtin.clone())),
    }
}

fn stop_reason_text(reason: Option<&StopReason>) -> String {
    match reason {
        None => "not run".into(),
        Some(StopReason::Saturated) => "saturated".into(),
        Some(StopReason::IterationLimit(n)) => format!("iteration limit {n}"),
        Some(StopReason::NodeLimit(n)) => format!("node limit {n}"),
        Some(StopReason::TimeLimit(s)) => format!("time limit {s}s"),
        Some(StopReason::Other(s)) => s.clone(),
    }
}

/// Run one rule set on a graph: build the e-graph, saturate, extract.
pub fn run_rule_set(
    graph: &Graph,
    set: &rules::RuleSet,
    opts: &OptOptions,
) -> Result<(Graph, PassStats), OptError> {
    let start = Instant::now();
    let (egraph, meta) = bridge::graph_to_egraph(graph, set.constant_folding)?;
    let internal = |msg: String| OptError::Internal {
        pass: set.name.clone(),
        msg,
    };
    if let Some(msg) = &egraph.analysis.internal_error {
        return Err(internal(msg.clone()));
    }
    let rewrites = set.rewrites();
    let runner: Runner<lang::KNode, KilnAnalysis> =
        Runner::new(KilnAnalysis::new(ConstPool::new(), Vec::new()))
            .with_egraph(egraph)
            .with_node_limit(opts.node_limit)
            .with_iter_limit(opts.iter_limit)
            .with_time_limit(opts.time_limit)
            .with_scheduler(BackoffScheduler::default().with_initial_match_limit(10_000))
            .run(&rewrites);
    let saturation_time = start.elapsed();
    let mut rule_fired: BTreeMap<String, usize> =
        set.rules.iter().map(|r| (r.name.clone(), 0)).collect();
    for it in &runner.iterations {
        for (name, n) in &it.applied {
            *rule_fired.entry(name.to_string()).or_insert(0) += n;
        }
    }
    let extract_start = Instant::now();
    let selection = extract::extract(&runner.egraph, &meta);
    let out = bridge::selection_to_graph(&runner.egraph, &meta, &selection.choice);
    let extraction_time = extract_start.elapsed();
    let counters = &runner.egraph.analysis.counters;
    let stats = PassStats {
        pass: set.name.clone(),
        rewrite: true,
        egraph_nodes: runner.egraph.total_number_of_nodes(),
        egraph_classes: runner.egraph.number_of_classes(),
        iterations: runner.iterations.len(),
        stop_reason: stop_reason_text(runner.stop_reason.as_ref()),
        rule_fired,
        folded_constants: counters.folded_constants,
        rejected_type_mismatch: counters.type_mismatches,
        rejected_ill_typed: counters.ill_typed,
        ops_before: 0,
        ops_after: 0,
        op_counts_before: BTreeMap::new(),
        op_counts_after: BTreeMap::new(),
        cost_before: selection.cost_before,
        cost_after: selection.cost_after,
        time: Duration::ZERO,
        saturation_time,
        extraction_time,
    };
    Ok((out, stats))
}

/// Run the pass called `name`.
pub fn run_pass(
    graph: &Graph,
    name: &str,
    opts: &OptOptions,
) -> Result<(Graph, PassStats), OptError> {
    let start = Instant::now();
    let (out, mut stats) = if let Some(set) = rule_set_for(name, opts)? {
        run_rule_set(graph, &set, opts)?
    } else if name == "dce" {
        let mut g = graph.clone();
        g.remove_dead_nodes();
        (
            g,
            PassStats {
                pass: name.to_string(),
                ..PassStats::default()
            },
        )
    } else {
        return Err(OptError::UnknownPass {
            name: name.to_string(),
            known: pass_names()
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    stats.op_counts_before = op_histogram(graph);
    stats.op_counts_after = op_histogram(&out);
    stats.ops_before = stats.op_counts_before.values().sum();
    stats.ops_after = stats.op_counts_after.values().sum();
    stats.time = start.elapsed();
    if opts.verify {
        kiln_ir::verify(&out).map_err(|source| OptError::Verify {
            pass: name.to_string(),
            source,
        })?;
    }
    Ok((out, stats))
}

/// Run passes in order, calling `after_each(pass, graph, stats)` after each one.
pub fn run_pipeline(
    graph: &Graph,
    passes: &[&str],
    opts: &OptOptions,
    after_each: &mut dyn FnMut(&str, &Graph, &PassStats),
) -> Result<(Graph, Vec<PassStats>), OptError> {
    let mut current = graph.clone();
    let mut all = Vec::new();
    for &pass in passes {
        let (next, stats) = run_pass(&current, pass, opts)?;
        after_each(pass, &next, &stats);
        current = next;
        all.push(stats);
    }
    Ok((current, all))
}

/// How many nodes of a graph satisfy `pred` (e.g. `|op| matches!(op, Op::BatchNorm { .. })`,
/// the headline number of the fold passes).
pub fn count_op(graph: &Graph, pred: impl Fn(&Op) -> bool) -> usize {
    graph
        .node_ids()
        .filter(|&id| pred(&graph.node(id).op))
        .count()
}
