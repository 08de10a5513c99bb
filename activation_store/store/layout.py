"""The store contract: group paths, names, array names and the format version.

A store is one Zarr v3 hierarchy::

    /                        attrs: actstore_format
    /<model>                 the logit-lens head of one model (``unembedding``, ``final_norm_weight``, ``vocab_token``)
    /<model>/<dataset>       one extraction run (``hidden`` over layer × token × hidden, per-token and per-example coords)
    /results/<model>/<dataset>/<name>   analysis results saved for collaborators (own dimensions)

Names given by users (Hugging Face ids contain ``/``) are percent-encoded into one
safe path segment, so they map back exactly and can never climb out of the root.
"""
from __future__ import annotations

from typing import Any, Iterable
from urllib.parse import quote, unquote

from ..errors import ActstoreError, StoreFormatError

FORMAT_VERSION = 1
FORMAT_ATTR = "actstore_format"
METADATA = "zarr.json"  # every node's metadata document

# array names in a run group
HIDDEN = "hidden"  # layer × token × d_model; in a ``--positions last|mean`` run layer × example × d_model
CAPTURE_ATTR = "capture"  # what a run stores: {"layers": [...], "positions": all|last|mean, "unit": token|example}
VIEWS_ATTR = "views"  # set once a run's pooled views and statistics below are written (store/views.py)
VIEWS = {"last": "hidden_last", "mean": "hidden_mean"}  # full runs: each example's last-token and mean states
STATS = ("stat_mean", "stat_second_moment", "stat_abs_max")  # per layer over the stored states
TOKEN_COORDS = ("token_id", "token_example", "position", "modality", "target", "alternatives")
# ``target``/``alternatives`` (annotated datasets only): the word the lens should read at a token, as its first
# token's vocabulary string ("" where none), and a JSON list of the words it is compared against
EXAMPLE_COORDS = ("item", "variant", "text", "token_offset", "token_count")
LAYER_COORDS = ("final_norm_applied",)
# runs over image/audio inputs also carry, per token, the grid cell (image) or time slot (audio) of a media
# token (-1 elsewhere) and, per example, the media file, its content hash, the prompt template and the splice
MEDIA_TOKEN_COORDS = ("media_row", "media_col", "media_slot")
MEDIA_EXAMPLE_COORDS = ("media", "media_sha256", "template", "media_start", "media_count", "media_seconds")
MODALITIES = ("text", "image", "audio")
# array names in a model group
UNEMBEDDING = "unembedding"
NORM_WEIGHT = "final_norm_weight"
NORM_BIAS = "final_norm_bias"
LOGIT_BIAS = "logit_bias"
VOCAB_TOKEN = "vocab_token"
MEDIA_CODE = "media_code"  # bool per vocab id: ids that are image codes (Chameleon), masked out by the lens

MAX_SEGMENT = 200  # characters of one encoded name

# groups under /<model> that are not runs, so no dataset may take their names
STEERING = "steering"            # one group per steering vector
INTERVENTIONS = "interventions"  # /<dataset>/<vector>: recorded intervention runs
RESERVED_GROUPS = (STEERING, INTERVENTIONS)

# groups at the root that are not models, so no model may take their names
RESULTS = "results"  # /results/<model>/<dataset>/<name>: analysis results saved for collaborators
RESERVED_ROOT_GROUPS = (RESULTS,)

BF16_ENCODING = "bfloat16-bits-in-uint16"
ENCODING_ATTR = "actstore_encoding"


def encode_name(name: str) -> str:
    """A user-facing name as one path segment: reversible, no ``/``, never ``.``/``..``."""
    if not name or not name.strip():
        raise ActstoreError("empty model or dataset name")
    segment = quote(name, safe="-_+=@,")
    segment = segment.replace(".", "%2E") if segment.strip(".") == "" or segment.startswith(".") else segment
    if len(segment) > MAX_SEGMENT:  # file systems refuse names over 255 bytes; the lock file adds its suffix
        raise ActstoreError(f"name {name[:40]!r}… is too long for a store path ({len(segment)} characters encoded, "
                            f"at most {MAX_SEGMENT}); rename the file or model")
    return segment


def results_path(model: str, dataset: str, name: str) -> str:
    """Where an analysis result is saved: its own tree, so its dimensions never meet the run's."""
    return f"{RESULTS}/{run_path(model, dataset)}/{encode_name(name)}"


def decode_name(segment: str) -> str:
    return unquote(segment)


def run_path(model: str, dataset: str) -> str:
    return f"{encode_name(model)}/{encode_name(dataset)}"


def unreadable(where: str, exc: Exception) -> StoreFormatError:
    """The error for metadata that is not valid Zarr v3 JSON (damaged, or not a Zarr v3 store)."""
    detail = str(exc).splitlines()[0] if str(exc) else ""
    return StoreFormatError(f"cannot read the store metadata at {where} ({type(exc).__name__}{': ' + detail if detail else ''})")


def check_format(attrs: dict, where: str) -> None:
    """Refuse a store written by another format version, older or newer."""
    found = attrs.get(FORMAT_ATTR)
    if found is None:
        raise StoreFormatError(f"{where} is not an actstore store (no '{FORMAT_ATTR}' attribute)")
    if found != FORMAT_VERSION:
        newer = "newer" if isinstance(found, int) and found > FORMAT_VERSION else "older"
        raise StoreFormatError(
            f"{where} has store format {found}, {newer} than the format {FORMAT_VERSION} this actstore reads; "
            f"use a matching actstore version"
        )


# Units: what a copy or push replaces as a whole (a model's lens head, one run, the other top-level objects).

def hidden(key: str) -> bool:
    """Objects that are no part of a store's content: run locks and other dot-files, interrupted writes."""
    return key.endswith(".partial") or any(part.startswith(".") for part in key.split("/"))


def model_arrays(keys: Iterable[str]) -> set[tuple[str, str]]:
    """(model, child) pairs that are arrays of a model group: a ``zarr.json`` with no node below it."""
    with_meta, nested = set(), set()
    for key in keys:
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == METADATA:
            with_meta.add((parts[0], parts[1]))
        elif len(parts) >= 4 and parts[-1] == METADATA:
            nested.add((parts[0], parts[1]))
    return with_meta - nested


def unit_of(key: str, arrays: set[tuple[str, str]]) -> str | None:
    """The unit an object key belongs to: ``<model>`` (lens head), ``<model>/<dataset>`` (a run), ``""`` (other
    top-level objects) or None (the root ``zarr.json``)."""
    parts = key.split("/")
    if len(parts) == 1:
        return None if key == METADATA else ""
    if parts[1] == METADATA or (parts[0], parts[1]) in arrays:
        return parts[0]
    return f"{parts[0]}/{parts[1]}"


def node_unit(path: str, node: dict[str, Any]) -> str:
    """The unit of a consolidated-metadata entry (a node path such as ``model/unembedding``)."""
    parts = path.split("/")
    if len(parts) == 1 or (len(parts) == 2 and node.get("node_type") == "array"):
        return parts[0]
    return f"{parts[0]}/{parts[1]}"
