"""Figures of the text-grid analyses: target margins and baseline similarity per layer, the role matrix,
the anchored arithmetic trajectories."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from .figure import new_figure, save
from .fonts import cjk_fonts


@cjk_fonts()
def margin_plot(result: xr.Dataset, path: Path, title: str = "") -> Path:
    """log p(target) − max log p(alternative) per layer with its 95% band, and the share where the target wins."""
    fig, (ax, wins) = new_figure(figsize=(9, 3.6), nrows=1, ncols=2)
    layers = result.layer.values
    ax.plot(layers, result.margin, marker="o", ms=3)
    ax.fill_between(layers, result.ci_low, result.ci_high, alpha=0.25)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="layer", ylabel="log p(target) − max log p(alt.)")
    wins.plot(layers, result.target_wins, marker="o", ms=3)
    wins.axhline(0.5, color="grey", lw=0.8)
    wins.set(xlabel="layer", ylabel="share where the target wins", ylim=(0, 1))
    fig.suptitle(title or f"Target vs alternatives ({result.attrs.get('lens', 'normed')} lens, "
                          f"{result.attrs.get('n_positions', '?')} positions)", fontsize=9)
    return save(fig, path)


@cjk_fonts()
def baseline_similarity_plot(result: xr.Dataset, path: Path, title: str = "") -> Path:
    """Matched minus baseline cosine per layer with its 95% band, and the two cosines it is the difference of."""
    fig, ax = new_figure()
    layers = result.layer.values
    ax.plot(layers, result.score, marker="o", ms=3, label="matched − baseline")
    ax.fill_between(layers, result.ci_low, result.ci_high, alpha=0.25)
    ax.plot(layers, result.matched, lw=1, ls="--", label="matched")
    ax.plot(layers, result.baseline, lw=1, ls=":", label=f"baseline ({result.attrs.get('baseline', '')})")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="layer", ylabel="cosine",
           title=title or f"Similarity {result.attrs.get('pair', '')} against {result.attrs.get('baseline', '')}")
    ax.legend(fontsize=8)
    return save(fig, path)


@cjk_fonts()
def roles_plot(result: xr.Dataset, path: Path, title: str = "") -> Path:
    """The centred (gold, predicted) matrix at up to four layers spread over the run, one shared colour scale."""
    layers = result.layer.values[np.unique(np.linspace(0, result.sizes["layer"] - 1, min(4, result.sizes["layer"])).astype(int))]
    labels = [repr(str(g))[1:-1] for g in result.gold.values]
    limit = float(np.abs(result.confusion.sel(layer=layers)).max()) or 1.0
    fig, axes = new_figure(figsize=(3.2 * len(layers) + 1, 3.4), nrows=1, ncols=len(layers), squeeze=False)
    for ax, layer in zip(axes[0], layers):
        image = ax.imshow(result.confusion.sel(layer=layer).values, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set(xlabel="predicted", ylabel="gold", title=f"layer {int(layer)}")
    fig.colorbar(image, ax=axes[0][-1], label="centred log-prob")  # one scale: every panel shares vmin/vmax
    fig.suptitle(title or f"Role confusion ({result.attrs.get('lens', 'normed')} lens)", fontsize=9)
    return save(fig, path)


@cjk_fonts()
def trajectories_plot(result: xr.Dataset, path: Path, title: str = "") -> Path:
    """Each example's path through the layers in the anchors' PCA plane, with the anchors labelled."""
    fig, ax = new_figure(figsize=(6, 5))
    for example in range(result.sizes["example"]):
        path_xy = result.trajectory.isel(example=example).values                   # (layer, component)
        ax.plot(path_xy[:, 0], path_xy[:, 1], lw=0.8, alpha=0.6)
        ax.plot(path_xy[-1, 0], path_xy[-1, 1], "o", ms=3, color="black")
    anchors = result.anchor_position.values
    ax.scatter(anchors[:, 0], anchors[:, 1], marker="x", color="red")
    for name, (x, y) in zip(result.anchor.values, anchors):
        ax.annotate(repr(str(name))[1:-1], (x, y), fontsize=7, color="red")
    explained = result.explained_variance.values
    ax.set(xlabel=f"PC1 ({explained[0]:.0%})", ylabel=f"PC2 ({explained[1]:.0%})",
           title=title or f"Last-token trajectories ({result.attrs.get('variant', '')}); dots: last layer")
    return save(fig, path)
