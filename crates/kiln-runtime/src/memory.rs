//! The static memory plan: every intermediate value of a graph gets a fixed byte offset in
//! one arena, from liveness over the schedule (a topological order), so values whose
//! lifetimes do not overlap share space; graph inputs, outputs and constants live elsewhere.
//!
//! The output of a shape-only op (Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout:
//! the same bytes in the same order) whose input and output are both intermediate values is
//! an *alias*: it takes its input's slot, whose lifetime grows to cover the alias's readers,
//! and the op needs no kernel call ([`MemoryPlan::is_alias`]).

use crate::error::RuntimeError;
use crate::model::is_shape_only;
use kiln_ir::{Graph, NodeId, Op, ValueId};
use std::cmp::Reverse;
use std::collections::HashMap;

/// Every arena offset and every slot size is a multiple of this: a cache line, and enough
/// for any vector load a kernel may emit on an arena buffer.
pub const ARENA_ALIGN: usize = 64;

/// The steps (positions in the schedule) during which a value must keep its contents:
/// from the step that writes it to its last reader, both inclusive. A kernel reads its inputs
/// while it writes its outputs, so a value and the inputs of its producer are live together
/// and never share bytes (no kernel works in place).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    pub first: usize,
    pub last: usize,
}

impl Lifetime {
    pub fn overlaps(&self, other: &Lifetime) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// One arena slot: `bytes` (the value's size) at `offset`, reserved for `lifetime`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub value: ValueId,
    pub bytes: usize,
    pub offset: usize,
    pub lifetime: Lifetime,
}

impl Slot {
    /// The arena bytes this slot reserves (its size rounded up to [`ARENA_ALIGN`]).
    pub fn reserved(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + align_up(self.bytes)
    }
}

/// Where every intermediate value lives, and the plan's figures.
#[derive(Clone, Debug)]
pub struct MemoryPlan {
    /// In the order their producers run.
    slots: Vec<Slot>,
    /// Every arena value (aliases included) → its slot.
    index: HashMap<ValueId, usize>,
    /// Aliases → the value whose slot they share.
    aliases: HashMap<ValueId, ValueId>,
    /// Size of the arena: the highest end of any slot. This is the model's peak activation
    /// memory (graph inputs and outputs excluded).
    pub peak_bytes: usize,
    /// The most bytes (slot sizes rounded to [`ARENA_ALIGN`]) live at any one step: a lower
    /// bound on `peak_bytes` for any plan; the gap is fragmentation.
    pub live_peak_bytes: usize,
    /// The sum of all intermediate values' sizes (aliases, which have no buffer of their
    /// own, excluded): what an allocator without reuse would need.
    pub sum_bytes: usize,
    /// Graph inputs (bound to the caller's tensors, not in the arena).
    pub input_bytes: usize,
    /// Graph outputs (written to fresh output buffers, not in the arena).
    pub output_bytes: usize,
    /// Constants (held by the compiled model or packed into kernels, not in the arena).
    pub const_bytes: usize,
}

/// Round up to a multiple of [`ARENA_ALIGN`].
pub fn align_up(bytes: usize) -> usize {
    bytes.div_ceil(ARENA_ALIGN) * ARENA_ALIGN
}

