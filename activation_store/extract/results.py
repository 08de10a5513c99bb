"""What a campaign reports: each run's result and the campaign's totals, per worker."""
from __future__ import annotations

from dataclasses import dataclass, field

from .tasks import Filled


@dataclass
class ExtractResult:
    store: str
    model: str
    dataset: str
    status: str  # "written", "resumed" or "already complete"
    examples: int
    tokens: int
    layers: int
    tokens_written: int
    seconds: float
    fill_seconds: float = 0.0
    unit: str = "token"  # what ``tokens_written`` counts: tokens, or examples in a --positions last|mean run
    finish_seconds: float = 0.0  # views, statistics and consolidation after the last block

    @property
    def tokens_per_second(self) -> float:
        """Throughput of the forward-and-write loop alone (no model loading)."""
        return self.tokens_written / self.fill_seconds if self.fill_seconds else 0.0

    def summary(self) -> str:
        """One line; each figure says what it measures (the whole command, the forward-and-write loop, the finish)."""
        timing = f"{self.seconds:.1f} s total"
        if self.tokens_written:
            timing += (f", of which {self.fill_seconds:.1f} s forward-and-write at {self.tokens_per_second:,.0f} "
                       f"{self.unit}s/s and {self.finish_seconds:.1f} s finishing (views, statistics)")
        return (f"{self.status}: {self.model}/{self.dataset} in {self.store} — {self.examples} examples, "
                f"{self.tokens:,} tokens × {self.layers} layers; wrote {self.tokens_written:,} {self.unit}s; "
                f"{timing}")


@dataclass
class CampaignResult:
    runs: list[ExtractResult]
    skipped: list[str]
    workers: int
    tasks: int = 0
    tokens_written: int = 0
    tokens_computed: int = 0  # forward-pass tokens, batches straddling task boundaries counted twice
    seconds: float = 0.0
    fill_seconds: float = 0.0
    finish_seconds: float = 0.0  # views, statistics and consolidation once the last block is committed
    loads: dict[tuple[str, int], int] = field(default_factory=dict)  # (model, worker pid) -> loads
    written: dict[str, int] = field(default_factory=dict)  # run path -> tokens written
    peak_rss: dict[int, int] = field(default_factory=dict)  # worker pid -> bytes
    devices: dict[int, str] = field(default_factory=dict)  # worker pid -> the device its forward passes ran on
    resources: dict[str, float] | None = None  # what each task held on the cluster ({"GPU": 1})

    @property
    def recompute_fraction(self) -> float:
        return self.tokens_computed / self.tokens_written - 1 if self.tokens_written else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_written / self.fill_seconds if self.fill_seconds else 0.0

    def summary(self) -> str:
        lines = [r.summary() for r in self.runs] + [f"skipped: {s}" for s in self.skipped]
        if self.tasks and (len(self.runs) > 1 or self.workers > 1):  # one run in-process: its line says it all
            lines.append(f"campaign: {len(self.runs)} runs, {self.tasks} tasks on {self.workers} worker(s), "
                         f"{self.tokens_written:,} tokens at {self.tokens_per_second:,.0f} tokens/s, "
                         f"{100 * self.recompute_fraction:.1f}% recomputed at task edges")
        return "\n".join(lines)


def _tally(result: CampaignResult, done: Filled, model: str) -> None:
    result.tokens_written += done.tokens_written
    result.tokens_computed += done.tokens_computed
    result.loads[(model, done.pid)] = done.model_loads
    result.peak_rss[done.pid] = max(result.peak_rss.get(done.pid, 0), done.peak_rss)
    result.devices[done.pid] = done.device
