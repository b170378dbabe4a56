#!/usr/bin/env python3
"""Export models quantized by PyTorch to ONNX, for kiln's pre-quantized import tests.

Needs torch, torchvision, onnx and numpy (onnxruntime optional); CPU only, no network (the
models get seeded random weights, not downloaded ones). For each model of torchvision's
quantizable zoo (default: resnet18, mobilenet_v2, shufflenet_v2_x1_0, mobilenet_v3_large):

1. the float model, seeded (torch.manual_seed), in eval mode;
2. eager-mode post-training static quantization: fuse_model() → qconfig =
   get_default_qconfig(ENGINE) (fbgemm/x86: HistogramObserver activations with reduce_range,
   per-channel symmetric int8 weights) → prepare → calibrate on seeded N(0, 1) images →
   convert;
3. export of the quantized model with torch.onnx.export's TorchScript ("legacy") exporter
   (dynamo=False) at opset 13 and 17 — it writes QuantizeLinear / DequantizeLinear around the
   float ops (QDQ) — and, best effort, the dynamo exporter;
4. best effort, PT2E quantization (torch.export + X86InductorQuantizer + convert_pt2e)
   exported with the dynamo exporter.

Every step is tried per model and variant; a failure is printed with its traceback, recorded
in the manifest, and the run goes on.

OUT/
  manifest.json                  versions, settings, and per model and variant: status (ok /
                                 error with message), files, ONNX op histogram, onnxruntime's
                                 agreement with torch
  calib/NAME/NNNN.npy            the calibration inputs ([1, 3, 224, 224] f32, N(0, 1), seeded)
  NAME.input_0.npy               an evaluation input (another seed)
  NAME.float.onnx                the float model (legacy exporter, opset 13)
  NAME.float_output.npy          the float torch model's output on the evaluation input
  NAME.VARIANT.onnx              the quantized model, VARIANT in eager_legacy_opset13,
                                 eager_legacy_opset17, eager_dynamo, pt2e_dynamo
  NAME.VARIANT.torch_output.npy  the quantized torch model's output on the evaluation input
  NAME.VARIANT.ort_output.npy    onnxruntime's output of NAME.VARIANT.onnx (CPU, graph
                                 optimizations disabled, 1 thread), when onnxruntime is there;
  NAME.VARIANT.ort_opt_output.npy  the same with all graph optimizations
  NAME.VARIANT.ort_quantized.npz onnxruntime's quantized activations (optimizations disabled)

manifest.json's "kiln_models" has the layout of tools/quant_assets.py's manifest "models", so
tests/prequantized.rs checks these models too when OUT is $KILN_ASSETS/torch_quant.

Exit status: 0 when at least one quantized ONNX model was written, 1 otherwise.

usage: export_torch_quantized.py OUT [--models NAME,NAME,...] [--calib N]
"""
import argparse
import copy
import importlib
import importlib.util
import inspect
import json
import os
import platform
import sys
import time
import traceback
import zlib

import numpy as np

DEFAULT_MODELS = ["resnet18", "mobilenet_v2", "shufflenet_v2_x1_0", "mobilenet_v3_large"]
INPUT_SHAPE = [1, 3, 224, 224]
CALIB_SAMPLES = 16
LEGACY_OPSETS = [13, 17]
# The dynamo exporter's opset (its QuantizeLinear/DequantizeLinear lowering targets 18+).
DYNAMO_OPSET = 18


def log(msg):
    print(f"export_torch_quantized: {msg}", flush=True)


def optional_module(name):
    try:
        return importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 (any import failure means "not available")
        log(f"{name} not available: {e}")
        return None


def versions(torch, torchvision, onnx, ort):
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torchvision": getattr(torchvision, "__version__", None),
        "onnx": getattr(onnx, "__version__", None),
        "onnxruntime": getattr(ort, "__version__", None),
        "quantized_engines": list(torch.backends.quantized.supported_engines),
    }


def quantization_api(torch):
    """torch.ao.quantization (1.10+) or the older torch.quantization."""
    try:
        return importlib.import_module("torch.ao.quantization")
    except ImportError:
        return importlib.import_module("torch.quantization")


def choose_engine(torch):
    engines = list(torch.backends.quantized.supported_engines)
    for engine in ("fbgemm", "x86", "qnnpack"):
        if engine in engines:
            torch.backends.quantized.engine = engine
            return engine
    raise RuntimeError(f"no usable quantized engine in {engines}")


def seed_for(name, what):
    return zlib.crc32(f"{name}/{what}".encode())


