"""Interventions on image positions of a tiny random LLaVA: recorded like text ones, checked against the model.

The baseline equals a plain extraction; ``replace`` at the image positions puts
coefficient × vector there and only there at the vector's layer, leaves every
earlier position and layer alone, and gives the logits the model itself gives
with the same substitution made by a plain torch hook; an image half steers
only that half's grid cells. Bad combinations are one line and leave the store."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from media_models import build_llava

TEMPLATE = "USER: <image>\nWhat colour? ASSISTANT:"
COEFFICIENTS = [0.0, 1.0, 3.0]


@pytest.fixture(scope="module")
def llava_store(tmp_path_factory):
    """A tiny LLaVA, a three-image dataset (one split left|right), its plain run, and a red−blue vector at layer 1."""
    from PIL import Image

    import activation_store as actstore
    from activation_store.workflows.steering import define_vector

    root = tmp_path_factory.mktemp("media-intervene")
    model_dir = build_llava(root / "llava")
    split = Image.new("RGB", (32, 32), (220, 20, 20))
    split.paste(Image.new("RGB", (16, 32), (30, 60, 220)), (16, 0))
    split.save(root / "split.png")
    Image.new("RGB", (40, 24), (20, 160, 40)).save(root / "green.png")
    noise = (np.random.default_rng(0).random((30, 30, 3)) * 255).astype(np.uint8)
    Image.fromarray(noise).save(root / "noise.png")
    rows = [{"id": "split", "image": "split.png", "en": "red and blue"},
            {"id": "green", "image": "green.png", "en": "green"},
            {"id": "noise", "image": "noise.png", "en": "a dog"}]
    data = root / "pics.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (root / "targets.txt").write_text("red\nblue\n")
    store = str(root / "acts.zarr")
    actstore.extract(model=str(model_dir), dataset=str(data), store=store, variants=["image", "en"],
                     templates={"image": TEMPLATE}, dtype="float32", batch_size=2, progress=False)
    define_vector(store, model_dir.name, "red-blue", 1, from_unembedding="red", minus="blue", coefficient=4.0)
    return model_dir, root, data, store


def _record(llava_store, vector="red-blue", positions="image", mode="replace", variants=("image",), **extra):
    from activation_store.extract.interventions import InterventionSpec, record_interventions
    from activation_store.extract.spec import RunSpec
    from activation_store.store.interventions import open_recorded

    model_dir, root, data, store = llava_store
    spec = RunSpec(str(model_dir), str(data), store, variants=list(variants), templates={"image": TEMPLATE},
                   batch_size=2, progress=False, overwrite=True)
    steering = InterventionSpec(vector, COEFFICIENTS, positions=positions, mode=mode, record_layers=[0, 1, 2],
                                target_tokens=str(root / "targets.txt"), **extra)
    record_interventions(spec, steering)
    return open_recorded(store, model_dir.name, "pics", vector).load()


def test_replace_at_image_positions(llava_store):
    import activation_store as actstore
    from activation_store.store.steering import read_vector
    from activation_store.store import Store

    model_dir, _, _, store = llava_store
    ds = _record(llava_store, generate=2)
    run = actstore.open_run(store, model_dir.name, "pics")
    images = run.token_example.values < 3                       # the run's image examples come first
    assert ds.attrs["mode"] == "replace" and ds.attrs["positions"] == "image"
    assert ds.sizes["token"] == int(images.sum()) and (ds.modality.values == "image").sum() == 3 * 16
    np.testing.assert_array_equal(ds.modality.values, run.modality.values[images])
    np.testing.assert_array_equal(ds.steered.values, ds.modality.values == "image")
    np.testing.assert_array_equal(ds.media_row.values[ds.steered.values], np.tile(np.repeat(np.arange(4), 4), 3))
    states = ds.states.values                                     # (condition, layer 0/1/2, token, d_model)
    np.testing.assert_allclose(states[0], run.hidden.values[:, images], rtol=1e-6, atol=1e-6)  # baseline = plain run
    vector = read_vector(Store.open(store), model_dir.name, "red-blue").vector
    steered = ds.steered.values
    owner, position = ds.token_example.values, ds.position.values
    first_image = np.array([position[(owner == e) & steered].min() for e in range(3)])
    before = position < first_image[owner]
    for c, coefficient in enumerate(COEFFICIENTS[1:], start=1):
        np.testing.assert_array_equal(states[c, 0], states[0, 0])                        # embeddings untouched
        np.testing.assert_allclose(states[c, 1][steered], np.broadcast_to(coefficient * vector, (steered.sum(), 32)),
                                   rtol=1e-6)                                             # replaced, exactly there
        np.testing.assert_array_equal(states[c, 1][~steered], states[0, 1][~steered])    # and nowhere else
        np.testing.assert_array_equal(states[c, 2][before], states[0, 2][before])        # nothing before the image moves
        assert not np.allclose(states[c, 2][steered], states[0, 2][steered])             # the next layer sees it
        assert (ds.top_id.values[c] != ds.top_id.values[0]).any() or not np.allclose(ds.logprob.values[c], ds.logprob.values[0])
    assert ds.generated_id.shape == (3, 1, 3, 2)
    np.testing.assert_allclose(_model_logprobs(model_dir, llava_store[1] / "split.png", 3.0 * vector, "replace"),
                               ds.target_logprob.values[2, 0], rtol=1e-4, atol=1e-4)


def _model_logprobs(model_dir: Path, image_path: Path, value: np.ndarray, mode: str, left_only: bool = False,
                    blocks: tuple[int, ...] = (0,)) -> np.ndarray:
    """log P(red), log P(blue) after the prompt, from the model itself with plain torch hooks on its ``blocks``
    (at every image token, or at those of the grid's two left columns)."""
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    inputs = processor(text=[TEMPLATE], images=[Image.open(image_path).convert("RGB")], return_tensors="pt",
                       add_special_tokens=False)
    ids = torch.cat([torch.tensor([[processor.tokenizer.bos_token_id]]), inputs["input_ids"]], 1)
    where = torch.nonzero(ids[0] == processor.image_token_id)[:, 0]
    if left_only:
        where = where[torch.arange(len(where)) % 4 < 2]  # the 4 × 4 grid in raster order
    v = torch.tensor(value)

    def hook(_module, _inputs, output):
        hidden = (output[0] if isinstance(output, tuple) else output).clone()
        hidden[0, where] = v if mode == "replace" else hidden[0, where] + v
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handles = [model.model.language_model.layers[b].register_forward_hook(hook) for b in blocks]
    try:
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=inputs["pixel_values"]).logits
    finally:
        for handle in handles:
            handle.remove()
    logp = torch.log_softmax(logits[0, -1].double(), -1).numpy()
    vocab = processor.tokenizer
    return logp[[vocab.convert_tokens_to_ids("red"), vocab.convert_tokens_to_ids("blue")]]


