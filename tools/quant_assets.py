#!/usr/bin/env python3
"""Prepare the pre-quantized-model assets (tools/test.sh calls this after prepare_assets.py).

Reads ASSETS_DIR/models/NAME.onnx (written by tools/prepare_assets.py) and writes:

ASSETS_DIR/quant/
  stamp.json                    versions of onnx / onnxruntime / numpy / Pillow, the fonts, a
                                hash of this script and prepare_assets.py's stamp; a mismatch
                                rebuilds everything under quant/
  pages/{calib,eval}/NNNN.png   rendered text pages (Pillow + DejaVu fonts, 320x320, grey):
  pages/{calib,eval}/NNNN.npy   the same page as PP-OCR's input, [1, 3, 320, 320] f32
                                (RGB / 255, ImageNet mean/std per channel, as prepare_assets.py's
                                synthetic page); calib and eval come from different seeds
  calib/NAME/NNNN.npy           calibration inputs of the light models: seeded N(0, 1) images
                                (the same distribution as prepare_assets.py's inputs); PP-OCR's
                                calibration set is pages/calib
  eval/NAME/NNNN.npy            evaluation inputs of the light models (another seed); PP-OCR's
                                are pages/eval
  models/NAME.float.onnx        the float model after onnxruntime's quant_pre_process (shape
                                inference, BatchNorm folding, constant folding): the graph the
                                quantizer saw, i.e. the float baseline of the quantized models
  models/NAME.FORMAT.onnx       onnxruntime quantize_static outputs, MinMax calibration on the
                                calibration set, per-channel weights, for each FORMAT:
                                  qdq_u8s8   QDQ, u8 asymmetric activations, s8 symmetric weights
                                  qop_u8s8   QOperator (QLinearConv, com.microsoft QLinear* ops),
                                             u8 activations, s8 weights
                                  qdq_s8sym  QDQ, s8 symmetric activations and weights (what
                                             TensorRT-style toolkits export)
  ref/NAME.FORMAT.K.ort.npy     onnxruntime's output on eval input K, graph optimizations
                                disabled: QDQ models run literally (Q and DQ nodes with float ops
                                between, i.e. simulated quantization), QOperator models run their
                                integer kernels as written
  ref/NAME.FORMAT.K.ort_quantized.npz
                                onnxruntime's values (optimizations disabled) of every quantized
                                activation (u8/i8 tensor a node computes), named as in the model
  ref/NAME.FORMAT.K.ort_opt.npy onnxruntime's output with all optimizations: QDQ groups fused
                                into integer QLinearConv/QGemm kernels, whose rounding differs
                                slightly
  ref/NAME.float.K.npy          onnxruntime's output of NAME.float.onnx on eval input K
  models/NAME.json              per-model manifest (written last, so an interrupted run redoes only
                                the unfinished model)
  manifest.json                 all per-model manifests, the page sets, and for ppocrv4_det the
                                text-mask IoU (probability > 0.3) between int8 and float over the
                                eval pages and onnxruntime latency medians

Only the first KILN_CHECK_INPUTS eval inputs get reference outputs (the interpreter comparison in
tests/prequantized.rs runs those); the IoU uses every eval page.

Pillow is installed into this interpreter's environment (pinned, PILLOW_REQUIREMENT) when it is
missing; the DejaVu fonts must be installed (Debian: fonts-dejavu-core) under /usr/share/fonts.

Idempotent: each step is skipped when its outputs exist and the stamp matches.

usage: quant_assets.py ASSETS_DIR
"""
import glob
import hashlib
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np
import onnx
import onnx.version_converter
import onnxruntime as ort

