//! The e-graph language: one e-node kind per IR op, with the op's attributes as a leaf child
//! interned in a payload table, so that rules can match, keep and rebuild attributes (`?attrs`)
//! and attributes take part in hash-consing (two convs with different strides never merge).
//!
//! Shape of an op e-node: `(head slot_0 .. slot_n [attrs])`. Ops with optional trailing inputs
//! always have all their slots; a missing input is the `absent` leaf (so one rule covers conv
//! with and without bias). Ops whose mnemonic fixes every attribute (`relu`, `add`, `matmul`, …)
//! have no attrs leaf. Multi-output nodes (max_pool with indices, split) are tuple-valued
//! classes read through `(port:N tuple)`.

use egg::{Id, Language};
use kiln_ir::{Activation, BinaryOp, ConstId, Op, Quant, TensorType, OP_MNEMONICS};
use std::collections::HashMap;
use std::fmt;

/// An op mnemonic, as an index into [`OP_MNEMONICS`] (cheap to hash and compare).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Head(u16);

impl Head {
    pub fn from_name(name: &str) -> Option<Head> {
        OP_MNEMONICS
            .iter()
            .position(|m| *m == name)
            .map(|i| Head(i as u16))
    }

    pub fn of(op: &Op) -> Head {
        Head::from_name(op.mnemonic()).expect("every op mnemonic is listed in OP_MNEMONICS")
    }

    pub fn name(self) -> &'static str {
        OP_MNEMONICS[self.0 as usize]
    }

    /// How many tensor slots the op's e-node has.
    pub fn slots(self) -> Slots {
        slots_of(self.name())
    }

    /// Whether the e-node carries an attrs leaf as its last child.
    pub fn has_attrs(self) -> bool {
        attrless_op(self.name()).is_none()
    }

    /// The op of an attr-less head (its mnemonic fixes every attribute).
    pub fn attrless_op(self) -> Option<Op> {
        attrless_op(self.name())
    }
}

/// Tensor slots of an op e-node.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Slots {
    /// Exactly `n` inputs.
    Fixed(usize),
    /// `required` inputs, then optional ones up to `max` (padded with `absent`).
    Optional { required: usize, max: usize },
    /// Any number ≥ 1 (`sum`, `concat`).
    Variadic,
}

fn slots_of(mnemonic: &str) -> Slots {
    match mnemonic {
        "input" | "const" => Slots::Fixed(0),
        // x, w, [b], [residual]: the residual slot is the fused `add` of fuse-residual.
        "conv" => Slots::Optional {
            required: 2,
            max: 4,
        },
        "conv_transpose" | "qconv" => Slots::Optional {
            required: 2,
            max: 3,
        },
        "gemm" => Slots::Optional {
            required: 2,
            max: 3,
        },
        "conv_integer" | "matmul_integer" => Slots::Optional {
            required: 2,
            max: 4,
        },
        "batch_norm" => Slots::Fixed(5),
        "add" | "sub" | "mul" | "div" | "matmul" | "qmatmul" | "gather" => Slots::Fixed(2),
        "sum" | "concat" => Slots::Variadic,
        _ => Slots::Fixed(1),
    }
}

/// Ops whose mnemonic determines the whole op; they have no attrs leaf.
fn attrless_op(mnemonic: &str) -> Option<Op> {
    Some(match mnemonic {
        "relu" => Op::Activation(Activation::Relu),
        "sigmoid" => Op::Activation(Activation::Sigmoid),
        "tanh" => Op::Activation(Activation::Tanh),
        "hard_swish" => Op::Activation(Activation::HardSwish),
        "add" => Op::Binary(BinaryOp::Add),
        "sub" => Op::Binary(BinaryOp::Sub),
        "mul" => Op::Binary(BinaryOp::Mul),
        "div" => Op::Binary(BinaryOp::Div),
        "sum" => Op::Sum,
        "matmul" => Op::MatMul,
        "global_average_pool" => Op::GlobalAveragePool,
        "global_max_pool" => Op::GlobalMaxPool,
        "identity" => Op::Identity,
        "dropout" => Op::Dropout,
        "dequantize" => Op::Dequantize,
        "matmul_integer" => Op::MatMulInteger,
        _ => return None,
    })
}

/// Index of an interned [`Payload`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PayloadId(pub u32);

/// Everything an op node needs besides its inputs: the op with its attributes, how many
/// outputs the node has, and (for ops whose output type is a free choice: quantize, qconv,
/// qmatmul) the output types.
#[derive(Clone, Debug, PartialEq)]
pub struct OpAttrs {
    pub op: Op,
    pub outputs: usize,
    pub out_types: Option<Vec<TensorType>>,
}

impl OpAttrs {
    pub fn new(op: Op) -> OpAttrs {
        OpAttrs {
            op,
            outputs: 1,
            out_types: None,
        }
    }
}

/// Data of a leaf: a constant reference or an attribute set.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// A pool constant; `quant` is the quantization of the constant's value type.
    Const {
        id: ConstId,
        quant: Option<Quant>,
    },
    Attrs(OpAttrs),
}

/// Interns payloads so that equal attributes are the same leaf. The key is the payload's
/// `Debug` text: attributes hold `f32`s (no `Eq`/`Hash`), and the shortest round-trip float
/// formatting makes the text distinguish every pair of distinct values (NaN payload bits
/// aside, which attributes never carry).
#[derive(Clone, Debug, Default)]
pub struct PayloadTable {
    entries: Vec<Payload>,
    index: HashMap<String, PayloadId>,
}

