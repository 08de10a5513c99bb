"""Intervention deltas from a recorded run, against its baseline (condition with coefficient 0), without the model.

Per condition and example (``per_example``):
- ``kl``: KL(baseline ‖ steered) of the next-token distribution over the recorded
  support plus one bucket for all other tokens — a lower bound on the full KL;
- ``top1_changed``: whether the most likely next token differs from the baseline's;
- per target set (``set``): its log-prob (log of the summed probability of its
  tokens), its probability, their deltas, and with two or more sets each set's
  share of their total, e.g. P(Yes) / (P(Yes) + P(No)), and its delta.
Continuations are sorted into outcome categories by a rule (``outcomes``), and
``summarize`` gives means per condition with a bootstrap 95% interval over items.
``lens_forecast`` is the cheap prediction: the logit lens at the vector's layer on
the stored states with and without coefficient × vector."""
from __future__ import annotations

import re
from typing import Callable

import numpy as np
import xarray as xr

from ..errors import ActstoreError
from ..vocabulary import token_ids, vocabulary_index
from .lens import logits as lens_logits
from .stats import grouped_mean_ci


def baseline_index(ds: xr.Dataset) -> int:
    zero = np.flatnonzero(ds.coefficient.values == 0)
    if not len(zero):
        raise ActstoreError("the recorded run has no baseline condition (coefficient 0)")
    return int(zero[0])


def set_ids(ds: xr.Dataset, sets: dict[str, list[str]], vocab: np.ndarray) -> dict[str, np.ndarray]:
    """Token ids of each target set, each checked to be in every example's recorded support."""
    index = vocabulary_index(vocab)
    support = ds.support_id.values
    out = {}
    for name, members in sets.items():
        ids = token_ids(index, members)
        for member, token_id in zip(members, ids):
            if not (support == token_id).any(axis=1).all():
                raise ActstoreError(f"token {member!r} was not recorded for every example; "
                                    f"record it with `actstore extract --intervene … --targets FILE`")
        out[name] = np.unique(ids)
    return out


def set_logprob(ds: xr.Dataset, ids: dict[str, np.ndarray]) -> xr.DataArray:
    """Log-prob of each target set (logsumexp over its tokens): (condition, example, set)."""
    support = ds.support_id.values                       # (example, support)
    logprob = ds.logprob.values.astype(np.float64)       # (condition, example, support)
    columns = []
    for members in ids.values():
        hit = np.isin(support, members)                  # (example, support)
        masked = np.where(hit[None], logprob, -np.inf)
        columns.append(np.logaddexp.reduce(masked, axis=-1))
    values = np.stack(columns, axis=-1) if columns else np.zeros(logprob.shape[:2] + (0,))
    return xr.DataArray(values, dims=("condition", "example", "set"),
                        coords={"condition": ds.condition.values, "coefficient": ("condition", ds.coefficient.values),
                                "set": list(ids)})


def kl_on_support(logprob: np.ndarray, base: int) -> np.ndarray:
    """KL(base ‖ each condition) over the given columns plus a rest bucket: (condition, example)."""
    logprob = logprob.astype(np.float64)
    rest = np.log1p(-np.minimum(np.exp(logprob).sum(-1), 1 - 1e-12))[..., None]   # log P(other tokens)
    full = np.concatenate([logprob, rest], axis=-1)
    p = full[base]
    return (np.exp(p) * (p - full)).sum(-1)


def _set_metrics(lp: xr.DataArray, base: int) -> dict[str, xr.DataArray]:
    out = {"set_logprob": lp, "delta_logprob": lp - lp.isel(condition=base)}
    prob = np.exp(lp)
    out["prob"], out["delta_prob"] = prob, prob - prob.isel(condition=base)
    if lp.sizes["set"] >= 2:
        share = prob / prob.sum("set")
        out["share"], out["delta_share"] = share, share - share.isel(condition=base)
    return out


