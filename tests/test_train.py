"""End-to-end trainer checks on the demo profile: outputs, formats, resume, faults, strength."""
import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path
import pytest
import torch
from safetensors.torch import load_file
from conftest import demo_cfg
from fluxid_nb import lora as lora_io
from fluxid_nb.train import Trainer, TrainingDiverged

QUIET = dict(log=lambda *a: None)


def test_outputs_artifacts_and_metadata(demo_run):
    cfg, res = demo_run
    run = res.run_dir
    for f in ['run.safetensors', 'run_kohya.safetensors', 'metrics.jsonl', 'loss.png', 'config.json',
              'logs/run_command.txt', 'logs/run_repro.json', 'logs/run_pip_freeze.txt', 'logs/run_dataset_hash.txt',
              'samples/step_000000/grid.png', 'samples/step_000030/grid.png', 'samples/step_000060/00.png',
              'analysis/analysis.json']:
        assert (run/f).is_file(), f
    assert [p.name for p in lora_io.list_checkpoints(run/'checkpoints')] == ['step_000020', 'step_000040', 'step_000060']
    meta = lora_io.read_metadata(run/'run.safetensors')
    assert meta['modelspec.trigger_phrase'] == 'ohwx' and 'ohwx' in json.loads(meta['ss_tag_frequency'])['1_ohwx']
    assert (meta['ss_network_dim'], meta['ss_network_alpha'], meta['fluxid_steps'], meta['fluxid_profile']) == ('8', '8.0', '60', 'demo')
    assert meta['fluxid_dataset_hash'] == (run/'logs/run_dataset_hash.txt').read_text().strip()
    assert json.loads(meta['lora_adapter_metadata'])['transformer.r'] == 8
    repro = json.loads((run/'logs/run_repro.json').read_text())
    assert {'git_hash', 'git_dirty', 'versions', 'device', 'config', 'seed'} <= set(repro)
    assert repro['config']['sources']['network_dim'] == 'profile flux_demo.toml'
    assert 'torch==' in (run/'logs/run_pip_freeze.txt').read_text()
    rows = [json.loads(l) for l in (run/'metrics.jsonl').read_text().splitlines()]
    steps = [r for r in rows if 'loss' in r]
    assert [r['step'] for r in steps] == list(range(1, 61))
    assert {'loss', 'lr', 'grad_norm', 'sec_per_step', 'mem_mb'} <= set(steps[0])


def test_eval_loss_goes_down(demo_run):
    _, res = demo_run
    assert res.eval_loss_after < 0.9 * res.eval_loss_before, (res.eval_loss_before, res.eval_loss_after)


def test_peft_file_reloads_exactly_with_alpha_not_rank(tmp_path):
    "alpha ≠ rank must survive save → FluxPipeline.load_lora_weights."
    from fluxid_nb.models import load_pipeline
    cfg = demo_cfg(tmp_path, max_train_steps=5, network_dim=4, network_alpha=2.0, checkpoint_every_n_steps=5)
    t = Trainer(cfg, **QUIET); res = t.run()
    x = dict(hidden_states=torch.randn(1, 16, 64), timestep=torch.tensor([0.5]), guidance=torch.tensor([1.0]),
             pooled_projections=torch.randn(1, 64), encoder_hidden_states=torch.randn(1, 8, 64),
             txt_ids=torch.zeros(8, 3), img_ids=torch.zeros(16, 3), return_dict=False)
    t.transformer.eval()
    with torch.no_grad(): want = t.transformer(**x)[0]
    pipe = load_pipeline(cfg.model_path, dtype=torch.float32)
    pipe.load_lora_weights(res.lora)
    with torch.no_grad(): got = pipe.transformer(**x)[0]
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_kohya_copy_equals_peft_through_diffusers_converter(tmp_path):
    "Full-size widths (3072 hidden, 12288 MLP): diffusers' kohya loader hard-codes them for linear1."
    from diffusers import FluxTransformer2DModel, FluxPipeline
    from fluxid_nb.config import resolve_config
    from fluxid_nb.lora import add_lora, lora_modules
    torch.manual_seed(0)
    tr = FluxTransformer2DModel(num_layers=1, num_single_layers=1, attention_head_dim=128, num_attention_heads=24,
                                joint_attention_dim=256, pooled_projection_dim=64, guidance_embeds=True)
    cfg = resolve_config('fast', env={}, run_name='k', rank=4, alpha=8)
    add_lora(tr, cfg)
    with torch.no_grad():
        for n, p in tr.named_parameters():
            if 'lora_B' in n: p.normal_(0, 0.02)  # a LoRA that changes the output
    state = lora_io.peft_state_dict(tr)
    meta = {'modelspec.trigger_phrase': 'ohwx'}
    peft_f = lora_io.save_peft_lora(tmp_path/'a.safetensors', state, 4, 8.0, lora_modules(tr), meta)
    dims = {n.removesuffix('.base_layer'): m.out_features for n, m in tr.named_modules() if isinstance(m, torch.nn.Linear)}
    kohya_f = lora_io.save_kohya_lora(tmp_path/'a_kohya.safetensors', state, 8.0, meta, out_dims=dims)
    kd = load_file(kohya_f)
    assert kd['lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight'].shape == (12, 3072)
    assert kd['lora_unet_single_blocks_0_linear1.lora_up.weight'].shape == (3 * 3072 + 12288, 16)
    assert float(kd['lora_unet_single_blocks_0_linear1.alpha']) == 32.0
    tr.delete_adapters('default')
    x = dict(hidden_states=torch.randn(1, 16, 64), timestep=torch.tensor([0.5]), guidance=torch.tensor([1.0]),
             pooled_projections=torch.randn(1, 64), encoder_hidden_states=torch.randn(1, 8, 256),
             txt_ids=torch.zeros(8, 3), img_ids=torch.zeros(16, 3), return_dict=False)
    with torch.no_grad(): base = tr(**x)[0]
    pipe = FluxPipeline(scheduler=None, vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None, transformer=tr)
    pipe.load_lora_weights(peft_f, adapter_name='peft')
    pipe.load_lora_weights(kohya_f, adapter_name='kohya')
    with torch.no_grad():
        pipe.set_adapters('peft'); a = tr(**x)[0]
        pipe.set_adapters('kohya'); b = tr(**x)[0]
    assert (a - base).abs().max() > 1e-3              # the LoRA does something
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (a - b).abs().max()


