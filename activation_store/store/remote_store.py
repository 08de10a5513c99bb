"""One Zarr store wrapper for every remote client: storage failures surface as one-line ``ActstoreError``s.

Zarr's ``FsspecStore`` (s3fs and other fsspec URLs) and ``ObjectStore`` (obstore on
``s3://``) both fail with their own exception types, mid-compute as well as on
open. Wrapping either in ``RemoteStore`` (zarr's ``WrapperStore``, as its
``LoggingStore`` adds logging) translates them by ``remote_errors`` for reads,
writes, deletes and listings alike, so both clients read and write the same."""
from __future__ import annotations

import functools
from typing import Any, AsyncIterator

from zarr.abc.store import Store as ZarrStore
from zarr.storage import WrapperStore

from .remote_errors import raise_remote


def _translated(method):
    @functools.wraps(method)
    async def wrapper(self: RemoteStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - narrowed by raise_remote
            raise_remote(exc, self.url)
    return wrapper


def _translated_iter(method):
    @functools.wraps(method)
    async def wrapper(self: RemoteStore, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        try:
            async for item in method(self, *args, **kwargs):
                yield item
        except Exception as exc:  # noqa: BLE001
            raise_remote(exc, self.url)
    return wrapper


class RemoteStore(WrapperStore[ZarrStore]):
    """A remote Zarr store (``wrapped``) at ``url`` whose storage failures are one-line ``ActstoreError``s."""

    def __init__(self, store: ZarrStore, url: str) -> None:
        super().__init__(store)
        self.url = url

    def _with_store(self, store: ZarrStore) -> RemoteStore:
        return type(self)(store, self.url)

    @property
    def wrapped(self) -> ZarrStore:
        """The client's own Zarr store (``FsspecStore`` or ``ObjectStore``)."""
        return self._store

    def __repr__(self) -> str:
        return f"RemoteStore({self._store!r})"

    async def _getsize(self, key: str) -> int:  # not delegated by WrapperStore: the base class would GET the object
        return await self._store.getsize(key)

    async def _getsize_prefix(self, prefix: str) -> int:
        return await self._store.getsize_prefix(prefix)

    _open = _translated(WrapperStore._open)
    _ensure_open = _translated(WrapperStore._ensure_open)
    is_empty = _translated(WrapperStore.is_empty)
    clear = _translated(WrapperStore.clear)
    get = _translated(WrapperStore.get)
    get_partial_values = _translated(WrapperStore.get_partial_values)
    exists = _translated(WrapperStore.exists)
    getsize = _translated(_getsize)
    getsize_prefix = _translated(_getsize_prefix)
    set = _translated(WrapperStore.set)
    set_if_not_exists = _translated(WrapperStore.set_if_not_exists)
    _set_many = _translated(WrapperStore._set_many)
    delete = _translated(WrapperStore.delete)
    delete_dir = _translated(WrapperStore.delete_dir)
    list = _translated_iter(WrapperStore.list)
    list_dir = _translated_iter(WrapperStore.list_dir)
    list_prefix = _translated_iter(WrapperStore.list_prefix)
    _get_many = _translated_iter(WrapperStore._get_many)
