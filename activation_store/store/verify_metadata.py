"""The metadata side of ``actstore verify``: every ``zarr.json`` parsed (the file named when it cannot be), and each
node's live document compared with the consolidated metadata readers open instead.

Readers of a store (``actstore.open``, ``open_run``, any Zarr client with consolidated metadata) take every
node's shape, chunking, codecs and attributes from the root's consolidated metadata, and read the chunks the
live files hold; a node whose two descriptions disagree is served wrongly (a ``hidden`` whose live document says
600 tokens, read as 656), and a node that only the consolidated metadata lists is served as all fill (NaN). The
one difference readers are built for is an unfinished run's ``progress``, which they read live
(``commits.live_attrs``)."""
from __future__ import annotations

import json
from typing import Any

from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from .write import PROGRESS_ATTR

LIVE_ATTRS = (PROGRESS_ATTR,)  # attributes of a run that readers take from its own zarr.json
SHOWN = ("node_type", "shape", "data_type", "chunk_grid", "chunk_key_encoding", "codecs", "fill_value",
         "dimension_names", "storage_transformers")


def read_doc(zarr_store: Any, key: str) -> tuple[dict[str, Any] | None, str | None]:
    """``(document, None)``, ``(None, None)`` when ``key`` is absent, or ``(None, why)`` when it cannot be parsed."""
    data = sync(zarr_store.get(key, default_buffer_prototype()))
    if data is None:
        return None, None
    try:
        doc = json.loads(data.to_bytes())
    except ValueError as exc:
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    if not isinstance(doc, dict) or doc.get("node_type") not in ("group", "array") or doc.get("zarr_format") != 3:
        return None, "not a Zarr v3 group or array document"
    return doc, None


def consolidated_of(root_doc: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """The flat ``path → document`` of the root's consolidated metadata, or None when it has none."""
    block = root_doc.get("consolidated_metadata")
    if not isinstance(block, dict) or not isinstance(block.get("metadata"), dict):
        return None
    return block["metadata"]


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def _attributes(live: dict[str, Any], seen: dict[str, Any]) -> str | None:
    mine, theirs = live.get("attributes") or {}, seen.get("attributes") or {}
    run = "config_hash" in mine or "config_hash" in theirs
    keys = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k) and not (run and k in LIVE_ATTRS))
    if not keys:
        return None
    return f"attributes {', '.join(keys)} differ between the store's zarr.json and the consolidated metadata readers open"


def difference(live: dict[str, Any], seen: dict[str, Any]) -> str | None:
    """How the consolidated description ``seen`` (what readers use) differs from the live document, or None."""
    for field in SHOWN:
        if live.get(field) != seen.get(field):
            return f"readers see {field} {_short(seen.get(field))}, the store's zarr.json says {_short(live.get(field))}"
    return _attributes(live, seen)
