#!/usr/bin/env python3
"""Generate tests/ort_fixtures.json: single-op cases run through onnxruntime, the numeric
oracle for kiln-interp's tricky semantics (resize modes, pooling divisors, padding modes,
quantized arithmetic, casts).

Each case records the kiln IR op (in kiln-ir's serde JSON form), the IR input/output types,
the input tensors and onnxruntime's outputs. tests/ort_fixtures.rs replays them through
`kiln_interp::eval_op`. Regenerate with any Python that has onnx and onnxruntime:

    python crates/kiln-interp/tests/gen_ort_fixtures.py

Inputs are seeded, so the file only changes when cases or onnxruntime change.
"""

import json
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(1234)
CASES = []

DTYPES = {
    np.dtype(np.float32): ("F32", TensorProto.FLOAT),
    np.dtype(np.int8): ("I8", TensorProto.INT8),
    np.dtype(np.uint8): ("U8", TensorProto.UINT8),
    np.dtype(np.int32): ("I32", TensorProto.INT32),
    np.dtype(np.int64): ("I64", TensorProto.INT64),
    np.dtype(np.bool_): ("Bool", TensorProto.BOOL),
}


def run_ort(op_type, inputs, attrs, n_out=1, opset=19, initializers=()):
    """Run one ONNX node. `inputs` is a list of (name, array) fed at run time (None name =
    absent optional input); `initializers` are (name, array) constants."""
    node_inputs = [name if name is not None else "" for name, _ in inputs]
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op_type, node_inputs, outs, **attrs)
    graph_inputs = [
        helper.make_tensor_value_info(name, DTYPES[arr.dtype][1], list(arr.shape))
        for name, arr in inputs
        if name is not None and arr is not None
    ]
    graph = helper.make_graph(
        [node],
        "g",
        graph_inputs,
        [onnx.ValueInfoProto(name=o) for o in outs],
        [numpy_helper.from_array(arr, name) for name, arr in initializers],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {name: arr for name, arr in inputs if name is not None and arr is not None}
    return sess.run(None, feeds)


def ttype(arr_or_dtype, shape=None, quant=None):
    dtype = arr_or_dtype.dtype if shape is None else np.dtype(arr_or_dtype)
    shape = list(arr_or_dtype.shape) if shape is None else list(shape)
    return {"dtype": DTYPES[dtype][0], "shape": shape, "quant": quant}


def tensor_json(arr):
    flat = arr.reshape(-1)
    if arr.dtype == np.float32:
        data = [float(v) for v in flat]
    elif arr.dtype == np.bool_:
        data = [bool(v) for v in flat]
    else:
        data = [int(v) for v in flat]
    return {"dtype": DTYPES[arr.dtype][0], "shape": list(arr.shape), "data": data}


def add(name, ir_op, ir_inputs, ir_input_types, outputs, ir_output_types=None, tol=0.0):
    for o in outputs:
        assert np.all(np.isfinite(o.astype(np.float64))), f"{name}: non-finite output"
    CASES.append(
        {
            "name": name,
            "op": ir_op,
            "inputs": [tensor_json(a) for a in ir_inputs],
            "input_types": ir_input_types or [ttype(a) for a in ir_inputs],
            "output_types": ir_output_types or [ttype(o) for o in outputs],
            "outputs": [tensor_json(o) for o in outputs],
            "tol": tol,
        }
    )


def f32(*shape):
    return RNG.uniform(-1, 1, size=shape).astype(np.float32)


# ---------------------------------------------------------------- resize
COORDS = {
    "half_pixel": "HalfPixel",
    "half_pixel_symmetric": "HalfPixelSymmetric",
    "pytorch_half_pixel": "PytorchHalfPixel",
    "align_corners": "AlignCorners",
    "asymmetric": "Asymmetric",
    "tf_crop_and_resize": "TfCropAndResize",
}
NEAREST = {
    "round_prefer_floor": "RoundPreferFloor",
    "round_prefer_ceil": "RoundPreferCeil",
    "floor": "Floor",
    "ceil": "Ceil",
}


def resize_case(x, mode, coord, *, scales=None, sizes=None, nearest="round_prefer_floor",
                cubic_a=-0.75, exclude_outside=0, antialias=0, roi=None, extrapolation=0.0):
    rank = x.ndim
    roi_arr = np.array(roi if roi is not None else [], np.float32)
    attrs = dict(mode=mode, coordinate_transformation_mode=coord, nearest_mode=nearest,
                 cubic_coeff_a=cubic_a, exclude_outside=exclude_outside, antialias=antialias,
                 extrapolation_value=extrapolation)
    if scales is not None:
        sc = np.array(scales, np.float32)
        inits = [("roi", roi_arr), ("scales", sc)]
        names = [("x", x), ("roi", None), ("scales", None)]
        # onnxruntime: output = floor(input · scale)
        out_sizes = [int(np.floor(np.float32(d) * s)) for d, s in zip(x.shape, sc)]
        ir_scales = [float(s) for s in sc]
    else:
        sz = np.array(sizes, np.int64)
        inits = [("roi", roi_arr), ("sizes", sz)]
        names = [("x", x), ("roi", None), (None, None), ("sizes", None)]
        out_sizes = list(sizes)
        # onnxruntime recomputes the scales as output / input in f32
        ir_scales = [float(np.float32(o) / np.float32(i)) for o, i in zip(sizes, x.shape)]
    # initializers are referenced by name; rebuild the input list for run_ort
    node_inputs = [(n, a) if a is not None else (n, None) for n, a in names]
    feeds = [(n, a) for n, a in node_inputs]
    y = run_ort_named("Resize", feeds, attrs, inits)
    assert list(y.shape) == out_sizes, (y.shape, out_sizes)
    ir = {"Resize": {
        "sizes": out_sizes, "mode": mode.capitalize(), "coord": COORDS[coord],
        "nearest": NEAREST[nearest], "scales": ir_scales,
        "roi": [float(v) for v in roi_arr] if coord == "tf_crop_and_resize" else [],
        "cubic_coeff_a": cubic_a, "exclude_outside": bool(exclude_outside),
        "extrapolation_value": extrapolation, "antialias": bool(antialias),
    }}
    name = f"resize_{mode}_{coord}_{nearest}_{'scales' if scales is not None else 'sizes'}" \
           f"_{x.shape}->{tuple(out_sizes)}_ex{exclude_outside}_aa{antialias}"
    tol = 0.0 if mode == "nearest" else 2e-5
    add(name, ir, [x], None, [y], tol=tol)


def run_ort_named(op_type, names, attrs, inits, opset=19, n_out=1):
    """Like run_ort, but inputs named in `inits` come from initializers."""
    init_names = {n for n, _ in inits}
    node_inputs = [n if n is not None else "" for n, _ in names]
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op_type, node_inputs, outs, **attrs)
    runtime = [(n, a) for n, a in names if n is not None and n not in init_names]
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(n, DTYPES[a.dtype][1], list(a.shape)) for n, a in runtime],
        [onnx.ValueInfoProto(name=o) for o in outs],
        [numpy_helper.from_array(a, n) for n, a in inits],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    res = sess.run(None, {n: a for n, a in runtime})
    return res[0] if n_out == 1 else res


