# Sourced by demo.sh and test.sh: make or reuse .venv and install torch before anything else.
# An unpinned torch would pull several GB of CUDA wheels; set TORCH_INDEX_URL (for example
# https://download.pytorch.org/whl/cpu) to choose a wheel index on machines that reach it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
# shellcheck source=scripts/_steps.sh
. scripts/_steps.sh
if ! python -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '${TORCH_SPEC#torch==}' else 1)" 2>/dev/null; then
  step "installing ${TORCH_SPEC} first (CPU wheel where one is available; the largest download)"
  pip_install "${TORCH_SPEC}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} || true
  python -c "import torch" 2>/dev/null || { echo "torch did not install" >&2; exit 1; }
  done_step
fi
