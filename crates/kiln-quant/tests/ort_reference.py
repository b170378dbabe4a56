"""onnxruntime's quantization reference values for kiln-quant's tests (tests/ort_reference.rs).

Usage: python ort_reference.py REQUEST.json  — prints a JSON answer on stdout.

Requests:
- {"mode": "scale_zp", "cases": [{rmin, rmax, dtype: "u8"|"i8", symmetric, narrow, reduce_range,
  min_real_range}]}: onnxruntime's compute_scale_zp for each case (qmin/qmax from
  get_qmin_qmax_for_qType, except symmetric i8 without narrow range, which passes -128..127).
- {"mode": "calibrate", "dir": D, "shape": [..], "averaging_constant": c, "percentiles": [..]}:
  builds x -> Relu -> y, feeds the samples D/*.npy (sorted) one collect_data call each, and
  reports MinMaxCalibrater (plain and moving average), Entropy (2048 bins / 128), Percentile
  (2048 bins, symmetric and not) and Distribution (2048 bins) results, the collected histograms
  and every KL divergence the entropy search computed.
"""

import json
import os
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper

from onnxruntime.quantization import calibrate as ort_calibrate
from onnxruntime.quantization.calibrate import (
    CalibrationDataReader,
    DistributionCalibrater,
    EntropyCalibrater,
    MinMaxCalibrater,
    PercentileCalibrater,
)
from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType


def scale_zp(cases):
    out = []
    for c in cases:
        qtype = TensorProto.UINT8 if c["dtype"] == "u8" else TensorProto.INT8
        if c["dtype"] == "i8" and c["symmetric"] and not c["narrow"] and not c["reduce_range"]:
            qmin, qmax = np.array(-128, dtype=np.int8), np.array(127, dtype=np.int8)
        else:
            qmin, qmax = get_qmin_qmax_for_qType(qtype, reduce_range=c["reduce_range"], symmetric=c["symmetric"])
        zp, scale = compute_scale_zp(
            np.float32(c["rmin"]),
            np.float32(c["rmax"]),
            qmin,
            qmax,
            c["symmetric"],
            c["min_real_range"],
        )
        assert scale.dtype == np.float32, scale.dtype
        out.append({"qmin": int(qmin), "qmax": int(qmax), "scale": float(scale), "zero_point": int(zp)})
    return {"results": out}


class OneSample(CalibrationDataReader):
    """Yields one sample, so that each collect_data call sees exactly one (streaming)."""

    def __init__(self, x):
        self.items = [{"x": x}]

    def get_next(self):
        return self.items.pop() if self.items else None


class AllSamples(CalibrationDataReader):
    def __init__(self, samples):
        self.items = [{"x": s} for s in samples]

    def get_next(self):
        return self.items.pop(0) if self.items else None


def relu_model(path, shape):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "relu", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)


def pair(v):
    lo, hi = (np.asarray(v[0]).reshape(-1)[0], np.asarray(v[1]).reshape(-1)[0])
    assert lo.dtype == np.float32 and hi.dtype == np.float32, (lo.dtype, hi.dtype)
    return [float(lo), float(hi)]


def ranges(tensors_data):
    return {name: pair(td.range_value) for name, td in tensors_data.items()}


def histograms(calibrator):
    out = {}
    for name, h in calibrator.collector.histogram_dict.items():
        assert h[1].dtype == np.float32, h[1].dtype
        out[name] = {
            "counts": [int(c) for c in h[0]],
            "edges": [float(e) for e in h[1]],
            "min": float(h[2]),
            "max": float(h[3]),
        }
    return out


def streamed(make, samples, workdir, tag):
    calibrator = make(os.path.join(workdir, f"augmented_{tag}.onnx"))
    for s in samples:
        calibrator.collect_data(OneSample(s))
    return calibrator


