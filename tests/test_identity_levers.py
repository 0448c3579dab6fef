"""Identity levers (issue 11) on the demo subject and the tiny model: masked loss, preservation, caption dropout."""
import dataclasses, hashlib, json, shutil
from pathlib import Path
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from conftest import demo_cfg
from fluxid_nb.config import ConfigError, resolve_config
from fluxid_nb.caches import load_batch, load_texts
from fluxid_nb.flow import flow_loss, seeded_generator, caption_dropped, class_caption
from fluxid_nb.lora import lora_off
from fluxid_nb import flux1
from fluxid_nb.train import Trainer

QUIET = dict(log=lambda *a: None)


def _rows(run: Path) -> list:
    return [json.loads(l) for l in (run/'metrics.jsonl').read_text().splitlines() if '"loss"' in l]


def _sha(path: Path) -> str:
    sd, h = load_file(path), hashlib.sha256()
    for k in sorted(sd): h.update(k.encode()); h.update(sd[k].float().numpy().tobytes())
    return h.hexdigest()


def test_preservation_without_a_class_word_is_a_config_error_naming_both_keys():
    with pytest.raises(ConfigError) as e: resolve_config('fast', env={}, preservation='dop')
    assert '`preservation`' in str(e.value) and '`class_word`' in str(e.value)
    with pytest.raises(ConfigError) as e: resolve_config('fast', env={'FLUXID_PRESERVATION': 'dop', 'FLUXID_CLASS_WORD': ' '})
    assert 'FLUXID_PRESERVATION=dop' in str(e.value) and 'class_word' in str(e.value)


def test_background_weight_zero_keeps_the_background_out_of_the_gradient(tmp_path):
    """At σ = 1 the model's input is pure noise, so a latent changed only where the mask is 0 changes only the target
    there: with mask_background_weight = 0 every LoRA gradient stays bit-identical; with 0.5 it does not."""
    cfg = demo_cfg(tmp_path, masked_loss='face', mask_background_weight=0.0)
    t = Trainer(cfg, **QUIET); t.setup()
    t.transformer.eval()
    with torch.no_grad():
        for n, p in t.transformer.named_parameters():
            if 'lora_B' in n: p.normal_(0, 0.02, generator=torch.Generator().manual_seed(1))  # a LoRA that has moved
    i = next(i for i, ex in enumerate(t.examples) if load_file(t.caches.mask_path(ex.mask_key))['subject'])
    b = load_batch(t.caches, t.examples, [i])
    bg = (b.mask == 0).expand_as(b.mean)
    assert bg[:, 0].sum() >= 16, "the demo face mask should leave some latent cells at exactly 0 (far from the face)"
    changed = dataclasses.replace(b, mean=torch.where(bg, b.mean + 3.0, b.mean))

    def grads(batch, c):
        for p in t.params: p.grad = None
        flow_loss(t.transformer, batch, c, seeded_generator(0, 'probe'), 'cpu', torch.float32, sigmas=torch.tensor([1.0])).backward()
        return [p.grad.clone() for p in t.params]
    assert all(torch.equal(x, y) for x, y in zip(grads(b, cfg), grads(changed, cfg)))
    half = dataclasses.replace(cfg, mask_background_weight=0.5)
    assert not all(torch.equal(x, y) for x, y in zip(grads(b, half), grads(changed, half)))


def test_background_weight_one_trains_bit_for_bit_like_no_mask(tmp_path):
    runs = {}
    for name, kw in (('plain', {}), ('masked', dict(masked_loss='face', mask_background_weight=1.0))):
        res = Trainer(demo_cfg(tmp_path, run_name=name, max_train_steps=4, checkpoint_every_n_steps=4, **kw), **QUIET).run()
        runs[name] = ([r['loss'] for r in _rows(res.run_dir)], _sha(res.lora), res.eval_loss_after)
    assert runs['plain'] == runs['masked']


def test_masked_loss_face_on_photos_without_faces_says_so_before_training(tmp_path):
    data = tmp_path/'noface'; data.mkdir()
    for i in range(15):
        Image.new('RGB', (256, 256), (40 + 10 * i, 120, 200 - 8 * i)).save(data/f'p{i:02d}.png')
        (data/f'p{i:02d}.txt').write_text('ohwx, a plain wall')
    cfg = demo_cfg(tmp_path, data_dir=str(data), masked_loss='face', max_train_steps=2)
    t = Trainer(cfg, **QUIET)
    with pytest.raises(ConfigError) as e: t.setup()
    assert 'no face was found in any of the 15 photos' in str(e.value) and 'masked_loss' in str(e.value)
    assert not (cfg.run_dir/'metrics.jsonl').exists()
    from fluxid_nb.analyze import analyze
    assert 'mask-no-face' in {f.code for f in analyze(cfg).errors}


