"""The steps of saving one result (``results.save_to_store``): its parent groups, the staged write, the check that
reads it back, and a failed save's one line.

A staged result is written like a run's arrays: every chunk written even when it is all fill (so a lost one is
damage ``actstore verify`` names, never "all NaN"), each with a CRC32C checksum."""
from __future__ import annotations

import errno
import json

import numpy as np
import xarray as xr
import zarr.codecs

from ..errors import ActstoreError
from ..store import Store, layout
from ..store.arrays import CHECKSUM
from ..store.handle import quiet_zarr
from ..store.objects import objects_at
from ..store.replace import Staged

COMPRESSORS = (zarr.codecs.ZstdCodec(level=3), CHECKSUM)
GROUP_DOC = {"attributes": {}, "zarr_format": 3, "node_type": "group"}  # what the results tree's groups hold


def ensure_parents(store: Store, path: str) -> None:
    """``results``, ``results/<model>`` and ``results/<model>/<dataset>`` as groups: written where missing, and
    rewritten where unreadable (they hold nothing but this empty group document, so nothing is lost)."""
    objects = objects_at(store.url, store.storage_options)
    parts = path.split("/")
    for depth in range(1, len(parts)):
        key = f"{'/'.join(parts[:depth])}/{layout.METADATA}"
        data = objects.read(key)
        try:
            if data is not None and json.loads(data).get("node_type") == "group":
                continue
        except ValueError:
            pass
        objects.write(key, json.dumps(GROUP_DOC, indent=2).encode())


def write_staged(storable: xr.Dataset, staged: Staged) -> None:
    """The whole result at the root of the staging place."""
    encoding = {name: {"compressors": COMPRESSORS} for name in storable.variables}
    with quiet_zarr():
        storable.to_zarr(staged.zarr_store(), mode="w-", consolidated=False, zarr_format=3, write_empty_chunks=True,
                         encoding=encoding)


def _same_values(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    if a.dtype.kind in "biuf" and b.dtype.kind in "biuf":
        return bool(np.array_equal(a, b))
    return bool(np.array_equal(a.astype(str), b.astype(str)))


def difference(expected: xr.Dataset, found: xr.Dataset) -> str | None:
    """The first way ``found`` differs from ``expected`` (names, roles, dimensions, values, attributes), or None."""
    if set(expected.variables) != set(found.variables) or set(expected.coords) != set(found.coords):
        return f"variables {sorted(found.variables)} instead of {sorted(expected.variables)}"
    if expected.attrs != found.attrs:
        return "the result's attributes"
    for name, var in expected.variables.items():
        other = found.variables[name]
        if var.dims != other.dims or not _same_values(var.values, other.values):
            return f"variable {name}"
        if var.attrs != other.attrs:
            return f"the attributes of {name}"
    return None


def check_staged(storable: xr.Dataset, staged: Staged, name: str) -> None:
    """Read the staged result back whole and compare it with what was computed; refuse to put it in place if not."""
    with quiet_zarr():
        back = xr.open_zarr(staged.zarr_store(), consolidated=False, chunks=None).load()
    problem = difference(storable, back)
    if problem is not None:
        raise ActstoreError(f"{staged.store.url}: result {name} read back differently from what was computed "
                            f"({problem}); the stored result is unchanged")


def save_failure(store: Store, name: str, exc: OSError, staged: Staged | None) -> ActstoreError:
    """A failed save's one line: its cause, what became of the stored result, and what to do."""
    if staged is not None and staged.copying:
        kept = "the copy into place was interrupted and the next save into this store completes it"
    else:
        kept = "the stored result is unchanged"
    if exc.errno == errno.ENOSPC:
        return ActstoreError(f"{store.url}: no space left on the device while saving {name}; {kept}; free some space "
                             f"and run the same command again")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return ActstoreError(f"{store.url}: cannot write the store ({exc.strerror}) while saving {name}; {kept}; "
                             f"write the tables only with --no-save (they go to --out)")
    return ActstoreError(f"{store.url}: saving {name} failed ({exc.strerror or exc}); {kept}")
