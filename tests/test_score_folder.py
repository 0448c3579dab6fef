"""Scoring a folder of images made elsewhere (`fluxid evaluate --images DIR --reference DATA_DIR`), and the ONNX embedder.

Real photos ship inside installed packages: scikit-image's astronaut (Eileen Collins) is the subject, matplotlib's Grace
Hopper somebody else. The "other tool" writes its prompts the ways real tools do: sidecar .txt files and A1111/Forge PNG
text. The ONNX embedder is exercised with a small random-weight ArcFace-shaped model built here with `onnx`'s helper
API: its embeddings mean nothing, the code path (alignment, batching, cosine metric, calibration, the record) is real.
"""
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
from PIL import Image, ImageOps, PngImagePlugin
from _data_helpers import astronaut, grace_hopper
from test_evaluate import variants
from test_verdict import COLLINS_BOX, HOPPER_BOX, _crop, _shear
from fluxid_nb import evaluate as E
from fluxid_nb import identity as I

def _a1111(im, path, prompt):
    info = PngImagePlugin.PngInfo(); info.add_text('parameters', f"{prompt}\nNegative prompt: blurry\nSteps: 20, Sampler: Euler, Seed: 1")
    im.save(path, pnginfo=info)

@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    "A dataset of 8 Collins photos, and a folder of 'generations' in two subfolders, as another tool would leave them."
    root = tmp_path_factory.mktemp('score')
    data, gen = root/'data', root/'comfy_out'
    data.mkdir(); (gen/'lora_a').mkdir(parents=True); (gen/'lora_b').mkdir()
    a, h = astronaut(), grace_hopper()
    for i, im in enumerate(variants(a, COLLINS_BOX)): im.save(data/f'c{i}.png'); (data/f'c{i}.txt').write_text(f'ohwx, photo {i}')
    fresh = [_shear(_crop(a, COLLINS_BOX, 2.6), 0.25), _shear(_crop(a, COLLINS_BOX, 4.5, -20), -0.2), _crop(a, COLLINS_BOX, 5.5, 0, 40),
             ImageOps.mirror(_shear(_crop(a, COLLINS_BOX, 3.5, 15), 0.3)), _shear(_crop(a, COLLINS_BOX, 5.5, -25, -10), 0.2)]
    for i, im in enumerate(fresh): im.save(gen/'lora_a'/f'{i:05d}_.png'); (gen/'lora_a'/f'{i:05d}_.txt').write_text(f'photo of ohwx, take {i}')
    for i, im in enumerate(variants(h, HOPPER_BOX)[:3]): _a1111(im, gen/'lora_a'/f'other_{i}.png', 'portrait of an old woman in uniform')
    for i, im in enumerate(variants(h, HOPPER_BOX)[3:7]): _a1111(im, gen/'lora_b'/f'{i}.png', f'ohwx in a library, shot {i}')
    return data, gen

@pytest.fixture(scope='module')
def scored(folders, tmp_path_factory):
    data, gen = folders
    out = tmp_path_factory.mktemp('scored')
    assert E.score_folder_main(str(gen), str(data), trigger='ohwx', out=str(out)) == 0
    return out, json.loads((out/'eval.json').read_text())

def test_every_image_is_recorded_with_its_prompt_and_kind(scored):
    out, j = scored
    ims = {i['file']: i for i in j['images']}
    assert len(ims) == 12 and all({'file', 'face', 'identity_distance', 'identity_percentile', 'same_person', 'copy'} <= set(i) for i in ims.values())
    assert ims['lora_a/00000_.png']['prompt'] == 'photo of ohwx, take 0' and ims['lora_a/00000_.png']['kind'] == 'prompt'   # sidecar .txt
    assert ims['lora_a/other_0.png']['prompt'] == 'portrait of an old woman in uniform'                                      # A1111 PNG text
    assert ims['lora_a/other_0.png']['kind'] == 'notrigger' and ims['lora_b/0.png']['kind'] == 'prompt'
    assert all(i['face'] and i['same_person'] for f, i in ims.items() if f.startswith('lora_a/0'))                          # Collins, fresh
    assert not any(i['same_person'] for f, i in ims.items() if 'other' in f or f.startswith('lora_b'))                     # Hopper never
    assert all(0 <= i['identity_percentile'] <= 100 for i in ims.values())

def test_each_subfolder_gets_its_verdict(scored):
    out, j = scored
    cells = {c['label']: c for c in j['cells']}
    assert list(cells) == ['all images', 'lora_a', 'lora_b']
    assert cells['lora_a']['verdict'] == 'pass', cells['lora_a']['reason']
    assert cells['lora_a']['summary']['bleed_rate'] == 0.0 and cells['lora_a']['summary']['bleed_images'] == 3
    assert cells['lora_b']['verdict'] == 'weak identity' and cells['lora_b']['summary']['identity_rate'] == 0.0
    assert j['settings']['mode'] == 'folder' and j['thresholds']['embedder'] == 'dlib' and j['reference']['faces'] == 8

def test_the_report_says_what_could_not_be_measured(scored):
    out, j = scored
    md = (out/'report.md').read_text()
    assert md.startswith('# Scored folder: comfy_out') and 'No base-model images' in md and 'lora_b' in md
    assert '| lora_a/00000_.png | prompt | 1 |' in md and '![contact sheet](contact_sheet.png)' in md
    sheet = Image.open(out/'contact_sheet.png')
    assert sheet.width == 8 * 128 and sheet.height > 128                                   # 12 images: two rows of eight
    assert (out/'report.html').read_text().count('<tr>') >= 12

