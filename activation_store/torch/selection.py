"""What a loader reads and how much memory it holds: the selection, the reading options and the buffer plan,
each a record built and checked once (``loader()`` and ``StoreDataset`` take their fields as keywords)."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ActstoreError
from ..positions import parse_read as parse_read_positions

DEFAULT_BUFFER_BYTES = 1 << 30
_SLOT_BYTES = 8 + 8 + 2  # per reservoir slot: its ring row (int64), index into the selection (int64), layer (int16)
# ring rows per reservoir slot: the ring comes round to a row after ~slack × capacity rows have arrived, by
# when all but ~e^-slack of them (13% at 2) have left at random; those few are moved, the rest never copied
_RING_SLACK = 2
_STEP = 256  # rows gathered at a time on their way to a batch: a block that stays in the CPU's cache
# threads that move rows into batches (numpy releases the GIL for take and decode): the reads already run on
# their own threads, so on two cores this is what lets the shuffle keep up with them
_COPY_THREADS = max(1, min(2, os.cpu_count() or 1))
_BATCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

def _choose(values: np.ndarray, wanted: Sequence[Any] | None, what: str) -> np.ndarray:
    """A boolean mask of ``values`` in ``wanted`` (all when None); an unknown name is a one-line error."""
    if wanted is None:
        return np.ones(len(values), dtype=bool)
    if isinstance(wanted, str):
        wanted = [wanted]
    present = set(values.tolist())
    missing = [w for w in wanted if w not in present]
    if missing:
        shown = ", ".join(sorted(map(str, present))[:12])
        raise ActstoreError(f"{what} {missing[0]!r} is not in this run; it has {shown}")
    return np.isin(values, list(wanted))


def _layers(layers: Sequence[int] | None, n_layers: int) -> np.ndarray:
    if layers is None:
        return np.arange(n_layers)
    chosen = [int(layer) for layer in ([layers] if isinstance(layers, int) else layers)]
    bad = [layer for layer in chosen if not -n_layers <= layer < n_layers]
    if bad:
        raise ActstoreError(f"layer {bad[0]} is out of range: the run has layers 0..{n_layers - 1}")
    if not chosen:
        raise ActstoreError("no layers selected")
    return np.unique(np.asarray(chosen) % n_layers)


def _label_indices(layers: Sequence[int] | int | None, labels: np.ndarray) -> Sequence[int] | int | None:
    """Layer labels as indices into a run that stores only some layers (``--layers``); unchanged for full runs."""
    if layers is None or labels.tolist() == list(range(len(labels))):
        return layers
    chosen = [int(layer) for layer in ([layers] if isinstance(layers, int) else layers)]
    missing = [layer for layer in chosen if layer not in set(labels.tolist())]
    if missing:
        raise ActstoreError(f"layer {missing[0]} is not in this run; it stores layers {', '.join(map(str, labels))}")
    return [labels.tolist().index(layer) for layer in chosen]


def _position_mask(positions: str | Sequence[int] | None, position: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Tokens at the chosen positions: ``None``/``"all"``, ``"last"``, or ints (negative ones count from each example's end),
    as activation_store/positions.py parses them."""
    chosen = parse_read_positions(positions)
    if chosen is None:
        return np.ones(len(position), dtype=bool)
    from_start = np.asarray([p for p in chosen if p >= 0], dtype=np.int64)
    from_end = np.asarray([p for p in chosen if p < 0], dtype=np.int64)
    return np.isin(position, from_start) | np.isin(position.astype(np.int64) - count, from_end)


