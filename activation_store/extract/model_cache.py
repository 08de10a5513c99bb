"""Models kept loaded in a process between tasks: one load per worker per model.

A campaign sends a worker many tasks of the same model; loading it for each
would cost more than the forward passes. Each process keeps the last
``ACTSTORE_WORKER_MODELS`` (default 2) models it loaded, keyed by name, remote
code setting, checksum, device, compute dtype and placement (a model in
bfloat16 on a GPU is another load than the same model in float32 on the CPU);
a lock makes threads of one worker share one load. A model placed by a device
map keeps the folder accelerate offloads weights to for as long as it is cached.
Campaigns order their tasks model by model, so a worker rarely holds more than
one model at a time. A campaign run in the caller's own process (every plain
``extract``) loads its models inside ``scope()``, which lets them go when it
returns, so a notebook does not keep the weights. ``loads()`` counts loads, so
tests and benchmarks can check the promise."""
from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, Iterator

from ..errors import ActstoreError
from .models import ModelPlan, plan_model
from .progress import quiet_loading

_lock = threading.RLock()
# model, trust_remote_code, checksum, device, compute dtype, device map, max memory (repr)
Key = tuple[str, bool, str, str, str, "str | None", str]
_models: OrderedDict[Key, tuple[ModelPlan, Any]] = OrderedDict()
_offload: dict[Key, tempfile.TemporaryDirectory] = {}
_loads: Counter = Counter()


def _capacity() -> int:
    return max(1, int(os.environ.get("ACTSTORE_WORKER_MODELS", "2")))


def _key(model: str, trust_remote_code: bool, checksum: str, device: str, compute_dtype: str,
         device_map: str | None, max_memory: dict[Any, Any] | None) -> Key:
    return (model, trust_remote_code, checksum, device, compute_dtype, device_map, repr(max_memory or None))


def _release(key: Key) -> None:
    _models.pop(key, None)
    folder = _offload.pop(key, None)
    if folder is not None:
        folder.cleanup()


@dataclass(frozen=True)
class ModelPlacement:
    """Where a model's weights go: on ``device`` in ``compute_dtype``, or placed by ``device_map`` (accelerate)
    within ``max_memory``."""

    device: str = "cpu"
    compute_dtype: str = "float32"
    device_map: str | None = None
    max_memory: dict[Any, Any] | None = None


def cached_model(model: str, trust_remote_code: bool, checksum: str, placement: ModelPlacement = ModelPlacement(),
                 *, quiet: bool = False, plan: ModelPlan | None = None) -> tuple[ModelPlan, Any]:
    """``(plan, network)`` for ``model`` where ``placement`` puts it, loaded at most once in this process while it
    stays cached.

    ``checksum`` is what the campaign planned with: a worker that finds other weights under the name refuses.
    ``plan`` is the caller's own plan of the model, when it has one (the campaign's own process)."""
    device, compute_dtype = placement.device, placement.compute_dtype
    device_map, max_memory = placement.device_map, placement.max_memory
    key = _key(model, trust_remote_code, checksum, device, compute_dtype, device_map, max_memory)
    with _lock:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]
        if plan is None:
            with quiet_loading(quiet):
                plan = plan_model(model, trust_remote_code=trust_remote_code)
        if plan.checksum != checksum:
            raise ActstoreError(f"model {model!r} on this worker has checksum {plan.checksum[:12]}…, "
                                f"the campaign planned {checksum[:12]}…; give every worker the same weights")
        while len(_models) >= _capacity():
            _release(next(iter(_models)))
        offload = None
        if device_map is not None:  # accelerate may offload weights to disk: a folder that lives as long as the model
            _offload[key] = tempfile.TemporaryDirectory(prefix="actstore-offload-")
            offload = _offload[key].name
        try:
            with quiet_loading(quiet):
                net = plan.load_weights(device, compute_dtype, device_map, max_memory, offload)
        except BaseException:
            _release(key)
            raise
        _loads[key] += 1
        _models[key] = (plan, net)
        return plan, net


@contextlib.contextmanager
def scope() -> Iterator[None]:
    """Models first loaded inside are let go at the end, with their offload folders."""
    with _lock:
        before = set(_models)
    try:
        yield
    finally:
        with _lock:
            for key in [k for k in _models if k not in before]:
                _release(key)


def loads(model: str, trust_remote_code: bool, checksum: str, device: str = "cpu", compute_dtype: str = "float32",
          device_map: str | None = None, max_memory: dict[Any, Any] | None = None) -> int:
    """How many times this process has loaded the model's weights on ``device`` in ``compute_dtype``."""
    return _loads[_key(model, trust_remote_code, checksum, device, compute_dtype, device_map, max_memory)]
