"""``actstore extract --intervene NAME …``: the options of a recorded intervention run, and the call."""
from __future__ import annotations

from typing import Any, Callable

import click

from ..extract.spec import RunSpec

INTERVENTION_KEYS = ("intervene", "coefficients", "steer_positions", "steer_mode", "steer_onward", "generate", "seed", "target_tokens", "top_k", "record_layers", "steer_site")
# options that mean nothing without --intervene, and their values when not given
_STEERING_DEFAULTS = {"coefficients": None, "seed": None, "target_tokens": None, "record_layers": None,
                      "steer_mode": "add", "steer_onward": False, "steer_positions": "last", "steer_site": "resid_post",
                      "generate": 0}


def intervention_options(func: Callable) -> Callable:
    func = click.option("--record-layers", default=None, help="Comma-separated layers whose prompt states to keep per condition (default: the vector's layer).")(func)
    func = click.option("--top-k", "top_k", type=int, default=20, show_default=True, help="With --intervene: next-token top-k kept per condition.")(func)
    func = click.option("--target-tokens", default=None, type=click.Path(dir_okay=False), help="With --intervene: vocabulary strings to record (one a line, or a .json of named sets).")(func)
    func = click.option("--seed", default=None, help="With --generate: sample with these seeds (0..9 or 0,3,7) instead of greedy decoding.")(func)
    func = click.option("--generate", type=int, default=0, show_default=True, help="With --intervene: tokens of continuation per condition.")(func)
    func = click.option("--steer-onward", is_flag=True, help="With --intervene: steer the vector's layer and every later layer's output (the paper's Chameleon replace).")(func)
    func = click.option("--steer-site", "steer_site", default="resid_post", show_default=True, metavar="resid_post|attn_out|mlp_out",
                        help="With --intervene: add the vector to the block's output, or to what its attention or MLP adds to the residual stream.")(func)
    func = click.option("--steer-mode", default="add", show_default=True, metavar="add|replace", help="With --intervene: add coefficient × vector to the state, or replace the state with it.")(func)
    func = click.option("--steer-positions", "steer_positions", default="last", show_default=True, help="With --intervene: prompt positions that get the vector: all, last, START:END, "
                        "a modality (image, audio, text) or an image half (image:top|bottom|left|right).")(func)
    func = click.option("--coefficients", default=None, help="With --intervene: comma-separated coefficients (0, the baseline, is always run).")(func)
    func = click.option("--intervene", default=None, metavar="VECTOR", help="Record a steering intervention with this stored vector instead of states.")(func)
    return func


def run_intervention(options: dict[str, Any], spec: RunSpec) -> str:
    """Call the recorder with the CLI's values; returns its summary line ("" without --intervene)."""
    if not options.get("intervene"):  # checked before the recorder's import, which pulls in torch
        given = [k for k, default in _STEERING_DEFAULTS.items() if options.get(k, default) not in (default, "")]
        if given:
            raise click.UsageError(f"--{given[0].replace('_', '-')} goes with --intervene VECTOR")
        return ""
    from ..extract.interventions import InterventionSpec, record_interventions

    if options.get("coefficients") is None:
        raise click.UsageError("--intervene needs --coefficients, e.g. 0,1,2,4")
    layers = None
    if options.get("record_layers"):
        try:
            layers = [int(v) for v in options["record_layers"].split(",") if v.strip()]
        except ValueError:
            raise click.BadParameter("expected comma-separated integers", param_hint="--record-layers") from None
    steering = InterventionSpec(vector=options["intervene"], coefficients=options["coefficients"],
                                positions=options["steer_positions"], mode=options["steer_mode"], onward=bool(options.get("steer_onward")), generate=options["generate"], seeds=options["seed"],
                                target_tokens=options["target_tokens"], top_k=options["top_k"], record_layers=layers,
                                site=options["steer_site"])
    return record_interventions(spec, steering).summary()
