"""The evaluator's measures on real faces, and its verdicts on faked checkpoints: a perfect copy and a LoRA with no effect.

Real photos ship inside installed packages: scikit-image's astronaut (Eileen Collins) and matplotlib's Grace Hopper.
Variants of Collins form the training set; generations are injected through `evaluate(generate=...)`.
"""
import json, zlib
from pathlib import Path
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from _data_helpers import astronaut, grace_hopper, two_people, fake_run
from fluxid_nb import evaluate as E
from fluxid_nb import faces
from fluxid_nb import identity as F
from fluxid_nb.faces import SAME_PERSON_DISTANCE

COLLINS_BOX, HOPPER_BOX = (179, 83, 266, 170), (161, 137, 376, 352)

def variants(im, box, n=8):
    "Photos of one person that differ in framing, light, colour, angle and sharpness."
    l, t, r, b = box; cx, cy, s = (l + r) / 2, (t + b) / 2, r - l
    crop = lambda f, dx=0: im.crop((int(cx - f * s / 2 + dx), int(cy - f * s / 2), int(cx + f * s / 2 + dx), int(cy + f * s / 2))).resize((256, 256))
    vs = [crop(2.2), ImageOps.mirror(crop(2.6)), ImageEnhance.Brightness(crop(3.0, 10)).enhance(0.6),
          ImageEnhance.Contrast(crop(2.4)).enhance(1.5), crop(2.8).rotate(10, fillcolor=(90, 90, 90)),
          crop(2.0).filter(ImageFilter.GaussianBlur(1.5)), ImageOps.grayscale(crop(3.4)).convert('RGB'), crop(2.5, -8)]
    return vs[:n]

@pytest.fixture(scope='module')
def people():
    return dict(collins=variants(astronaut(), COLLINS_BOX), hopper=variants(grace_hopper(), HOPPER_BOX))

# ---------- (1) the metric on real faces ----------

def test_same_person_scores_clearly_higher_than_other_people(people):
    ref = F.build_reference(people['collins'][:5], [f'c{i}' for i in range(5)])
    assert len(ref.embeddings) == 5
    same = [F.measure_image(im, ref) for im in people['collins'][5:]]
    other = [F.measure_image(im, ref) for im in people['hopper']]
    assert all(r['faces'] == 1 and r['same_person'] for r in same)
    assert not any(r['same_person'] for r in other)
    # a clear margin, in both of the numbers the report shows
    assert min(r['identity_similarity'] for r in same) > max(r['identity_similarity'] for r in other) + 0.03
    assert max(r['identity_distance'] for r in same) < SAME_PERSON_DISTANCE < min(r['identity_distance'] for r in other)
    assert min(r['identity_distance'] for r in other) - max(r['identity_distance'] for r in same) > 0.15
    # the summary of those images: all Collins recognised, no Hopper
    for r, k in [(r, 'angle') for r in same] + [(r, 'other') for r in other]: r.update(kind=k, _hash=F._phash(Image.new('RGB', (8, 8))))
    s = F.summarize(same + other)
    assert (s['face_rate'], s['identity_rate'], s['bleed_rate']) == (1.0, 1.0, 0.0)

def test_a_face_in_a_group_photo_bleeds_when_nobody_asked_for_it(people):
    ref = F.build_reference(people['collins'][:5])
    r = F.measure_image(two_people(), ref, bleed=True)
    assert r['faces'] == 2 and r['same_person']         # any face counts in a prompt without the subject
    assert not F.measure_image(grace_hopper(), ref, bleed=True)['same_person']

@pytest.mark.parametrize('img', [Image.new('RGB', (256, 256), 'grey'), Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)),
                                 Image.new('RGB', (1, 1))])
def test_no_face_is_reported_not_crashed(people, img):
    ref = F.build_reference(people['collins'][:3])
    r = F.measure_image(img, ref)
    assert (r['faces'], r['identity_similarity'], r['identity_distance'], r['same_person'], r['copy']) == (0, None, None, None, False)

def test_training_set_without_faces_is_not_measurable():
    ref = F.build_reference([Image.new('RGB', (64, 64), c) for c in ('red', 'blue')])
    st = F.reference_stats(ref)
    assert st['faces'] == 0 and F.measure_image(Image.new('RGB', (64, 64)), ref)['identity_similarity'] is None
    assert E.verdict(dict(identity_images=3, face_rate=1.0), st)[0] == 'not measurable'

# ---------- (3) faked checkpoints: a perfect copy and a LoRA with no effect ----------

class Fake:
    "Generations by rule: `copy` checkpoints return training images, `none` checkpoints the base model's (Hopper)."
    def __init__(self, people, behaviour: dict):
        self.people, self.behaviour, self.calls = people, behaviour, []
    def __call__(self, checkpoint, strength, prompt, seed):
        self.calls.append((checkpoint.step if checkpoint else None, strength))
        i = zlib.crc32(prompt.encode()) % 8  # not hash(): Python salts it per process
        kind = 'none' if checkpoint is None or strength == 0 else self.behaviour[checkpoint.step]
        return (self.people['collins'] if kind == 'copy' else self.people['hopper'])[i].copy()

