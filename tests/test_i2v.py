"""The I2V math (models/i2v.py) against diffusers itself: the widened DiT equals the T2V one at step 0, and the
mask and condition latents are the very tensors SkyReelsV2ImageToVideoPipeline.prepare_latents builds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import i2v
from models.checkpoint import build_components


@pytest.fixture(scope="module")
def parts():
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from models.i2v_checkpoint import PROFILES

    comps = build_components("tiny", seed=0, diffusion_forcing=False)
    kwargs, size = PROFILES["tiny"]
    torch.manual_seed(3)
    comps["image_encoder"] = CLIPVisionModelWithProjection(CLIPVisionConfig(**kwargs)).eval()
    comps["image_processor"] = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return comps


def _run(model, x, text, image=None):
    with torch.no_grad():
        return model(hidden_states=x, timestep=torch.tensor([700.0]), encoder_hidden_states=text,
                     encoder_hidden_states_image=image, return_dict=False)[0]


def test_widened_dit_is_the_t2v_dit_at_step_zero_and_listens_after_a_step(parts):
    t2v = parts["transformer"]
    wide = i2v.widen_to_i2v(t2v, image_dim=32, seed=0)
    assert wide.config.in_channels == 36 and wide.config.out_channels == 16 and wide.config.image_dim == 32
    gen = torch.Generator().manual_seed(0)
    x, text = torch.randn(2, 16, 3, 8, 14, generator=gen), torch.randn(2, 512, 32, generator=gen)
    condition, image = torch.randn(2, 20, 3, 8, 14, generator=gen), torch.randn(2, 17, 32, generator=gen)
    reference = _run(t2v, x, text)
    out = _run(wide, i2v.i2v_input(x, condition), text, image)
    assert torch.allclose(out, reference, atol=1e-5), (out - reference).abs().max()
    # whatever the condition and image: step 0 ignores them
    assert torch.allclose(_run(wide, i2v.i2v_input(x, condition * 3), text, image * 2), reference, atol=1e-5)
    # one optimizer step on the I2V loss opens the new paths (their gradients are not zero)
    wide.train()
    loss = wide(hidden_states=i2v.i2v_input(x, condition), timestep=torch.tensor([700.0, 300.0]),
                encoder_hidden_states=text, encoder_hidden_states_image=image, return_dict=False)[0].square().mean()
    loss.backward()
    assert wide.patch_embedding.weight.grad[:, 16:].abs().sum() > 0
    assert wide.blocks[0].attn2.add_v_proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="already an image-to-video"):
        i2v.widen_to_i2v(wide, 32)


def test_mask_and_condition_latents_are_the_pipelines(parts):
    from diffusers import SkyReelsV2ImageToVideoPipeline
    from PIL import Image

    pipe = SkyReelsV2ImageToVideoPipeline(**parts)
    rng = np.random.default_rng(0)
    image = (rng.random((64, 112, 3)) * 255).astype(np.uint8)
    first = pipe.video_processor.preprocess(Image.fromarray(image), height=64, width=112)  # [1, 3, H, W] in [-1, 1]
    _, condition = pipe.prepare_latents(first, 2, 16, 64, 112, 9, torch.float32, "cpu", torch.Generator().manual_seed(0))
    assert condition.shape == (2, 20, 3, 8, 14)
    assert torch.equal(condition[:, :4], i2v.first_frame_mask(2, 3, 8, 14))
    ours = i2v.condition_latents(parts["vae"], first.repeat(2, 1, 1, 1), 3)
    assert torch.allclose(ours, condition[:, 4:], atol=1e-5)
    # CLIP features: the pipeline's encode_image on the same image
    theirs = pipe.encode_image(Image.fromarray(image), "cpu")
    assert torch.allclose(i2v.image_embeddings(parts["image_encoder"], parts["image_processor"], [image]), theirs, atol=1e-6)


def test_first_frame_decoded_from_the_first_latent_frame_alone(parts):
    """The causal VAE: the first pixel frame decoded from latent frame 0 equals the full decode's frame 0."""
    vae = parts["vae"]
    latents = torch.randn(1, 16, 3, 8, 14, generator=torch.Generator().manual_seed(1))
    from models.latent_encode import denormalise_latents

    with torch.no_grad():
        full = vae.decode(denormalise_latents(vae, latents)).sample[:, :, 0].clamp(-1, 1)
    assert torch.allclose(i2v.decode_first_frames(vae, latents), full, atol=1e-5)
    assert i2v.pad_text(torch.ones(2, 7, 4)).shape == (2, 512, 4)
    with pytest.raises(ValueError, match="text_len: 512"):
        i2v.pad_text(torch.ones(1, 600, 4))
