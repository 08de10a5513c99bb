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
written, so one command run twice writes identical arrays.

The package, by step: ``parse`` (what is asked, validated once), ``positions`` (which prompt
tokens get the vector), ``hooks`` (putting it in), ``generate`` (forward passes and cached
continuations), ``conditions`` (the loop over conditions and batches, one ``Recording`` context)
and ``record`` (prepare, run, write). Position selections are parsed by activation_store/positions.py."""
from __future__ import annotations

from ...positions import HALVES, MODALITIES, STEER_OPTION as POSITIONS_OPTION
from ...store.interventions import write_partial  # looked up here at each call: tests patch it to kill a run
from .conditions import BLOCK_DIMS, Recording, run_conditions, steer_width
from .generate import Continuation, continue_prompts
from .generate import _forward, _generate, _pick, _prompt_cache  # noqa: F401  (benchmarks/intervention_generation.py)
from .hooks import Steering, decoder_layers, steer_state, steered_layers
from .parse import GREEDY, MODES, InterventionSpec, parse_coefficients, parse_positions, parse_seeds
from .positions import example_token_coords, select_positions, steer_mask, steered_positions
from .record import InterventionResult, record_interventions

__all__ = [
    "BLOCK_DIMS", "GREEDY", "HALVES", "MODALITIES", "MODES", "POSITIONS_OPTION", "Continuation", "InterventionResult",
    "InterventionSpec", "Recording", "Steering", "continue_prompts", "decoder_layers", "example_token_coords",
    "parse_coefficients", "parse_positions", "parse_seeds", "record_interventions", "run_conditions",
    "select_positions", "steer_mask", "steer_state", "steer_width", "steered_layers", "steered_positions",
    "write_partial",
]