impl MemoryPlan {
    /// Plan the intermediate values of `graph` run in `schedule` order, which must list every
    /// node of the graph in a topological order (as `Graph::topo_order` returns).
    pub fn new(graph: &Graph, schedule: &[NodeId]) -> Result<MemoryPlan, RuntimeError> {
        let step_of: HashMap<NodeId, usize> =
            schedule.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        if step_of.len() != graph.node_count() || schedule.len() != graph.node_count() {
            return Err(RuntimeError::BadSchedule(format!(
                "the schedule lists {} distinct of {} entries, the graph has {} nodes",
                step_of.len(),
                schedule.len(),
                graph.node_count()
            )));
        }
        let graph_outputs: std::collections::HashSet<ValueId> =
            graph.outputs().iter().copied().collect();
        let (mut input_bytes, mut output_bytes, mut const_bytes) = (0, 0, 0);
        let mut values: Vec<(ValueId, usize, Lifetime)> = Vec::new();
        let mut value_index: HashMap<ValueId, usize> = HashMap::new();
        let mut aliases: HashMap<ValueId, ValueId> = HashMap::new();
        for (step, &node_id) in schedule.iter().enumerate() {
            let node = graph.node(node_id);
            for port in 0..node.outputs.len() {
                let value = ValueId {
                    node: node_id,
                    port: u16::try_from(port).expect("a node has fewer than 65536 outputs"),
                };
                let bytes = node.outputs[port].ty.byte_size();
                match node.op {
                    Op::Input { .. } => input_bytes += bytes,
                    Op::Const(_) => const_bytes += bytes,
                    _ if graph_outputs.contains(&value) => output_bytes += bytes,
                    _ => {
                        let mut last = step;
                        for (user, _) in graph.users(value) {
                            let user_step = *step_of.get(&user).ok_or_else(|| {
                                RuntimeError::BadSchedule(format!(
                                    "node '{}' is not scheduled",
                                    graph.node(user).name
                                ))
                            })?;
                            if user_step <= step {
                                return Err(RuntimeError::BadSchedule(format!(
                                    "node '{}' runs before its input '{}' is produced",
                                    graph.node(user).name,
                                    graph.value_name(value)
                                )));
                            }
                            last = last.max(user_step);
                        }
                        // a shape-only view of an arena value: share its slot
                        let source = match node.inputs() {
                            [x] if is_shape_only(&node.op) && node.outputs.len() == 1 => {
                                let root = aliases.get(x).copied().unwrap_or(*x);
                                value_index
                                    .get(&root)
                                    .filter(|&&i| values[i].1 == bytes)
                                    .map(|&i| (root, i))
                            }
                            _ => None,
                        };
                        if let Some((root, i)) = source {
                            values[i].2.last = values[i].2.last.max(last);
                            aliases.insert(value, root);
                            continue;
                        }
                        value_index.insert(value, values.len());
                        values.push((value, bytes, Lifetime { first: step, last }));
                    }
                }
            }
        }
        let requests: Vec<(usize, Lifetime)> = values.iter().map(|&(_, b, l)| (b, l)).collect();
        let offsets = place_best_fit(&requests);
        let slots: Vec<Slot> = values
            .into_iter()
            .zip(offsets)
            .map(|((value, bytes, lifetime), offset)| Slot {
                value,
                bytes,
                offset,
                lifetime,
            })
            .collect();
        let mut index: HashMap<ValueId, usize> = slots
            .iter()
            .enumerate()
            .map(|(i, s)| (s.value, i))
            .collect();
        for (&alias, root) in &aliases {
            index.insert(alias, index[root]);
        }
        Ok(MemoryPlan {
            peak_bytes: slots.iter().map(|s| s.reserved().end).max().unwrap_or(0),
            live_peak_bytes: live_peak(&requests),
            sum_bytes: slots.iter().map(|s| s.bytes).sum(),
            slots,
            index,
            aliases,
            input_bytes,
            output_bytes,
            const_bytes,
        })
    }

    /// The arena slot of an intermediate value (an alias: its source's); `None` for
    /// inputs, outputs and constants.
    pub fn slot(&self, value: ValueId) -> Option<&Slot> {
        self.index.get(&value).map(|&i| &self.slots[i])
    }

    /// Whether `value` is the output of a shape-only op sharing its input's slot: its
    /// bytes are already in place, the op runs no kernel.
    pub fn is_alias(&self, value: ValueId) -> bool {
        self.aliases.contains_key(&value)
    }

    /// How many values are aliases.
    pub fn alias_count(&self) -> usize {
        self.aliases.len()
    }

    /// All slots, in the order their producers run.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }
}

