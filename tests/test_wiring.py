"""Every profile value reaches the computation it names, through the trainer (the wing half of `fluxid validate`:
the keys it lists as proven by the test suite are proven here, by name)."""
import dataclasses, json, math
import pytest
import torch
from conftest import demo_cfg
from fluxid_nb import caches, flow, flux1, lora
from fluxid_nb import train as T
from fluxid_nb.config import resolve_config
from fluxid_nb.models import tiny_flux

QUIET = dict(log=lambda *a: None)


class Recorder(torch.nn.Module):
    "Stands in for the transformer: records its inputs, predicts zeros (so the loss is the target's energy)."
    def __init__(self): super().__init__(); self.calls = []; self.w = torch.nn.Parameter(torch.zeros(()))
    def forward(self, **kw):
        self.calls.append({k: v.detach().clone() for k, v in kw.items() if torch.is_tensor(v)})
        return (kw['hidden_states'] * 0 + self.w,)


def _batch(b=2, h=8, w=8):
    g = torch.Generator().manual_seed(0)
    return flow.Batch(torch.randn(b, 16, h, w, generator=g), torch.rand(b, 16, h, w, generator=g) * 0.1,
                      torch.randn(b, 4, 64, generator=g), torch.randn(b, 64, generator=g), [f'x{i}' for i in range(b)])


def _cfg(**kw): return dataclasses.replace(resolve_config('demo', env={}, run_name='w'), **kw)


def test_guidance_and_timestep_reach_the_transformer():
    rec = Recorder()
    flow.flow_loss(rec, _batch(), _cfg(guidance_scale=2.5), torch.Generator().manual_seed(1), 'cpu', torch.float32)
    assert rec.calls[-1]['guidance'].tolist() == [2.5, 2.5]
    s = torch.tensor([0.3, 0.6])
    flow.flow_loss(rec, _batch(), _cfg(), torch.Generator().manual_seed(1), 'cpu', torch.float32, sigmas=s)
    assert torch.equal(rec.calls[-1]['timestep'], s)              # s in (0, 1): the transformer multiplies by 1000


def _tails(s): return ((s < 0.1) | (s > 0.9)).float().mean().item()   # share of timesteps near either end


def test_timestep_sampling_changes_the_distribution():
    g = torch.Generator().manual_seed(0)
    draw = {k: flow.sample_sigmas(4000, _cfg(timestep_sampling=k, discrete_flow_shift=3.0), 1024, g)
            for k in ('uniform', 'sigmoid', 'shift', 'flux_shift')}
    med = {k: s.median().item() for k, s in draw.items()}
    assert abs(med['uniform'] - 0.5) < 0.03 and abs(med['sigmoid'] - 0.5) < 0.03
    assert med['shift'] > med['flux_shift'] > 0.6                 # shift 3 > e^0.63 ≈ 1.9: both push toward noise
    # same median, other shape: uniform puts 20 % in the tails, sigmoid (scale 1) about 3 %
    assert abs(_tails(draw['uniform']) - 0.2) < 0.03 and _tails(draw['sigmoid']) < 0.05


def test_sigmoid_scale_changes_the_shape_of_the_timesteps_the_transformer_sees():
    "The scale of z in sigmoid(scale·z): the median stays ½, the tails fill up (3 % at scale 1, about 47 % at 3)."
    seen = {}
    for scale in (1.0, 3.0):
        rec = Recorder()
        flow.flow_loss(rec, _batch(b=4000), _cfg(timestep_sampling='sigmoid', sigmoid_scale=scale),
                       torch.Generator().manual_seed(2), 'cpu', torch.float32)
        seen[scale] = rec.calls[-1]['timestep']
    assert abs(seen[1.0].median() - 0.5) < 0.03 and abs(seen[3.0].median() - 0.5) < 0.03
    assert _tails(seen[1.0]) < 0.05 and 0.4 < _tails(seen[3.0]) < 0.55
    assert seen[3.0].std() > 1.5 * seen[1.0].std()


def test_min_snr_gamma_weights_the_loss_as_defined():
    s = torch.tensor([0.1, 0.8])
    rec = Recorder()
    l0, p0 = flow.flow_loss(rec, _batch(), _cfg(min_snr_gamma=0.0), torch.Generator().manual_seed(3), 'cpu', torch.float32, sigmas=s, return_parts=True)
    l5, p5 = flow.flow_loss(rec, _batch(), _cfg(min_snr_gamma=5.0), torch.Generator().manual_seed(3), 'cpu', torch.float32, sigmas=s, return_parts=True)
    assert torch.equal(p0['mse'], p5['mse'])
    w = torch.tensor([min(1, 5 * 0.1**2 / 0.9**2), 1.0])
    assert torch.allclose(p5['weights'], w) and math.isclose(l5.item(), (p5['mse'] * w).mean().item(), rel_tol=1e-6)
    assert l5 < l0                                                 # low-noise sample down-weighted, high-noise untouched


