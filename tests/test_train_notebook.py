"""The trainer notebook runs headless under papermill with injected parameters and keeps its last live-plot frame."""
import json, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_papermill_runs_train_notebook_with_parameters(tmp_path):
    out = tmp_path/'train_out.ipynb'
    cmd = [sys.executable, '-m', 'papermill', str(ROOT/'nbs/train.ipynb'), str(out), '-p', 'profile', 'demo',
           '-p', 'out_dir', str(tmp_path), '-p', 'run_name', 'pm', '-p', 'max_steps', '20',
           '-y', 'overrides: {sample_every_n_steps: 10, checkpoint_every_n_steps: 10}', '-k', 'python3']
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)  # papermill runs in the caller's cwd
    assert p.returncode == 0, p.stderr[-3000:]
    nb = json.loads(out.read_text())
    assert any('injected-parameters' in c['metadata'].get('tags', []) for c in nb['cells'])
    outputs = [o for c in nb['cells'] if c['cell_type'] == 'code' for o in c.get('outputs', [])]
    assert any('image/png' in o.get('data', {}) for o in outputs)            # the live loss plot's last frame
    text = ''.join(''.join(o.get('text', '')) for o in outputs)
    assert 'run folder:' in text and 'eval loss' in text
    run = tmp_path/'pm'
    assert (run/'pm.safetensors').is_file() and (run/'samples/step_000020/grid.png').is_file()
    assert len([l for l in (run/'metrics.jsonl').read_text().splitlines() if '"loss"' in l]) == 20


def test_oom_gives_the_guide_advice(tmp_path, monkeypatch):
    import torch
    from conftest import demo_cfg
    from fluxid_nb import train as T
    t = T.Trainer(demo_cfg(tmp_path, max_train_steps=5), log=lambda *a: None); t.setup()
    def oom(*a, **k):
        if k.get('sigmas') is None: raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')
        return torch.tensor(1.0)
    monkeypatch.setattr(T, 'flow_loss', oom)
    with pytest.raises(RuntimeError, match='BATCH_SIZE=1, RESOLUTION=512, FP8_BASE=1') as e: t.run()
    assert 'Out of memory at step 0' in str(e.value)
