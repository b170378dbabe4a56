#!/usr/bin/env python3
"""Accuracy of int8 models against float, for docs/benchmarks.md: PP-OCRv4 det's text-mask
IoU, or (--model NAME) a classifier's output SQNR and top-1 agreement.

Runs the float model and one or more quantized ONNX models (kiln's `kiln quantize -o X.onnx`
QDQ output, or onnxruntime's own from tools/quant_assets.py) with onnxruntime on every
evaluation page, thresholds the probability map at the manifest's text threshold (0.3) and
reports the IoU of each int8 mask with the float mask: per page, the mean over pages and the
pooled IoU (sum of intersections / sum of unions), as tools/quant_assets.py does for
onnxruntime's models.

Each quantized model runs twice: graph optimizations disabled (QDQ executed literally, i.e.
exactly the arithmetic of kiln's interpreter) and enabled (onnxruntime's fused integer
kernels, which round slightly differently).

With --model NAME (a light model of the quant assets: shufflenet, squeezenet, resnet50) the
float reference is quant/models/NAME.float.onnx, the inputs the manifest's eval inputs, and
the metrics are the output SQNR (dB, all inputs pooled) and the share of inputs whose top-1
class matches float.

usage: quant_accuracy.py ASSETS_DIR MODEL.onnx [MODEL.onnx ...] [--model NAME] [--json OUT.json]
                    [--per-page]
       (ASSETS_DIR is KILN_ASSETS, e.g. /tmp/kiln-assets; the PP-OCR float reference is
       quant/models/ppocrv4_det.float.onnx, the pages quant/pages/eval/*.npy)
"""
import argparse
import glob
import json
import os
import sys

import numpy as np
import onnxruntime as ort


def session(path, optimized):
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def run_all(path, pages, optimized, squeeze=True):
    sess = session(path, optimized)
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: x})[0] for x in pages]
    return [o[0, 0] for o in outs] if squeeze else outs


def classifier_metrics(float_outs, int8_outs):
    signal = sum(float(np.sum(f.astype(np.float64) ** 2)) for f in float_outs)
    noise = sum(float(np.sum((f.astype(np.float64) - q) ** 2))
                for f, q in zip(float_outs, int8_outs))
    top1 = [int(np.argmax(f)) == int(np.argmax(q)) for f, q in zip(float_outs, int8_outs)]
    return {
        "sqnr_db": 10 * np.log10(signal / noise) if noise > 0 else float("inf"),
        "top1_agreement": float(np.mean(top1)),
        "inputs": len(top1),
    }


def classifier(args, quant_dir, manifest):
    entry = manifest["models"][args.model]
    inputs = [np.load(os.path.join(quant_dir, p)) for p in entry["eval_inputs"]]
    float_outs = run_all(os.path.join(quant_dir, entry["float_model"]), inputs, True, False)
    results = {"model": args.model, "models": {}}
    for path in args.models:
        per_mode = {}
        for mode, optimized in (("ort", False), ("ort_opt", True)):
            r = classifier_metrics(float_outs, run_all(path, inputs, optimized, False))
            per_mode[mode] = r
            print(f"{path} [{mode}]: output SQNR {r['sqnr_db']:.2f} dB, top-1 agreement "
                  f"{r['top1_agreement']:.3f} over {r['inputs']} inputs")
        results["models"][path] = per_mode
    return results


def iou(float_maps, int8_maps, threshold):
    inter_total, union_total, per_page = 0, 0, []
    for f, q in zip(float_maps, int8_maps):
        a, b = f > threshold, q > threshold
        inter, union = int(np.sum(a & b)), int(np.sum(a | b))
        inter_total += inter
        union_total += union
        per_page.append(inter / union if union else 1.0)
    return {
        "pooled": inter_total / union_total if union_total else 1.0,
        "mean_page": float(np.mean(per_page)),
        "min_page": float(min(per_page)),
        "per_page": per_page,
        "max_abs_prob": float(max(np.max(np.abs(f - q)) for f, q in zip(float_maps, int8_maps))),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("assets")
    parser.add_argument("models", nargs="+")
    parser.add_argument("--json", help="write the results as JSON here")
    parser.add_argument("--per-page", action="store_true", help="print every page's IoU")
    parser.add_argument("--model", default="ppocrv4_det",
                        help="which asset model the int8 models quantize (default ppocrv4_det)")
    args = parser.parse_args()

    quant_dir = os.path.join(args.assets, "quant")
    with open(os.path.join(quant_dir, "manifest.json")) as f:
        manifest = json.load(f)
    if args.model != "ppocrv4_det":
        results = classifier(args, quant_dir, manifest)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
        return
    threshold = manifest["text_prob_threshold"]
    entry = manifest["models"]["ppocrv4_det"]
    pages = [np.load(p) for p in sorted(glob.glob(os.path.join(quant_dir, "pages/eval/*.npy")))]
    if not pages:
        sys.exit(f"no evaluation pages under {quant_dir}/pages/eval")
    float_maps = run_all(os.path.join(quant_dir, entry["float_model"]), pages, optimized=True)

    results = {"threshold": threshold, "pages": len(pages), "models": {}}
    for path in args.models:
        per_mode = {}
        for mode, optimized in (("ort", False), ("ort_opt", True)):
            r = iou(float_maps, run_all(path, pages, optimized), threshold)
            per_mode[mode] = r
            print(f"{path} [{mode}]: IoU pooled {r['pooled']:.4f}, mean {r['mean_page']:.4f}, "
                  f"min page {r['min_page']:.4f}, max |Δp| {r['max_abs_prob']:.3f}")
            if args.per_page:
                print("  per page: " + " ".join(f"{v:.3f}" for v in r["per_page"]))
        results["models"][path] = per_mode
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
