"""One end of a copy (``transfer.py``): a store's objects by key, read, written and removed with storage
failures as one-line errors; and the thread pool the copy's phases share."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Callable, NoReturn

from ..errors import ActstoreError
from . import layout, location
from .objects import Listed, md5, objects_at

ROOT = layout.METADATA


class Side:
    """One end of a copy: listing, reading, writing and removing objects by key relative to the store root, with
    storage failures as one-line errors."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None):
        self.url = str(url)
        self.local = not location.is_remote(self.url)
        try:
            self.objects = objects_at(self.url, storage_options)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    def same_place(self, other: Side) -> bool:
        (service, root), (other_service, other_root) = self.objects.place, other.objects.place
        if service != other_service:  # another filesystem, or the same kind with another endpoint
            return False
        a, b = root.rstrip("/") + "/", other_root.rstrip("/") + "/"
        return a.startswith(b) or b.startswith(a)

    def _fail(self, exc: Exception) -> NoReturn:
        error = location.remote_error(exc, self.url)
        if error is not None:
            raise error from None
        if isinstance(exc, OSError) and self.local:
            raise ActstoreError(f"cannot use {self.url}: {exc.strerror or exc}") from None
        raise exc

    def list(self) -> dict[str, Listed]:
        try:
            return self.objects.list()
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None when it is not there."""
        try:
            return self.objects.read(key)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    def docs(self, units: list[str], jobs: int) -> dict[str, dict[str, Any] | None]:
        """The group metadata (``<unit>/zarr.json``) of each unit, None where absent; read concurrently."""
        found = dict(parallel(lambda unit: (unit, self.read(f"{unit}/{ROOT}")), units, jobs))
        return {unit: parse_doc(found[unit], f"{self.url}/{unit}/{ROOT}") for unit in units}

    def write(self, key: str, data: bytes) -> None:
        """Write one whole object (never seen half-written)."""
        try:
            self.objects.write(key, data)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    def remove(self, keys: list[str]) -> None:
        try:
            self.objects.remove(keys)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    def md5(self, key: str, obj: Listed) -> tuple[str | None, bytes | None]:
        """The object's MD5: from the listing when it is there, else by reading it (the bytes come back too)."""
        if obj.md5 is not None:
            return obj.md5, None
        data = self.read(key)
        return (md5(data).hexdigest(), data) if data is not None else (None, None)


def parallel(fn: Callable[[str], Any], keys: list[str], jobs: int) -> list[Any]:
    """``fn`` over ``keys`` on ``jobs`` threads; the first failure cancels what has not started and is raised."""
    if not keys:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(keys))), thread_name_prefix="actstore-copy") as pool:
        futures = [pool.submit(fn, key) for key in keys]
        try:
            return [future.result() for future in as_completed(futures)]
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def parse_doc(data: bytes | None, where: str) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        doc = json.loads(data)
    except ValueError:
        raise ActstoreError(f"{where} is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ActstoreError(f"{where} is not Zarr metadata")
    return doc

