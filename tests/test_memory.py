"""Memory planner: counts from the real architecture, sane orderings, suggestions, NF4 layers, and a measured check."""
import dataclasses, json
from pathlib import Path
import pytest
import torch
from fluxid_nb.config import resolve_config
import sys
from fluxid_nb import memory as M
from fluxid_nb import models as MD
from fluxid_nb.lora import add_lora, lora_modules, targets_regex
from fluxid_nb.flow import flow_loss, Batch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]/'bench'))
import memory_harness as H  # the measurement harness (bench/memory_harness.py)

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope='module')
def fast(): return resolve_config('fast', env={}, run_name='t')

def test_architecture_is_flux_dev():
    a = M.architecture()
    assert (a.double, a.single, a.width, a.heads) == (19, 38, 3072, 24)
    assert 11.85e9 < a.params < 11.95e9
    assert 0.7 < a.fp8_params / a.params < 0.75      # adaLN Linears (and everything outside the blocks) stay bf16
    assert a.nf4_weights / a.params > 0.99

def test_lora_count(fast):
    n_mod, n = M.lora_params(M.architecture(), fast.lora_targets, 32)
    assert n_mod == 19 * 12 + 38 * 5
    import re
    assert not re.match(targets_regex(fast.lora_targets), 'proj_out')  # the model's own output layer stays LoRA-free
    n64 = M.lora_params(M.architecture(), fast.lora_targets, 64)[1]
    assert n64 == 2 * n

def test_plan_orderings(fast):
    peak = lambda c, **kw: M.plan_memory(c, device='cuda', device_gb=80, **kw).train_peak
    bf16 = peak(fast)
    assert 24 * M.GB < bf16 < 30 * M.GB                 # published: ~26 GB bf16 LoRA at 512×768
    assert peak(fast, base='nf4') < bf16
    parts = lambda b: M.plan_memory(fast, device='cuda', base=b).parts
    assert parts('fp8')['base weights'] < 0.65 * parts(None)['base weights']
    # fp8_base_ keeps no bf16 weight copies (diffusers' layerwise casting did, and peaked above bf16): ~8 GiB less
    assert bf16 - 9 * M.GB < peak(fast, base='fp8') < bf16 - 7 * M.GB
    assert peak(dataclasses.replace(fast, optimizer='adamw8bit')) < bf16
    assert peak(dataclasses.replace(fast, gradient_checkpointing=False)) > bf16 + 10 * M.GB
    assert peak(dataclasses.replace(fast, resolution=1024, max_bucket_reso=1024)) > bf16
    assert peak(dataclasses.replace(fast, train_batch_size=2)) > bf16
    nf4 = M.plan_memory(dataclasses.replace(fast, optimizer='adamw8bit'), base='nf4', device='cuda', device_gb=80)
    assert 7 < nf4.need_gb < 13                          # published: ~9 GB NF4 + 8-bit Adam + checkpointing
    live = M.plan_memory(fast, device='cuda', encoders='live')
    assert live.train_peak - bf16 > 9 * M.GB             # T5-XXL kept on the device

def test_fit_options_and_report(fast):
    "What fits a 16 GiB card, fastest first; the report for a run that does not fit names the pick and its command."
    assert M.plan_memory(fast, 16, device='cuda').fits is False
    opts = M.fit_options(fast, 16)
    assert opts and all(o.need_gb <= 16 for o in opts)
    assert opts == sorted(opts, key=lambda o: (o.resolution != fast.resolution, o.seconds))
    assert any(o.base == 'nf4' and o.swap == 0 for o in opts)          # NF4 fits 16 GiB whole (published: ~9 GB)
    assert all(o.swap > 0 for o in opts if o.base == 'bf16')           # bf16 weights alone are 22 GiB
    for o in opts[:3]:  # each row's settings, resolved as its command would, plan to the need shown
        c = resolve_config('fast', env={}, run_name='t', **o.overrides(fast))
        assert abs(M.plan_memory(c, 16, device='cuda').need_gb - o.need_gb) < 1e-9
    assert any(o.base == 'fp8' and o.swap == 0 for o in M.fit_options(fast, 24))  # FP8 alone fits a 24 GiB card at 512²
    text = M.memory_report(fast, device_gb=16)
    assert 'DOES NOT FIT' in text and 'fastest that fits: fluxid train --profile fast' in text and 'base weights' in text
    assert 'fits' in M.format_plan(M.plan_memory(fast, 141, device='cuda'))
    assert 'no accelerator' in M.format_plan(M.plan_memory(fast, device='cpu'))
    assert 'needs 2' in M.memory_report(fast) and 'fits a 32 GiB card' in M.memory_report(fast)  # this CPU machine


