"""Whether a store can be written, found out by writing: before an analysis computes or writes anything.

A store opened for writing on a read-only mount, a directory of another user, or a bucket these credentials may
only read opens fine; its first write fails. Writing (and removing) one small dot-named object, which no reader
or copy sees, finds that out first, so nothing is written anywhere before the refusal."""
from __future__ import annotations

import uuid

from ..errors import ActstoreError
from .handle import Store
from .objects import objects_at
from .remote_errors import remote_error

PROBE = ".actstore-probe-"


class ReadOnlyStore(ActstoreError):
    """The store cannot be written here."""


def check_writable(store: Store) -> None:
    """Raise ``ReadOnlyStore`` (one line, with the cause) unless one object can be written into ``store``."""
    store.require_writable()
    objects = objects_at(store.url, store.storage_options)
    key = f"{PROBE}{uuid.uuid4().hex}"
    try:
        objects.write(key, b"")
        objects.remove([key])
    except OSError as exc:
        error = remote_error(exc, store.url)
        cause = str(error) if error is not None and error is not exc else (exc.strerror or str(exc))
        raise ReadOnlyStore(f"{store.url} cannot be written ({cause})") from None
    except Exception as exc:  # noqa: BLE001 - a client's own refusal (obstore, botocore)
        error = remote_error(exc, store.url)
        if error is None:
            raise
        raise ReadOnlyStore(f"{store.url} cannot be written ({error})") from None
