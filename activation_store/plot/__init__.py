"""Figures of analysis results (matplotlib). No backend is chosen here: the caller (the CLI, a notebook)
decides; every figure sets its text in a font family that falls back to a bundled CJK font."""
from .analyses import language_plot, layer_curves_plot, logit_lens_plot, similarity_plot, target_plot
from .intervention import intervention_plot
from .text_grid import baseline_similarity_plot, margin_plot, roles_plot, trajectories_plot

__all__ = ["baseline_similarity_plot", "intervention_plot", "language_plot", "layer_curves_plot", "logit_lens_plot", "margin_plot",
           "roles_plot", "similarity_plot", "target_plot", "trajectories_plot"]