def resize_cases():
    x1 = f32(1, 1, 2, 5)
    x2 = f32(1, 2, 4, 5)
    for coord in ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric"]:
        for nearest in NEAREST:
            resize_case(x2, "nearest", coord, scales=[1, 1, 2.0, 1.5], nearest=nearest)
            resize_case(x2, "nearest", coord, sizes=[1, 2, 3, 3], nearest=nearest)
        for mode in ["linear", "cubic"]:
            resize_case(x2, mode, coord, scales=[1, 1, 2.0, 1.5])
            resize_case(x2, mode, coord, sizes=[1, 2, 7, 3])
            resize_case(x2, mode, coord, sizes=[1, 2, 3, 2])
            resize_case(x1, mode, coord, sizes=[1, 1, 1, 1])
    resize_case(x2, "cubic", "half_pixel", sizes=[1, 2, 9, 7], exclude_outside=1, cubic_a=-0.5)
    resize_case(x2, "cubic", "asymmetric", scales=[1, 1, 0.6, 0.8], exclude_outside=1)
    for mode in ["linear", "cubic"]:
        resize_case(f32(1, 1, 8, 9), mode, "half_pixel", sizes=[1, 1, 3, 4], antialias=1)
        resize_case(f32(1, 1, 8, 9), mode, "pytorch_half_pixel", scales=[1, 1, 0.5, 0.4], antialias=1)
        resize_case(f32(1, 1, 8, 9), mode, "align_corners", sizes=[1, 1, 5, 3], antialias=1, exclude_outside=1)
    roi = [0, 0, 0.2, -0.3, 1, 1, 0.9, 1.2]
    for mode in ["nearest", "linear", "cubic"]:
        resize_case(x2, mode, "tf_crop_and_resize", sizes=[1, 2, 5, 6], roi=roi, extrapolation=10.0)