def test_plan_swap_saves_all_but_two_blocks(fast):
    "Swapping N blocks takes them off the device and adds the two on it at a time: N − 2 blocks saved, never more."
    fp8 = lambda n: M.plan_memory(fast, device='cuda', base='fp8', blocks_to_swap=n)
    bd, bs = M.block_bytes(M.architecture(), 'fp8')
    peaks = [fp8(n).train_peak for n in range(58)]
    assert peaks[1] == peaks[2] == peaks[0] and peaks[3] == peaks[0] - bs  # the last blocks to run are single blocks
    assert all(a >= b for a, b in zip(peaks, peaks[1:]))                # memory never rises with N
    assert peaks[38] == peaks[0] - 36 * bs and peaks[57] == peaks[0] - 38 * bs - 17 * bd
    assert fp8(12).settings['host_bytes'] >= 12 * bs and fp8(0).settings['host_bytes'] == 0
    nf4 = M.plan_memory(fast, device='cuda', base='nf4', blocks_to_swap=20)
    assert nf4.loading_peak == M.plan_memory(fast, device='cuda', base='nf4').parts['base weights']  # quantized on the GPU whole first


def test_plan_fsdp_shards_base_and_lora(fast):
    one, two = M.plan_memory(fast, device='cuda'), M.plan_memory(fast, device='cuda', gpus=2, sharded=True)
    bd, bs = M.block_bytes(M.architecture(), 'plain')
    blocks, root = 19 * bd + 38 * bs, one.parts['base weights'] - (19 * bd + 38 * bs)
    assert abs(two.parts['base weights'] - (blocks / 2 + 1.5 * root)) <= 1    # the root stays gathered besides its shard
    assert two.parts['FSDP gathered blocks'] == int(2.5 * bd)                  # one block whole, the next one's gather + input
    assert two.parts['LoRA weights'] == one.parts['LoRA weights'] // 2 and two.parts['optimizer state'] == one.parts['optimizer state'] // 2
    assert M.plan_memory(fast, device='cuda', gpus=2).parts == one.parts  # DDP: every GPU holds everything


def test_step_estimate_orderings(fast):
    t = lambda **kw: M.step_seconds(M.plan_memory(dataclasses.replace(fast, **kw.pop('cfg', {})), device='cuda', **kw))
    base, _ = t()
    s12, s12_0 = t(blocks_to_swap=12)
    assert s12_0 == base and s12 > base                                   # copies the compute does not hide
    assert t(blocks_to_swap=30)[0] > s12
    slow = lambda **kw: (lambda r: r[0] / r[1])(t(**kw))
    assert slow(blocks_to_swap=30, cfg=dict(train_batch_size=4, gradient_accumulation_steps=1)) < slow(blocks_to_swap=30)  # more compute per copy
    assert slow(blocks_to_swap=30, cfg=dict(resolution=1024, max_bucket_reso=1024)) < slow(blocks_to_swap=30)
    assert M.step_seconds(M.plan_memory(fast, device='cuda', blocks_to_swap=30), pcie_gbps=1e4)[0] == base


