#!/usr/bin/env python3
"""Write kiln's corpus of malformed models: tests/bad-models/*.onnx (plus a few .npy and
.pb files, and the .bin files external-data cases point at) and tests/bad-models/expected.txt,
which maps every file to a substring of the error kiln must report for it.

    python tools/gen_bad_models.py [OUT_DIR]     (default: tests/bad-models of this repo)

tests/bad_models.rs reads every file listed in expected.txt (.onnx through
kiln_onnx::import_file with default options, .npy through kiln_ir::npy, .pb through
kiln_onnx::read_tensor_proto), checks that it fails with a message containing the expected
text, and that nothing panics. Each case is a few hundred bytes; absurd sizes are declared,
never stored. Needs onnx (1.23.2) and numpy; the output is byte-for-byte reproducible.
"""
import os
import struct
import sys

import numpy as np
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
OPSET = 13
NODE = "domain ai.onnx, opset 13"  # how kiln's messages describe a node's op set

CASES = []  # (file name, expected message substring, function returning the file's bytes)
EXTRA_FILES = {}  # data files external-data cases read: name -> bytes


def case(file_name, expected):
    def register(build):
        CASES.append((file_name, expected, build))
        return build

    return register


def vi(name, shape, elem=FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def f32(name, values):
    return numpy_helper.from_array(np.asarray(values, dtype=np.float32), name)


def i64(name, values):
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def model(nodes, inputs, outputs, inits=(), opset=OPSET, sparse=()):
    graph = helper.make_graph(nodes, "bad", inputs, outputs, initializer=list(inits),
                              sparse_initializer=list(sparse))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name="kiln tools/gen_bad_models.py")
    m.ir_version = 8
    return m.SerializeToString()


def conv_model(w_shape, x_shape=(1, 3, 8, 8), **attrs):
    """x → Conv(W) named conv1 → y, with W an initializer of `w_shape` (zeros)."""
    w = f32("W", np.zeros(w_shape))
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="conv1", **attrs)
    return model([node], [vi("x", list(x_shape))], [vi("y", None)], [w])


def one_node(op, inputs, inits=(), x_shape=(1, 3, 4, 4), name="n", outputs=("y",), **attrs):
    """x (f32 `x_shape`) → op named `name` → outputs; `inits` are initializers."""
    node = helper.make_node(op, list(inputs), list(outputs), name=name, **attrs)
    return model([node], [vi("x", list(x_shape))], [vi(o, None) for o in outputs], inits)


def relu_model():
    return one_node("Relu", ["x"], name="relu")


def external_tensor(name, dims, location, **entries):
    t = TensorProto()
    t.name = name
    t.data_type = FLOAT
    t.dims.extend(dims)
    t.data_location = TensorProto.EXTERNAL
    for key, value in [("location", location)] + list(entries.items()):
        if value is None:
            continue
        e = t.external_data.add()
        e.key = key
        e.value = str(value)
    return t


def add_bias_model(bias):
    """x[4] + bias → y: the bias initializer is the case."""
    node = helper.make_node("Add", ["x", bias.name], ["y"], name="add")
    return model([node], [vi("x", [4])], [vi("y", None)], [bias])


def npy(header, data=b"", version=(1, 0)):
    """A .npy file with the given header text, padded as numpy pads it."""
    text = header.encode("latin-1")
    prefix = 10 if version[0] == 1 else 12
    pad = 64 - (prefix + len(text) + 1) % 64
    text += b" " * pad + b"\n"
    length = struct.pack("<H", len(text)) if version[0] == 1 else struct.pack("<I", len(text))
    return b"\x93NUMPY" + bytes(version) + length + text + data


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# --------------------------------------------------------------------------------------
# Not an ONNX model at all: empty, garbage, truncated, invalid protobuf.
# --------------------------------------------------------------------------------------

@case("empty.onnx", "model: the file is empty (0 bytes), not an ONNX model")
def _():
    return b""


@case("garbage.onnx", "not a valid ONNX protobuf (truncated or corrupt file?): failed to decode "
                      "Protobuf message: unexpected end group tag")
def _():
    # A text file: 'T' (0x54) starts field 10 with wire type 4 (end group) out of place.
    return b"This is a text file, not a model.\n"


@case("truncated.onnx", "not a valid ONNX protobuf (truncated or corrupt file?): failed to decode "
                        "Protobuf message: ModelProto.graph: buffer underflow")
