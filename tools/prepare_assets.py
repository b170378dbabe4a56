#!/usr/bin/env python3
"""Prepare every asset kiln's conformance and differential tests read (tools/test.sh calls this).

ASSETS_DIR/
  stamp.json                  versions of onnx / onnxruntime / numpy and a hash of the tools that
                              wrote the assets; a mismatch rebuilds everything
  node/<case>/...             ONNX backend node tests (tools/gen_onnx_node_tests.py)
  models/<name>.onnx          the nine "light" architectures of the onnx wheel with seeded
                              realistic weights (tools/realize_light.py), and ppocrv4_det
                              (PP-OCRv4 text detection, trained weights, from the
                              rapidocr-onnxruntime 1.4.4 wheel on PyPI)
  models/<name>.input_K.npy   a seeded input per graph input (all ten models take one image):
                              the light models get N(0, 1) elements, i.e. an image after the
                              usual mean/std normalization; ppocrv4_det gets a synthetic text
                              page (random glyph strokes in lines, ImageNet-normalized) because
                              on noise the detector's output is ~1e-5 everywhere, deep in the
                              sigmoid's tail where onnxruntime's sigmoid is only accurate to
                              ~1e-7 absolute, and the comparison would test nothing
  models/<name>.output_K.npy  onnxruntime's outputs for that input: CPUExecutionProvider, graph
                              optimizations disabled (ORT computes the plain graph, not its
                              fused rewrite of it), one thread (deterministic reductions)
  models/<name>.json          manifest: input names/shapes/seed, output names/shapes, ORT times

Idempotent: each step is skipped when its outputs exist and the stamp matches; the manifest of a
model is written last, so an interrupted run redoes only the unfinished model. A failure to
download PP-OCRv4 is reported and the run continues (the differential test then fails, loudly,
on the missing model); any other failure stops the run.

usage: prepare_assets.py ASSETS_DIR
"""
import hashlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib

import numpy as np
import onnx
import onnxruntime as ort

TOOLS_DIR = os.path.dirname(os.path.abspath(__file__))
LIGHT_MODELS = [
    "bvlc_alexnet",
    "densenet121",
    "inception_v1",
    "inception_v2",
    "resnet50",
    "shufflenet",
    "squeezenet",
    "vgg19",
    "zfnet512",
]
# Seed of realize_light's weights (the one DESIGN.md §9's measurements used).
REALIZE_SEED = 0
PPOCR_WHEEL = "rapidocr-onnxruntime==1.4.4"
PPOCR_MEMBER = "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"
PPOCR_NAME = "ppocrv4_det"
# PP-OCRv4 det has dynamic batch/H/W; the tests run it at one fixed shape.
PPOCR_INPUT_SHAPE = [1, 3, 320, 320]
# Timed runs for the manifest's onnxruntime times (after one warm-up run).
ORT_TIMED_RUNS = 5


def log(msg):
    print(f"prepare_assets: {msg}", flush=True)


