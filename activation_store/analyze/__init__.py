"""The paper's analyses as pure functions from xarray objects to xarray objects; no model, no files written.

The short names below are the notebook surface (``actstore.analyze.similarity(ds)``);
the submodules hold the rest. ``activation_store.workflows`` opens stores, saves
results and writes CSV; ``activation_store.plot`` draws figures."""
from .intervention import per_example, summarize
from .languages import language_mass, language_table, languages
from .logit_lens import logit_lens, readout, target_summary
from .moments import state_moments
from .selection import examples_of, last_tokens, mean_tokens, pooled, select_layers, tokens_of
from .similarity import pair_by_item
from .similarity import variant_similarity as similarity
from .stats import grouped_mean_ci, mean_ci

__all__ = ["examples_of", "grouped_mean_ci", "language_mass", "language_table", "languages", "last_tokens",
           "logit_lens", "mean_ci", "mean_tokens", "pair_by_item", "per_example", "pooled", "readout",
           "select_layers", "similarity", "state_moments", "summarize", "target_summary", "tokens_of"]
