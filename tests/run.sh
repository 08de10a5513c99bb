#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs into ./.venv, then runs pytest.
# pytest's exit code 5 (no tests collected) is a failure here, never a silent pass.
set -uo pipefail
cd "$(dirname "$0")/.."
bash install.sh || exit 1
# spoken-words synthesises its clips with Debian's espeak-ng (~5 MB): install it where apt-get can; where it
# cannot, the tests that need it are skipped with that reason (pytest -ra lists them)
if ! command -v espeak-ng >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  as_root=""; [ "$(id -u)" -eq 0 ] || as_root="sudo -n"
  { $as_root apt-get install -y -qq espeak-ng >/dev/null 2>&1 \
      || { $as_root apt-get update -qq >/dev/null 2>&1 && $as_root apt-get install -y -qq espeak-ng >/dev/null 2>&1; }; } \
    || echo "tests/run.sh: could not install espeak-ng; the spoken-words tests will be skipped" >&2
fi
. .venv/bin/activate
export HF_HUB_OFFLINE=1
python -m pytest -ra --durations=15 "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "tests/run.sh: pytest collected no tests — failing" >&2
  exit 1
fi
exit "$rc"