def _():
    full = conv_model((4, 3, 3, 3))
    return full[: len(full) * 2 // 3]


@case("invalid_wire_type.onnx", "not a valid ONNX protobuf (truncated or corrupt file?): failed to "
                                 "decode Protobuf message: invalid wire type value: 7")
def _():
    # Field 1 with wire type 7, which protobuf does not define.
    return relu_model() + b"\x0f\x00"


@case("length_overflow.onnx", "not a valid ONNX protobuf (truncated or corrupt file?): failed to "
                               "decode Protobuf message: ModelProto.graph: buffer underflow")
def _():
    # ModelProto.graph (field 7, length-delimited) claiming 2^62 bytes.
    return b"\x08\x08" + b"\x3a" + varint(1 << 62) + b"\x00" * 8


@case("deep_nesting.onnx", "AttributeProto.g: NodeProto.attribute: GraphProto.node: "
                            "ModelProto.graph: recursion limit reached")
def _():
    # 120 graphs nested through If-node attributes, past protobuf decoders' depth limit
    # (Python's protobuf refuses to build it, so the bytes are spelled out).
    def field(number, payload):  # a length-delimited field
        return varint(number << 3 | 2) + varint(len(payload)) + payload

    graph = b""
    for _ in range(120):
        # AttributeProto: name (1), type (20) = GRAPH (5), g (6).
        attribute = field(1, b"then_branch") + varint(20 << 3) + varint(5) + field(6, graph)
        node = field(4, b"If") + field(5, attribute)  # NodeProto: op_type (4), attribute (5)
        graph = field(1, node)  # GraphProto: node (1)
    opset = varint(2 << 3) + varint(OPSET)  # OperatorSetIdProto: version (2)
    return varint(1 << 3) + varint(8) + field(8, opset) + field(7, graph)


@case("npy_as_model.onnx", "this is a .npy array (it starts with \\x93NUMPY), not an ONNX model")
def _():
    return npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", b"\0\0\x80?")


@case("zip_as_model.onnx", "this is a zip archive (a PyTorch checkpoint or a .npz?), not an ONNX model")
def _():
    return b"PK\x03\x04" + b"\0" * 26


@case("not_a_model.onnx", "not an ONNX model: the bytes decode as protobuf but hold no ir_version, opset_import or graph")
def _():
    # Decodes (field 10, a varint kiln does not know, is skipped) but holds nothing.
    return b"\x50\x01"


# --------------------------------------------------------------------------------------
# The model as a whole.
# --------------------------------------------------------------------------------------

@case("no_graph.onnx", "model: the model has no graph")
def _():
    m = helper.make_model(helper.make_graph([], "g", [], []),
                          opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = 8
    m.ClearField("graph")
    return m.SerializeToString()


@case("no_opset_import.onnx", "the model does not import the ai.onnx opset")
def _():
    m = helper.make_model(helper.make_graph([], "g", [], []), opset_imports=[])
    m.ir_version = 8
    del m.opset_import[:]
    return m.SerializeToString()


@case("opset_too_old.onnx", "ai.onnx opset 5 is older than 7, the oldest kiln imports")
def _():
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    return model([node], [vi("x", [2])], [vi("y", None)], opset=5)


@case("opset_too_new.onnx", "ai.onnx opset 99 is newer than 28, the newest kiln knows")
def _():
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    return model([node], [vi("x", [2])], [vi("y", None)], opset=99)


@case("no_outputs.onnx", "model: the graph declares no outputs")
def _():
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    return model([node], [vi("x", [2])], [])


@case("missing_graph_output.onnx",
      "model: graph output 'z' is not produced by any node, graph input or initializer")
def _():
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    return model([node], [vi("x", [2])], [vi("z", None)])


@case("extra_node_output.onnx",
      "model: graph output 'z' is not available: node 'relu' (Relu) lists it as output 1, but "
      "Relu has no such output")
def _():
    node = helper.make_node("Relu", ["x"], ["y", "z"], name="relu")
    return model([node], [vi("x", [2])], [vi("z", None)])


@case("duplicate_node_output.onnx",
      "model: value 'y' is produced by both node 'relu' (Relu) and node 'sigmoid' (Sigmoid)")
def _():
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu"),
             helper.make_node("Sigmoid", ["x"], ["y"], name="sigmoid")]
    return model(nodes, [vi("x", [2])], [vi("y", None)])


@case("output_shadows_input.onnx",
      "model: value 'x' is produced by node 'relu' (Relu) but is also a graph input")
def _():
    node = helper.make_node("Relu", ["x"], ["x"], name="relu")
    return model([node], [vi("x", [2])], [vi("x", None)])


@case("output_shadows_initializer.onnx",
      "model: value 'b' is produced by node 'relu' (Relu) but is also an initializer")
def _():
    nodes = [helper.make_node("Relu", ["x"], ["b"], name="relu"),
             helper.make_node("Add", ["x", "b"], ["y"], name="add")]
    return model(nodes, [vi("x", [2])], [vi("y", None)], [f32("b", [1, 2])])


@case("duplicate_initializer.onnx", "model: initializer 'b' is defined twice")
def _():
    node = helper.make_node("Add", ["x", "b"], ["y"], name="add")
    return model([node], [vi("x", [2])], [vi("y", None)], [f32("b", [1, 2]), f32("b", [3, 4])])


@case("duplicate_graph_input.onnx", "model: graph input 'x' is declared twice")
def _():
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    return model([node], [vi("x", [2]), vi("x", [3])], [vi("y", None)])


@case("cycle.onnx", "model: the graph has a cycle: 'first' (Add) → 'second' (Relu) → 'first'")
def _():
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="first"),
             helper.make_node("Relu", ["a"], ["b"], name="second"),
             helper.make_node("Sigmoid", ["b"], ["y"], name="after")]
    return model(nodes, [vi("x", [2])], [vi("y", None)])


