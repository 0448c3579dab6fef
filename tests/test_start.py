"Time to the first step: the caches' batched caption encoding gives the bits of one-at-a-time encoding, with a progress bar."
import torch
from safetensors.torch import load_file
from fluxid_nb.config import resolve_config
from fluxid_nb.data import load_dataset
from fluxid_nb.models import tiny_flux, load_pipeline
from fluxid_nb import caches as C, flux1

def test_batched_captions_are_bitwise_the_single_encodes(tmp_path, capsys, monkeypatch):
    cfg = resolve_config('demo', env={}, run_name='t')
    items = load_dataset('builtin:demo').items[:5]
    monkeypatch.setattr(C, 'TEXT_BATCH', 3)                # two batches, the second one short
    said = []
    caches, exs, prompts = C.build_caches(cfg, items, tiny_flux(), 'cpu', torch.float32, extra_prompts=['a photo of ohwx'],
                                          log=said.append, root=tmp_path)
    assert caches.computed == 5 + 6 and said == [f"caches: 11 encoded, 0 reused ({tmp_path})"]
    assert 'caching' in capsys.readouterr().out              # the progress bar
    pipe = load_pipeline(tiny_flux(), dtype=torch.float32, transformer=None, vae=None)
    with torch.no_grad():
        for k, p in prompts.items():
            t5, pooled = flux1.encode_prompt(pipe, p, 'cpu', cfg.t5_max_length)
            got = load_file(caches.txt_path(k))
            assert torch.equal(got['t5'], t5) and torch.equal(got['pooled'], pooled), p
    again, _, _ = C.build_caches(cfg, items, tiny_flux(), 'cpu', torch.float32, extra_prompts=['a photo of ohwx'],
                                 log=said.append, root=tmp_path)
    assert (again.computed, again.reused) == (0, 11) and 'caching' not in capsys.readouterr().out


# --- the dataset gate beside the set-up (cli.train_gated) ---
import json, shutil
import numpy as np
import pytest
from PIL import Image
from conftest import demo_cfg
from fluxid_nb import analyze as A, train as T
from fluxid_nb.cli import train_gated
from fluxid_nb.demo import demo_subject

def _watch(monkeypatch):
    "Record, in order: the background analysis, set-up start (analysis still running?), the gate's verdict, steps."
    events, bgs = [], []
    start_bg, gate, setup, step = A.analyze_in_background, A.dataset_gate, T.Trainer.setup, T.Trainer._step
    monkeypatch.setattr(A, 'analyze_in_background', lambda cfg: bgs.append(start_bg(cfg)) or bgs[-1])
    monkeypatch.setattr(A, 'dataset_gate', lambda *a, **k: (gate(*a, **k), events.append('gate'))[0])
    monkeypatch.setattr(T.Trainer, 'setup', lambda self: (events.append(('setup', bool(bgs) and bgs[0].poll() is None)), setup(self))[1])
    monkeypatch.setattr(T.Trainer, '_step', lambda self: (events.append('step'), step(self))[1])
    return events, bgs

@pytest.mark.parametrize('masked', ['none', 'face'])
def test_first_analysis_runs_beside_the_setup(tmp_path, monkeypatch, masked):
    "New photos are read in a second process during set-up; with face masks the verdict waits for them, else they finish beside the first steps."
    monkeypatch.setenv('FLUXID_CACHE', str(tmp_path/'cache'))  # no photo seen before
    data = tmp_path/'data'; shutil.copytree(demo_subject(), data)
    events, bgs = _watch(monkeypatch)
    said = []
    res = train_gated(demo_cfg(tmp_path, data_dir=str(data), max_train_steps=2, masked_loss=masked), log=said.append)
    assert len(bgs) == 1 and bgs[0].returncode == 0 and events[0] == ('setup', True)  # set-up while the photos are read
    if masked == 'face':
        assert events[1:3] == ['gate', 'step']                  # the faces decide the masks: verdict, then steps
    else:
        assert events[1] == 'step' and 'gate' in events         # steps while the analysis finishes
        assert any(s.startswith('dataset analysis finished beside the run') for s in said)
    assert (res.run_dir/'analysis'/'contact_sheet.jpg').is_file() and len(res.losses) == 2  # the full report, either way
    # the next run: every photo known, the gate runs inline and takes a fraction of a second
    events.clear(); bgs.clear()
    train_gated(demo_cfg(tmp_path, run_name='again', data_dir=str(data), max_train_steps=1, masked_loss=masked), log=said.append)
    assert bgs == [] and events[:3] == ['gate', ('setup', False), 'step']

def test_refusals_that_need_no_photo_come_before_any_model_loads(tmp_path, monkeypatch):
    monkeypatch.setenv('FLUXID_CACHE', str(tmp_path/'cache'))
    data = tmp_path/'data'; shutil.copytree(demo_subject(), data)
    cap = sorted(data.rglob('*.txt'))[0]; cap.write_text('a person without the trigger')
    events, bgs = _watch(monkeypatch)
    with pytest.raises(A.DatasetRefused, match='trigger'):
        train_gated(demo_cfg(tmp_path, data_dir=str(data), max_train_steps=1), log=lambda *a: None)
    assert bgs == [] and events == []                           # refused by the inline gate: no set-up at all
    said = []                                                   # overridden: the errors are said before anything loads
    train_gated(demo_cfg(tmp_path, run_name='forced', data_dir=str(data), max_train_steps=1, ignore_dataset_errors=True), log=said.append)
    assert bgs == [] and events[:2] == ['gate', ('setup', False)]
    assert any(m.startswith('dataset errors overridden') for m in said)