def test_plan_command(capsys):
    "`fluxid plan`: rows for the card, the fastest marked, exit 0; 1 when nothing fits; 2 for a model it does not model."
    assert M.plan_main('final', 24) == 0
    out = capsys.readouterr().out
    assert out.startswith('fluxid plan: profile final (768², effective batch 4) on 1 × 24 GiB') and '\n  → ' in out
    assert 'fastest that fits: fluxid train --profile final' in out and 'estimate' in out
    assert M.plan_main('fast', 16, gpus=2) == 0 and 'FSDP' in capsys.readouterr().out
    assert M.plan_main('fast', 4) == 1 and 'nothing fits' in capsys.readouterr().out
    assert M.plan_main('demo', 16) == 2 and 'not modelled' in capsys.readouterr().out


def test_dry_run_shows_swap_verdict_and_warnings(tmp_path, capsys):
    from fluxid_nb.cli import main
    assert main(['dry-run', '--profile', 'fast', '--out-dir', str(tmp_path), '--set', 'blocks_to_swap=12', '--set', 'fp8_base=true']) == 0
    out = capsys.readouterr().out
    assert '12 blocks swapped' in out and 'block swap: 12 blocks in' in out and 'est. ×' in out and 'needs ' in out
    assert main(['dry-run', '--profile', 'fast', '--out-dir', str(tmp_path), '--set', 'blocks_to_swap=12',
                 '--set', 'gradient_checkpointing=false']) == 0
    assert 'warning: blocks_to_swap = 12 needs gradient_checkpointing = true' in capsys.readouterr().out


def test_meta_count_matches_real_cpu(fast):
    args = (256, 256, 32, 1, torch.bfloat16, tuple(fast.lora_targets), 8, 'plain')
    meta, cpu = M._count_saved(*args), M._count_saved(*args, device='cpu')
    for k in cpu: assert abs(meta[k] - cpu[k]) <= 0.01 * cpu[k] + 4096, (k, meta[k], cpu[k])

def test_nf4_quantize_and_train():
    from diffusers import FluxTransformer2DModel
    torch.manual_seed(0)
    m = FluxTransformer2DModel(num_layers=1, num_single_layers=1, attention_head_dim=32, num_attention_heads=4,
                               joint_attention_dim=64, pooled_projection_dim=64, guidance_embeds=True,
                               axes_dims_rope=(8, 12, 12)).to(torch.bfloat16)
    x = dict(hidden_states=torch.randn(1, 16, 64, dtype=torch.bfloat16), encoder_hidden_states=torch.randn(1, 8, 64, dtype=torch.bfloat16),
             pooled_projections=torch.randn(1, 64, dtype=torch.bfloat16), timestep=torch.full((1,), 0.5, dtype=torch.bfloat16),
             guidance=torch.ones(1, dtype=torch.bfloat16), txt_ids=torch.zeros(8, 3), img_ids=torch.zeros(16, 3), return_dict=False)
    with torch.no_grad(): ref = m(**x)[0]
    before = MD.quantized_bytes(m)
    n = MD.quantize_nf4_(m)
    import bitsandbytes as bnb
    assert n > 0 and sum(isinstance(mod, bnb.nn.Linear4bit) for mod in m.modules()) == n
    assert MD.quantized_bytes(m) < 0.45 * before
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

def test_fsdp_planner_within_15pct_measured():
    "FSDP over 2 CPU processes (gloo, fluxid's shard_model): the larger process's peak against one GPU's sharded plan."
    spec = dict(double=1, single=1, width=1024, resolution=256, t5=128, steps=2, world=2, threads=1)
    m = H.measure_peak(spec)
    p = H.predict_spec(spec)
    assert len(m['per_process']) == 2 and 'FSDP gathered blocks' in p.parts
    err = p.train_peak / m['allocated_peak'] - 1
    assert abs(err) < 0.15, (p.train_peak, m)
    whole = H.predict_spec({k: v for k, v in spec.items() if k != 'world'})
    assert m['static'] < 0.75 * whole.parts['base weights']  # each process holds about half the base


