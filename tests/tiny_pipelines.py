"""Miniature random-weight SD3, FLUX.1 and SANA pipelines, built offline from tiny configs of the
real diffusers / transformers classes and saved as ordinary diffusers folders. Tests load them
through the same `from_pretrained` path a real checkpoint takes."""

from __future__ import annotations

import pathlib

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD = "<|startoftext|>", "<|endoftext|>", "<pad>"


def byte_tokenizer(max_length: int) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (256 byte symbols, no merges) that any prompt fits, BOS ... EOS."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate([PAD, BOS, EOS, *sorted(alphabet)])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A {EOS}", special_tokens=[(BOS, 1), (EOS, 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, model_max_length=max_length)


def _clip_text(cls_name: str, hidden: int, projection: int | None = None, seed: int = 0):
    import transformers

    torch.manual_seed(seed)
    config = transformers.CLIPTextConfig(
        vocab_size=259, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, projection_dim=projection or hidden, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    return getattr(transformers, cls_name)(config)


def _t5(d_model: int, seed: int = 0):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    return T5EncoderModel(T5Config(vocab_size=259, d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=2, num_heads=2, relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=2))


def _vae_kl(latent_channels: int, shift: float | None):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 8), layers_per_block=1, latent_channels=latent_channels, norm_num_groups=4,
        use_quant_conv=False, use_post_quant_conv=False, scaling_factor=1.5, shift_factor=shift,
    )  # two blocks: an 2x VAE


def build_sd3(out: str | pathlib.Path) -> pathlib.Path:
    """A tiny StableDiffusion3Pipeline folder (CLIP-L, CLIP-G, T5, 16x16 latents of 4 channels at 32 px)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=16, patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=64, caption_projection_dim=16, pooled_projection_dim=64, pos_embed_max_size=16,
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=_vae_kl(4, 0.1),
        text_encoder=_clip_text("CLIPTextModelWithProjection", 32, seed=1), tokenizer=byte_tokenizer(77),
        text_encoder_2=_clip_text("CLIPTextModelWithProjection", 32, seed=2), tokenizer_2=byte_tokenizer(77),
        text_encoder_3=_t5(64, seed=3), tokenizer_3=byte_tokenizer(32),
    )
    pipe.save_pretrained(out)
    return pathlib.Path(out)


def build_flux(out: str | pathlib.Path) -> pathlib.Path:
    """A tiny FluxPipeline folder (CLIP-L pooled, T5, guidance embedding, 4-channel latents packed 2x2)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 6, 6),
    )
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=_vae_kl(4, 0.1), text_encoder=_clip_text("CLIPTextModel", 32, seed=1),
        tokenizer=byte_tokenizer(77), text_encoder_2=_t5(32, seed=2), tokenizer_2=byte_tokenizer(32), transformer=transformer,
    )
    pipe.save_pretrained(out)
    return pathlib.Path(out)


def build_sana(out: str | pathlib.Path) -> pathlib.Path:
    """A tiny SanaPipeline folder (Gemma-2 text encoder, deep-compression autoencoder, linear-attention DiT)."""
    from diffusers import AutoencoderDC, DPMSolverMultistepScheduler, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    torch.manual_seed(0)
    transformer = SanaTransformer2DModel(
        patch_size=1, in_channels=4, out_channels=4, num_layers=2, num_attention_heads=2, attention_head_dim=8,
        num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=16, sample_size=16,
    )
    vae = AutoencoderDC(
        in_channels=3, latent_channels=4, attention_head_dim=2, encoder_block_types=("ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "EfficientViTBlock"), encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
        encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)), encoder_layers_per_block=(1, 1),
        decoder_layers_per_block=(1, 1), downsample_block_type="conv", upsample_block_type="interpolate",
        decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=0.41407,
    )
    torch.manual_seed(1)
    text_encoder = Gemma2Model(Gemma2Config(
        vocab_size=259, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        head_dim=8, max_position_embeddings=4096, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    ))
    scheduler = DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=3.0)
    pipe = SanaPipeline(tokenizer=byte_tokenizer(4096), text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler)
    pipe.save_pretrained(out)
    return pathlib.Path(out)


BUILDERS = {"sd3": build_sd3, "flux": build_flux, "sana": build_sana}


def build_clip(out: str | pathlib.Path, image_size: int = 32) -> pathlib.Path:
    """A tiny random CLIPModel with its processor (CLIP image preprocessing at `image_size`), the
    layout the CLIP-family rewards load."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"vocab_size": 259, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "max_position_embeddings": 77, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": image_size, "patch_size": 8},
        projection_dim=16,
    )
    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    CLIPModel(config).save_pretrained(out)
    CLIPProcessor(image_processor=image_processor, tokenizer=byte_tokenizer(77)).save_pretrained(out)
    return pathlib.Path(out)
