"The analyzer end to end: the demo subject's report, caption and image findings, the fingerprint, papermill."
import json, shutil, subprocess, sys
from pathlib import Path
import pytest
from PIL import Image, ImageFilter, ImageOps
from fluxid_nb.config import repo_root, resolve_config
from fluxid_nb.data import dataset_fingerprint, dataset_summary, load_dataset
from fluxid_nb.analyze import analyze, write_report
from fluxid_nb.cli import analyze_main
from _data_helpers import drawing, make_dataset

def codes(a): return {f.code: f for f in a.findings}

@pytest.fixture(scope='module')
def demo_dir(tmp_path_factory):
    from fluxid_nb.demo import demo_subject
    return demo_subject(tmp_path_factory.mktemp('demo')/'subject')

def test_demo_subject_report(demo_dir, tmp_path, capsys):
    rc = analyze_main(str(demo_dir), profile='demo', out_dir=str(tmp_path), run_name='demo_run')
    out = capsys.readouterr().out
    assert rc == 0, out
    run = tmp_path/'demo_run'
    for f in ('analysis.json', 'analysis.md', 'buckets.png', 'faces.png', 'contact_sheet.jpg', 'demo_run_dataset_hash.txt'):
        assert (run/f).is_file() and (run/f).stat().st_size > 0, f
    rep = json.loads((run/'analysis.json').read_text())
    assert rep['verdict'] in ('ok', 'warnings') and rep['errors'] == 0 and rep['images'] == 18
    assert rep['trigger'] == 'ohwx' and rep['layout'] == 'split'
    assert (run/'demo_run_dataset_hash.txt').read_text().strip() == rep['fingerprint'] == dataset_fingerprint(load_dataset(demo_dir))
    assert sum(len(v) for v in rep['buckets'].values()) == 18
    sheet = Image.open(run/'contact_sheet.jpg')
    assert sheet.width >= 6 * 200 and sheet.height >= 3 * 200
    assert '**Verdict:' in (run/'analysis.md').read_text()

def test_builtin_demo_resolves():
    ds = load_dataset('builtin:demo')
    assert len(ds.items) == 18 and not ds.errors
    assert 'trigger' in dataset_summary('builtin:demo') and "'ohwx'" in dataset_summary('builtin:demo')

def test_fingerprint_changes_with_one_caption_only(tmp_path):
    make_dataset(tmp_path/'a', n=4)
    fp = dataset_fingerprint(load_dataset(tmp_path/'a'))
    shutil.copytree(tmp_path/'a', tmp_path/'b')
    assert dataset_fingerprint(load_dataset(tmp_path/'b')) == fp           # where the folder lives does not matter
    (tmp_path/'b'/'good2.txt').write_text('ohwx, another caption')
    assert dataset_fingerprint(load_dataset(tmp_path/'b')) != fp

def test_caption_findings(tmp_path):
    make_dataset(tmp_path, n=16)
    (tmp_path/'good0.txt').write_text('a drawing without the token')
    (tmp_path/'good1.txt').write_text('ohwx, same words here'); (tmp_path/'good2.txt').write_text('ohwx, same words here')
    (tmp_path/'good3.txt').write_text('ohwx, a red haired subject with blue eyes, drawing number 3')
    (tmp_path/'good4.txt').write_text('ohwx, a blonde haired subject with green eyes, drawing number 4')
    (tmp_path/'good5.txt').write_text('ohwx, ' + ', '.join(f'detail {i} of the scene' for i in range(20)))
    a = analyze(tmp_path, profile='fast', faces=False)   # fast: no trigger set, so it is detected
    c = codes(a)
    assert a.trigger == 'ohwx' and a.trigger_source == 'detected'
    assert c['trigger-missing'].severity == 'error' and c['trigger-missing'].files == ['good0.png']
    assert 'EVERY caption' in c['trigger-missing'].message
    assert c['caption-identical'].files == ['good1.png', 'good2.png']
    assert {'good3.png', 'good4.png'} <= set(c['trait-inconsistent'].files) and 'hair colour' in ' '.join(
        f.message for f in a.findings if f.code == 'trait-inconsistent')
    assert c['caption-too-long'].files == ['good5.png'] and 'never sees "detail 12 of the scene, detail 13' in c['caption-too-long'].message
    assert 'estimated' in c['caption-too-long'].message
    assert a.verdict == 'errors' and analyze(tmp_path, profile='fast', faces=False, trigger='sks').trigger == 'sks'

def test_near_identical_captions_and_count(tmp_path):
    make_dataset(tmp_path, n=5)
    (tmp_path/'good0.txt').write_text('ohwx, portrait photo in the park, sunny day, smiling')
    (tmp_path/'good1.txt').write_text('ohwx, portrait photo in the park, sunny day, smiling!!')
    a = analyze(tmp_path, profile='demo', faces=False)
    c = codes(a)
    assert c['count-low'].severity == 'error' and '15' in c['count-low'].message
    assert c['caption-identical'].files == ['good0.png', 'good1.png']  # punctuation aside they are the same
    (tmp_path/'good1.txt').write_text('ohwx, portrait photo in the park, sunny days, smiling')
    c = codes(analyze(tmp_path, profile='demo', faces=False))
    assert c['caption-near-identical'].files == ['good0.png', 'good1.png'] and 'good0~good1' in c['caption-near-identical'].message