PILLOW_REQUIREMENT = "pillow==13.0.0"
QUANT_MODELS = ["resnet50", "squeezenet", "shufflenet", "ppocrv4_det"]
PPOCR_NAME = "ppocrv4_det"
PAGE_SIZE = 320
CALIB_PAGES = 32
EVAL_PAGES = 16
CALIB_PAGE_SEED = 20240601
EVAL_PAGE_SEED = 20240602
LIGHT_CALIB_SAMPLES = 16
LIGHT_EVAL_SAMPLES = 2
# Eval inputs per model with saved onnxruntime outputs (the interpreter check runs these).
KILN_CHECK_INPUTS = 1
# PP-OCR's DB post-processing thresholds the probability map at 0.3 (det_db_thresh).
TEXT_PROB_THRESHOLD = 0.3
ORT_TIMED_RUNS = 5
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406]).reshape(3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225]).reshape(3, 1, 1)
# The DejaVu faces the pages are set in (sorted by file name when found).
FONT_FILES = [
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSansCondensed.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerifCondensed.ttf",
]
FONT_ROOT = "/usr/share/fonts"
# Words the pages are made of: common English words, numbers and punctuation are added by the
# generator. A detector sees text lines, not meaning.
WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there been one all we their has would when if so no what "
    "time people year way day man thing woman life child world school state family student "
    "group country problem hand part place case week company system program question work "
    "government number night point home water room mother area money story fact month lot right "
    "study book eye job word business issue side kind head house service friend father power "
    "hour game line end member law car city community name president team minute idea kid body "
    "information back parent face others level office door health person art war history party "
    "result change morning reason research girl guy moment air teacher force education invoice "
    "total amount date address phone receipt order page chapter section table figure report"
).split()


def log(msg):
    print(f"quant_assets: {msg}", flush=True)


def ensure_pillow():
    """Import PIL, installing the pinned Pillow into this environment when it is missing."""
    try:
        return importlib.import_module("PIL")
    except ImportError:
        pass
    log(f"Pillow missing: pip install {PILLOW_REQUIREMENT}")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         PILLOW_REQUIREMENT],
        check=True,
    )
    importlib.invalidate_caches()
    return importlib.import_module("PIL")


def find_fonts():
    """Paths of FONT_FILES under FONT_ROOT; fails naming the missing faces."""
    found = {}
    for path in sorted(glob.glob(os.path.join(FONT_ROOT, "**", "DejaVu*.ttf"), recursive=True)):
        found.setdefault(os.path.basename(path), path)
    missing = [f for f in FONT_FILES if f not in found]
    if missing:
        sys.exit(f"quant_assets: DejaVu fonts {missing} not found under {FONT_ROOT} "
                 "(Debian/Ubuntu: apt-get install fonts-dejavu-core)")
    return [found[f] for f in FONT_FILES]


def current_stamp(assets, pil, fonts):
    with open(os.path.abspath(__file__), "rb") as f:
        script_hash = hashlib.sha256(f.read()).hexdigest()
    # prepare_assets.py's stamp: the float models change exactly when it does.
    try:
        with open(os.path.join(assets, "stamp.json")) as f:
            models_stamp = json.load(f)
    except (OSError, ValueError):
        models_stamp = None
    font_hash = hashlib.sha256()
    for path in fonts:
        with open(path, "rb") as f:
            font_hash.update(f.read())
    return {
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "pillow": pil.__version__,
        "fonts_sha256": font_hash.hexdigest(),
        "script_sha256": script_hash,
        "models_stamp": models_stamp,
    }