@case("self_loop.onnx", "model: the graph has a cycle: 'loop' (Add) → 'loop'")
def _():
    node = helper.make_node("Add", ["x", "y"], ["y"], name="loop")
    return model([node], [vi("x", [2])], [vi("y", None)])


@case("undefined_input.onnx",
      f"node 'conv1' (Conv, {NODE}): input 1 'W' is not produced by any node, graph input or initializer")
def _():
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="conv1")
    return model([node], [vi("x", [1, 3, 8, 8])], [vi("y", None)])


@case("unsupported_op.onnx", f"unsupported op 'LSTM' ({NODE}) in node 'lstm'; supported: Add,")
def _():
    return one_node("LSTM", ["x"], name="lstm", x_shape=(2, 1, 4))


@case("unknown_domain.onnx",
      "unsupported op 'FancyOp' (domain com.example, opset 1) in node 'custom'")
def _():
    node = helper.make_node("FancyOp", ["x"], ["y"], name="custom", domain="com.example")
    graph = helper.make_graph([node], "bad", [vi("x", [2])], [vi("y", None)])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                helper.make_opsetid("com.example", 1)])
    m.ir_version = 8
    return m.SerializeToString()


@case("sparse_initializer.onnx", "model: sparse initializers are not supported")
def _():
    values = f32("s", [1.0])
    indices = i64("s_indices", [0])
    sparse = helper.make_sparse_tensor(values, indices, [2])
    node = helper.make_node("Add", ["x", "s"], ["y"], name="add")
    return model([node], [vi("x", [2])], [vi("y", None)], sparse=[sparse])


# --------------------------------------------------------------------------------------
# Graph inputs.
# --------------------------------------------------------------------------------------

@case("negative_input_dim.onnx", "graph input 'x': dim 1 is -3; dims must be non-negative")
def _():
    return one_node("Relu", ["x"], x_shape=(1, -3, 4))


@case("huge_input.onnx",
      "graph input 'x' (f32[1048576,1048576]) needs 4.0 TiB (4398046511104 bytes), over the "
      "import memory limit of 16.0 GiB")
def _():
    # 2^40 elements: fits in a usize, but no machine here has 4 TiB.
    return one_node("Relu", ["x"], x_shape=(1 << 20, 1 << 20))


@case("overflow_input.onnx",
      "graph input 'x': shape [1099511627776, 1099511627776] has more elements than fit in memory")
def _():
    return one_node("Relu", ["x"], x_shape=(1 << 40, 1 << 40))


@case("input_not_tensor.onnx",
      "graph input 'x': is not a tensor (sequence, map, optional and sparse inputs are not supported)")
def _():
    seq = helper.make_tensor_sequence_value_info("x", FLOAT, [2])
    node = helper.make_node("Identity", ["x"], ["y"], name="id")
    return model([node], [seq], [vi("y", None)])


@case("input_unsupported_dtype.onnx",
      "graph input 'x': element type DOUBLE is not supported")
def _():
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    return model([node], [vi("x", [2], TensorProto.DOUBLE)], [vi("y", None)])


