"""A plain LoRA loop in the style of diffusers' train_dreambooth_lora_flux.py, for comparison with fluxid's trainer.

Per step: read one image, resize + centre-crop to a fixed square (no buckets), VAE-encode it, encode its own caption
with both text encoders (no caches, encoders stay loaded), rectified-flow loss, backward, AdamW, `loss.item()`
(the example logs every step). Same LoRA targets, rank and dtype as the fluxid run it is compared with."""
from __future__ import annotations
import random, time
from pathlib import Path
import numpy as np
import torch

def plain_train(model_dir: Path, data_dir: Path, steps: int, resolution: int, rank: int, t5_len: int, lr: float = 1e-3,
                dtype=torch.float32, seed: int = 42, on_step=None) -> list[float]:
    from diffusers import FluxPipeline
    from peft import LoraConfig
    from PIL import Image
    from fluxid_nb.config import DEFAULT_TARGETS
    from fluxid_nb.data import load_dataset, load_image
    from fluxid_nb.lora import targets_regex
    from fluxid_nb.flux1 import pack, unpack, image_ids, FLUX_VAE
    VAE_SHIFT, VAE_SCALE = FLUX_VAE['shift_factor'], FLUX_VAE['scaling_factor']
    torch.manual_seed(seed)
    pipe = FluxPipeline.from_pretrained(model_dir, dtype=dtype, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    tr, vae = pipe.transformer, pipe.vae
    tr.requires_grad_(False); vae.requires_grad_(False)
    pipe.text_encoder.requires_grad_(False); pipe.text_encoder_2.requires_grad_(False)
    tr.enable_gradient_checkpointing()
    tr.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights='gaussian', target_modules=targets_regex(DEFAULT_TARGETS)))
    params = [p for n, p in tr.named_parameters() if 'lora_' in n]
    for p in params: p.data = p.data.float(); p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr)
    items = list(load_dataset(data_dir).items)
    rng = random.Random(seed)
    losses = []
    for step in range(steps):
        it = items[rng.randrange(len(items))]
        img = load_image(it.image_path)
        s = resolution / min(img.size)
        img = img.resize((max(resolution, round(img.width * s)), max(resolution, round(img.height * s))), Image.BILINEAR)
        l, t = (img.width - resolution) // 2, (img.height - resolution) // 2
        img = img.crop((l, t, l + resolution, t + resolution))
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None].to(dtype)
        with torch.no_grad():
            lat = (vae.encode(x).latent_dist.sample() - VAE_SHIFT) * VAE_SCALE
            pe, pooled, _ = pipe.encode_prompt(prompt=it.caption, prompt_2=it.caption, max_sequence_length=t5_len)
        b, c, h, w = lat.shape
        noise = torch.randn_like(lat)
        sig = torch.rand(b).view(b, 1, 1, 1)
        xt = (1 - sig) * lat + sig * noise
        out = tr(hidden_states=pack(xt), timestep=sig.view(b).to(dtype), guidance=torch.ones(b, dtype=dtype),
                 pooled_projections=pooled, encoder_hidden_states=pe, txt_ids=torch.zeros(pe.shape[1], 3, dtype=dtype),
                 img_ids=image_ids(h, w, dtype=dtype), return_dict=False)[0]
        loss = ((unpack(out.float(), h, w) - (noise - lat).float()) ** 2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step(); opt.zero_grad(set_to_none=True)
        losses.append(loss.item())  # host sync every step, as the example's logging does
        if on_step: on_step(step)
    return losses
