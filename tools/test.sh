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

# One build for everything: the whole workspace in release (the heavy model suites need it,
# and building a second, debug-assertion profile of every dependency doubled CI time).
# KILN_VERIFY=1 keeps the self-checks a debug build would run: Cranelift's verifier on every
# generated function and the IR verifier after every optimizer pass.
export KILN_VERIFY=1
step "build every test binary (cargo test --workspace --release --no-run)"
cargo test --workspace --release --no-run

# Unit, snapshot and conformance tests, the proptest exactness suites, and the heavy
# suites: differential tests vs onnxruntime on real architectures; pre-quantized models
# (onnxruntime QDQ/QOperator) vs onnxruntime; realized models as JIT machine code vs the
# interpreter; every quantized model of the differential suite, JIT vs interpreter, integer
# tensors byte for byte (jit_exact); the optimizer vs onnxruntime (opt_ort); ahead-of-time
# objects for x86-64 and AArch64 (qemu) vs the JIT and interpreter (aot).
step "every test (cargo test --workspace --release)"
cargo test --workspace --release