def test_resume_reproduces_uninterrupted_losses(tmp_path):
    kw = dict(max_train_steps=20, checkpoint_every_n_steps=10, network_dropout=0.1)
    full = Trainer(demo_cfg(tmp_path/'a', **kw), **QUIET).run()
    Trainer(demo_cfg(tmp_path/'b', **(kw | dict(max_train_steps=10))), **QUIET).run()
    ck = tmp_path/'b'/'run'/'checkpoints'/'step_000010'
    resumed = Trainer(demo_cfg(tmp_path/'c', **kw, resume_from=str(ck)), **QUIET).run()
    assert resumed.losses == full.losses[10:]
    a, c = load_file(full.lora), load_file(resumed.lora)
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_resume_can_raise_max_steps_and_warm_start(tmp_path):
    first = Trainer(demo_cfg(tmp_path, max_train_steps=10, checkpoint_every_n_steps=10), **QUIET).run()
    more = Trainer(demo_cfg(tmp_path, run_name='run2', max_train_steps=15, resume_from=str(first.run_dir)), **QUIET)
    res = more.run()
    assert more.resumed.endswith('step_000010') and res.steps == 15 and len(res.losses) == 5
    warm = Trainer(demo_cfg(tmp_path, run_name='run3', max_train_steps=3, resume_from=str(first.lora)), **QUIET)
    warm.run()
    assert warm.resumed == 'weights-only'


def test_nan_stops_with_guide_advice_and_keeps_checkpoint(tmp_path, monkeypatch):
    import fluxid_nb.train as T
    real = T.flow_loss
    calls = {'n': 0}
    def poisoned(*a, **k):
        out = real(*a, **k)
        if k.get('sigmas') is not None: return out      # the evaluation loss stays clean
        calls['n'] += 1
        if calls['n'] <= 14: return out
        return (out[0] * float('nan'), out[1]) if isinstance(out, tuple) else out * float('nan')
    t = Trainer(demo_cfg(tmp_path, max_train_steps=40, checkpoint_every_n_steps=10), **QUIET)
    t.setup()
    monkeypatch.setattr(T, 'flow_loss', poisoned)
    with pytest.raises(TrainingDiverged, match='lower LEARNING_RATE') as e: t.run()
    assert 'step_000010' in str(e.value)
    ck = lora_io.list_checkpoints(tmp_path/'run'/'checkpoints')
    assert [p.name for p in ck] == ['step_000010']
    assert all(torch.isfinite(v).all() for v in lora_io.load_state(ck[-1]).lora.values())


KILL_SCRIPT = textwrap.dedent('''
    import sys, time, torch
    from fluxid_nb import lora as lora_io
    from fluxid_nb.config import resolve_config
    from fluxid_nb.train import Trainer
    real = lora_io.torch.save
    def slow_save(obj, path, *a, **k):
        real(obj, path, *a, **k)
        if '.tmp-step_000020' in str(path):
            print('WRITING', flush=True); time.sleep(60)
    lora_io.torch.save = slow_save
    cfg = resolve_config('demo', env={}, out_dir=sys.argv[1], run_name='run', max_train_steps=30,
                         checkpoint_every_n_steps=10, sample_every_n_steps=0)
    Trainer(cfg, log=lambda *a: None).run()
''')


