"Issue 16: what a review of the trainer and a new user's first hour found, each a test that fails before its fix."
import errno, json, os, shutil, subprocess, sys, textwrap
from pathlib import Path
import pytest, torch
from conftest import demo_cfg
from fluxid_nb.config import ConfigError
from fluxid_nb.demo import demo_subject
from fluxid_nb.lora import load_file, read_metadata, list_checkpoints
from fluxid_nb.train import Trainer

QUIET = dict(log=lambda *a: None)


def _subject(tmp_path) -> Path:
    return demo_subject(tmp_path/'subject', layout='flat')


def test_edited_caption_and_one_photo_with_two_captions_train_on_a_warm_cache(tmp_path):
    data = _subject(tmp_path)
    Trainer(demo_cfg(tmp_path, run_name='first', data_dir=str(data), max_train_steps=2), **QUIET).run()
    cap = sorted(data.glob('*.txt'))[0]
    cap.write_text(cap.read_text() + ', smiling')                     # the dashboard's caption editor does this
    img = next(p for p in data.iterdir() if p.stem == cap.stem and p.suffix != '.txt')
    shutil.copy(img, data/f'twin{img.suffix}')                        # the same photo again, with another caption
    (data/'twin.txt').write_text('ohwx, the same photo with another caption')
    res = Trainer(demo_cfg(tmp_path, run_name='second', data_dir=str(data), max_train_steps=20, holdout_images=0), **QUIET).run()
    assert res.steps == 20


def test_fp16_is_refused_wherever_it_comes_from_and_fluxid_precision_wins(tmp_path, monkeypatch):
    monkeypatch.setenv('ACCELERATE_MIXED_PRECISION', 'fp16')           # accelerate launch --mixed_precision fp16
    with pytest.raises(ConfigError, match='accelerate launch'):
        Trainer(demo_cfg(tmp_path, max_train_steps=2), **QUIET).setup()
    with pytest.raises(ConfigError, match='Train in bf16'):
        monkeypatch.delenv('ACCELERATE_MIXED_PRECISION')
        Trainer(demo_cfg(tmp_path, max_train_steps=2, mixed_precision='fp16'), **QUIET).setup()
    monkeypatch.setenv('ACCELERATE_MIXED_PRECISION', 'bf16')           # a launcher's bf16: fluxid's 'no' wins
    t = Trainer(demo_cfg(tmp_path, run_name='mp', max_train_steps=2), **QUIET); t.setup()
    assert t.acc.mixed_precision == 'no' and t.acc.scaler is None and t.dtype == torch.float32


def test_samples_at_every_cadence_not_only_multiples_of_the_sync(tmp_path):
    res = Trainer(demo_cfg(tmp_path, max_train_steps=30, sample_every_n_steps=25, checkpoint_every_n_steps=100), **QUIET).run()
    assert sorted(p.name for p in (res.run_dir/'samples').iterdir()) == ['step_000000', 'step_000025']


def test_targets_kohya_cannot_name_are_said_at_setup_and_the_peft_file_is_written(tmp_path):
    from fluxid_nb.config import DEFAULT_TARGETS
    said = []
    t = Trainer(demo_cfg(tmp_path, max_train_steps=2, lora_targets=list(DEFAULT_TARGETS) + ['context_embedder']), log=said.append)
    t.setup()
    assert any('kohya/ComfyUI copy: not written' in m and 'context_embedder' in m for m in said)
    res = t.run()
    assert res.lora.is_file() and res.kohya is None


def test_final_files_are_bf16_by_default_fp32_on_request_and_sizes_are_printed(tmp_path):
    said = []
    res = Trainer(demo_cfg(tmp_path, max_train_steps=2), log=said.append).run()
    assert {v.dtype for v in load_file(res.lora).values()} == {torch.bfloat16}
    assert {v.dtype for k, v in load_file(res.kohya).items() if not k.endswith('.alpha')} == {torch.bfloat16}
    assert any(f'{res.lora} (' in m and 'MB, bf16)' in m for m in said)
    ck = list_checkpoints(res.run_dir/'checkpoints')[-1]
    assert {v.dtype for v in load_file(ck/'lora.safetensors').values()} == {torch.float32}   # exact resume
    big = Trainer(demo_cfg(tmp_path, run_name='fp32', max_train_steps=2, save_dtype='fp32'), **QUIET).run()
    assert {v.dtype for v in load_file(big.lora).values()} == {torch.float32}
    assert big.lora.stat().st_size > 1.6 * res.lora.stat().st_size