def test_planner_within_15pct_measured():
    "A fresh-process CPU measurement (width 1024, 1 double + 1 single block, 256²) against the planner."
    spec = dict(double=1, single=1, width=1024, resolution=256, t5=128, steps=2)
    m = H.measure_peak(spec)
    p = H.predict_spec(spec)
    err = p.train_peak / m['allocated_peak'] - 1
    assert abs(err) < 0.15, (p.train_peak, m)


# --- FP8 base (fp8_base_): float8 storage without bf16 copies kept for backward ---

def _layerwise_and_lean(in_f=256, out_f=384, bias=True):
    import copy
    from diffusers.hooks import apply_layerwise_casting
    torch.manual_seed(0)
    lin = torch.nn.Linear(in_f, out_f, bias=bias).to(torch.bfloat16).requires_grad_(False)
    ref = copy.deepcopy(lin)
    apply_layerwise_casting(ref, torch.float8_e4m3fn, torch.bfloat16)
    return ref, MD.Fp8Linear.from_linear(lin)

@pytest.mark.parametrize('bias', [True, False])
def test_fp8_linear_matches_diffusers_layerwise_casting(bias):
    ref, lean = _layerwise_and_lean(bias=bias)
    assert isinstance(lean, torch.nn.Linear) and (lean.in_features, lean.out_features) == (256, 384)
    assert lean.weight.dtype == torch.float8_e4m3fn and not lean.weight.requires_grad
    assert torch.equal(lean.weight, ref.weight)                     # same plain cast, no scale
    assert set(lean.state_dict()) == ({'weight', 'bias'} if bias else {'weight'})
    x = torch.randn(2, 7, 256, dtype=torch.bfloat16)
    g = torch.randn(2, 7, 384, dtype=torch.bfloat16)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = ref(x1), lean(x2)
    y1.backward(g); y2.backward(g)
    assert y2.dtype == torch.bfloat16 and x2.grad.dtype == torch.bfloat16
    torch.testing.assert_close(y2, y1, atol=0, rtol=0)                # bit for bit here; bf16 tolerance would be 1.6e-2
    torch.testing.assert_close(x2.grad, x1.grad, atol=0, rtol=0)

