//! Shape and type inference for every op (in progress).
use crate::op::Op;
use crate::types::TensorType;

pub fn infer_types(op: &Op, _inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    Err(format!("no shape inference for {} yet", op.mnemonic()))
}
