"""What a run keeps of each batch: all layers or some, every token or one state per example.

``--layers`` and ``--positions`` are parsed here and checked against the model
once (``resolve``); the one fill loop (extract/tasks.py, in this process or on
a worker) applies ``Keep.apply`` to each batch's packed states, so selective
runs hold exactly the matching slices of a full run.
A run that keeps every token streams tokens; a ``last`` or ``mean`` run streams
one state per example, so its stored unit — what ``hidden``'s second axis,
its chunks, the progress record and the campaign's tasks count — is the example.
``mean`` averages each example's states as they are stored (after rounding to
the stored dtype), leaving out position 0 when the run prepended BOS, as the
analyses do; it is stored as float32 whatever ``--dtype`` says."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import ActstoreError
from ..positions import KEPT as POSITIONS, parse_kept
from ..store.sites import SiteArray

LayerChoice = tuple[int, ...] | str | None  # indices, "START:STOP[:STEP]", or None (all)
_RANGE = re.compile(r"^\s*(\d*)\s*:\s*(\d*)\s*(?::\s*(\d+)\s*)?$")


def parse_layers(value: str | Sequence[int] | None) -> LayerChoice:
    """``all``/None → None; ``"0,6,12"`` or ``[0, 6, 12]`` → (0, 6, 12); ``"0:18"``/``"0:18:6"`` → that range text."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text == "all":
            return None
        if _RANGE.match(text):
            return text.replace(" ", "")
        parts = [p.strip() for p in text.split(",")]
        if not parts or not all(p.isdigit() for p in parts):
            raise ActstoreError(f"--layers must be all, a comma-separated list such as 0,6,12 or a range "
                                f"START:STOP[:STEP] such as 0:18, got {value!r}")
        return tuple(int(p) for p in parts)
    try:
        layers = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ActstoreError(f"layers must be integers, got {value!r}") from None
    if not layers or any(v < 0 for v in layers):
        raise ActstoreError(f"layers must be non-negative integers, got {list(value)!r}")
    return layers


def check_positions(positions: str) -> str:
    """``--positions`` as extraction stores it; the grammar and its message live in activation_store/positions.py."""
    return parse_kept(positions)


def resolve_layers(choice: LayerChoice, n_layers: int, model: str) -> tuple[int, ...]:
    """The sorted layer indices ``choice`` names, each checked against the model's ``n_layers`` hidden states."""
    if choice is None:
        return tuple(range(n_layers))
    if isinstance(choice, str):
        start, stop, step = _RANGE.match(choice).groups()
        if not int(step or 1):
            raise ActstoreError(f"--layers {choice}: the step must be at least 1")
        indices = range(int(start or 0), int(stop) if stop else n_layers, int(step or 1))
        if indices and indices[-1] >= n_layers:
            raise ActstoreError(f"--layers {choice} reaches layer {indices[-1]}, out of range: {model} has layers "
                                f"0..{n_layers - 1} (the embeddings and {n_layers - 1} blocks)")
        layers = tuple(indices)
    else:
        bad = [v for v in choice if not 0 <= v < n_layers]
        if bad:
            raise ActstoreError(f"layer {bad[0]} is out of range: {model} has layers 0..{n_layers - 1} "
                                f"(the embeddings and {n_layers - 1} blocks)")
        layers = tuple(sorted(set(choice)))
    if not layers:
        raise ActstoreError(f"--layers {choice} selects no layer")
    return layers