def test_fp8_linear_saves_no_bf16_copy():
    "What autograd keeps for backward: the float8 weight itself, no bf16 weight-sized tensor."
    _, lean = _layerwise_and_lean(1024, 1024)
    kept = []
    x = torch.randn(4, 1024, dtype=torch.bfloat16, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        lean(x).sum().backward()
    assert [t.dtype for t in kept] == [torch.float8_e4m3fn] and kept[0].data_ptr() == lean.weight.data_ptr()
    with pytest.raises(RuntimeError, match='frozen'):
        lean.weight.requires_grad_(True); lean(x)

def _tiny(fp8: bool, gc: bool = True):
    from fluxid_nb.models import tiny_flux, load_component
    tr = load_component(tiny_flux(), 'transformer', dtype=torch.bfloat16)
    n = MD.fp8_base_(tr) if fp8 else 0
    if gc: tr.enable_gradient_checkpointing()
    return tr, n

def test_fp8_base_tiny_flux_trains_with_lora_and_checkpointing():
    cfg = resolve_config('fast', env={}, run_name='t', network_dim=4, learning_rate=1e-3)
    ref, _ = _tiny(False)
    tr, n = _tiny(True)
    assert n == sum(MD.fp8_eligible(k, v) for k, v in ref.named_modules()) > 0
    assert tr.dtype == torch.bfloat16 and tr.is_gradient_checkpointing
    p_ref, params = add_lora(ref, cfg), add_lora(tr, cfg)
    # LoRA wraps the float8 layer as base_layer; names, state-dict keys and LoRA init are those of the bf16 base
    assert lora_modules(tr) == lora_modules(ref) and list(tr.state_dict()) == list(ref.state_dict())
    assert isinstance(tr.transformer_blocks[0].attn.to_q.base_layer, MD.Fp8Linear)
    assert all(p.dtype == torch.float32 and p.requires_grad for p in params)
    assert all(torch.equal(a, b) for a, b in zip(params, p_ref))
    opt = torch.optim.AdamW(params, lr=1e-2)
    g = torch.Generator().manual_seed(0)
    batch = Batch(torch.randn(1, 16, 8, 8, generator=g), torch.rand(1, 16, 8, 8, generator=g) * 0.1,
                  torch.randn(1, 16, 64, generator=g), torch.randn(1, 64, generator=g), ['x'])
    losses = []
    for step in range(4):
        loss = flow_loss(tr, batch, cfg, torch.Generator().manual_seed(0), torch.device('cpu'), torch.bfloat16)
        loss.backward()
        grads = [p.grad for p in params]
        assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
        assert sum(float(gr.abs().sum()) for gr in grads) > 0
        assert all(p.grad is None for p in tr.parameters() if not p.requires_grad)
        opt.step(); opt.zero_grad(); losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert tr.transformer_blocks[0].attn.to_q.base_layer.weight.dtype == torch.float8_e4m3fn

def test_fp8_base_peak_below_bf16_and_layerwise_casting():
    "Fresh-process CPU measurements (width 1024, 2 double + 2 single blocks, 256²): fp8_base_ peaks lowest."
    peak = {b: H.measure_peak(dict(double=2, single=2, width=1024, resolution=256, t5=128, steps=2, base=b))['allocated_peak']
            for b in ('bf16', 'fp8_layerwise', 'fp8')}
    assert peak['fp8'] < 0.85 * peak['bf16'] and peak['fp8'] < 0.8 * peak['fp8_layerwise'], peak
    with pytest.raises(ValueError, match='layerwise'):
        H.predict_spec(dict(double=1, single=1, resolution=256, base='fp8_layerwise'))

def _model(folder, transformer: dict) -> Path:
    (folder/'transformer').mkdir(parents=True)
    (folder/'transformer'/'config.json').write_text(json.dumps(transformer))
    return folder

def test_planner_reads_the_models_own_config(tmp_path):
    "A model folder that is not FLUX.1-dev-sized gets its own plan, or a plain 'not modelled', never FLUX.1-dev's."
    from fluxid_nb.flux1 import FLUX_DEV
    from fluxid_nb.checks import dry_run_report
    dev = json.loads(json.dumps(FLUX_DEV | dict(_class_name='FluxTransformer2DModel')))  # as a config.json spells it
    full = M.memory_text(resolve_config('final', env={}, run_name='t', model_path=str(_model(tmp_path/'dev', dev))))
    assert full == M.memory_text(resolve_config('final', env={}, run_name='t')) and '19+38 blocks × 3072' in full
    lite = M.memory_text(resolve_config('final', env={}, run_name='t', model_path=str(_model(tmp_path/'lite', dev | dict(num_layers=4, num_single_layers=8, num_attention_heads=12)))))
    assert lite.startswith('memory plan (4+8 blocks × 1536')
    peak = lambda text: float(next(l for l in text.splitlines() if 'training peak' in l).split()[2])
    assert peak(lite) < peak(full) / 4
    cfg = resolve_config('final', env={}, run_name='t', model_path=str(MD.tiny_flux()), dry_run=True)
    out = dry_run_report(cfg)
    assert 'memory plan: not modelled for a FLUX transformer of another layout: attention_head_dim 32' in out
    assert '19+38 blocks' not in out
    sd3 = _model(tmp_path/'sd3', {'_class_name': 'SD3Transformer2DModel', 'num_layers': 24})
    assert M.memory_text(dataclasses.replace(cfg, model_path=str(sd3))).startswith('memory plan: not modelled for a SD3Transformer2DModel')