def build_quantizable(torch, torchvision, name):
    """torchvision's quantizable float model `name`, seeded, eval mode."""
    ctor = getattr(torchvision.models.quantization, name)
    torch.manual_seed(seed_for(name, "weights"))
    try:
        model = ctor(weights=None, quantize=False)
    except TypeError:  # torchvision < 0.13
        model = ctor(pretrained=False, quantize=False)
    model.eval()
    # Random init leaves BatchNorm at mean 0 / var 1, which makes BN folding trivial; give the
    # statistics and affine parameters seeded, plausible values instead.
    generator = torch.Generator().manual_seed(seed_for(name, "batchnorm"))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(c, generator=generator) * 0.5 + 0.75)
                module.weight.copy_(torch.rand(c, generator=generator) * 0.5 + 0.75)
                module.bias.copy_(torch.randn(c, generator=generator) * 0.1)
    return model


def seeded_inputs(name, what, count):
    rng = np.random.default_rng(seed_for(name, what))
    return [rng.standard_normal(INPUT_SHAPE).astype(np.float32) for _ in range(count)]


def eager_quantize(torch, tq, float_model, calib, engine):
    model = copy.deepcopy(float_model)
    model.eval()
    model.fuse_model()  # Conv+BN(+ReLU) fusion in eval mode (is_qat defaults to None/False)
    model.qconfig = tq.get_default_qconfig(engine)
    tq.prepare(model, inplace=True)
    with torch.no_grad():
        for x in calib:
            model(torch.from_numpy(x))
    tq.convert(model, inplace=True)
    return model


def pt2e_quantize(torch, torchvision, name, float_model, calib):
    """PT2E static quantization with the X86 inductor quantizer. The API lives in
    torch.ao.quantization up to torch 2.9 and in torchao from then on; both are tried."""
    try:
        from torch.ao.quantization.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torch.ao.quantization.quantizer import x86_inductor_quantizer as xiq
    except ImportError:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    plain = getattr(torchvision.models, name)(weights=None).eval()
    missing = plain.load_state_dict(float_model.state_dict(), strict=False)
    example = (torch.from_numpy(calib[0]),)
    if hasattr(torch.export, "export_for_training"):
        captured = torch.export.export_for_training(plain, example).module()
    else:
        captured = torch.export.export(plain, example).module()
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(captured, quantizer)
    with torch.no_grad():
        for x in calib:
            prepared(torch.from_numpy(x))
    converted = convert_pt2e(prepared)
    return converted, {"state_dict_missing": list(missing.missing_keys),
                       "state_dict_unexpected": list(missing.unexpected_keys)}


def export_onnx(torch, model, x, path, opset, dynamo):
    kwargs = dict(opset_version=opset, input_names=["input"], output_names=["output"])
    params = inspect.signature(torch.onnx.export).parameters
    if "dynamo" in params:
        kwargs["dynamo"] = dynamo
    elif dynamo:
        raise RuntimeError(f"torch {torch.__version__}: torch.onnx.export has no dynamo option")
    if not dynamo:
        kwargs["do_constant_folding"] = True
    torch.onnx.export(model, (torch.from_numpy(x),), path, **kwargs)
    if not os.path.exists(path):
        raise RuntimeError(f"torch.onnx.export returned but wrote no {path}")
    return path


def op_histogram(onnx, path):
    model = onnx.load(path, load_external_data=True)
    counts = {}
    for node in model.graph.node:
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}:{node.op_type}"
        counts[key] = counts.get(key, 0) + 1
    opsets = {(o.domain or "ai.onnx"): o.version for o in model.opset_import}
    return dict(sorted(counts.items())), opsets


def output_step(onnx, path):
    """The scale of the DequantizeLinear producing the first graph output, if any."""
    from onnx import numpy_helper

    model = onnx.load(path, load_external_data=True)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    consts = {}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    consts[node.output[0]] = numpy_helper.to_array(a.t)
    producers = {o: n for n in model.graph.node for o in n.output}
    node = producers.get(model.graph.output[0].name)
    if node is None or node.op_type != "DequantizeLinear":
        return None
    scale = inits.get(node.input[1], consts.get(node.input[1]))
    return float(np.ravel(scale)[0]) if scale is not None and np.size(scale) == 1 else None


