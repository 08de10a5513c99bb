"""Answers before work: the wall time of ``actstore extract`` commands that should do nothing, each in a fresh
process (interpreter start and imports included, as a user waits for them), against the 3 s goal.

The cases: a misspelt model, a misspelt dataset, a run already in the store with another configuration
(``--limit`` changed), a run another process is writing (its lock held by this script), and a rerun of a
finished extraction (``already complete … wrote 0 tokens``). The store is built first, untimed, with
``--dataset django-ui --limit 5`` and the first packaged model installed (smollm2-135m, else gemma3-270m),
else a tiny random Llama (``--model tiny``). Each case is run ``--repeats`` times; the median is reported.

    python benchmarks/fast_answers.py [--model smollm2-135m|gemma3-270m|tiny|PATH] [--repeats 3] [--goal 3]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from activation_store.errors import ActstoreError
from activation_store.extract.packaged import PACKAGED
from activation_store.store import layout
from activation_store.store.lock import RunLock


def default_model() -> str:
    """The first packaged model whose package is installed, else ``tiny``."""
    for name in ("smollm2-135m", "gemma3-270m"):
        try:
            PACKAGED[name].gguf()
            return name
        except ActstoreError:
            continue
    return "tiny"


def tiny_model(folder: Path) -> str:
    """The tests' tiny random Llama, saved under ``folder`` (for machines without a packaged model)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import build_model, build_tokenizer

    tokenizer = build_tokenizer()
    path = folder / "tiny-llama"
    build_model("llama", len(tokenizer)).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return str(path)


def actstore(*args: str) -> tuple[float, int, str]:
    """``(wall seconds, exit code, first line of output)`` of ``actstore ARGS`` in a fresh process."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "activation_store", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    lines = (done.stdout + done.stderr).strip().splitlines()
    return seconds, done.returncode, lines[0] if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: smollm2-135m, else gemma3-270m, else tiny")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--goal", type=float, default=3.0, help="seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fast-answers-") as tmp:
        folder = Path(tmp)
        model = args.model or default_model()
        if model == "tiny":
            model = tiny_model(folder)
        store = str(folder / "acts.zarr")
        run = ["--model", model, "--dataset", "django-ui", "--store", store, "--quiet"]
        seconds, code, line = actstore("extract", *run, "--limit", "5")
        if code != 0:
            raise SystemExit(f"building the store failed: {line}")
        print(f"store built in {seconds:.1f} s: {line}")
        cases = {
            "unknown model": ["extract", "--model", "smollm2-153m", *run[2:]],
            "unknown dataset": ["extract", "--model", model, "--dataset", "django-iu", *run[4:]],
            "other configuration": ["extract", *run, "--limit", "4"],
            "being written": ["extract", *run, "--limit", "5"],
            "already complete": ["extract", *run, "--limit", "5"],
        }
        name = Path(model).name if Path(model).is_dir() else model
        print(f"{'case':<20} {'median':>7}  {'goal':>5}  answer")
        for case, command in cases.items():
            lock = RunLock(store, layout.run_path(name, "django-ui")).acquire() if case == "being written" else None
            try:
                timings = [actstore(*command) for _ in range(args.repeats)]
            finally:
                if lock is not None:
                    lock.release()
            median = statistics.median(t for t, _, _ in timings)
            verdict = "ok" if median <= args.goal else "OVER"
            print(f"{case:<20} {median:6.2f}s  {verdict:>5}  {timings[-1][2][:110]}")


if __name__ == "__main__":
    main()
