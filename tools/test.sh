#!/usr/bin/env bash
# kiln's whole test suite, from a fresh clone: installs the pinned Python tools the tests need
# (into .venv), prepares the test assets (ONNX node tests, realistic-weight models with
# onnxruntime reference outputs), then runs every test. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

PY_PACKAGES=(onnx==1.23.2 onnxruntime==1.31.1 numpy pillow==13.0.0)
ASSETS="${KILN_ASSETS:-$PWD/target/kiln-assets}"

step() { printf '\n== %s\n' "$*"; }

step "python tools (.venv: ${PY_PACKAGES[*]})"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import onnx, onnxruntime, numpy, PIL, sys; sys.exit(0 if (onnx.__version__, onnxruntime.__version__, PIL.__version__) == ("1.23.2", "1.31.1", "13.0.0") else 1)' 2>/dev/null; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
fi

step "test assets -> $ASSETS"
.venv/bin/python tools/prepare_assets.py "$ASSETS"
# Quantization assets render text pages with the DejaVu fonts (Debian: fonts-dejavu-core).
if [ ! -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
  apt-get update -qq && apt-get install -y -qq fonts-dejavu-core
fi
.venv/bin/python tools/quant_assets.py "$ASSETS"
export KILN_ASSETS="$ASSETS"
export KILN_PYTHON="$PWD/.venv/bin/python"

# Ahead-of-time objects are linked for x86-64 and AArch64 and run under qemu (tests/aot.rs).
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  apt-get update -qq && apt-get install -y -qq gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu qemu-user
fi

step "unit, snapshot and conformance tests (cargo test --workspace)"
cargo test --workspace

step "differential tests vs onnxruntime on real architectures (release)"
cargo test --release -p kiln-cli --test differential

step "pre-quantized models (onnxruntime QDQ/QOperator) vs onnxruntime (release)"
cargo test --release -p kiln-cli --test prequantized

step "realized models as JIT machine code vs the interpreter (release)"
cargo test --release -p kiln-runtime --test models

step "every quantized model of the differential suite: JIT vs interpreter, integer tensors byte for byte (release)"
cargo test --release -p kiln-cli --test jit_exact

step "optimizer vs onnxruntime: kiln opt -O1 -o model.onnx on real architectures (release)"
cargo test --release -p kiln-cli --test opt_ort

step "ahead-of-time objects for x86-64 and AArch64 (qemu) vs the JIT and interpreter (release)"
cargo test --release -p kiln-cli --test aot