def run_ort(ort, path, x, optimized):
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def load_quant_assets():
    """tools/quant_assets.py as a module: its ort_integer_tensors dumps onnxruntime's quantized
    activations in the layout tests/prequantized.rs reads."""
    spec = importlib.util.spec_from_file_location(
        "quant_assets", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                     "quant_assets.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_variant(onnx, ort, out_dir, name, variant, torch_output, x):
    """Validate an exported model and compare onnxruntime with torch; the manifest entry and,
    when onnxruntime ran, the entry for tests/prequantized.rs (the layout of
    tools/quant_assets.py's manifest)."""
    path = os.path.join(out_dir, f"{name}.{variant}.onnx")
    entry = {"file": os.path.basename(path)}
    onnx.checker.check_model(path)
    entry["ops"], entry["opsets"] = op_histogram(onnx, path)
    step = output_step(onnx, path)
    entry["output_dequantize_scale"] = step
    kiln_entry = None
    if ort is not None:
        try:
            ort_output = run_ort(ort, path, x, optimized=False)
            ort_file = f"{name}.{variant}.ort_output.npy"
            np.save(os.path.join(out_dir, ort_file), ort_output)
            entry["ort_output"] = ort_file
            diff = float(np.max(np.abs(ort_output.astype(np.float64) - torch_output)))
            entry["ort_vs_torch_max_abs"] = diff
            if step:
                entry["ort_vs_torch_max_steps"] = diff / step
            opt_file = f"{name}.{variant}.ort_opt_output.npy"
            np.save(os.path.join(out_dir, opt_file), run_ort(ort, path, x, optimized=True))
            tensors_file = f"{name}.{variant}.ort_quantized.npz"
            np.savez_compressed(os.path.join(out_dir, tensors_file),
                                **load_quant_assets().ort_integer_tensors(path, "input", x))
            kiln_entry = {
                "model": os.path.basename(path),
                "description": f"PyTorch {variant}",
                "outputs": [{"name": "output",
                             **({"dequantize_scale": [step]} if step else {})}],
                "references": [{"input": f"{name}.input_0.npy", "ort": ort_file,
                                "ort_opt": opt_file, "ort_quantized": tensors_file}],
                "onnxruntime": {},
            }
        except Exception as e:  # noqa: BLE001 (recorded; the export itself succeeded)
            traceback.print_exc()
            entry["ort_error"] = f"{type(e).__name__}: {e}"
    return entry, kiln_entry


def attempt(record, what, fn):
    """Run fn(); on failure print the traceback and record the error under `what`."""
    start = time.perf_counter()
    try:
        result = fn()
        record["seconds"] = round(time.perf_counter() - start, 2)
        return result
    except Exception as e:  # noqa: BLE001 (one failure must not stop the other models)
        log(f"{what}: FAILED: {type(e).__name__}: {e}")
        traceback.print_exc()
        record["status"] = "error"
        record["error"] = f"{type(e).__name__}: {e}"
        return None


def process_model(torch, torchvision, onnx, ort, tq, engine, out_dir, name, calib_count):
    """Quantize and export one model; (manifest entry, tests/prequantized.rs entry)."""
    entry = {"status": "ok", "variants": {}}
    kiln_formats = {}
    calib = seeded_inputs(name, "calib", calib_count)
    calib_dir = os.path.join(out_dir, "calib", name)
    os.makedirs(calib_dir, exist_ok=True)
    for i, x in enumerate(calib):
        np.save(os.path.join(calib_dir, f"{i:04d}.npy"), x)
    x = seeded_inputs(name, "eval", 1)[0]
    np.save(os.path.join(out_dir, f"{name}.input_0.npy"), x)
    entry.update({"input": f"{name}.input_0.npy", "input_shape": INPUT_SHAPE,
                  "calibration": f"calib/{name} ({calib_count} samples, N(0, 1))"})

    kiln_entry = {"input": {"name": "input", "shape": INPUT_SHAPE, "dtype": "float32"},
                  "formats": kiln_formats}
    float_model = attempt(entry, f"{name}: build", lambda: build_quantizable(torch, torchvision,
                                                                             name))
    if float_model is None:
        return entry, kiln_entry
    with torch.no_grad():
        float_output = float_model(torch.from_numpy(x)).numpy()
    np.save(os.path.join(out_dir, f"{name}.float_output.npy"), float_output)
    entry["float_output"] = f"{name}.float_output.npy"
    float_record = {}
    if attempt(float_record, f"{name}: float export", lambda: export_onnx(
            torch, float_model, x, os.path.join(out_dir, f"{name}.float.onnx"), 13,
            dynamo=False)):
        entry["float_model"] = f"{name}.float.onnx"
    else:
        entry["float_export_error"] = float_record["error"]

    eager_record = {}
    eager = attempt(eager_record, f"{name}: eager quantization",
                    lambda: eager_quantize(torch, tq, float_model, calib, engine))
    if eager is not None:
        with torch.no_grad():
            eager_output = eager(torch.from_numpy(x)).numpy()
        variants = [(f"eager_legacy_opset{opset}", opset, False) for opset in LEGACY_OPSETS]
        variants.append(("eager_dynamo", DYNAMO_OPSET, True))
        for variant, opset, dynamo in variants:
            np.save(os.path.join(out_dir, f"{name}.{variant}.torch_output.npy"), eager_output)
            record = {"status": "ok", "quantization": f"eager, {engine} default qconfig",
                      "exporter": "dynamo" if dynamo else "legacy (TorchScript)",
                      "opset": opset, "torch_output": f"{name}.{variant}.torch_output.npy"}
            path = os.path.join(out_dir, f"{name}.{variant}.onnx")
            attempt(record, f"{name} {variant}: export",
                    lambda: export_onnx(torch, eager, x, path, opset, dynamo))
            if record["status"] == "ok":
                checked = attempt(record, f"{name} {variant}: check", lambda: check_variant(
                    onnx, ort, out_dir, name, variant, eager_output, x))
                if checked:
                    record.update(checked[0])
                    if checked[1]:
                        kiln_formats[variant] = checked[1]
            entry["variants"][variant] = record
            log(f"{name} {variant}: {record['status']}"
                + (f" ({first_line(record.get('error'))})" if record["status"] != "ok" else
                   f", ops {record.get('ops')}"))
    else:
        entry["eager_error"] = eager_record.get("error")

    record = {"status": "ok", "quantization": "PT2E, X86InductorQuantizer default config",
              "exporter": "dynamo", "opset": DYNAMO_OPSET}
    converted = attempt(record, f"{name}: PT2E quantization",
                        lambda: pt2e_quantize(torch, torchvision, name, float_model, calib))
    if converted is not None:
        module, load_info = converted
        record.update(load_info)
        with torch.no_grad():
            pt2e_output = module(torch.from_numpy(x)).numpy()
        np.save(os.path.join(out_dir, f"{name}.pt2e_dynamo.torch_output.npy"), pt2e_output)
        record["torch_output"] = f"{name}.pt2e_dynamo.torch_output.npy"
        path = os.path.join(out_dir, f"{name}.pt2e_dynamo.onnx")
        attempt(record, f"{name} pt2e_dynamo: export",
                lambda: export_onnx(torch, module, x, path, DYNAMO_OPSET, True))
        if record["status"] == "ok":
            checked = attempt(record, f"{name} pt2e_dynamo: check", lambda: check_variant(
                onnx, ort, out_dir, name, "pt2e_dynamo", pt2e_output, x))
            if checked:
                record.update(checked[0])
                if checked[1]:
                    kiln_formats["pt2e_dynamo"] = checked[1]
    entry["variants"]["pt2e_dynamo"] = record
    log(f"{name} pt2e_dynamo: {record['status']}"
        + (f" ({first_line(record.get('error'))})" if record["status"] != "ok" else ""))
    return entry, kiln_entry


def first_line(text):
    return str(text).strip().splitlines()[0] if text else ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("out", help="output directory")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help="comma-separated torchvision.models.quantization names")
    parser.add_argument("--calib", type=int, default=CALIB_SAMPLES,
                        help="calibration samples per model")
    args = parser.parse_args()

    torch = optional_module("torch")
    torchvision = optional_module("torchvision")
    onnx = optional_module("onnx")
    ort = optional_module("onnxruntime")
    if torch is None or torchvision is None or onnx is None:
        log("torch, torchvision and onnx are required")
        return 1
    importlib.import_module("torchvision.models.quantization")
    importlib.import_module("onnx.checker")
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    tq = quantization_api(torch)
    engine = choose_engine(torch)
    info = versions(torch, torchvision, onnx, ort)
    for key, value in info.items():
        log(f"{key}: {value}")
    log(f"quantized engine: {engine}")

    manifest = {"versions": info, "engine": engine, "input_shape": INPUT_SHAPE,
                "calibration_samples": args.calib, "models": {}, "kiln_models": {}}
    manifest_path = os.path.join(out_dir, "manifest.json")
    written = 0
    for name in [m for m in args.models.split(",") if m]:
        log(f"== {name}")
        if not hasattr(torchvision.models.quantization, name):
            manifest["models"][name] = {"status": "error", "error": "not in "
                                        "torchvision.models.quantization"}
            log(f"{name}: not in torchvision.models.quantization")
            continue
        entry, kiln_entry = process_model(torch, torchvision, onnx, ort, tq, engine, out_dir,
                                          name, args.calib)
        manifest["models"][name] = entry
        if kiln_entry["formats"]:
            manifest["kiln_models"][name] = kiln_entry
        written += sum(1 for v in entry["variants"].values() if v.get("status") == "ok")
        # Rewritten after every model, so an interrupted run still leaves a manifest.
        with open(manifest_path, "w") as f:
            json.dump(manifest, f, indent=2)

    log("summary:")
    for name, entry in manifest["models"].items():
        for variant, record in entry.get("variants", {}).items():
            detail = first_line(record.get("error")) or (
                f"ORT vs torch {record['ort_vs_torch_max_steps']:.2f} steps"
                if "ort_vs_torch_max_steps" in record else
                f"ORT vs torch max abs {record.get('ort_vs_torch_max_abs')}")
            log(f"  {name:20} {variant:22} {record.get('status'):6} {detail}")
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=2)
    log(f"{written} quantized ONNX models written to {out_dir}")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