@case("dynamic_input.onnx",
      "graph input 'x': dim 0 ('batch') is dynamic; fix it with --input-shape x=D0,D1")
def _():
    return one_node("Relu", ["x"], x_shape=("batch", 3))


@case("initializer_input_mismatch.onnx",
      "graph input 'b': is declared with shape [3], but its initializer is f32[2]")
def _():
    node = helper.make_node("Add", ["x", "b"], ["y"], name="add")
    return model([node], [vi("x", [2]), vi("b", [3])], [vi("y", None)], [f32("b", [1, 2])])


# --------------------------------------------------------------------------------------
# Initializers: shapes, element types, data lengths.
# --------------------------------------------------------------------------------------

def raw_tensor(name, dims, data_type=FLOAT, raw=b""):
    t = TensorProto()
    t.name = name
    t.data_type = data_type
    t.dims.extend(dims)
    t.raw_data = raw
    return t


@case("negative_initializer_dim.onnx", "tensor 'b': negative dimension -2 in [-2, 2]")
def _():
    return add_bias_model(raw_tensor("b", [-2, 2]))


@case("huge_initializer.onnx",
      "initializer 'b' (f32[1048576,1048576]) needs 4.0 TiB (4398046511104 bytes) on top of the "
      "16 B imported before it, over the import memory limit of 16.0 GiB")
def _():
    return add_bias_model(raw_tensor("b", [1 << 20, 1 << 20], raw=b"\0" * 16))


@case("overflow_initializer.onnx",
      "tensor 'b': shape [2147483648, 2147483648, 2147483648] has more elements than fit in memory")
def _():
    return add_bias_model(raw_tensor("b", [1 << 31] * 3))


@case("byte_overflow_initializer.onnx",
      "tensor 'b': shape [2147483648, 2147483648] (4611686018427387904 elements of 8 bytes) has "
      "more bytes than fit in memory")
def _():
    # 2^62 elements fit in a 64-bit usize; 2^65 bytes do not.
    return add_bias_model(raw_tensor("b", [1 << 31, 1 << 31], data_type=INT64))


@case("raw_data_length_mismatch.onnx",
      "tensor 'b': raw data has 12 bytes, expected 16 (4 elements of 4 bytes)")
def _():
    return add_bias_model(raw_tensor("b", [4], raw=b"\0" * 12))


@case("float_data_count_mismatch.onnx", "tensor 'b': float_data has 3 elements, the shape needs 4")
def _():
    t = helper.make_tensor("b", FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    del t.float_data[3]
    return add_bias_model(t)


@case("initializer_without_data.onnx",
      "tensor 'b': has no data (4 elements expected, float_data is empty)")
def _():
    t = TensorProto()
    t.name, t.data_type = "b", FLOAT
    t.dims.extend([4])
    return add_bias_model(t)


@case("initializer_unsupported_dtype.onnx", "tensor 'b': element type DOUBLE is not supported")
def _():
    return add_bias_model(numpy_helper.from_array(np.zeros(4), "b"))


@case("initializer_undefined_dtype.onnx", "tensor 'b': element type UNDEFINED is not supported")
def _():
    return add_bias_model(raw_tensor("b", [4], data_type=TensorProto.UNDEFINED, raw=b"\0" * 16))


@case("int32_data_out_of_range.onnx", "tensor 'zp': int32_data value 300 is out of range [0, 255]")
def _():
    zp = helper.make_tensor("zp", TensorProto.UINT8, [], [0])
    zp.int32_data[0] = 300
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["y"], name="q")]
    return model(nodes, [vi("x", [4])], [vi("y", None)], [f32("s", 0.5), zp])


@case("dtype_mismatch_add.onnx",
      f"node 'add' (Add, {NODE}): input 1 (b) must have the dtype of input 0 (a): f32[4] vs i64[4]")
def _():
    return add_bias_model(i64("b", [1, 2, 3, 4]))


# --------------------------------------------------------------------------------------
# External data: paths must stay in the model's directory, ranges inside the file.
# --------------------------------------------------------------------------------------

EXTRA_FILES["external_data.bin"] = np.arange(4, dtype=np.float32).tobytes()  # 16 bytes


@case("external_escape.onnx",
      "tensor 'b': external data location '../../etc/passwd' leaves the model's directory")
def _():
    return add_bias_model(external_tensor("b", [4], "../../etc/passwd"))


@case("external_absolute.onnx",
      "tensor 'b': external data location '/etc/passwd' is absolute; it must be relative to the "
      "model's directory")
