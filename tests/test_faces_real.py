"The face backend on real photos that ship inside installed packages (scikit-image's astronaut, matplotlib's Grace Hopper)."
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from fluxid_nb.faces import (SAME_PERSON_DISTANCE, detect_faces, face_embedding, identity_distance, identity_similarity,
                             medoid, medoid_index)
from fluxid_nb.analyze import analyze
from _data_helpers import astronaut, grace_hopper, two_people

def identity_set():
    "The astronaut under crops, a mirror, colour and light changes, noise and a rescale: one identity, varied framing."
    a = astronaut()
    r, g, b = a.split()
    noisy = np.clip(np.asarray(a, float) + np.random.default_rng(0).normal(0, 8, (512, 512, 3)), 0, 255).astype(np.uint8)
    small_on_canvas = Image.new('RGB', (900, 1400), (120, 140, 120)); small_on_canvas.paste(a.resize((300, 300)), (300, 150))
    return {'original': a, 'mirror': ImageOps.mirror(a), 'close_crop': a.crop((150, 50, 300, 200)).resize((400, 400)),
            'portrait_crop': a.crop((110, 20, 340, 330)), 'warm': Image.merge('RGB', (r.point(lambda v: min(255, v + 35)), g, b.point(lambda v: max(0, v - 35)))),
            'dim': ImageEnhance.Brightness(a).enhance(0.55), 'bright': ImageEnhance.Brightness(a).enhance(1.35),
            'grey': ImageOps.grayscale(a).convert('RGB'), 'noisy': Image.fromarray(noisy), 'soft': a.filter(ImageFilter.GaussianBlur(1)),
            'big': a.resize((1400, 1400)), 'small_on_canvas': small_on_canvas}

@pytest.fixture(scope='module')
def faces():
    return {k: detect_faces(v) for k, v in identity_set().items()}

def test_every_variant_is_one_face_of_the_same_person(faces):
    ref = faces['original'][0].embedding
    for name, fs in faces.items():
        assert len(fs) == 1, (name, fs)
        d = identity_distance(ref, fs[0].embedding)
        assert d < SAME_PERSON_DISTANCE, (name, d)
    assert identity_similarity(ref, faces['mirror'][0].embedding) > 0.9

def test_a_different_person_is_far(faces):
    gh = face_embedding(grace_hopper())
    assert gh is not None
    ds = [identity_distance(gh, fs[0].embedding) for fs in faces.values()]
    assert min(ds) > SAME_PERSON_DISTANCE, ds
    embs = [fs[0].embedding for fs in faces.values()] + [gh]
    assert medoid_index(embs) != len(embs) - 1          # the medoid is one of the astronauts
    assert identity_distance(medoid(embs), gh) > SAME_PERSON_DISTANCE

def test_framing_follows_face_size(faces):
    assert faces['close_crop'][0].framing == 'close-up'
    assert faces['portrait_crop'][0].framing == 'portrait'
    assert faces['original'][0].framing == 'mid'
    assert faces['small_on_canvas'][0].framing == 'full body'
    assert faces['big'][0].framing == faces['original'][0].framing   # framing is a ratio, not a pixel size
    big, orig = faces['big'][0].box, faces['original'][0].box       # boxes come back in the input's pixels
    assert big[0] == pytest.approx(orig[0] * 1400 / 512, abs=15)

def test_yaw_is_frontal_and_mirrors():
    for img in (astronaut(), grace_hopper()):
        f, m = detect_faces(img)[0], detect_faces(ImageOps.mirror(img))[0]
        assert f.pose == m.pose == 'front'
        assert m.yaw_deg == pytest.approx(-f.yaw_deg, abs=6)

def test_several_faces():
    fs = detect_faces(two_people())
    assert len(fs) == 2
    assert identity_distance(fs[0].embedding, fs[1].embedding) > SAME_PERSON_DISTANCE

@pytest.mark.parametrize('name', ['coins', 'rocket', 'chelsea', 'coffee', 'brick', 'text', 'horse', 'moon'])
def test_no_face_in_non_faces(name):
    from skimage import data
    assert detect_faces(Image.fromarray(getattr(data, name)())) == []

