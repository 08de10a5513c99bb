#!/usr/bin/env bash
# Set up ./.venv with actstore and everything it needs, on a fresh machine.
# torch is pinned first: 2.13.0 is a CPU wheel on this machine's disk; a loose
# requirement installed first would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q --disable-pip-version-check --upgrade pip
python -m pip install -q --disable-pip-version-check torch==2.13.0
python -m pip install -q --disable-pip-version-check -e '.[test]'
