"""Whole objects under a store URL, for what moves objects rather than arrays: push/pull and run locks.

``objects_at(url)`` lists, reads, writes, creates-if-absent and removes objects
by key relative to the store root: through obstore on ``s3://`` wherever it
serves the URL (``s3_client``; PUTs run off the GIL, so threads upload side by
side, and objects over ``SINGLE_PUT_LIMIT`` go up in parallel parts), through
fsspec elsewhere, and through temporary files on local disks, so a killed copy
leaves no torn file. Failures are raised as the client raised them, except a
missing object (None); callers translate them (``remote_errors``)."""
from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any, Hashable

from . import location
from .remote_errors import remote_error
from .s3_client import SINGLE_PUT_LIMIT, s3_store
from .urls import is_remote, is_s3

TMP_MARK = ".actstore-tmp-"
PART_BYTES = 64 * 2**20  # parts of larger objects, uploaded 8 at a time


@dataclass(frozen=True)
class Listed:
    size: int
    md5: str | None  # when the listing gives it for nothing: S3's ETag of a single-part upload, GCS's md5Hash


def md5(data: bytes):
    return hashlib.md5(data, usedforsecurity=False)  # an integrity check, also where FIPS forbids MD5 for security


def listed_md5(info: dict[str, Any]) -> str | None:
    """The MD5 in one listing entry (fsspec's or obstore's), when it is one."""
    etag = str(info.get("ETag") or info.get("etag") or info.get("e_tag") or "").strip('"')
    if re.fullmatch(r"[0-9a-fA-F]{32}", etag):
        return etag.lower()
    md5_hash = info.get("md5Hash")  # Google Cloud Storage: base64
    if md5_hash:
        try:
            return base64.b64decode(md5_hash).hex()
        except ValueError:
            return None
    return None


def _missing(exc: FileNotFoundError, url: str) -> None:
    """A missing object is None to the caller; a missing bucket (also 'not found' to some clients) is raised."""
    if remote_error(exc, url) is not None:
        raise exc


class FsspecObjects:
    """Objects behind any fsspec URL."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = str(url)
        self.fs, self.root = location.filesystem(self.url, storage_options)

    def path(self, key: str) -> str:
        return f"{self.root}/{key}"

    @property
    def place(self) -> tuple[Hashable, str]:
        """Which storage service (with its endpoint and options) and which path in it: what overlaps what."""
        return self.fs, self.root

    def list(self) -> dict[str, Listed]:
        self.fs.invalidate_cache()
        try:
            found = self.fs.find(self.root, detail=True)
        except FileNotFoundError as exc:
            _missing(exc, self.url)
            return {}
        prefix = self.root + "/"
        return {name[len(prefix):]: Listed(int(info.get("size") or 0), listed_md5(info))
                for name, info in found.items() if name.startswith(prefix) and info.get("type", "file") == "file"}

    def read(self, key: str) -> bytes | None:
        try:
            return self.fs.cat_file(self.path(key))
        except FileNotFoundError as exc:
            _missing(exc, self.url)
            return None
        except IsADirectoryError:
            return None

    def write(self, key: str, data: bytes) -> None:
        if is_s3(self.url) and len(data) < SINGLE_PUT_LIMIT:  # one PUT, which S3 checks against Content-MD5
            digest = base64.b64encode(md5(data).digest()).decode()
            self.fs.pipe_file(self.path(key), data, chunksize=max(len(data), 5 * 2**20), ContentMD5=digest)
        else:
            self.fs.pipe_file(self.path(key), data)

    def create(self, key: str, data: bytes) -> bool:
        """Write ``key`` unless it exists (S3's If-None-Match behind s3fs); False when it does. Where the backend
        has no exclusive create this is best-effort: check, then write."""
        path = self.path(key)
        try:
            with self.fs.open(path, "xb") as handle:
                handle.write(data)
            return True
        except (ValueError, NotImplementedError):
            self.fs.invalidate_cache()
            if self.fs.exists(path):
                return False
            self.fs.pipe_file(path, data)
            return True
        except OSError as exc:  # FileExistsError, or a failed If-None-Match some servers report otherwise
            self.fs.invalidate_cache()
            if isinstance(exc, FileExistsError) or self.fs.exists(path):
                return False
            raise

    def remove(self, keys: list[str]) -> None:
        if keys:
            try:
                self.fs.rm([self.path(key) for key in keys])
            except FileNotFoundError as exc:
                _missing(exc, self.url)


class LocalObjects(FsspecObjects):
    """Objects as files in a local directory, written through a temporary file and renamed into place."""

    def write(self, key: str, data: bytes) -> None:
        path = self.path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temporary = f"{path}{TMP_MARK}{os.getpid()}"
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)

    def remove(self, keys: list[str]) -> None:
        for key in keys:
            try:
                os.remove(self.path(key))
            except FileNotFoundError:
                pass


class ObstoreObjects:
    """Objects under an ``s3://`` URL through obstore."""

    def __init__(self, url: str, store: Any) -> None:
        self.url, self.store = str(url), store

    @property
    def place(self) -> tuple[Hashable, str]:
        config = self.store.config
        return ("s3", config.get("endpoint"), config.get("region")), f"{config['bucket']}/{self.store.prefix or ''}"

    def list(self) -> dict[str, Listed]:
        import obstore

        return {meta["path"]: Listed(int(meta["size"]), listed_md5(meta))
                for batch in obstore.list(self.store) for meta in batch}

    def read(self, key: str) -> bytes | None:
        import obstore

        try:
            return obstore.get(self.store, key).bytes().to_bytes()
        except FileNotFoundError as exc:
            _missing(exc, self.url)
            return None

    def write(self, key: str, data: bytes) -> None:
        """One PUT below S3's single-PUT limit (its ETag is then the MD5 that verification reads from listings),
        parallel parts above it."""
        import obstore

        obstore.put(self.store, key, data, use_multipart=len(data) >= SINGLE_PUT_LIMIT, chunk_size=PART_BYTES,
                    max_concurrency=8)

    def create(self, key: str, data: bytes) -> bool:
        """Write ``key`` unless it exists, atomically (a conditional PUT, If-None-Match); False when it does."""
        import obstore
        from obstore.exceptions import AlreadyExistsError

        try:
            obstore.put(self.store, key, data, mode="create")
            return True
        except AlreadyExistsError:
            return False

    def remove(self, keys: list[str]) -> None:
        import obstore

        if keys:
            try:
                obstore.delete(self.store, keys)  # batched: up to 1000 keys a request
            except FileNotFoundError as exc:
                _missing(exc, self.url)


Objects = FsspecObjects | ObstoreObjects


def objects_at(url: str, storage_options: dict[str, Any] | None = None) -> Objects:
    """The objects under a store URL, through the client that serves it best."""
    if not is_remote(url):
        return LocalObjects(url)
    store = s3_store(url, storage_options)
    return FsspecObjects(url, storage_options) if store is None else ObstoreObjects(url, store)