def test_without_prompts_everything_is_an_identity_image(folders, tmp_path):
    data, gen = folders
    plain = tmp_path/'plain'; plain.mkdir()
    for p in sorted((gen/'lora_a').glob('0*.png'))[:3]: Image.open(p).convert('RGB').save(plain/f'{p.stem}.jpg')
    ev = E.score_folder(plain, data, trigger='ohwx', log=lambda *a: None)
    assert [r['kind'] for r in ev.records] == ['unknown'] * 3 and ev.cells[0]['summary']['identity_images'] == 3
    assert any('None of the 3 images carries its prompt' in n for n in ev.notes)
    assert ev.out_dir == tmp_path/'plain_fluxid_eval'                                      # beside the folder, not inside it

def test_exit_status(folders, tmp_path):
    data, gen = folders
    assert E.score_folder_main(str(tmp_path/'nope'), str(data)) == 2
    assert E.score_folder_main(str(gen), str(tmp_path/'no_data')) == 2
    assert E.score_folder_main(str(gen/'lora_b'), str(data), 'ohwx', str(tmp_path/'o'), strict=True) == 1   # weak identity

# ---------- the ONNX embedder ----------

def tiny_arcface(path: Path, batch=None, seed=0) -> Path:
    "An ArcFace-shaped ONNX model with random weights: (N, 3, 112, 112) → (N, 512), conv + relu + projection."
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)
    w1, w2 = rng.normal(0, 0.1, (8, 3, 8, 8)).astype(np.float32), rng.normal(0, 0.05, (8 * 14 * 14, 512)).astype(np.float32)
    nodes = [helper.make_node('Conv', ['input.1', 'w1'], ['c'], kernel_shape=[8, 8], strides=[8, 8]), helper.make_node('Relu', ['c'], ['r']),
             helper.make_node('Flatten', ['r'], ['f'], axis=1), helper.make_node('MatMul', ['f', 'w2'], ['683'])]
    n = batch or 'N'
    g = helper.make_graph(nodes, 'tiny_arcface', [helper.make_tensor_value_info('input.1', TensorProto.FLOAT, [n, 3, 112, 112])],
                          [helper.make_tensor_value_info('683', TensorProto.FLOAT, [n, 512])],
                          initializer=[numpy_helper.from_array(w1, 'w1'), numpy_helper.from_array(w2, 'w2')])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 13)]); m.ir_version = 8
    onnx.checker.check_model(m); onnx.save(m, str(path))
    return path

@pytest.mark.parametrize('batch', [None, 1])   # a dynamic batch, and a model fixed to one face at a time
def test_an_onnx_face_model_is_used_and_calibrated(tmp_path, monkeypatch, batch):
    model = tiny_arcface(tmp_path/'w600k_test.onnx', batch)
    monkeypatch.setenv('FLUXID_FACE_MODEL', str(model))
    emb = I.face_embedder()
    assert (emb.name, emb.metric, emb.same_person, emb.floor, emb.copy_distance) == ('w600k_test.onnx', 'cosine', I.ARCFACE_SAME_PERSON, I.ARCFACE_FLOOR, I.ARCFACE_COPY)
    train = variants(astronaut(), COLLINS_BOX)
    ref = I.build_reference(train)
    assert ref.embedder == emb and ref.embeddings.shape == (8, 512)
    assert np.allclose(np.linalg.norm(ref.embeddings, axis=1), 1, atol=1e-5)         # L2-normalised
    assert len(ref.spread) == 8 and I.ARCFACE_FLOOR <= ref.threshold <= I.ARCFACE_SAME_PERSON
    same = I.measure_image(train[3], ref)                                               # a training image itself
    assert same['nearest_train_distance'] < 1e-5 and same['copy'] and len(same['embedding']) == 512
    other = I.measure_image(ImageOps.mirror(grace_hopper()), ref)
    assert other['identity_distance'] > 1e-3 and other['identity_distance'] == pytest.approx(1 - other['identity_similarity'], abs=1e-6)
    faces = I.detect_faces(grace_hopper(), embed=False)
    assert np.allclose(I.face_embedder().embed(grace_hopper(), faces * 3)[2], I.face_embedder().embed(grace_hopper(), faces)[0], atol=1e-5)

def test_the_onnx_embedder_reaches_the_record(folders, tmp_path, monkeypatch):
    data, gen = folders
    monkeypatch.setenv('FLUXID_FACE_MODEL', str(tiny_arcface(tmp_path/'m.onnx')))
    assert E.score_folder_main(str(gen/'lora_b'), str(data), 'ohwx', str(tmp_path/'o')) == 0
    j = json.loads((tmp_path/'o'/'eval.json').read_text())
    assert j['reference']['embedder']['name'] == 'm.onnx' and j['reference']['embedder']['metric'] == 'cosine'
    assert j['thresholds']['same_person_distance'] == I.ARCFACE_SAME_PERSON and j['thresholds']['calibration_floor'] == I.ARCFACE_FLOOR
    assert 'compared by m.onnx (cosine distance)' in (tmp_path/'o'/'report.md').read_text()
    monkeypatch.setenv('FLUXID_FACE_MODEL', str(tmp_path/'missing.onnx'))
    assert E.score_folder_main(str(gen/'lora_b'), str(data), 'ohwx', str(tmp_path/'p')) == 2   # a wrong path is a usage error

def test_onnxruntime_is_imported_only_for_an_onnx_model():
    code = ("import sys; from fluxid_nb import evaluate; from fluxid_nb.identity import build_reference, measure_image;"
            "from skimage import data; from PIL import Image; im = Image.fromarray(data.astronaut());"
            "r = build_reference([im]); measure_image(im, r); print('onnxruntime' in sys.modules, r.embedder.name)")
    env = {k: v for k, v in os.environ.items() if k != 'FLUXID_FACE_MODEL'}
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ['False', 'dlib'], out.stderr[-2000:]
