"""Tiny randomly initialised vision- and audio-language models with real processors, built offline.

Each builder saves a checkpoint directory (safetensors + processor files) that
``actstore extract --model DIR`` loads exactly like a downloaded one:
LLaVA (CLIP vision tower, Llama text model), Chameleon (VQ-VAE image codes that
are vocabulary ids) and Qwen2-Audio (Whisper-style encoder, Qwen2 text model)."""
from __future__ import annotations

from pathlib import Path

from conftest import build_tokenizer

IMAGE_SIZE = 16        # pixels; LLaVA: 4×4 patches of 4 px; Chameleon: 4×4 VQ codes
N_CODES = 16           # Chameleon's VQ codebook


WORDS = ["red", "green", "blue", "black", "white", "yellow", "orange", "purple", "dog", "cat", "sofa"]


def media_tokenizer(special: list[str]):
    """The tests' byte-level BPE plus the media placeholders and whole-word tokens for colours and a few nouns."""
    tokenizer = build_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": special})
    tokenizer.add_tokens(WORDS)
    return tokenizer


def _text_kwargs(vocab_size: int) -> dict:
    return dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)


def _code_name(code: int) -> str:
    """Chameleon's vocabulary name of VQ code ``code``: digits spelt A–J, then one more character."""
    return "IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(code)) + "Z"


def build_llava(path: Path) -> Path:
    import torch
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    tokenizer = media_tokenizer(["<image>"])
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=IMAGE_SIZE, patch_size=4, projection_dim=32)
    config = LlavaConfig(vision_config=vision, text_config=LlamaConfig(**_text_kwargs(len(tokenizer))),
                         image_token_index=image_id, vision_feature_layer=-1,
                         vision_feature_select_strategy="default", image_seq_length=16)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer, patch_size=4, vision_feature_select_strategy="default", image_token="<image>",
        num_additional_image_tokens=1)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def build_chameleon(path: Path) -> Path:
    import torch
    from transformers import (ChameleonConfig, ChameleonForConditionalGeneration, ChameleonImageProcessor,
                              ChameleonProcessor, ChameleonVQVAEConfig)

    tokenizer = media_tokenizer(["<image>", "<racm3:break>", "<eoss>", "<reserved08706>"])
    tokenizer.add_tokens([_code_name(code) for code in range(N_CODES)])
    tokenizer.sep_token = "<reserved08706>"
    vq = ChameleonVQVAEConfig(embed_dim=8, num_embeddings=N_CODES, latent_channels=8, resolution=IMAGE_SIZE,
                              base_channels=32, channel_multiplier=[1, 2, 2], num_res_blocks=1, attn_resolutions=[])
    kwargs = _text_kwargs(len(tokenizer))
    kwargs.pop("tie_word_embeddings")
    config = ChameleonConfig(**kwargs, vq_config=vq.to_dict(), vocabulary_map=dict(tokenizer.get_vocab()))
    torch.manual_seed(0)
    model = ChameleonForConditionalGeneration(config).eval()
    processor = ChameleonProcessor(
        image_processor=ChameleonImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                                crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer, image_seq_length=(IMAGE_SIZE // 4) ** 2, image_token="<image>")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def build_qwen2_audio(path: Path) -> Path:
    import torch
    from transformers import (Qwen2AudioConfig, Qwen2AudioEncoderConfig, Qwen2AudioForConditionalGeneration,
                              Qwen2AudioProcessor, Qwen2Config, WhisperFeatureExtractor)

    tokenizer = media_tokenizer(["<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"])
    audio_id = tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    encoder = Qwen2AudioEncoderConfig(num_mel_bins=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32,
                                      d_model=32, max_source_positions=1500)
    config = Qwen2AudioConfig(audio_config=encoder, text_config=Qwen2Config(**_text_kwargs(len(tokenizer))),
                              audio_token_index=audio_id)
    torch.manual_seed(0)
    model = Qwen2AudioForConditionalGeneration(config).eval()
    processor = Qwen2AudioProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=16), tokenizer=tokenizer)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


BUILDERS = {"llava": build_llava, "chameleon": build_chameleon, "qwen2-audio": build_qwen2_audio}


WIDE = (16, 24)        # pixels, height × width: the wide LLaVA's images, a 4 × 6 grid of 4 px patches


def build_llava_wide(path: Path) -> Path:
    """LLaVA with a Pixtral vision tower (any height and width, as in pixtral-12b's LLaVA class) whose processor
    resizes every image to 16 × 24 pixels: 4 rows × 6 columns of image tokens."""
    import torch
    from transformers import (CLIPImageProcessor, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor, PixtralVisionConfig)

    tokenizer = media_tokenizer(["<image>"])
    vision = PixtralVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                                 image_size=32, patch_size=4, head_dim=8)
    config = LlavaConfig(vision_config=vision, text_config=LlamaConfig(**_text_kwargs(len(tokenizer))),
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
                         vision_feature_select_strategy="full")
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"height": WIDE[0], "width": WIDE[1]}, do_center_crop=False),
        tokenizer=tokenizer, patch_size=4, vision_feature_select_strategy="full", image_token="<image>",
        num_additional_image_tokens=0)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
