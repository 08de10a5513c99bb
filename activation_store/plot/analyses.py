"""PNG figures of analysis results, layers on the x axis."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from .figure import new_figure, save
from .fonts import cjk_fonts


@cjk_fonts()
def similarity_plot(result: xr.Dataset, path: Path, title: str = "") -> Path:
    """Score per layer for each variant pair, with its bootstrap 95% band."""
    fig, ax = new_figure()
    layers = result.layer.values
    for pair in result.pair.values:
        row = result.sel(pair=pair)
        ax.plot(layers, row.score, marker="o", ms=3, label=str(pair))
        ax.fill_between(layers, row.ci_low, row.ci_high, alpha=0.25)
    ax.axhline(0, color="grey", lw=0.8)
    centred = "mean-centred" if int(result.attrs.get("centered", 0)) else "raw"
    ax.set(xlabel="layer", ylabel="paired − unpaired cosine",
           title=title or f"Cross-variant similarity ({result.attrs.get('pool', 'last')} token, {centred})")
    ax.legend(fontsize=8)
    return save(fig, path)


@cjk_fonts()
def logit_lens_plot(result: xr.Dataset, path: Path, title: str = "") -> Path:
    """Top-1 probability per layer × position for one example, labelled with the top-1 token."""
    top = result.isel(rank=0).transpose("layer", "token")
    prob, tokens = top.top_prob.values, top.top_token.values
    fig, ax = new_figure(figsize=(1.1 * prob.shape[1] + 2, 0.32 * prob.shape[0] + 1.5))
    image = ax.imshow(prob, aspect="auto", origin="lower", cmap="Blues", vmin=0, vmax=1)
    for (i, j), token in np.ndenumerate(tokens):
        ax.text(j, i, repr(str(token))[1:-1][:10], ha="center", va="center", fontsize=6,
                color="white" if prob[i, j] > 0.6 else "black")
    inputs = result.attrs.get("input_tokens")
    if inputs:
        ax.set_xticks(range(len(inputs)), [repr(t)[1:-1] for t in inputs], rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(prob.shape[0]), result.layer.values, fontsize=6)
    ax.set(xlabel="input position", ylabel="layer", title=title or "Logit lens: top-1 token and its probability")
    fig.colorbar(image, ax=ax, label="p(top-1)")
    return save(fig, path)


@cjk_fonts()
def target_plot(summary: xr.Dataset, path: Path, title: str = "") -> Path:
    """Mean target log-probability per layer with a 95% band."""
    fig, ax = new_figure()
    layers = summary.layer.values
    ax.plot(layers, summary.mean_logprob, marker="o", ms=3)
    ax.fill_between(layers, summary.ci_low, summary.ci_high, alpha=0.25)
    ax.set(xlabel="layer", ylabel="target log-probability", title=title or "Logit lens: target log-probability")
    return save(fig, path)


@cjk_fonts()
def language_plot(mass: xr.DataArray, path: Path, title: str = "") -> Path:
    """Probability mass per language, layer by layer (with its 95% band when the mass carries one)."""
    fig, ax = new_figure()
    for language in mass.language.values:
        one = mass.sel(language=language)
        (line,) = ax.plot(mass.layer.values, one, marker="o", ms=3, label=str(language))
        if "ci_low" in one.coords:
            ax.fill_between(mass.layer.values, one.ci_low, one.ci_high, color=line.get_color(), alpha=0.15, lw=0)
    ax.set(xlabel="layer", ylabel="probability mass", title=title or "Logit lens: probability mass per language")
    ax.legend(fontsize=8, ncol=2)
    return save(fig, path)


@cjk_fonts()
def layer_curves_plot(curves: dict[str, np.ndarray], layers: np.ndarray, path: Path, ylabel: str, title: str) -> Path:
    """A few named per-layer curves on one axis (e.g. keyword vs baseline probability)."""
    fig, ax = new_figure()
    for label, values in curves.items():
        ax.plot(layers, values, marker="o", ms=3, label=label)
    ax.set(xlabel="layer", ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    return save(fig, path)
