"""Answers before work: a misspelt model or dataset, a run made with another configuration, a run another
process writes and a finished rerun are settled before torch or transformers is imported (extract/early.py),
and say exactly what the full plan would have said. Not timed: benchmarks/fast_answers.py measures them."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

import actstore
from activation_store.errors import ActstoreError, ConfigConflictError
from activation_store.extract import campaign
from activation_store.store import layout
from activation_store.store.lock import RunLock

# The command's own main() in a fresh interpreter, then which heavy modules it imported (the last line).
PROBE = """
import json, sys
from activation_store.cli import main
sys.argv = ["actstore", *sys.argv[1:]]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
print(json.dumps({"code": code, "heavy": sorted(m for m in ("torch", "transformers") if m in sys.modules)}))
"""


def probe(*args: object) -> tuple[dict, str, str]:
    """``(exit code and heavy imports, stdout before them, stderr)`` of ``actstore ARGS`` in a fresh process."""
    done = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True, timeout=300)
    lines = done.stdout.splitlines()
    assert lines, done.stderr
    return json.loads(lines[-1]), "\n".join(lines[:-1]), done.stderr


def untimed(line: str) -> str:
    return re.sub(r"; [\d.]+ s total.*", "", line)


@pytest.fixture(scope="module")
def finished(tiny_model_dir, tmp_path_factory) -> dict:
    """A store holding one finished run of the tiny Llama (3 items of the arithmetic set), and how it was made."""
    from conftest import write_pairs

    folder = tmp_path_factory.mktemp("fast")
    model, data, store = tiny_model_dir("llama"), write_pairs(folder), folder / "acts.zarr"
    actstore.extract(str(model), str(data), str(store), limit=3, batch_size=2, device="cpu", progress=False)
    selection = folder / "selection.jsonl"  # another run of the same model: a layer and position selection
    selection.write_bytes(data.read_bytes())
    actstore.extract(str(model), str(selection), str(store), limit=3, batch_size=2, device="cpu", progress=False,
                     layers="0,2", positions="last")
    return {"model": model, "data": data, "selection": selection, "store": store,
            "args": ["extract", "--model", model, "--dataset", data, "--store", store, "--limit", "3",
                     "--batch-size", "2", "--quiet"]}


def test_unknown_model_is_refused_without_torch(tmp_path):
    seen, out, err = probe("extract", "--model", "gemma3-27om", "--dataset", "django-ui", "--store", tmp_path / "s.zarr")
    assert seen == {"code": 2, "heavy": []}
    assert err.startswith("actstore: error: unknown model 'gemma3-27om'; known names: gemma3-270m")
    assert not (tmp_path / "s.zarr").exists()


def test_unknown_dataset_is_refused_without_torch(tmp_path):
    seen, out, err = probe("extract", "--model", "gemma3-270m", "--dataset", "djnago-ui", "--store", tmp_path / "s.zarr")
    assert seen == {"code": 2, "heavy": []}
    assert err.startswith("actstore: error: unknown dataset 'djnago-ui'")


def test_finished_rerun_is_complete_without_torch(finished):
    seen, out, err = probe(*finished["args"])
    assert seen == {"code": 0, "heavy": []}, err
    assert out.startswith(f"already complete: {finished['model'].name}/pairs in {finished['store']}")
    assert "wrote 0 tokens" in out
    seen, out, err = probe(*finished["args"][:4], finished["selection"], *finished["args"][5:], "--layers", "0,2",
                           "--positions", "last")
    assert seen == {"code": 0, "heavy": []}, err  # the layer count comes from the store's model group
    assert "× 2 layers; wrote 0 examples" in out


def test_other_configuration_is_refused_without_torch(finished):
    before = sorted(p.stat().st_mtime_ns for p in finished["store"].rglob("*") if p.is_file())
    seen, out, err = probe(*finished["args"][:-4], "2", "--batch-size", "2")
    assert seen == {"code": 2, "heavy": []}
    assert "made with a different configuration (dataset_checksum, limit differ); pass --overwrite" in err
    assert sorted(p.stat().st_mtime_ns for p in finished["store"].rglob("*") if p.is_file()) == before


def test_run_another_process_writes_is_refused_without_torch(finished):
    lock = RunLock(str(finished["store"]), layout.run_path(finished["model"].name, "pairs")).acquire()
    try:
        seen, out, err = probe(*finished["args"])
    finally:
        lock.release()
    assert seen == {"code": 2, "heavy": []}
    assert "is being written by" in err


def _without_early(monkeypatch) -> None:
    monkeypatch.setattr(campaign, "answer_early", lambda *args: None)


@pytest.mark.parametrize("data, options", [("data", {}), ("selection", {"layers": "0,2", "positions": "last"})],
                         ids=["all", "selection"])
def test_early_answer_is_the_plans_answer(finished, monkeypatch, data, options):
    """The same line, with or without the early answer (the plan's: tokenizer read, every example tokenized)."""
    common = dict(limit=3, batch_size=2, device="cpu", progress=False, **options)
    early = actstore.extract(str(finished["model"]), str(finished[data]), str(finished["store"]), **common)
    _without_early(monkeypatch)
    planned = actstore.extract(str(finished["model"]), str(finished[data]), str(finished["store"]), **common)
    assert early.status == planned.status == "already complete"
    assert untimed(early.summary()) == untimed(planned.summary())


def test_early_refusal_is_the_plans_refusal(finished, monkeypatch):
    def refusal() -> str:
        with pytest.raises(ConfigConflictError) as caught:
            actstore.extract(str(finished["model"]), str(finished["data"]), str(finished["store"]), limit=3,
                             batch_size=4, device="cpu", progress=False)
        return str(caught.value)

    early = refusal()
    _without_early(monkeypatch)
    assert refusal() == early and "(batch_size differ)" in early


def test_a_layer_the_model_lacks_is_refused_early(finished):
    with pytest.raises(ActstoreError, match="layer"):
        actstore.extract(str(finished["model"]), str(finished["selection"]), str(finished["store"]), limit=3,
                         batch_size=2, device="cpu", progress=False, layers="0,9", positions="last")


def test_work_to_do_goes_to_the_plan(finished, tmp_path):
    """A run not in the store yet, or --overwrite: no early answer, the run is written."""
    fresh = tmp_path / "fresh.jsonl"
    fresh.write_bytes(finished["data"].read_bytes())
    result = actstore.extract(str(finished["model"]), str(fresh), str(finished["store"]), limit=2,
                              batch_size=2, device="cpu", progress=False, variants=["en"])
    assert result.status == "written" and result.tokens_written > 0
    again = actstore.extract(str(finished["model"]), str(fresh), str(finished["store"]), limit=2,
                             batch_size=2, device="cpu", progress=False, variants=["en"], overwrite=True)
    assert again.status == "written" and again.tokens_written == result.tokens_written


def test_model_checksum_is_the_plans_without_transformers(finished):
    """What the early check compares is what the plan records, read from the files alone."""
    from activation_store.extract.models import plan_model

    code = ("import json, sys; from activation_store.extract.model_names import model_checksum; "
            "print(json.dumps([*model_checksum(sys.argv[1]), 'torch' in sys.modules or 'transformers' in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code, str(finished["model"])], capture_output=True, text=True,
                          timeout=120)
    name, checksum, heavy = json.loads(done.stdout)
    planned = plan_model(str(finished["model"]))
    assert (name, checksum, heavy) == (planned.name, planned.checksum, False)
