"""One writer per run: a lock object next to the run group.

Two extractions aimed at the same run would interleave their blocks and their
``progress`` commits, so the second is refused with the holder named. The lock
is a small JSON object ``<model>/.<dataset>.lock`` — a name no group can take,
since encoded names never start with ``.``, and outside the run group, which a
replacing run deletes — holding the holder's host, pid, process start, time and
a random token. It is created atomically: a hard link of a finished file on
local disks (``O_EXCL`` where links are not supported), a conditional PUT
(If-None-Match) on S3, an exclusive create (``xb``) behind other fsspec URLs
(``objects.py``). A lock left by a dead process on this host is taken over; one
from another host is never guessed dead, and the message names the object to
delete.

Limits: a backend that ignores exclusive create makes the lock best-effort (it
is read back after writing, which catches most but not all simultaneous
starts), and taking over a stale remote lock is not atomic.

The same lock, at ``.results.lock`` in the store root, serialises the saving of analysis results
(``results_lock``): a save holds it for seconds, so a second one waits for it (bounded) rather than being
refused at once."""
from __future__ import annotations

import datetime
import json
import os
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import ActstoreError
from .handle import Store
from .layout import decode_name
from .objects import Objects, objects_at
from .remote_errors import raise_remote, remote_error
from .urls import is_remote, local_path


RESULTS_LOCK = ".results.lock"  # the store's results tree: one saver at a time (workflows/results.py)
WAIT_ENV = "ACTSTORE_LOCK_WAIT"  # seconds a results save waits for another to finish (default RESULTS_WAIT)
RESULTS_WAIT = 120.0


class LockBusy(ActstoreError):
    """The lock is held by a process that may still run."""