def run_fake(tmp, people, behaviour, **kw):
    run = fake_run(tmp, people['collins'], tuple(behaviour))
    gen = Fake(people, behaviour)
    ev = E.evaluate(run, strengths='0.8,1.2', max_prompts=12, generate=gen, log=lambda *a: None, **kw)
    return run, gen, ev

def test_perfect_copy_is_called_sameface(tmp_path, people):
    run, gen, ev = run_fake(tmp_path, people, {100: 'copy'})
    cells = [c for c in ev.cells if c['verdict'] != 'control']
    assert [c['verdict'] for c in cells] == ['sameface', 'sameface']
    assert all(c['summary']['copy_rate'] == 1.0 and c['summary']['identity_rate'] == 1.0 for c in cells)  # the face IS learned...
    r = ev.recommendation
    assert r.step is None and r.verdict == 'sameface' and r.warning.startswith('No checkpoint')
    assert 'earlier checkpoint' in r.advice[-1] and 'USE_REG=1' in r.advice[-1] and 'duplicate' in r.advice[-1]
    assert (None, 0.0) in gen.calls and (100, 0.8) in gen.calls and (100, 1.2) in gen.calls
    # the record: every number and the report, in the run folder
    out = run/'eval'
    j = json.loads((out/'eval.json').read_text())
    assert j['recommendation']['verdict'] == 'sameface' and len(j['images']) == 12 * 3
    assert {'file', 'face', 'identity_similarity', 'identity_distance', 'identity_percentile', 'same_person', 'nearest_train',
            'nearest_hash_bits', 'copy', 'faces'} <= set(j['images'][0])
    assert all((out/i['file']).is_file() and i['face'] == (i['faces'] > 0) for i in j['images'])
    md = (out/'report.md').read_text()
    assert 'sameface' in md and 'No checkpoint × strength passes' in md
    for name in ('report.html', 'identity_vs_step.png', 'grid_step_000100.png', 'grid_checkpoints_s1p2.png'): assert (out/name).is_file(), name
    assert Image.open(out/'grid_step_000100.png').width > 3 * 128   # prompts down, base + 2 strengths across

def test_no_effect_is_called_weak_identity(tmp_path, people):
    run, gen, ev = run_fake(tmp_path, people, {100: 'none'})
    cells = [c for c in ev.cells if c['verdict'] != 'control']
    assert [c['verdict'] for c in cells] == ['weak identity', 'weak identity']
    assert all(c['summary']['change_vs_control'] == 0.0 and c['summary']['identity_rate'] == 0.0 for c in cells)
    assert 'no effect' in cells[0]['reason']
    r = ev.recommendation
    assert r.step is None and r.verdict == 'weak identity'
    assert 'MAX_STEPS' in r.advice[-1] and 'RANK' in r.advice[-1] and 'diverse training images' in r.advice[-1]

def test_weak_then_sameface_points_between_the_checkpoints(tmp_path, people):
    run, gen, ev = run_fake(tmp_path, people, {100: 'none', 200: 'copy'})
    assert [c['verdict'] for c in ev.cells[1:]] == ['weak identity'] * 2 + ['sameface'] * 2
    assert ev.recommendation.verdict == 'sameface' and 'sweet spot' in ev.recommendation.advice[0]
    assert [c['step'] for c in ev.checkpoints] == [100, 200] and ev.checkpoints[0]['train_loss'] is not None
    assert (run/'eval'/'grid_step_000200.png').is_file()

def test_clip_is_skipped_without_a_local_model(tmp_path, people, monkeypatch):
    monkeypatch.setenv('HF_HOME', str(tmp_path/'empty_hf')); monkeypatch.delenv('HF_HUB_CACHE', raising=False)
    monkeypatch.delenv('FLUXID_CLIP', raising=False); monkeypatch.setenv('HOME', str(tmp_path))
    assert faces.find_clip() is None
    run, gen, ev = run_fake(tmp_path, people, {100: 'copy'})
    assert ev.clip.startswith('skipped') and all(c['summary']['clip_score'] is None for c in ev.cells)
    assert 'skipped' in json.loads((run/'eval'/'eval.json').read_text())['clip']

def test_clip_score_with_a_local_clip(tmp_path):
    "The plumbing with a tiny random CLIP saved locally (its scores mean nothing; a real CLIP's do)."
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPImageProcessor, CLIPTokenizer
    from fluxid_nb.models import tiny_flux
    tok = CLIPTokenizer.from_pretrained(tiny_flux()/'tokenizer')
    cfg = CLIPConfig(text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                      max_position_embeddings=77, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
                     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8),
                     projection_dim=16)
    CLIPModel(cfg).save_pretrained(tmp_path/'clip')
    CLIPProcessor(image_processor=CLIPImageProcessor(size={'shortest_edge': 32}, crop_size={'height': 32, 'width': 32}), tokenizer=tok).save_pretrained(tmp_path/'clip')
    assert faces.find_clip(str(tmp_path/'clip')) == tmp_path/'clip'
    score = faces.ClipScorer(tmp_path/'clip')(astronaut(), faces.clip_text('a photo of ohwx', 'ohwx'))
    assert 0.0 <= score <= 100.0
