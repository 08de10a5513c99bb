"""Sites beyond the residual stream, end to end: extracted in one pass through the write path, stored one array
per site, read back labelled, verified, resumed, and read by the analyses.

The model side (which module each site is, per family) is tests/test_sites.py; here the stored values are
checked against forward hooks on the same modules in a direct run, token for token."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import actstore
from activation_store.errors import ActstoreError
from activation_store.store import layout
from conftest import write_pairs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SITES = "attn_out,mlp_out,mlp_in,resid_mid,z"


def group_of(store: Path, model_dir: Path, dataset: str = "pairs") -> zarr.Group:
    return zarr.open_group(str(store), mode="r", use_consolidated=False)[f"{model_dir.name}/{dataset}"]


def extract(model_dir: Path, data: Path, store: Path, **options) -> None:
    actstore.extract(model=str(model_dir), dataset=str(data), store=str(store), batch_size=3, chunk_tokens=16,
                     progress=False, **options)


def same_within_bf16(stored: np.ndarray, states: torch.Tensor, what: object) -> None:
    """Stored bfloat16 bits against float32 states of a direct run: equal within bfloat16 rounding (a batched,
    padded forward and a single one differ in float32's last bits, which may flip a rounding)."""
    from activation_store.store.precision import decode_bfloat16

    values = states.float().numpy()
    np.testing.assert_allclose(decode_bfloat16(stored), values, rtol=2 ** -7, atol=2 ** -7 * np.abs(values).max(),
                               err_msg=str(what))


def direct(model_dir: Path, group: zarr.Group, module: str, io: str = "output") -> list[torch.Tensor]:
    """Per block, what a plain forward hook on ``model.layers.<b>.<module>`` gives over the run's examples
    (their stored token ids, one example per forward), end to end."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids, offsets, counts = group["token_id"][...], group["token_offset"][...], group["token_count"][...]
    per_block: list[list[torch.Tensor]] = [[] for _ in model.model.layers]
    for offset, count in zip(offsets, counts):
        seen: dict[int, torch.Tensor] = {}
        handles = []
        for b, layer in enumerate(model.model.layers):
            target = layer.get_submodule(module)
            if io == "output":
                handles.append(target.register_forward_hook(
                    lambda m, i, o, b=b: seen.__setitem__(b, (o[0] if isinstance(o, tuple) else o).detach())))
            else:
                handles.append(target.register_forward_pre_hook(
                    lambda m, a, kw, b=b: seen.__setitem__(b, (a[0] if a else kw["hidden_states"]).detach()),
                    with_kwargs=True))
        with torch.inference_mode():
            model.model(input_ids=torch.tensor([ids[offset:offset + count].tolist()]), use_cache=False)
        for h in handles:
            h.remove()
        for b in seen:
            per_block[b].append(seen[b][0])
    return [torch.cat(rows) for rows in per_block]


@pytest.fixture(scope="module")
def site_runs(tiny_model_dir, tmp_path_factory):
    """One tiny Llama run with every named site, one without sites, and one per site (bfloat16)."""
    model_dir = tiny_model_dir("llama")
    root = tmp_path_factory.mktemp("sites")
    data = write_pairs(root)
    extract(model_dir, data, root / "all.zarr", sites=SITES)
    extract(model_dir, data, root / "plain.zarr")
    for site in ("mlp_out", "z"):
        extract(model_dir, data, root / f"{site}.zarr", sites=site)
    return model_dir, data, root


def test_resid_post_is_todays_hidden_bit_for_bit(site_runs):
    model_dir, _, root = site_runs
    with_sites, plain = group_of(root / "all.zarr", model_dir), group_of(root / "plain.zarr", model_dir)
    for name in (layout.HIDDEN, *layout.VIEWS.values(), *layout.STATS, "token_id"):
        assert np.array_equal(with_sites[name][...], plain[name][...]), name


def test_stored_sites_equal_forward_hooks_token_for_token(site_runs):
    model_dir, data, root = site_runs
    group = group_of(root / "all.zarr", model_dir)
    for site, module, io in (("mlp_out", "mlp", "output"), ("attn_out", "self_attn", "output"),
                             ("mlp_in", "mlp", "input"), ("resid_mid", "post_attention_layernorm", "input")):
        expected = direct(model_dir, group, module, io)
        stored = group[site][...]
        assert stored.shape[0] == len(expected)  # block b at layer b + 1
        assert group[f"{site}_layer"][...].tolist() == list(range(1, len(expected) + 1))
        for b, states in enumerate(expected):
            same_within_bf16(stored[b], states, (site, b))
    z = direct(model_dir, group, "self_attn.o_proj", "input")
    heads = group["z"].shape[2]
    for b, states in enumerate(z):
        same_within_bf16(group["z"][b], states.unflatten(-1, (heads, -1)), ("z", b))


def test_several_sites_in_one_pass_equal_one_site_per_pass(site_runs):
    model_dir, _, root = site_runs
    together = group_of(root / "all.zarr", model_dir)
    for site in ("mlp_out", "z"):
        alone = group_of(root / f"{site}.zarr", model_dir)
        assert np.array_equal(together[site][...], alone[site][...])
        assert np.array_equal(together[f"{site}_stat_mean"][...], alone[f"{site}_stat_mean"][...])


def test_sublayer_outputs_reconstruct_the_residual_stream(tiny_model_dir, parallel_jsonl, tmp_path):
    """resid_post[l] = resid_post[l-1] + attn_out[l] + mlp_out[l]: the sites are the modules they claim to be
    (Gemma 3's post-sublayer norms included)."""
    for arch in ("llama", "gemma3", "gpt2"):
        model_dir = tiny_model_dir(arch)
        store = tmp_path / f"{arch}.zarr"
        extract(model_dir, parallel_jsonl, store, sites="attn_out,mlp_out", dtype="float32")
        ds = actstore.open_run(str(store), model_dir.name, "pairs")
        rebuilt = ds.hidden.shift(layer=1) + ds.attn_out + ds.mlp_out
        # layers after a block whose stored state is the residual stream itself (HF normalises the last one)
        raw = [int(layer) for layer in ds.layer.values[1:] if not bool(ds.final_norm_applied.sel(layer=layer))]
        assert len(raw) >= 2
        np.testing.assert_allclose(rebuilt.sel(layer=raw).values, ds.hidden.sel(layer=raw).values,
                                   rtol=1e-4, atol=1e-4, err_msg=arch)


def test_open_run_labels_every_site_and_ls_verify_know_them(site_runs, cli):
    model_dir, _, root = site_runs
    store = str(root / "all.zarr")
    ds = actstore.open_run(store, model_dir.name, "pairs")
    for site in SITES.split(","):
        assert ds[site].dims[0] == "layer" and ds[site].sizes["layer"] == ds.sizes["layer"]
        assert bool(ds[site].sel(layer=0).isnull().all()) and not bool(ds[site].sel(layer=1).isnull().any())
        assert ds[site].attrs["site"]["name"] == site and ds[site].attrs["site"]["io"] in ("input", "output")
    assert ds.z.dims == ("layer", "token", "head", "d_head")
    assert ds.mlp_out.attrs["site"]["module"].endswith("mlp") and ds.mlp_out.attrs["site"]["residual_basis"]
    assert not ds.mlp_in.attrs["site"]["residual_basis"]
    listed = cli("ls", store)
    assert listed.returncode == 0 and "resid_post,attn_out,mlp_out,mlp_in,resid_mid,z" in listed.stdout
    info = json.loads(cli("info", store, "--model", model_dir.name, "--dataset", "pairs").stdout)
    assert info["sites"] == ["resid_post", *SITES.split(",")]
    checked = cli("verify", store)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_site_statistics_are_the_moments_of_the_stored_site(site_runs):
    from activation_store import pooling
    from activation_store.store.views import decoded

    model_dir, _, root = site_runs
    group = group_of(root / "all.zarr", model_dir)
    expected = pooling.moments(decoded(group["mlp_out"]))
    assert np.array_equal(group["mlp_out_stat_mean"][...], expected["mean"])
    assert np.array_equal(group["mlp_out_stat_abs_max"][...], expected["abs_max"])
    z = pooling.moments(decoded(group["z"]).reshape(group["z"].shape[0], group["z"].shape[1], -1))
    assert np.array_equal(group["z_stat_second_moment"][...].reshape(z["second_moment"].shape), z["second_moment"])


def test_analyses_read_a_site_and_the_lens_refuses_one_outside_the_residual_basis(site_runs):
    model_dir, _, root = site_runs
    store = str(root / "all.zarr")
    ds = actstore.open_run(store, model_dir.name, "pairs")
    lens = actstore.open_lens(store, model_dir.name)
    at = actstore.analyze.at_site(ds, "mlp_out")
    assert at.layer.values.tolist() == ds.layer.values.tolist()[1:]
    result = actstore.analyze.similarity(at, n_boot=50)
    assert np.isfinite(result.score.values).all()
    per_head = actstore.analyze.at_site(ds, "z")
    assert per_head.hidden.dims == ("layer", "token", "d_model")
    actstore.analyze.logit_lens(actstore.analyze.at_site(ds, "attn_out"), lens)
    with pytest.raises(ActstoreError, match="residual basis; site 'mlp_in'"):
        actstore.analyze.logit_lens(actstore.analyze.at_site(ds, "mlp_in"), lens)
    with pytest.raises(ActstoreError, match="site 'mlp_up' is not in this run; it holds resid_post, attn_out"):
        actstore.analyze.at_site(ds, "mlp_up")


def test_a_bad_site_is_one_line_and_writes_nothing(tiny_model_dir, parallel_jsonl, tmp_path, cli):
    model_dir = tiny_model_dir("llama")
    store = tmp_path / "bad.zarr"
    for sites, says in (("mlp_outt", "unknown site"), ("model.layers.*.nothing_here", "matches no module"),
                        ("model.layers.*.mlp:sideways", ":input or :output")):
        done = cli("extract", "--model", str(model_dir), "--dataset", str(parallel_jsonl), "--store", str(store),
                   "--sites", sites, "--quiet")
        assert done.returncode != 0 and says in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not (store / model_dir.name / "pairs").exists()


def test_dry_run_reports_bytes_per_site(tiny_model_dir, parallel_jsonl, tmp_path, cli):
    model_dir = tiny_model_dir("llama")
    done = cli("extract", "--model", str(model_dir), "--dataset", str(parallel_jsonl), "--store", str(tmp_path / "d"),
               "--sites", "mlp_out,z", "--dry-run")
    assert done.returncode == 0, done.stderr
    line = next(row for row in done.stdout.splitlines() if row.startswith("sites"))
    import re

    sizes = dict(re.findall(r"(\w+) ([\d.,]+ (?:B|kB|MB))", line))
    assert set(sizes) == {"mlp_out", "z"} and sizes["z"] == sizes["mlp_out"], line  # 4 heads × 8 = d_model 32


def test_a_killed_run_with_sites_resumes_identical(tiny_model_dir, parallel_jsonl, tmp_path, site_runs):
    """SIGKILL with blocks of several sites in flight, then the same command: the same store, byte for byte."""
    model_dir = tiny_model_dir("llama")
    _, data, root = site_runs
    store = tmp_path / "killed.zarr"
    command = [sys.executable, "-m", "activation_store", "extract", "--model", str(model_dir), "--dataset", str(data),
               "--store", str(store), "--sites", SITES, "--batch-size", "3", "--chunk-tokens", "16", "--quiet"]
    killed = subprocess.run(command, env={**__import__("os").environ, "ACTSTORE_FAULT_AFTER_BLOCKS": "2"},
                            capture_output=True, text=True)
    assert killed.returncode != 0
    resumed = subprocess.run(command, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    fresh, again = group_of(root / "all.zarr", model_dir), group_of(store, model_dir)
    for name in (layout.HIDDEN, *SITES.split(","), "mlp_out_stat_mean", "z_stat_abs_max"):
        assert np.array_equal(fresh[name][...], again[name][...]), name


def test_analyze_commands_take_a_site(site_runs, cli, tmp_path):
    """``--site`` on the shared options: the site's result is saved beside the residual stream's, and the
    logit lens refuses a site outside the residual basis in one line, before writing anything."""
    model_dir, _, root = site_runs
    store = tmp_path / "copy.zarr"
    import shutil

    shutil.copytree(root / "all.zarr", store)
    target = ("--store", str(store), "--model", model_dir.name, "--dataset", "pairs", "--no-plot")
    done = cli("analyze", "similarity", *target, "--site", "mlp_out", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "-mlp_out" in done.stdout and (tmp_path / "out" / "site-mlp_out").is_dir()
    tree = actstore.open(str(store))
    assert any(name.endswith("-mlp_out") for name in tree[f"results/{model_dir.name}/pairs"].children)
    refused = cli("analyze", "logit-lens", *target, "--site", "mlp_in", "--out", str(tmp_path / "lens"))
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "not in the residual basis" not in refused.stderr and "site 'mlp_in' is not" in refused.stderr
    assert not (tmp_path / "lens").exists()
    unknown = cli("analyze", "similarity", *target, "--site", "mlp_up", "--out", str(tmp_path / "x"))
    assert unknown.returncode != 0 and "it holds resid_post, attn_out, mlp_out" in unknown.stderr


@pytest.mark.parametrize("shuffle", [False, True])
def test_the_loader_reads_sites_side_by_side_for_transcoders(site_runs, shuffle):
    """``site=["mlp_in", "mlp_out"]``: each row holds the MLP's input and output of one token at one layer."""
    import activation_store.torch  # noqa: F401  (``actstore.torch`` is the same module)

    loader = actstore.torch.loader
    model_dir, _, root = site_runs
    store = str(root / "all.zarr")
    group = group_of(root / "all.zarr", model_dir)
    data = loader(store, model_dir.name, "pairs", site=["mlp_in", "mlp_out"], batch_size=7, shuffle=shuffle,
                  dtype="bfloat16")
    width = group["mlp_in"].shape[2]
    assert data.dataset.site_columns == {"mlp_in": slice(0, width), "mlp_out": slice(width, 2 * width)}
    rows, layers = 0, set()
    for batch in data:
        layers |= set(batch.layer.tolist())
        parts = data.dataset.parts(batch)
        for i in range(len(batch.layer)):
            layer, token = int(batch.layer[i]) - 1, int(group["token_offset"][int(batch.example[i])]) + int(batch.position[i])
            for site in ("mlp_in", "mlp_out"):
                assert np.array_equal(parts[site][i].view(torch.int16).numpy().view(np.uint16), group[site][layer, token])
        rows += len(batch.layer)
    assert rows == group["mlp_in"].shape[0] * group["mlp_in"].shape[1]
    assert layers == {1, 2, 3}  # block sites: no layer 0
    heads = loader(store, model_dir.name, "pairs", site="z", batch_size=64, shuffle=False)
    first = next(iter(heads))
    assert first.hidden.shape[1] == int(np.prod(group["z"].shape[2:]))
    with pytest.raises(ActstoreError, match="site 'mlp_up' is not in this run"):
        loader(store, model_dir.name, "pairs", site="mlp_up")