/// Offsets for `(bytes, lifetime)` requests: greedy by size (largest first, ties by start
/// step then request order, so the plan is deterministic), each placed in the smallest gap
/// between the already-placed slots whose lifetimes overlap its own that fits it (best fit),
/// else after the highest of them. Sizes are rounded up to [`ARENA_ALIGN`], so every offset
/// is aligned. Largest-first is the heuristic of TFLite's `GreedyBySize` planner: big
/// buffers fix the layout, small ones fill its holes.
pub fn place_best_fit(requests: &[(usize, Lifetime)]) -> Vec<usize> {
    let mut by_size: Vec<usize> = (0..requests.len()).collect();
    by_size.sort_by_key(|&i| (Reverse(align_up(requests[i].0)), requests[i].1.first, i));
    let mut offsets = vec![0; requests.len()];
    let mut placed: Vec<usize> = Vec::with_capacity(requests.len());
    for i in by_size {
        let (bytes, lifetime) = (align_up(requests[i].0), requests[i].1);
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&j| requests[j].1.overlaps(&lifetime))
            .map(|&j| (offsets[j], offsets[j] + align_up(requests[j].0)))
            .filter(|(start, end)| end > start)
            .collect();
        busy.sort_unstable();
        let mut best: Option<(usize, usize)> = None; // (gap size, offset)
        let mut cursor = 0;
        for (start, end) in busy {
            if start > cursor {
                let gap = start - cursor;
                if gap >= bytes && best.is_none_or(|(g, _)| gap < g) {
                    best = Some((gap, cursor));
                }
            }
            cursor = cursor.max(end);
        }
        offsets[i] = best.map_or(cursor, |(_, offset)| offset);
        placed.push(i);
    }
    offsets
}