def per_example(ds: xr.Dataset, ids: dict[str, np.ndarray] | None = None) -> xr.Dataset:
    """Every delta per (condition, example) against the baseline condition."""
    base = baseline_index(ds)
    logprob = ds.logprob.values
    top = ds.top_id.values[..., 0]
    coords = {"condition": ds.condition.values, "coefficient": ("condition", ds.coefficient.values),
              "example": ds.example.values, "item": ("example", ds["item"].values),
              "variant": ("example", ds.variant.values)}
    out = xr.Dataset({
        "kl": (("condition", "example"), kl_on_support(logprob, base)),
        "top1_changed": (("condition", "example"), (top != top[base]).astype(np.float64)),
    }, coords=coords)
    if ids:
        for name, value in _set_metrics(set_logprob(ds, ids), base).items():
            out[name] = value.assign_coords(example=ds.example.values)
    out.attrs.update(baseline_condition=base, kl="KL(baseline || steered) over the recorded support + one 'other' bucket")
    return out


def summarize(per: xr.Dataset, n_boot: int = 1000, seed: int = 0) -> xr.Dataset:
    """Each (condition, example[, set]) metric as mean, ci_low, ci_high per condition (and set) over items."""
    out = xr.Dataset(coords={"condition": per.condition.values, "coefficient": ("condition", per.coefficient.values)})
    for name, var in per.data_vars.items():
        summary = grouped_mean_ci(var.reset_coords(drop=True).assign_coords(item=per["item"]), "example", "item", n_boot, seed)
        out[name] = summary["mean"].transpose("condition", ...)
        out[f"{name}_ci_low"] = summary.ci_low.transpose("condition", ...)
        out[f"{name}_ci_high"] = summary.ci_high.transpose("condition", ...)
        out.attrs["n_items"] = summary.attrs["n_samples"]
    if "set" in per.dims:
        out = out.assign_coords(set=per.set.values)
    return out


# --- outcomes of continuations -------------------------------------------------------------------------------------

def _first_integer(text: str) -> int | None:
    match = re.search(r"-?\d+", text)
    return int(match[0]) if match else None


def arithmetic_rule(shift: int = -1) -> Callable[[str, str, str], str]:
    """For prompts "{a+b}={a}+" with item "a+b": the continuation's first number is b ("unchanged"),
    b + shift ("shifted", as predicted: −1 when the vector moves a to a+1), or anything else ("other")."""
    def rule(item: str, text: str, _baseline: str) -> str:
        match = re.fullmatch(r"\s*(\d+)\s*\+\s*(\d+)\s*", item)
        if not match:
            raise ActstoreError(f"item {item!r} is not 'a+b'; the arithmetic rule needs items like '5+3'")
        b, answer = int(match[2]), _first_integer(text)
        return "unchanged" if answer == b else "shifted" if answer == b + shift else "other"
    rule.categories = ("unchanged", "shifted", "other")  # type: ignore[attr-defined]
    return rule


def same_as_baseline(_item: str, text: str, baseline: str) -> str:
    """The continuation equals the baseline's (same seed) or not."""
    return "unchanged" if text == baseline else "changed"


same_as_baseline.categories = ("unchanged", "changed")  # type: ignore[attr-defined]


def outcome_rule(spec: str) -> Callable[[str, str, str], str]:
    """``arithmetic`` (b − 1 predicted), ``arithmetic:+1`` (another shift), or ``same-as-baseline``."""
    if spec == "same-as-baseline":
        return same_as_baseline
    match = re.fullmatch(r"arithmetic(?::([+-]?\d+))?", spec)
    if match:
        return arithmetic_rule(int(match[1]) if match[1] else -1)
    raise ActstoreError(f"unknown outcome rule {spec!r}; rules: arithmetic, arithmetic:SHIFT, same-as-baseline")


def outcomes(ds: xr.Dataset, rule: Callable[[str, str, str], str]) -> xr.DataArray:
    """The category of every continuation: (condition, sample, example)."""
    if "generated_text" not in ds or ds.sizes.get("step", 0) == 0:
        raise ActstoreError("the recorded run has no continuations; record with `--generate N`")
    base = baseline_index(ds)
    texts = ds.generated_text.values
    items = ds["item"].values
    cats = np.empty(texts.shape, dtype=object)
    for c, s, e in np.ndindex(*texts.shape):
        cats[c, s, e] = rule(str(items[e]), str(texts[c, s, e]), str(texts[base, s, e]))
    return xr.DataArray(cats, dims=("condition", "sample", "example"),
                        coords={"condition": ds.condition.values, "coefficient": ("condition", ds.coefficient.values),
                                "item": ("example", items)})