def _():
    return add_bias_model(external_tensor("b", [4], "/etc/passwd"))


@case("external_missing_file.onnx",
      "tensor 'b': external data file 'no_such_weights.bin' does not exist (looked in '")
def _():
    return add_bias_model(external_tensor("b", [4], "no_such_weights.bin"))


@case("external_out_of_range.onnx",
      "tensor 'b': external data range offset 8 + length 16 exceeds 'external_data.bin' (16 bytes)")
def _():
    return add_bias_model(external_tensor("b", [4], "external_data.bin", offset=8, length=16))


@case("external_length_mismatch.onnx",
      "tensor 'b': external data in 'external_data.bin' (offset 0) has 8 bytes, expected 16")
def _():
    return add_bias_model(external_tensor("b", [4], "external_data.bin", length=8))


@case("external_no_location.onnx", "tensor 'b': external data has no 'location'")
def _():
    t = external_tensor("b", [4], None, offset=0)
    return add_bias_model(t)


@case("external_bad_offset.onnx",
      "tensor 'b': external data offset '-8' is not a non-negative integer")
def _():
    return add_bias_model(external_tensor("b", [4], "external_data.bin", offset=-8))


# --------------------------------------------------------------------------------------
# Ops: attributes and shapes that do not fit.
# --------------------------------------------------------------------------------------

@case("conv_5d_weight.onnx",
      f"node 'conv1' (Conv, {NODE}): weight shape [4, 3, 3, 3, 3] must have the rank of the "
      "input [1, 3, 8, 8]")
def _():
    return conv_model((4, 3, 3, 3, 3))


@case("conv_channel_mismatch.onnx",
      f"node 'conv1' (Conv, {NODE}): input 1 (w) f32[4,2,3,3] must have C_in/groups = 3/1 = 3 on "
      "axis 1, got 2")
def _():
    return conv_model((4, 2, 3, 3))


@case("conv_zero_stride.onnx", f"node 'conv1' (Conv, {NODE}): strides [0, 1] must be positive")
def _():
    return conv_model((4, 3, 3, 3), strides=[0, 1])


@case("conv_negative_pads.onnx", f"node 'conv1' (Conv, {NODE}): pads [1, -1, 1, 1] has a negative entry")
def _():
    return conv_model((4, 3, 3, 3), pads=[1, -1, 1, 1])


@case("conv_dilation_overflow.onnx",
      f"node 'conv1' (Conv, {NODE}): dilated kernel extent (5 − 1)·4611686018427387904 + 1 overflows")
def _():
    return conv_model((4, 3, 5, 5), auto_pad="SAME_UPPER", dilations=[1 << 62, 1])


@case("conv_group_mismatch.onnx",
      f"node 'conv1' (Conv, {NODE}): input channels 3 of x f32[1,3,8,8] are not divisible by "
      "groups = 2")
def _():
    return conv_model((4, 3, 3, 3), group=2)


@case("conv_int64_weight.onnx",
      f"node 'conv1' (Conv, {NODE}): input 1 (w) must have the dtype of input 0 (x): "
      "f32[1,3,8,8] vs i64[4,3,3,3]")
def _():
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="conv1")
    return model([node], [vi("x", [1, 3, 8, 8])], [vi("y", None)],
                 [i64("W", np.zeros((4, 3, 3, 3)))])


@case("maxpool_zero_kernel.onnx",
      f"node 'pool' (MaxPool, {NODE}): kernel [0, 0] has a zero-sized dimension")
def _():
    return one_node("MaxPool", ["x"], name="pool", kernel_shape=[0, 0])


@case("reshape_two_minus_one.onnx",
      f"node 'reshape' (Reshape, {NODE}): shape [-1, -1] has more than one -1")
def _():
    return one_node("Reshape", ["x", "shape"], [i64("shape", [-1, -1])], name="reshape")


@case("reshape_count_mismatch.onnx",
      f"node 'reshape' (Reshape, {NODE}): cannot reshape [1, 3, 4, 4] (48 elements) to [5, -1]")
def _():
    return one_node("Reshape", ["x", "shape"], [i64("shape", [5, -1])], name="reshape")


@case("reshape_overflow.onnx",
      f"node 'reshape' (Reshape, {NODE}): cannot reshape [1, 3, 4, 4] (48 elements) to "
      "[4611686018427387904, 4611686018427387904]")
