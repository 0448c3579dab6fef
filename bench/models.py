"""Bench models: FLUX.1-dev-shaped pipelines with random weights, bigger than the demo model where it matters."""
from __future__ import annotations
import json, shutil, tempfile
from pathlib import Path
import torch

BIG = dict(hidden=512, double=4, single=4, t5_dim=1024, t5_layers=8, t5_ff=2816, clip_dim=512, clip_layers=8)

def build_bench_flux(folder: Path, seed: int = 0, hidden: int = 512, double: int = 4, single: int = 4,
                     t5_dim: int = 1024, t5_layers: int = 8, t5_ff: int = 2816, clip_dim: int = 512, clip_layers: int = 8) -> Path:
    "A random-weight FLUX.1-dev-shaped pipeline whose text encoders cost something per caption (offline, seconds)."
    from diffusers import FluxPipeline, FluxTransformer2DModel, AutoencoderKL, FlowMatchEulerDiscreteScheduler
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel
    from fluxid_nb.models import _clip_tokenizer, _t5_tokenizer
    from fluxid_nb.flux1 import FLUX_DEV_SCHEDULER, FLUX_VAE
    folder = Path(folder)
    if (folder/'bench_model.json').is_file(): return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix='.bench-', dir=folder.parent))
    try:
        clip_tok, t5_tok = _clip_tokenizer(tmp/'tokenizer'), _t5_tokenizer(tmp/'tokenizer_2')
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=double, num_single_layers=single,
                                             attention_head_dim=32, num_attention_heads=hidden // 32, joint_attention_dim=t5_dim,
                                             pooled_projection_dim=clip_dim, guidance_embeds=True, axes_dims_rope=(8, 12, 12))
        vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=['DownEncoderBlock2D'] * 4,
                            up_block_types=['UpDecoderBlock2D'] * 4, block_out_channels=[32, 64, 64, 64], layers_per_block=1,
                            norm_num_groups=32, sample_size=256, use_quant_conv=False, use_post_quant_conv=False, **FLUX_VAE)
        clip = CLIPTextModel(CLIPTextConfig(vocab_size=len(clip_tok), hidden_size=clip_dim, intermediate_size=4 * clip_dim,
                                            num_hidden_layers=clip_layers, num_attention_heads=clip_dim // 64, max_position_embeddings=77,
                                            projection_dim=clip_dim, bos_token_id=clip_tok.bos_token_id,
                                            eos_token_id=clip_tok.eos_token_id, pad_token_id=clip_tok.pad_token_id))
        t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tok), d_model=t5_dim, d_kv=64, d_ff=t5_ff, num_layers=t5_layers,
                                     num_heads=t5_dim // 64, relative_attention_num_buckets=32, dropout_rate=0.0,
                                     feed_forward_proj='gated-gelu', pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
        FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_DEV_SCHEDULER), vae=vae, text_encoder=clip,
                     tokenizer=clip_tok, text_encoder_2=t5, tokenizer_2=t5_tok, transformer=transformer).save_pretrained(tmp)
        sizes = {n: sum(p.numel() for p in m.parameters()) for n, m in
                 (('transformer', transformer), ('vae', vae), ('clip', clip), ('t5', t5))}
        (tmp/'bench_model.json').write_text(json.dumps(dict(seed=seed, hidden=hidden, double=double, single=single,
                                                            t5_dim=t5_dim, t5_layers=t5_layers, clip_dim=clip_dim, params=sizes)))
        if folder.exists(): shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists(): shutil.rmtree(tmp, ignore_errors=True)
    return folder
