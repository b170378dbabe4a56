#!/usr/bin/env python3
"""Generate kiln's embedded demo model: a small CNN with Conv+BN+ReLU and a residual add.

The model is checked in (crates/kiln-cli/assets/demo.onnx, ~25 KiB) and embedded in the `kiln`
binary, so `kiln demo` needs no download. Regenerate it with:

    python tools/gen_demo_model.py crates/kiln-cli/assets/demo.onnx

Fixed seed (0): the file is byte-for-byte reproducible with the same numpy/onnx versions.

    input  f32[1,3,32,32]
    stem:  Conv 3->16 3x3 pad 1 -> BatchNorm -> Relu
    block: Conv 16->16 3x3 -> BN -> Relu -> Conv 16->16 3x3 -> BN -> Add(stem) -> Relu
    head:  MaxPool 2x2 -> GlobalAveragePool -> Flatten -> Gemm 16->10 -> Softmax
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(0)
inits = []


def const(name, array):
    inits.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), name))
    return name


def conv_bn(prefix, x, cin, cout):
    """Conv (He-normal weights, no bias) followed by BatchNorm with non-trivial statistics."""
    w = const(f"{prefix}.weight", rng.normal(0, np.sqrt(2.0 / (cin * 9)), (cout, cin, 3, 3)))
    conv = helper.make_node("Conv", [x, w], [f"{prefix}.conv"], name=f"{prefix}/Conv",
                            kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    bn = helper.make_node(
        "BatchNormalization",
        [f"{prefix}.conv", const(f"{prefix}.bn.gamma", rng.uniform(0.5, 1.5, cout)),
         const(f"{prefix}.bn.beta", rng.normal(0, 0.1, cout)),
         const(f"{prefix}.bn.mean", rng.normal(0, 0.2, cout)),
         const(f"{prefix}.bn.var", rng.uniform(0.5, 2.0, cout))],
        [f"{prefix}.bn"], name=f"{prefix}/BatchNormalization", epsilon=1e-5)
    return [conv, bn], f"{prefix}.bn"


nodes = []
n, stem = conv_bn("stem", "input", 3, 16)
nodes += n + [helper.make_node("Relu", [stem], ["stem.relu"], name="stem/Relu")]
n, a = conv_bn("block.conv1", "stem.relu", 16, 16)
nodes += n + [helper.make_node("Relu", [a], ["block.relu1"], name="block/Relu1")]
n, b = conv_bn("block.conv2", "block.relu1", 16, 16)
nodes += n + [
    helper.make_node("Add", [b, "stem.relu"], ["block.add"], name="block/Add"),
    helper.make_node("Relu", ["block.add"], ["block.out"], name="block/Relu2"),
    helper.make_node("MaxPool", ["block.out"], ["pool"], name="head/MaxPool",
                     kernel_shape=[2, 2], strides=[2, 2]),
    helper.make_node("GlobalAveragePool", ["pool"], ["gap"], name="head/GlobalAveragePool"),
    helper.make_node("Flatten", ["gap"], ["flat"], name="head/Flatten", axis=1),
    helper.make_node("Gemm", ["flat", const("fc.weight", rng.normal(0, 0.5, (10, 16))),
                              const("fc.bias", rng.normal(0, 0.1, 10))],
                     ["logits"], name="head/Gemm", transB=1),
    helper.make_node("Softmax", ["logits"], ["probs"], name="head/Softmax", axis=1),
]
graph = helper.make_graph(
    nodes, "kiln_demo",
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
    [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 10])],
    initializer=inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                          producer_name="kiln tools/gen_demo_model.py")
model.ir_version = 8
onnx.checker.check_model(model, full_check=True)
onnx.save(model, sys.argv[1])
print(sys.argv[1], len(nodes), "nodes,", sum(int(np.prod(i.dims)) for i in inits), "parameters")
