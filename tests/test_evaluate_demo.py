"""The evaluator end to end on a demo run: real FluxPipeline generations with the LoRA at several strengths.

The demo model is random: it makes no faces. The report must say so and still give the loss and diversity figures.
"""
import json, math, subprocess, sys
from pathlib import Path
import pytest
from fluxid_nb import evaluate as E
from fluxid_nb.config import repo_root

QUICK = dict(strengths='0.8,1.2', max_prompts=6, resolution=64, steps=2)

@pytest.fixture(scope='module')
def demo_eval(demo_run, tmp_path_factory):
    cfg, res = demo_run
    out = tmp_path_factory.mktemp('demo_eval')
    return res, E.evaluate(res.run_dir, out_dir=out, log=lambda *a: None, **QUICK)

def test_demo_run_end_to_end(demo_eval):
    res, ev = demo_eval
    steps = [c['step'] for c in ev.checkpoints]
    assert steps == [20, 40, 60]                                      # every checkpoint; the final LoRA is step 60's weights
    assert ev.settings['generator'].startswith('FluxPipeline')
    assert len(ev.records) == 6 + 3 * 2 * 6                           # control + checkpoints × strengths × prompts
    assert all(r['faces'] == 0 for r in ev.records)                   # the random tiny model makes no faces ...
    assert ev.recommendation.step is None and ev.recommendation.verdict == 'no faces'
    md = (ev.out_dir/'report.md').read_text()
    assert 'makes no faces' in md and 'expected for the built-in demo model' in md   # ... and the report says so
    # ... while the loss-based and diversity figures are there
    assert all(c['heldout_loss'] is not None and math.isfinite(c['heldout_loss']) for c in ev.checkpoints)
    assert all(c['summary']['hash_diversity'] is not None and c['summary']['pixel_diversity'] is not None for c in ev.cells)
    assert ev.reference['faces'] > 0 and ev.reference['hash_diversity'] > 0   # the demo drawings do have faces
    # the LoRA changes the picture, more at higher strength; the base model is the control
    by = {(c['step'], c['strength']): c['summary']['change_vs_control'] for c in ev.cells}
    assert by[(60, 1.2)] > by[(60, 0.8)] > 0 and by[(0, 0.0)] == 0
    assert ev.timings['per_checkpoint_s'] > 0 and 'per checkpoint' in md

def test_heldout_loss_is_the_trainers(demo_eval):
    "The final checkpoint's held-out loss is exactly the eval loss the trainer logged at its last step."
    res, ev = demo_eval
    assert ev.checkpoints[-1]['heldout_loss'] == pytest.approx(res.eval_loss_after, rel=1e-4)

def test_eval_json_has_every_number(demo_eval):
    res, ev = demo_eval
    j = json.loads((ev.out_dir/'eval.json').read_text())
    assert set(j) >= {'settings', 'prompts', 'reference', 'thresholds', 'recommendation', 'checkpoints', 'cells', 'images', 'timings', 'clip'}
    assert len(j['cells']) == 1 + 3 * 2 and j['cells'][0]['verdict'] == 'control'
    assert all(Path(ev.out_dir/i['path']).is_file() for i in j['images'])

def test_evaluate_main_exit_status(demo_run, tmp_path):
    cfg, res = demo_run
    args = dict(checkpoints='last', strengths='1.0', max_prompts=2, resolution=64, steps=1)
    assert E.evaluate_main(str(res.run_dir), out_dir=str(tmp_path/'a'), **args) == 0
    assert E.evaluate_main(str(res.run_dir), out_dir=str(tmp_path/'b'), strict=True, **args) == 1   # nothing passes
    assert E.evaluate_main(str(tmp_path/'nope')) == 2
    assert E.evaluate_main('', lora=str(res.lora), out_dir=str(tmp_path/'c'), **args) == 0          # a bare LoRA file

def test_papermill_from_another_directory(demo_run, tmp_path):
    cfg, res = demo_run
    nb = repo_root()/'nbs'/'evaluate.ipynb'
    r = subprocess.run([sys.executable, '-m', 'papermill', str(nb), str(tmp_path/'out.ipynb'), '-p', 'run_dir', str(res.run_dir),
                        '-p', 'checkpoints', 'last', '-p', 'resolution', '64', '-p', 'steps', '1', '-p', 'max_prompts', '2',
                        '-y', 'strengths: [1.0]', '-p', 'out_dir', str(tmp_path/'eval')],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path/'eval'/'eval.json').is_file() and (tmp_path/'eval'/'report.html').is_file()
