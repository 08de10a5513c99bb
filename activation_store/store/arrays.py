"""Arrays in a store, written and read one way everywhere.

Every array carries a CRC32C checksum (``actstore verify`` finds flipped bits),
every chunk is written even when it equals the fill value (a lost chunk is an
error, never "all fill"), and strings are variable-length UTF-8 written as
such and read back as plain Python strings, which every tool understands."""
from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
import zarr
import zarr.codecs

from .handle import quiet_zarr

CHECKSUM = zarr.codecs.Crc32cCodec()
WRITE_ALL = {"write_empty_chunks": True}


def write_array(group: zarr.Group, name: str, values: Any, dims: tuple[str, ...], *,
                chunks: tuple[int, ...] | None = None, attrs: dict[str, Any] | None = None) -> zarr.Array:
    """Create (or replace) array ``name`` in ``group`` holding ``values``, with named dimensions."""
    values = np.asarray(values)
    dtype, fill = (str, "") if values.dtype.kind in "UTO" else (values.dtype, 0)
    with quiet_zarr():
        array = group.create_array(
            name, shape=values.shape, dtype=dtype, fill_value=fill, dimension_names=dims, compressors=[CHECKSUM],
            attributes=attrs or {}, overwrite=True, config=WRITE_ALL, **({"chunks": chunks} if chunks else {}),
        )
        if values.size:
            array[...] = values
    return array


def strings_as_objects(ds: xr.Dataset) -> xr.Dataset:
    """numpy's StringDType (how zarr returns strings) as object arrays of ``str``: it trips many tools."""
    strings = [name for name, var in ds.variables.items() if var.dtype.kind == "T"]
    return ds.assign({name: ds[name].astype(object) for name in strings}) if strings else ds