def test_replace_onward_holds_the_value_at_every_later_layer(llava_store):
    """The paper's Chameleon recipe: the value replaces the image states at the vector's layer and every later one."""
    from activation_store.store import Store
    from activation_store.store.steering import read_vector

    model_dir, _, _, store = llava_store
    ds = _record(llava_store, onward=True)
    assert ds.attrs["steered_layers"] == [1, 2] and ds.attrs["config"]["onward"] is True
    vector = read_vector(Store.open(store), model_dir.name, "red-blue").vector
    states, steered = ds.states.values, ds.steered.values
    np.testing.assert_allclose(states[2, 1][steered], np.broadcast_to(3.0 * vector, (steered.sum(), 32)), rtol=1e-6)
    last = states[2, 2][steered]             # the last block's output, replaced, then the final norm: one state
    np.testing.assert_allclose(last, np.broadcast_to(last[0], last.shape), rtol=1e-5, atol=1e-6)
    assert not np.allclose(states[0, 2][steered], states[0, 2][steered][0])
    before = ds.position.values < ds.media_start.values[ds.token_example.values]  # the prompt before the image
    assert before.any()
    np.testing.assert_array_equal(states[2, 2][before], states[0, 2][before])
    np.testing.assert_allclose(_model_logprobs(model_dir, llava_store[1] / "split.png", 3.0 * vector, "replace",
                                               blocks=(0, 1)), ds.target_logprob.values[2, 0], rtol=1e-4, atol=1e-4)


