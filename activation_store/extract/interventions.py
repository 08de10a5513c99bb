"""Running a steering intervention once and recording what it did to the outputs.

For each coefficient c (0, the baseline, always included and first) the model runs
over the dataset with c × vector added to (mode ``add``) or put in place of (mode
``replace``) the output of decoder layer l − 1 — the state stored as
``hidden_states[l]`` (index 0 is the embeddings) — and, with ``onward``, of every later
decoder layer too (the paper's Chameleon intervention), at the chosen prompt positions:
``last``, ``all`` (the generated tokens are steered too), a Python slice
``START:END``, or the positions of one modality, ``image``/``audio``/``text``
(``modality:image`` alike), or one half of each image's grid (``image:top``,
``image:bottom``, ``image:left``, ``image:right``; a middle row or column of an odd
grid is in neither half). Image and audio variants run through the model's
processor exactly as in a plain extraction (extract/media.py). Recorded per
condition and example:

- next-token log-probs at the last prompt position over a *support*: the target
  tokens, then the baseline's ranks up to a fixed width (targets + top-k × conditions),
  so every condition has log-probs of the same ids, where KL(baseline ‖ steered) has its mass;
- each condition's own top-k (ids, log-probs) and the targets' log-probs;
- with ``generate`` N: N tokens of continuation, greedy (``seed`` −1), or sampled
  at temperature 1 from a torch.Generator seeded with (seed, batch) (the same seed
  gives the same random draws in every condition, so conditions differ only by the vector),
  one token a step on the prompt's key-value cache;
- ``states``: hidden states of the prompt tokens at chosen layers (default: the vector's layer),
  (condition, layer, token, d_model), tokens packed as in a run, with each token's modality,
  media grid cell or slot, and ``steered`` (whether the vector reached it).

The baseline runs exactly as a plain extraction does (same batches, same padding,
no hook), so its states equal the stored run's. Each condition is written as a
block as soon as it is done; a killed run resumes, recomputing only the missing
conditions; the recorded group is assembled at the end. Nothing time-dependent is
written, so one command run twice writes identical arrays."""
from __future__ import annotations

import copy
import math
import re
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from ..checksums import config_hash
from ..errors import ActstoreError
from ..store import Store, layout
from ..store.interventions import (clear_partial, intervention_path, read_partial, recorded_attrs, write_partial,
                                   write_recorded)
from ..store.lock import run_lock
from ..store.steering import INTERVENTIONS, SteeringVector, read_vector
from ..store.write import write_lens
from ..target_sets import all_strings, read_target_sets
from ..vocabulary import token_ids
from .capture import final_norm_applied, pad_batch
from .lens_head import model_head
from .media import media_layout
from .models import ModelPlan, plan_model
from .progress import progress_bar, quiet_loading
from .spec import RunSpec, stored_config_matches
from .tokens import TokenLayout, tokenize

GREEDY = -1
POSITIONS_OPTION = "--steer-positions"  # the CLI option holding a position selection, named in messages
MODES = ("add", "replace")
MODALITIES = ("image", "audio", "text")
HALVES = {"top": "media_row", "bottom": "media_row", "left": "media_col", "right": "media_col"}


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
    """The one parser of a position selection: ``all``, ``last``, a slice, or a modality (``image``, ``audio``,
    ``text``, also spelt ``modality:image``) or image half (``image:top``…), returned in its canonical spelling."""
    text = (text or "").strip()
    if text in ("all", "last"):
        return text
    media = re.fullmatch(rf"(?:modality:)?({'|'.join(MODALITIES)})(?::(\w+))?", text)
    if media and (media[2] is None or (media[1] == "image" and media[2] in HALVES)):
        return f"{media[1]}:{media[2]}" if media[2] else media[1]
    match = re.fullmatch(r"\s*(-?\d*)\s*:\s*(-?\d*)\s*", text)
    if not match:
        raise ActstoreError(f"{POSITIONS_OPTION} must be all, last, START:END (a Python slice), image, audio, text "
                            f"or image:top|bottom|left|right, got {text!r}")
    return slice(int(match[1]) if match[1] else None, int(match[2]) if match[2] else None)


