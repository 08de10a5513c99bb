"""Models kept loaded in a process between tasks: one load per worker per model.

A campaign sends a worker many tasks of the same model; loading it for each
would cost more than the forward passes. Each process keeps the last
``ACTSTORE_WORKER_MODELS`` (default 2) models it loaded, keyed by name, remote
code setting, checksum, device and compute dtype (a model in bfloat16 on a GPU
is another load than the same model in float32 on the CPU); a lock makes
threads of one worker share one load.
Campaigns order their tasks model by model, so a worker rarely holds more than
one model at a time. ``loads()`` counts loads, so tests and benchmarks can check
the promise."""
from __future__ import annotations

import os
import threading
from collections import Counter, OrderedDict
from typing import Any

from ..errors import ActstoreError
from .models import ModelPlan, plan_model
from .progress import quiet_loading

_lock = threading.Lock()
Key = tuple[str, bool, str, str, str]  # model, trust_remote_code, checksum, device, compute dtype
_models: OrderedDict[Key, tuple[ModelPlan, Any]] = OrderedDict()
_loads: Counter = Counter()


def _capacity() -> int:
    return max(1, int(os.environ.get("ACTSTORE_WORKER_MODELS", "2")))


def cached_model(model: str, trust_remote_code: bool, checksum: str, quiet: bool = False, device: str = "cpu",
                 compute_dtype: str = "float32") -> tuple[ModelPlan, Any]:
    """``(plan, network)`` for ``model`` on ``device`` in ``compute_dtype``, loaded at most once in this process
    while it stays cached.

    ``checksum`` is what the campaign planned with: a worker that finds other weights under the name refuses."""
    key = (model, trust_remote_code, checksum, device, compute_dtype)
    with _lock:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]
        with quiet_loading(quiet):
            plan = plan_model(model, trust_remote_code=trust_remote_code)
        if plan.checksum != checksum:
            raise ActstoreError(f"model {model!r} on this worker has checksum {plan.checksum[:12]}…, "
                                f"the campaign planned {checksum[:12]}…; give every worker the same weights")
        while len(_models) >= _capacity():
            _models.popitem(last=False)
        with quiet_loading(quiet):
            net = plan.load_weights(device, compute_dtype)
        _loads[key] += 1
        _models[key] = (plan, net)
        return plan, net


def loads(model: str, trust_remote_code: bool, checksum: str, device: str = "cpu", compute_dtype: str = "float32") -> int:
    """How many times this process has loaded the model's weights on ``device`` in ``compute_dtype``."""
    return _loads[(model, trust_remote_code, checksum, device, compute_dtype)]