@dataclass(frozen=True)
class Keep:
    """A run's selection, resolved against its model: small and picklable (it travels in every fill task)."""

    layers: tuple[int, ...]
    n_layers: int  # the model's hidden states (embeddings + blocks)
    positions: str = "all"
    bos: bool = True  # ``mean`` leaves out position 0 when the run prepended BOS
    dtype: str = "bfloat16"  # the run's --dtype
    site_specs: tuple[str, ...] = ()  # sites besides the residual stream, as requested (``--sites``; config)
    sites: tuple[Any, ...] = ()  # … resolved against the loaded model (extract/sites.py ``Site``), once prepared

    def site_layers(self, site: Any) -> tuple[int, ...]:
        """The kept layers a site has: block sites have no layer 0 (the embeddings)."""
        return tuple(layer for layer in self.layers if layer >= site.first_layer)

    def layers_of(self, name: str) -> tuple[int, ...]:
        """The stored layers of array ``name`` (``hidden`` or a site's)."""
        for site in self.sites:
            if site.name == name:
                return self.site_layers(site)
        return self.layers

    def site_arrays(self) -> tuple[SiteArray, ...]:
        """What the store creates for each resolved site: its array name, layers, one unit's shape, provenance."""
        return tuple(SiteArray(site.name, self.site_layers(site), tuple(site.per_token), site.provenance())
                     for site in self.sites)

    @property
    def all_layers(self) -> bool:
        return self.layers == tuple(range(self.n_layers))

    @property
    def unit(self) -> str:
        """What ``hidden``'s second axis counts: tokens, or examples for a pooled run."""
        return "token" if self.positions == "all" else "example"

    @property
    def stored_dtype(self) -> str:
        """The dtype ``hidden`` is written in: the run's, except float32 for means."""
        return "float32" if self.positions == "mean" else self.dtype

    def config(self) -> dict[str, Any]:
        """Keys for the run's configuration (and hash): only those that differ from a full run, so full runs
        made before selective capture existed keep their hash and resume."""
        return {**({} if self.all_layers else {"layers": list(self.layers)}),
                **({} if self.positions == "all" else {"positions": self.positions}),
                **({"sites": list(self.site_specs)} if self.site_specs else {})}

    def attrs(self) -> dict[str, Any]:
        """What the stored run says it holds."""
        return {"layers": list(self.layers), "positions": self.positions, "unit": self.unit}

    def check_lengths(self, lengths: Sequence[int], labels: Sequence[str] | None = None) -> None:
        """Refuse a ``mean`` run with an example that has nothing to average (BOS only)."""
        if self.positions != "mean":
            return
        short = [i for i, n in enumerate(lengths) if n - int(self.bos) < 1]
        if short:
            name = labels[short[0]] if labels else f"example {short[0]}"
            raise ActstoreError(f"--positions mean: {name} has no token besides BOS to average; "
                                f"use --positions last or drop it")

    def units(self, offsets: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Each example's ``(offset, count)`` along ``hidden``'s second axis, and that axis' length."""
        if self.unit == "token":
            return offsets, counts, int(offsets[-1] + counts[-1]) if len(counts) else 0
        n = len(counts)
        return np.arange(n, dtype=np.int64), np.ones(n, dtype=np.int64), n

    def select_layers(self, states):
        """One batch's packed states (layers, tokens, d_model), on any device → the kept layers only."""
        import torch

        if self.all_layers:
            return states
        return states.index_select(0, torch.tensor(self.layers, dtype=torch.long, device=states.device))

    def select_positions(self, states, lengths: Sequence[int]):
        """Kept layers' states (layers, tokens, d_model) → what the run stores: every token, each example's last
        (both where the states are), or each example's mean (float32, on the host)."""
        import torch

        if self.positions == "all":
            return states
        ends = np.cumsum(lengths)
        if self.positions == "last":
            return states[:, torch.as_tensor(ends - 1, dtype=torch.long, device=states.device)]
        per_unit = tuple(states.shape[2:])  # a per-head site is averaged per element
        flat = states.flatten(2) if len(per_unit) != 1 else states
        return torch.from_numpy(self._means(flat, np.asarray(lengths), ends)).unflatten(2, per_unit)

    def _means(self, states, lengths: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Means of the states as stored (rounded to the run's dtype), BOS left out, in float64 then float32."""
        import torch

        from ..pooling import segment_sums
        from ..store.precision import decode_bfloat16

        if self.dtype == "bfloat16":
            stored = decode_bfloat16(states.to(torch.bfloat16).cpu().view(torch.int16).numpy().view(np.uint16))
        else:
            stored = states.to(torch.float32).cpu().numpy()
        owner = np.repeat(np.arange(len(lengths)), lengths)
        if self.bos:
            owner[ends - lengths] = -1
        sums = segment_sums(stored, owner, len(lengths))[:, 0]
        return (sums / (lengths - int(self.bos))[None, :, None]).astype(np.float32)
