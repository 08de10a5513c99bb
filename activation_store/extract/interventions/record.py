"""``record_interventions``: prepare a recording (checks first, then the model), run it, write it once.

Condition blocks are written as they finish (``write_partial``), so a killed run resumes;
the recorded group is assembled at the end. Nothing time-dependent is written."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ...checksums import config_hash
from ...errors import ActstoreError
from ...store import Store, layout
from ...store.interventions import clear_partial, intervention_path, read_partial, recorded_attrs, write_recorded
from ...store.lock import run_lock
from ...store.steering import INTERVENTIONS, SteeringVector, read_vector
from ...store.write import write_lens
from ...target_sets import all_strings, read_target_sets
from ...vocabulary import token_ids
from ..capture import final_norm_applied
from ..lens_head import model_head
from ..media import media_layout
from ..models import ModelPlan, plan_model
from ..progress import quiet_loading
from ..spec import RunSpec, stored_config_matches
from ..tokens import tokenize
from .conditions import Arrays, Recording, run_conditions
from .hooks import steered_layers
from .parse import InterventionSpec
from .positions import select_positions


@dataclass
class InterventionResult:
    store: str
    model: str
    dataset: str
    vector: str
    status: str  # "written" or "already complete"
    conditions: int
    examples: int
    seconds: float

    def summary(self) -> str:
        return (f"{self.status}: intervention {self.vector!r} on {self.model}/{self.dataset} in {self.store} — "
                f"{self.conditions} conditions × {self.examples} examples in {self.seconds:.1f}s")


def record_interventions(spec: RunSpec, steering: InterventionSpec) -> InterventionResult:
    """Run ``spec``'s model over its dataset once per coefficient of ``steering``'s vector; record the outputs."""
    started = time.perf_counter()
    rec = _prepare(_on_host(spec), steering)
    config = _config(rec)
    existing = recorded_attrs(rec.target, rec.path)
    if existing is not None and not rec.spec.overwrite:
        what = f"intervention {steering.recorded_name!r} on {rec.model.name}/{rec.data.name}"
        stored_config_matches(existing, config, what, rec.spec.store)
        status = "already complete"
    else:
        status = _write(rec, config)
    return InterventionResult(rec.spec.store, rec.model.name, rec.data.name, steering.recorded_name, status,
                              len(steering.coefficients), len(rec.tokens.examples), time.perf_counter() - started)


def _on_host(spec: RunSpec) -> RunSpec:
    """``spec`` pinned to the CPU in float32, where interventions run; a spec asking for another placement is refused."""
    asked = [flag for flag, value in (("--device", spec.device not in ("auto", "cpu")),
                                      ("--compute-dtype", spec.compute_dtype not in (None, "float32")),
                                      ("--device-map", spec.device_map is not None),
                                      ("--batch-size auto", spec.batch_size == "auto")) if value]
    if asked:
        raise ActstoreError(f"{asked[0]} is for plain extraction; --intervene runs on the CPU in float32")
    return replace(spec, device="cpu", compute_dtype="float32")


def _prepare(spec: RunSpec, steering: InterventionSpec) -> Recording:
    """Everything a recording needs, the cheap checks (targets, data, store, vector, layers) before the weights."""
    store, options = spec.store, spec.storage_options
    target_sets = read_target_sets(steering.target_tokens) if steering.target_tokens is not None else {}
    data = spec.load_data()
    if not Store.exists(store, options):
        raise ActstoreError(f"no actstore store at {store}; extract a run and define a steering vector first")
    with quiet_loading(not spec.progress):
        model = plan_model(spec.model, trust_remote_code=spec.trust_remote_code)
    target = Store.open(store, options, mode="r+")
    steer = read_vector(target, model.name, steering.vector)
    path = intervention_path(model.name, data.name, steering.recorded_name)
    layers = _checked_layers(steering, steer, model)
    wanted = all_strings(target_sets)
    with quiet_loading(not spec.progress):
        net = model.load_weights()  # target ids come from the lens head, checked before "already complete"
    head = model_head(net, model)
    target_ids = token_ids(head[0][layout.VOCAB_TOKEN], wanted).tolist()
    tokens = media_layout(model, data, data.examples(), bos=spec.bos, suffixes=spec.suffixes, templates=spec.templates,
                          weights=lambda: net) or tokenize(model.tokenizer, data.examples(), bos=spec.bos, suffixes=spec.suffixes)
    return Recording(spec, steering, data, model, net, steer, target, path, head, tokens, wanted, target_ids, layers,
                     select_positions(tokens, steering))


def _checked_layers(steering: InterventionSpec, steer: SteeringVector, model: ModelPlan) -> list[int]:
    """The recorded layers, once the vector is known to fit the model (its width, its layer) and so are they."""
    d_model, n_decoder = model.d_model, model.n_decoder_layers
    if steer.vector.shape != (d_model,):
        raise ActstoreError(f"vector {steering.vector!r} has {steer.vector.shape[0]} dimensions but the model's hidden "
                            f"size is {d_model}")
    last = n_decoder - 1 if steering.site == "resid_post" else n_decoder  # a sublayer adds before the final norm
    if not 1 <= steer.layer <= last:
        raise ActstoreError(f"vector {steering.vector!r} is for layer {steer.layer}, out of range for this model "
                            f"(1..{last}{'' if steering.site == 'resid_post' else ' at ' + steering.site})")
    layers = list(steering.record_layers or [steer.layer])
    bad = [layer for layer in layers if not 0 <= layer <= n_decoder]
    if bad:
        raise ActstoreError(f"--record-layers: layer {bad[0]} is out of range; the model has layers 0..{n_decoder}")
    return layers


def _config(rec: Recording) -> dict[str, Any]:
    """The recording's configuration: the run's, the vector (by content) and what is recorded; its hash names blocks."""
    steering, steer = rec.steering, rec.steer
    return {
        **rec.spec.config(rec.data, rec.model), "vector": steering.vector, "vector_attrs": steer.attrs,
        "vector_sha": config_hash({"v": steer.vector.astype(np.float64).tolist()}),
        "coefficients": list(steering.coefficients), "positions": steering.positions,
        **({"mode": steering.mode} if steering.mode != "add" else {}),  # absent: add runs keep their hash
        **({"onward": True} if steering.onward else {}),
        **({"site": steering.site} if steering.site != "resid_post" else {}),
        "generate": steering.generate,
        "seeds": list(steering.seeds) if steering.seeds is not None else None, "targets": rec.wanted,
        "top_k": steering.top_k, "record_layers": rec.layers,
    }


def _write_partial(*args) -> None:
    """``write_partial`` as the package exports it, looked up at each call: patching
    ``activation_store.extract.interventions.write_partial`` (the resume test does) reaches the writer."""
    sys.modules[__package__].write_partial(*args)


def _write(rec: Recording, config: dict[str, Any]) -> str:
    """Run every condition not already written (under the store's run lock), then write the recorded group."""
    target, path, steering, model = rec.target, rec.path, rec.steering, rec.model
    with run_lock(target, f"{layout.encode_name(model.name)}/{INTERVENTIONS}"):
        blocks_hash = config_hash(config)
        if rec.spec.overwrite:
            clear_partial(target, path)
        resume = read_partial(target, path, blocks_hash)
        arrays = run_conditions(rec, resume, lambda c, block: _write_partial(target, path, blocks_hash, c, block))
        arrays.update(_coords(rec))
        attrs = {
            "config": config, "config_hash": blocks_hash, "vector": steering.vector, "layer": rec.steer.layer,
            "steered_layers": steered_layers(rec.steer.layer, model.n_decoder_layers, steering.onward),
            "hook": rec.steer.attrs.get("hook", ""), "positions": steering.positions, "mode": steering.mode,
            "site": steering.site,
            "provenance": rec.spec.provenance(rec.data, model, type(rec.net).__name__, created=False),  # reruns: same bytes
        }
        write_lens(target, layout.encode_name(model.name), *rec.head)
        write_recorded(target, path, arrays, attrs)
        target.consolidate()
    n = len(steering.coefficients)
    return f"written (resumed: {len(resume)} of {n} conditions were done)" if resume else "written"


def _coords(rec: Recording) -> Arrays:
    """The recorded group's coordinates: conditions, examples, tokens (media cells, steered or not), targets,
    samples, layers."""
    tokens, steering, layers = rec.tokens, rec.steering, rec.layers
    applied = final_norm_applied(rec.net, tokens.ids[: min(4, len(tokens.ids))], rec.model.pad_id)
    token_coords = tokens.token_coords()
    media_coords = [n for n in layout.MEDIA_TOKEN_COORDS if n in token_coords]
    steered = [np.isin(np.arange(len(ids)), s) for ids, s in zip(tokens.ids, rec.selected)]
    return {
        "condition": (("condition",), np.arange(len(steering.coefficients), dtype=np.int32)),
        "coefficient": (("condition",), np.array(steering.coefficients, dtype=np.float64)),
        "example": (("example",), np.arange(len(tokens.examples), dtype=np.int64)),
        **{k: (("example",), v) for k, v in tokens.example_coords().items()},
        "token_id": (("token",), token_coords["token_id"]),
        "token_example": (("token",), token_coords["token_example"]),
        "position": (("token",), token_coords["position"]),
        "modality": (("token",), token_coords["modality"]),
        **{n: (("token",), token_coords[n]) for n in media_coords},
        "steered": (("token",), np.concatenate(steered)),
        "target_token": (("target",), np.array(rec.wanted, dtype=object)),
        "target_id": (("target",), np.array(rec.target_ids, dtype=np.int64)),
        "seed": (("sample",), np.array(steering.samples, dtype=np.int64)),
        "layer": (("layer",), np.array(layers, dtype=np.int32)),
        "final_norm_applied": (("layer",), np.array([applied[layer] for layer in layers], dtype=bool)),
    }
