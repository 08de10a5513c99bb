"""The reproduction report end to end on a tiny random model: every experiment's section, its figures,
numbers from the store; and the report's bad inputs."""
from __future__ import annotations

import re

import matplotlib.image
import pytest

from activation_store.errors import ActstoreError
from activation_store.workflows.reproduction import EXPERIMENTS, parse_limits, resolve_models
from activation_store.workflows.results import load_from_store

TITLES = ["Multilingual similarity", "Multilingual logit lens", "Language trends", "Arithmetic logit lens",
          "Arithmetic similarity", "Arithmetic PCA", "Code logit lens", "Code semantic-role lens",
          "Code ↔ description similarity", "COGS similarity", "COGS semantic-role lens", "Interventions"]


def test_report_tiny_model_end_to_end(tiny_model_dir, tmp_path, cli):
    model = tiny_model_dir("llama")
    store, docs = tmp_path / "grid.zarr", tmp_path / "docs"
    (docs).mkdir()
    (docs / "interventions.md").write_text("# Steering sweeps\n\nrandom-vector control: no effect\n", encoding="utf-8")
    done = cli("report", "--store", store, "--models", f"{model},{model},{model}", "--limit", "2", "--docs", docs,
               "--bootstrap", "20", "--lens-layer-step", "2")
    assert done.returncode == 0, done.stderr
    text = (docs / "reproduction.md").read_text(encoding="utf-8")
    sections = re.findall(r"^## (.+)$", text, flags=re.M)
    assert len(sections) == len(EXPERIMENTS) == len(TITLES)
    for title, section in zip(TITLES, sections):
        assert section.startswith(title), (title, section)
    verdicts = re.findall(r"^\*\*Verdict: (.+?)\.\*\*", text, flags=re.M)
    assert len(verdicts) == len(TITLES)
    assert all(v in ("reproduced", "partly", "not reproduced at this scale", "not run", "see below") for v in verdicts)
    assert re.search(r"^### Steering sweeps$", text, flags=re.M)                  # included two levels down
    # every figure the report links exists and is a real PNG; the similarity and lens sections have theirs
    linked = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", text)
    assert len(linked) >= 10
    for path in linked:
        assert matplotlib.image.imread(docs / path).ndim == 3
    assert {"figures/multilingual-similarity-main.png", "figures/cogs-similarity.png", "figures/cogs-roles-raw.png",
            "figures/arithmetic-lens-normed.png", "figures/arithmetic-lens-raw.png"} <= set(linked)
    # the numbers are the analyses' own, saved under the store
    saved = load_from_store(str(store), model.name, "semantics", "similarity-last-centered-baseline-form-swapped")
    first = f"{float(saved.score.isel(layer=0)):+.3f} [{float(saved.ci_low.isel(layer=0)):+.3f}, "
    assert first in text.split("## COGS similarity")[1].split("## ")[0]
    arithmetic = text.split("## Arithmetic logit lens")[1].split("## ")[0]
    assert "| raw |" in arithmetic and "| normed |" in arithmetic
    assert "layer 1 (33%)" not in arithmetic and "layer 2 (67%)" in arithmetic    # --lens-layer-step 2: 0, 2, 3
    assert "read one layer in 2" in text and "In progress" not in text


def test_report_bad_inputs(tmp_path, cli):
    with pytest.raises(ActstoreError, match="1 to 3 models"):
        resolve_models(["a", "b", "c", "d"])
    with pytest.raises(ActstoreError, match="unknown dataset 'nope'"):
        parse_limits("nope=3")
    with pytest.raises(ActstoreError, match="at least 2"):
        parse_limits("1")
    assert parse_limits("code=5")["code"] == 5 and parse_limits(4) == dict.fromkeys(parse_limits(None), 4)
    store = tmp_path / "untouched.zarr"
    for args, message in ((["--limit", "code=x"], "--limit takes N or DATASET=N"),
                          (["--models", "a,b,c,d"], "1 to 3 models"),
                          (["--bootstrap", "0"], "--bootstrap must be at least 1"),
                          (["--lens-layer-step", "0"], "--lens-layer-step must be at least 1")):
        done = cli("report", "--store", store, "--docs", tmp_path / "docs", *args)
        assert done.returncode == 2 and done.stderr.startswith(f"actstore: error: ") and message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert not store.exists() and not (tmp_path / "docs").exists()      # refused before anything was written
