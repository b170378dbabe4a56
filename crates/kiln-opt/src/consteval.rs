//! Constant folding: evaluate an op whose inputs are all constants with the reference
//! interpreter, so folded values are exactly what the unoptimized graph would compute.

use kiln_ir::{Op, Tensor, TensorType};

/// The op's single output on constant inputs, or `None` if the interpreter cannot evaluate
/// it (the class then simply stays computed).
pub fn evaluate(
    op: &Op,
    inputs: &[&Tensor],
    input_types: &[&TensorType],
    output: &TensorType,
) -> Option<Tensor> {
    let mut results =
        kiln_interp::eval_op(op, inputs, input_types, std::slice::from_ref(output)).ok()?;
    (results.len() == 1).then(|| results.remove(0))
}
