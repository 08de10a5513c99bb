"""Copying a store, or one model or run of it, between any two fsspec URLs (``actstore push`` / ``pull``).

Safe to interrupt and to repeat. An object already at the destination with the
same size and MD5 is skipped, so running the command again resumes it. MD5
because S3 reports it as the ETag of a single-part upload: checking the remote
side costs one listing per 1000 objects, not a download. Objects are uploaded in
one PUT each (``objects.py``: through obstore on ``s3://``, ``jobs`` PUTs in
flight; with Content-MD5 behind s3fs), so the listing's ETag proves what
arrived. Where no MD5 comes cheaply (multipart or KMS ETags, other filesystems,
local files) the object is read back and hashed.

Order makes a half-copied store invisible: chunk data first, then array and
group metadata, then, once every object is verified, the root ``zarr.json``
with the consolidated metadata that readers open. A store copied for the first
time has no root until the end. An existing one keeps presenting its old,
consistent content until then.

Units of a store (layout: ``/<model>`` holds the lens head, ``/<model>/<dataset>``
one run) are what a copy replaces. Each copied unit ends identical to the source,
and stale objects are removed from it. Other runs already at the destination are
kept and stay listed in the merged consolidated metadata. A unit at the
destination that belongs to a different store (another ``model_checksum`` or
``config_hash``, or more of the same run) is refused unless ``overwrite``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .transfer_phases import make_plan, make_room, publish, send, verify_copy


@dataclass(frozen=True)
class CopyOptions:
    """How a copy runs: ``overwrite`` replaces what differs at the destination; the storage options of each end;
    ``jobs`` objects at once; a progress bar named ``verb``; ``after_object(key)`` after each object sent
    (progress hooks; raising stops the copy there)."""

    overwrite: bool = False
    source_options: dict[str, Any] | None = None
    destination_options: dict[str, Any] | None = None
    jobs: int = 8
    progress: bool = True
    verb: str = "copy"
    after_object: Callable[[str], None] | None = None


@dataclass
class TransferResult:
    source: str
    destination: str
    scope: str
    objects: int = 0
    sent: int = 0
    skipped: int = 0
    removed: int = 0
    replaced: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    seconds: float = 0.0

    def summary(self, verb: str = "copied") -> str:
        replaced = f"; replaced {', '.join(self.replaced)}" if self.replaced else ""
        return (f"{verb} {self.scope} from {self.source} to {self.destination}: {self.objects} objects verified — "
                f"{self.sent} sent ({self.bytes_sent / 1e6:,.1f} MB), {self.skipped} already there, "
                f"{self.removed} stale removed{replaced}; {self.seconds:.1f}s")


def copy_store(source: str, destination: str, model: str | None = None, dataset: str | None = None, *,
               options: CopyOptions | None = None, **keywords: Any) -> TransferResult:
    """Copy a store, one model (its lens head and runs) or one run to ``destination``; resumable and verified.

    How it runs comes as ``options``, or as ``CopyOptions``'s fields by keyword (``overwrite=True, jobs=4``)."""
    if options is not None and keywords:
        raise TypeError("copy_store takes options or keywords, not both")
    options = options if options is not None else CopyOptions(**keywords)
    started = time.perf_counter()
    plan = make_plan(source, destination, model, dataset, options)
    result = TransferResult(source, destination, plan.scope, objects=len(plan.keys))
    replaced = make_room(plan, result, options.overwrite, options.jobs)
    sent = send(plan, result, options)
    landed = verify_copy(plan, result, sent, options.jobs)
    publish(plan, landed, replaced, options.destination_options)
    result.seconds = time.perf_counter() - started
    return result