# ---------------------------------------------------------------- pooling
def pool_attrs_ir(kernel, strides, pads, dilations, ceil, cip, storage_order=0):
    return {"kernel": kernel, "strides": strides, "pads": pads, "dilations": dilations,
            "ceil_mode": bool(ceil), "count_include_pad": bool(cip), "storage_order": storage_order}


def pool_cases():
    for shape, kernel, strides, pads, dil, ceil in [
        ((1, 2, 7), [3], [2], [1, 1], [1], 1),
        ((1, 2, 6, 7), [3, 2], [2, 2], [1, 0, 1, 1], [1, 1], 1),
        ((1, 1, 9, 9), [3, 3], [2, 3], [2, 1, 2, 2], [2, 1], 0),
        ((1, 1, 8, 8), [2, 3], [3, 2], [1, 1, 1, 2], [1, 2], 1),
        ((1, 1, 5, 6, 4), [2, 3, 2], [2, 2, 1], [1, 1, 0, 0, 1, 1], [1, 1, 2], 1),
    ]:
        x = f32(*shape)
        nd = len(kernel)
        for cip in [0, 1]:
            attrs = dict(kernel_shape=kernel, strides=strides, pads=pads, ceil_mode=ceil,
                         count_include_pad=cip, dilations=dil)
            y = run_ort("AveragePool", [("x", x)], attrs)[0]
            add(f"avgpool_{shape}_k{kernel}_s{strides}_p{pads}_d{dil}_ceil{ceil}_cip{cip}",
                {"AveragePool": pool_attrs_ir(kernel, strides, pads, dil, ceil, cip)}, [x], None, [y], tol=1e-6)
        for order in [0, 1] if nd == 2 else [0]:
            attrs = dict(kernel_shape=kernel, strides=strides, pads=pads, ceil_mode=ceil,
                         dilations=dil, storage_order=order)
            y, idx = run_ort("MaxPool", [("x", x)], attrs, n_out=2)
            add(f"maxpool_{shape}_k{kernel}_s{strides}_p{pads}_d{dil}_ceil{ceil}_order{order}",
                {"MaxPool": pool_attrs_ir(kernel, strides, pads, dil, ceil, 0, order)}, [x], None, [y, idx])
    xu = RNG.integers(0, 256, size=(1, 2, 5, 5)).astype(np.uint8)
    y = run_ort("MaxPool", [("x", xu)], dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))[0]
    add("maxpool_u8", {"MaxPool": pool_attrs_ir([3, 3], [2, 2], [1, 1, 1, 1], [1, 1], 0, 0)}, [xu], None, [y])
    x = f32(2, 3, 4, 5)
    add("global_average_pool", "GlobalAveragePool", [x], None, [run_ort("GlobalAveragePool", [("x", x)], {})[0]], tol=1e-6)
    add("global_max_pool", "GlobalMaxPool", [x], None, [run_ort("GlobalMaxPool", [("x", x)], {})[0]])
    x = f32(1, 7, 3, 3)
    for size in [3, 5]:
        y = run_ort("LRN", [("x", x)], dict(size=size, alpha=0.5, beta=0.75, bias=1.5))[0]
        add(f"lrn_size{size}", {"Lrn": {"size": size, "alpha": 0.5, "beta": 0.75, "bias": 1.5}}, [x], None, [y], tol=1e-6)


