//! Helpers for the unit tests of planning and insertion: calibration results written by
//! hand, so that expected scales and zero points can be derived on paper.

use crate::calibrate::{Calibration, ObservedValue};
use crate::histogram::Range;
use crate::observer::ObservedCounts;
use kiln_ir::{Graph, ValueId};
use std::collections::BTreeMap;

/// A calibration that observed `[min, max]` for each named value of `graph`.
pub(crate) fn calibration_of(graph: &Graph, ranges: &[(&str, f32, f32)]) -> Calibration {
    let find = |name: &str| -> ValueId {
        graph
            .node_ids()
            .flat_map(|id| {
                (0..graph.node(id).outputs.len()).map(move |port| ValueId {
                    node: id,
                    port: port as u16,
                })
            })
            .find(|&v| graph.value_name(v) == name)
            .unwrap_or_else(|| panic!("no value {name}"))
    };
    let values: BTreeMap<String, ObservedValue> = ranges
        .iter()
        .map(|&(name, min, max)| {
            (
                name.to_string(),
                ObservedValue {
                    value: find(name),
                    range: Some(Range { min, max }),
                    counts: ObservedCounts {
                        tensors: 1,
                        finite: 1,
                        non_finite: 0,
                    },
                    method: "minmax",
                },
            )
        })
        .collect();
    Calibration { samples: 1, values }
}
