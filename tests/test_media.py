"""Image and audio inputs end to end on tiny random LLaVA, Chameleon and Qwen2-Audio models.

Each model is a real transformers class with a real processor, built offline from
a small config (tests/media_models.py). A mixed image/audio/text dataset is
extracted and the store is checked against the model itself: the states at every
position, the media positions and grid cells the processor made, and the lens
on the last layer against the model's logits (with Chameleon's image-code mask)."""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import wave
from pathlib import Path

import numpy as np
import pytest

from media_models import BUILDERS, IMAGE_SIZE, WIDE, build_llava_wide

MEDIA = {"llava": "image", "chameleon": "image", "qwen2-audio": "audio"}
TEMPLATES = {"image": "USER: <image>\nWhat is it? ASSISTANT:", "audio": "Audio: <audio> What is it?"}


@pytest.fixture(scope="module")
def media_models(tmp_path_factory):
    return {name: build(tmp_path_factory.mktemp(name)) for name, build in BUILDERS.items()}


def write_wav(path: Path, seconds: float, freq: float, rate: int = 22050) -> None:
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.4 * np.sin(2 * np.pi * freq * t) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(rate)
        out.writeframes(samples.tobytes())


def tone(seconds: float, freq: float, rate: int) -> np.ndarray:
    return (0.4 * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def write_sound(path: Path, seconds: float, freq: float, rate: int = 22050) -> None:
    """A sine tone in the format the suffix names (FLAC, OGG/Vorbis, MP3), written by soundfile."""
    import soundfile

    soundfile.write(str(path), tone(seconds, freq, rate), rate)


@pytest.fixture
def mixed(tmp_path) -> Path:
    """A JSONL of image, audio and text variants; media paths relative to the file, one in a subfolder."""
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (40, 24), (220, 20, 20)).save(tmp_path / "imgs" / "red.png")
    noise = (np.random.default_rng(0).random((30, 30, 3)) * 255).astype(np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    write_wav(tmp_path / "low.wav", 0.7, 220)
    write_sound(tmp_path / "high.flac", 1.3, 880)  # not only PCM WAV: FLAC through libsndfile
    rows = [{"id": "red", "image": "imgs/red.png", "audio": "low.wav", "en": "a red dog"},
            {"id": "noise", "image": "noise.png", "audio": "high.flac", "en": "a cat on a sofa"}]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@functools.lru_cache(maxsize=None)
def _load(model_dir: Path):
    import transformers
    from transformers import AutoConfig, AutoProcessor

    config = AutoConfig.from_pretrained(model_dir)
    return getattr(transformers, config.architectures[0]).from_pretrained(model_dir).eval(), AutoProcessor.from_pretrained(model_dir)


def _model_outputs(model_dir: Path, kind: str, prompt: str, media, bos: bool = True):
    """The model's own hidden states and logits, with the processor's ids, for one example."""
    import torch

    model, processor = _load(model_dir)
    args = {"text": [prompt], "return_tensors": "pt", "add_special_tokens": False}
    if kind == "image":
        args["images"] = [media]
    else:
        args.update(audio=[media], sampling_rate=processor.feature_extractor.sampling_rate)
    if type(processor).__name__ == "ChameleonProcessor":
        args["return_for_text_completion"] = True
    inputs = processor(**args)
    if bos:
        inputs["input_ids"] = torch.cat([torch.tensor([[processor.tokenizer.bos_token_id]]), inputs["input_ids"]], 1)
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    return model, processor, inputs, torch.stack(out.hidden_states)[:, 0].numpy(), out.logits[0].numpy()


@pytest.mark.parametrize("name", ["llava", "chameleon", "qwen2-audio"])
def test_media_states_positions_and_lens_match_the_model(name, media_models, mixed, tmp_path):
    import activation_store as actstore
    from activation_store.analyze.lens import logits as lens_logits
    from activation_store.extract.datasets.media import decode_audio, decode_image

    kind = MEDIA[name]
    store = str(tmp_path / "s.zarr")
    actstore.extract(model=str(media_models[name]), dataset=str(mixed), store=store, variants=[kind, "en"],
                     templates={kind: TEMPLATES[kind]}, dtype="float32", batch_size=3, progress=False)
    ds = actstore.open_run(store, media_models[name].name, "mixed")
    lens = actstore.open_lens(store, media_models[name].name)
    assert list(ds.variant.values) == [kind, kind, "en", "en"]
    run = ds.attrs["provenance"]["tokenization"]
    assert run["templates"] == {kind: TEMPLATES[kind]} and run["preprocessing"]["processor"]
    hidden = ds.hidden.values
    for e in range(2):  # the media examples
        reference = str(ds.media.values[e])
        data = Path(reference).read_bytes()
        assert ds.media_sha256.values[e] == hashlib.sha256(data).hexdigest()
        assert ds.template.values[e] == TEMPLATES[kind]
        if kind == "image":
            media = decode_image(data, reference)
        else:
            media = decode_audio(data, reference, 16000)
        prompt = TEMPLATES[kind].replace("<audio>", "<|audio_bos|><|AUDIO|><|audio_eos|>")
        model, processor, inputs, states, model_logits = _model_outputs(media_models[name], kind, prompt, media)
        start, count = int(ds.token_offset.values[e]), int(ds.token_count.values[e])
        tokens = slice(start, start + count)
        assert count == inputs["input_ids"].shape[1]
        np.testing.assert_allclose(hidden[:, tokens], states, rtol=1e-4, atol=1e-5)   # every layer, every position
        media_id = processor.image_token_id if kind == "image" else processor.audio_token_id
        where = np.flatnonzero(inputs["input_ids"][0].numpy() == media_id)
        assert len(where) and np.array_equal(np.flatnonzero(ds.modality.values[tokens] == kind), where)
        assert int(ds.media_start.values[e]) == where[0] and int(ds.media_count.values[e]) == len(where)
        k = np.arange(len(where))
        if kind == "image":
            side = IMAGE_SIZE // 4  # LLaVA: 16 px / 4 px patches; Chameleon: 16 px / 2² downsampling
            assert len(where) == side * side
            assert np.array_equal(ds.media_row.values[tokens][where], k // side)
            assert np.array_equal(ds.media_col.values[tokens][where], k % side)
            assert (ds.media_slot.values[tokens] == -1).all()
        else:
            assert np.array_equal(ds.media_slot.values[tokens][where], k)
            assert (ds.media_row.values[tokens] == -1).all()
            assert ds.media_seconds.values[e] == pytest.approx(len(media) / 16000)
        assert (ds.media_row.values[tokens][ds.modality.values[tokens] == "text"] == -1).all()
        ours = lens_logits(ds.hidden.isel(layer=-1, token=tokens), lens).values
        if name == "chameleon":  # image codes: the stored ids are the codes; the lens masks them as the model does
            codes = model.model.get_image_tokens(inputs["pixel_values"])[0].numpy()
            assert np.array_equal(ds.token_id.values[tokens][where], codes)
            masked = lens.media_code.values
            assert masked.sum() == len(model.model.vocabulary_mapping.image_tokens)
            assert np.isneginf(ours[:, masked]).all() and (model_logits[:, masked] < -1e30).all()
            ours, model_logits = ours[:, ~masked], model_logits[:, ~masked]
        else:
            assert "media_code" not in lens
        np.testing.assert_allclose(ours, model_logits, rtol=1e-4, atol=1e-4)
    assert (ds.modality.values[int(ds.token_offset.values[2]):] == "text").all()


def test_colors_end_to_end_similarity_and_colour_lens(media_models, tmp_path, cli):
    env = {"ACTSTORE_CACHE": str(tmp_path / "cache"), "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    store, out = tmp_path / "c.zarr", tmp_path / "results"
    done = cli("extract", "--model", media_models["llava"], "--dataset", "colors", "--store", store, "--quiet",
               "--template", r"image=USER: <image>\nWhat colour is it? ASSISTANT:", env=env)
    assert done.returncode == 0, done.stderr
    name = media_models["llava"].name
    done = cli("analyze", "similarity", "--store", store, "--model", name, "--dataset", "colors", "--variants", "image,en",
               "--out", out, "--bootstrap", "50", env=env)
    assert done.returncode == 0, done.stderr
    assert "image-en" in done.stdout
    done = cli("analyze", "colour-lens", "--store", store, "--model", name, "--dataset", "colors", "--out", out, env=env)
    assert done.returncode == 0, done.stderr
    from activation_store.workflows.logit_lens import logit_lens_report
    from activation_store.workflows.similarity import similarity_report  # the same calls, in process

    similarity_report(str(store), name, "colors", ["image", "en"], out, pool="mean", n_boot=50,
                      modality={"image": "image", "en": "text"})
    logit_lens_report(str(store), name, "colors", out, variant="image", modality="image")
    files = sorted(p.name for p in out.iterdir())
    for expected in ("similarity-last-centered.csv", "similarity-last-centered.png", "colour-lens-image.csv",
                     "colour-lens-image.png", "logit-lens-image-image.csv"):
        assert expected in files, files
    assert any(f.startswith("similarity-mean-centered-image.image") and f.endswith(".png") for f in files)
    import pandas as pd

    share = pd.read_csv(out / "colour-lens-image.csv")
    assert set(share["item"]) == {"red", "green", "blue", "black", "white", "yellow", "orange", "purple"}
    assert share["share"].between(0, 1).all()
    lens_rows = pd.read_csv(out / "logit-lens-image-image.csv")
    assert lens_rows["token"].max() == 8 * (IMAGE_SIZE // 4) ** 2 - 1  # only the image tokens were read


def test_colour_and_caption_lens_count_what_they_claim(media_models, mixed, tmp_path):
    """The colour lens's share is the share of top-1 hits computed here by hand; keyword lens runs on audio too."""
    import activation_store as actstore
    from activation_store.analyze.lens import logits as lens_logits
    from activation_store.analyze.media_lens import colour_lens, keyword_lens, word_ids
    from activation_store.workflows.media_lens import _media_states

    store = str(tmp_path / "s.zarr")
    actstore.extract(model=str(media_models["chameleon"]), dataset=str(mixed), store=store, variants=["image", "en"],
                     dtype="float32", progress=False)
    name = media_models["chameleon"].name
    ds, lens = actstore.open_run(store, name, "mixed"), actstore.open_lens(store, name)
    states = _media_states(ds, "image", None)
    result = colour_lens(states, lens, {"red": "red", "noise": "dog"})
    top1 = lens_logits(states, lens).argmax("vocab").values
    assert not lens.media_code.values[top1].any()  # masked image codes never win
    hits = np.array([np.isin(top1[:, t], word_ids(lens, {"red": "red", "noise": "dog"}[i]))
                     for t, i in enumerate(states["token_item"].values)]).T
    np.testing.assert_allclose(result.share.values, hits.mean(axis=1))
    captions = keyword_lens(states, lens, {"red": "a red dog", "noise": "a cat on a sofa"})
    assert list(captions.baseline_item.values) == ["red", "noise"][::-1] or set(captions.baseline_item.values) == {"red", "noise"}
    assert (captions.keyword_prob > 0).all() and (captions.keyword_prob < 1).all()


def test_modality_selection_in_pooling(media_models, mixed, tmp_path):
    import activation_store as actstore
    from activation_store.analyze.selection import last_tokens, mean_tokens

    store = str(tmp_path / "s.zarr")
    actstore.extract(model=str(media_models["qwen2-audio"]), dataset=str(mixed), store=store, variants=["audio", "en"],
                     templates={"audio": "<audio> said"}, dtype="float32", progress=False)
    ds = actstore.open_run(store, media_models["qwen2-audio"].name, "mixed")
    hidden, modality, owner = ds.hidden.values, ds.modality.values, ds.token_example.values
    means = mean_tokens(ds, np.array([0, 1]), modality="audio").values
    for e in range(2):
        np.testing.assert_allclose(means[:, e], hidden[:, (owner == e) & (modality == "audio")].mean(axis=1), rtol=1e-5, atol=1e-6)
    last_text = last_tokens(ds, np.array([0, 1]), modality="text").values
    last_audio = last_tokens(ds, np.array([0]), modality="audio").values
    e0 = np.flatnonzero(owner == 0)
    np.testing.assert_array_equal(last_text[:, 0], hidden[:, e0[-1]])                     # " said"
    np.testing.assert_array_equal(last_audio[:, 0], hidden[:, e0[modality[e0] == "audio"][-1]])
    from activation_store.errors import ActstoreError

    with pytest.raises(ActstoreError, match="has no audio token"):
        last_tokens(ds, np.array([2]), modality="audio")
    with pytest.raises(ActstoreError, match="unknown modality"):
        mean_tokens(ds, np.array([0]), modality="video")


def test_a_changed_image_changes_the_dataset_checksum(mixed):
    from PIL import Image

    from activation_store.extract.datasets import load_dataset

    before = load_dataset(str(mixed)).checksum
    assert load_dataset(str(mixed)).checksum == before
    Image.new("RGB", (40, 24), (221, 20, 20)).save(mixed.parent / "imgs" / "red.png")
    assert load_dataset(str(mixed)).checksum != before


def _tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


def test_bad_media_inputs_are_one_line_and_leave_the_store_alone(media_models, tiny_model_dir, mixed, tmp_path, cli):
    import activation_store as actstore
    from activation_store.errors import ActstoreError

    store = tmp_path / "s.zarr"
    actstore.extract(model=str(media_models["llava"]), dataset=str(mixed), store=str(store), variants=["en"],
                     dtype="float32", progress=False)
    before = _tree(store)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"id": "a", "image": "imgs/red.png", "en": "x"}) + "\n"
                      + json.dumps({"id": "b", "image": "missing.png", "en": "y"}) + "\n")
    done = cli("extract", "--model", media_models["llava"], "--dataset", broken, "--store", store, "--quiet")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"{broken}:2" in done.stderr and "missing.png" in done.stderr
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt nonsense")
    (tmp_path / "corrupt.flac").write_bytes(b"fLaC" + bytes(range(60)))
    write_sound(tmp_path / "cut.mp3", 0.5, 440)
    (tmp_path / "cut.mp3").write_bytes((tmp_path / "cut.mp3").read_bytes()[:40])
    for row, line in (({"id": "c", "image": "corrupt.png"}, 3), ({"id": "d", "audio": "corrupt.wav"}, 3),
                      ({"id": "e", "audio": "corrupt.flac"}, 3), ({"id": "f", "audio": "cut.mp3"}, 3)):
        bad = tmp_path / "bad.jsonl"
        bad.write_text("\n".join([json.dumps({"id": "x", "en": "x"}), json.dumps({"id": "y", "en": "y"}), json.dumps(row)]) + "\n")
        with pytest.raises(ActstoreError, match=rf"bad.jsonl:{line}: not a readable") as error:
            actstore.extract(model=str(media_models["llava"]), dataset=str(bad), store=str(store), progress=False)
        assert "\n" not in str(error.value)
    cases = [
        (dict(model=str(tiny_model_dir("llama")), variants=["image", "en"]), "text-only model"),
        (dict(model=str(media_models["llava"]), variants=["audio", "en"]), "reads image only"),
        (dict(model=str(media_models["llava"]), variants=["image"], templates={"image": "USER: what is it?"}),
         "must hold the image placeholder <image> exactly once"),
        (dict(model=str(media_models["llava"]), variants=["image"], templates={"en": "<image>"}), "not a media variant"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ActstoreError, match=message) as error:
            actstore.extract(dataset=str(mixed), store=str(store), dtype="float32", progress=False, **kwargs)
        assert "\n" not in str(error.value)
    assert _tree(store) == before
    from activation_store.extract.campaign import run_campaign
    from activation_store.extract.spec import RunSpec

    # media are encoded by this process's processor, per batch: a cluster is refused before it starts
    for kwargs in (dict(variants=("image", "en")), dict(variants=("en",), templates={"image": "<image>"})):
        media_spec = RunSpec(str(media_models["llava"]), str(mixed), str(store), progress=False, **kwargs)
        with pytest.raises(ActstoreError, match=r"image and audio variants \(and --template\) run in this process") \
                as error:
            run_campaign([media_spec], workers=2, progress=False)
        assert "\n" not in str(error.value)
    assert _tree(store) == before


def test_spoken_words_needs_espeak_and_says_so(tmp_path, monkeypatch):
    from activation_store.errors import ActstoreError
    from activation_store.extract.datasets import load_dataset

    monkeypatch.setenv("ACTSTORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without espeak-ng, as on a machine that lacks it
    with pytest.raises(ActstoreError, match="apt-get install -y espeak-ng"):
        load_dataset("spoken-words")


@pytest.mark.skipif(not __import__("shutil").which("espeak-ng"),
                    reason="spoken-words needs Debian's espeak-ng, which is not installed (apt-get install -y espeak-ng; "
                           "tests/run.sh installs it where apt-get can)")
def test_spoken_words_runs_through_an_audio_model(media_models, tmp_path, monkeypatch):
    import activation_store as actstore
    from activation_store.extract.datasets import load_dataset

    monkeypatch.setenv("ACTSTORE_CACHE", str(tmp_path / "cache"))
    data = load_dataset("spoken-words")
    assert data.variants == ("audio", "text", "en") and len(data.items) == 24
    assert len(set(data.meta["media_sha256"].values())) == 24  # 24 different recordings
    store = str(tmp_path / "s.zarr")
    actstore.extract(model=str(media_models["qwen2-audio"]), dataset="spoken-words", store=store, limit=3,
                     dtype="float32", progress=False)
    ds = actstore.open_run(store, media_models["qwen2-audio"].name, "spoken-words")
    audio = ds.modality.values == "audio"
    per_example = np.bincount(ds.token_example.values[audio], minlength=ds.sizes["example"])
    assert (per_example[:3] > 0).all() and (per_example[3:] == 0).all()
    assert math.isclose(float(ds.media_seconds.values[0]) * 25, per_example[0], abs_tol=2)  # 25 slots a second


@pytest.mark.parametrize("suffix", ["flac", "ogg", "mp3"])
def test_compressed_audio_decodes_to_the_tone_it_holds(suffix, tmp_path):
    """FLAC gives the samples back (to 16-bit steps); lossy OGG/MP3 keep the length and the pitch."""
    from activation_store.extract.datasets.media import decode_audio

    path = tmp_path / f"tone.{suffix}"
    write_sound(path, 1.0, 440, rate=22050)
    samples = decode_audio(path.read_bytes(), str(path), 16000)
    assert samples.dtype == np.float32 and abs(len(samples) - 16000) <= (16000 * 0.1 if suffix == "mp3" else 1)
    if suffix == "flac":
        np.testing.assert_allclose(samples[:15990], tone(1.0, 440, 16000)[:15990], atol=5e-3)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    assert abs(np.argmax(spectrum) * 16000 / len(samples) - 440) < 5


def test_non_square_image_grid_follows_the_processor(mixed, tmp_path):
    """A vision tower with rows ≠ columns (Pixtral's, in LLaVA's class): states, positions and grid cells."""
    import activation_store as actstore
    from activation_store.extract.datasets.media import decode_image

    model_dir = build_llava_wide(tmp_path / "llava-wide")
    store = str(tmp_path / "s.zarr")
    actstore.extract(model=str(model_dir), dataset=str(mixed), store=store, variants=["image"],
                     templates={"image": TEMPLATES["image"]}, dtype="float32", batch_size=2, progress=False)
    ds = actstore.open_run(store, model_dir.name, "mixed")
    for e in range(2):
        reference = str(ds.media.values[e])
        media = decode_image(Path(reference).read_bytes(), reference)
        _, processor, inputs, states, _ = _model_outputs(model_dir, "image", TEMPLATES["image"], media)
        rows, cols = (int(n) // processor.patch_size for n in inputs["pixel_values"].shape[-2:])
        assert (rows, cols) == (WIDE[0] // 4, WIDE[1] // 4) and rows != cols
        start, count = int(ds.token_offset.values[e]), int(ds.token_count.values[e])
        tokens = slice(start, start + count)
        np.testing.assert_allclose(ds.hidden.values[:, tokens], states, rtol=1e-4, atol=1e-5)
        where = np.flatnonzero(inputs["input_ids"][0].numpy() == processor.image_token_id)
        assert len(where) == rows * cols
        k = np.arange(rows * cols)
        assert np.array_equal(ds.media_row.values[tokens][where], k // cols)
        assert np.array_equal(ds.media_col.values[tokens][where], k % cols)


def test_image_grid_reads_qwen2_vl_and_refuses_a_count_it_cannot_place():
    """Qwen2-VL's real image processor (its full processor needs torchvision) on a wide picture: merged patches."""
    from types import SimpleNamespace

    from PIL import Image
    from transformers import Qwen2VLImageProcessorPil

    from activation_store.extract.media import image_grid

    image_processor = Qwen2VLImageProcessorPil(patch_size=4, merge_size=2, temporal_patch_size=2,
                                               min_pixels=8 * 8, max_pixels=64 * 64)
    out = image_processor(images=[Image.new("RGB", (48, 16))], return_tensors="pt")
    _, h, w = (int(v) for v in out["image_grid_thw"][0])
    count = h * w // 4  # the processor's own count of image tokens: one per 2 × 2 merged patches
    holder = SimpleNamespace(image_processor=image_processor)  # what Qwen2VLProcessor exposes
    assert image_grid(holder, dict(out), count) == (h // 2, w // 2) and h != w
    assert image_grid(holder, dict(out), count + 3) is None   # tiles plus newline tokens: no grid claimed


def test_media_batches_pad_images_of_different_sizes():
    import torch

    from activation_store.extract.media import _stack

    a, b = torch.ones(1, 3, 16, 24), 2 * torch.ones(1, 3, 24, 16)
    batch = _stack([a, b])
    assert batch.shape == (2, 3, 24, 24)
    assert torch.equal(batch[0, :, :16, :24], a[0]) and (batch[0, :, 16:] == 0).all()
    assert torch.equal(batch[1, :, :24, :16], b[0]) and (batch[1, :, :, 16:] == 0).all()
    assert torch.equal(_stack([a, a]), torch.cat([a, a]))