def _():
    return one_node("Reshape", ["x", "shape"], [i64("shape", [1 << 62, 1 << 62])], name="reshape")


@case("gather_index_out_of_range.onnx",
      f"node 'gather' (Gather, {NODE}): index 5 in constant indices 'idx' is out of range for "
      "axis 0 of size 4 (valid: -4..=3)")
def _():
    node = helper.make_node("Gather", ["x", "idx"], ["y"], name="gather", axis=0)
    return model([node], [vi("x", [4, 3])], [vi("y", None)], [i64("idx", [0, 5])])


@case("gather_folded_out_of_range.onnx",
      f"node 'gather' (Gather, {NODE}): index -3 in constant indices 'idx' is out of range for "
      "axis 0 of size 2 (valid: -2..=1)")
def _():
    # Shape(x) is a constant [2, 3]: the Gather folds, so the check must come first.
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "idx"], ["y"], name="gather", axis=0)]
    return model(nodes, [vi("x", [2, 3])], [vi("y", None)], [i64("idx", [-3])])


@case("pad_negative_total.onnx",
      f"node 'pad' (Pad, {NODE}): axis 2: pads (-3, -3) crop 6 elements, but the axis has 4")
def _():
    pads = i64("pads", [0, 0, -3, 0, 0, 0, -3, 0])
    return one_node("Pad", ["x", "pads"], [pads], name="pad")


@case("pad_crop_then_grow.onnx",
      f"node 'pad' (Pad, {NODE}): axis 1: pads (-9223372036854775808, 9223372036854775807) crop "
      "9223372036854775808 elements, but the axis has 3")
def _():
    # The net size (3 − 2^63 + 2^63 − 1 = 2) is fine; the crop is not.
    pads = i64("pads", [0, -(1 << 63), 0, 0, 0, (1 << 63) - 1, 0, 0])
    return one_node("Pad", ["x", "pads"], [pads], name="pad")


@case("pad_huge.onnx",
      f"node 'pad' (Pad, {NODE}): axis 3: pad 1099511627776 exceeds 2147483647, the largest kiln "
      "supports")
def _():
    pads = i64("pads", [0, 0, 0, 1 << 40, 0, 0, 0, 0])
    return one_node("Pad", ["x", "pads"], [pads], name="pad")


@case("maxpool_huge_kernel.onnx",
      f"node 'pool' (MaxPool, {NODE}): spatial dim 1: the dilated kernel extent (4294967296) "
      "exceeds 2147483647, the largest window kiln supports")
def _():
    # With SAME padding any kernel fits the padded input; this one has 2^32 taps per row.
    return one_node("MaxPool", ["x"], name="pool", kernel_shape=[1, 1 << 32],
                    auto_pad="SAME_UPPER")


@case("conv_transpose_huge_dilation.onnx",
      f"node 'deconv' (ConvTranspose, {NODE}): spatial dim 0: the dilated kernel extent "
      "(18446744073709551615) exceeds 2147483647, the largest window kiln supports")
def _():
    w = f32("W", np.zeros((3, 2, 3, 3)))
    node = helper.make_node("ConvTranspose", ["x", "W"], ["y"], name="deconv",
                            dilations=[(1 << 63) - 1, 1], auto_pad="SAME_UPPER")
    return model([node], [vi("x", [1, 3, 4, 4])], [vi("y", None)], [w])


@case("pad_wrong_length.onnx",
      f"node 'pad' (Pad, {NODE}): pads [1, 1] must have 8 entries for rank 4")
def _():
    return one_node("Pad", ["x", "pads"], [i64("pads", [1, 1])], name="pad")


@case("concat_axis_out_of_range.onnx",
      f"node 'concat' (Concat, {NODE}): axis 4 is out of range for rank 4")
def _():
    return one_node("Concat", ["x", "x"], name="concat", axis=4)


@case("concat_shape_mismatch.onnx",
      f"node 'concat' (Concat, {NODE}): input 1 f32[1,3,5] must match input 0 f32[1,3,4] in "
      "every dim but axis 1")
def _():
    node = helper.make_node("Concat", ["x", "z"], ["y"], name="concat", axis=1)
    return model([node], [vi("x", [1, 3, 4]), vi("z", [1, 3, 5])], [vi("y", None)])


@case("gemm_shape_mismatch.onnx",
      f"node 'gemm' (Gemm, {NODE}): inner dimensions differ: op(a) of f32[2,3] (trans_a = false) "
      "has K = 3, op(b) of f32[4,5] (trans_b = false) has K = 4")
