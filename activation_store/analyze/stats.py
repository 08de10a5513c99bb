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


def _mean_ci(samples: np.ndarray, n_boot: int, seed: int,
             weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of ``samples`` (rows, n): the mean and the 2.5/97.5 percentiles of ``n_boot`` resampled means.
    With ``weights`` (n,), ``samples`` are per-group sums and the statistic is Σ sums / Σ weights, resampled
    by group (a cluster bootstrap of a mean over all entries)."""
    if n_boot < 1:
        raise ActstoreError(f"the bootstrap needs at least 1 resample, got {n_boot}")
    n = samples.shape[-1]
    draws = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    boot = _resampled_means(samples, draws)                                # (rows, n_boot)
    if weights is None:
        low, high = np.percentile(boot, PERCENTILES, axis=-1)
        return samples.mean(axis=-1), low, high
    boot /= _resampled_means(weights[None, :], draws)
    low, high = np.percentile(boot, PERCENTILES, axis=-1)
    return samples.sum(axis=-1) / weights.sum(), low, high


def _resampled_means(samples: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """(rows, n_boot) means of ``samples`` (rows, n) over each row of ``draws`` (n_boot, n) indices.

    Each resample becomes counts per sample and the means one contraction: ~8x less work than gathering
    (rows, n_boot, n) values. Resamples go in blocks of ~4M counts, so memory stays flat for large n."""
    n_boot, n = draws.shape
    out = np.empty((samples.shape[0], n_boot))
    step = max(1, (4 << 20) // max(n, 1))
    for lo in range(0, n_boot, step):
        block = draws[lo:lo + step]
        counts = np.bincount((block + n * np.arange(len(block))[:, None]).ravel(), minlength=len(block) * n)
        out[:, lo:lo + step] = np.einsum("rn,bn->rb", samples, counts.reshape(len(block), n).astype(np.float64)) / n
    return out


def _summary(values: xr.DataArray, dim: str, samples: np.ndarray, n_boot: int, seed: int,
             weights: np.ndarray | None = None) -> xr.Dataset:
    """``mean``, ``ci_low``, ``ci_high`` over the dims of ``values`` other than ``dim``, from (…, n) ``samples``."""
    dims = tuple(d for d in values.dims if d != dim)
    shape = samples.shape[:-1]
    if samples.shape[-1] == 0:
        raise ActstoreError("nothing to average: no samples selected")
    mean, low, high = _mean_ci(samples.reshape(-1, samples.shape[-1]), n_boot, seed, weights)
    coords = {name: c for name, c in values.coords.items() if dim not in c.dims}
    return xr.Dataset({"mean": (dims, mean.reshape(shape)), "ci_low": (dims, low.reshape(shape)),
                       "ci_high": (dims, high.reshape(shape))}, coords=coords,
                      attrs={"n_samples": int(samples.shape[-1]), "n_boot": int(n_boot), "seed": int(seed)})


def mean_ci(values: xr.DataArray, dim: str, n_boot: int = 1000, seed: int = 0) -> xr.Dataset:
    """Mean over ``dim`` with a bootstrap 95% interval that resamples the entries of ``dim``."""
    values = values.transpose(..., dim)
    return _summary(values, dim, np.asarray(values.values), n_boot, seed)


def grouped_mean_ci(values: xr.DataArray, dim: str, by: str, n_boot: int = 1000, seed: int = 0,
                    weigh: str = "label") -> xr.Dataset:
    """Mean over ``dim`` with a bootstrap 95% interval that resamples whole ``by`` labels (e.g. the examples
    of one item, or the tokens of one sentence, which are not independent).

    ``weigh="label"``: entries sharing a label are averaged first, every label counts once; ``"entry"``:
    the mean over all entries (a label with more entries counts more), resampled by label all the same."""
    if weigh not in ("label", "entry"):
        raise ActstoreError(f"weigh must be 'label' or 'entry', got {weigh!r}")
    values = values.transpose(..., dim)
    labels, owner = np.unique(values[by].values.astype(str), return_inverse=True)
    rows = np.asarray(values.values, dtype=np.float64).reshape(-1, values.sizes[dim])
    per_label = np.zeros((rows.shape[0], len(labels)))
    np.add.at(per_label.T, owner, rows.T)
    counts = np.bincount(owner, minlength=len(labels)).astype(np.float64)
    if weigh == "entry":
        return _summary(values, dim, per_label.reshape(*values.shape[:-1], len(labels)), n_boot, seed, counts)
    per_label /= counts
    return _summary(values, dim, per_label.reshape(*values.shape[:-1], len(labels)), n_boot, seed)
