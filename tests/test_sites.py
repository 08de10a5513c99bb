"""The model side of sites: which module each site is per architecture family, what the hooks capture, the
TransformerLens names, and one-line refusals. The store side is tests/test_sites_store.py."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from activation_store.errors import ActstoreError
from activation_store.extract.site_names import implied_layers, site_name, site_requests, site_width
from activation_store.extract.sites import SiteHooks, blocks, resolve_sites

FAMILIES = ("llama", "gemma3", "gpt2")
NAMED = ("attn_out", "mlp_out", "mlp_in", "resid_mid", "z")


def load(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def captured(model, sites, ids):
    n = model.config.get_text_config().num_hidden_layers
    with SiteHooks(model, sites, list(range(n + 1))) as hooks, torch.inference_mode():
        out = model.base_model(input_ids=ids, output_hidden_states=True, use_cache=False)
        return out.hidden_states, {site.name: hooks.take(site) for site in sites}


def hooked(module, io, run):
    """What a plain forward hook on ``module`` returns in a direct run."""
    seen = []
    if io == "output":
        handle = module.register_forward_hook(lambda m, a, o: seen.append(o[0] if isinstance(o, tuple) else o))
    else:
        handle = module.register_forward_pre_hook(lambda m, a, kw: seen.append(a[0] if a else kw["hidden_states"]),
                                                  with_kwargs=True)
    try:
        run()
    finally:
        handle.remove()
    return seen[0]


@pytest.mark.parametrize("arch", FAMILIES)
def test_hooks_capture_what_a_forward_hook_returns(tiny_model_dir, arch):
    model = load(tiny_model_dir(arch))
    ids = torch.tensor([[1, 5, 9, 14, 3, 7]])
    sites, _ = resolve_sites(model, (*NAMED, f"{blocks(model)[0]}.*.{'mlp.down_proj' if arch != 'gpt2' else 'mlp.c_proj'}:input"))
    _, got = captured(model, sites, ids)
    prefix, layers = blocks(model)
    for site in sites:
        relative = site.module.removeprefix(f"{prefix}.*.")
        for b, block in enumerate(layers):
            with torch.inference_mode():
                expected = hooked(block.get_submodule(relative), site.io,
                                  lambda: model.base_model(input_ids=ids, use_cache=False))
            states = got[site.name][b]
            assert torch.equal(states.flatten(2) if site.heads else states, expected), (arch, site.name, b)


@pytest.mark.parametrize("arch", FAMILIES)
def test_attn_out_and_mlp_out_rebuild_the_residual_stream(tiny_model_dir, arch):
    """resid_post[l] = resid_post[l-1] + attn_out[l] + mlp_out[l]: Gemma 3's post-sublayer norms included."""
    model = load(tiny_model_dir(arch))
    sites, _ = resolve_sites(model, ("attn_out", "mlp_out", "resid_mid"))
    hidden, got = captured(model, sites, torch.tensor([[2, 8, 4, 11, 6]]))
    for layer in range(1, len(hidden) - 1):  # the last hidden state is final-normed by transformers
        rebuilt = hidden[layer - 1] + got["attn_out"][layer - 1] + got["mlp_out"][layer - 1]
        torch.testing.assert_close(rebuilt, hidden[layer], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(hidden[layer - 1] + got["attn_out"][layer - 1], got["resid_mid"][layer - 1],
                                   rtol=1e-5, atol=1e-5)


def test_gemma3_sublayer_outputs_are_the_post_norms(tiny_model_dir):
    model = load(tiny_model_dir("gemma3"))
    sites, _ = resolve_sites(model, ("attn_out", "mlp_out", "mlp_in"))
    modules = {site.name: site.module.rsplit(".", 1)[-1] for site in sites}
    assert modules == {"attn_out": "post_attention_layernorm", "mlp_out": "post_feedforward_layernorm",
                       "mlp_in": "mlp"}


def test_the_language_model_of_a_multimodal_family(tmp_path):
    from media_models import build_llava
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(build_llava(tmp_path / "llava"), dtype=torch.float32).eval()
    prefix, layers = blocks(model)
    assert "language_model" in prefix and "vision" not in prefix
    sites, _ = resolve_sites(model, ("attn_out", "mlp_out", "z"))
    hidden, got = captured(model, sites, torch.tensor([[3, 5, 7, 9]]))
    for layer in range(1, len(hidden) - 1):
        torch.testing.assert_close(hidden[layer - 1] + got["attn_out"][layer - 1] + got["mlp_out"][layer - 1],
                                   hidden[layer], rtol=1e-5, atol=1e-5)
    text = model.config.get_text_config()
    assert got["z"].shape[-2:] == (text.num_attention_heads, text.hidden_size // text.num_attention_heads)


def test_transformerlens_names_map_to_sites_and_layers():
    assert site_requests("blocks.5.hook_mlp_out,blocks.5.ln2.hook_normalized") == (
        "blocks.5.hook_mlp_out", "blocks.5.ln2.hook_normalized")
    assert [site_name(r) for r in ("blocks.5.hook_mlp_out", "blocks.2.attn.hook_z", "blocks.*.hook_resid_mid",
                                   "blocks.0.ln2.hook_normalized")] == ["mlp_out", "z", "resid_mid", "mlp_in"]
    assert implied_layers(("blocks.5.hook_mlp_out", "blocks.5.hook_resid_pre", "blocks.7.hook_resid_post")) == (5, 6, 8)
    assert implied_layers(("blocks.5.hook_mlp_out", "mlp_in")) is None
    assert site_requests("resid_post") is None and site_requests(None) is None
    assert site_name("model.layers.*.mlp.down_proj:input") == "mlp.down_proj:input"
    assert site_requests("model.layers.*.mlp") == ("model.layers.*.mlp:output",)


def test_widths_from_the_config_for_the_dry_run(tiny_model_dir):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_model_dir("llama"))
    assert site_width(config, "mlp_out") == (32,) and site_width(config, "z") == (4, 8)
    assert site_width(config, "model.layers.*.mlp.up_proj:output") is None


@pytest.mark.parametrize("request_, says", [
    ("mlp_outt", "unknown site 'mlp_outt'; choose from resid_post, resid_mid, attn_out"),
    ("blocks.5.hook_nope", "unknown site .blocks.5.hook_nope.*TransformerLens hook name"),
    ("model.layers.mlp:input", r"names the block index with one \* between dots"),
    ("model.layers.*.mlp:inside", "ends in :input or :output"),
    ("attn_out,,mlp_out", "empty name"),
])
def test_bad_requests_are_one_line(request_, says):
    with pytest.raises(ActstoreError, match=says) as caught:
        site_requests(request_)
    assert "\n" not in str(caught.value)


def test_sites_a_model_lacks_name_what_exists(tiny_model_dir):
    model = load(tiny_model_dir("llama"))
    with pytest.raises(ActstoreError, match=r"matches no module of LlamaForCausalLM; its blocks are model\.layers\.\*, "
                                            r"holding self_attn"):
        resolve_sites(model, ("model.layers.*.mlp.nothing:output",))
    gpt2 = load(tiny_model_dir("gpt2"))
    with pytest.raises(ActstoreError, match="matches no module"):
        resolve_sites(gpt2, site_requests("model.layers.*.mlp:input"))


def test_hooks_leave_the_model_as_it_was(tiny_model_dir):
    model = load(tiny_model_dir("llama"))
    ids = torch.tensor([[1, 2, 3, 4]])
    def hooks():  # transformers registers some of its own: count them
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())

    with torch.inference_mode():  # (transformers adds its own on the first output_hidden_states pass)
        before = model(input_ids=ids, output_hidden_states=True).logits
    own = hooks()
    sites, _ = resolve_sites(model, NAMED)
    _, _ = captured(model, sites, ids)
    with pytest.raises(RuntimeError):
        with SiteHooks(model, sites, [0, 1, 2, 3]), torch.inference_mode():
            model.base_model(input_ids=ids, use_cache=False)
            raise RuntimeError("a failed batch")
    assert hooks() == own
    with torch.inference_mode():
        assert torch.equal(model(input_ids=ids).logits, before)
