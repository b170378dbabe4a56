//! QDQ form → integer ops: the `quantize` rule set (`passes/quantize.rules`, run by
//! kiln-opt's equality saturation), then the verifier.

use crate::QuantError;
use kiln_ir::Graph;
use kiln_opt::quant_functions::{load_quantize_rule_set, quantize_rule_set};
use kiln_opt::{op_histogram, run_rule_set, OptOptions, PassStats};

/// Run the `quantize` rules on a QDQ graph (from `OptOptions::rules_dir` when set). The
/// result is verified whatever `opts.verify` says: it is what gets executed and exported.
pub fn convert_qdq(qdq: &Graph, opts: &OptOptions) -> Result<(Graph, PassStats), QuantError> {
    let loaded;
    let set = match &opts.rules_dir {
        Some(dir) => {
            loaded = load_quantize_rule_set(dir).map_err(QuantError::Convert)?;
            &loaded
        }
        None => quantize_rule_set(),
    };
    let start = std::time::Instant::now();
    let (out, mut stats) = run_rule_set(qdq, set, opts).map_err(QuantError::Convert)?;
    stats.op_counts_before = op_histogram(qdq);
    stats.op_counts_after = op_histogram(&out);
    stats.ops_before = stats.op_counts_before.values().sum();
    stats.ops_after = stats.op_counts_after.values().sum();
    stats.time = start.elapsed();
    kiln_ir::verify(&out).map_err(QuantError::Verify)?;
    Ok((out, stats))
}