def check_stamp(quant_dir, stamp):
    """Wipe quant assets written by another script or package version."""
    path = os.path.join(quant_dir, "stamp.json")
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError):
        old = None
    if old != stamp:
        if old is not None:
            log(f"stamp changed ({old} -> {stamp}): rebuilding {quant_dir}")
        shutil.rmtree(quant_dir, ignore_errors=True)
    os.makedirs(quant_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(stamp, f, indent=2)


# ---------------------------------------------------------------------------------------------
# Rendered text pages


def random_word(rng):
    roll = rng.random()
    if roll < 0.12:
        return str(int(rng.integers(0, 100000)))
    if roll < 0.18:
        return f"{int(rng.integers(0, 1000))}.{int(rng.integers(0, 100)):02d}"
    word = WORDS[int(rng.integers(0, len(WORDS)))]
    if rng.random() < 0.15:
        word = word.capitalize()
    if rng.random() < 0.1:
        word += str(rng.choice([",", ".", ":", ";"]))
    return word


def render_page(pil, fonts, rng):
    """A grey-level page of text lines: several blocks, each in one face and size, with a
    light noisy background; returns a 2-D uint8 array."""
    from PIL import Image, ImageDraw, ImageFont

    background = float(rng.uniform(205.0, 250.0))
    page = np.clip(background + rng.normal(0.0, 3.0, (PAGE_SIZE, PAGE_SIZE)), 0, 255)
    image = Image.fromarray(page.astype(np.uint8), mode="L")
    draw = ImageDraw.Draw(image)
    y = int(rng.integers(4, 24))
    while y < PAGE_SIZE - 12:
        font_path = fonts[int(rng.integers(0, len(fonts)))]
        size = int(rng.integers(10, 30))
        font = ImageFont.truetype(font_path, size)
        ink = int(rng.integers(0, 90))
        left = int(rng.integers(4, 60))
        for _ in range(int(rng.integers(1, 5))):  # lines of this block
            if y > PAGE_SIZE - size:
                break
            right = int(rng.integers(PAGE_SIZE // 3, PAGE_SIZE - 4))
            words = []
            while True:
                candidate = " ".join(words + [random_word(rng)])
                if left + draw.textlength(candidate, font=font) > right:
                    break
                words.append(candidate.rsplit(" ", 1)[-1])
            if words:
                draw.text((left, y), " ".join(words), fill=ink, font=font)
            y += int(size * rng.uniform(1.2, 1.8))
        y += int(rng.integers(6, 30))  # gap between blocks
    return np.asarray(image, dtype=np.uint8)


def page_input(page):
    """PP-OCR's preprocessing of a grey page: RGB / 255, ImageNet mean/std, NCHW."""
    rgb = np.stack([page.astype(np.float64)] * 3)[None]
    return ((rgb / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


def prepare_pages(pil, fonts, quant_dir, subset, count, seed):
    """Render `count` pages with `seed` into pages/SUBSET; returns the .npy paths."""
    from PIL import Image

    out_dir = os.path.join(quant_dir, "pages", subset)
    done = os.path.join(out_dir, ".complete")
    paths = [os.path.join(out_dir, f"{i:04d}.npy") for i in range(count)]
    if os.path.exists(done):
        log(f"pages/{subset}: present, skipped")
        return paths
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, path in enumerate(paths):
        page = render_page(pil, fonts, rng)
        Image.fromarray(page, mode="L").save(path[:-4] + ".png")
        np.save(path, page_input(page))
    with open(done, "w") as f:
        f.write(f"{count} pages, seed {seed}\n")
    log(f"pages/{subset}: rendered {count} pages (seed {seed})")
    return paths


def prepare_normal_inputs(quant_dir, subset, name, shape, count):
    """Seeded N(0, 1) inputs for a light model in SUBSET/NAME; returns the paths."""
    out_dir = os.path.join(quant_dir, subset, name)
    done = os.path.join(out_dir, ".complete")
    paths = [os.path.join(out_dir, f"{i:04d}.npy") for i in range(count)]
    if os.path.exists(done):
        return paths
    os.makedirs(out_dir, exist_ok=True)
    seed = zlib.crc32(f"{name}/{subset}".encode())
    rng = np.random.default_rng(seed)
    for path in paths:
        np.save(path, rng.standard_normal(shape).astype(np.float32))
    with open(done, "w") as f:
        f.write(f"{count} samples of N(0, 1), seed {seed}\n")
    return paths


# ---------------------------------------------------------------------------------------------
# Quantization with onnxruntime


def quant_formats():
    from onnxruntime.quantization import QuantFormat, QuantType

    return {
        "qdq_u8s8": dict(quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                         weight_type=QuantType.QInt8, symmetric=False,
                         description="QDQ, u8 asymmetric activations, s8 symmetric per-channel "
                                     "weights"),
        "qop_u8s8": dict(quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8,
                         weight_type=QuantType.QInt8, symmetric=False,
                         description="QOperator (QLinearConv and com.microsoft QLinear ops), u8 "
                                     "asymmetric activations, s8 symmetric per-channel weights"),
        "qdq_s8sym": dict(quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                          weight_type=QuantType.QInt8, symmetric=True,
                          description="QDQ, s8 symmetric activations and s8 symmetric "
                                      "per-channel weights (TensorRT-style)"),
    }


class NpyReader:
    """onnxruntime CalibrationDataReader over .npy files, one sample each (lazy: one loaded at
    a time)."""

    def __init__(self, input_name, paths):
        self.input_name = input_name
        self.paths = list(paths)
        self.next_index = 0

    def get_next(self):
        if self.next_index >= len(self.paths):
            return None
        path = self.paths[self.next_index]
        self.next_index += 1
        return {self.input_name: np.load(path)}

    def rewind(self):
        self.next_index = 0


# Per-channel DequantizeLinear (its axis attribute) exists from opset 13 on; onnxruntime's
# quantizer does not raise the opset itself (PP-OCRv4 det is opset 12).
MIN_OPSET = 13


def static_input_model(src, dst, shape):
    """Copy of `src` with its (single) image input fixed to `shape`, so that ONNX shape inference
    resolves every tensor (PP-OCR's input is [?, 3, ?, ?]), at opset MIN_OPSET or later."""
    model = onnx.load(src)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < MIN_OPSET:
        model = onnx.version_converter.convert_version(model, MIN_OPSET)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, shape):
        dim.Clear()
        dim.dim_value = value
    onnx.save(model, dst)


def preprocess(src, dst, shape):
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        fixed = os.path.join(tmp, "fixed.onnx")
        static_input_model(src, fixed, shape)
        # Symbolic shape inference needs sympy and only matters for dynamic shapes, which the
        # fixed input removed.
        quant_pre_process(fixed, dst + ".tmp", skip_symbolic_shape=True)
    os.replace(dst + ".tmp", dst)


def quantize(float_path, dst, fmt, input_name, calib_paths):
    from onnxruntime.quantization import CalibrationMethod, quantize_static

    spec = quant_formats()[fmt]
    # Not CalibMaxIntermediateOutputs: in onnxruntime 1.31 reaching that count clears the
    # collected activations without merging their ranges (calibrate.py, collect_data), so the
    # ranges would come from the last partial chunk alone. All samples' activations are held
    # at once instead (~2.5 GB for PP-OCR's 32 pages).
    extra = {}
    if spec["symmetric"]:
        extra.update({"ActivationSymmetric": True, "WeightSymmetric": True})
    quantize_static(
        float_path,
        dst + ".tmp",
        NpyReader(input_name, calib_paths),
        quant_format=spec["quant_format"],
        activation_type=spec["activation_type"],
        weight_type=spec["weight_type"],
        per_channel=True,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options=extra,
    )
    os.replace(dst + ".tmp", dst)


def session(model_path, optimized):
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])


def median_run_ms(sess, feeds):
    sess.run(None, feeds)  # warm-up
    times = []
    for _ in range(ORT_TIMED_RUNS):
        start = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def op_histogram(model_path):
    model = onnx.load(model_path, load_external_data=False)
    counts = {}
    for node in model.graph.node:
        key = f"{node.domain}:{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def output_quantization(model_path):
    """How each graph output is produced: by a DequantizeLinear (its scale and zero point are
    the output's quantization step), or by a float op (then None)."""
    model = onnx.load(model_path, load_external_data=False)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    result = []
    for out in model.graph.output:
        node = producers.get(out.name)
        entry = {"name": out.name, "producer": node.op_type if node else None}
        if node is not None and node.op_type == "DequantizeLinear" and node.input[1] in inits:
            scale = inits[node.input[1]]
            zp = inits.get(node.input[2]) if len(node.input) > 2 else None
            entry["dequantize_scale"] = [float(s) for s in np.ravel(scale)]
            entry["dequantize_zero_point"] = (
                [int(z) for z in np.ravel(zp)] if zp is not None else [0])
        result.append(entry)
    return result


# Where a node's output zero point is among its inputs: the zero point's dtype is the output's
# (onnxruntime's QOperator ops; com.microsoft ops are not known to ONNX shape inference).
OUTPUT_ZERO_POINT_INPUT = {
    "QuantizeLinear": 2,
    "QLinearConv": 7,
    "QLinearMatMul": 7,
    "QLinearAdd": 7,
    "QLinearMul": 7,
    "QLinearConcat": 1,
    "QLinearAveragePool": 4,
    "QLinearGlobalAveragePool": 4,
    "QLinearSigmoid": 4,
    "QLinearLeakyRelu": 4,
    "QLinearSoftmax": 4,
    "QGemm": 8,
}
# Ops that move integers without changing their type (QOperator models run them on u8/i8).
INTEGER_PASSTHROUGH = {"MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze",
                       "Identity", "Slice", "Split", "Resize", "Concat", "Pad", "Gather",
                       "DepthToSpace", "SpaceToDepth"}


def integer_tensors(model):
    """{name: ONNX element type} of every 8-bit tensor a node computes (not initializers):
    quantized activations."""
    inits = {t.name: t.data_type for t in model.graph.initializer}
    known = {}
    for node in model.graph.node:  # onnxruntime's quantizer writes nodes in topological order
        elem = None
        zp_at = OUTPUT_ZERO_POINT_INPUT.get(node.op_type)
        if zp_at is not None:
            if len(node.input) > zp_at and node.input[zp_at] in inits:
                elem = inits[node.input[zp_at]]
            elif node.op_type == "QuantizeLinear":
                elem = onnx.TensorProto.UINT8  # ONNX: no zero point means uint8
        elif node.op_type in INTEGER_PASSTHROUGH and node.input and node.input[0] in known:
            elem = known[node.input[0]]
        if elem in (onnx.TensorProto.UINT8, onnx.TensorProto.INT8):
            for out in node.output:
                if out:
                    known[out] = elem
    return known


def ort_integer_tensors(q_path, input_name, x):
    """onnxruntime's values (optimizations disabled) of every quantized activation of the
    model for input `x`: the model is run with those tensors added as graph outputs, which
    does not change what the unoptimized session computes."""
    model = onnx.load(q_path)
    existing = {o.name for o in model.graph.output}
    elem = integer_tensors(model)
    names = [n for n in elem if n not in existing]
    model.graph.output.extend(
        onnx.helper.make_tensor_value_info(n, elem[n], None) for n in names)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "all_outputs.onnx")
        onnx.save(model, path)
        sess = session(path, optimized=False)
        values = sess.run(names, {input_name: x})
    return dict(zip(names, values))


def text_mask_iou(float_maps, int8_maps):
    """IoU of the text masks (probability > TEXT_PROB_THRESHOLD): pooled over all pages
    (sum of intersections / sum of unions), and the worst page."""
    inter_total, union_total, per_page = 0, 0, []
    for f, q in zip(float_maps, int8_maps):
        a, b = f > TEXT_PROB_THRESHOLD, q > TEXT_PROB_THRESHOLD
        inter, union = int(np.sum(a & b)), int(np.sum(a | b))
        inter_total += inter
        union_total += union
        per_page.append(inter / union if union else 1.0)
    return {
        "pooled": inter_total / union_total if union_total else 1.0,
        "min_page": min(per_page),
        "mean_page": float(np.mean(per_page)),
        "float_text_fraction": float(np.mean([np.mean(f > TEXT_PROB_THRESHOLD)
                                              for f in float_maps])),
    }


def prepare_model(quant_dir, models_dir, name, calib_paths, eval_paths):
    manifest_path = os.path.join(quant_dir, "models", f"{name}.json")
    if os.path.exists(manifest_path):
        log(f"{name}: present, skipped")
        with open(manifest_path) as f:
            return json.load(f)
    start = time.perf_counter()
    out_models = os.path.join(quant_dir, "models")
    ref_dir = os.path.join(quant_dir, "ref")
    os.makedirs(out_models, exist_ok=True)
    os.makedirs(ref_dir, exist_ok=True)

    src = os.path.join(models_dir, f"{name}.onnx")
    source_model = onnx.load(src, load_external_data=False)
    input_name = source_model.graph.input[0].name
    input_shape = list(np.load(eval_paths[0], mmap_mode="r").shape)
    float_path = os.path.join(out_models, f"{name}.float.onnx")
    if not os.path.exists(float_path):
        preprocess(src, float_path, input_shape)

    eval_inputs = [np.load(p) for p in eval_paths]
    check = range(min(KILN_CHECK_INPUTS, len(eval_paths)))
    rel = lambda p: os.path.relpath(p, quant_dir)  # noqa: E731 (manifest paths are relative)

    float_sess = session(float_path, optimized=True)
    float_outputs = [float_sess.run(None, {input_name: x})[0] for x in eval_inputs]
    float_refs = []
    for k in check:
        path = os.path.join(ref_dir, f"{name}.float.{k}.npy")
        np.save(path, float_outputs[k])
        float_refs.append(rel(path))
    float_opt_ms = median_run_ms(float_sess, {input_name: eval_inputs[0]})
    del float_sess
    float_plain_ms = median_run_ms(session(float_path, optimized=False),
                                   {input_name: eval_inputs[0]})

    formats = {}
    for fmt, spec in quant_formats().items():
        q_path = os.path.join(out_models, f"{name}.{fmt}.onnx")
        q_start = time.perf_counter()
        quantize(float_path, q_path, fmt, input_name, calib_paths)
        quantize_s = time.perf_counter() - q_start
        entry = {
            "model": rel(q_path),
            "description": spec["description"],
            "quantize_seconds": round(quantize_s, 2),
            "ops": op_histogram(q_path),
            "outputs": output_quantization(q_path),
            "references": [],
        }
        latency = {}
        for mode, optimized in (("ort", False), ("ort_opt", True)):
            sess = session(q_path, optimized)
            maps = [sess.run(None, {input_name: x})[0] for x in eval_inputs]
            for k in check:
                path = os.path.join(ref_dir, f"{name}.{fmt}.{k}.{mode}.npy")
                np.save(path, maps[k])
                if mode == "ort":
                    tensors_path = os.path.join(ref_dir, f"{name}.{fmt}.{k}.ort_quantized.npz")
                    np.savez_compressed(tensors_path, **ort_integer_tensors(
                        q_path, input_name, eval_inputs[k]))
                    entry["references"].append({"input": rel(eval_paths[k]), "ort": rel(path),
                                                "ort_quantized": rel(tensors_path)})
                else:
                    entry["references"][k]["ort_opt"] = rel(path)
            latency[f"{mode}_ms_median"] = round(median_run_ms(sess, {input_name: eval_inputs[0]}),
                                                 3)
            # Agreement of the quantized model with the float one over every eval input.
            diffs = [float(np.max(np.abs(q - f))) for q, f in zip(maps, float_outputs)]
            entry[f"{mode}_max_abs_vs_float"] = max(diffs)
            if name == PPOCR_NAME:
                entry[f"{mode}_text_mask_iou"] = text_mask_iou(
                    [f[0, 0] for f in float_outputs], [q[0, 0] for q in maps])
            del sess
        entry["onnxruntime"] = latency
        formats[fmt] = entry
        iou = entry.get("ort_opt_text_mask_iou", {}).get("pooled")
        log(f"{name} {fmt}: quantized in {quantize_s:.1f} s; ORT {latency['ort_ms_median']:.1f} ms "
            f"plain, {latency['ort_opt_ms_median']:.1f} ms optimized"
            + (f"; text-mask IoU vs float {iou:.4f}" if iou is not None else ""))

    manifest = {
        "name": name,
        "source": f"models/{name}.onnx (tools/prepare_assets.py)",
        "float_model": rel(float_path),
        "input": {"name": input_name, "shape": input_shape, "dtype": "float32"},
        "calibration": {"method": "MinMax (onnxruntime quantize_static)",
                        "inputs": [rel(p) for p in calib_paths]},
        "eval_inputs": [rel(p) for p in eval_paths],
        "float_references": float_refs,
        "float_onnxruntime": {"ort_ms_median": round(float_plain_ms, 3),
                              "ort_opt_ms_median": round(float_opt_ms, 3)},
        "formats": formats,
        "onnxruntime": {"version": ort.__version__, "provider": "CPUExecutionProvider",
                        "threads": 1, "timed_runs": ORT_TIMED_RUNS},
    }
    with open(manifest_path + ".tmp", "w") as f:
        json.dump(manifest, f, indent=2)
    os.replace(manifest_path + ".tmp", manifest_path)
    log(f"{name}: done in {time.perf_counter() - start:.1f} s")
    return manifest


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    assets = os.path.abspath(argv[1])
    models_dir = os.path.join(assets, "models")
    quant_dir = os.path.join(assets, "quant")
    start = time.perf_counter()
    pil = ensure_pillow()
    fonts = find_fonts()
    stamp = current_stamp(assets, pil, fonts)
    check_stamp(quant_dir, stamp)
    log(f"quant assets in {quant_dir} (onnxruntime {stamp['onnxruntime']}, Pillow "
        f"{stamp['pillow']})")

    calib_pages = prepare_pages(pil, fonts, quant_dir, "calib", CALIB_PAGES, CALIB_PAGE_SEED)
    eval_pages = prepare_pages(pil, fonts, quant_dir, "eval", EVAL_PAGES, EVAL_PAGE_SEED)

    manifests = {}
    for name in QUANT_MODELS:
        if not os.path.exists(os.path.join(models_dir, f"{name}.onnx")):
            sys.exit(f"quant_assets: {models_dir}/{name}.onnx missing (run "
                     "tools/prepare_assets.py first)")
        if name == PPOCR_NAME:
            calib, evals = calib_pages, eval_pages
        else:
            model = onnx.load(os.path.join(models_dir, f"{name}.onnx"), load_external_data=False)
            shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
            calib = prepare_normal_inputs(quant_dir, "calib", name, shape, LIGHT_CALIB_SAMPLES)
            evals = prepare_normal_inputs(quant_dir, "eval", name, shape, LIGHT_EVAL_SAMPLES)
        manifests[name] = prepare_model(quant_dir, models_dir, name, calib, evals)

    manifest = {
        "pages": {
            "size": [PAGE_SIZE, PAGE_SIZE],
            "fonts": [os.path.basename(f) for f in fonts],
            "preprocessing": "grey page replicated to RGB, /255, ImageNet mean/std, NCHW f32",
            "calib": {"count": CALIB_PAGES, "seed": CALIB_PAGE_SEED, "dir": "pages/calib"},
            "eval": {"count": EVAL_PAGES, "seed": EVAL_PAGE_SEED, "dir": "pages/eval"},
        },
        "text_prob_threshold": TEXT_PROB_THRESHOLD,
        "stamp": stamp,
        "models": manifests,
    }
    with open(os.path.join(quant_dir, "manifest.json.tmp"), "w") as f:
        json.dump(manifest, f, indent=2)
    os.replace(os.path.join(quant_dir, "manifest.json.tmp"),
               os.path.join(quant_dir, "manifest.json"))
    log(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main(sys.argv)