def _():
    node = helper.make_node("Gemm", ["x", "B"], ["y"], name="gemm")
    return model([node], [vi("x", [2, 3])], [vi("y", None)], [f32("B", np.zeros((4, 5)))])


@case("matmul_shape_mismatch.onnx",
      f"node 'matmul' (MatMul, {NODE}): inner dimensions differ: a f32[2,3] has K = 3, b f32[4,5] "
      "has K = 4")
def _():
    node = helper.make_node("MatMul", ["x", "B"], ["y"], name="matmul")
    return model([node], [vi("x", [2, 3])], [vi("y", None)], [f32("B", np.zeros((4, 5)))])


@case("transpose_bad_perm.onnx",
      f"node 'transpose' (Transpose, {NODE}): perm [0, 1, 1, 2] is not a permutation of 0..4")
def _():
    return one_node("Transpose", ["x"], name="transpose", perm=[0, 1, 1, 2])


@case("split_sizes_mismatch.onnx",
      f"node 'split' (Split, {NODE}): split [2, 3] must have one entry per output (2) summing to "
      "dim 1 of [1, 3, 4, 4]")
def _():
    return one_node("Split", ["x", "sizes"], [i64("sizes", [2, 3])], name="split",
                    outputs=("a", "b"), axis=1)


@case("slice_zero_step.onnx", f"node 'slice' (Slice, {NODE}): slice step is 0")
def _():
    inits = [i64("starts", [0]), i64("ends", [2]), i64("axes", [1]), i64("steps", [0])]
    return one_node("Slice", ["x", "starts", "ends", "axes", "steps"], inits, name="slice")


@case("squeeze_non_one.onnx",
      f"node 'squeeze' (Squeeze, {NODE}): cannot squeeze axis 1 of shape [1, 3, 4, 4]: its size is not 1")
def _():
    return one_node("Squeeze", ["x", "axes"], [i64("axes", [1])], name="squeeze")


@case("attribute_wrong_type.onnx",
      f"node 'leaky' (LeakyRelu, {NODE}): attribute 'alpha' is INT, expected FLOAT")
def _():
    return one_node("LeakyRelu", ["x"], name="leaky", alpha=1)


@case("cast_unsupported.onnx",
      f"node 'cast' (Cast, {NODE}): cast target: element type DOUBLE is not supported")
def _():
    return one_node("Cast", ["x"], name="cast", to=TensorProto.DOUBLE)


@case("constant_without_value.onnx",
      f"node 'const' (Constant, {NODE}): must have exactly one value attribute, has []")
def _():
    node = helper.make_node("Constant", [], ["y"], name="const")
    return model([node], [], [vi("y", None)])


@case("batchnorm_param_shape.onnx",
      f"node 'bn' (BatchNormalization, {NODE}): input 1 (scale) must have shape [3] (one value per "
      "channel of x f32[1,3,4,4]), got f32[5]")
def _():
    inits = [f32(n, np.ones(5)) for n in ("s", "b", "m", "v")]
    return one_node("BatchNormalization", ["x", "s", "b", "m", "v"], inits, name="bn")


@case("dequantize_zero_scale.onnx",
      f"node 'dq' (DequantizeLinear, {NODE}): scale 's' has value 0; kiln needs positive finite scales")
def _():
    node = helper.make_node("DequantizeLinear", ["x", "s"], ["y"], name="dq")
    return model([node], [vi("x", [4], TensorProto.UINT8)], [vi("y", None)], [f32("s", 0.0)])


@case("node_without_output.onnx", f"node 'relu' (Relu, {NODE}): has no output")
def _():
    nodes = [helper.make_node("Relu", ["x"], [], name="relu"),
             helper.make_node("Sigmoid", ["x"], ["y"], name="sigmoid")]
    return model(nodes, [vi("x", [2])], [vi("y", None)])


@case("shape_input_not_constant.onnx",
      f"node 'reshape' (Reshape, {NODE}): input 1 'shape' (shape) must be a constant, but it is "
      "a graph input, known only at run time")
def _():
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape")]
    return model(nodes, [vi("x", [2, 3]), vi("shape", [2], INT64)], [vi("y", None)])


# --------------------------------------------------------------------------------------
# Memory: small models asking for huge allocations at import (folding) or run time.
# --------------------------------------------------------------------------------------

@case("constant_of_shape_huge.onnx",
      f"node 'fill' (ConstantOfShape, {NODE}): output 'y' (f32[1048576,1048576]) needs 4.0 TiB "
      "(4398046511104 bytes)")
