//! One ONNX node under conversion: its identity for error messages and typed access to its
//! attributes (with the type checks and defaults of the op schema).

use crate::error::{NodeRef, OnnxError};
use crate::proto::attribute_proto::AttributeType;
use crate::proto::{AttributeProto, NodeProto, TensorProto};

/// A node being imported: the proto plus the `NodeRef` every error about it carries.
pub(crate) struct NodeCx<'a> {
    pub proto: &'a NodeProto,
    pub node: NodeRef,
}

impl<'a> NodeCx<'a> {
    /// An error about this node.
    pub fn err(&self, msg: impl Into<String>) -> OnnxError {
        OnnxError::Node {
            node: Box::new(self.node.clone()),
            msg: msg.into(),
        }
    }

    pub fn opset(&self) -> i64 {
        self.node.opset
    }

    fn attr(&self, name: &str) -> Option<&'a AttributeProto> {
        self.proto.attribute.iter().find(|a| a.name() == name)
    }

    /// Check the declared attribute type (older exporters leave it unset; then the field
    /// itself decides).
    fn check_type(&self, a: &AttributeProto, expected: AttributeType) -> Result<(), OnnxError> {
        match a.r#type {
            None | Some(0) => Ok(()),
            Some(t) if t == expected as i32 => Ok(()),
            Some(t) => Err(self.err(format!(
                "attribute '{}' is {}, expected {}",
                a.name(),
                AttributeType::try_from(t).map_or("<unknown>", |t| t.as_str_name()),
                expected.as_str_name()
            ))),
        }
    }

    pub fn has_attr(&self, name: &str) -> bool {
        self.attr(name).is_some()
    }

    pub fn int_opt(&self, name: &str) -> Result<Option<i64>, OnnxError> {
        let Some(a) = self.attr(name) else {
            return Ok(None);
        };
        self.check_type(a, AttributeType::Int)?;
        a.i.map(Some)
            .ok_or_else(|| self.err(format!("attribute '{name}' has no integer value")))
    }

    pub fn int(&self, name: &str, default: i64) -> Result<i64, OnnxError> {
        Ok(self.int_opt(name)?.unwrap_or(default))
    }

    pub fn bool(&self, name: &str, default: bool) -> Result<bool, OnnxError> {
        match self.int_opt(name)? {
            None => Ok(default),
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            Some(v) => Err(self.err(format!("attribute '{name}' must be 0 or 1, got {v}"))),
        }
    }

    pub fn ints_opt(&self, name: &str) -> Result<Option<Vec<i64>>, OnnxError> {
        let Some(a) = self.attr(name) else {
            return Ok(None);
        };
        self.check_type(a, AttributeType::Ints)?;
        Ok(Some(a.ints.clone()))
    }

    pub fn float_opt(&self, name: &str) -> Result<Option<f32>, OnnxError> {
        let Some(a) = self.attr(name) else {
            return Ok(None);
        };
        self.check_type(a, AttributeType::Float)?;
        a.f.map(Some)
            .ok_or_else(|| self.err(format!("attribute '{name}' has no float value")))
    }

    pub fn float(&self, name: &str, default: f32) -> Result<f32, OnnxError> {
        Ok(self.float_opt(name)?.unwrap_or(default))
    }

    pub fn floats_opt(&self, name: &str) -> Result<Option<Vec<f32>>, OnnxError> {
        let Some(a) = self.attr(name) else {
            return Ok(None);
        };
        self.check_type(a, AttributeType::Floats)?;
        Ok(Some(a.floats.clone()))
    }

    pub fn string_opt(&self, name: &str) -> Result<Option<String>, OnnxError> {
        let Some(a) = self.attr(name) else {
            return Ok(None);
        };
        self.check_type(a, AttributeType::String)?;
        let bytes =
            a.s.as_ref()
                .ok_or_else(|| self.err(format!("attribute '{name}' has no string value")))?;
        String::from_utf8(bytes.clone())
            .map(Some)
            .map_err(|_| self.err(format!("attribute '{name}' is not valid UTF-8")))
    }

    pub fn string(&self, name: &str, default: &str) -> Result<String, OnnxError> {
        Ok(self
            .string_opt(name)?
            .unwrap_or_else(|| default.to_string()))
    }

    pub fn tensor_opt(&self, name: &str) -> Result<Option<&'a TensorProto>, OnnxError> {
        let Some(a) = self.attr(name) else {
            return Ok(None);
        };
        self.check_type(a, AttributeType::Tensor)?;
        a.t.as_ref()
            .map(Some)
            .ok_or_else(|| self.err(format!("attribute '{name}' has no tensor value")))
    }

    /// A non-negative integer (a size, count or index) from an i64 attribute or input value.
    pub fn to_usize(&self, what: &str, v: i64) -> Result<usize, OnnxError> {
        usize::try_from(v).map_err(|_| self.err(format!("{what} must be non-negative, got {v}")))
    }

    /// A list of non-negative integers.
    pub fn to_usizes(&self, what: &str, v: &[i64]) -> Result<Vec<usize>, OnnxError> {
        v.iter().map(|&x| self.to_usize(what, x)).collect()
    }

    /// Normalize a possibly negative `axis` against `rank` (ONNX: `-rank <= axis < rank`).
    pub fn axis(&self, what: &str, axis: i64, rank: usize) -> Result<usize, OnnxError> {
        let r = rank as i64;
        if (-r..r).contains(&axis) {
            Ok(if axis < 0 { axis + r } else { axis } as usize)
        } else {
            Err(self.err(format!("{what} {axis} is out of range for rank {rank}")))
        }
    }

    /// Normalize a list of axes, rejecting duplicates; sorted ascending.
    pub fn axes(&self, what: &str, axes: &[i64], rank: usize) -> Result<Vec<usize>, OnnxError> {
        let mut out = axes
            .iter()
            .map(|&a| self.axis(what, a, rank))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_unstable();
        if out.windows(2).any(|w| w[0] == w[1]) {
            return Err(self.err(format!("{what} {axes:?} repeat an axis")));
        }
        Ok(out)
    }
}