def test_analyzer_flags_the_other_person_and_the_group_photo(tmp_path):
    imgs = identity_set()
    for i, (name, im) in enumerate(list(imgs.items()) * 2):  # 24 images: the set twice, at two JPEG qualities
        if i >= 16: break
        im.save(tmp_path/f'{name}_{i}.jpg', quality=95 - i)
        (tmp_path/f'{name}_{i}.txt').write_text(f'ohwx, astronaut photo {name} variant {i} at quality {95 - i}')
    grace_hopper().save(tmp_path/'zz_other.jpg'); (tmp_path/'zz_other.txt').write_text('ohwx, woman in uniform, portrait')
    two_people().save(tmp_path/'zz_group.jpg'); (tmp_path/'zz_group.txt').write_text('ohwx with a friend, side by side')
    a = analyze(tmp_path, profile='demo')
    by = {f.code: f for f in a.findings}
    assert by['identity-outlier'].files == ['zz_other.jpg'], str(by['identity-outlier'])
    assert 'possibly another person' in by['identity-outlier'].message.lower()
    assert by['faces-several'].files == ['zz_group.jpg']
    row = {r['name']: r for r in a.rows}
    assert 'other person?' in row['zz_other']['flags'] and row['original_0']['identity_distance'] < SAME_PERSON_DISTANCE
    assert by['duplicate'].severity == 'warning' or by.get('near-duplicate')  # the set twice: duplicates found
    assert a.angles['front'] >= 16 and 'angles-not-mixed' in by   # only frontal photos: the guide wants mixed angles

def test_the_cnn_looks_only_at_small_pictures(monkeypatch):
    "What bounds the CNN fallback's cost: at most CNN_CROPS crops at CNN_CROP_SIDE, then the image at CNN_MAX_SIDE."
    from skimage import data
    from fluxid_nb import faces as F
    seen = []
    real = F._cnn()
    monkeypatch.setattr(F, '_cnn', lambda: (lambda a, up: seen.append(a.shape[:2]) or real(a, up)))
    def looks(img):
        seen.clear(); fs = detect_faces(img); return [f.detector for f in fs], list(seen)
    assert looks(astronaut()) == (['hog'], [])                                        # HOG finds her: no CNN at all
    found, shapes = looks(Image.fromarray(data.camera()))                            # small back-lit face: one crop finds it
    assert found == ['cnn'] and shapes == [(F.CNN_CROP_SIDE, F.CNN_CROP_SIDE)]
    found, shapes = looks(Image.fromarray(data.coffee()))                            # no face, no candidate: the whole image, small
    assert found == [] and shapes == [(round(400 * F.CNN_MAX_SIDE / 600), F.CNN_MAX_SIDE)]
    found, shapes = looks(Image.fromarray(data.coins()))                             # textures with weak candidates: the worst case
    assert found == [] and len(shapes) == F.CNN_CROPS + 1 and all(max(s) <= max(F.CNN_CROP_SIDE, F.CNN_MAX_SIDE) for s in shapes)

LFW_BUSH = [0, 36, 73, 90]  # scikit-image's LFW subset ships without names: four photos of George W. Bush, labelled by eye

def _lfw(i):
    from skimage import data
    x = (data.lfw_subset()[i] * 255).astype(np.uint8)
    return ImageOps.expand(Image.fromarray(x).resize((150, 150), Image.Resampling.BICUBIC).convert('RGB'), border=75, fill=(128, 128, 128))

def test_real_photos_of_one_man_calibrate_above_the_floor():
    "Four real photos of one man (different days; 25 px LFW crops): their own spread sets the line, not the floor."
    from fluxid_nb.identity import CALIBRATION_FLOOR, build_reference, measure_image
    ref = build_reference([_lfw(i) for i in LFW_BUSH])
    assert len(ref.embeddings) == 4 and ref.spread.min() > 0.3                         # far wider than edits of one photo
    assert CALIBRATION_FLOOR < ref.threshold < SAME_PERSON_DISTANCE, ref.spread        # the 90th percentile, 0.53 measured
    others = [measure_image(_lfw(i), ref) for i in (1, 2, 4, 5, 6, 7, 8, 10, 11, 12)]  # ten other people of the subset
    assert not any(r['same_person'] for r in others), [round(r['identity_distance'], 3) for r in others]
