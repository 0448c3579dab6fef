"""FSDP through `accelerate launch --config_file configs/accelerate_fsdp.yaml`, two CPU processes (gloo): the base and the
LoRA sharded, only rank 0 writing, the same training as one process, checkpoints that resume exactly, sharded or not."""
import json, subprocess, sys
from pathlib import Path
import pytest
import torch
from safetensors.torch import load_file
from conftest import demo_cfg
from fluxid_nb.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
STEPS = dict(max_train_steps=4, gradient_accumulation_steps=2, checkpoint_every_n_steps=2)


def _launch(out: Path, run: str, *extra) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).parent/'accelerate'), 'launch', '--config_file', str(ROOT/'configs'/'accelerate_fsdp.yaml'),
           '--num_processes', '2', '-m', 'fluxid_nb.cli', 'train', '--profile', 'demo', '--out-dir', str(out), '--run-name', run,
           '--max-steps', str(STEPS['max_train_steps']), '--set', f"gradient_accumulation_steps={STEPS['gradient_accumulation_steps']}",
           '--set', f"checkpoint_every_n_steps={STEPS['checkpoint_every_n_steps']}", *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    return p


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    "A sharded run (samples on), a sharded resume from its first checkpoint, and the same training in one process."
    out = tmp_path_factory.mktemp('fsdp')
    first = _launch(out, 'fsdp', '--set', 'sample_every_n_steps=2', '--set', 'sample_steps=2')
    resumed = _launch(out, 'resumed', '--resume-from', str(out/'fsdp'/'checkpoints'/'step_000002'), '--set', 'sample_every_n_steps=0')
    # one process, twice the accumulation: micro-batch k = (step·accum + micro)·world + rank picks the same images and noise
    one = Trainer(demo_cfg(out, run_name='one', **STEPS | dict(gradient_accumulation_steps=4)), log=lambda *a: None).run()
    return out, first, resumed, one


def _losses(run: Path) -> list:
    return [json.loads(l)['loss'] for l in (run/'metrics.jsonl').read_text().splitlines() if '"loss"' in l]


def test_sharded_and_only_rank0_writes(runs):
    out, first, _, _ = runs
    run = out/'fsdp'
    ranks = json.loads((run/'ranks.json').read_text())
    assert ranks['world_size'] == 2 and ranks['sharded'] and ranks['identical']
    total = sum(v.numel() for v in load_file(run/'fsdp.safetensors').values())
    assert sum(ranks['lora_params_held']) == total and max(ranks['lora_params_held']) < 0.6 * total  # each rank holds about half
    assert 'fsdp · profile demo · cpu:0 × 2 · FSDP' in first.stdout and first.stdout.count('LoRA weights identical') == 1
    assert len(_losses(run)) == 4                                                    # metrics written once, by rank 0
    assert sorted(p.name for p in (run/'samples').iterdir()) == ['step_000000', 'step_000002', 'step_000004']
    assert (run/'samples'/'step_000002'/'grid.png').is_file()                       # every rank sampled, rank 0 wrote
    assert [p.name for p in sorted((run/'checkpoints').iterdir())] == ['step_000002', 'step_000004']


def test_sharded_training_equals_one_process(runs):
    "Two sharded processes × 2 micro-batches train what one process does with 4: same losses, same LoRA (float tolerance)."
    out, _, _, one = runs
    torch.testing.assert_close(torch.tensor(_losses(out/'fsdp')), torch.tensor(one.losses), rtol=1e-5, atol=1e-6)
    a, b = load_file(out/'fsdp'/'checkpoints'/'step_000004'/'lora.safetensors'), load_file(one.run_dir/'checkpoints'/'step_000004'/'lora.safetensors')
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)
    assert any(not torch.equal(a[k], load_file(out/'fsdp'/'checkpoints'/'step_000002'/'lora.safetensors')[k]) for k in a)  # it trained


def test_sharded_checkpoint_resumes_exactly(runs):
    "Resumed sharded from step 2: the last two steps and the final LoRA are those of the uninterrupted run, to the bit."
    out, _, resumed, _ = runs
    assert 'resume: full state from' in resumed.stdout
    assert _losses(out/'resumed') == _losses(out/'fsdp')[2:]
    a, b = load_file(out/'fsdp'/'fsdp.safetensors'), load_file(out/'resumed'/'resumed.safetensors')
    assert all(torch.equal(a[k], b[k]) for k in a)
    sd = torch.load(out/'fsdp'/'checkpoints'/'step_000004'/'optimizer.pt', weights_only=True)
    n = sum(v.numel() for v in load_file(out/'fsdp'/'checkpoints'/'step_000004'/'lora.safetensors').values())
    assert sum(st['exp_avg'].numel() for st in sd['state'].values()) == n  # the full optimizer state, gathered


def test_sharded_checkpoint_resumes_in_one_process(runs):
    "The checkpoint format is the unsharded one: one process resumes the sharded run's step 2 and lands where it did."
    out, _, _, _ = runs
    one = Trainer(demo_cfg(out, run_name='one_resumed', resume_from=str(out/'fsdp'/'checkpoints'/'step_000002'),
                           **STEPS | dict(gradient_accumulation_steps=4)), log=lambda *a: None).run()
    torch.testing.assert_close(torch.tensor(one.losses), torch.tensor(_losses(out/'fsdp')[2:]), rtol=1e-5, atol=1e-6)
    a, b = load_file(out/'fsdp'/'fsdp.safetensors'), load_file(one.lora)
    assert all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-2, atol=1e-4) for k in a)  # bf16 files
