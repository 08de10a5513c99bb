"""Each batch's kept states packed into the writer's chunk blocks, in the stored dtype, straight from the device.

A batch's states cross to the host once: on CUDA each layer's rows are copied
on a copy stream straight into the pinned block buffer they belong in (the
writer waits for the copy's event before it reads them), so the device runs the
next batch meanwhile and no host thread touches the bytes before the writer
does; on the CPU one ``copy_`` converts the model's float32 into the block's
bfloat16 in place. Blocks are the writer's reused buffers (store/chunk_writer.py):
nothing is allocated per batch. Finiteness is checked once: on a GPU by a flag
per layer computed on the device and copied with the states; on the CPU by the
writer's sums, which see every stored value (store/pieces.py)."""
from __future__ import annotations

import mmap
from typing import Callable, Mapping

import numpy as np
import torch

from ..store.chunk_writer import BlockWriter

TORCH_DTYPES = {np.dtype("uint16"): torch.bfloat16, np.dtype("float32"): torch.float32}


class BlockBuffers:
    """The writer's block buffers, kept as tensors: page-locked on CUDA (copies into them run asynchronously),
    elsewhere anonymous memory in huge pages where the kernel allows (a fresh 4 kB page costs a fault: ~0.8 s
    of system time for the first touch of a 420 MB block here, ~0.25 s in 2 MB pages)."""

    def __init__(self, pinned: bool):
        self.pinned = pinned
        self.tensors: dict[int, torch.Tensor] = {}

    def allocate(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        if self.pinned:
            tensor = torch.empty(shape, dtype=TORCH_DTYPES[dtype], pin_memory=True)
            array = tensor.view(torch.int16).numpy().view(np.uint16) if tensor.dtype == torch.bfloat16 else tensor.numpy()
        else:
            memory = mmap.mmap(-1, max(1, int(np.prod(shape)) * dtype.itemsize),
                               flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            if hasattr(mmap, "MADV_HUGEPAGE"):
                memory.madvise(mmap.MADV_HUGEPAGE)
            array = np.frombuffer(memory, dtype=dtype, count=int(np.prod(shape))).reshape(shape)
            tensor = torch.from_numpy(array.view(np.int16)).view(torch.bfloat16) if dtype == np.uint16 \
                else torch.from_numpy(array)
        self.tensors[array.ctypes.data] = tensor
        return array

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        return self.tensors[array.ctypes.data]


class BlockPacker:
    """Fills the writer's blocks with units ``[start, stop)`` of a task from batches that begin at ``first``."""

    _streams: dict[torch.device, torch.cuda.Stream] = {}

    def __init__(self, writer: BlockWriter, buffers: BlockBuffers, start: int, stop: int, first: int,
                 on_units: Callable[[int], None] | None = None):
        self.writer, self.buffers = writer, buffers
        self.start, self.stop, self.position = start, stop, first
        self.block_start, self.filled = start, 0
        self.block: dict[str, np.ndarray] | None = None
        self.on_units = on_units
        self.computed = 0

    def add(self, states: Mapping[str, torch.Tensor]) -> None:
        """Pack one batch's kept states of every array (``hidden`` and any sites: layers, units, …), on whatever
        device computed them; all hold the same units."""
        n = next(iter(states.values())).shape[1]
        self.computed += n
        lo, hi = max(self.start, self.position) - self.position, min(self.stop, self.position + n) - self.position
        self.position += n
        if hi <= lo:
            return
        stream = self._copy_stream(next(iter(states.values())))
        while lo < hi:
            if self.block is None:
                self.block = self.writer.buffer()
            take = min(hi - lo, self.writer.chunk - self.filled, self.stop - self.block_start - self.filled)
            for name, values in states.items():
                self._copy(self.buffers.tensor(self.block[name]), values, lo, take, stream)
            self.filled += take
            lo += take
            if self.on_units is not None:
                self.on_units(take)
            if self.filled == min(self.writer.chunk, self.stop - self.block_start):
                self._submit(stream)
        if stream is not None:
            for values in states.values():
                values.record_stream(stream)  # the allocator must not reuse them before the copies end

    def _copy(self, target: torch.Tensor, values: torch.Tensor, lo: int, take: int,
              stream: torch.cuda.Stream | None) -> None:
        """Units ``[lo, lo + take)`` of one array's batch into its block at the fill mark."""
        if stream is None:
            target[:, self.filled:self.filled + take].copy_(values[:, lo:lo + take])
            return
        with torch.cuda.stream(stream):
            for layer in range(values.shape[0]):  # contiguous rows: each a direct copy into pinned memory
                target[layer, self.filled:self.filled + take].copy_(values[layer, lo:lo + take], non_blocking=True)

    def finish(self) -> None:
        """Check that the batches covered the task (each block was handed on as it filled)."""
        if self.block_start != self.stop:
            raise RuntimeError(f"packed units {self.start}:{self.block_start}, not {self.start}:{self.stop}")

    def _submit(self, stream: torch.cuda.Stream | None) -> None:
        ready = None
        if stream is not None:
            event = torch.cuda.Event()
            event.record(stream)
            ready = event.synchronize
        self.writer.submit(self.block_start, self.block, ready)
        self.block_start += self.filled
        self.block, self.filled = None, 0

    def _copy_stream(self, states: torch.Tensor) -> torch.cuda.Stream | None:
        if states.device.type != "cuda":
            return None
        stream = self._streams.setdefault(states.device, torch.cuda.Stream(states.device))
        stream.wait_stream(torch.cuda.current_stream(states.device))
        return stream


class FiniteFlags:
    """A batch's per-layer finiteness, computed on an accelerator and copied back beside its states; checked
    one batch later, when it has arrived, so the device never waits for the host. None on the CPU."""

    def __init__(self, states: torch.Tensor):
        cuda = states.device.type == "cuda"
        finite = torch.isfinite(states).flatten(1).all(dim=1)
        self.host = torch.empty(finite.shape, dtype=torch.bool, pin_memory=cuda)
        self.host.copy_(finite, non_blocking=cuda)  # elsewhere (MPS) a plain copy: no event to wait for
        self.event = None
        if cuda:
            self.event = torch.cuda.Event()
            self.event.record()

    @staticmethod
    def wanted(states: torch.Tensor) -> bool:
        return states.device.type != "cpu"

    def bad_layer(self) -> int | None:
        """Index (into the checked layers) of the first layer with inf/NaN, or None."""
        if self.event is not None:
            self.event.synchronize()
        bad = (~self.host).nonzero()
        return int(bad[0, 0]) if len(bad) else None
