"""Every verdict, 'pass' included, reached end to end through `evaluate(generate=...)` with a deterministic fake generator.

Real photos ship inside installed packages: scikit-image's astronaut (Eileen Collins) is the subject, matplotlib's
Grace Hopper is somebody else. The training set is eight edits of the Collins photo; the "fresh" pictures are other
framings of her (sheared, re-cropped, noisy, grey) that are neither the same picture (pHash > 10 bits) nor the same face
crop (face distance ≥ 0.2) as any training image: what a LoRA that learned her face should make.
"""
import json, os, subprocess, sys, zlib
from pathlib import Path
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from _data_helpers import astronaut, grace_hopper, fake_run
from fluxid_nb import evaluate as E
from fluxid_nb import identity as F

COLLINS_BOX, HOPPER_BOX = (179, 83, 266, 170), (161, 137, 376, 352)

def _crop(im, box, f, dx=0, dy=0):
    l, t, r, b = box; cx, cy, s = (l + r) / 2 + dx, (t + b) / 2 + dy, r - l
    return im.crop((int(cx - f * s / 2), int(cy - f * s / 2), int(cx + f * s / 2), int(cy + f * s / 2))).resize((256, 256))

def _noisy(im, sd, seed=0):
    return Image.fromarray(np.clip(np.asarray(im, float) + np.random.default_rng(seed).normal(0, sd, (256, 256, 3)), 0, 255).astype(np.uint8))

def _shear(im, k): return im.transform(im.size, Image.Transform.AFFINE, (1, k, -k * 128, 0, 1, 0), fillcolor=(200, 180, 160))

@pytest.fixture(scope='module')
def pics():
    from test_evaluate import variants
    a, h = astronaut(), grace_hopper()
    fresh = [_shear(_crop(a, COLLINS_BOX, 2.6), 0.25), _shear(_crop(a, COLLINS_BOX, 4.5, -20), -0.2),
             _crop(a, COLLINS_BOX, 5.5, 0, 40).filter(ImageFilter.GaussianBlur(1)), ImageOps.mirror(_shear(_crop(a, COLLINS_BOX, 3.5, 15), 0.3)),
             ImageEnhance.Contrast(_shear(_crop(a, COLLINS_BOX, 5.5, -25, -10), 0.2)).enhance(0.6)]
    return dict(train=variants(a, COLLINS_BOX), fresh=fresh, hopper=variants(h, HOPPER_BOX),
                blank=[Image.new('RGB', (256, 256), (40 * i, 90, 200 - 20 * i)) for i in range(4)])

def pick(prompt: str, seed: int, n: int) -> int:
    "Which picture a prompt and seed get: crc32, the same in every process (Python's hash() is salted per process)."
    return zlib.crc32(f'{prompt}|{seed}'.encode()) % n

class Scripted:
    "A fake generator: plan[step] = (source for prompts with the trigger, source for prompts without); step 0 = base model."
    def __init__(self, pics, plan): self.pics, self.plan = pics, {0: ('hopper', 'hopper')} | plan
    def __call__(self, checkpoint, strength, prompt, seed):
        who = self.plan[checkpoint.step if checkpoint and strength else 0][0 if 'ohwx' in prompt else 1]
        xs = self.pics[who]
        return xs[pick(prompt, seed, len(xs))].copy()

def judge(tmp, pics, plan, train='train', strengths='1.0', **kw):
    run = fake_run(tmp, pics[train], tuple(plan))
    return E.evaluate(run, strengths=strengths, max_prompts=12, seeds='1234', generate=Scripted(pics, plan), log=lambda *a: None, **kw)

def test_the_pick_is_the_same_in_another_process():
    code = "import zlib; print([zlib.crc32(f'a photo of ohwx|{s}'.encode()) % 8 for s in range(5)])"
    outs = {subprocess.run([sys.executable, '-c', code], env=os.environ | {'PYTHONHASHSEED': str(h)}, capture_output=True, text=True).stdout
            for h in (1, 2)}
    assert outs == {str([pick('a photo of ohwx', s, 8) for s in range(5)]) + '\n'}

def test_fresh_pictures_are_the_subject_and_not_copies(pics):
    ref = F.build_reference(pics['train'])
    assert ref.threshold == F.CALIBRATION_FLOOR and len(ref.spread) == 8 and ref.spread.max() < 0.3  # edits of one photo: tight
    recs = [F.measure_image(im, ref) for im in pics['fresh']]
    assert all(r['same_person'] and not r['copy'] for r in recs), [(r['identity_distance'], r['nearest_hash_bits']) for r in recs]
    assert all(r['identity_percentile'] is not None and 0 <= r['identity_percentile'] <= 100 for r in recs)
    assert not any(F.measure_image(im, ref)['same_person'] for im in pics['hopper'])

def test_pass_with_intervals_in_the_table_and_the_json(tmp_path, pics):
    ev = judge(tmp_path, pics, {100: ('fresh', 'hopper')})
    c = ev.cells[1]
    assert c['verdict'] == 'pass', c['reason']
    s = c['summary']
    assert s['identity_rate'] == 1.0 and s['copy_rate'] == 0.0 and s['bleed_rate'] == 0.0
    lo, hi = s['identity_rate_ci']
    assert 0.6 < lo < 1.0 == hi                                       # 8 of 8: the interval still reaches down to ~0.68
    r = ev.recommendation
    assert (r.step, r.strength, r.verdict, r.warning) == (100, 1.0, 'pass', '') and '95 % interval' in r.reason
    j = json.loads((ev.out_dir/'eval.json').read_text())
    assert j['cells'][1]['summary']['identity_rate_ci'] == pytest.approx([lo, hi], abs=1e-4)
    assert j['reference']['same_person_distance'] == F.CALIBRATION_FLOOR and len(j['reference']['own_spread']) == 8
    assert all('identity_percentile' in im for im in j['images'])
    md = (ev.out_dir/'report.md').read_text()
    assert f"100% ({lo:.0%}–100%)" in md and 'Recommendation: step' in md and 'calibrated' in md

def test_overlapping_passes_prefer_the_earlier_checkpoint(tmp_path, pics):
    ev = judge(tmp_path, pics, {100: ('fresh', 'hopper'), 200: ('fresh', 'hopper')}, strengths='0.8,1.0')
    assert [c['verdict'] for c in ev.cells[1:]] == ['pass'] * 4
    r = ev.recommendation
    assert (r.step, r.strength) == (100, 1.0) and 'cannot be told apart' in r.reason

@pytest.mark.parametrize('plan,train,expected', [
    ({100: ('hopper', 'hopper')}, 'train', 'weak identity'),   # the base model's pictures: no effect
    ({100: ('train', 'hopper')}, 'train', 'sameface'),         # the training photos themselves
    ({100: ('fresh', 'fresh')}, 'train', 'bleeding'),          # the subject where nobody asked for her
    ({100: ('blank', 'blank')}, 'train', 'no faces'),
    ({100: ('fresh', 'hopper')}, 'blank', 'not measurable'),   # no face in the training images
])
def test_each_verdict_is_reached(tmp_path, pics, plan, train, expected):
    ev = judge(tmp_path, pics, plan, train=train)
    assert ev.cells[1]['verdict'] == expected, ev.cells[1]['reason']
    assert ev.recommendation.step is None and ev.recommendation.verdict == expected