def calibrate_all(req, workdir):
    files = sorted(f for f in os.listdir(req["dir"]) if f.endswith(".npy"))
    samples = [np.load(os.path.join(req["dir"], f)) for f in files]
    model = os.path.join(workdir, "relu.onnx")
    relu_model(model, req["shape"])
    answer = {}

    c = MinMaxCalibrater(model, augmented_model_path=os.path.join(workdir, "aug_minmax.onnx"))
    c.augment_graph()
    c.create_inference_session()
    c.collect_data(AllSamples(samples))
    answer["minmax"] = ranges(c.compute_data())

    def moving(path):
        m = MinMaxCalibrater(
            model, augmented_model_path=path, moving_average=True, averaging_constant=req["averaging_constant"]
        )
        m.augment_graph()
        m.create_inference_session()
        return m

    answer["moving_average"] = ranges(streamed(moving, samples, workdir, "ma").compute_data())

    def histogram_calibrator(cls, **kwargs):
        def make(path):
            h = cls(model, augmented_model_path=path, **kwargs)
            h.augment_graph()
            h.create_inference_session()
            return h

        return make

    # record every KL divergence onnxruntime computes, keyed by the candidate's length
    # (2i + 1, clipped at the bin count) which identifies it within one tensor
    recorded = []
    original_entropy = ort_calibrate.entropy

    def recording_entropy(pk, qk, *args, **kwargs):
        value = original_entropy(pk, qk, *args, **kwargs)
        recorded.append((len(pk), float(value)))
        return value

    original_threshold = ort_calibrate.HistogramCollector.get_entropy_threshold
    kl_by_tensor = []

    def recording_threshold(self, histogram, num_quantized_bins):
        recorded.clear()
        result = original_threshold(self, histogram, num_quantized_bins)
        kl_by_tensor.append(list(recorded))
        return result

    ort_calibrate.entropy = recording_entropy
    ort_calibrate.HistogramCollector.get_entropy_threshold = recording_threshold
    try:
        e = streamed(
            histogram_calibrator(EntropyCalibrater, num_bins=2048, num_quantized_bins=128), samples, workdir, "ent"
        )
        entropy_hists = histograms(e)
        data = e.compute_data()
    finally:
        ort_calibrate.entropy = original_entropy
        ort_calibrate.HistogramCollector.get_entropy_threshold = original_threshold
    answer["entropy"] = {
        "ranges": ranges(data),
        "histograms": entropy_hists,
        # compute_entropy iterates the histogram dict in order
        "kl": {name: kl for name, kl in zip(e.collector.histogram_dict.keys(), kl_by_tensor)},
    }

    answer["percentile"] = []
    for p in req["percentiles"]:
        for symmetric in (True, False):
            pc = streamed(
                histogram_calibrator(PercentileCalibrater, num_bins=2048, percentile=p, symmetric=symmetric),
                samples,
                workdir,
                f"pct{p}{symmetric}",
            )
            answer["percentile"].append(
                {
                    "percentile": p,
                    "symmetric": symmetric,
                    "ranges": ranges(pc.compute_data()),
                    "histograms": histograms(pc),
                }
            )

    d = streamed(histogram_calibrator(DistributionCalibrater, num_bins=2048), samples, workdir, "dist")
    dist = d.compute_data()
    answer["distribution"] = {
        name: {"range": pair(td.range_value), "avg": float(td.avg), "std": float(td.std)} for name, td in dist.items()
    }
    return answer


def main():
    with open(sys.argv[1]) as f:
        req = json.load(f)
    # the calibrators print progress on stdout: keep it for the answer only
    real_stdout = sys.stdout
    sys.stdout = sys.stderr
    try:
        if req["mode"] == "scale_zp":
            answer = scale_zp(req["cases"])
        elif req["mode"] == "calibrate":
            with tempfile.TemporaryDirectory() as workdir:
                answer = calibrate_all(req, workdir)
        else:
            raise ValueError(f"unknown mode {req['mode']!r}")
    finally:
        sys.stdout = real_stdout
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
