"""The `tiny-ip2p` editor: the diffusers InstructPix2Pix pipeline with a seeded, randomly initialised miniature UNet
(8 input channels, as InstructPix2Pix), VAE and CLIP text encoder, and a byte-level CLIP tokenizer built in code: no
download. It exercises every code path of pllbench.cad_edits.augment in tests and benchmarks; its edits carry no
class content.
"""

from __future__ import annotations

import torch

from ..util import derive_seed

TINY = "tiny-ip2p"


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE: printable Latin-1 bytes are themselves, the rest 256 + n."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    symbols, extra = [], 0
    for byte in range(256):
        if byte in printable:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(256 + extra))
            extra += 1
    return symbols


def tiny_tokenizer():
    """A byte-level CLIP tokenizer without merges: every byte is a token, word-final bytes carry `</w>`."""
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def tiny_pipeline():
    """The `tiny-ip2p` editor: a seeded, randomly initialised miniature InstructPix2Pix pipeline (CPU, fp32)."""
    from diffusers import (
        AutoencoderKL,
        DPMSolverMultistepScheduler,
        StableDiffusionInstructPix2PixPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_tokenizer()
    vocab = tokenizer.get_vocab()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(TINY))
        unet = UNet2DConditionModel(
            sample_size=32, in_channels=8, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=4,
            norm_num_groups=8)
        # Four levels like Stable Diffusion's VAE: latents are 1/8 of the image side.
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, block_out_channels=(8, 16, 16, 16), layers_per_block=1,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4, norm_num_groups=4, sample_size=256)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"]))
    scheduler = DPMSolverMultistepScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    return StableDiffusionInstructPix2PixPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