# ---------------------------------------------------------------- conv family
def conv_cases():
    for xs, ws, strides, pads, dil, group in [
        ((1, 4, 7, 6), (6, 2, 3, 2), [2, 1], [1, 0, 2, 1], [1, 2], 2),
        ((2, 3, 9), (4, 3, 3), [3], [2, 1], [2], 1),
        ((1, 4, 5, 5), (4, 1, 3, 3), [1, 1], [1, 1, 1, 1], [1, 1], 4),
        ((1, 2, 4, 5, 3), (2, 2, 2, 3, 1), [1, 2, 1], [0, 1, 0, 1, 0, 0], [2, 1, 1], 1),
    ]:
        x, w, b = f32(*xs), f32(*ws), f32(ws[0])
        nd = len(ws) - 2
        attrs = dict(strides=strides, pads=pads, dilations=dil, group=group, kernel_shape=list(ws[2:]))
        y = run_ort("Conv", [("x", x), ("w", w), ("b", b)], attrs)[0]
        ir = {"Conv": {"kernel": list(ws[2:]), "strides": strides, "pads": pads, "dilations": dil,
                       "groups": group, "act": None}}
        add(f"conv_{xs}_{ws}_g{group}", ir, [x, w, b], None, [y], tol=1e-5)
    for xs, ws, strides, pads, dil, outpad, group in [
        ((1, 4, 3, 4), (4, 3, 3, 2), [2, 3], [1, 0, 0, 1], [1, 1], [1, 2], 2),
        ((1, 2, 5), (2, 3, 4), [2], [1, 2], [2], [1], 1),
        ((1, 2, 2, 3, 2), (2, 1, 2, 2, 2), [2, 1, 2], [0, 0, 1, 1, 0, 0], [1, 2, 1], [1, 0, 1], 1),
    ]:
        x, w, b = f32(*xs), f32(*ws), f32(ws[1] * group)
        attrs = dict(strides=strides, pads=pads, dilations=dil, group=group, output_padding=outpad,
                     kernel_shape=list(ws[2:]))
        y = run_ort("ConvTranspose", [("x", x), ("w", w), ("b", b)], attrs)[0]
        ir = {"ConvTranspose": {"kernel": list(ws[2:]), "strides": strides, "pads": pads, "dilations": dil,
                                "output_padding": outpad, "groups": group, "act": None}}
        add(f"conv_transpose_{xs}_{ws}_g{group}", ir, [x, w, b], None, [y], tol=1e-5)


# ---------------------------------------------------------------- quantized
def qt(dtype, shape, scale, zp):
    return ttype(dtype, shape, {"PerTensor": {"scale": float(np.float32(scale)), "zero_point": int(zp)}})


def qt_axis(dtype, shape, axis, scales, zps):
    return ttype(dtype, shape, {"PerAxis": {"axis": axis, "scales": [float(np.float32(s)) for s in scales],
                                            "zero_points": [int(z) for z in zps]}})