@dataclass(frozen=True)
class Selection:
    """Which states of a run are read: layers (by label), variants, items and positions (None: all)."""

    layers: Sequence[int] | int | None = None
    variants: Sequence[str] | str | None = None
    items: Sequence[str] | str | None = None
    positions: str | Sequence[int] | None = None
    # the site(s) each row holds: the residual stream (None), another site, or several side by side (the MLP
    # input and output of one token, for a transcoder), at the layers they all have
    site: Sequence[str] | str | None = None

    def columns(self, ds: Any) -> Columns:
        """What each row is made of, from the run's records of its sites."""
        from ..store.sites import RESIDUAL, array_name, of_run

        wanted = [self.site] if isinstance(self.site, str) or self.site is None else list(self.site)
        wanted = [RESIDUAL if w in (None, "hidden") else w for w in wanted]
        records = {s.name: s for s in of_run(ds.attrs)}
        missing = [w for w in wanted if w != RESIDUAL and w not in records]
        if missing:
            raise ActstoreError(f"site {missing[0]!r} is not in this run; it holds "
                                f"{', '.join([RESIDUAL, *records])}")
        if len(set(wanted)) != len(wanted) or not wanted:
            raise ActstoreError(f"site= names each site once, got {self.site!r}")
        layers = [ds.layer.values.astype(np.int64).tolist() if w == RESIDUAL else list(records[w].layers)
                  for w in wanted]
        common = np.asarray(sorted(set(layers[0]).intersection(*layers[1:])), dtype=np.int64)
        if not len(common):
            raise ActstoreError(f"sites {', '.join(wanted)} have no layer in common")
        shapes = tuple((int(ds.sizes["d_model"]),) if w == RESIDUAL else tuple(records[w].per_unit) for w in wanted)
        return Columns(tuple(wanted), tuple(array_name(w) for w in wanted), shapes, common,
                       tuple({label: i for i, label in enumerate(ls)} for ls in layers))

    def layer_indices(self, labels: np.ndarray) -> np.ndarray:
        """Indices into the run's layer axis (whose labels are ``labels``) of the chosen layers, ascending."""
        return _layers(_label_indices(self.layers, labels), len(labels))

    def tokens(self, ds: Any) -> np.ndarray:
        """Indices of the run's tokens that are selected, ascending."""
        wanted = _choose(ds.variant.values, self.variants, "variant") & _choose(ds["item"].values, self.items, "item")
        token_example = ds.token_example.values
        counts = ds.token_count.values[token_example]
        return np.flatnonzero(wanted[token_example] & _position_mask(self.positions, ds.position.values, counts))


@dataclass(frozen=True)
class Columns:
    """A row's parts: one array per site, each one token's state flattened, side by side in ``sites`` order."""

    sites: tuple[str, ...]
    arrays: tuple[str, ...]               # the arrays holding them (``hidden`` for the residual stream)
    per_unit: tuple[tuple[int, ...], ...]  # one token's shape in each
    labels: np.ndarray                    # the layers every site has (the loader's layer labels)
    index: tuple[dict[int, int], ...]      # per array: layer label → index along its layer axis

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(int(np.prod(shape)) for shape in self.per_unit)

    @property
    def width(self) -> int:
        return sum(self.widths)

    @property
    def slices(self) -> dict[str, slice]:
        """Each site's columns in a row (``batch.hidden[:, slices["mlp_in"]]``)."""
        bounds = np.cumsum([0, *self.widths]).tolist()
        return {site: slice(a, b) for site, a, b in zip(self.sites, bounds, bounds[1:])}


@dataclass(frozen=True)
class Reading:
    """How an epoch is read and handed out: batches, order, sharding, read-ahead and the buffer's bound."""

    batch_size: int = 4096
    shuffle: bool = True
    seed: int = 0
    epoch: int = 0
    buffer_tokens: int | None = None
    buffer_bytes: int | None = None
    read_ahead: int = 2
    rank: int = 0
    world_size: int = 1
    dtype: torch.dtype | str = torch.float32
    storage_options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ActstoreError(f"batch_size must be at least 1, got {self.batch_size!r}")
        if self.read_ahead < 1:
            raise ActstoreError(f"read_ahead must be at least 1, got {self.read_ahead}")
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ActstoreError(f"rank {self.rank} is not in 0..{self.world_size - 1} (world_size {self.world_size})")
        if self.batch_dtype not in _BATCH_DTYPES.values():
            raise ActstoreError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")

    @property
    def batch_dtype(self) -> Any:
        """The batches' torch dtype (a name resolved)."""
        return _BATCH_DTYPES.get(self.dtype, self.dtype) if isinstance(self.dtype, str) else self.dtype


