"""Replacing one group of a store in one step, so a reader sees the old group or the new one, never neither, never half.

The new group is written whole under a temporary name in the store's staging area
(``.actstore-staging/<token>``, a dot-name no reader, consolidation, copy or ``verify`` walks), read back and
checked by the caller, and only then put in place, under the caller's lock:

- on a local disk by one ``rename``: an atomic exchange of the two directories (``renameat2`` with
  ``RENAME_EXCHANGE``, Linux) where there is an old group, a plain rename where there is none; where the
  exchange is not supported, two renames with a journal, so a kill between them is undone by the next save;
- on an object store (no rename there) by copying the staged objects into place after the journal says so,
  then deleting the old group's objects the new one does not have. A kill while copying is rolled forward by the
  next save (``recover``) and named by ``actstore verify`` meanwhile; a reader reading during the copy (seconds)
  can meet some new objects beside old ones.

Where an old group is replaced, the root ``zarr.json`` is first written without its consolidated metadata, so
that until it is refreshed readers read each node's own metadata, which moves with its chunks (never the old
description over the new chunks). Then the consolidated metadata is refreshed (one atomic write of the root
``zarr.json``); if that fails, a local exchange is undone and the root document put back, so the description
readers open and the group on disk stay in step. The old group is
deleted last. Each staged save has a journal ``<token>.json`` (target, state) beside it; whatever a killed save
leaves in the staging area is undone or finished by the next ``recover``."""
from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import signal
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ActstoreError
from . import layout, location
from .handle import Store
from .objects import Objects, objects_at
from .urls import is_remote, local_path

STAGING = ".actstore-staging"
# Test hook: with ACTSTORE_FAULT_RESULT=<step> the process SIGKILLs itself at that step of a result save:
# staged (written, not checked), checked, swapped (local: in place, not consolidated), copying (remote: half the
# objects copied), copied (remote: all copied, not consolidated), consolidated (the old group not yet deleted).
FAULT_ENV = "ACTSTORE_FAULT_RESULT"
STATES = ("staging", "checked", "swapping", "publishing")


def fault(step: str) -> None:
    """SIGKILL this process at ``step`` when ``FAULT_ENV`` names it (tests/test_result_faults.py)."""
    if os.environ.get(FAULT_ENV) == step:
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


@dataclass
class Staged:
    """One new group being written in the staging area, to replace ``target``."""

    store: Store
    target: str
    token: str
    state: str = "staging"

    @property
    def key(self) -> str:
        """The staged group's key prefix relative to the store root."""
        return f"{STAGING}/{self.token}"

    def zarr_store(self) -> Any:
        """A Zarr store whose root is the staged group: write the new group at its root."""
        url = self.store.url
        where = os.path.join(local_path(url), self.key) if not is_remote(url) else f"{url.rstrip('/')}/{self.key}"
        return location.zarr_store(where, self.store.storage_options)

    def mark(self, state: str, **extra: Any) -> None:
        """Record the save's state in its journal (one atomic write)."""
        record = {"target": self.target, "state": state, **extra}
        _area(self.store).write(f"{self.token}.json", json.dumps(record).encode())
        self.state = state

    @property
    def copying(self) -> bool:
        """Whether a copy into place (object stores) has begun: from then on only finishing it keeps the group."""
        return is_remote(self.store.url) and self.state == "publishing"


def _area(store: Store) -> Objects:
    url = store.url
    return objects_at(f"{url.rstrip('/')}/{STAGING}" if is_remote(url) else os.path.join(local_path(url), STAGING),
                      store.storage_options)


def stage(store: Store, target: str) -> Staged:
    """A fresh staging place for a group that is to replace ``target``; its journal is written first."""
    staged = Staged(store, target, uuid.uuid4().hex)
    staged.mark("staging")
    return staged


def discard(staged: Staged) -> None:
    """Remove what a save staged (never the group in place)."""
    _remove_token(staged.store, staged.token)


def abandon(staged: Staged) -> None:
    """After a failure: remove what was staged, unless an interrupted copy into place needs it to be finished."""
    if not staged.copying:
        discard(staged)


def _consolidate(store: Store) -> None:
    """Refresh the consolidated metadata; metadata that cannot be read is a one-line error pointing to verify."""
    try:
        store.consolidate()
    except (OSError, ActstoreError):
        raise
    except Exception as exc:  # noqa: BLE001 - zarr's parse errors of some other node's zarr.json
        raise ActstoreError(f"{store.url}: cannot refresh the consolidated metadata ({type(exc).__name__}); "
                            f"`actstore verify {store.url}` names the damaged metadata") from None


def _unconsolidate(store: Store, target: str) -> bytes | None:
    """Before an old group at ``target`` is replaced: the root ``zarr.json`` without its consolidated metadata (one
    atomic write), so that until the consolidation after the replacement readers read each node's own metadata,
    which moves with its chunks, and see the old group or the new one whole; never the old description over the
    new chunks (a kill in between left ``actstore.open`` failing on "cannot reshape"). Returns the root document as
    it was (None: nothing was changed)."""
    objects = objects_at(store.url, store.storage_options)
    if objects.read(f"{target}/{layout.METADATA}") is None:
        return None  # no old group: readers of the consolidated metadata see none until the new one is described
    before = objects.read(layout.METADATA)
    try:
        doc = json.loads(before) if before is not None else None
    except ValueError:
        return None  # consolidating names it (verify)
    if not isinstance(doc, dict) or doc.get("consolidated_metadata") is None:
        return None
    doc.pop("consolidated_metadata")
    objects.write(layout.METADATA, json.dumps(doc, indent=2).encode())
    return before


