"""What an intervention asks for, from text or numbers alike, validated once into an ``InterventionSpec``.

The CLI hands strings, a notebook lists; both end as one canonical record, so equal requests
compare (and hash) equal. Position selections are parsed by activation_store/positions.py."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ...errors import ActstoreError
from ...positions import parse_steered
from ...store.interventions import recorded_name

GREEDY = -1  # the one "seed" of a greedy continuation
MODES = ("add", "replace")
STEER_SITES = ("resid_post", "attn_out", "mlp_out")  # the outputs a vector can be added to (extract/site_names.py)


def parse_coefficients(values: list[str] | list[float] | str) -> list[float]:
    """Coefficients from text, 0 (the baseline) added first when missing; non-numbers are refused."""
    items = [str(v).strip() for v in (values.split(",") if isinstance(values, str) else values) if str(v).strip()]
    if not items:
        raise ActstoreError("--coefficients is empty; give numbers such as 0,1,2,4")
    out = []
    for item in items:
        try:
            value = float(item)
        except ValueError:
            raise ActstoreError(f"--coefficients: {item!r} is not a number") from None
        if not math.isfinite(value):
            raise ActstoreError(f"--coefficients: {item!r} is not a finite number")
        out.append(value)
    if len(set(out)) != len(out):
        raise ActstoreError("--coefficients lists a value twice")
    return [0.0] + [v for v in out if v != 0]


def parse_seeds(text: str | None) -> list[int] | None:
    """``"0..9"`` or ``"0,3,7"`` → seeds; None → greedy decoding."""
    if text is None:
        return None
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if ".." in part:
                start, stop = part.split("..", 1)
                seeds.extend(range(int(start), int(stop) + 1))
            elif part:
                seeds.append(int(part))
    except ValueError:
        raise ActstoreError(f"--seed expects integers, a list 0,3,7 or a range 0..9, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ActstoreError(f"--seed needs distinct non-negative integers, got {text!r}")
    return seeds


def parse_positions(text: str) -> str | slice:
    """A ``--steer-positions`` selection in its canonical spelling (kept under this name for callers)."""
    return parse_steered(text)


@dataclass(frozen=True)
class InterventionSpec:
    """What to do to the run a ``RunSpec`` describes: which stored vector, how strongly, where, what to record.

    Built from text or numbers alike (the CLI's strings, a notebook's lists) and validated here once."""

    vector: str
    coefficients: tuple[float, ...] | list[float] | str
    positions: str = "last"
    mode: str = "add"
    onward: bool = False  # steer every later decoder layer's output too
    generate: int = 0
    seeds: tuple[int, ...] | list[int] | str | None = None
    target_tokens: str | None = None
    top_k: int = 20
    record_layers: tuple[int, ...] | list[int] | None = None
    site: str = "resid_post"  # where the vector goes: a block's output, or what its attention or MLP adds

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "coefficients", tuple(parse_coefficients(self.coefficients)))
        seeds = parse_seeds(self.seeds) if isinstance(self.seeds, str) else self.seeds
        set_(self, "seeds", tuple(seeds) if seeds is not None else None)
        set_(self, "record_layers", tuple(sorted(set(self.record_layers))) if self.record_layers else None)
        where = parse_steered(self.positions)
        if isinstance(where, str):  # "modality:image" and "image" are one selection, recorded alike
            set_(self, "positions", where)
        if self.mode not in MODES:
            raise ActstoreError(f"--steer-mode must be add or replace, got {self.mode!r}")
        if self.generate < 0:
            raise ActstoreError(f"--generate must be 0 or more tokens, got {self.generate}")
        if self.seeds is not None and not self.generate:
            raise ActstoreError("--seed samples continuations; give --generate N too")
        if self.site not in STEER_SITES:
            raise ActstoreError(f"--steer-site must be one of {', '.join(STEER_SITES)}, got {self.site!r}")
        if self.top_k < 1:
            raise ActstoreError(f"--top-k must be at least 1, got {self.top_k}")

    @property
    def recorded_name(self) -> str:
        """The recorded group's name: the vector's, with ``@<site>`` when it is steered at a sublayer's output."""
        return recorded_name(self.vector, self.site)

    @property
    def where(self) -> str | slice:
        return parse_steered(self.positions)

    @property
    def samples(self) -> list[int]:
        """One entry per recorded continuation: the seeds, or ``GREEDY`` once, or none without ``generate``."""
        return list(self.seeds) if self.seeds is not None else ([GREEDY] if self.generate else [])
