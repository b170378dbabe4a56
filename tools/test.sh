#!/usr/bin/env bash
# kiln's whole test suite, from a fresh clone: installs the pinned Python tools the tests need
# (into .venv), prepares the test assets (ONNX node tests, realistic-weight models with
# onnxruntime reference outputs), then runs every test. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

PY_PACKAGES=(onnx==1.23.2 onnxruntime==1.31.1 numpy)
ASSETS="${KILN_ASSETS:-$PWD/target/kiln-assets}"

step() { printf '\n== %s\n' "$*"; }

step "python tools (.venv: ${PY_PACKAGES[*]})"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import onnx, onnxruntime, numpy, sys; sys.exit(0 if (onnx.__version__, onnxruntime.__version__) == ("1.23.2", "1.31.1") else 1)' 2>/dev/null; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
fi

step "test assets -> $ASSETS"
.venv/bin/python tools/prepare_assets.py "$ASSETS"
export KILN_ASSETS="$ASSETS"
export KILN_PYTHON="$PWD/.venv/bin/python"

step "unit, snapshot and conformance tests (cargo test --workspace)"
cargo test --workspace

step "differential tests vs onnxruntime on real architectures (release)"
cargo test --release -p kiln-cli --test differential

step "optimizer vs onnxruntime: kiln opt -O1 -o model.onnx on real architectures (release)"
cargo test --release -p kiln-cli --test opt_ort