def test_peft_file_gives_the_trained_strength_in_diffusers_and_comfyui_when_alpha_is_not_rank(tmp_path):
    from fluxid_nb.models import load_pipeline
    t = Trainer(demo_cfg(tmp_path, max_train_steps=6, network_dim=4, network_alpha=8.0, save_dtype='fp32',
                         learning_rate=1e-2), **QUIET)
    res = t.run()
    sd = load_file(res.lora)
    assert not any(k.endswith('.alpha') for k in sd)                 # ComfyUI: no .alpha tensor → scale 1
    m = t.transformer.get_submodule('transformer_blocks.0.attn.to_q')
    trained = m.scaling['default'] * m.lora_B['default'].weight @ m.lora_A['default'].weight
    comfy = sd['transformer.transformer_blocks.0.attn.to_q.lora_B.weight'] @ sd['transformer.transformer_blocks.0.attn.to_q.lora_A.weight']
    assert trained.abs().max() > 0 and torch.allclose(comfy, trained.detach(), atol=1e-6)
    pipe = load_pipeline(t.cfg.model_path, dtype=torch.float32)      # diffusers: the same update
    pipe.load_lora_weights(res.lora, adapter_name='id')
    q = pipe.transformer.transformer_blocks[0].attn.to_q
    x = torch.randn(3, q.in_features)
    with torch.no_grad():
        want = q.base_layer(x) + x @ trained.detach().T
        assert torch.allclose(q(x), want, atol=1e-5)


STOP_SCRIPT = textwrap.dedent('''
    import sys
    from fluxid_nb.config import resolve_config
    from fluxid_nb.train import Trainer
    class StopOnRank1(Trainer):
        def _step(self):
            out = super()._step()
            if self.rank == 1 and self.step == 4: self.stop()     # Stop pressed where only rank 1 sees it
            return out
    cfg = resolve_config('demo', env={}, out_dir=sys.argv[1], run_name='mp', max_train_steps=40,
                         sample_every_n_steps=0, checkpoint_every_n_steps=100)
    res = StopOnRank1(cfg, log=print).run()
    print(f'RANK-DONE steps={res.steps} stopped={res.stopped_early}', flush=True)
''')


def test_stop_on_one_rank_stops_every_rank(tmp_path):
    script = tmp_path/'stop.py'; script.write_text(STOP_SCRIPT)
    cmd = [str(Path(sys.executable).parent/'accelerate'), 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
           '--mixed_precision', 'no', '--dynamo_backend', 'no', str(script), str(tmp_path)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=420)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count('RANK-DONE steps=10 stopped=True') == 2, p.stdout[-2000:]
    assert [c.name for c in list_checkpoints(tmp_path/'mp'/'checkpoints')] == ['step_000010']


def test_full_disk_at_a_checkpoint_keeps_the_previous_and_says_how_much_is_needed(tmp_path, monkeypatch):
    import fluxid_nb.lora as L
    from fluxid_nb.lora import CheckpointWriteError
    real = L.torch.save
    def full(obj, path, *a, **k):
        if 'step_000020' in str(path): raise OSError(errno.ENOSPC, 'No space left on device')
        return real(obj, path, *a, **k)
    monkeypatch.setattr(L.torch, 'save', full)
    t = Trainer(demo_cfg(tmp_path, max_train_steps=30, checkpoint_every_n_steps=10), **QUIET)
    with pytest.raises(CheckpointWriteError, match=r'no space left on the device.*needs about \d+ MB.*step_000010 is intact'):
        t.run()
    ck = tmp_path/'run'/'checkpoints'
    assert [c.name for c in list_checkpoints(ck)] == ['step_000010'] and not list(ck.glob('.tmp-*'))
    monkeypatch.setattr(L.torch, 'save', real)
    res = Trainer(demo_cfg(tmp_path, run_name='resumed', max_train_steps=30, checkpoint_every_n_steps=10,
                           resume_from=str(tmp_path/'run')), **QUIET).run()
    assert res.steps == 30