def test_add_over_one_image_half(llava_store):
    from activation_store.store.steering import read_vector
    from activation_store.store import Store

    model_dir, _, _, store = llava_store
    ds = _record(llava_store, positions="modality:image:left", mode="add")
    assert ds.attrs["positions"] == "image:left" and "mode" not in ds.attrs["config"]  # add runs keep their hash
    image = ds.modality.values == "image"
    np.testing.assert_array_equal(ds.steered.values, image & (ds.media_col.values < 2))
    vector = read_vector(Store.open(store), model_dir.name, "red-blue").vector
    states, steered = ds.states.values, ds.steered.values
    np.testing.assert_allclose(states[1, 1][steered], states[0, 1][steered] + vector, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(states[1, 1][~steered], states[0, 1][~steered])
    np.testing.assert_allclose(_model_logprobs(model_dir, llava_store[1] / "split.png", vector, "add", left_only=True),
                               ds.target_logprob.values[1, 0], rtol=1e-4, atol=1e-4)


def _tree(path: Path) -> str:
    digest = hashlib.sha256()
    for p in sorted(Path(path).rglob("*")):
        digest.update(str(p.relative_to(path)).encode())
        if p.is_file():
            digest.update(p.read_bytes())
    return digest.hexdigest()


BAD = {
    "image positions on text variants": (["--variants", "en", "--steer-positions", "image"], "choose the image variants"),
    "audio positions on images": (["--variants", "image", "--steer-positions", "audio"], "choose the audio variants"),
    "no such half": (["--variants", "image", "--steer-positions", "image:middle"], "image:top|bottom|left|right"),
    "halves are for images": (["--variants", "image", "--steer-positions", "audio:top"], "--steer-positions must be"),
    "unknown mode": (["--variants", "image", "--steer-positions", "image", "--steer-mode", "swap"], "add or replace"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_media_interventions_are_one_line(llava_store, case):
    from activation_store.errors import ActstoreError
    from activation_store.extract.interventions import InterventionSpec, record_interventions
    from activation_store.extract.spec import RunSpec

    model_dir, root, data, store = llava_store
    args, expected = BAD[case]
    options = dict(zip(args[::2], args[1::2]))
    templates = {"image": TEMPLATE} if options["--variants"] == "image" else None
    before = _tree(Path(store))
    with pytest.raises(ActstoreError, match=expected.replace("|", r"\|")) as error:
        record_interventions(RunSpec(str(model_dir), str(data), store, variants=[options["--variants"]],
                                     templates=templates, progress=False),
                             InterventionSpec("red-blue", [1.0], positions=options["--steer-positions"],
                                              mode=options.get("--steer-mode", "add")))
    assert "\n" not in str(error.value)
    assert _tree(Path(store)) == before


def test_cli_records_a_replace_and_refuses_a_bad_mode_in_one_line(llava_store, cli):
    model_dir, root, data, store = llava_store
    common = ["extract", "--model", model_dir, "--dataset", data, "--store", store, "--variants", "image", "--template",
              r"image=USER: <image>\nWhat colour? ASSISTANT:", "--intervene", "red-blue", "--quiet"]
    before = _tree(Path(store))
    bad = cli(*common, "--coefficients", "1", "--steer-positions", "image", "--steer-mode", "swap")
    lines = [line for line in bad.stderr.splitlines() if line.strip() and "Loading weights" not in line]
    assert bad.returncode == 2 and len(lines) == 1 and "add or replace" in lines[0], bad.stderr
    alone = cli("extract", "--model", model_dir, "--dataset", data, "--store", store, "--steer-mode", "replace", "--quiet")
    assert alone.returncode != 0 and "goes with --intervene" in alone.stderr
    assert _tree(Path(store)) == before
    done = cli(*common, "--coefficients", "0,2", "--steer-positions", "modality:image", "--steer-mode", "replace",
               "--target-tokens", root / "targets.txt", "--overwrite")
    assert done.returncode == 0, done.stderr
    from activation_store.store.interventions import open_recorded

    ds = open_recorded(store, model_dir.name, "pics", "red-blue")
    assert ds.attrs["config"]["mode"] == "replace" and ds.attrs["config"]["positions"] == "image"
    assert ds.steered.values.sum() == 3 * 16
    out = root / "results"
    analysis = cli("analyze", "intervention", "--store", store, "--model", model_dir.name, "--dataset", "pics",
                   "--vector", "red-blue", "--target-tokens", root / "targets.txt", "--bootstrap", "50", "--out", out)
    assert analysis.returncode == 0, analysis.stderr
    import pandas as pd

    table = pd.read_csv(out / "intervention-red-blue.csv")
    assert set(table.source) == {"measured"}  # the lens forecast adds at the last token: not what a replace did
    assert (out / "intervention-red-blue.png").stat().st_size > 0
