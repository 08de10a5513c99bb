"""Strict reads: a chunk that is missing or fails its checksum raises, naming its key.

Zarr reads a missing chunk as the fill value, so an analysis over a run with a lost chunk computes NaN (or,
for a coordinate, zeros) and would save that over a good result. Every chunk of a run, a lens head, a steering
vector or a recorded intervention is written even when it equals the fill value (``arrays.py``), so for what an
analysis reads a missing chunk is always damage. ``strict(store)`` is the same store with reads that say so,
before anything is computed from them; a whole-chunk read of an array whose codecs end in CRC32C is checked here,
so the error names the chunk (zarr's own check, which still runs, names none)."""
from __future__ import annotations

import json
import re

import google_crc32c
import zarr
from zarr.abc.store import ByteRequest
from zarr.abc.store import Store as ZarrStore
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.storage import WrapperStore

from ..errors import ActstoreError
from . import layout
from .handle import Store, quiet_zarr

_CHUNK = re.compile(r"^(?P<array>.+)/c(/\d+)*$")  # the default chunk key encoding: <array>/c/0/1/2 (c alone: 0-d)


def verify_hint(url: str) -> str:
    return f"`actstore verify {url}` lists every damaged chunk"


class DamagedChunk(ActstoreError):
    """A chunk (or a ``zarr.json``) an analysis read is missing or damaged (``detail``); its arguments survive
    pickling (dask workers)."""

    def __init__(self, url: str, key: str, detail: str) -> None:
        super().__init__(url, key, detail)
        self.url, self.key, self.detail = url, key, detail

    @property
    def what(self) -> str:
        return self.key if self.key.endswith(layout.METADATA) else f"chunk {self.key}"

    def __str__(self) -> str:
        return f"{self.url}: {self.what} is {self.detail}; {verify_hint(self.url)}"


class StrictStore(WrapperStore[ZarrStore]):
    """``wrapped`` with chunk reads that raise ``DamagedChunk`` for a missing chunk or a checksum mismatch."""

    def __init__(self, store: ZarrStore, url: str) -> None:
        super().__init__(store)
        self.url = url
        self._checksummed: dict[str, bool] = {}  # array path → whether its chunks end in a CRC32C

    def _with_store(self, store: ZarrStore) -> StrictStore:
        return type(self)(store, self.url)

    @property
    def wrapped(self) -> ZarrStore:
        """The client's own store beneath (what ``location.fork_safe`` looks at)."""
        return getattr(self._store, "wrapped", self._store)

    def __repr__(self) -> str:
        return f"StrictStore({self._store!r})"

    async def _has_checksum(self, array: str) -> bool:
        if array not in self._checksummed:
            doc = await self._store.get(f"{array}/{layout.METADATA}", default_buffer_prototype())
            try:
                codecs = json.loads(doc.to_bytes()).get("codecs", []) if doc is not None else []
            except ValueError:
                codecs = []
            self._checksummed[array] = bool(codecs) and codecs[-1].get("name") == "crc32c" \
                and codecs[0].get("name") != "sharding_indexed"
        return self._checksummed[array]

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        value = await self._store.get(key, prototype, byte_range)
        if key.endswith(layout.METADATA) and value is not None and byte_range is None:
            try:
                json.loads(value.to_bytes())
            except ValueError as exc:
                raise DamagedChunk(self.url, key, f"unreadable ({type(exc).__name__})") from None
        found = _CHUNK.match(key)
        if found is None:
            return value
        if value is None:
            raise DamagedChunk(self.url, key, "missing")
        if byte_range is None and await self._has_checksum(found["array"]):
            data = value.to_bytes()
            if len(data) < 4 or google_crc32c.value(data[:-4]).to_bytes(4, "little") != data[-4:]:
                raise DamagedChunk(self.url, key, "damaged (checksum mismatch)")
        return value


def strict(store: Store) -> Store:
    """The same store, read strictly (see the module), its root read again through the strict reads as the handle
    reads it (consolidated when read-only, live when writable); writes, if any, go through unchanged."""
    if isinstance(store.zarr_store, StrictStore):
        return store
    checked = StrictStore(store.zarr_store, store.url)
    with quiet_zarr():
        if store.writable:
            root = zarr.open_group(checked, mode="r+", use_consolidated=False)
        else:
            root = zarr.open_group(checked, mode="r", zarr_format=3)
    return Store(store.url, store.storage_options, checked, root, store.mode)


def is_damage(exc: BaseException) -> bool:
    """Whether ``exc`` is a damaged chunk zarr found itself (a checksum inside a shard): one line, not a bug."""
    return isinstance(exc, ValueError) and "checksum" in str(exc).lower()
