"""The model suite: diffusers models built from configurations (random weights, no download)
and the built-in SmolLM2-135M, each as a Workload of denoising steps or LLM steps.

Weights are random: timing and FLOPs depend on shapes only. Conditioning (text embeddings)
is random too; the text encoder and the VAE decoder run once per image and are not profiled.
Diffusion steps use classifier-free guidance (batch 2: conditional and unconditional) and a
DDIM scheduler update, as a pipeline's denoising loop does.
"""
from __future__ import annotations

import copy
import warnings
from typing import Callable

import torch

from .workload import ProfileError, Workload, check_device

TEXT_TOKENS = 77  # CLIP's prompt length, as Stable Diffusion and ModelScope use


def _diffusers():
    try:
        import diffusers
    except ImportError:
        raise ProfileError("the diffusion models need the diffusers package: pip install diffusers==0.42.1 "
                           "(elastiq[bench] or elastiq[test] install it)") from None
    return diffusers


# diffusers' 2-D UNet reads attention_head_dim as the number of heads (a naming kept for old
# configs); one head per 32 channels gives 32-wide heads at every level (Stable Diffusion: 40-64).


def unet_config(tiny: bool = False) -> dict:
    """Stable Diffusion 1.x's UNet layout (cross-attention at three of four levels) with narrower channels."""
    return dict(in_channels=4, out_channels=4, layers_per_block=1,
                block_out_channels=(32, 32, 64, 64) if tiny else (32, 64, 128, 128),
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                cross_attention_dim=32 if tiny else 128, attention_head_dim=(1, 1, 2, 2) if tiny else (1, 2, 4, 4),
                norm_num_groups=8 if tiny else 32)


def pixart_config(tiny: bool = False) -> dict:
    """PixArt-alpha's DiT layout (self-attention, cross-attention to the caption, adaLN-single) scaled down."""
    return dict(num_layers=2 if tiny else 8, num_attention_heads=2 if tiny else 8, attention_head_dim=16 if tiny else 32,
                in_channels=4, out_channels=8, patch_size=2, cross_attention_dim=32 if tiny else 256,
                caption_channels=32 if tiny else 256, norm_type="ada_norm_single", use_additional_conditions=False)