def quant_cases():
    x = (f32(2, 3, 4) * 3).astype(np.float32)
    for dt in [np.uint8, np.int8]:
        s, z = np.float32(0.0173), dt(7 if dt == np.int8 else 131)
        y = run_ort_named("QuantizeLinear", [("x", x), ("s", None), ("z", None)], {}, [("s", np.array(s)), ("z", np.array(z))])
        add(f"quantize_{np.dtype(dt)}", "Quantize", [x], None, [y], [qt(dt, x.shape, s, z)])
        d = run_ort_named("DequantizeLinear", [("q", y), ("s", None), ("z", None)], {}, [("s", np.array(s)), ("z", np.array(z))])
        add(f"dequantize_{np.dtype(dt)}", "Dequantize", [y], [qt(dt, y.shape, s, z)], [d])
    scales = np.array([0.02, 0.011, 0.05], np.float32)
    zps = np.array([-3, 0, 9], np.int8)
    y = run_ort_named("QuantizeLinear", [("x", x), ("s", None), ("z", None)], {"axis": 1}, [("s", scales), ("z", zps)])
    add("quantize_per_axis", "Quantize", [x], None, [y], [qt_axis(np.int8, x.shape, 1, scales, zps)])
    d = run_ort_named("DequantizeLinear", [("q", y), ("s", None), ("z", None)], {"axis": 1}, [("s", scales), ("z", zps)])
    add("dequantize_per_axis", "Dequantize", [y], [qt_axis(np.int8, y.shape, 1, scales, zps)], [d])

    # QLinearConv: u8 activations, i8 per-channel weights, i32 bias
    for xs, ws, strides, pads, dil, group, per_channel, x_dt in [
        ((1, 4, 6, 7), (6, 2, 3, 3), [1, 2], [1, 1, 0, 1], [1, 1], 2, True, np.uint8),
        ((1, 3, 8, 8), (5, 3, 3, 3), [2, 2], [1, 1, 1, 1], [2, 1], 1, False, np.uint8),
        ((1, 8, 5, 5), (8, 1, 3, 3), [1, 1], [1, 1, 1, 1], [1, 1], 8, True, np.int8),
        ((1, 3, 9), (4, 3, 2), [2], [1, 0], [1], 1, True, np.uint8),
    ]:
        lo, hi = (0, 255) if x_dt == np.uint8 else (-128, 127)
        xq = RNG.integers(lo, hi + 1, size=xs).astype(x_dt)
        wq = RNG.integers(-127, 128, size=ws).astype(np.int8)
        cout = ws[0]
        xs_, xz = np.float32(0.021), x_dt(120 if x_dt == np.uint8 else -5)
        ws_ = RNG.uniform(0.002, 0.01, size=cout).astype(np.float32) if per_channel else np.float32(0.006)
        wz = np.zeros(cout if per_channel else (), np.int8)
        # onnxruntime's QLinearConv needs the output dtype equal to the input's
        ys_, yz = np.float32(0.09), x_dt(100 if x_dt == np.uint8 else -10)
        bias = RNG.integers(-3000, 3000, size=cout).astype(np.int32)
        attrs = dict(strides=strides, pads=pads, dilations=dil, group=group, kernel_shape=list(ws[2:]))
        inits = [("xs", np.array(xs_)), ("xz", np.array(xz)), ("w", wq), ("ws", np.array(ws_)), ("wz", wz),
                 ("ys", np.array(ys_)), ("yz", np.array(yz)), ("b", bias)]
        y = run_ort_named("QLinearConv", [("x", xq), ("xs", None), ("xz", None), ("w", None), ("ws", None),
                                          ("wz", None), ("ys", None), ("yz", None), ("b", None)], attrs, inits)
        wtype = qt_axis(np.int8, ws, 0, ws_, [0] * cout) if per_channel else qt(np.int8, ws, ws_, 0)
        ir = {"QConv": {"kernel": list(ws[2:]), "strides": strides, "pads": pads, "dilations": dil,
                        "groups": group, "act": None}}
        add(f"qlinearconv_{xs}_{ws}_g{group}_pc{per_channel}", ir, [xq, wq, bias],
            [qt(x_dt, xs, xs_, xz), wtype, ttype(np.int32, [cout])], [y], [qt(x_dt, y.shape, ys_, yz)])
        # ConvInteger with the same operands (no scales)
        if x_dt == np.uint8:
            wzp = np.array(np.int8(-2))  # onnxruntime supports per-tensor w_zero_point only
            yi = run_ort("ConvInteger", [("x", xq), ("w", wq), ("xz", np.array(xz)), ("wz", wzp)], attrs, opset=10)[0]
            ir = {"ConvInteger": ir["QConv"]}
            add(f"convinteger_{xs}_{ws}_g{group}", ir, [xq, wq, np.array(xz), wzp], None, [yi])

    for a_shape, b_shape in [((3, 5), (5, 4)), ((2, 3, 5), (5, 2))]:
        aq = RNG.integers(0, 256, size=a_shape).astype(np.uint8)
        bq = RNG.integers(-128, 128, size=b_shape).astype(np.int8)
        sa, za, sb, zb, sy, zy = np.float32(0.03), np.uint8(128), np.float32(0.007), np.int8(3), np.float32(0.2), np.uint8(90)
        inits = [("sa", np.array(sa)), ("za", np.array(za)), ("b", bq), ("sb", np.array(sb)), ("zb", np.array(zb)),
                 ("sy", np.array(sy)), ("zy", np.array(zy))]
        y = run_ort_named("QLinearMatMul", [("a", aq), ("sa", None), ("za", None), ("b", None), ("sb", None),
                                            ("zb", None), ("sy", None), ("zy", None)], {}, inits, opset=21)
        add(f"qlinearmatmul_{a_shape}_{b_shape}", "QMatMul", [aq, bq],
            [qt(np.uint8, a_shape, sa, za), qt(np.int8, b_shape, sb, zb)], [y], [qt(np.uint8, y.shape, sy, zy)])
        yi = run_ort("MatMulInteger", [("a", aq), ("b", bq), ("za", np.array(za)), ("zb", np.array(zb))], {}, opset=10)[0]
        add(f"matmulinteger_{a_shape}_{b_shape}", "MatMulInteger", [aq, bq, np.array(za), np.array(zb)], None, [yi])