def _():
    node = helper.make_node("ConstantOfShape", ["shape"], ["y"], name="fill")
    return model([node], [], [vi("y", None)], [i64("shape", [1 << 20, 1 << 20])])


@case("range_huge.onnx",
      f"node 'range' (Range, {NODE}): output 'y' (i64[4294967296]) needs 32.0 GiB (34359738368 bytes)")
def _():
    inits = [i64("start", 0), i64("limit", 1 << 32), i64("delta", 1)]
    node = helper.make_node("Range", ["start", "limit", "delta"], ["y"], name="range")
    return model([node], [], [vi("y", None)], inits)


@case("fold_broadcast_huge.onnx",
      f"node 'add' (Add, {NODE}): output 'y' (f32[131072,131072]) needs 64.0 GiB")
def _():
    # Two small constant fills whose broadcast sum would be folded at import.
    nodes = [helper.make_node("ConstantOfShape", ["rows"], ["a"], name="fill_rows"),
             helper.make_node("ConstantOfShape", ["cols"], ["b"], name="fill_cols"),
             helper.make_node("Add", ["a", "b"], ["y"], name="add")]
    inits = [i64("rows", [1 << 17, 1]), i64("cols", [1, 1 << 17])]
    return model(nodes, [], [vi("y", None)], inits)


@case("resize_huge.onnx",
      f"node 'resize' (Resize, {NODE}): output 'y' (f32[1,3,400000,400000]) needs 1.7 TiB")
def _():
    scales = f32("scales", [1, 1, 1e5, 1e5])
    return one_node("Resize", ["x", "", "scales"], [scales], name="resize")


# --------------------------------------------------------------------------------------
# Tensor files: .npy (inputs of `kiln run`) and TensorProto .pb (ONNX test data).
# --------------------------------------------------------------------------------------

@case("npy_bad_magic.npy", "not a .npy file: it does not start with the magic bytes \\x93NUMPY")
def _():
    return b"NUMPY\x01\x00" + b"\0" * 60


@case("npy_bad_header.npy",
      "malformed .npy header: expected ')' at character 56, found '}'")
def _():
    return npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3 }")


@case("npy_truncated.npy", "truncated .npy data: expected 24 bytes, got 8")
def _():
    return npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", b"\0" * 8)


@case("npy_huge_shape.npy", "truncated .npy data: expected 1099511627776 bytes, got 0")
def _():
    # 2^40 declared elements, none stored: rejected before anything is allocated.
    return npy("{'descr': '|u1', 'fortran_order': False, 'shape': (1099511627776,), }")


@case("npy_overflow_shape.npy",
      "malformed .npy header: shape [1099511627776, 1099511627776] is too large")
def _():
    return npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }")


@case("npy_unsupported_dtype.npy", "unsupported dtype '<f8'")
def _():
    return npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", b"\0" * 8)


@case("npy_header_past_end.npy",
      "malformed .npy header: header of 65535 bytes runs past the end of the 30-byte file")
def _():
    return b"\x93NUMPY\x01\x00\xff\xff" + b"{" * 20


@case("tensor_truncated.pb", "not a valid ONNX protobuf (truncated or corrupt file?): failed to "
                             "decode Protobuf message: TensorProto.raw_data: buffer underflow")
def _():
    full = f32("t", np.arange(16)).SerializeToString()
    return full[: len(full) // 2]


@case("tensor_count_mismatch.pb", "tensor 't': raw data has 8 bytes, expected 64")
def _():
    return raw_tensor("t", [4, 4], raw=b"\0" * 8).SerializeToString()


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.normpath(os.path.join(here, "..", "tests", "bad-models"))
    os.makedirs(out, exist_ok=True)
    names = [name for name, _, _ in CASES]
    assert len(names) == len(set(names)), "case names are unique"
    for name, data in EXTRA_FILES.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    lines = [
        "# Malformed models and the error kiln must report for each (a substring of the",
        "# message). Generated by tools/gen_bad_models.py; checked by tests/bad_models.rs.",
        "# Format: FILE: EXPECTED (split at the first ': ').",
    ]
    for name, expected, build in CASES:
        data = build()
        assert isinstance(data, bytes), name
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        assert "\n" not in expected, name
        lines.append(f"{name}: {expected}")
    with open(os.path.join(out, "expected.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(CASES)} cases to {out}")


if __name__ == "__main__":
    main()