@dataclass(frozen=True)
class BufferPlan:
    """A shard's memory, planned once from the reading options and the run's shape; sizes in bytes or rows.

    ``buffer_tokens`` and ``buffer_bytes`` bound the shuffle buffer (``capacity``); the rest is derived: the
    ring the chunks are read into, the scratch blocks, the outgoing batch, and the total (``buffer_bytes``)."""

    batch_size: int
    read_ahead: int
    buffer_tokens: int | None
    budget: int | None  # the caller's buffer_bytes
    d_model: int
    chunk_tokens: int
    stored_itemsize: int  # a state as stored (2 for bfloat16 bits, 4 for float32)
    out_itemsize: int  # a state in the batch dtype
    largest: int  # the most selected tokens of one chunk
    all_in_place: bool  # every chunk read straight into the ring: no scratch blocks

    def __post_init__(self) -> None:
        self.capacity  # noqa: B018 - refuses a buffer too small, when planned

    @property
    def ring_row(self) -> int:
        return self.d_model * self.stored_itemsize + 8  # a ring row and its owner (int64)

    @property
    def out(self) -> int:
        """What a shard holds besides the ring and its slots: the batch being filled (in the batch dtype, with
        coordinates) with its small gathering blocks, and the batch out."""
        return (self.batch_size * (2 * self.d_model * self.out_itemsize + 16)
                + _COPY_THREADS * _STEP * self.d_model * self.stored_itemsize)

    @property
    def scratch_blocks(self) -> int:
        """A scratch block per read in flight, for chunks read elsewhere first and their selected rows copied in."""
        return 0 if self.all_in_place else self.read_ahead

    @property
    def scratch(self) -> int:
        return self.scratch_blocks * self.chunk_tokens * self.d_model * self.stored_itemsize

    @property
    def beyond_slack(self) -> int:
        """Ring rows beyond the slack's: the stretches of the reads in flight, one being reserved and a lap's
        unused tail (each at most a chunk)."""
        return (self.read_ahead + 2) * self.chunk_tokens

    @property
    def need(self) -> int:
        """The smallest buffer: a batch and one chunk's selected tokens."""
        return self.batch_size + self.largest

    @property
    def capacity(self) -> int:
        """Rows the shuffle buffer holds: ``buffer_tokens``, or what fits in the byte budget, the smaller."""
        fixed = self.out + self.scratch + self.beyond_slack * self.ring_row
        capacity = None if self.buffer_tokens is None else int(self.buffer_tokens)
        if self.budget is not None or capacity is None:
            budget = DEFAULT_BUFFER_BYTES if self.budget is None else int(self.budget)
            by_bytes = int((budget - fixed) // (_RING_SLACK * self.ring_row + _SLOT_BYTES))
            if by_bytes < self.need:
                floor = fixed + self.need * (_RING_SLACK * self.ring_row + _SLOT_BYTES)
                raise ActstoreError(f"buffer_bytes {budget:,} is too small for batch_size {self.batch_size} and "
                                    f"chunks of {self.chunk_tokens} tokens × d_model {self.d_model}; it needs at "
                                    f"least {floor:,}")
            capacity = by_bytes if capacity is None else min(capacity, by_bytes)
        if capacity < self.need:
            raise ActstoreError(f"buffer_tokens {capacity} is too small: it must hold a batch ({self.batch_size}) "
                                f"and a chunk's selected tokens ({self.largest}), at least {self.need}")
        return capacity

    @property
    def ring_rows(self) -> int:
        """A stretch being reserved always finds room for its buffered rows in the holes elsewhere, since the
        ring holds ``capacity`` rows more than the buffer, the stretches in flight and a lap's tail."""
        return _RING_SLACK * self.capacity + self.beyond_slack

    @property
    def buffer_bytes(self) -> int:
        """Everything a shard holds."""
        return self.ring_rows * self.ring_row + self.capacity * _SLOT_BYTES + self.out + self.scratch


def _records(options: dict[str, Any], selection: Selection | None, reading: Reading | None) -> tuple[Selection, Reading]:
    """The loader's flat keywords as its two option records (a record given whole, flat keywords over it)."""
    built = []
    for cls, given in ((Selection, selection), (Reading, reading)):
        own = {f.name: options.pop(f.name) for f in fields(cls) if f.name in options}
        built.append(replace(given, **own) if given is not None else cls(**own))
    if options:
        raise TypeError(f"unexpected keyword argument {next(iter(options))!r}")
    return built[0], built[1]