# ---------------------------------------------------------------- misc
def misc_cases():
    x = f32(2, 3, 4) * 4
    for name, onnx_op, attrs, ir in [
        ("hard_sigmoid", "HardSigmoid", dict(alpha=0.3, beta=0.4), {"Activation": {"HardSigmoid": {"alpha": 0.3, "beta": 0.4}}}),
        ("hard_swish", "HardSwish", {}, {"Activation": "HardSwish"}),
        ("sigmoid", "Sigmoid", {}, {"Activation": "Sigmoid"}),
        ("tanh", "Tanh", {}, {"Activation": "Tanh"}),
        ("leaky_relu", "LeakyRelu", dict(alpha=0.07), {"Activation": {"LeakyRelu": {"alpha": 0.07}}}),
    ]:
        add(name, ir, [x], None, [run_ort(onnx_op, [("x", x)], attrs)[0]], tol=2e-6)
    for axis in [0, 1, 2]:
        add(f"softmax_axis{axis}", {"Softmax": {"axis": axis, "legacy": False}}, [x], None,
            [run_ort("Softmax", [("x", x)], dict(axis=axis), opset=13)[0]], tol=2e-6)
        add(f"softmax_legacy_axis{axis}", {"Softmax": {"axis": axis, "legacy": True}}, [x], None,
            [run_ort("Softmax", [("x", x)], dict(axis=axis), opset=11)[0]], tol=2e-6)
    xb = f32(2, 3, 4, 2)
    sc, bi, me, va = f32(3), f32(3), f32(3), np.abs(f32(3)) + 0.1
    y = run_ort("BatchNormalization", [("x", xb), ("s", sc), ("b", bi), ("m", me), ("v", va)], dict(epsilon=1e-3), opset=15)[0]
    add("batch_norm", {"BatchNorm": {"epsilon": 1e-3}}, [xb, sc, bi, me, va], None, [y], tol=1e-6)
    a, b, c = f32(4, 3), f32(5, 4), f32(1, 5)
    y = run_ort("Gemm", [("a", a), ("b", b), ("c", c)], dict(alpha=0.7, beta=1.3, transA=1, transB=1))[0]
    add("gemm_trans", {"Gemm": {"alpha": 0.7, "beta": 1.3, "trans_a": True, "trans_b": True, "act": None}},
        [a, b, c], None, [y], tol=1e-6)
    for mode in ["constant", "reflect", "edge", "wrap"]:
        xp = f32(2, 3, 4)
        for pads in [[0, 1, 2, 1, 1, 1], [1, -1, 1, 0, 1, -2]]:
            y = run_ort_named("Pad", [("x", xp), ("p", None), ("v", None)], dict(mode=mode),
                              [("p", np.array(pads, np.int64)), ("v", np.array(0.5, np.float32))])
            add(f"pad_{mode}_{pads}", {"Pad": {"mode": mode.capitalize(), "pads": pads, "value": 0.5}}, [xp], None, [y])
    # integer arithmetic
    ai = RNG.integers(-50, 50, size=(3, 4)).astype(np.int32)
    bi_ = RNG.integers(1, 9, size=(4,)).astype(np.int32) * np.array([1, -1, 1, -1], np.int32)
    for onnx_op, ir in [("Div", "Div"), ("Mul", "Mul"), ("Sub", "Sub")]:
        add(f"int32_{onnx_op.lower()}", {"Binary": ir}, [ai, bi_], None, [run_ort(onnx_op, [("a", ai), ("b", bi_)], {})[0]])
    a8 = np.array([100, -100, 127, -128], np.int8)
    add("int8_add_wraps", {"Binary": "Add"}, [a8, a8], None, [run_ort("Add", [("a", a8), ("b", a8)], {}, opset=14)[0]])
    xc = np.array([-2.7, -0.5, 0.5, 2.5, 255.9, 300.0, -129.0, 1e9], np.float32)
    for to, tp in [("U8", TensorProto.UINT8), ("I8", TensorProto.INT8), ("I32", TensorProto.INT32),
                   ("I64", TensorProto.INT64), ("Bool", TensorProto.BOOL)]:
        add(f"cast_f32_to_{to}", {"Cast": {"to": to}}, [xc], None, [run_ort("Cast", [("x", xc)], dict(to=tp))[0]])
    xi = np.array([-3, 0, 7, 2**40], np.int64)
    for to, tp in [("F32", TensorProto.FLOAT), ("U8", TensorProto.UINT8), ("I32", TensorProto.INT32)]:
        add(f"cast_i64_to_{to}", {"Cast": {"to": to}}, [xi], None, [run_ort("Cast", [("x", xi)], dict(to=tp))[0]])
    xg = f32(3, 4, 2)
    idx = np.array([[2, -1], [0, -3]], np.int64)
    add("gather_axis1", {"Gather": {"axis": 1}}, [xg, idx], None, [run_ort("Gather", [("x", xg), ("i", idx)], dict(axis=1))[0]])
    y = run_ort_named("Slice", [("x", xg), ("st", None), ("en", None), ("ax", None), ("sp", None)], {},
                      [("st", np.array([-1, 3], np.int64)), ("en", np.array([-10, 0], np.int64)),
                       ("ax", np.array([0, 1], np.int64)), ("sp", np.array([-2, -1], np.int64))])
    # normalized by hand: axis 0 start -1 → 2, end -10 → clamped to -1 (front), step -2;
    # axis 1 start 3, end 0, step -1
    add("slice_negative_steps", {"Slice": {"axes": [{"axis": 0, "start": 2, "end": -1, "step": -2},
                                                    {"axis": 1, "start": 3, "end": 0, "step": -1}]}},
        [xg], None, [y])
    m1, m2 = f32(2, 1, 3, 4), f32(3, 4, 2)
    add("matmul_batched_broadcast", "MatMul", [m1, m2], None, [run_ort("MatMul", [("a", m1), ("b", m2)], {})[0]], tol=1e-6)
    r = f32(2, 3, 4)
    add("reduce_mean_axes", {"ReduceMean": {"axes": [0, 2], "keepdims": True}}, [r], None,
        [run_ort_named("ReduceMean", [("x", r), ("ax", None)], dict(keepdims=1), [("ax", np.array([0, 2], np.int64))], opset=18)],
        tol=1e-6)


resize_cases()
pool_cases()
conv_cases()
quant_cases()
misc_cases()

out = pathlib.Path(__file__).with_name("ort_fixtures.json")
meta = {"onnxruntime": ort.__version__, "onnx": onnx.__version__, "cases": CASES}
out.write_text(json.dumps(meta, separators=(",", ":")))
print(f"wrote {len(CASES)} cases to {out}")
