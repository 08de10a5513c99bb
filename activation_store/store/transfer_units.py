"""What a copy (``transfer.py``) decides about units (``layout.unit_of``): what its scope names, when two ends hold
different things, and root documents without the units it replaces."""
from __future__ import annotations

import json
from typing import Any

from ..errors import ActstoreError
from . import layout


def consolidated(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    meta = (doc or {}).get("consolidated_metadata")
    return meta.get("metadata") if isinstance(meta, dict) and isinstance(meta.get("metadata"), dict) else None


def resolve_scope(model: str | None, dataset: str | None) -> tuple[str | None, str | None, str]:
    if dataset is not None and model is None:
        raise ActstoreError("--dataset needs --model: a run is named by both")
    if model is None:
        return None, None, "the whole store"
    model_key = layout.encode_name(model)
    if dataset is None:
        return model_key, None, f"model {model}"
    return model_key, layout.run_path(model, dataset), f"{model}/{dataset}"


def conflicts(src_docs: dict[str, dict | None], dst_docs: dict[str, dict | None], model_units: set[str]) -> list[str]:
    """Units present at both ends that are not the same thing (another model, configuration or more of the run)."""
    found = []
    for unit, src in sorted(src_docs.items()):
        dst = dst_docs.get(unit)
        if not src or not dst:
            continue
        a, b = src.get("attributes", {}), dst.get("attributes", {})
        if unit in model_units:
            if a.get("model_checksum") and b.get("model_checksum") and a["model_checksum"] != b["model_checksum"]:
                found.append(f"{layout.decode_name(unit)} is another model (model_checksum differs)")
        elif a.get("config_hash") and b.get("config_hash"):
            name = "/".join(layout.decode_name(p) for p in unit.split("/"))
            if a["config_hash"] != b["config_hash"]:
                found.append(f"{name} was made with another configuration (config_hash differs)")
            elif int(b.get("progress", {}).get("tokens_done", 0)) > int(a.get("progress", {}).get("tokens_done", 0)):
                found.append(f"{name} holds more of the run than the source")
    return found


def dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=2, allow_nan=True).encode()


def without(doc: dict[str, Any], units: set[str]) -> dict[str, Any]:
    """A root document whose consolidated metadata no longer lists ``units``."""
    meta = consolidated(doc) or {}
    kept = {p: n for p, n in meta.items() if layout.node_unit(p, n) not in units}
    return {**doc, "consolidated_metadata": {**doc["consolidated_metadata"], "metadata": kept}}