def test_noise_offset_shifts_the_target_by_a_per_channel_constant():
    s = torch.tensor([0.5, 0.5]); b = _batch()
    parts = {}
    for off in (0.0, 0.1):
        rec = Recorder()
        flow.flow_loss(rec, b, _cfg(noise_offset=off), torch.Generator().manual_seed(4), 'cpu', torch.float32, sigmas=s)
        parts[off] = flux1.unpack(rec.calls[-1]['hidden_states'], 8, 8)  # x_s = 0.5·x0 + 0.5·noise'
    d = (parts[0.1] - parts[0.0]) / 0.5                           # = the offset term, if the definition is applied
    assert d.std(dim=(2, 3)).max() < 1e-5 and d.abs().mean() > 1e-3
    g = torch.Generator().manual_seed(4); torch.randn(b.mean.shape, generator=g); torch.randn(b.mean.shape, generator=g)
    assert torch.allclose(d[:, :, 0, 0], 0.1 * torch.randn((2, 16), generator=g), atol=1e-5)


def test_rank_alpha_dropout_targets_and_precision():
    from diffusers import FluxTransformer2DModel
    tr = FluxTransformer2DModel.from_pretrained(tiny_flux(), subfolder='transformer', dtype=torch.bfloat16)
    cfg = _cfg(network_dim=6, network_alpha=3.0, network_dropout=0.25,
               lora_targets=('transformer_blocks.*.attn.to_q', 'single_transformer_blocks.*.proj_out'))
    params = lora.add_lora(tr, cfg)
    mods = lora.lora_modules(tr)
    assert mods == ['transformer_blocks.0.attn.to_q', 'transformer_blocks.1.attn.to_q',
                    'single_transformer_blocks.0.proj_out', 'single_transformer_blocks.1.proj_out']
    m = tr.get_submodule(mods[0])
    assert m.lora_A['default'].weight.shape[0] == 6 and m.scaling['default'] == 0.5
    assert all(p.dtype == torch.float32 for p in params) and m.base_layer.weight.dtype == torch.bfloat16
    assert len(m.lora_A['default']._forward_hooks) == 1            # kohya-style dropout on the down output
    assert m.lora_dropout['default'].__class__.__name__ == 'Identity'  # peft's input dropout stays off


def _setup(tmp_path, **kw):
    t = T.Trainer(demo_cfg(tmp_path, **kw), **QUIET); t.setup(); return t


def test_lr_schedule_accumulation_clip_batch_and_optimizer(tmp_path, monkeypatch):
    clips, calls = [], []
    real_clip, real_loss = torch.nn.utils.clip_grad_norm_, T.flow_loss
    monkeypatch.setattr(torch.nn.utils, 'clip_grad_norm_', lambda ps, n, **k: clips.append(n) or real_clip(ps, n, **k))
    def counting(model, batch, *a, **k):
        if k.get('sigmas') is None: calls.append(batch.mean.shape[0])
        return real_loss(model, batch, *a, **k)
    monkeypatch.setattr(T, 'flow_loss', counting)
    t = _setup(tmp_path, max_train_steps=4, gradient_accumulation_steps=3, train_batch_size=2, max_grad_norm=0.5,
               learning_rate=2e-4, lr_scheduler='cosine', lr_warmup_steps=1, weight_decay=0.02, checkpoint_every_n_steps=4)
    t.run()
    assert calls == [2] * 12 and clips == [0.5] * 4                 # 3 micro-batches of 2 per step, clipped at 0.5
    rows = [json.loads(l) for l in (t.run_dir/'metrics.jsonl').read_text().splitlines() if '"loss"' in l]
    assert [r['lr'] for r in rows] == [2e-4 * flow.lr_at(i, t.cfg) for i in range(4)]
    g = t.optimizer.param_groups[0]
    assert isinstance(t.optimizer, torch.optim.AdamW) and g['weight_decay'] == 0.02 and g['betas'] == (0.9, 0.999)


def test_seed_changes_init_and_order_deterministically(tmp_path):
    a, b, c = (_setup(tmp_path/n, seed=s, max_train_steps=2) for n, s in (('a', 1), ('b', 1), ('c', 2)))
    assert all(torch.equal(x, y) for x, y in zip(a.params, b.params))
    assert not all(torch.equal(x, y) for x, y in zip(a.params, c.params))
    assert [a.order(k) for k in range(5)] == [b.order(k) for k in range(5)] != [c.order(k) for k in range(5)]