def lock_key(run_path: str) -> str:
    """The lock's key relative to the store root, for a run at ``<model>/<dataset>``."""
    model, dataset = run_path.rsplit("/", 1)
    return f"{model}/.{dataset}.lock"


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """``(state, start time)`` of ``pid`` from /proc (Linux), so a reused pid is not taken for the holder."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return fields[0], fields[19]
    except (OSError, IndexError):
        return None


def _holder() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "process_start": (_proc_stat(os.getpid()) or ("", None))[1],
            "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "token": uuid.uuid4().hex}


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the holder may still run: True unless it is provably gone from this host."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        pass
    stat = _proc_stat(pid)
    if stat is None:
        return True
    state, started = stat
    recorded = holder.get("process_start")
    return state != "Z" and (recorded is None or started == recorded)  # a zombie has exited; a new start is a reused pid


def _busy(url: str, what: str, holder: dict[str, Any], where: str) -> LockBusy:
    who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('since', '?')}"
    return LockBusy(f"{url}: {what} by {who}; wait for it to finish, or delete {where} if that process is gone")


def _run_what(run_path: str) -> str:
    return f"run {'/'.join(decode_name(part) for part in run_path.split('/'))} is being written"


class RunLock:
    """Held while one process writes one run (or saves results: ``key``/``what`` given); ``release`` removes only
    its own lock."""

    def __init__(self, url: str, run_path: str, storage_options: dict[str, Any] | None = None, *,
                 key: str | None = None, what: str | None = None):
        self.url, self.run_path, self.options = url, run_path, storage_options or {}
        self.key = key or lock_key(run_path)
        self.what = what or _run_what(run_path)
        self.holder = _holder()
        self._made: list[Path] = []  # directories created for the lock, removed again if left empty

    # -- local disks -------------------------------------------------------------------------------
    def _local_file(self) -> Path:
        return Path(local_path(self.url)) / self.key

    def _local_read(self, path: Path) -> dict[str, Any]:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise
        except (OSError, ValueError):
            return {}

    def _local_create(self, path: Path) -> bool:
        data = json.dumps(self.holder).encode()
        staging = path.with_name(f"{path.name}.{self.holder['token']}.tmp")
        staging.write_bytes(data)
        try:
            os.link(staging, path)  # atomic, and the lock is never seen half-written
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links here: exclusive create instead
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            return True
        finally:
            staging.unlink(missing_ok=True)

    def _local_take_over(self, path: Path, stale: dict[str, Any]) -> None:
        """Move a dead holder's lock aside; put it back if a live process took the lock meanwhile."""
        aside = path.with_name(f"{path.name}.{self.holder['token']}.stale")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        if self._local_read(aside).get("token") != stale.get("token"):
            try:
                os.link(aside, path)
            except OSError:
                pass
        aside.unlink(missing_ok=True)

    def _local_acquire(self) -> None:
        path = self._local_file()
        missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ActstoreError(f"cannot write the store at {self.url}: {exc.strerror or exc}") from None
        self._made = sorted(missing, key=lambda p: len(p.parts), reverse=True)
        for _ in range(3):
            if self._local_create(path):
                return
            try:
                holder = self._local_read(path)
            except FileNotFoundError:
                continue
            if _alive(holder) or not holder:
                raise _busy(self.url, self.what, holder, str(path))
            self._local_take_over(path, holder)
        raise _busy(self.url, self.what, {}, str(path))

    def _local_release(self) -> None:
        path = self._local_file()
        try:
            if self._local_read(path).get("token") == self.holder["token"]:
                path.unlink()
        except FileNotFoundError:
            pass
        for directory in self._made:
            try:
                directory.rmdir()
            except OSError:
                break

    # -- remote URLs ------------------------------------------------------------------------------
    def _remote(self) -> tuple[Objects, str]:
        return objects_at(self.url, self.options), self.key

    def _remote_read(self, objects: Objects, key: str) -> dict[str, Any] | None:
        data = objects.read(key)
        if data is None:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return {}

    def _remote_create(self, objects: Objects, key: str, data: bytes) -> bool:
        try:
            return objects.create(key, data)
        except OSError as exc:
            if remote_error(exc, self.url) is not None:
                raise
            raise ActstoreError(f"cannot create the lock {self.url.rstrip('/')}/{key}: {exc}") from None

    def _remote_acquire(self) -> None:
        objects, key = self._remote()
        where = f"{self.url.rstrip('/')}/{key}"
        for _ in range(3):
            if self._remote_create(objects, key, json.dumps(self.holder).encode()):
                holder = self._remote_read(objects, key) or {}
                if holder.get("token") != self.holder["token"]:  # lost a race the backend could not refuse
                    raise _busy(self.url, self.what, holder, where)
                return
            holder = self._remote_read(objects, key)
            if holder is None:
                continue
            if _alive(holder) or not holder:
                raise _busy(self.url, self.what, holder, where)
            objects.remove([key])  # a dead holder on this host; not atomic against a simultaneous taker
        raise _busy(self.url, self.what, self._remote_read(objects, key) or {}, where)

    def _remote_release(self) -> None:
        objects, key = self._remote()
        try:
            if (self._remote_read(objects, key) or {}).get("token") == self.holder["token"]:
                objects.remove([key])
        except Exception as exc:  # noqa: BLE001 - one line, like acquiring
            raise_remote(exc, self.url)

    def _acquire_once(self) -> None:
        if not is_remote(self.url):
            self._local_acquire()
            return
        try:
            self._remote_acquire()
        except LockBusy:
            raise
        except Exception as exc:  # bad credentials, missing bucket, unreachable endpoint: one line
            raise_remote(exc, self.url)

    def acquire(self, wait: float = 0.0) -> RunLock:
        """Take the lock, waiting up to ``wait`` seconds for a live holder, or raise a one-line ``ActstoreError``
        naming the holder."""
        deadline = time.monotonic() + wait
        pause = 0.05
        while True:
            try:
                self._acquire_once()
                return self
            except LockBusy as exc:
                if time.monotonic() + pause > deadline:
                    if wait > 0:
                        raise LockBusy(f"{exc} (waited {wait:g} s)") from None
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 1.0)

    def release(self) -> None:
        (self._remote_release if is_remote(self.url) else self._local_release)()


@contextmanager
def run_lock(store: str | Store, run_path: str, storage_options: dict[str, Any] | None = None) -> Iterator[RunLock]:
    """Hold the write lock of the run at ``run_path`` (``<model>/<dataset>`` as encoded) in a store.

    Takes a URL as well as a ``Store``: the lock is taken before a new store's root is created."""
    if isinstance(store, Store):
        store, storage_options = store.url, store.storage_options
    lock = RunLock(store, run_path, storage_options).acquire()
    try:
        yield lock
    finally:
        lock.release()


def results_wait() -> float:
    """How long a results save waits for another: ``ACTSTORE_LOCK_WAIT`` seconds, else ``RESULTS_WAIT``."""
    try:
        return max(0.0, float(os.environ.get(WAIT_ENV, RESULTS_WAIT)))
    except ValueError:
        raise ActstoreError(f"{WAIT_ENV} must be a number of seconds, got {os.environ[WAIT_ENV]!r}") from None


@contextmanager
def results_lock(store: Store, wait: float | None = None) -> Iterator[RunLock]:
    """Hold the store's results lock (one saver of analysis results at a time), waiting up to ``wait`` seconds
    (default ``results_wait()``) for another saver to finish."""
    lock = RunLock(store.url, "", store.storage_options, key=RESULTS_LOCK, what="results are being saved")
    lock.acquire(results_wait() if wait is None else wait)
    try:
        yield lock
    finally:
        lock.release()
