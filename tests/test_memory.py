"""Memory planner: counts from the real architecture, sane orderings, suggestions, NF4 layers, and a measured check."""
import dataclasses, json
from pathlib import Path
import pytest
import torch
from fluxid_nb.config import resolve_config
from fluxid_nb import memory as M

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope='module')
def fast(): return resolve_config('fast', env={}, run_name='t')

def test_architecture_is_flux_dev():
    a = M.architecture()
    assert (a.double, a.single, a.width, a.heads) == (19, 38, 3072, 24)
    assert 11.85e9 < a.params < 11.95e9
    assert 0.7 < a.fp8_params / a.params < 0.75      # adaLN Linears stay bf16 under FP8 layerwise casting
    assert a.nf4_weights / a.params > 0.99

def test_lora_count(fast):
    n_mod, n = M.lora_params(M.architecture(), fast.lora_targets, 32)
    assert n_mod == 19 * 12 + 38 * 5
    import re
    assert not re.match(M.targets_regex(fast.lora_targets), 'proj_out')  # the model's own output layer stays LoRA-free
    n64 = M.lora_params(M.architecture(), fast.lora_targets, 64)[1]
    assert n64 == 2 * n

def test_plan_orderings(fast):
    peak = lambda c, **kw: M.plan_memory(c, device='cuda', device_gb=80, **kw).train_peak
    bf16 = peak(fast)
    assert 24 * M.GB < bf16 < 30 * M.GB                 # published: ~26 GB bf16 LoRA at 512×768
    assert peak(fast, base='nf4') < bf16
    parts = lambda b: M.plan_memory(fast, device='cuda', base=b).parts
    assert parts('fp8')['base weights'] < 0.65 * parts(None)['base weights']
    # measured (docs/memory_validation.md): with diffusers' layerwise casting the bf16 copies of every block stay alive
    # until backward, so FP8_BASE peaks above bf16 on the full model; revisit when load_transformer changes its FP8 path
    assert peak(fast, base='fp8') > bf16
    assert peak(dataclasses.replace(fast, optimizer='adamw8bit')) < bf16
    assert peak(dataclasses.replace(fast, gradient_checkpointing=False)) > bf16 + 10 * M.GB
    assert peak(dataclasses.replace(fast, resolution=1024, max_bucket_reso=1024)) > bf16
    assert peak(dataclasses.replace(fast, train_batch_size=2)) > bf16
    nf4 = M.plan_memory(dataclasses.replace(fast, optimizer='adamw8bit'), base='nf4', device='cuda', device_gb=80)
    assert 7 < nf4.need_gb < 13                          # published: ~9 GB NF4 + 8-bit Adam + checkpointing
    live = M.plan_memory(fast, device='cuda', encoders='live')
    assert live.train_peak - bf16 > 9 * M.GB             # T5-XXL kept on the device

def test_suggest_and_format(fast):
    p = M.plan_memory(fast, 16, device='cuda')
    assert p.fits is False
    s = M.suggest(fast, 16)
    assert s and all(x['need_gb'] <= 16 for x in s)
    assert any('NF4 base' in x['levers'] for x in s)
    text = M.format_plan(p, s)
    assert 'DOES NOT FIT' in text and 'QUANT_BASE=nf4' in text and 'base weights' in text
    assert 'fits' in M.format_plan(M.plan_memory(fast, 141, device='cuda'))
    assert 'no accelerator' in M.format_plan(M.plan_memory(fast, device='cpu'))

def test_meta_count_matches_real_cpu(fast):
    args = (256, 256, 32, 1, torch.bfloat16, tuple(fast.lora_targets), 8, 'plain')
    meta, cpu = M._count_saved(*args), M._count_saved(*args, device='cpu')
    for k in cpu: assert abs(meta[k] - cpu[k]) <= 0.01 * cpu[k] + 4096, (k, meta[k], cpu[k])

def test_nf4_quantize_and_train():
    from diffusers import FluxTransformer2DModel
    from fluxid_nb.train import add_lora
    torch.manual_seed(0)
    m = FluxTransformer2DModel(num_layers=1, num_single_layers=1, attention_head_dim=32, num_attention_heads=4,
                               joint_attention_dim=64, pooled_projection_dim=64, guidance_embeds=True,
                               axes_dims_rope=(8, 12, 12)).to(torch.bfloat16)
    x = dict(hidden_states=torch.randn(1, 16, 64, dtype=torch.bfloat16), encoder_hidden_states=torch.randn(1, 8, 64, dtype=torch.bfloat16),
             pooled_projections=torch.randn(1, 64, dtype=torch.bfloat16), timestep=torch.full((1,), 0.5, dtype=torch.bfloat16),
             guidance=torch.ones(1, dtype=torch.bfloat16), txt_ids=torch.zeros(8, 3), img_ids=torch.zeros(16, 3), return_dict=False)
    with torch.no_grad(): ref = m(**x)[0]
    before = M.quantized_bytes(m)
    n = M.quantize_nf4_(m)
    import bitsandbytes as bnb
    assert n > 0 and sum(isinstance(mod, bnb.nn.Linear4bit) for mod in m.modules()) == n
    assert M.quantized_bytes(m) < 0.45 * before
    cfg = resolve_config('fast', env={}, run_name='t', network_dim=4)
    params = add_lora(m, cfg)
    opt = torch.optim.AdamW(params, lr=1e-2)
    target = torch.randn_like(ref)
    losses = []
    for _ in range(8):
        loss = ((m(**x)[0].float() - target.float()) ** 2).mean()
        loss.backward(); opt.step(); opt.zero_grad(); losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(p.grad is None for p in m.parameters() if not p.requires_grad)

def test_stored_validation_table():
    d = json.loads((ROOT/'docs'/'memory_validation.json').read_text())
    rows = d['rows']
    assert len(rows) >= 5 and '| predicted GiB |' in (ROOT/'docs'/'memory_validation.md').read_text()
    assert all(r['spec'].get('width', 3072) == 3072 for r in rows)
    assert all(abs(r['error_vs_allocated']) < 0.15 for r in rows), [(r['config'], r['error_vs_allocated']) for r in rows]

def test_planner_within_15pct_measured():
    "A fresh-process CPU measurement (width 1024, 1 double + 1 single block, 256²) against the planner."
    spec = dict(double=1, single=1, width=1024, resolution=256, t5=128, steps=2)
    m = M.measure_peak(spec)
    p = M.predict_spec(spec)
    err = p.train_peak / m['allocated_peak'] - 1
    assert abs(err) < 0.15, (p.train_peak, m)