def test_t5_length_holdout_flip_and_buckets(tmp_path):
    t = _setup(tmp_path, t5_max_length=32, holdout_images=3, random_flip=True, max_train_steps=2)
    assert t.caches.load_text(t.examples[0].text_key)['t5'].shape[0] == 32
    assert len(t.eval_examples) == 3 and len(t.examples) == 2 * 15 and sum(e.flip for e in t.examples) == 15
    assert all(t.cfg.min_bucket_reso <= s <= t.cfg.max_bucket_reso and s % 64 == 0 for e in t.examples for s in e.bucket)


def test_gradient_checkpointing_keeps_lora_gradients(tmp_path):
    for on in (True, False):
        t = _setup(tmp_path/str(on), gradient_checkpointing=on, max_train_steps=1)
        assert t.transformer.is_gradient_checkpointing == on
        loss = flow.flow_loss(t.transformer, caches.load_batch(t.caches, t.examples, [0]), t.cfg, torch.Generator().manual_seed(0), t.device, t.dtype)
        loss.backward()
        assert sum(float(p.grad.abs().sum()) for p in t.params if p.grad is not None) > 0


def test_fp8_base_and_adamw8bit_train(tmp_path):
    t = _setup(tmp_path, fp8_base=True, mixed_precision='bf16', optimizer='adamw8bit', max_train_steps=2, checkpoint_every_n_steps=2)
    base = t.transformer.transformer_blocks[0].attn.to_q.base_layer.weight
    assert base.dtype == torch.float8_e4m3fn and type(t.optimizer).__name__ == 'AdamW8bit'
    res = t.run()
    assert all(math.isfinite(l) for l in res.losses)


def test_prior_preservation_adds_weighted_reg_loss(tmp_path, monkeypatch):
    from fluxid_nb.demo import demo_subject
    reg = demo_subject(tmp_path/'reg', layout='flat')
    seen = []
    real = T.flow_loss
    def rec(model, batch, cfg, gen, *a, **k):
        out = real(model, batch, cfg, gen, *a, **k)
        if k.get('sigmas') is None: seen.append(float((out[0] if isinstance(out, tuple) else out).detach()))
        return out
    monkeypatch.setattr(T, 'flow_loss', rec)
    t = _setup(tmp_path, use_reg=True, reg_dir=str(reg), prior_loss_weight=0.5, max_train_steps=1, checkpoint_every_n_steps=1)
    res = t.run()
    assert len(seen) == 2 and math.isclose(res.losses[0], seen[0] + 0.5 * seen[1], rel_tol=1e-5)


def test_text_encoder_training_is_refused_not_ignored(tmp_path):
    from fluxid_nb.config import ConfigError
    with pytest.raises(ConfigError, match='train_text_encoder'):
        _setup(tmp_path, train_text_encoder=True)


def test_nf4_base_trains_and_is_refused_with_fp8(tmp_path):
    from fluxid_nb.config import ConfigError
    t = _setup(tmp_path, quant_base='nf4', mixed_precision='bf16', max_train_steps=2, checkpoint_every_n_steps=2)
    base = t.transformer.transformer_blocks[0].attn.to_q.base_layer
    assert type(base).__name__ == 'Linear4bit' and base.weight.dtype == torch.uint8
    res = t.run()
    assert all(math.isfinite(l) for l in res.losses)
    with pytest.raises(ConfigError, match='keep one'):
        resolve_config('demo', env={'QUANT_BASE': 'nf4', 'FP8_BASE': '1'}, run_name='x')


def test_sample_settings_and_checkpoint_retention(tmp_path, monkeypatch):
    from diffusers import FluxPipeline
    seen = []
    real = FluxPipeline.__call__
    def rec(self, *a, **k):
        seen.append((k['num_inference_steps'], k['guidance_scale'], k['generator'].initial_seed(), k['height']))
        return real(self, *a, **k)
    monkeypatch.setattr(FluxPipeline, '__call__', rec)
    t = _setup(tmp_path, max_train_steps=4, sample_every_n_steps=4, sample_steps=3, sample_guidance=2.0, sample_seed=77,
               checkpoint_every_n_steps=2, keep_last_n_checkpoints=1)
    t.run()
    n = len(t.prompts)
    assert seen == [(3, 2.0, 77 + i, t.cfg.resolution) for i in range(n)] * 2      # step 0 and step 4, fixed seeds
    assert [p.name for p in lora.list_checkpoints(t.run_dir/'checkpoints')] == ['step_000004']


