"""Target versus alternatives through the logit lens, per layer, from a run's annotations.

Annotated datasets mark reading positions with a ``target`` word and the
``alternatives`` it competes with (each spelled as its first token): " and" vs
" or"/" not" after a list comma, a parameter name vs the argument's own first
token, a digit vs a number word, a role word vs the other roles. One function
reads every candidate's log-probability at every marked token; the paper's
plots are summaries of that table:
- ``target_margin``: log p(target) − max log p(alternative), per layer, with the
  share of positions where the target wins (the sign plot of the code lens);
- ``role_confusion``: for each gold target, the mean log-prob of every candidate,
  minus that candidate's mean over all gold targets (the semantic-role matrix:
  a positive diagonal means the lens reads the right role)."""
from __future__ import annotations

import json

import numpy as np
import xarray as xr

from ..errors import ActstoreError
from ..store import layout
from ..vocabulary import token_ids
from .lens_readout import target_logits
from .projection import project
from .selection import examples_of, token_states
from .stats import mean_ci


def marked_tokens(ds: xr.Dataset, examples: np.ndarray | None = None) -> np.ndarray:
    """Indices of the tokens that carry a target (of the given examples, else of the whole run)."""
    if "target" not in ds.variables:
        raise ActstoreError("this run has no per-token targets; extract an annotated dataset "
                            "(code, code:PATH, semantics, arithmetic's result-first)")
    marked = ds.target.values != ""
    if examples is not None:
        marked &= np.isin(ds.token_example.values, examples)
    tokens = np.flatnonzero(marked)
    if not len(tokens):
        raise ActstoreError("no selected token carries a target")
    return tokens


def candidate_logprobs(ds: xr.Dataset, lens: xr.Dataset, tokens: np.ndarray, mode: str = "normed") -> xr.Dataset:
    """Log-probabilities (layer, token, candidate) of every target and alternative word met at ``tokens``,
    with each token's ``target`` and ``alternatives`` (JSON lists) as coordinates; ``mode`` is the lens."""
    targets = ds.target.values[tokens].astype(str)
    alternatives = [json.loads(a) if a else [] for a in ds.alternatives.values[tokens]]
    candidates = sorted(set(targets) | {a for alts in alternatives for a in alts})
    try:
        ids = xr.DataArray(token_ids(lens[layout.VOCAB_TOKEN].values, candidates), dims="candidate")
    except ActstoreError as exc:
        raise ActstoreError(f"{exc} (was the run made by another model?)") from None
    hidden = token_states(ds, "the target comparison").isel(token=tokens)
    logit = target_logits(hidden, lens, ids, mode).transpose("layer", "token", "candidate").compute()
    normaliser = project(hidden, lens, k=1, mode=mode).log_normaliser            # (layer, token)
    logprob = logit.values - normaliser[..., None]
    return xr.Dataset(
        {"logprob": (("layer", "token", "candidate"), logprob)},
        coords={"layer": hidden.layer.values, "token": tokens, "candidate": candidates,
                "target": ("token", targets),
                "alternatives": ("token", np.array([json.dumps(a, ensure_ascii=False) for a in alternatives], dtype=object)),
                "token_example": ("token", ds.token_example.values[tokens])},
        attrs={"lens": mode},
    )


def marked_logprobs(ds: xr.Dataset, lens: xr.Dataset, variant: str | None = None, mode: str = "normed") -> xr.Dataset:
    """``candidate_logprobs`` at every annotated token of the run (or of one variant's examples)."""
    examples = examples_of(ds, variant=variant) if variant is not None else None
    return candidate_logprobs(ds, lens, marked_tokens(ds, examples), mode=mode)


def with_targets(table: xr.Dataset, include: list[str] | None = None, exclude: list[str] | None = None) -> xr.Dataset:
    """The positions of a ``candidate_logprobs`` table whose target is in ``include`` and not in ``exclude``:
    one run can carry two kinds of annotation (the code set's list commas, target " and", and its call
    arguments), and each of the paper's plots reads one kind."""
    targets = table.target.values.astype(str)
    keep = np.ones(len(targets), dtype=bool)
    if include is not None:
        keep &= np.isin(targets, include)
    if exclude is not None:
        keep &= ~np.isin(targets, exclude)
    if not keep.any():
        raise ActstoreError(f"no annotated position has a target {'in ' + repr(include) if include else ''}"
                            f"{' and not in ' + repr(exclude) if exclude else ''}")
    return table.isel(token=np.flatnonzero(keep))


def target_margin(table: xr.Dataset, n_boot: int = 1000, seed: int = 0) -> xr.Dataset:
    """Per layer: mean log p(target), mean best log p(alternative), their mean margin with a bootstrap 95%
    interval over positions, and the share of positions where the target wins."""
    candidates = list(table.candidate.values)
    column = {c: i for i, c in enumerate(candidates)}
    logprob = table.logprob.values                                                # (layer, token, candidate)
    positions = np.arange(table.sizes["token"])
    target = logprob[:, positions, [column[t] for t in table.target.values]]
    mask = np.zeros((len(positions), len(candidates)), dtype=bool)
    for i, alts in enumerate(table.alternatives.values):
        mask[i, [column[a] for a in json.loads(alts)]] = True
    if not mask.any(axis=1).all():
        raise ActstoreError("some targets have no alternative to compare against")
    best = np.where(mask[None], logprob, -np.inf).max(axis=-1)
    margin = target - best
    summary = mean_ci(xr.DataArray(margin, dims=("layer", "token")), "token", n_boot, seed)
    return xr.Dataset(
        {"target_logprob": ("layer", target.mean(axis=1)), "alternative_logprob": ("layer", best.mean(axis=1)),
         "margin": ("layer", summary["mean"].values), "ci_low": ("layer", summary.ci_low.values),
         "ci_high": ("layer", summary.ci_high.values),
         "target_wins": ("layer", (margin > 0).mean(axis=1)), "per_token_margin": (("layer", "token"), margin)},
        coords={"layer": table.layer.values, "token": table.token.values},
        attrs={"lens": table.attrs.get("lens", "normed"), "n_positions": len(positions), "n_boot": n_boot, "seed": seed,
               "definition": "log p(target) - max over alternatives of log p(alternative), first tokens"},
    )


def role_confusion(table: xr.Dataset) -> xr.Dataset:
    """(gold, predicted) matrix over the gold targets: mean log p(predicted) at positions whose target is
    ``gold``, minus the mean of that over all gold rows (each predicted column centred)."""
    golds = sorted(set(table.target.values.astype(str)))
    if len(golds) < 2:
        raise ActstoreError("a confusion matrix needs at least two different targets (roles)")
    logprob = table.logprob.sel(candidate=golds)                                  # (layer, token, predicted)
    rows, counts = [], []
    for gold in golds:
        at = np.flatnonzero(table.target.values == gold)
        rows.append(logprob.isel(token=at).mean("token").values)
        counts.append(len(at))
    raw = np.stack(rows, axis=1)                                                  # (layer, gold, predicted)
    centred = raw - raw.mean(axis=1, keepdims=True)
    return xr.Dataset(
        {"confusion": (("layer", "gold", "predicted"), centred), "mean_logprob": (("layer", "gold", "predicted"), raw),
         "n_positions": ("gold", np.array(counts))},
        coords={"layer": table.layer.values, "gold": golds, "predicted": golds},
        attrs={"lens": table.attrs.get("lens", "normed"),
               "definition": "mean log p(predicted | gold positions) minus its mean over gold roles"},
    )
