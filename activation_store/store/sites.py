"""Sites beyond the residual stream in a run group: one array per site, beside ``hidden``.

``hidden`` is the residual stream (``resid_post``), over the run's ``layer``
coordinate. Every other site a run captures (``attn_out``, ``mlp_out``, a module's
input…) is its own array named after the site, chunked like ``hidden`` along
the run's unit and written in the same blocks. A block site has no layer 0 (the
embeddings), so a site array carries its own layer axis, ``<site>_layer``, with a
coordinate array of that name holding the run's layer labels: a plain Zarr or
xarray reader sees self-describing arrays, and ``open_run`` shows every site on
the run's ``layer`` (NaN where a site has none). The run's ``capture`` attribute
lists the sites with their provenance: the module path each came from, input or
output, and whether it is in the residual basis (what the logit lens can read)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from . import layout

RESIDUAL = "resid_post"  # the residual stream: stored as ``hidden``
SITES_KEY = "sites"      # in the capture attribute: one record per site besides ``hidden``


@dataclass(frozen=True)
class SiteArray:
    """One stored site: its array name, the run layers it has, one unit's shape, and where it came from."""

    name: str
    layers: tuple[int, ...]
    per_unit: tuple[int, ...]
    provenance: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def layer_dim(self) -> str:
        return f"{self.name}_layer"

    @property
    def residual_basis(self) -> bool:
        return bool(self.provenance.get("residual_basis"))

    def dims(self, unit: str, d_model: int) -> tuple[str, ...]:
        """Dimension names: its layer axis, the run's unit, then ``d_model`` for residual-width states,
        ``head``/``d_head`` for per-head ones, else its own."""
        if self.per_unit == (d_model,):
            rest: tuple[str, ...] = ("d_model",)
        elif len(self.per_unit) == 2:
            rest = ("head", "d_head")
        else:
            rest = tuple(f"{self.name}_dim{i}" if len(self.per_unit) > 1 else f"{self.name}_width"
                         for i in range(len(self.per_unit)))
        return (self.layer_dim, unit, *rest)

    def record(self) -> dict[str, Any]:
        """What the run's ``capture`` attribute says of the site."""
        return {**self.provenance, "name": self.name, "layers": list(self.layers), "per_unit": list(self.per_unit)}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SiteArray:
        extra = {k: v for k, v in record.items() if k not in ("name", "layers", "per_unit")}
        return cls(record["name"], tuple(record["layers"]), tuple(record["per_unit"]), extra)


def of_run(attrs: dict[str, Any]) -> tuple[SiteArray, ...]:
    """The sites besides ``hidden`` that a run's attributes list (none for runs of the residual stream only)."""
    return tuple(SiteArray.from_record(r) for r in attrs.get(layout.CAPTURE_ATTR, {}).get(SITES_KEY, []))


def names(attrs: dict[str, Any]) -> list[str]:
    """Every site a run holds, the residual stream first."""
    return [RESIDUAL, *(s.name for s in of_run(attrs))]


def array_name(site: str) -> str:
    """The array holding ``site`` in a run group."""
    return layout.HIDDEN if site == RESIDUAL else site


def on_run_layers(ds: xr.Dataset, sites: tuple[SiteArray, ...]) -> xr.Dataset:
    """Each site's variables (its states and statistics) on the run's ``layer`` coordinate, lazily: NaN at the
    layers a site lacks (layer 0 for block sites). Its own layer coordinate is dropped."""
    if not sites or "layer" not in ds.coords:
        return ds
    for site in sites:
        if site.layer_dim not in ds.dims:
            continue
        moved = {name: ds[name] for name, var in ds.data_vars.items() if site.layer_dim in var.dims}
        ds = ds.drop_vars([*moved, site.layer_dim])
        for name, var in moved.items():
            var = var.drop_vars(site.layer_dim, errors="ignore").rename({site.layer_dim: "layer"})
            ds[name] = var.assign_coords(layer=np.asarray(site.layers)).reindex(layer=ds.layer.values)
    return ds