def test_image_findings(tmp_path):
    make_dataset(tmp_path, n=15)
    base = drawing(3)
    base.save(tmp_path/'copy.png'); (tmp_path/'copy.txt').write_text('ohwx, a copy')
    base.resize((300, 300)).save(tmp_path/'resized.jpg', quality=90); (tmp_path/'resized.txt').write_text('ohwx, resized')
    ImageOps.mirror(drawing(8)).save(tmp_path/'mirrored.png'); (tmp_path/'mirrored.txt').write_text('ohwx, mirrored')
    drawing(40).filter(ImageFilter.GaussianBlur(5)).save(tmp_path/'blurry.png'); (tmp_path/'blurry.txt').write_text('ohwx, blurry')
    Image.new('RGB', (320, 320), (8, 8, 8)).save(tmp_path/'dark.png'); (tmp_path/'dark.txt').write_text('ohwx, night')
    drawing(41, (900, 200)).save(tmp_path/'wide.png'); (tmp_path/'wide.txt').write_text('ohwx, panorama')
    a = analyze(tmp_path, profile='fast', faces=False)   # 512² training: these 320 px drawings are too small
    c = codes(a)
    dup = [f for f in a.findings if f.code in ('duplicate', 'near-duplicate')]
    groups = [set(f.files) for f in dup]
    assert {'good3.png', 'copy.png', 'resized.jpg'} in groups and {'good8.png', 'mirrored.png'} in groups
    assert any('mirror image' in f.message for f in dup) and all('distance' in f.message for f in dup)
    assert 'blurry.png' in c['blurry'].files and 'good1.png' not in c['blurry'].files
    assert c['exposure-under'].files == ['dark.png']
    assert c['extreme-aspect'].files == ['wide.png']
    assert 'below-resolution' in c and '512×512' in c['below-resolution'].message
    assert 'bucket-singletons' in c
    row = {r['name']: r for r in a.rows}
    assert row['good0']['bucket'] == '320×320' or row['good0']['bucket'] == '256×256'
    assert 'duplicate' in row['copy']['flags'] and 'blurry' in row['blurry']['flags']

def test_trigger_from_config_is_read(tmp_path):
    make_dataset(tmp_path, n=3, trigger='sks')
    cfg = resolve_config('demo', env={}, data_dir=str(tmp_path), trigger='zxq', run_name='t')
    a = analyze(cfg, faces=False)
    assert a.trigger == 'zxq' and a.trigger_source == 'config' and len(codes(a)['trigger-missing'].files) == 3

def test_papermill_runs_the_notebook_headless(tmp_path):
    pytest.importorskip('papermill')
    data = make_dataset(tmp_path/'subject', n=3)
    out = tmp_path/'executed.ipynb'
    r = subprocess.run([sys.executable, '-m', 'papermill', str(repo_root()/'nbs'/'analyze.ipynb'), str(out), '-p', 'data_dir', str(data),
                        '-p', 'out_dir', str(tmp_path/'runs'), '-p', 'run_name', 'pm', '-p', 'profile', 'demo', '--no-progress-bar'],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads((tmp_path/'runs'/'pm'/'analysis.json').read_text())
    assert rep['images'] == 3 and rep['verdict'] == 'errors'   # 3 images: under the guide's minimum of 15
    assert (tmp_path/'runs'/'pm'/'contact_sheet.jpg').is_file() and (tmp_path/'runs'/'pm'/'pm_dataset_hash.txt').is_file()

def test_gate_reuses_the_last_analysis_until_an_input_changes(tmp_path, monkeypatch):
    import fluxid_nb.analyze as an
    monkeypatch.setenv('FLUXID_CACHE', str(tmp_path/'cache'))
    runs = []
    monkeypatch.setattr(an, 'analyze', lambda cfg, **kw: runs.append(cfg.run_name) or analyze(cfg, **kw))
    data = make_dataset(tmp_path/'d', n=16)
    def gate(run, **kw):
        said = []
        a = an.dataset_gate(resolve_config('demo', env={}, data_dir=str(data), run_name=run, ignore_dataset_errors=True, **kw),
                            tmp_path/run, log=said.append)
        return a, [s for s in said if s.startswith('dataset analysis reused')]
    first, said = gate('r1')
    assert runs == ['r1'] and said == []
    again, said = gate('r2')                                   # nothing changed: read back, and said in one line
    assert runs == ['r1'] and len(said) == 1 and '\n' not in said[0]
    assert again.cfg.run_name == 'r2' and again.findings == first.findings and again.rows == first.rows
    rep = json.loads((tmp_path/'r2'/'analysis.json').read_text())
    assert rep['run_name'] == 'r2' and rep['fingerprint'] == first.fingerprint  # the report is this run's
    gate('r3', max_upscale=2.0)                                 # a setting the buckets depend on
    assert runs == ['r1', 'r3']
    gate('r4', max_upscale=2.0, learning_rate=5e-4)            # a setting the analysis does not read
    assert runs == ['r1', 'r3']
    (data/'good3.txt').write_text('ohwx, an edited caption')   # one caption edited
    _, said = gate('r5', max_upscale=2.0)
    assert runs == ['r1', 'r3', 'r5'] and said == []
    for p in (tmp_path/'cache'/'analysis').iterdir(): p.write_bytes(b'not a pickle')
    _, said = gate('r6', max_upscale=2.0)                       # an unreadable entry is analysed again, never fatal
    assert runs[-1] == 'r6' and said == []
