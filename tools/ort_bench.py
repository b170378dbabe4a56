"""onnxruntime side of `kiln bench --compare-ort` (embedded in the kiln binary and run with
the Python that has onnxruntime: $KILN_PYTHON, else python3).

Reads a JSON job written by kiln:

    {"model": PATH, "inputs": {NAME: NPY}, "calibration": [{NAME: NPY}, ...],
     "threads": N, "runs": N, "warmup": N, "int8_model": PATH}

and times, on the same inputs and thread count as kiln:

- `f32`: the model as given (for a model that is already quantized, this is onnxruntime's
  integer execution of it and no `int8` entry is produced);
- `int8`: `onnxruntime.quantization.quantize_static` of the model — QDQ format, per-channel
  int8 weights, u8 activations (onnxruntime's defaults), MinMax calibration on the given
  samples — written to `int8_model`.

Sessions use ORT_ENABLE_ALL graph optimizations, `intra_op_num_threads = threads`,
`inter_op_num_threads = 1`, sequential execution. Prints one JSON object on the last line of
stdout: {"versions": {...}, "f32": {"median_ms", "p90_ms", "runs"}, "int8": {...}}.
"""

import json
import math
import statistics
import sys
import time


def percentile(sorted_ms, q):
    """Nearest-rank percentile (the same rule kiln uses)."""
    k = max(0, min(len(sorted_ms) - 1, math.ceil(q / 100.0 * len(sorted_ms)) - 1))
    return sorted_ms[k]


def session(ort, path, threads):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def time_session(sess, feeds, runs, warmup):
    for _ in range(warmup):
        sess.run(None, feeds)
    ms = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, feeds)
        ms.append((time.perf_counter() - start) * 1e3)
    ms.sort()
    return {"median_ms": statistics.median(ms), "p90_ms": percentile(ms, 90), "runs": runs}


def is_quantized(model):
    ops = {n.op_type for n in model.graph.node}
    return bool(ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul"})


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    import numpy as np
    import onnx
    import onnxruntime as ort
    # quantize_static's inner sessions warn about every unused initializer; only errors matter here
    ort.set_default_logger_severity(3)
    from onnxruntime import quantization as q

    feeds = {name: np.load(path) for name, path in job["inputs"].items()}
    threads, runs, warmup = job["threads"], job["runs"], job["warmup"]
    result = {"versions": {"onnxruntime": ort.__version__, "onnx": onnx.__version__}}

    print(f"onnxruntime {ort.__version__}: f32 model", file=sys.stderr, flush=True)
    result["f32"] = time_session(session(ort, job["model"], threads), feeds, runs, warmup)

    if not is_quantized(onnx.load(job["model"], load_external_data=False)):
        samples = job["calibration"]

        class Reader(q.CalibrationDataReader):
            def __init__(self):
                self.it = iter(samples)

            def get_next(self):
                sample = next(self.it, None)
                return None if sample is None else {k: np.load(v) for k, v in sample.items()}

        print(
            f"onnxruntime quantize_static (QDQ, per-channel, {len(samples)} samples)",
            file=sys.stderr,
            flush=True,
        )
        q.quantize_static(
            job["model"],
            job["int8_model"],
            Reader(),
            quant_format=q.QuantFormat.QDQ,
            per_channel=True,
            activation_type=q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8,
            calibrate_method=q.CalibrationMethod.MinMax,
        )
        print("onnxruntime: int8 model", file=sys.stderr, flush=True)
        result["int8"] = time_session(
            session(ort, job["int8_model"], threads), feeds, runs, warmup
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