def steered_positions(positions: str | slice, length: int, coords: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Prompt positions (0-based) of one example that get the vector; ``coords`` are its tokens' ``modality``,
    ``media_row`` and ``media_col`` (a text layout's tokens are all text)."""
    if positions == "last":
        return np.array([length - 1])
    if positions == "all":
        return np.arange(length)
    if isinstance(positions, slice):
        return np.arange(length)[positions]
    kind, _, half = positions.partition(":")
    modality = coords["modality"] if coords else np.full(length, "text", dtype=object)
    chosen = modality == kind
    if half:
        cell = coords[HALVES[half]] if coords and HALVES[half] in coords else np.full(length, -1)
        size = int(cell[chosen].max()) + 1 if chosen.any() else 0
        chosen &= (cell >= 0) & ((cell < size // 2) if half in ("top", "left") else (cell >= (size + 1) // 2))
    return np.flatnonzero(chosen)


def example_token_coords(tokens: TokenLayout) -> list[dict[str, np.ndarray]]:
    """Each example's per-token modality and grid cells (what a media position selection reads)."""
    coords = tokens.token_coords()
    bounds = np.append(tokens.offsets, tokens.n_tokens).astype(np.int64)
    names = [n for n in ("modality", *layout.MEDIA_TOKEN_COORDS) if n in coords]
    return [{n: coords[n][a:b] for n in names} for a, b in zip(bounds[:-1], bounds[1:])]


def steer_state(hidden: torch.Tensor, mask: torch.Tensor, value: torch.Tensor, mode: str) -> torch.Tensor:
    """``hidden`` (batch × width × d) with ``value`` added to it, or put in its place, where ``mask`` (batch ×
    width, 0/1) is 1; ``value`` is coefficient × vector."""
    mask = mask[:, : hidden.shape[1], None]
    if mode == "replace":
        return torch.where(mask.bool(), value.to(hidden.dtype), hidden)
    return hidden + (mask * value).to(hidden.dtype)


def decoder_layers(net) -> torch.nn.ModuleList:
    """The language model's stack of decoder layers (the ModuleList as long as num_hidden_layers): a
    vision/audio-language model's is searched in its ``language_model``, never in its vision or audio tower."""
    n = net.config.get_text_config().num_hidden_layers
    language = getattr(net.base_model, "language_model", None)
    language = net.base_model if language is None else language
    direct = getattr(language, "layers", None)
    if isinstance(direct, torch.nn.ModuleList) and len(direct) == n:
        return direct
    for module in language.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise ActstoreError(f"cannot find the decoder layers of {type(net).__name__}")


class Steering:
    """Forward hooks on one or more decoder layers adding ``coefficient × vector`` where ``mask`` is 1 (batch ×
    width), or with mode ``replace`` putting it in place of the state there, before any other hook."""

    def __init__(self, layer_modules: torch.nn.Module | list[torch.nn.Module], vector: torch.Tensor, mode: str = "add"):
        self.modules = layer_modules if isinstance(layer_modules, list) else [layer_modules]
        self.vector, self.mode, self.value, self.mask = vector, mode, None, None

    def __enter__(self):
        # prepended: before transformers' own recorder, so the recorded hidden states show the change
        self.handles = [module.register_forward_hook(self._hook, prepend=True) for module in self.modules]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()

    def set(self, coefficient: float, mask: torch.Tensor | None) -> None:
        """Steer the next forward passes with ``coefficient`` at ``mask``; coefficient 0 runs the model untouched."""
        self.value = None if coefficient == 0 or mask is None else coefficient * self.vector
        self.mask = mask

    def _hook(self, _module, _inputs, output):
        if self.value is None:
            return output
        hidden = output[0] if isinstance(output, tuple) else output
        steered = steer_state(hidden, self.mask, self.value, self.mode)
        return (steered, *output[1:]) if isinstance(output, tuple) else steered


def _last_logits(net, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head on final states (already final-normed), with the model's logit soft-capping."""
    logits = net.get_output_embeddings()(hidden)
    cap = getattr(net.config.get_text_config(), "final_logit_softcapping", None)
    return cap * torch.tanh(logits / cap) if cap else logits


@torch.inference_mode()
def _forward(net, ids: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor, **inputs):
    """Next-token logits after position ``lengths − 1`` of each row, and all hidden states; ``inputs`` are a
    media batch's pixels or audio features."""
    out = net.base_model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False, **inputs)
    last = out.last_hidden_state[torch.arange(ids.shape[0]), lengths - 1]
    return _last_logits(net, last).double(), out.hidden_states


@torch.inference_mode()
def _prompt_cache(net, rows: list[list[int]], pad_id: int, hook: "Steering", coefficient: float,
                  chosen: list[np.ndarray], inputs: dict):
    """The steered prompts' key-value cache, left-padded (so every row's next token sits at the same cache index
    and index distances equal position distances, as sliding-window attention assumes), and its attention mask.
    ``chosen`` are each row's steered positions, counted from its first token; ``inputs`` a media batch's."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    hook.set(coefficient, steer_mask([width - len(row) + np.asarray(c) for row, c in zip(rows, chosen)], width))
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    out = net.base_model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **inputs)
    return out.cache, mask


def _support(target_ids: list[int], baseline_order: np.ndarray, width: int) -> np.ndarray:
    """Targets, then the baseline's ranks, to ``width`` ids (fixed before any steered condition runs, so each
    condition can be written as soon as it is done)."""
    chosen = dict.fromkeys(target_ids)
    for i in baseline_order:
        if len(chosen) >= width:
            break
        chosen.setdefault(int(i))
    return np.array(list(chosen)[:width], dtype=np.int64)


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

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "coefficients", tuple(parse_coefficients(self.coefficients)))
        seeds = parse_seeds(self.seeds) if isinstance(self.seeds, str) else self.seeds
        set_(self, "seeds", tuple(seeds) if seeds is not None else None)
        set_(self, "record_layers", tuple(sorted(set(self.record_layers))) if self.record_layers else None)
        where = parse_positions(self.positions)
        if isinstance(where, str):  # "modality:image" and "image" are one selection, recorded alike
            set_(self, "positions", where)
        if self.mode not in MODES:
            raise ActstoreError(f"--steer-mode must be add or replace, got {self.mode!r}")
        if self.generate < 0:
            raise ActstoreError(f"--generate must be 0 or more tokens, got {self.generate}")
        if self.seeds is not None and not self.generate:
            raise ActstoreError("--seed samples continuations; give --generate N too")
        if self.top_k < 1:
            raise ActstoreError(f"--top-k must be at least 1, got {self.top_k}")

    @property
    def where(self) -> str | slice:
        return parse_positions(self.positions)

    @property
    def samples(self) -> list[int]:
        """One entry per recorded continuation: the seeds, or ``GREEDY`` once, or none without ``generate``."""
        return list(self.seeds) if self.seeds is not None else ([GREEDY] if self.generate else [])


def _on_host(spec: RunSpec) -> RunSpec:
    """``spec`` pinned to the CPU in float32, where interventions run; a spec asking for another placement is refused."""
    asked = [flag for flag, value in (("--device", spec.device not in ("auto", "cpu")),
                                      ("--compute-dtype", spec.compute_dtype not in (None, "float32")),
                                      ("--device-map", spec.device_map is not None),
                                      ("--batch-size auto", spec.batch_size == "auto")) if value]
    if asked:
        raise ActstoreError(f"{asked[0]} is for plain extraction; --intervene runs on the CPU in float32")
    return replace(spec, device="cpu", compute_dtype="float32")


def record_interventions(spec: RunSpec, steering: InterventionSpec) -> InterventionResult:
    """Run ``spec``'s model over its dataset once per coefficient of ``steering``'s vector; record the outputs."""
    started = time.perf_counter()
    spec = _on_host(spec)
    store, options = spec.store, spec.storage_options
    target_sets = read_target_sets(steering.target_tokens) if steering.target_tokens is not None else {}
    data = spec.load_data()
    if not Store.exists(store, options):
        raise ActstoreError(f"no actstore store at {store}; extract a run and define a steering vector first")
    with quiet_loading(not spec.progress):
        model = plan_model(spec.model, trust_remote_code=spec.trust_remote_code)
    target = Store.open(store, options, mode="r+")
    steer = read_vector(target, model.name, steering.vector)
    path = intervention_path(model.name, data.name, steering.vector)
    d_model, n_decoder = model.d_model, model.n_decoder_layers
    if steer.vector.shape != (d_model,):
        raise ActstoreError(f"vector {steering.vector!r} has {steer.vector.shape[0]} dimensions but the model's hidden "
                            f"size is {d_model}")
    if not 1 <= steer.layer <= n_decoder - 1:
        raise ActstoreError(f"vector {steering.vector!r} is for layer {steer.layer}, out of range for this model "
                            f"(1..{n_decoder - 1})")
    layers = list(steering.record_layers or [steer.layer])
    bad = [layer for layer in layers if not 0 <= layer <= n_decoder]
    if bad:
        raise ActstoreError(f"--record-layers: layer {bad[0]} is out of range; the model has layers 0..{n_decoder}")
    wanted = all_strings(target_sets)
    with quiet_loading(not spec.progress):
        net = model.load_weights()  # target ids come from the lens head, checked before "already complete"
    head_arrays, head_attrs = model_head(net, model)
    target_ids = token_ids(head_arrays[layout.VOCAB_TOKEN], wanted).tolist()
    tokens = media_layout(model, data, data.examples(), bos=spec.bos, suffixes=spec.suffixes, templates=spec.templates,
                          weights=lambda: net) or tokenize(model.tokenizer, data.examples(), bos=spec.bos, suffixes=spec.suffixes)
    selected = select_positions(tokens, steering)
    config = {
        **spec.config(data, model), "vector": steering.vector, "vector_attrs": steer.attrs,
        "vector_sha": config_hash({"v": steer.vector.astype(np.float64).tolist()}),
        "coefficients": list(steering.coefficients), "positions": steering.positions,
        **({"mode": steering.mode} if steering.mode != "add" else {}),  # absent: add runs keep their hash
        **({"onward": True} if steering.onward else {}),
        "generate": steering.generate,
        "seeds": list(steering.seeds) if steering.seeds is not None else None, "targets": wanted,
        "top_k": steering.top_k, "record_layers": layers,
    }
    what = f"intervention {steering.vector!r} on {model.name}/{data.name}"
    existing = recorded_attrs(target, path)
    if existing is not None and not spec.overwrite:
        stored_config_matches(existing, config, what, store)
        return InterventionResult(store, model.name, data.name, steering.vector, "already complete",
                                  len(steering.coefficients), len(tokens.examples), time.perf_counter() - started)

    lock_path = f"{layout.encode_name(model.name)}/{INTERVENTIONS}"
    with run_lock(target, lock_path):
        blocks_hash = config_hash(config)
        if spec.overwrite:
            clear_partial(target, path)
        resume = read_partial(target, path, blocks_hash)
        arrays = _run(net, model, tokens, spec, steering, steer, target_ids, layers, selected, resume,
                      lambda c, block: write_partial(target, path, blocks_hash, c, block))
        arrays.update(_coords(net, model, tokens, steering, wanted, target_ids, layers, selected))
        attrs = {
            "config": config, "config_hash": blocks_hash, "vector": steering.vector, "layer": steer.layer,
            "steered_layers": steered_layers(steer.layer, n_decoder, steering.onward),
            "hook": steer.attrs.get("hook", ""), "positions": steering.positions, "mode": steering.mode,
            "provenance": spec.provenance(data, model, type(net).__name__, created=False),  # reruns write identical bytes
        }
        write_lens(target, layout.encode_name(model.name), head_arrays, head_attrs)
        write_recorded(target, path, arrays, attrs)
        target.consolidate()
    status = f"written (resumed: {len(resume)} of {len(steering.coefficients)} conditions were done)" if resume else "written"
    return InterventionResult(store, model.name, data.name, steering.vector, status, len(steering.coefficients),
                              len(tokens.examples), time.perf_counter() - started)


def _coords(net, model: ModelPlan, tokens: TokenLayout, steering: InterventionSpec, wanted: list[str],
            target_ids: list[int], layers: list[int], selected: list[np.ndarray]
            ) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    """The recorded group's coordinates: conditions, examples, tokens (media cells, steered or not), targets,
    samples, layers."""
    applied = final_norm_applied(net, tokens.ids[: min(4, len(tokens.ids))], model.pad_id)
    token_coords = tokens.token_coords()
    media_coords = [n for n in layout.MEDIA_TOKEN_COORDS if n in token_coords]
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
        "steered": (("token",), np.concatenate([np.isin(np.arange(len(ids)), s) for ids, s in zip(tokens.ids, selected)])),
        "target_token": (("target",), np.array(wanted, dtype=object)),
        "target_id": (("target",), np.array(target_ids, dtype=np.int64)),
        "seed": (("sample",), np.array(steering.samples, dtype=np.int64)),
        "layer": (("layer",), np.array(layers, dtype=np.int32)),
        "final_norm_applied": (("layer",), np.array([applied[layer] for layer in layers], dtype=bool)),
    }


def select_positions(tokens: TokenLayout, steering: InterventionSpec) -> list[np.ndarray]:
    """The steered prompt positions of every example; an example where the selection finds none is refused."""
    where, selected = steering.where, []
    for example, ids, coords in zip(tokens.examples, tokens.ids, example_token_coords(tokens)):
        chosen = steered_positions(where, len(ids), coords)
        if not len(chosen):
            kind = where.partition(":")[0] if isinstance(where, str) and where not in ("all", "last") else None
            hint = ("" if kind in (None, "text") else f"; choose the {kind} variants with --variants"
                    if not (coords["modality"] == kind).any() else "; its image has no row × column grid here")
            raise ActstoreError(f"{POSITIONS_OPTION} {steering.positions} selects no token of example {example.item!r} "
                                f"({example.variant}, {len(ids)} tokens){hint}")
        selected.append(chosen)
    return selected


def steered_layers(layer: int, n_decoder: int, onward: bool) -> list[int]:
    """The hidden-state layers that get the vector: its own, and with ``onward`` every later one through the last."""
    return list(range(layer, n_decoder + 1)) if onward else [layer]


def steer_mask(rows_positions: list[np.ndarray], width: int) -> torch.Tensor:
    """Batch × width, 1 at each row's steered positions."""
    mask = torch.zeros((len(rows_positions), width), dtype=torch.float32)
    for i, chosen in enumerate(rows_positions):
        mask[i, chosen] = 1.0
    return mask


def _run(net, model: ModelPlan, tokens: TokenLayout, spec: RunSpec, steering: InterventionSpec, steer: SteeringVector,
         target_ids: list[int], layers: list[int], selected: list[np.ndarray],
         resume: dict[int, dict[str, np.ndarray]],
         save: Callable[[int, dict[str, tuple[tuple[str, ...], np.ndarray]]], None]
         ) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    """Every condition (the baseline first: it fixes the support) over every batch: the recorded arrays, by name.

    Each condition is one block: taken from ``resume`` when an interrupted run finished it, else computed
    and handed to ``save`` at once."""
    coefficients = steering.coefficients
    vocab_size = net.get_output_embeddings().weight.shape[0]
    k = min(steering.top_k, vocab_size)
    width = min(vocab_size, len(set(target_ids)) + k * len(coefficients))
    blocks, support_id = [], None
    blocks_of_net = decoder_layers(net)
    hooked = [blocks_of_net[layer - 1] for layer in steered_layers(steer.layer, model.n_decoder_layers, steering.onward)]
    with Steering(hooked, torch.from_numpy(steer.vector).float(), steering.mode) as hook, \
            progress_bar(len(coefficients) * len(tokens.ids), unit="ex", desc="intervene", enabled=spec.progress) as bar:
        for c, coefficient in enumerate(coefficients):
            block = resume.get(c)
            if block is None:
                block = _condition(net, model, tokens, spec, steering, hook, coefficient, target_ids, layers, selected,
                                   k, support_id, width, bar)
                save(c, {name: (dims, block[name]) for name, dims in BLOCK_DIMS.items() if name in block})
            else:
                bar.update(len(tokens.ids))
            support_id = block["support_id"] if c == 0 else support_id
            blocks.append(block)
    generated = np.stack([b["generated_id"] for b in blocks])
    eos, tokenizer = model.tokenizer.eos_token_id, model.tokenizer
    texts = np.empty(generated.shape[:3], dtype=object)
    for index in np.ndindex(*texts.shape):
        row = generated[index].tolist()
        row = row[: row.index(eos)] if eos in row else row
        texts[index] = tokenizer.decode(row, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    out = {"support_id": (("example", "support"), support_id)}
    for name, dims in BLOCK_DIMS.items():
        if name != "support_id":
            out[name] = (("condition", *dims), np.stack([b[name] for b in blocks]))
    out["generated_text"] = (("condition", "sample", "example"), texts)
    return out


BLOCK_DIMS = {  # one condition's arrays (the baseline's block also holds the support)
    "support_id": ("example", "support"),
    "logprob": ("example", "support"),
    "top_id": ("example", "rank"),
    "top_logprob": ("example", "rank"),
    "target_logprob": ("example", "target"),
    "generated_id": ("sample", "example", "step"),
    "states": ("layer", "token", "d_model"),
}


def _condition(net, model: ModelPlan, tokens: TokenLayout, spec: RunSpec, steering: InterventionSpec, hook: Steering,
               coefficient: float, target_ids: list[int], layers: list[int], selected: list[np.ndarray], k: int,
               support_id: np.ndarray | None, width: int, bar) -> dict[str, np.ndarray]:
    """One condition over every batch. ``support_id`` None: this is the baseline, whose ranks make the support."""
    where, generate, samples, batch_size = steering.where, steering.generate, steering.samples, spec.batch_size
    n_ex = len(tokens.ids)
    baseline = support_id is None
    support_id = np.zeros((n_ex, width), np.int64) if baseline else support_id
    out = {
        "logprob": np.zeros((n_ex, width), np.float32), "top_id": np.zeros((n_ex, k), np.int64),
        "top_logprob": np.zeros((n_ex, k), np.float32), "target_logprob": np.zeros((n_ex, len(target_ids)), np.float32),
        "generated_id": np.zeros((len(samples), n_ex, generate), np.int64),
        "states": np.zeros((len(layers), tokens.n_tokens, steer_width(net)), np.float32),
    }
    token_start = 0
    for start in range(0, n_ex, batch_size):
        rows = tokens.ids[start:start + batch_size]
        stop = start + len(rows)
        lengths = torch.tensor([len(r) for r in rows])
        ids, mask = pad_batch(rows, model.pad_id)
        chosen = selected[start:stop]
        inputs = tokens.model_inputs(start, stop)  # a media batch's pixels / audio features
        hook.set(coefficient, steer_mask(chosen, ids.shape[1]))
        logits, states = _forward(net, ids, mask, lengths, **inputs)
        logp = torch.log_softmax(logits, dim=-1)
        real = mask.bool()
        n_real = int(real.sum())
        for j, layer_index in enumerate(layers):
            out["states"][j, token_start:token_start + n_real] = states[layer_index][real].float().numpy()
        order = torch.sort(logp, dim=-1, descending=True, stable=True).indices
        out["top_id"][start:stop] = order[:, :k].numpy()
        out["top_logprob"][start:stop] = torch.gather(logp, 1, order[:, :k]).numpy()
        if target_ids:
            out["target_logprob"][start:stop] = logp[:, target_ids].numpy()
        if baseline:
            for i in range(len(rows)):
                support_id[start + i] = _support(target_ids, order[i, :width].numpy(), width)
        out["logprob"][start:stop] = torch.gather(logp, 1, torch.from_numpy(support_id[start:stop])).numpy()
        if samples and generate > 1:
            past, left_mask = _prompt_cache(net, rows, model.pad_id, hook, coefficient, chosen, inputs)
        for s, seed in enumerate(samples):
            cache = None if generate == 1 else past if s + 1 == len(samples) else copy.deepcopy(past)
            out["generated_id"][s, start:stop] = _generate(  # each sample extends its own copy of the cache
                net, None if generate == 1 else left_mask, lengths, logits, cache, hook, coefficient, where, generate,
                seed, start // batch_size)
        token_start += n_real
        bar.update(len(rows))
    if baseline:
        out["support_id"] = support_id
    return out


def steer_width(net) -> int:
    return net.get_output_embeddings().weight.shape[1]


def _pick(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:
        return logits.argmax(dim=-1)
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)[:, 0]


@torch.inference_mode()
def _generate(net, mask: torch.Tensor | None, lengths: torch.Tensor, first_logits: torch.Tensor, past, hook: Steering,
              coefficient: float, where, steps: int, seed: int, batch_index: int) -> np.ndarray:
    """``steps`` tokens after each prompt of a batch, one token a step on the prompts' left-padded key-value cache.

    Token t of row i sits at cache index width + t with position id length_i + t, the pads masked out, so it sees
    exactly what an uncached rerun of prompt + earlier tokens sees. The prompt's steering is in the cache;
    with ``all`` positions each generated token is steered too. The first token comes from ``first_logits``
    (the recorded next-token distribution)."""
    generator = None if seed == GREEDY else torch.Generator().manual_seed(int(seed) * 1_000_003 + batch_index)
    n = len(lengths)
    if steps == 1:
        return _pick(first_logits, generator)[:, None].numpy()
    width = mask.shape[1]
    attention = torch.cat([mask, torch.zeros((n, steps), dtype=mask.dtype)], dim=1)
    out = torch.zeros((n, steps), dtype=torch.long)
    logits = first_logits
    hook.set(coefficient if where == "all" else 0.0, torch.ones((n, 1)))
    for t in range(steps):
        chosen = _pick(logits, generator)
        out[:, t] = chosen
        if t + 1 == steps:
            break
        attention[:, width + t] = 1
        result = net.base_model(input_ids=chosen[:, None], attention_mask=attention[:, : width + t + 1],
                                position_ids=(lengths + t)[:, None], cache=past, use_cache=True)
        past = result.cache
        logits = _last_logits(net, result.last_hidden_state[:, -1]).double()
    return out.numpy()
