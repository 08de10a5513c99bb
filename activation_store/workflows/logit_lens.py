"""The logit lens as one registered analysis: the runner opens the run and its lens head, this reads out
(with each target's log-prob per layer where targets are given), and says which tables and figures it makes."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import xarray as xr

from ..analyze.lens_readout import logit_lens, target_summary
from ..analyze.targets import RULES, from_file, from_rule
from ..store import Store
from .analysis import Analysis, Computed, Inputs, Param, RunOptions, Target
from .params import LENS, one_modality
from .registry import register_analysis
from .results import Report, file_name, png_path
from .runner import run_at

COLUMNS = ["layer", "token", "position", "rank", "top_id", "top_token", "top_prob"]
_PER_TARGET = ("target_id", "target_logprob", "target_rank", "mean_logprob", "ci_low", "ci_high")


def _targets(spec: str | None, ds: xr.Dataset, lens: xr.Dataset) -> xr.DataArray | None:
    if spec is None:
        return None
    return from_rule(spec, ds, lens) if spec in RULES else from_file(spec, ds, lens)


def compute(inputs: Inputs, *, example: int | None = None, variant: str | None = None, item: str | None = None,
            targets: str | None = None, k: int = 5, lens_mode: str = "normed", modality: str | None = None) -> Computed:
    """Logit lens over one example (a Figure-1 table and heatmap) or over all examples of a variant/item;
    ``targets`` (a rule name or a targets file) adds each target's log-prob per layer with a 95% interval.
    ``lens_mode`` raw (the paper's lens, no final norm on inner layers) saves under a ``-raw`` name;
    ``modality`` keeps only the text, image or audio tokens of the selection."""
    ds, lens = inputs.run, inputs.lens
    target_ids = _targets(targets, ds, lens)
    result = logit_lens(ds, lens, example=example, variant=variant, item=item, targets=target_ids, k=k, mode=lens_mode,
                        modality=modality)
    name = f"logit-lens-{result.attrs['selection']}" + ("-raw" if lens_mode == "raw" else "")
    parts = {}
    if target_ids is not None:
        summary = parts["targets"] = target_summary(result)
        result["mean_logprob"], result["ci_low"], result["ci_high"] = summary.mean_logprob, summary.ci_low, summary.ci_high
    return Computed(result, name, stored=result.drop_vars(["top_token"]), parts=parts)


def tables(computed: Computed) -> dict[str, pd.DataFrame]:
    """Top tokens per layer, position and rank; and the per-layer target summary where targets were given."""
    result = computed.result
    frame = result.drop_vars([v for v in _PER_TARGET if v in result]).to_dataframe().reset_index()[COLUMNS]
    found = {computed.name: frame}
    if "targets" in computed.parts:
        found[f"{computed.name}-targets"] = computed.parts["targets"].to_dataframe().reset_index()
    return found


def plot(computed: Computed, out: Path) -> list[Path]:
    from ..plot.analyses import logit_lens_plot, target_plot

    result, files = computed.result, []
    if result.attrs["n_examples"] == 1:
        files.append(logit_lens_plot(result, png_path(out, computed.name), title=f"Logit lens: {result.attrs['text']!r}"))
    if "targets" in computed.parts:
        files.append(target_plot(computed.parts["targets"], out / f"{file_name(computed.name)}-targets.png"))
    return files


def _check(values: Mapping[str, Any]) -> None:
    if values.get("example") is not None and (values.get("variant") is not None or values.get("item") is not None):
        raise ValueError("give --example, or --variant/--item, not both")


LOGIT_LENS = register_analysis(Analysis(
    name="logit-lens",
    help="Top tokens per layer and position through the stored logit lens; log-prob and rank of targets.",
    compute=compute, tables=tables, plot=plot, printed="activation_store.cli.tables:show_lens", needs_lens=True,
    check=_check,
    params=(Param("--example", "example", "One example (default: example 0).", kind=int),
            Param("--variant", "variant", "All examples of a variant (with --item: that one example)."),
            Param("--item", "item", "The examples of one item (with --variant: one example)."),
            Param("--targets", "targets", "A targets file (.jsonl/.csv) or a rule: result-digits, result-words, "
                  "en-next-word, next-token."),
            Param("--top-k", "k", default=5, kind=int),
            LENS,
            Param("--modality", "modality", "Only the text, image or audio tokens of the selected examples.",
                  convert=one_modality))))


def logit_lens_report(store: str | Store, model: str, dataset: str, out: Path, *, layers: list[int] | None = None,
                      storage_options: dict[str, Any] | None = None, **params: Any) -> Report:
    """The ``logit-lens`` analysis for a script holding a URL (kept for callers of the old name); ``params``
    as in ``compute`` (``example``, ``variant``, ``item``, ``targets``, ``k``, ``lens_mode``, ``modality``)."""
    return run_at(LOGIT_LENS, store, Target(model, dataset), RunOptions(out, layers), storage_options, **params)