/// The most aligned bytes live at one step.
fn live_peak(requests: &[(usize, Lifetime)]) -> usize {
    let steps = requests.iter().map(|r| r.1.last + 1).max().unwrap_or(0);
    // a difference array over steps: +size where a lifetime starts, −size after it ends
    let mut delta = vec![0isize; steps + 1];
    for &(bytes, l) in requests {
        let b = isize::try_from(align_up(bytes)).expect("tensor sizes fit isize");
        delta[l.first] += b;
        delta[l.last + 1] -= b;
    }
    let mut live = 0isize;
    let mut peak = 0isize;
    for d in delta {
        live += d;
        peak = peak.max(live);
    }
    usize::try_from(peak).expect("a sum of sizes is non-negative")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{Activation, BinaryOp, TensorType};
    use proptest::prelude::*;

    fn unary(g: &mut Graph, name: &str, x: ValueId) -> ValueId {
        g.add_node(
            name,
            Op::Activation(Activation::Relu),
            &[x],
            vec![name.to_string()],
        )
        .expect("relu of an f32 value is valid")[0]
    }

    fn plan(g: &Graph) -> MemoryPlan {
        let order = g.topo_order().expect("acyclic");
        MemoryPlan::new(g, &order).expect("a topological order")
    }

    /// x → a → b → c → d (output), every value f32[1,100] = 400 bytes (448 aligned).
    /// Schedule: x 0, a 1, b 2, c 3, d 4. Lifetimes: a [1,2], b [2,3], c [3,4]; x is an
    /// input and d an output, both outside the arena. a and c never live together, so c
    /// reuses a's slot: the arena holds two slots, 2·448 = 896 bytes, against a sum of
    /// 3·400 = 1200.
    #[test]
    fn chain_reuses_every_other_buffer() {
        let mut g = Graph::new("chain");
        let x = g.add_input("x", TensorType::f32(vec![1, 100]));
        let a = unary(&mut g, "a", x);
        let b = unary(&mut g, "b", a);
        let c = unary(&mut g, "c", b);
        let d = unary(&mut g, "d", c);
        g.set_outputs(vec![d]);
        let p = plan(&g);
        assert_eq!(p.slot(a).unwrap().lifetime, Lifetime { first: 1, last: 2 });
        assert_eq!(p.slot(b).unwrap().lifetime, Lifetime { first: 2, last: 3 });
        assert_eq!(p.slot(c).unwrap().lifetime, Lifetime { first: 3, last: 4 });
        assert!(p.slot(x).is_none() && p.slot(d).is_none());
        assert_eq!(p.slot(a).unwrap().offset, p.slot(c).unwrap().offset);
        assert_ne!(p.slot(a).unwrap().offset, p.slot(b).unwrap().offset);
        assert_eq!(p.peak_bytes, 896);
        assert_eq!(p.live_peak_bytes, 896);
        assert_eq!(p.sum_bytes, 1200);
        assert_eq!(
            (p.input_bytes, p.output_bytes, p.const_bytes),
            (400, 400, 0)
        );
    }

    /// x → a → r = reshape(a) → f = flatten(r) → b = relu(f) → c = relu(b) (output);
    /// also k = relu(a) after b. Schedule x 0, a 1, r 2, f 3, b 4, k 5, c 6. r and f are
    /// aliases of a (one slot, no kernel), so a lives [1, 5]: until b (via f, step 4) and k
    /// (step 5). b [4, 6] overlaps it; k [5, 6] too: three slots, the reshapes none.
    #[test]
    fn shape_only_ops_alias_their_input() {
        let mut g = Graph::new("views");
        let x = g.add_input("x", TensorType::f32(vec![1, 100]));
        let a = unary(&mut g, "a", x);
        let r = g
            .add_node(
                "r",
                Op::Reshape {
                    shape: vec![10, 10],
                },
                &[a],
                vec!["r".into()],
            )
            .expect("reshape of 100 elements")[0];
        let f = g
            .add_node("f", Op::Flatten { axis: 0 }, &[r], vec!["f".into()])
            .expect("flatten")[0];
        let b = unary(&mut g, "b", f);
        let k = unary(&mut g, "k", a);
        let c = g
            .add_node("c", Op::Binary(BinaryOp::Add), &[b, k], vec!["c".into()])
            .expect("add of equal shapes")[0];
        g.set_outputs(vec![c]);
        let order = g.topo_order().expect("acyclic");
        let step = |v: ValueId| order.iter().position(|&n| n == v.node).expect("scheduled");
        let p = MemoryPlan::new(&g, &order).expect("a topological order");
        assert!(p.is_alias(r) && p.is_alias(f) && !p.is_alias(a) && !p.is_alias(b));
        assert_eq!(p.alias_count(), 2);
        let slot_a = p.slot(a).unwrap().clone();
        assert_eq!(p.slot(r).unwrap(), &slot_a);
        assert_eq!(p.slot(f).unwrap(), &slot_a);
        assert_eq!(
            slot_a.lifetime,
            Lifetime {
                first: step(a),
                last: step(b).max(step(k))
            }
        );
        // a, b and k only: the views take no space of their own
        assert_eq!(p.slots().len(), 3);
        assert_eq!(p.sum_bytes, 3 * 400);
        assert_ne!(p.slot(b).unwrap().offset, slot_a.offset);
        assert_ne!(p.slot(k).unwrap().offset, slot_a.offset);
    }

    /// x → a; b = relu(a); c = relu(a); d = b + c (output). Schedule x 0, a 1, b 2, c 3,
    /// d 4. Lifetimes a [1,3] (c reads it at 3), b [2,4], c [3,4]: all three are live at
    /// step 3, so nothing can be shared: three 448-byte slots, 1344 bytes.
    #[test]
    fn diamond_keeps_the_fork_alive() {
        let mut g = Graph::new("diamond");
        let x = g.add_input("x", TensorType::f32(vec![1, 100]));
        let a = unary(&mut g, "a", x);
        let b = unary(&mut g, "b", a);
        let c = unary(&mut g, "c", a);
        let d = g
            .add_node("d", Op::Binary(BinaryOp::Add), &[b, c], vec!["d".into()])
            .expect("add of equal shapes")[0];
        g.set_outputs(vec![d]);
        let p = plan(&g);
        assert_eq!(p.slot(a).unwrap().lifetime, Lifetime { first: 1, last: 3 });
        assert_eq!(p.peak_bytes, 3 * 448);
        assert_eq!(p.live_peak_bytes, 3 * 448);
        assert_eq!(p.sum_bytes, 1200);
    }

    /// Best fit picks the smallest hole that fits, not the first. Requests (bytes, lifetime),
    /// placed largest first (ties: earlier start, then request order):
    /// #0 256 [0,9] → 0..256; #1 256 [0,0] → after #0: 256..512; #2 128 [0,9] → 512..640;
    /// #3 128 [0,0] → 640..768; #4 64 [0,9] → 768..832 (everything overlaps at step 0).
    /// #5 64 [5,5] lives with #0, #2, #4 only: holes 256..512 (256 bytes) and 640..768
    /// (128 bytes). First fit would take 256; best fit takes the smaller hole, 640.
    /// Live peak: step 0 holds #0–#4, 256+256+128+128+64 = 832 bytes.
    #[test]
    fn best_fit_takes_the_smallest_hole() {
        let l = |first, last| Lifetime { first, last };
        let requests = [
            (256, l(0, 9)),
            (256, l(0, 0)),
            (128, l(0, 9)),
            (128, l(0, 0)),
            (64, l(0, 9)),
            (64, l(5, 5)),
        ];
        assert_eq!(place_best_fit(&requests), vec![0, 256, 512, 640, 768, 640]);
        assert_eq!(live_peak(&requests), 832);
    }

    fn overlaps_in_memory(a: &(usize, usize), b: &(usize, usize)) -> bool {
        a.0 < b.1 && b.0 < a.1
    }

    proptest! {
        /// No two values live at the same step share a byte, every offset is aligned, and
        /// the arena is at least the live peak (a sanity bound on the figures).
        #[test]
        fn live_values_never_overlap(
            raw in proptest::collection::vec((0usize..5000, 0usize..40, 0usize..10), 0..60)
        ) {
            let requests: Vec<(usize, Lifetime)> = raw
                .iter()
                .map(|&(bytes, first, len)| (bytes, Lifetime { first, last: first + len }))
                .collect();
            let offsets = place_best_fit(&requests);
            let ranges: Vec<(usize, usize)> = requests
                .iter()
                .zip(&offsets)
                .map(|(&(bytes, _), &o)| (o, o + bytes))
                .collect();
            for i in 0..requests.len() {
                prop_assert_eq!(offsets[i] % ARENA_ALIGN, 0);
                for j in i + 1..requests.len() {
                    if requests[i].1.overlaps(&requests[j].1) {
                        prop_assert!(
                            !overlaps_in_memory(&ranges[i], &ranges[j]),
                            "{:?} and {:?} at {:?} and {:?}",
                            requests[i], requests[j], ranges[i], ranges[j]
                        );
                    }
                }
            }
            let arena = requests
                .iter()
                .zip(&offsets)
                .map(|(&(bytes, _), &o)| o + align_up(bytes))
                .max()
                .unwrap_or(0);
            prop_assert!(arena >= live_peak(&requests));
        }
    }

    /// Figures for the realized test models (needs `KILN_ASSETS`): printed for the report,
    /// and checked against the graph-independent bounds live peak ≤ arena ≤ sum (aligned).
    #[test]
    fn realized_models_plan_figures() {
        let Some(assets) = std::env::var_os("KILN_ASSETS") else {
            eprintln!("skipped: KILN_ASSETS is not set (test models live there)");
            return;
        };
        let models = std::path::Path::new(&assets).join("models");
        for (name, input, shape) in [
            ("resnet50", "gpu_0/data_0", vec![1, 3, 224, 224]),
            ("ppocrv4_det", "x", vec![1, 3, 320, 320]),
        ] {
            let path = models.join(format!("{name}.onnx"));
            if !path.exists() {
                eprintln!("skipped {name}: {} is missing", path.display());
                continue;
            }
            let mut opts = kiln_onnx::ImportOptions::default();
            opts.input_shapes.insert(input.to_string(), shape);
            let g = kiln_onnx::import_file(&path, &opts).expect("the test model imports");
            let p = plan(&g);
            let aligned_sum: usize = p.slots().iter().map(|s| align_up(s.bytes)).sum();
            eprintln!(
                "{name}: {} arena values, peak (arena) {} bytes = {:.2} MiB, live peak {:.2} MiB, \
                 sum of intermediates {:.2} MiB ({:.1}x), inputs {} B, outputs {} B, constants {:.2} MiB",
                p.slots().len(),
                p.peak_bytes,
                p.peak_bytes as f64 / 1048576.0,
                p.live_peak_bytes as f64 / 1048576.0,
                p.sum_bytes as f64 / 1048576.0,
                p.sum_bytes as f64 / p.peak_bytes.max(1) as f64,
                p.input_bytes,
                p.output_bytes,
                p.const_bytes as f64 / 1048576.0,
            );
            assert!(p.live_peak_bytes <= p.peak_bytes && p.peak_bytes <= aligned_sum);
            for (i, a) in p.slots().iter().enumerate() {
                for b in &p.slots()[i + 1..] {
                    if a.lifetime.overlaps(&b.lifetime) {
                        let (ra, rb) = (a.reserved(), b.reserved());
                        assert!(ra.end <= rb.start || rb.end <= ra.start, "{a:?} vs {b:?}");
                    }
                }
            }
        }
    }
}
