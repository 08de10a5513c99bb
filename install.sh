#!/usr/bin/env bash
# Set up ./.venv with actstore and everything it needs, on a fresh machine.
# torch is pinned first: 2.13.0 is a CPU wheel on this machine's disk; a loose
# requirement installed first would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
pip_install() {  # quiet, minus this machine's notices about absent local package mirrors
  python -m pip install -q --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
pip_install --upgrade pip
pip_install torch==2.13.0
# setuptools warns in many lines that the actstore/ alias beside activation_store/ may shadow imports during
# an editable install; that folder is the alias itself, so the warning is silenced (by its message, nothing else)
PYTHONWARNINGS="ignore:Editable installation" pip_install -e '.[test]'