def outcome_shares(categories: xr.DataArray, names: tuple[str, ...], n_boot: int = 1000, seed: int = 0) -> xr.Dataset:
    """Share of each category per condition (over samples and items), with a bootstrap 95% interval over items."""
    values = categories.transpose("condition", "sample", "example").values
    hits = xr.DataArray(np.stack([(values == name).mean(axis=1) for name in names]),   # share over samples
                        dims=("category", "condition", "example"),
                        coords={"category": list(names), "item": ("example", categories["item"].values)})
    summary = grouped_mean_ci(hits, "example", "item", n_boot, seed)
    return xr.Dataset({"share": summary["mean"], "ci_low": summary.ci_low, "ci_high": summary.ci_high},
                      coords={"condition": categories.condition.values,
                              "coefficient": ("condition", categories.coefficient.values)},
                      attrs={"n_items": summary.attrs["n_samples"]}).transpose("condition", "category")


# --- the lens-level forecast ---------------------------------------------------------------------------------------

def lens_forecast(states: xr.DataArray, lens: xr.Dataset, vector: np.ndarray, coefficients: np.ndarray,
                  ids: dict[str, np.ndarray] | None = None, support: np.ndarray | None = None) -> xr.Dataset:
    """What the logit lens at the vector's layer says adding coefficient × vector does, per (condition, example).

    ``states`` (example, d_model) are the unsteered states at that layer (with ``final_norm_applied``);
    metrics match ``per_example``: KL over ``support`` (example, support) + a rest bucket when given
    (else over the full vocabulary), top-1 change, and the target sets' log-prob deltas."""
    vec = xr.DataArray(np.asarray(vector, dtype=np.float32), dims="d_model")
    logps = []
    for coefficient in coefficients:
        steered = states + float(coefficient) * vec if coefficient else states
        logit = lens_logits(steered, lens).astype(np.float64).transpose("example", "vocab").values
        logps.append(logit - np.logaddexp.reduce(logit, axis=-1, keepdims=True))
    logp = np.stack(logps)                                   # (condition, example, vocab)
    base = int(np.flatnonzero(np.asarray(coefficients) == 0)[0])
    if support is not None:
        kl = kl_on_support(np.take_along_axis(logp, support[None].astype(np.int64), axis=-1), base)
    else:
        kl = (np.exp(logp[base]) * (logp[base] - logp)).sum(-1)
    top = logp.argmax(-1)
    out = xr.Dataset({"kl": (("condition", "example"), kl),
                      "top1_changed": (("condition", "example"), (top != top[base]).astype(np.float64))},
                     coords={"condition": np.arange(len(coefficients)), "coefficient": ("condition", np.asarray(coefficients)),
                             "example": states.example.values, "item": ("example", states["item"].values)})
    if ids:
        sets = np.stack([np.logaddexp.reduce(logp[..., members], axis=-1) for members in ids.values()], axis=-1)
        lp = xr.DataArray(sets, dims=("condition", "example", "set"), coords={"set": list(ids)})
        for name, value in _set_metrics(lp, base).items():
            out[name] = value
    return out


def forecast_states(ds: xr.Dataset, layer: int) -> xr.DataArray | None:
    """The baseline's last-prompt-token states at ``layer`` from the recorded run, or None when not recorded, or
    when the forecast (coefficient × vector added there) is not what the run did: a ``replace``, or a run whose
    steered positions (image tokens, say) leave out a last prompt token."""
    if "states" not in ds or layer not in set(ds.layer.values.tolist()) or ds.attrs.get("mode", "add") != "add":
        return None
    last = (ds.token_offset.values + ds.token_count.values - 1).astype(np.int64)
    if "steered" in ds and not ds.steered.values[last].all():
        return None
    base = baseline_index(ds)
    states = ds.states.isel(condition=base).sel(layer=layer).isel(token=xr.DataArray(last, dims="example"))
    states = states.drop_vars([c for c in states.coords if c not in ("layer", "final_norm_applied")])
    return states.assign_coords(example=ds.example.values, item=("example", ds["item"].values)).load()

