"""The analyses are one registry: each entry is an ``actstore analyze`` command with the shared options, and an
entry registered here (one record, nothing else) is a working command that writes its CSV, prints its table
and saves under the store, through the one runner."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from click.testing import CliRunner

import actstore
from activation_store.cli import cli
from activation_store.cli.analyze import printer
from activation_store.workflows.analysis import Analysis, Computed, Inputs, Param, RunOptions, Target
from activation_store.workflows.registry import analyses, register_analysis, unregister_analysis
from activation_store.workflows.results import load_from_store
from activation_store.workflows.runner import open_store, run_analysis

SHARED = ("--store", "--model", "--dataset", "--out", "--no-save", "--no-plot", "--endpoint-url", "--anon")
RUN_ONLY = ("--layers", "--scheduler", "--workers", "--memory-limit")
README_COMMANDS = ("similarity", "logit-lens", "languages", "colour-lens", "caption-lens", "intervention", "target",
                   "roles", "trajectories", "sweep")


def invoke(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_every_entry_is_a_command_with_the_shared_and_its_own_options():
    listed = invoke("analyze", "--help")
    assert listed.exit_code == 0
    assert set(README_COMMANDS) <= set(analyses()) | {"sweep"}
    for name, analysis in analyses().items():
        assert name in listed.output
        shown = invoke("analyze", name, "--help")
        assert shown.exit_code == 0, shown.output
        flags = [*SHARED, *(RUN_ONLY if analysis.reads_run else ()),
                 *(f for p in analysis.params for f in p.flag.split("/"))]
        missing = [f for f in flags if f not in shown.output]
        assert not missing, (name, missing)
        if not analysis.reads_run:
            assert "--layers" not in shown.output
        assert callable(printer(analysis)), name                # its terminal table resolves


def norms(inputs: Inputs, *, scale: float = 1.0) -> Computed:
    """Mean hidden-state norm per layer, times ``scale``: a new analysis in a few lines."""
    norm = np.sqrt((inputs.run.hidden.astype("float64") ** 2).sum("d_model")).mean("token").compute() * scale
    return Computed(xr.Dataset({"norm": norm}), f"norms-x{scale:g}")


NORMS = Analysis(
    name="layer-norms", help="Mean hidden-state norm per layer.", compute=norms,
    tables=lambda c: {c.name: c.result.norm.to_dataframe().reset_index()},
    printed=lambda report: print("norm per layer:", " ".join(f"{v:.2f}" for v in report.result.norm.values)),
    params=(Param("--scale", "scale", "Multiply the norms.", default=1.0, kind=float),))


@pytest.fixture(scope="module")
def store(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    data = root / "pairs.jsonl"
    data.write_text("\n".join(json.dumps({"id": f"i{k}", "en": f"the number {k}", "zh": f"第{k}"}) for k in range(4)),
                    encoding="utf-8")
    model_dir = tiny_model_dir("llama")
    actstore.extract(model=str(model_dir), dataset=str(data), store=str(root / "acts.zarr"), dtype="float32",
                     progress=False)
    return root / "acts.zarr", model_dir.name


@pytest.fixture
def registered():
    register_analysis(NORMS)
    yield NORMS
    unregister_analysis(NORMS.name)


def tree(path: Path) -> list[tuple[str, bytes]]:
    return sorted((str(p.relative_to(path)), p.read_bytes()) for p in path.rglob("*") if p.is_file())


def test_a_registered_entry_becomes_a_working_command(registered, store, tmp_path):
    url, model = store
    listed = invoke("analyze", "--help")
    assert "layer-norms" in listed.output
    done = invoke("analyze", "layer-norms", "--store", url, "--model", model, "--dataset", "pairs",
                  "--layers", "0,2", "--scale", "2", "--out", tmp_path)
    assert done.exit_code == 0, done.output
    assert "norm per layer:" in done.output and "saved under the store at results/" in done.output
    table = pd.read_csv(tmp_path / "norms-x2.csv")
    assert list(table.layer) == [0, 2] and (table.norm > 0).all()
    saved = load_from_store(str(url), model, "pairs", "norms-x2")
    np.testing.assert_allclose(saved.norm.values, table.norm.values)
    before = tree(url)
    again = invoke("analyze", "layer-norms", "--store", url, "--model", model, "--dataset", "pairs", "--no-save",
                   "--out", tmp_path / "unsaved")
    assert again.exit_code == 0 and "saved under" not in again.output, again.output
    assert (tmp_path / "unsaved" / "norms-x1.csv").exists() and tree(url) == before
    bad = invoke("analyze", "layer-norms", "--store", url, "--model", model, "--dataset", "pairs", "--scale", "x")
    assert bad.exit_code == 2 and "--scale" in bad.output


def test_the_runner_takes_one_open_store_and_does_not_reopen_it(registered, store, tmp_path, monkeypatch):
    url, model = store
    handle = open_store(str(url), None, RunOptions(tmp_path))
    opened, real = [], actstore.Store.open.__func__

    def spy(cls, location, *args, **kwargs):
        if not isinstance(location, actstore.Store):      # a new handle: a URL opened (again)
            opened.append(location)
        return real(cls, location, *args, **kwargs)

    monkeypatch.setattr(actstore.Store, "open", classmethod(spy))
    report = run_analysis("layer-norms", handle, Target(model, "pairs"), RunOptions(tmp_path, layers=[1]), scale=3)
    assert opened == [] and report.store_path.endswith("norms-x3") and report.result.sizes["layer"] == 1
    read_only = open_store(str(url), None, RunOptions(tmp_path, save=False))
    with pytest.raises(actstore.ActstoreError, match="read-only"):
        run_analysis(NORMS, read_only, Target(model, "pairs"), RunOptions(tmp_path))
    plain = run_analysis(NORMS, read_only, Target(model, "pairs"), RunOptions(tmp_path / "ro", save=False, plot=False))
    assert plain.store_path == "" and [p.name for p in plain.files] == ["norms-x1.csv"]
