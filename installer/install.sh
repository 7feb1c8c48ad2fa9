#!/bin/sh
# Install the GANPaint plug-in into GIMP 3 (idempotent). Same options as `python -m installer`:
#   installer/install.sh                 install for this user
#   installer/install.sh --check         diagnose GIMP -> plug-in -> Python modules -> server
#   installer/install.sh --uninstall     remove it
# Uses $PYTHON, else python3 (an activated virtual environment's, if any).
set -e
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" -m installer "$@"