def test_adam_betas_and_epsilon_reach_the_trainers_optimizer(tmp_path):
    t = _setup(tmp_path, adam_beta1=0.8, adam_beta2=0.95, adam_epsilon=1e-6, max_train_steps=1)
    g = t.optimizer.param_groups[0]
    assert isinstance(t.optimizer, torch.optim.AdamW) and g['betas'] == (0.8, 0.95) and g['eps'] == 1e-6
    t._step()  # after one step Adam's moments are (1-β1)·g and (1-β2)·g², so m²/v = (1-β1)²/(1-β2) = 0.8 everywhere
    m = torch.cat([st['exp_avg'].flatten() for st in t.optimizer.state.values()])
    v = torch.cat([st['exp_avg_sq'].flatten() for st in t.optimizer.state.values()])
    live = v > 1e-20                                                # LoRA A gets no gradient while B is still zero
    assert live.sum() > 100 and torch.allclose(m[live] ** 2 / v[live], torch.tensor(0.8), rtol=1e-3)


def _one_per_size(folder):
    "A flat dataset of one demo drawing per size (384×384, 384×512, 384×640, 448×512): few latents to encode."
    import shutil
    from fluxid_nb.data import load_dataset
    folder.mkdir(parents=True)
    seen = set()
    for it in load_dataset('builtin:demo').items:
        if (it.width, it.height) in seen: continue
        seen.add((it.width, it.height))
        shutil.copy(it.image_path, folder/it.image_path.name); (folder/f'{it.name}.txt').write_text(it.caption)
    assert len(seen) == 4
    return str(folder)


def _buckets(t):
    "Buckets of the trainer's examples, and the largest upscale any image needs to fill its bucket."
    size = {it.name: (it.width, it.height) for it in t.items}
    up = max(max(e.bucket[0] / size[e.name][0], e.bucket[1] / size[e.name][1]) for e in t.examples)
    return sorted({e.bucket for e in t.examples}), up


def test_bucket_step_and_max_upscale_change_the_trainers_buckets(tmp_path):
    few = dict(data_dir=_one_per_size(tmp_path/'data'), holdout_images=0, max_train_steps=1)
    base, _ = _buckets(_setup(tmp_path/'64', **few))
    coarse, _ = _buckets(_setup(tmp_path/'128', **few, bucket_step=128))
    assert base == [(192, 320), (256, 256)] and coarse == [(256, 256)]
    wide = dict(few, resolution=512, min_bucket_reso=256, max_bucket_reso=1024)  # buckets above the 384 px drawings
    strict, up1 = _buckets(_setup(tmp_path/'up1', **wide))
    loose, up2 = _buckets(_setup(tmp_path/'up2', **wide, max_upscale=2.0))
    assert strict == [(384, 384), (384, 512), (384, 640)] and up1 <= 1.0
    assert loose == [(384, 640), (448, 576), (512, 512)] and 1.0 < up2 <= 2.0


def test_mixed_precision_sets_the_trainers_dtype(tmp_path):
    for mp, dt in (('no', torch.float32), ('bf16', torch.bfloat16)):
        t = _setup(tmp_path/mp, mixed_precision=mp, max_train_steps=1)
        base = t.transformer.transformer_blocks[0].attn.to_q
        assert t.dtype == dt and base.base_layer.weight.dtype == dt and base.lora_A['default'].weight.dtype == torch.float32
        seen = []
        hook = t.transformer.register_forward_pre_hook(lambda m, a, kw: seen.append(kw['hidden_states'].dtype), with_kwargs=True)
        loss = flow.flow_loss(t.model, caches.load_batch(t.caches, t.examples, [0]), t.cfg, torch.Generator().manual_seed(0), t.device, t.dtype)
        hook.remove()
        assert seen == [dt] and math.isfinite(loss.item())           # the step computes in that dtype


def test_trigger_and_sample_prompts_reach_the_trainer(tmp_path):
    prompts = tmp_path/'mine.txt'
    prompts.write_text('# my prompts\n{trigger} on a boat\nportrait of {trigger}, soft light\n')
    t = _setup(tmp_path/'a', trigger='zqx', sample_prompts=str(prompts), sample_every_n_steps=5, max_train_steps=1)
    assert t.trigger == 'zqx' and t.prompts == ['zqx on a boat', 'portrait of zqx, soft light']
    d = _setup(tmp_path/'b', sample_every_n_steps=5, max_train_steps=1)          # the profile's trigger and prompt file
    assert d.trigger == 'ohwx' and d.prompts == T.read_prompts(d.cfg, 'ohwx') and d.prompts != t.prompts
