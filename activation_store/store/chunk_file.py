"""One stored chunk read straight into the caller's memory: the loader's hot path on a local store.

Arrays here are stored as raw little-endian bytes followed by their CRC32C
(``arrays.CHECKSUM``), one file per chunk. On a local store one ``readv`` puts a
chunk's bytes where the caller wants them and the checksum is checked there:
zarr's read of the same chunk (into a buffer of its own, through its event
loop, then copied) measured ~3.5x the CPU. Anything else (a remote store,
sharded chunks, other codecs, a chunk file that is not there) gets no direct
reader or a False, and the caller reads through zarr as everywhere else."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

import google_crc32c
import numpy as np
import zarr
import zarr.codecs
from zarr.storage import LocalStore

from ..errors import ActstoreError

DirectRead = Callable[[tuple[int, ...], np.ndarray], bool]


def raw_with_checksum(array: zarr.Array) -> bool:
    """Whether ``array``'s chunks are its raw native-endian bytes followed by their CRC32C (this format's default)."""
    codecs = getattr(array.metadata, "codecs", ())
    return (len(codecs) == 2 and isinstance(codecs[0], zarr.codecs.BytesCodec)
            and isinstance(codecs[1], zarr.codecs.Crc32cCodec)
            and (array.dtype.itemsize == 1 or (codecs[0].endian is not None
                                               and codecs[0].endian.value == sys.byteorder)))


def direct_reader(array: zarr.Array) -> DirectRead | None:
    """``read(chunk_coords, out) -> bool`` for ``array`` when it is local, unsharded and raw bytes + CRC32C,
    else None. ``out`` is a C-contiguous block of one whole chunk; False means the chunk file is missing
    (never written: zarr gives its fill value) or not one chunk's size, and nothing was read."""
    if not isinstance(array.store, LocalStore) or array.shards is not None or not raw_with_checksum(array):
        return None
    root = Path(array.store.root) / array.path
    size = int(np.prod(array.chunks)) * array.dtype.itemsize

    def read(coords: tuple[int, ...], out: np.ndarray) -> bool:
        if out.nbytes != size or not out.flags.c_contiguous or out.dtype != array.dtype:
            raise ValueError(f"out must be one C-contiguous {array.dtype} chunk of {array.chunks}")
        key = array.metadata.encode_chunk_key(coords)
        try:
            fd = os.open(root / key, os.O_RDONLY)
        except FileNotFoundError:
            return False
        data = out.reshape(-1).view(np.uint8)
        stored = bytearray(5)                                  # the CRC32C, and one byte to see the file ends there
        try:
            got = os.readv(fd, [data, stored])
        finally:
            os.close(fd)
        if got != size + 4:
            return False
        data.flags.writeable = False                           # google_crc32c takes read-only buffers only
        if google_crc32c.value(data) != int.from_bytes(stored[:4], "little"):
            raise ActstoreError(f"chunk {key} of {array.path} is corrupt: its bytes do not match their CRC32C")
        return True

    return read
