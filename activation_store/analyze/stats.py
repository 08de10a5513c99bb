"""Means with bootstrap 95% intervals, written once for every analysis.

As xarray's ``cov``/``corr`` share one private ``_cov_corr``, the public functions
here are thin wrappers over one private core, ``_mean_ci``: a percentile
bootstrap over the last axis of a (rows, samples) array, with one set of draws
(from ``numpy.random.default_rng(seed)``) shared by every row, so rows such as
layers or conditions stay paired and a seed gives the same interval everywhere."""
from __future__ import annotations

import numpy as np
import xarray as xr

from ..errors import ActstoreError

PERCENTILES = (2.5, 97.5)


def _mean_ci(samples: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of ``samples`` (rows, n): the mean and the 2.5/97.5 percentiles of ``n_boot`` resampled means."""
    if n_boot < 1:
        raise ActstoreError(f"the bootstrap needs at least 1 resample, got {n_boot}")
    n = samples.shape[-1]
    draws = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    boot = samples[:, draws].mean(axis=-1)                                 # (rows, n_boot)
    low, high = np.percentile(boot, PERCENTILES, axis=-1)
    return samples.mean(axis=-1), low, high


def _summary(values: xr.DataArray, dim: str, samples: np.ndarray, n_boot: int, seed: int) -> xr.Dataset:
    """``mean``, ``ci_low``, ``ci_high`` over the dims of ``values`` other than ``dim``, from (…, n) ``samples``."""
    dims = tuple(d for d in values.dims if d != dim)
    shape = samples.shape[:-1]
    if samples.shape[-1] == 0:
        raise ActstoreError("nothing to average: no samples selected")
    mean, low, high = _mean_ci(samples.reshape(-1, samples.shape[-1]), n_boot, seed)
    coords = {name: c for name, c in values.coords.items() if dim not in c.dims}
    return xr.Dataset({"mean": (dims, mean.reshape(shape)), "ci_low": (dims, low.reshape(shape)),
                       "ci_high": (dims, high.reshape(shape))}, coords=coords,
                      attrs={"n_samples": int(samples.shape[-1]), "n_boot": int(n_boot), "seed": int(seed)})


def mean_ci(values: xr.DataArray, dim: str, n_boot: int = 1000, seed: int = 0) -> xr.Dataset:
    """Mean over ``dim`` with a bootstrap 95% interval that resamples the entries of ``dim``."""
    values = values.transpose(..., dim)
    return _summary(values, dim, np.asarray(values.values), n_boot, seed)


def grouped_mean_ci(values: xr.DataArray, dim: str, by: str, n_boot: int = 1000, seed: int = 0) -> xr.Dataset:
    """Mean over ``dim`` where entries sharing a ``by`` label (e.g. the examples of one item) are averaged
    first, with a bootstrap 95% interval that resamples the labels."""
    values = values.transpose(..., dim)
    labels, owner = np.unique(values[by].values.astype(str), return_inverse=True)
    rows = np.asarray(values.values, dtype=np.float64).reshape(-1, values.sizes[dim])
    per_label = np.zeros((rows.shape[0], len(labels)))
    np.add.at(per_label.T, owner, rows.T)
    per_label /= np.bincount(owner, minlength=len(labels))
    return _summary(values, dim, per_label.reshape(*values.shape[:-1], len(labels)), n_boot, seed)
