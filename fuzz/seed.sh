#!/usr/bin/env bash
# Recreate the fuzz seed corpora in fuzz/corpus/<target>/ from files a clone has (tests/kir,
# tests/opt, tests/quant, passes, tests/bad-models) plus a small selection of ONNX node-test
# models from $KILN_ASSETS (tools/prepare_assets.py writes them; default target/kiln-assets)
# and a few .npy arrays written by Python/numpy ($KILN_PYTHON, default python3).
# Idempotent: existing corpus files (seeds and what fuzzing added) are kept.
set -euo pipefail
# KILN_ASSETS may be relative to where the script was started from
assets=$(realpath -m "${KILN_ASSETS:-$(dirname "$0")/../target/kiln-assets}")
cd "$(dirname "$0")"
root=..
python=${KILN_PYTHON:-python3}
corpus=corpus
mkdir -p $corpus/onnx_import $corpus/kir_text $corpus/rules $corpus/npy $corpus/pipeline

# .kir: the dump-snapshot inputs and the optimizer / quantizer test graphs.
cp $root/tests/kir/*.kir $root/tests/opt/*.kir $root/tests/quant/*.kir $corpus/kir_text/

# Rule files and the pipelines file.
cp $root/passes/*.rules $root/passes/pipelines.sexp $corpus/rules/

# .npy: the malformed ones of the bad-model corpus, plus one well-formed array per dtype.
cp $root/tests/bad-models/*.npy $corpus/npy/
if "$python" -c 'import numpy' 2>/dev/null; then
    "$python" - "$corpus/npy" <<'PY'
import sys, numpy as np
out = sys.argv[1]
rng = np.random.default_rng(0)
arrays = {
    "f32_2x3": rng.standard_normal((2, 3)).astype("<f4"),
    "f16_4": rng.standard_normal(4).astype("<f2"),
    "i8_3x1x2": rng.integers(-128, 127, (3, 1, 2)).astype("i1"),
    "u8_5": rng.integers(0, 255, 5).astype("u1"),
    "i32_scalar": np.array(7, dtype="<i4"),
    "i64_2x2": np.arange(4, dtype="<i8").reshape(2, 2),
    "bool_3": np.array([True, False, True]),
    "f32_empty_0x4": np.zeros((0, 4), dtype="<f4"),
}
for name, a in arrays.items():
    np.save(f"{out}/{name}.npy", a)
np.savez(f"{out}/two_arrays.npz", a=arrays["f32_2x3"], b=arrays["i64_2x2"])
PY
else
    echo "seed.sh: $python has no numpy; .npy seeds are only the bad-model ones" >&2
fi

# ONNX: a few dozen small node-test models covering the op families kiln imports
# (the full 1,884-case set would mostly repeat itself). Both ONNX targets share them.
onnx_cases=(
    test_conv_with_strides_padding test_conv_with_autopad_same test_convtranspose
    test_matmul_2d test_gemm_all_attributes test_relu test_leakyrelu test_sigmoid test_clip
    test_add_bcast test_mul_bcast test_maxpool_2d_pads test_averagepool_2d_strides
    test_globalaveragepool test_batchnorm_example test_softmax_axis_1 test_concat_2d_axis_0
    test_resize_upsample_scales_nearest test_resize_downsample_scales_linear
    test_quantizelinear test_dequantizelinear test_qlinearconv test_qlinearmatmul_2D_uint8_float32
    test_reshape_reordered_all_dims test_transpose_default test_slice test_constant_pad
    test_flatten_axis1 test_squeeze test_unsqueeze_axis_0 test_reduce_mean_default_axes_keepdims_example
    test_shape test_constantofshape_int_zeros test_range_float_type_positive_delta
)
if [ -d "$assets/node" ]; then
    for case in "${onnx_cases[@]}"; do
        model=$assets/node/$case/model.onnx
        if [ -f "$model" ]; then
            cp "$model" $corpus/onnx_import/$case.onnx
            cp "$model" $corpus/pipeline/$case.onnx
        else
            echo "seed.sh: no $model (skipped)" >&2
        fi
    done
else
    echo "seed.sh: $assets/node missing (run tools/prepare_assets.py); ONNX seeds are only the bad models" >&2
fi
# The malformed-model corpus is a good start for the importer.
cp $root/tests/bad-models/*.onnx $corpus/onnx_import/
for d in $corpus/*; do echo "$d: $(ls "$d" | wc -l) seeds"; done