def unet3d_config(tiny: bool = False) -> dict:
    """ModelScope text-to-video's 3-D UNet layout (spatial and temporal attention per level) scaled down.
    Unlike the 2-D UNet, this class reads attention_head_dim as the width of a head: 32 wide."""
    return dict(in_channels=4, out_channels=4, layers_per_block=1,
                block_out_channels=(32, 32, 64, 64) if tiny else (32, 64, 128, 128),
                down_block_types=("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
                up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3,
                cross_attention_dim=32 if tiny else 128, attention_head_dim=8 if tiny else 32,
                norm_num_groups=8 if tiny else 32)


def _denoising(name: str, family: str, model, latents_shape, call: Callable, cond_dim: int, text_tokens: int,
               steps: int, device, config: dict, out_channels: int) -> Workload:
    d = _diffusers()
    sched = d.DDIMScheduler(num_train_timesteps=1000)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(latents_shape, generator=g).to(device)
    cond = torch.randn(2, text_tokens, cond_dim, generator=g).to(device)  # [unconditional, conditional]
    state = {}

    def reset():
        sched.set_timesteps(steps)
        state["latents"] = noise.clone()

    def step(i):
        t = sched.timesteps[i]
        x = torch.cat([state["latents"]] * 2)
        out = call(x, t, cond)[:, :out_channels]
        uncond, text = out.chunk(2)
        guided = uncond + 7.5 * (text - uncond)
        state["latents"] = sched.step(guided, t, state["latents"]).prev_sample

    reset()
    return Workload(name, model, step, steps, reset, family, config, "denoising step")


def sd_unet(steps: int = 3, side: int = 32, tiny: bool = False, device="cpu") -> Workload:
    d = _diffusers()
    cfg = unet_config(tiny)
    torch.manual_seed(0)
    model = d.UNet2DConditionModel(sample_size=side, **cfg).to(device).eval()
    return _denoising("sd-unet", "diffusion-tti", model, (1, 4, side, side),
                      lambda x, t, c: model(x, t, encoder_hidden_states=c).sample, cfg["cross_attention_dim"],
                      TEXT_TOKENS, steps, device, {"class": "UNet2DConditionModel", "latent_side": side,
                                                   "image_side": 8 * side, **cfg}, 4)


def pixart_dit(steps: int = 3, side: int = 32, tiny: bool = False, device="cpu") -> Workload:
    d = _diffusers()
    cfg = pixart_config(tiny)
    torch.manual_seed(0)
    model = d.PixArtTransformer2DModel(sample_size=side, **cfg).to(device).eval()
    cond = {"resolution": None, "aspect_ratio": None}
    return _denoising("pixart-dit", "transformer-tti", model, (1, 4, side, side),
                      lambda x, t, c: model(x, encoder_hidden_states=c, timestep=t.expand(x.shape[0]),
                                            added_cond_kwargs=cond).sample,
                      cfg["caption_channels"], 120, steps, device,  # PixArt-alpha's T5 captions: 120 tokens
                      {"class": "PixArtTransformer2DModel", "latent_side": side, "image_side": 8 * side, **cfg}, 4)


def video_unet(steps: int = 3, side: int = 16, frames: int = 8, tiny: bool = False, device="cpu") -> Workload:
    d = _diffusers()
    cfg = unet3d_config(tiny)
    torch.manual_seed(0)
    model = d.UNet3DConditionModel(sample_size=side, **cfg).to(device).eval()
    return _denoising("video-unet3d", "diffusion-ttv", model, (1, 4, frames, side, side),
                      lambda x, t, c: model(x, t, encoder_hidden_states=c).sample, cfg["cross_attention_dim"],
                      TEXT_TOKENS, steps, device, {"class": "UNet3DConditionModel", "latent_side": side,
                                                   "image_side": 8 * side, "frames": frames, **cfg}, 4)


def _smollm2(device):
    from elastiq.models import load
    model, tok = load("smollm2-135m")
    return model.to(device).eval(), tok


def _prompt(tok, tokens: int, device) -> torch.Tensor:
    from elastiq.data import load_text
    ids = tok(load_text("wiki-eval")[: tokens * 12], return_tensors="pt").input_ids[:, :tokens]
    if ids.shape[1] < tokens:
        raise ProfileError(f"the built-in text gave {ids.shape[1]} tokens, fewer than the {tokens} asked for")
    return ids.to(device)


def llm_prefill(steps: int = 3, tokens: int = 256, device="cpu") -> Workload:
    model, tok = _smollm2(device)
    ids = _prompt(tok, tokens, device)
    return Workload("smollm2-prefill", model, lambda i: model(ids, use_cache=False), steps, family="llm-prefill",
                    config={"model": "smollm2-135m", "prompt_tokens": tokens}, step_name="prefill")


def llm_decode(steps: int = 16, tokens: int = 256, device="cpu") -> Workload:
    """One step = one new token (greedy) with the KV cache of a tokens-long prompt; the prefill
    that builds the cache is part of reset(), not timed."""
    model, tok = _smollm2(device)
    ids = _prompt(tok, tokens, device)
    state = {}

    def reset():
        # the prefill runs once; later resets copy its cache (decode steps grow the cache in place)
        if "start" not in state:
            out = model(ids, use_cache=True)
            state["start"] = (out.cache, out.logits[:, -1:].argmax(-1))
        state["cache"], state["next"] = copy.deepcopy(state["start"][0]), state["start"][1]

    def step(i):
        out = model(state["next"], cache=state["cache"], use_cache=True)
        state["cache"], state["next"] = out.cache, out.logits[:, -1:].argmax(-1)

    return Workload("smollm2-decode", model, step, steps, reset, "llm-decode",
                    {"model": "smollm2-135m", "prompt_tokens": tokens}, "decode token")


SUITE = {"sd-unet": sd_unet, "pixart-dit": pixart_dit, "video-unet3d": video_unet,
         "smollm2-prefill": llm_prefill, "smollm2-decode": llm_decode}


def build(name: str, steps: int | None = None, side: int | None = None, frames: int | None = None,
          tokens: int | None = None, tiny: bool = False, device="cpu") -> Workload:
    """A suite workload by name, with optional overrides (side: latent side, 8x smaller than the image)."""
    if name not in SUITE:
        raise ProfileError(f"unknown model {name!r}; the suite has {', '.join(SUITE)}")
    device = check_device(device)
    for what, v in (("steps", steps), ("side", side), ("frames", frames), ("tokens", tokens)):
        if v is not None and (not isinstance(v, int) or v < 1):
            raise ProfileError(f"{what} must be a positive integer, not {v!r}")
    if side is not None and side % 8:
        raise ProfileError(f"side (the latent side) must be a multiple of 8 so that every UNet level "
                           f"halves it evenly, not {side}")
    kw = {"device": device}
    if steps is not None:
        kw["steps"] = steps
    if name.startswith("smollm2"):
        if side or frames or tiny:
            raise ProfileError(f"{name} takes steps and tokens, not side, frames or tiny")
        if tokens is not None:
            kw["tokens"] = tokens
        return SUITE[name](**kw)
    if tokens is not None:
        raise ProfileError(f"{name} takes steps, side and frames, not tokens")
    if frames is not None and name != "video-unet3d":
        raise ProfileError(f"{name} makes images; frames applies to video-unet3d only")
    if side is not None:
        kw["side"] = side
    if frames is not None:
        kw["frames"] = frames
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SUITE[name](tiny=tiny, **kw)