def test_a_refusal_found_in_the_photos_explains_a_failed_setup(tmp_path, monkeypatch):
    "masked_loss = face on photos without a face: the set-up fails (no mask), the gate's refusal is what the user sees."
    monkeypatch.setenv('FLUXID_CACHE', str(tmp_path/'cache'))
    data = tmp_path/'data'; data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(15):
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(data/f'p{i:02d}.png')
        (data/f'p{i:02d}.txt').write_text(f'ohwx, a pattern of {i} dots')
    events, bgs = _watch(monkeypatch)
    with pytest.raises(A.DatasetRefused, match='no face was found in any photo'):
        train_gated(demo_cfg(tmp_path, data_dir=str(data), max_train_steps=1, masked_loss='face'), log=lambda *a: None)
    assert len(bgs) == 1 and events[0] == ('setup', True) and 'step' not in events


def test_the_start_held_out_loss_and_samples_come_beside_the_first_steps_unchanged(tmp_path):
    "A new LoRA is the base model: its step-0 held-out loss and samples are taken at the first sync point, LoRA off, bit for bit."
    import shutil as sh
    tr = T.Trainer(demo_cfg(tmp_path, max_train_steps=3, sample_every_n_steps=2), log=lambda *a: None)
    tr.setup()
    eager = tr.eval_loss()                                     # what the start measured before this change
    shots = {p.name: p.read_bytes() for p in tr.sample(0)}
    sh.rmtree(tr.run_dir/'samples')
    order, step, ev = [], tr._step, tr.eval_loss
    tr._step = lambda: (order.append('step'), step())[1]
    tr.eval_loss = lambda: (order.append('eval'), ev())[1]
    res = tr.run()
    assert order[0] == 'step' and res.eval_loss_before == eager
    assert {n: (tr.run_dir/'samples'/'step_000000'/n).read_bytes() for n in shots} == shots
    rows = [json.loads(l) for l in (tr.run_dir/'metrics.jsonl').read_text().splitlines()]
    assert dict(step=0, eval_loss=eager) in rows


# --- cache_encoding: what a step first reads is encoded then (memory.encode_as_needed, caches.Pending) ---
import hashlib

def _run(tmp_path, monkeypatch, tag, fresh=True, **kw):
    "A run with its own run folder, in one cache: the same tiny model (its CLIP vocabulary differs between builds), its caches emptied when `fresh`."
    monkeypatch.setenv('FLUXID_CACHE', str(tmp_path/'cache'))
    if fresh:
        for d in ('latents', 'text'): shutil.rmtree(tmp_path/'cache'/d, ignore_errors=True)
    said = []
    tr = T.Trainer(demo_cfg(tmp_path/tag, **kw), log=said.append)
    return tr, tr.run(), said

def test_as_needed_encoding_trains_bit_for_bit_like_encoding_up_front(tmp_path, monkeypatch):
    "Photos, captions, sample prompts, class captions and the dropout trigger encoded when first read: the same run, bit for bit."
    kw = dict(max_train_steps=10, gradient_accumulation_steps=4, holdout_images=2, random_flip=True, sample_every_n_steps=6, network_dropout=0.1,
              preservation='dop', class_word='person', caption_dropout_rate=0.3)
    up, r_up, said_up = _run(tmp_path, monkeypatch, 'up', cache_encoding='upfront', **kw)
    lazy, r_lazy, said_lazy = _run(tmp_path, monkeypatch, 'lazy', cache_encoding='auto', **kw)  # auto: the CPU has room
    assert up.caches.pending is None and not any('first reads' in l for l in said_up)
    assert any('left to encode when a step first reads them' in l and "cache_encoding = 'auto'" in l for l in said_lazy), said_lazy
    assert 10 * lazy.cfg.gradient_accumulation_steps > lazy.order.per_epoch     # the run crosses into its second epoch,
    assert not lazy.caches.pending and (lazy.caches.pending.vae, lazy.caches.pending.pipe) == (None, None)  # where all is encoded, encoders freed
    assert lazy.caches.pending.encoded == len(list(lazy.caches.lat_dir.iterdir())) + len(list(lazy.caches.txt_dir.iterdir()))
    assert (r_lazy.losses, r_lazy.eval_loss_before, r_lazy.eval_loss_after) == (r_up.losses, r_up.eval_loss_before, r_up.eval_loss_after)
    a, b = load_file(r_up.lora), load_file(r_lazy.lora)          # the tensors (the file's metadata has a date)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()
    for step in ('step_000000', 'step_000006'):
        a, b = sorted((up.run_dir/'samples'/step).glob('*.png')), sorted((lazy.run_dir/'samples'/step).glob('*.png'))
        assert a and [digest(p) for p in a] == [digest(p) for p in b]

def test_a_run_shorter_than_an_epoch_frees_the_encoders_and_leaves_the_rest(tmp_path, monkeypatch):
    tr, res, _ = _run(tmp_path, monkeypatch, 'short', max_train_steps=1, cache_encoding='as_needed')
    p = tr.caches.pending
    assert (p.vae, p.pipe, p.lat, p.txt) == (None, None, {}, {}) and res.steps == 1
    n_lat, n_txt = (len(list(d.iterdir())) for d in (tr.caches.lat_dir, tr.caches.txt_dir))
    assert 0 < n_lat < len(tr.examples)                        # the first step's photo and the held-out ones, not all
    tr2, _, _ = _run(tmp_path, monkeypatch, 'next', fresh=False, max_train_steps=1, cache_encoding='upfront')
    assert tr2.caches.reused == n_lat + n_txt and tr2.caches.computed > 0   # the next run encodes only what was left
