#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs into ./.venv, then runs pytest.
# pytest's exit code 5 (no tests collected) is a failure here, never a silent pass.
set -uo pipefail
cd "$(dirname "$0")/.."
bash install.sh || exit 1
. .venv/bin/activate
export HF_HUB_OFFLINE=1
python -m pytest -ra --durations=15 "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "tests/run.sh: pytest collected no tests — failing" >&2
  exit 1
fi
exit "$rc"
