#!/usr/bin/env python3
"""Write the ONNX backend node conformance tests from the case generators in the onnx wheel.

The onnx wheel (1.23.x) ships the generators (onnx/backend/test/case/node/*.py) but not the data.
This writes OUT/node/<case>/model.onnx and test_data_set_N/{input,output}_K.pb (TensorProto),
the layout every ONNX backend test runner (and kiln's tests/conformance.rs) reads. K is the index
of the value among the model's graph inputs / outputs. About 1,900 cases in ~15 s.

Values that are not tensors (sequences, maps, optionals) have no TensorProto form and are not
written; such cases use ops outside kiln's op set, so the conformance runner never reads them.

usage: gen_onnx_node_tests.py OUT
"""
import os
import shutil
import sys
import warnings

import numpy as np
from onnx import TensorProto, numpy_helper


def tensor_proto(value, name):
    """The TensorProto for one test value, or None when the value is not a tensor."""
    if isinstance(value, TensorProto):
        # Generators hand over TensorProtos for dtypes numpy cannot hold (float8, int4, ...).
        t = TensorProto()
        t.CopyFrom(value)
        t.name = name
        return t
    if not isinstance(value, np.ndarray) and not np.isscalar(value):
        return None
    try:
        return numpy_helper.from_array(np.asarray(value), name)
    except (TypeError, ValueError):
        return None


def write_case(case, case_dir):
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
        f.write(case.model.SerializeToString())
    skipped = 0
    for set_index, (inputs, outputs) in enumerate(case.data_sets):
        set_dir = os.path.join(case_dir, f"test_data_set_{set_index}")
        os.makedirs(set_dir)
        for kind, values, decls in (
            ("input", inputs, case.model.graph.input),
            ("output", outputs, case.model.graph.output),
        ):
            for k, value in enumerate(values):
                t = tensor_proto(value, decls[k].name)
                if t is None:
                    skipped += 1
                    continue
                with open(os.path.join(set_dir, f"{kind}_{k}.pb"), "wb") as f:
                    f.write(t.SerializeToString())
    return skipped


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    out_node = os.path.join(argv[1], "node")
    # Many generators draw from numpy's global RNG without seeding it: seed it so that two runs
    # write byte-identical cases (a failure seen once reproduces).
    np.random.seed(0)
    with warnings.catch_warnings():
        # Some generators overflow on purpose (saturating casts, log(0)); that is their point.
        warnings.simplefilter("ignore")
        import onnx.backend.test.case.node as node_cases

        cases = node_cases.collect_testcases(None)
    os.makedirs(out_node, exist_ok=True)
    non_tensor_values = 0
    for case in cases:
        non_tensor_values += write_case(case, os.path.join(out_node, case.name))
    print(
        f"{len(cases)} node cases written to {out_node} "
        f"({non_tensor_values} non-tensor values not written)"
    )


if __name__ == "__main__":
    main(sys.argv)
