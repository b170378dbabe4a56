//! A minimal reader of the protobuf wire format that lists an ONNX model's opsets, graph
//! inputs and outputs and its nodes' op types and inputs — all the conformance runner needs to
//! decide a case's scope before importing it. Kept independent of kiln-onnx on purpose: the
//! scope decision must not depend on the importer under test.

/// The part of a `ModelProto` the conformance runner looks at.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelSummary {
    /// `(domain, version)` of every `opset_import`; the default domain as `""`.
    pub opsets: Vec<(String, i64)>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// Names of graph initializers (old IR versions also list them among the inputs).
    pub initializers: Vec<String>,
    pub nodes: Vec<NodeSummary>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeSummary {
    pub op_type: String,
    /// `""` for the default ONNX domain.
    pub domain: String,
    /// Input value names; `""` marks an omitted optional input.
    pub inputs: Vec<String>,
}

impl NodeSummary {
    /// Is this node in the default (`ai.onnx`) domain?
    pub fn is_default_domain(&self) -> bool {
        self.domain.is_empty() || self.domain == "ai.onnx"
    }
}

// Field numbers from onnx.proto.
const MODEL_GRAPH: u32 = 7;
const MODEL_OPSET_IMPORT: u32 = 8;
const OPSET_DOMAIN: u32 = 1;
const OPSET_VERSION: u32 = 2;
const GRAPH_NODE: u32 = 1;
const GRAPH_INITIALIZER: u32 = 5;
const GRAPH_INPUT: u32 = 11;
const GRAPH_OUTPUT: u32 = 12;
const NODE_INPUT: u32 = 1;
const NODE_OP_TYPE: u32 = 4;
const NODE_DOMAIN: u32 = 7;
const VALUE_INFO_NAME: u32 = 1;
const TENSOR_NAME: u32 = 8;

/// One field of a message: its number and its payload.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// Fixed-width 32/64-bit payloads: not needed here, skipped.
    Fixed,
}

/// Iterate over the fields of one message.
struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Fields { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| "truncated varint".to_string())?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("field of {n} bytes runs past the end of its message"))?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn next_field(&mut self) -> Option<Result<(u32, Field<'a>), String>> {
        if self.pos >= self.buf.len() {
            return None;
        }
        Some(self.read_field())
    }

    fn read_field(&mut self) -> Result<(u32, Field<'a>), String> {
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| format!("field number {}", key >> 3))?;
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "huge length".to_string())?;
                Field::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Field::Fixed
            }
            wire => return Err(format!("unsupported wire type {wire} in field {number}")),
        };
        Ok((number, field))
    }
}

fn for_each_field<'a>(
    buf: &'a [u8],
    mut f: impl FnMut(u32, Field<'a>) -> Result<(), String>,
) -> Result<(), String> {
    let mut fields = Fields::new(buf);
    while let Some(field) = fields.next_field() {
        let (number, value) = field?;
        f(number, value)?;
    }
    Ok(())
}

fn string(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "string field is not UTF-8".to_string())
}

/// The `name` string field (number `field`) of a nested message.
fn name_field(buf: &[u8], field: u32) -> Result<String, String> {
    let mut name = String::new();
    for_each_field(buf, |number, value| {
        if let (true, Field::Bytes(b)) = (number == field, value) {
            name = string(b)?;
        }
        Ok(())
    })?;
    Ok(name)
}

/// Summarize a serialized `ModelProto`.
pub fn scan_model(bytes: &[u8]) -> Result<ModelSummary, String> {
    let mut model = ModelSummary::default();
    for_each_field(bytes, |number, value| {
        match (number, value) {
            (MODEL_OPSET_IMPORT, Field::Bytes(b)) => {
                let (mut domain, mut version) = (String::new(), 0i64);
                for_each_field(b, |n, v| {
                    match (n, v) {
                        (OPSET_DOMAIN, Field::Bytes(s)) => domain = string(s)?,
                        // int64 fields are two's-complement varints
                        (OPSET_VERSION, Field::Varint(x)) => version = x as i64,
                        _ => {}
                    }
                    Ok(())
                })?;
                model.opsets.push((domain, version));
            }
            (MODEL_GRAPH, Field::Bytes(b)) => scan_graph(b, &mut model)?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(model)
}

fn scan_graph(bytes: &[u8], model: &mut ModelSummary) -> Result<(), String> {
    for_each_field(bytes, |number, value| {
        if let Field::Bytes(b) = value {
            match number {
                GRAPH_NODE => model.nodes.push(scan_node(b)?),
                GRAPH_INPUT => model.inputs.push(name_field(b, VALUE_INFO_NAME)?),
                GRAPH_OUTPUT => model.outputs.push(name_field(b, VALUE_INFO_NAME)?),
                GRAPH_INITIALIZER => model.initializers.push(name_field(b, TENSOR_NAME)?),
                _ => {}
            }
        }
        Ok(())
    })
}

fn scan_node(bytes: &[u8]) -> Result<NodeSummary, String> {
    let mut node = NodeSummary::default();
    for_each_field(bytes, |number, value| {
        if let Field::Bytes(b) = value {
            match number {
                NODE_INPUT => node.inputs.push(string(b)?),
                NODE_OP_TYPE => node.op_type = string(b)?,
                NODE_DOMAIN => node.domain = string(b)?,
                _ => {}
            }
        }
        Ok(())
    })?;
    Ok(node)
}

/// Sanity check of the scanner on a hand-encoded model (the suites are `harness = false`, so
/// this runs at their start rather than as a `#[test]`): graph { node { input "x" input "s"
/// op_type "QuantizeLinear" } input { name "x" } output { name "y" } }, opset_import { version 21 }.
pub fn check_scanner() -> Result<(), String> {
    fn msg(field: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(field << 3 | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }
    let node = [
        msg(NODE_INPUT, b"x"),
        msg(NODE_INPUT, b"s"),
        msg(NODE_OP_TYPE, b"QuantizeLinear"),
    ]
    .concat();
    let graph = [
        msg(GRAPH_NODE, &node),
        msg(GRAPH_INPUT, &msg(VALUE_INFO_NAME, b"x")),
        msg(GRAPH_OUTPUT, &msg(VALUE_INFO_NAME, b"y")),
    ]
    .concat();
    // opset_import { version: 21 } — field 2, wire type 0 (varint).
    let opset = vec![(OPSET_VERSION << 3) as u8, 21];
    let model = [msg(MODEL_GRAPH, &graph), msg(MODEL_OPSET_IMPORT, &opset)].concat();
    let expected = ModelSummary {
        opsets: vec![(String::new(), 21)],
        inputs: vec!["x".into()],
        outputs: vec!["y".into()],
        initializers: vec![],
        nodes: vec![NodeSummary {
            op_type: "QuantizeLinear".into(),
            domain: String::new(),
            inputs: vec!["x".into(), "s".into()],
        }],
    };
    let got = scan_model(&model)?;
    if got != expected {
        return Err(format!("scanner read {got:?}, expected {expected:?}"));
    }
    Ok(())
}