def load_tool(name):
    """Import a sibling tools/*.py script as a module (they are not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(TOOLS_DIR, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def current_stamp():
    tools_hash = hashlib.sha256()
    for script in ("prepare_assets.py", "gen_onnx_node_tests.py", "realize_light.py"):
        with open(os.path.join(TOOLS_DIR, script), "rb") as f:
            tools_hash.update(f.read())
    return {
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "tools_sha256": tools_hash.hexdigest(),
    }


def check_stamp(assets):
    """Wipe assets written by other tool or package versions; return the stamp to write."""
    stamp = current_stamp()
    path = os.path.join(assets, "stamp.json")
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError):
        old = None
    if old != stamp:
        if old is not None:
            log(f"stamp changed ({old} -> {stamp}): rebuilding all assets")
        for sub in ("node", "models"):
            shutil.rmtree(os.path.join(assets, sub), ignore_errors=True)
    os.makedirs(assets, exist_ok=True)
    with open(path, "w") as f:
        json.dump(stamp, f, indent=2)
    return stamp


def prepare_node_tests(assets):
    done = os.path.join(assets, "node", ".complete")
    if os.path.exists(done):
        log("node tests: present, skipped")
        return
    log("node tests: generating from the onnx wheel's case generators")
    start = time.perf_counter()
    load_tool("gen_onnx_node_tests").main(["gen_onnx_node_tests.py", assets])
    with open(done, "w") as f:
        f.write("written by tools/prepare_assets.py\n")
    log(f"node tests: done in {time.perf_counter() - start:.1f} s")


def prepare_light_model(models_dir, name, realize_light):
    dst = os.path.join(models_dir, f"{name}.onnx")
    if os.path.exists(dst):
        return True
    src = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light",
                       f"light_{name}.onnx")
    log(f"{name}: realizing {src} (seed {REALIZE_SEED})")
    tmp = dst + ".tmp"
    realize_light.realize(src, tmp, REALIZE_SEED)
    os.replace(tmp, dst)
    return True


def prepare_ppocr(models_dir):
    """Extract PP-OCRv4 det from the rapidocr wheel; False (with the reason printed) on failure."""
    dst = os.path.join(models_dir, f"{PPOCR_NAME}.onnx")
    if os.path.exists(dst):
        return True
    log(f"{PPOCR_NAME}: pip download --no-deps {PPOCR_WHEEL}")
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
             "--quiet", PPOCR_WHEEL, "-d", tmp],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            log(f"{PPOCR_NAME}: DOWNLOAD FAILED (the differential test will fail on the missing "
                f"model):\n{result.stderr.strip() or result.stdout.strip()}")
            return False
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if len(wheels) != 1:
            log(f"{PPOCR_NAME}: expected one wheel from pip download, got {wheels}")
            return False
        with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as wheel:
            data = wheel.read(PPOCR_MEMBER)
    with open(dst + ".tmp", "wb") as f:
        f.write(data)
    os.replace(dst + ".tmp", dst)
    log(f"{PPOCR_NAME}: extracted {PPOCR_MEMBER} ({len(data)} bytes)")
    return True


def session(model_path, optimized):
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    start = time.perf_counter()
    sess = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    return sess, (time.perf_counter() - start) * 1e3


def median_run_ms(sess, feeds):
    sess.run(None, feeds)  # warm-up: first-run allocations are not inference time
    times = []
    for _ in range(ORT_TIMED_RUNS):
        start = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def synthetic_text_page(rng, height, width):
    """A grey-level document image: dark glyph-like strokes in lines on a light, noisy page.

    Not text in any script, but what a text detector responds to: PP-OCRv4 det marks each line
    as a text region (output ~1 on the lines, ~0 between), exercising its full output range.
    """
    page = np.full((height, width), 235.0) + rng.normal(0.0, 4.0, (height, width))
    y = int(rng.integers(8, 20))
    while y < height - 24:
        size = int(rng.integers(10, 22))  # glyph height of this line
        x = int(rng.integers(4, 40))
        line_end = int(rng.integers(width // 2, width - 4))
        while x < line_end - size:
            glyph_width = int(rng.integers(size // 2, size))
            ink = rng.uniform(10.0, 70.0)
            stroke = max(1, size // 7)
            for _ in range(int(rng.integers(2, 5))):
                if rng.random() < 0.5:
                    yy = y + int(rng.integers(0, size - stroke))
                    page[yy:yy + stroke, x:x + glyph_width] = ink
                else:
                    xx = x + int(rng.integers(0, max(1, glyph_width - stroke)))
                    page[y:y + size, xx:xx + stroke] = ink
            x += glyph_width + int(rng.integers(1, 4))
            if rng.random() < 0.12:
                x += size  # a word gap
        y += size + int(rng.integers(8, 24))
    return np.clip(page, 0.0, 255.0)


# PP-OCR's preprocessing: RGB / 255, then ImageNet mean and std per channel.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406]).reshape(3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225]).reshape(3, 1, 1)


def seeded_input(name, rng, shape):
    """(input array, description) for one model input."""
    if name == PPOCR_NAME:
        batch, channels, height, width = shape
        pages = [synthetic_text_page(rng, height, width) for _ in range(batch)]
        rgb = np.stack([np.stack([p] * channels) for p in pages])
        value = (rgb / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        return value.astype(np.float32), "synthetic text page, ImageNet-normalized"
    return rng.standard_normal(shape).astype(np.float32), "normal(0, 1)"


def model_input_shape(name, inp):
    if name == PPOCR_NAME:
        return list(PPOCR_INPUT_SHAPE)
    if not all(isinstance(d, int) and d > 0 for d in inp.shape):
        raise ValueError(f"{name}: input {inp.name} has dynamic shape {inp.shape}")
    return list(inp.shape)


def prepare_reference(models_dir, name, source):
    manifest_path = os.path.join(models_dir, f"{name}.json")
    if os.path.exists(manifest_path):
        log(f"{name}: present, skipped")
        return
    model_path = os.path.join(models_dir, f"{name}.onnx")
    sess, session_ms = session(model_path, optimized=False)
    # A stable per-model seed, so each model's input is reproducible on its own.
    seed = zlib.crc32(name.encode())
    rng = np.random.default_rng(seed)
    feeds, inputs = {}, []
    for k, inp in enumerate(sess.get_inputs()):
        if inp.type != "tensor(float)":
            raise ValueError(f"{name}: input {inp.name} has type {inp.type}, expected float")
        shape = model_input_shape(name, inp)
        value, distribution = seeded_input(name, rng, shape)
        file = f"{name}.input_{k}.npy"
        np.save(os.path.join(models_dir, file), value)
        feeds[inp.name] = value
        inputs.append({"name": inp.name, "shape": shape, "dtype": str(value.dtype), "file": file,
                       "distribution": distribution})
    outputs_values = sess.run(None, feeds)
    outputs = []
    for k, (out, value) in enumerate(zip(sess.get_outputs(), outputs_values)):
        file = f"{name}.output_{k}.npy"
        np.save(os.path.join(models_dir, file), value)
        outputs.append({"name": out.name, "shape": list(value.shape), "dtype": str(value.dtype),
                        "file": file})
    plain_ms = median_run_ms(sess, feeds)
    del sess
    optimized, optimized_session_ms = session(model_path, optimized=True)
    optimized_ms = median_run_ms(optimized, feeds)
    del optimized
    manifest = {
        "model": f"{name}.onnx",
        "source": source,
        "onnx_nodes": len(onnx.load(model_path, load_external_data=False).graph.node),
        "input_seed": seed,
        "inputs": inputs,
        "outputs": outputs,
        "onnxruntime": {
            "version": ort.__version__,
            "provider": "CPUExecutionProvider",
            "threads": 1,
            "timed_runs": ORT_TIMED_RUNS,
            # the configuration that produced the reference outputs
            "unoptimized_ms_median": round(plain_ms, 3),
            "unoptimized_session_ms": round(session_ms, 3),
            # the performance peer: ORT with all its graph optimizations (fusions, layouts)
            "optimized_ms_median": round(optimized_ms, 3),
            "optimized_session_ms": round(optimized_session_ms, 3),
        },
    }
    with open(manifest_path + ".tmp", "w") as f:
        json.dump(manifest, f, indent=2)
    os.replace(manifest_path + ".tmp", manifest_path)
    log(f"{name}: reference written (ORT {plain_ms:.1f} ms unoptimized, "
        f"{optimized_ms:.1f} ms optimized, 1 thread)")


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    assets = os.path.abspath(argv[1])
    start = time.perf_counter()
    stamp = check_stamp(assets)
    log(f"assets in {assets} (onnx {stamp['onnx']}, onnxruntime {stamp['onnxruntime']}, "
        f"numpy {stamp['numpy']})")
    prepare_node_tests(assets)

    models_dir = os.path.join(assets, "models")
    os.makedirs(models_dir, exist_ok=True)
    realize_light = load_tool("realize_light")
    for name in LIGHT_MODELS:
        prepare_light_model(models_dir, name, realize_light)
        prepare_reference(models_dir, name,
                          f"onnx {onnx.__version__} backend/test/data/light/light_{name}.onnx, "
                          f"realize_light.py seed {REALIZE_SEED}")
    if prepare_ppocr(models_dir):
        prepare_reference(models_dir, PPOCR_NAME, f"{PPOCR_WHEEL} {PPOCR_MEMBER}")
    log(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main(sys.argv)