def test_sigkill_during_checkpoint_write_leaves_previous_usable(tmp_path):
    p = subprocess.Popen([sys.executable, '-c', KILL_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    t0 = time.time()
    for line in p.stdout:
        if 'WRITING' in line: break
        assert time.time() - t0 < 240
    os.kill(p.pid, signal.SIGKILL); p.wait()
    ckdir = tmp_path/'run'/'checkpoints'
    assert [c.name for c in lora_io.list_checkpoints(ckdir)] == ['step_000010']
    assert list(ckdir.glob('.tmp-step_000020-*'))   # the interrupted write, never taken for a checkpoint
    res = Trainer(demo_cfg(tmp_path, run_name='resumed', max_train_steps=30, checkpoint_every_n_steps=10,
                           resume_from=str(tmp_path/'run')), **QUIET).run()
    assert res.steps == 30 and len(res.losses) == 20


def test_lora_changes_generations_at_strength_1_not_0(demo_run):
    from fluxid_nb.models import load_pipeline
    cfg, res = demo_run
    pipe = load_pipeline(cfg.model_path, dtype=torch.float32)
    gen = lambda: torch.tensor(__import__('numpy').asarray(pipe('a photo of ohwx, portrait', height=128, width=128, num_inference_steps=4,
                                guidance_scale=3.5, generator=torch.Generator().manual_seed(0)).images[0]), dtype=torch.float32)
    base = gen()
    pipe.load_lora_weights(res.lora, adapter_name='id')
    pipe.set_adapters('id', 0.0); zero = gen()
    pipe.set_adapters('id', 1.0); one = gen()
    assert (zero - base).abs().mean() < 0.5            # strength 0 is the base model
    assert (one - base).abs().mean() > 5.0             # strength 1 visibly changes the picture (0–255 scale)


def test_dry_run_executes_nothing(tmp_path, capsys):
    from fluxid_nb.cli import main
    assert main(['train', '--profile', 'demo', '--dry-run', '--out-dir', str(tmp_path), '--run-name', 'dry']) == 0
    out = capsys.readouterr().out
    assert 'DRY RUN' in out and 'commands that would run' in out
    assert not (tmp_path/'dry').exists()


def test_two_processes_end_identical_and_only_rank0_writes(tmp_path):
    "accelerate launch --multi_gpu with 2 CPU processes (gloo): same LoRA on both ranks, one set of files."
    cmd = [str(Path(sys.executable).parent/'accelerate'), 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
           '--mixed_precision', 'no', '--dynamo_backend', 'no', '-m', 'fluxid_nb.cli', 'train', '--profile', 'demo',
           '--out-dir', str(tmp_path), '--run-name', 'mp', '--max-steps', '6', '--set', 'sample_every_n_steps=0',
           '--set', 'checkpoint_every_n_steps=3']
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    run = tmp_path/'mp'
    ranks = json.loads((run/'ranks.json').read_text())
    assert ranks['world_size'] == 2 and ranks['identical'] and len(set(ranks['digests'])) == 1
    steps = [json.loads(l)['step'] for l in (run/'metrics.jsonl').read_text().splitlines() if '"loss"' in l]
    assert steps == list(range(1, 7))                     # written once, by rank 0
    assert p.stdout.count('LoRA weights identical across 2 processes: True') == 1


def test_dataset_errors_stop_training_unless_overridden(tmp_path):
    "Fewer than 15 images is an error-level finding: the trainer refuses and prints it; the override trains anyway."
    import shutil
    from fluxid_nb.demo import demo_subject
    from fluxid_nb.analyze import DatasetRefused
    from fluxid_nb.cli import train_gated
    small = demo_subject(tmp_path/'full', layout='flat')
    for p in sorted(small.glob('subject_1[0-7].*')): p.unlink()   # 10 images left
    with pytest.raises(DatasetRefused, match='15') as e:
        train_gated(demo_cfg(tmp_path, data_dir=str(small), max_train_steps=2), log=lambda *a: None)
    assert 'FLUXID_IGNORE_DATASET_ERRORS=1' in str(e.value)
    res = train_gated(demo_cfg(tmp_path, run_name='forced', data_dir=str(small), max_train_steps=2, ignore_dataset_errors=True,
                               holdout_images=0, checkpoint_every_n_steps=2), log=lambda *a: None)
    assert res.steps == 2
