"""The reproduction report's pieces without a store: the table of experiments, the verdict rules, the step
guard, the markdown of a made-up run, the old import paths, and the package's size limits."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from activation_store.errors import ActstoreError
from activation_store.workflows import reproduction as rep
from activation_store.workflows.reproduction.verdicts import with_end

PACKAGE = Path(rep.__file__).parent


def rows(values, lows, highs, model="m", lens="normed", series="s"):
    return rep.layer_rows(model, lens, series, np.arange(len(values)), values, lows, highs)


def test_table_of_experiments():
    keys = [e.claim.key for e in rep.EXPERIMENTS]
    assert len(keys) == len(set(keys)) == 12 and keys[0] == "multilingual-similarity" and keys[-1] == "interventions"
    for entry in rep.EXPERIMENTS:
        claim = entry.claim
        assert claim.title and claim.paper and claim.measure and callable(entry.step)
        assert rep.experiment(claim.key) is entry
    with pytest.raises(KeyError, match="no experiment 'nope'"):
        rep.experiment("nope")


def test_step_guard_and_notes():
    ctx = rep.Context("unused", {"main": "m"}, Path("w"), Path("f"), Path("d"))

    def stops(ctx, f):
        f.models.append("m")
        raise ActstoreError("no annotated positions")

    def fills(ctx, f):
        f.verdict, f.why = "reproduced", "because"
    claim = rep.Claim("k", "T", "paper", "measure", dataset="code")
    stopped = rep.Experiment(claim, stops, notes=("n",))(ctx)
    assert (stopped.verdict, stopped.why, stopped.notes, stopped.models) == (
        "not run", "the analysis stopped: no annotated positions", [], ["m"])
    assert rep.Experiment(claim, stops, notes=("n",), notes_always=True)(ctx).notes == ["n"]
    done = rep.Experiment(claim, fills, notes=("n",))(ctx)
    assert (done.verdict, done.notes, done.dataset, done.lens) == ("reproduced", ["n"], "code", "—")
    assert list(rep.Context("s", {"main": "a", "code": "b"}, *[Path(".")] * 3).present(("main", "control"))) == [
        ("main", "a")]


def test_verdict_rules():
    nan = [np.nan] * 5
    mid = rows([0.1, 0.2, 0.5, 0.2, 0.0], [0.0, -0.1, 0.3, -0.1, -0.1], [0.2, 0.5, 0.7, 0.5, 0.1])
    verdict, why = rep.middle_verdict(mid, +1, "x")
    assert verdict == "reproduced" and "1 of 3 middle layers" in why and "layer 2 (50%)" in why
    embedded = mid.assign(value=[0.9, 0.2, 0.5, 0.2, 0.0])
    assert rep.middle_verdict(embedded, +1, "x", beyond_embeddings=True)[0] == "partly"
    late = rows([0, 0, 0, 0, 0.4], [-1, -1, -1, -1, 0.2], [1, 1, 1, 1, 0.6])
    assert rep.middle_verdict(late, +1, "x") == ("partly", "x > 0 only outside the middle layers (layer 4 (100%): "
                                                          "+0.400 [+0.200, +0.600])")
    flat = rows([0.0] * 5, nan, nan)
    assert rep.middle_verdict(flat, -1, "x")[0] == "not reproduced at this scale"
    assert with_end(("reproduced", "w"), mid, -1) == ("partly", "w; at the last layer +0.000 (not as expected)")
    assert with_end(("reproduced", "w"), mid, None) == ("reproduced", "w")
    assert rep.combine([("raw", "partly", "a"), ("normed", "reproduced", "b")]) == (
        "reproduced", "raw lens: partly — a; normed lens: reproduced — b")


def test_markdown_of_a_made_up_run(tmp_path):
    finding = rep.Finding("k", "A title, with (punctuation)", "paper", "measure", models=["m"], dataset="code",
                          table=rows([0.1, 0.2, 0.5, 0.2, 0.0], [np.nan] * 5, [np.nan] * 5),
                          verdict="partly", why="why", notes=["a note"], included="# Sub\ntext")
    run = rep.ReproductionRun([finding], {"main": "m"}, [{"model": "m", "dataset": "code", "variants": "all",
                                                           "limit": None, "seconds": 1.0}], {"code": None}, "s.zarr")
    text = rep.write_report(run, tmp_path / "docs" / "reproduction.md", "actstore report").read_text(encoding="utf-8")
    assert "In progress: 1 of 12 experiments so far." in text
    assert "| [A title, with (punctuation)](#a-title-with-punctuation) | partly | — |" in text
    assert "**Verdict: partly.** why" in text and "- Note: a note" in text and "### Sub" in text
    assert "| normed | s | +0.100 | +0.200 | +0.500 | +0.200 | +0.000 |" in text
    assert "| m | code | all | all | 1.0 |" in text and "```bash\nactstore report\n```" in text


def test_options_refused_before_anything_is_written(tmp_path):
    store = tmp_path / "never.zarr"
    with pytest.raises(ActstoreError, match="--bootstrap must be at least 1"):
        rep.reproduce(str(store), tmp_path / "docs", rep.ReportOptions(n_boot=0))
    with pytest.raises(ActstoreError, match="--lens-layer-step must be at least 1"):
        rep.reproduce(str(store), tmp_path / "docs", lens_step=0)
    with pytest.raises(TypeError):
        rep.reproduce(str(store), tmp_path / "docs", bootstrap=10)
    assert not store.exists() and not (tmp_path / "docs").exists()


def test_old_import_paths():
    from activation_store.workflows import report, report_markdown

    assert report.EXPERIMENTS is rep.EXPERIMENTS and report.reproduce is rep.reproduce
    assert report.Finding is rep.Finding and report.parse_limits is rep.parse_limits
    assert report_markdown.write_report is rep.write_report and report_markdown.render is rep.render


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_package_sizes(path):
    source = path.read_text(encoding="utf-8")
    assert len(source.splitlines()) <= 350
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            assert node.end_lineno - node.lineno < 60, node.name
            assert len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs) <= 8, node.name
