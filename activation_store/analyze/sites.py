"""Reading a run at another site than the residual stream: the same analyses over ``attn_out``, ``mlp_in``….

``at_site(ds, "mlp_out")`` is the run as every analysis reads it — the site's
states in ``hidden``'s place, its own statistics as ``stat_*``, only the layers
it has — so similarity, trajectories and moments need no site logic of their
own. The run's pooled views belong to the residual stream and are left out (the
analyses pool the site's tokens with the same functions). A site outside the
residual basis (``mlp_in``, ``z``, a module's input) is marked, and the logit
lens refuses it in one line (``require_residual``)."""
from __future__ import annotations

import xarray as xr

from ..errors import ActstoreError
from ..store import layout
from ..store.sites import RESIDUAL, of_run

SITE_ATTR = "site"  # on ``hidden`` of a run read at a site: the site's record (store/sites.py)


def site_names(ds: xr.Dataset) -> list[str]:
    """The sites a run holds, the residual stream first."""
    return [RESIDUAL, *(site.name for site in of_run(ds.attrs))]


def at_site(ds: xr.Dataset, site: str | None) -> xr.Dataset:
    """The run with ``site``'s states as ``hidden`` (None or ``resid_post``: the run itself); an unknown site is
    one line naming those the run holds."""
    if site in (None, RESIDUAL, layout.HIDDEN):
        return ds
    found = {s.name: s for s in of_run(ds.attrs)}
    if site not in found or site not in ds.data_vars:
        raise ActstoreError(f"site {site!r} is not in this run; it holds {', '.join(site_names(ds))}")
    record = found[site]
    layers = [layer for layer in record.layers if layer in set(ds.layer.values.tolist())]
    if not layers:
        raise ActstoreError(f"site {site!r} has layers {', '.join(map(str, record.layers))}; none is selected")
    states = ds[site].sel(layer=layers)
    if states.ndim > 3:  # per head: one vector per token, heads end to end, as the analyses take states
        states = states.stack(d_model=states.dims[2:]).drop_vars(list(states.dims[2:]) + ["d_model"], errors="ignore")
    states = states.assign_coords(final_norm_applied=("layer", [False] * len(layers)))
    states.attrs = {**ds[layout.HIDDEN].attrs, SITE_ATTR: record.record()}
    own = {f"{site}_{name}": name for name in layout.STATS}
    dropped = [name for name in ds.data_vars if name == layout.HIDDEN or name in layout.VIEWS.values()
               or name in layout.STATS or name in found or any(name.startswith(f"{s}_") for s in found)]
    out = ds.sel(layer=layers).drop_vars(dropped)
    out[layout.HIDDEN] = states.rename(layout.HIDDEN)
    for name, as_name in own.items():
        if name in ds.data_vars and ds[name].ndim <= 3:
            stat = ds[name].sel(layer=layers)
            out[as_name] = stat.stack(d_model=stat.dims[1:]).drop_vars(list(stat.dims[1:]) + ["d_model"], errors="ignore") \
                if stat.ndim > 2 else stat
    views = {k: v for k, v in ds.attrs.get(layout.VIEWS_ATTR, {}).items() if k not in layout.VIEWS}
    out.attrs = {**ds.attrs, **({layout.VIEWS_ATTR: views} if views else {})}
    return out


def require_residual(hidden: xr.DataArray, what: str = "the logit lens") -> None:
    """Refuse states outside the residual basis, which the unembedding cannot read."""
    record = hidden.attrs.get(SITE_ATTR)
    if record and not record.get("residual_basis"):
        raise ActstoreError(f"{what} reads states in the residual basis; site {record.get('name')!r} is not "
                            f"(use resid_post, resid_mid, attn_out or mlp_out)")