def test_file_masks_in_the_split_layout_missing_ones_named_wrong_sizes_resized(tmp_path):
    from fluxid_nb.data import load_dataset
    src = load_dataset('builtin:demo').root
    data = tmp_path/'subject'; shutil.copytree(src, data)
    items = load_dataset(data).items
    cfg = demo_cfg(tmp_path, data_dir=str(data), masked_loss='file', mask_background_weight=0.1, max_train_steps=2)
    with pytest.raises(ConfigError) as e: Trainer(cfg, **QUIET).setup()
    assert 'masks/subject_00.png' in str(e.value) and f'{len(items)} of {len(items)} photos' in str(e.value)
    (data/'masks').mkdir()
    for k, it in enumerate(items):
        m = Image.new('L', (it.width, it.height), 0)
        m.paste(255, (it.width // 4, 0, 3 * it.width // 4, it.height // 2))
        (m.resize((it.width // 2, it.height // 2)) if k == 0 else m).save(data/'masks'/f'{it.name}.png')
    logs = []
    res = Trainer(cfg, log=logs.append).run()
    text = '\n'.join(map(str, logs))
    assert f'{len(items)} of {len(items)} photos masked' in text and 'resized to fit' in text and 'subject_00.png' in text
    assert res.steps == 2


def test_preservation_is_zero_at_step_0_and_keeps_the_class_closer_to_the_base_model(tmp_path):
    steps = 40
    trainers = {}
    for name, kw in (('without', {}), ('with', dict(preservation='dop', class_word='person', preservation_weight=1.0))):
        t = Trainer(demo_cfg(tmp_path, run_name=name, max_train_steps=steps, checkpoint_every_n_steps=steps, **kw), **QUIET)
        t.run(); trainers[name] = t
    rows = _rows(trainers['with'].run_dir)
    assert rows[0]['preservation_loss'] == 0.0 and all(r['preservation_loss'] > 0 for r in rows[5:])
    assert 'preservation_loss' not in _rows(trainers['without'].run_dir)[0]

    def drift(t) -> float:
        "Mean squared change the LoRA makes to the prediction on the class captions, at fixed noise and timesteps."
        t.transformer.eval()
        tot, n = 0.0, 0
        with torch.no_grad():
            for i, ex in enumerate(t.examples):
                b = load_batch(t.caches, t.examples, [i])
                t5, pooled = load_texts(t.caches, [t.caches.text_key(class_caption(ex.caption, 'ohwx', 'person'))])
                g = seeded_generator(7, 'drift', i)
                x = torch.randn(b.mean.shape, generator=g)
                for s in (0.3, 0.6, 0.9):
                    sig = torch.tensor([s])
                    with_lora = flux1.velocity(t.transformer, x, sig, 1.0, t5, pooled, 'cpu', torch.float32)
                    with lora_off(t.transformer): base = flux1.velocity(t.transformer, x, sig, 1.0, t5, pooled, 'cpu', torch.float32)
                    tot += float(((with_lora - base) ** 2).mean()); n += 1
        return tot / n
    d_with, d_without = drift(trainers['with']), drift(trainers['without'])
    print(f"class-caption drift after {steps} steps: with preservation {d_with:.3e}, without {d_without:.3e} ({d_with / d_without:.2f}×)")
    assert d_with < 0.5 * d_without, (d_with, d_without)


def test_caption_dropout_trains_on_the_trigger_alone_exactly_where_drawn_and_resumes_exactly(tmp_path):
    rate, steps = 0.3, 8
    kw = dict(max_train_steps=steps, checkpoint_every_n_steps=4, holdout_images=0)
    plain = _rows(Trainer(demo_cfg(tmp_path, run_name='plain', **kw), **QUIET).run().run_dir)
    whole = Trainer(demo_cfg(tmp_path, run_name='whole', caption_dropout_rate=rate, **kw), **QUIET).run()
    rows = _rows(whole.run_dir)
    first_drop = next(k for k in range(steps) if caption_dropped(42, k, 0, rate))  # one micro-batch of one sample per step
    first_diff = next(i for i, (a, b) in enumerate(zip(plain, rows)) if a['loss'] != b['loss'])
    assert first_diff == first_drop, (first_diff, first_drop)
    half = Trainer(demo_cfg(tmp_path, run_name='half', caption_dropout_rate=rate, **(kw | dict(max_train_steps=4))), **QUIET).run()
    resumed = Trainer(demo_cfg(tmp_path, run_name='resumed', caption_dropout_rate=rate, resume_from=str(half.run_dir), **kw), **QUIET).run()
    assert [r['loss'] for r in _rows(resumed.run_dir)] == [r['loss'] for r in rows[4:]]
    assert _sha(resumed.lora) == _sha(whole.lora)


@pytest.mark.parametrize('launch', ['ddp', 'fsdp'])
def test_levers_under_two_processes_keep_the_ranks_identical(tmp_path, launch):
    "Masks, preservation (a second and third pass before one backward) and caption dropout under DDP and FSDP (gloo, CPU)."
    import subprocess, sys
    root = Path(__file__).resolve().parents[1]
    how = (['--multi_gpu', '--num_processes', '2', '--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend', 'no']
           if launch == 'ddp' else ['--config_file', str(root/'configs'/'accelerate_fsdp.yaml'), '--num_processes', '2'])
    cmd = [str(Path(sys.executable).parent/'accelerate'), 'launch', *how, '-m', 'fluxid_nb.cli', 'train', '--profile', 'demo',
           '--out-dir', str(tmp_path), '--run-name', launch, '--max-steps', '4', '--set', 'sample_every_n_steps=0',
           '--set', 'checkpoint_every_n_steps=2', '--set', 'preservation=dop', '--set', 'class_word=person',
           '--set', 'masked_loss=face', '--set', 'caption_dropout_rate=0.3']
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=root)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads((tmp_path/launch/'ranks.json').read_text())['identical']
    rows = _rows(tmp_path/launch)
    assert [r['step'] for r in rows] == [1, 2, 3, 4] and rows[0]['preservation_loss'] == 0.0
