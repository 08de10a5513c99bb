"""``actstore steering``: steering vectors as data in the store (defined without the model).

The vocabulary, everywhere: a *steering vector* is a stored direction
(``/<model>/steering/<name>``, ``store/steering.py``, this command); an *intervention* is
a recorded run of the model with a vector added at some coefficients
(``/<model>/interventions/<dataset>/<vector>``, ``store/interventions.py``,
``extract/interventions.py``, ``actstore extract --intervene VECTOR``)."""
from __future__ import annotations

from typing import Any

import click

from .options import OptionGroup, storage, store_options


@click.group()
def steering() -> None:
    """Define steering vectors from stored states, unembedding rows or a .npy file."""


def _source(from_states: str | None, from_unembedding: str | None, from_file: str | None, random_like: str | None,
            seed: int | None, minus: str | None) -> Any:
    from ..workflows.steering import VectorSource

    return VectorSource(from_states=from_states, from_unembedding=from_unembedding, from_file=from_file,
                        minus=minus, random_like=random_like, seed=seed)


def _access(endpoint_url: str | None, anon: bool) -> tuple[str | None, bool]:
    return endpoint_url, anon


# where the vector comes from: the VectorSource record
SOURCE = OptionGroup(
    _source,
    click.option("--from-states", default=None, metavar="DATASET:key=value…",
                 help="Mean last-token state at --layer of the selected stored examples, e.g. D:variant=en:item=good."),
    click.option("--from-unembedding", default=None, metavar="TOKEN", help='Unembedding row of a vocabulary string, e.g. " start".'),
    click.option("--from-file", default=None, type=click.Path(dir_okay=False), help="A 1-D .npy array of d_model numbers."),
    click.option("--random-like", default=None, metavar="NAME",
                 help="A random control: a random direction with the norm and layer of stored vector NAME (needs --seed)."),
    click.option("--seed", type=int, default=None, help="With --random-like: the random direction's seed."),
    click.option("--minus", default=None, help="Subtract this selector's mean state (or this token's unembedding row)."),
)
ACCESS = OptionGroup(_access, store_options)


@steering.command()
@click.option("--store", required=True, help="Local directory or fsspec URL.")
@click.option("--model", required=True, help="The model's name in the store (or its directory / .gguf file).")
@click.option("--name", required=True, help="The vector's name (used by extract --intervene NAME).")
@click.option("--layer", type=int, default=None, help="hidden_states index l: added to decoder layer l-1's output (required, except with --random-like).")
@SOURCE
@click.option("--coefficient", type=float, default=1.0, show_default=True, help="Default coefficient, recorded with the vector.")
@click.option("--overwrite", is_flag=True, help="Replace a vector of the same name.")
@ACCESS
def define(store: str, model: str, name: str, layer: int | None, coefficient: float, overwrite: bool,
           **values: Any) -> None:
    """Compute a steering vector and store it under the model (/<model>/steering/<name>)."""
    from ..workflows.steering import define_vector
    from ..extract.models import store_name

    source, (endpoint_url, anon) = SOURCE.take(values), ACCESS.take(values)
    path, vector, attrs = define_vector(store, store_name(model), name, layer, source, coefficient=coefficient,
                                        overwrite=overwrite, storage_options=storage(store, endpoint_url, anon))
    click.echo(f"defined {name!r} ({attrs['method']}, layer {attrs['layer']}, |v| = {attrs['norm']:.4g}, "
               f"d_model {vector.shape[0]}) at {path}")


# the first landing's name for this command, kept working for existing scripts but not listed
steer = click.Group("steer", commands=steering.commands, hidden=True, help=steering.help)