impl PayloadTable {
    pub fn intern(&mut self, payload: Payload) -> PayloadId {
        let key = format!("{payload:?}");
        if let Some(&id) = self.index.get(&key) {
            return id;
        }
        let id = PayloadId(self.entries.len() as u32);
        self.entries.push(payload);
        self.index.insert(key, id);
        id
    }

    pub fn get(&self, id: PayloadId) -> &Payload {
        &self.entries[id.0 as usize]
    }

    pub fn attrs(&self, id: PayloadId) -> Option<&OpAttrs> {
        match self.get(id) {
            Payload::Attrs(a) => Some(a),
            Payload::Const { .. } => None,
        }
    }
}

/// One e-node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KNode {
    /// Graph input number `n`.
    Input(u32),
    /// A constant (payload [`Payload::Const`]).
    Const(PayloadId),
    /// An attribute set (payload [`Payload::Attrs`]).
    Attrs(PayloadId),
    /// A missing optional input.
    Absent,
    /// Output `port` of a tuple-valued (multi-output) op class.
    Port(u16, [Id; 1]),
    /// An op: tensor slots, then the attrs leaf if the head has one.
    Op(Head, Box<[Id]>),
}

/// Discriminant for egg's by-op index: variant tag and head / payload.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct KDiscriminant(u8, u32);

impl KNode {
    pub fn op(head: Head, children: Vec<Id>) -> KNode {
        KNode::Op(head, children.into_boxed_slice())
    }

    /// The tensor children of an op node (attrs leaf excluded).
    pub fn tensor_children(&self) -> &[Id] {
        match self {
            KNode::Op(head, ch) if head.has_attrs() => &ch[..ch.len() - 1],
            KNode::Op(_, ch) => ch,
            KNode::Port(_, t) => t,
            _ => &[],
        }
    }

    /// The attrs child of an op node, if its head has one.
    pub fn attrs_child(&self) -> Option<Id> {
        match self {
            KNode::Op(head, ch) if head.has_attrs() => ch.last().copied(),
            _ => None,
        }
    }

    pub fn head(&self) -> Option<Head> {
        match self {
            KNode::Op(h, _) => Some(*h),
            _ => None,
        }
    }
}

impl Language for KNode {
    type Discriminant = KDiscriminant;

    fn discriminant(&self) -> KDiscriminant {
        match self {
            KNode::Input(i) => KDiscriminant(0, *i),
            KNode::Const(p) => KDiscriminant(1, p.0),
            KNode::Attrs(p) => KDiscriminant(2, p.0),
            KNode::Absent => KDiscriminant(3, 0),
            KNode::Port(p, _) => KDiscriminant(4, *p as u32),
            KNode::Op(h, _) => KDiscriminant(5, h.0 as u32),
        }
    }

    fn matches(&self, other: &Self) -> bool {
        match (self, other) {
            (KNode::Op(a, ca), KNode::Op(b, cb)) => a == b && ca.len() == cb.len(),
            (KNode::Port(a, _), KNode::Port(b, _)) => a == b,
            _ => self.discriminant() == other.discriminant(),
        }
    }

    fn children(&self) -> &[Id] {
        match self {
            KNode::Port(_, t) => t,
            KNode::Op(_, ch) => ch,
            _ => &[],
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            KNode::Port(_, t) => t,
            KNode::Op(_, ch) => ch,
            _ => &mut [],
        }
    }
}

impl fmt::Display for KNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KNode::Input(i) => write!(f, "input:{i}"),
            KNode::Const(p) => write!(f, "const:{}", p.0),
            KNode::Attrs(p) => write!(f, "attrs:{}", p.0),
            KNode::Absent => f.write_str("absent"),
            KNode::Port(p, _) => write!(f, "port:{p}"),
            KNode::Op(h, _) => f.write_str(h.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::ConvAttrs;

    #[test]
    fn heads_round_trip_through_mnemonics() {
        for m in OP_MNEMONICS {
            assert_eq!(Head::from_name(m).map(Head::name), Some(*m));
        }
        assert_eq!(Head::from_name("no_such_op"), None);
    }

    #[test]
    fn attrless_heads_rebuild_their_op() {
        for m in OP_MNEMONICS {
            let head = Head::from_name(m).unwrap();
            if let Some(op) = head.attrless_op() {
                assert_eq!(op.mnemonic(), *m);
            }
        }
        assert!(Head::from_name("conv").unwrap().has_attrs());
        assert!(!Head::from_name("relu").unwrap().has_attrs());
        assert!(Head::from_name("clip").unwrap().has_attrs());
    }

    #[test]
    fn equal_attributes_intern_to_one_payload() {
        let conv = |stride| {
            Payload::Attrs(OpAttrs::new(Op::Conv(ConvAttrs {
                kernel: vec![3, 3],
                strides: vec![stride, stride],
                pads: vec![1; 4],
                dilations: vec![1, 1],
                groups: 1,
                act: None,
            })))
        };
        let mut table = PayloadTable::default();
        let a = table.intern(conv(1));
        let b = table.intern(conv(1));
        let c = table.intern(conv(2));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn matching_compares_head_and_arity_only() {
        let sum2 = KNode::op(
            Head::from_name("sum").unwrap(),
            vec![Id::from(0), Id::from(1)],
        );
        let sum2b = KNode::op(
            Head::from_name("sum").unwrap(),
            vec![Id::from(5), Id::from(6)],
        );
        let sum3 = KNode::op(
            Head::from_name("sum").unwrap(),
            vec![Id::from(0), Id::from(1), Id::from(2)],
        );
        assert!(sum2.matches(&sum2b));
        assert!(!sum2.matches(&sum3));
    }
}
