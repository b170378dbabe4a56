#!/usr/bin/env python3
"""Turn one of the onnx wheel's "light" models into a realistic test and benchmark model.

The light models (onnx/backend/test/data/light/*.onnx) keep real architectures (resnet50,
densenet121, ...) but fill every weight with a ConstantOfShape of 0.02. This replaces each fill
with a seeded random initializer of the same shape, chosen by what consumes it, so activations
keep an O(1) magnitude through the whole network (a differential test on vanishing or exploding
activations would prove little):

- Conv / ConvTranspose / Gemm weights: He-normal, std = sqrt(2 / fan_in);
- biases (Conv / Gemm input 2, Caffe2-style per-channel Add after BatchNormalization): N(0, 0.05);
- BatchNormalization: scale U(0.5, 1.5), bias N(0, 0.1); mean and var *calibrated*: the
  per-channel statistics of each BatchNormalization's input on a seeded N(0, 1) calibration
  image, as a trained network's running statistics match its activations (random statistics
  let residual networks blow up to 1e5 by the classifier);
- the per-channel Mul after BatchNormalization (densenet, inception_v2): U(0.5, 1.5);
- anything else: N(0, 0.05).

A fill reaching its consumer through Reshape / Unsqueeze (inception_v1's classifier weight,
densenet's per-channel scale) is classified by the consumer at the end of that chain. The now
unused shape inputs are dropped and the model is converted to opset 13.

usage: realize_light.py SRC.onnx DST.onnx [SEED]
"""
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper, shape_inference, version_converter

# Ops that only re-view a tensor: a fill is classified by whoever consumes their output.
VIEW_OPS = ("Reshape", "Unsqueeze")


def final_consumer(value, consumers, initializers):
    """(op_type, input slot, shape as seen by that consumer) at the end of a view-op chain."""
    shape_override = None
    while True:
        users = consumers.get(value) or []
        if not users:
            return None, None, shape_override
        node, slot = users[0]
        if node.op_type in VIEW_OPS and slot == 0:
            if node.op_type == "Reshape" and node.input[1] in initializers:
                target = [int(d) for d in initializers[node.input[1]]]
                if all(d > 0 for d in target):
                    shape_override = target
            value = node.output[0]
            continue
        return node.op_type, slot, shape_override


def realistic_fill(rng, shape, consumer, slot, consumer_shape):
    """Seeded values for one ConstantOfShape fill, by the role of the consumer input."""
    if consumer in ("Conv", "ConvTranspose", "Gemm") and slot == 1:
        w_shape = consumer_shape or shape
        if consumer == "Gemm":
            # The light models' Gemms all use transB=1: weight is [N, K].
            fan_in = w_shape[-1]
        elif consumer == "ConvTranspose":
            fan_in = w_shape[0] * int(np.prod(w_shape[2:]))
        else:
            fan_in = int(np.prod(w_shape[1:]))
        return rng.normal(0.0, np.sqrt(2.0 / max(fan_in, 1)), size=shape)
    if consumer == "BatchNormalization":
        # Mean and var are placeholders here; calibrate_batchnorm_statistics overwrites them.
        return {
            1: lambda: rng.uniform(0.5, 1.5, shape),
            2: lambda: rng.normal(0.0, 0.1, shape),
            3: lambda: np.zeros(shape),
            4: lambda: np.ones(shape),
        }[slot]()
    if consumer == "Mul":
        return rng.uniform(0.5, 1.5, shape)
    return rng.normal(0.0, 0.05, size=shape)