def _put_back_root(store: Store, before: bytes | None) -> None:
    """After a replacement was undone: the root ``zarr.json`` as it was (best effort: without it readers read the
    live metadata, which is the old group's again)."""
    if before is None:
        return
    try:
        objects_at(store.url, store.storage_options).write(layout.METADATA, before)
    except OSError:
        pass


def _remove_token(store: Store, token: str) -> None:
    if not is_remote(store.url):
        base = Path(local_path(store.url)) / STAGING
        for leftover in (base / token, base / f"{token}.old"):
            shutil.rmtree(leftover, ignore_errors=True)
        (base / f"{token}.json").unlink(missing_ok=True)
        try:
            base.rmdir()  # the staging area goes when it is empty
        except OSError:
            pass
        return
    area = _area(store)
    area.remove(sorted(k for k in area.list() if k.split("/", 1)[0] in (token, f"{token}.old")))
    area.remove([f"{token}.json"])


# --- local disks -------------------------------------------------------------------------------------------
def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one step; False where the system or file system cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _swap_local(staged: Staged) -> Path | None:
    """Put the staged group in place; returns where the old group went (None: there was none)."""
    root = Path(local_path(staged.store.url))
    new, target = root / staged.key, root / staged.target
    if not target.exists():
        os.rename(new, target)
        return None
    if _exchange(new, target):
        return new
    aside = root / f"{staged.key}.old"
    staged.mark("swapping")
    os.rename(target, aside)
    os.rename(new, target)
    return aside


def _unswap_local(staged: Staged, old: Path | None) -> None:
    """Undo ``_swap_local``: the staged group back in the staging area, the old one in place."""
    root = Path(local_path(staged.store.url))
    new, target = root / staged.key, root / staged.target
    if old is None:
        os.rename(target, new)
    elif old == new:
        _exchange(new, target)
    else:
        os.rename(target, new)
        os.rename(old, target)


def _publish_local(staged: Staged) -> None:
    before = _unconsolidate(staged.store, staged.target)
    try:
        old = _swap_local(staged)
    except BaseException:
        _put_back_root(staged.store, before)
        raise
    try:
        fault("swapped")
        _consolidate(staged.store)
    except BaseException:
        _unswap_local(staged, old)
        _put_back_root(staged.store, before)
        raise
    fault("consolidated")
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    discard(staged)


def _restore_local(store: Store, token: str, record: dict[str, Any]) -> bool:
    """After a kill: a target left missing between two renames gets the staged (checked) or the old group back."""
    root = Path(local_path(store.url))
    target = root / record.get("target", "")
    if not record.get("target") or (target / layout.METADATA).exists():
        return False
    for candidate, usable in ((root / STAGING / token, record.get("state") in ("checked", "swapping")),
                              (root / STAGING / f"{token}.old", True)):
        if usable and (candidate / layout.METADATA).exists():
            shutil.rmtree(target, ignore_errors=True)
            os.rename(candidate, target)
            return True
    return False


# --- object stores -----------------------------------------------------------------------------------------
def _copy_into_place(store: Store, token: str, target: str) -> None:
    """The staged objects over the target's (data first, the group's own ``zarr.json`` last), then the target's
    objects the staged group does not have are deleted."""
    base, options = store.url.rstrip("/"), store.storage_options
    source, destination = objects_at(f"{base}/{STAGING}/{token}", options), objects_at(f"{base}/{target}", options)
    keys = sorted(source.list(), key=lambda k: (k == layout.METADATA, k.endswith(layout.METADATA), k))
    for number, key in enumerate(keys, 1):
        data = source.read(key)
        if data is None:
            raise FileNotFoundError(f"{base}/{STAGING}/{token}/{key}")
        destination.write(key, data)
        if number == len(keys) // 2:
            fault("copying")
    destination.remove(sorted(set(destination.list()) - set(keys)))


def _publish_remote(staged: Staged) -> None:
    before = _unconsolidate(staged.store, staged.target)
    try:
        staged.mark("publishing")
    except BaseException:
        _put_back_root(staged.store, before)
        raise
    _copy_into_place(staged.store, staged.token, staged.target)
    fault("copied")
    _consolidate(staged.store)
    fault("consolidated")
    discard(staged)


# --- both --------------------------------------------------------------------------------------------------
def publish(staged: Staged) -> None:
    """Put a staged, checked group in place, refresh the consolidated metadata, delete the old group; the caller
    holds the lock that serialises replacements in this store."""
    (_publish_remote if is_remote(staged.store.url) else _publish_local)(staged)


def journals(store: Store) -> dict[str, dict[str, Any]]:
    """The journals in the staging area: token → record (a damaged journal reads as an empty record)."""
    area = _area(store)
    found = {}
    for key in area.list():
        if "/" not in key and key.endswith(".json"):
            try:
                found[key[:-5]] = json.loads(area.read(key) or b"{}")
            except ValueError:
                found[key[:-5]] = {}
    return found


def recover(store: Store) -> bool:
    """Finish or undo what killed saves left (the caller holds the lock): a target left missing gets its group
    back, an interrupted copy is completed, every staged leftover is deleted. True when any was found."""
    found = journals(store)
    for token, record in found.items():
        if is_remote(store.url):
            if record.get("state") == "publishing" and record.get("target"):
                _copy_into_place(store, token, record["target"])
        else:
            _restore_local(store, token, record)
    leftovers = _clear_area(store)
    if found or leftovers:
        _consolidate(store)
    return bool(found or leftovers)


def _clear_area(store: Store) -> bool:
    """Delete everything in the staging area; whether there was anything."""
    if not is_remote(store.url):
        base = Path(local_path(store.url)) / STAGING
        if not base.exists():
            return False
        had = any(base.iterdir())
        shutil.rmtree(base, ignore_errors=True)
        return had
    area = _area(store)
    keys = sorted(area.list())
    area.remove(keys)
    return bool(keys)
