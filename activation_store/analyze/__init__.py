"""The paper's analyses as pure functions from xarray objects to xarray objects; no model, no files written.

The short names below are the notebook surface (``actstore.analyze.similarity(ds)``);
the submodules hold the rest. ``activation_store.workflows`` opens stores, saves
results and writes CSV; ``activation_store.plot`` draws figures."""
from .baseline_similarity import baseline_similarity, variant_baseline_similarity
from .intervention import lens_forecast, outcome_shares, outcomes, per_example, summarize
from .language_mass import language_mass, language_table, languages
from .lens import logits
from .lens_readout import logit_lens, readout, target_summary
from .media_lens import colour_lens, keyword_lens
from .moments import state_moments
from .sites import at_site, site_names
from .selection import examples_of, last_tokens, mean_tokens, pooled, select_layers, tokens_of
from .pair_similarity import pair_by_item
from .pair_similarity import variant_similarity as similarity
from .stats import grouped_mean_ci, mean_ci
from .targets_compare import candidate_logprobs, marked_logprobs, role_confusion, target_margin, with_targets
from .trajectories import anchored_pca, number_anchors

__all__ = ["anchored_pca", "at_site", "baseline_similarity", "candidate_logprobs", "colour_lens", "examples_of",
           "grouped_mean_ci", "keyword_lens", "language_mass", "language_table", "languages", "last_tokens",
           "lens_forecast", "logit_lens", "logits", "marked_logprobs", "mean_ci", "mean_tokens", "number_anchors",
           "outcome_shares", "outcomes", "pair_by_item", "per_example", "pooled", "readout", "role_confusion",
           "select_layers", "similarity", "site_names", "state_moments", "summarize", "target_margin", "target_summary", "tokens_of",
           "variant_baseline_similarity", "with_targets"]