def calibrate_batchnorm_statistics(model, rng):
    """Set every BatchNormalization's mean/var to the statistics of its input on one image.

    One onnxruntime run computes them all consistently: each BatchNormalization is replaced by
    its batch-statistics form (normalize with the input's own per-channel mean and variance),
    which gives exactly the activations the inference form produces once those statistics are
    stored, and the statistics are exposed as extra graph outputs.
    """
    graph = model.graph
    inferred = shape_inference.infer_shapes(model).graph
    ranks = {
        v.name: len(v.type.tensor_type.shape.dim)
        for v in list(inferred.value_info) + list(inferred.input)
    }
    initializers = {i.name: i for i in graph.initializer}
    calib = onnx.ModelProto()
    calib.CopyFrom(model)
    cg = calib.graph
    del cg.node[:]
    del cg.output[:]
    stat_outputs = []  # (BN node, mean output name, var output name)
    for node in graph.node:
        if node.op_type != "BatchNormalization":
            cg.node.append(node)
            continue
        x, scale, bias, mean, var = node.input
        if mean not in initializers or var not in initializers:
            raise ValueError(f"BatchNormalization {node.name}: mean/var are not initializers")
        rank = ranks.get(x, 4)
        axes = [0] + list(range(2, rank))
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        p = f"__calib_{len(stat_outputs)}_"
        channel_shape = [-1] + [1] * (rank - 2)
        cg.initializer.extend([
            numpy_helper.from_array(np.array(channel_shape, np.int64), p + "cshape"),
            numpy_helper.from_array(np.array(eps, np.float32), p + "eps"),
        ])
        cg.node.extend([
            helper.make_node("ReduceMean", [x], [p + "mean"], axes=axes, keepdims=1),
            helper.make_node("Sub", [x, p + "mean"], [p + "d"]),
            helper.make_node("Mul", [p + "d", p + "d"], [p + "d2"]),
            helper.make_node("ReduceMean", [p + "d2"], [p + "var"], axes=axes, keepdims=1),
            helper.make_node("Add", [p + "var", p + "eps"], [p + "var_eps"]),
            helper.make_node("Sqrt", [p + "var_eps"], [p + "std"]),
            helper.make_node("Div", [p + "d", p + "std"], [p + "norm"]),
            helper.make_node("Reshape", [scale, p + "cshape"], [p + "scale"]),
            helper.make_node("Reshape", [bias, p + "cshape"], [p + "bias"]),
            helper.make_node("Mul", [p + "norm", p + "scale"], [p + "scaled"]),
            helper.make_node("Add", [p + "scaled", p + "bias"], [node.output[0]]),
        ])
        for stat in ("mean", "var"):
            cg.output.append(helper.make_tensor_value_info(p + stat, onnx.TensorProto.FLOAT, None))
        stat_outputs.append((node, p + "mean", p + "var"))
    if not stat_outputs:
        return
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.log_severity_level = 3  # the calibration graph leaves BN mean/var unused: say nothing
    session = ort.InferenceSession(
        calib.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    feeds = {}
    for inp in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
    values = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    for node, mean_out, var_out in stat_outputs:
        for init_name, stat in ((node.input[3], mean_out), (node.input[4], var_out)):
            init = initializers[init_name]
            init.CopyFrom(numpy_helper.from_array(values[stat].reshape(-1).astype(np.float32), init_name))


def realize(src, dst, seed):
    rng = np.random.default_rng(seed)
    model = onnx.load(src)
    graph = model.graph
    initializers = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumers = {}
    for node in graph.node:
        for slot, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, slot))

    kept_nodes, new_initializers = [], []
    for node in graph.node:
        if node.op_type != "ConstantOfShape":
            kept_nodes.append(node)
            continue
        shape = [int(d) for d in initializers[node.input[0]]]
        consumer, slot, consumer_shape = final_consumer(node.output[0], consumers, initializers)
        values = realistic_fill(rng, shape, consumer, slot, consumer_shape)
        new_initializers.append(numpy_helper.from_array(values.astype(np.float32), node.output[0]))

    del graph.node[:]
    graph.node.extend(kept_nodes)
    graph.initializer.extend(new_initializers)
    used = {name for node in graph.node for name in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    # Old IR versions list initializers among the graph inputs; keep only the real inputs.
    init_names = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name in used and i.name not in init_names]
    del graph.input[:]
    graph.input.extend(inputs)
    model.ir_version = max(model.ir_version, 7)
    onnx.checker.check_model(model)
    model = version_converter.convert_version(model, 13)
    calibrate_batchnorm_statistics(model, rng)
    onnx.checker.check_model(model)
    onnx.save(model, dst)
    return model


def main(argv):
    if len(argv) not in (3, 4):
        sys.exit(__doc__.strip().splitlines()[-1])
    seed = int(argv[3]) if len(argv) == 4 else 0
    model = realize(argv[1], argv[2], seed)
    print(argv[2], len(model.graph.node), "nodes", len(model.graph.initializer), "initializers")


if __name__ == "__main__":
    main(sys.argv)
