"Bad input: each case gives one clear finding naming the file and the fix, the rest is analysed, nothing changes on disk."
import io, os
from pathlib import Path
import numpy as np
import pytest
from PIL import Image
from fluxid_nb.data import DatasetError, load_dataset, load_image, NEUTRAL_GREY
from fluxid_nb.analyze import analyze
from fluxid_nb.cli import analyze_main
from _data_helpers import bomb_png, drawing, make_dataset, snapshot

GOOD = ['good0', 'good1', 'good2']

def check(folder: Path, code: str, file: str, *words: str):
    "Load and analyze `folder`; exactly one finding `code` about `file` whose message has `words`; the good images analysed."
    before = snapshot(folder)
    ds = load_dataset(folder)
    hits = [f for f in ds.findings if f.code == code]
    assert len(hits) == 1, [str(f) for f in ds.findings]
    f = hits[0]
    assert file in f.files and file in f.message, str(f)
    for w in words: assert w.lower() in f.message.lower(), (w, f.message)
    a = analyze(folder, profile='demo', faces=False)
    assert [r['name'] for r in a.rows if r['name'].startswith('good')] == GOOD
    assert any(x.code == code for x in a.findings)
    assert snapshot(folder) == before, "the analyzer modified the dataset folder"
    return f, ds, a

def test_truncated_jpeg(tmp_path):
    make_dataset(tmp_path)
    buf = io.BytesIO(); Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), np.uint8)).save(buf, 'JPEG')
    (tmp_path/'cut.jpg').write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (tmp_path/'cut.txt').write_text('ohwx, cut short')
    f, ds, a = check(tmp_path, 'truncated', 'cut.jpg', 're-export or re-copy')
    assert f.severity == 'error' and 'cut' not in [it.name for it in ds.items]

def test_zero_byte_file(tmp_path):
    make_dataset(tmp_path)
    (tmp_path/'empty.jpg').write_bytes(b''); (tmp_path/'empty.txt').write_text('ohwx, nothing')
    f, *_ = check(tmp_path, 'empty-file', 'empty.jpg', '0 bytes', 're-copy')
    assert f.severity == 'error'

def test_text_named_png(tmp_path):
    make_dataset(tmp_path)
    (tmp_path/'notes.png').write_text('shopping list: eggs, milk\n'); (tmp_path/'notes.txt').write_text('ohwx, notes')
    f, *_ = check(tmp_path, 'not-an-image', 'notes.png', 'text file', 'replace it with the real image')
    assert f.severity == 'error'

def test_decompression_bomb(tmp_path):
    make_dataset(tmp_path)
    bomb_png(tmp_path/'huge.png'); (tmp_path/'huge.txt').write_text('ohwx, enormous')
    f, *_ = check(tmp_path, 'decompression-bomb', 'huge.png', '400000000 pixels', 'downscale', '2048')
    assert f.severity == 'error'

def test_latin1_caption_is_decoded_and_warned(tmp_path):
    make_dataset(tmp_path)
    drawing(7).save(tmp_path/'cafe.jpg'); (tmp_path/'cafe.txt').write_bytes('ohwx, in a café, crème brûlée'.encode('latin-1'))
    f, ds, a = check(tmp_path, 'caption-not-utf8', 'cafe.txt', 'Latin-1', 'UTF-8')
    assert f.severity == 'warning'
    assert [it.caption for it in ds.items if it.name == 'cafe'] == ['ohwx, in a café, crème brûlée']
    assert 'cafe' in [r['name'] for r in a.rows]

def test_symlink_loop(tmp_path):
    make_dataset(tmp_path)
    os.symlink('loop.jpg', tmp_path/'loop.jpg'); (tmp_path/'loop.txt').write_text('ohwx, loop')
    f, *_ = check(tmp_path, 'symlink-loop', 'loop.jpg', 'symlink loop', 'real file')
    assert f.severity == 'error'

def test_broken_symlink(tmp_path):
    make_dataset(tmp_path)
    os.symlink('/nonexistent/photo.jpg', tmp_path/'gone.jpg'); (tmp_path/'gone.txt').write_text('ohwx, gone')
    check(tmp_path, 'symlink-broken', 'gone.jpg', 'does not exist')

def test_missing_directory(tmp_path, capsys):
    missing = tmp_path/'no_such_subject'
    with pytest.raises(DatasetError) as e: load_dataset(missing)
    msg = str(e.value)
    assert str(missing) in msg and 'does not exist' in msg and 'Option A' in msg and 'Option B' in msg and 'captions/' in msg
    a = analyze(missing, profile='demo')
    assert a.verdict == 'errors' and [f.code for f in a.findings] == ['dataset-folder'] and str(missing) in a.findings[0].message
    assert analyze_main(str(missing), profile='demo', out_dir=str(tmp_path/'out'), run_name='r') == 1
    assert 'does not exist' in capsys.readouterr().out
    assert not missing.exists()

def test_missing_orphan_and_empty_captions(tmp_path):
    make_dataset(tmp_path)
    drawing(5).save(tmp_path/'nocap.jpg')
    (tmp_path/'lonely.txt').write_text('ohwx, no image')
    drawing(6).save(tmp_path/'blank.webp'); (tmp_path/'blank.txt').write_text('  \n')
    ds = load_dataset(tmp_path)
    codes = {f.code: f for f in ds.findings}
    assert codes['caption-missing'].severity == 'error' and 'nocap.txt' in codes['caption-missing'].message
    assert codes['caption-orphan'].severity == 'warning' and 'lonely.txt' in codes['caption-orphan'].message
    assert codes['caption-empty'].severity == 'error' and 'blank.txt' in codes['caption-empty'].message
    assert [it.name for it in ds.items] == GOOD

def test_layouts_mixed_and_neither(tmp_path):
    make_dataset(tmp_path/'split', layout='split')
    ds = load_dataset(tmp_path/'split')
    assert ds.layout == 'split' and [it.name for it in ds.items] == GOOD
    drawing(9).save(tmp_path/'split'/'stray.jpg')
    with pytest.raises(DatasetError, match='mixes the two layouts'): load_dataset(tmp_path/'split')
    (tmp_path/'docs').mkdir(); (tmp_path/'docs'/'readme.md').write_text('hi')
    with pytest.raises(DatasetError, match='matches neither layout') as e: load_dataset(tmp_path/'docs')
    assert 'images/' in str(e.value) and 'photo1.txt' in str(e.value)

def test_image_modes(tmp_path):
    "CMYK, 16-bit, palette, alpha, animated and EXIF-rotated images load as upright RGB; animation is warned."
    make_dataset(tmp_path)
    Image.new('CMYK', (300, 300), (0, 255, 255, 0)).save(tmp_path/'cmyk.jpg')
    Image.fromarray((np.linspace(0, 65535, 300 * 300).reshape(300, 300)).astype(np.uint16)).save(tmp_path/'deep.png')
    rgba = Image.new('RGBA', (300, 300), (0, 0, 0, 0)); rgba.paste((255, 0, 0, 255), (0, 0, 150, 300)); rgba.save(tmp_path/'alpha.png')
    frames = [drawing(20 + i) for i in range(3)]
    frames[0].save(tmp_path/'anim.webp', save_all=True, append_images=frames[1:], duration=100, lossless=True)
    ex = Image.Exif(); ex[0x0112] = 8
    drawing(30, (400, 200)).save(tmp_path/'rot.jpg', exif=ex)
    for n in ('cmyk', 'deep', 'alpha', 'anim', 'rot'): (tmp_path/f'{n}.txt').write_text(f'ohwx, {n}')
    ds = load_dataset(tmp_path)
    assert [f.code for f in ds.findings] == ['animated'] and 'anim.webp' in ds.findings[0].message
    sizes = {it.name: (it.width, it.height) for it in ds.items}
    assert sizes['rot'] == (200, 400)
    assert load_image(tmp_path/'rot.jpg').size == (200, 400)
    assert load_image(tmp_path/'cmyk.jpg').getpixel((5, 5))[0] > 200
    deep = load_image(tmp_path/'deep.png')
    assert deep.mode == 'RGB' and deep.getpixel((0, 0)) == (0, 0, 0) and deep.getpixel((299, 299)) == (255, 255, 255)
    assert 100 < deep.getpixel((150, 150))[0] < 160
    alpha = load_image(tmp_path/'alpha.png')
    assert alpha.getpixel((10, 10)) == (255, 0, 0) and alpha.getpixel((290, 10)) == NEUTRAL_GREY
    assert load_image(tmp_path/'anim.webp').getpixel((0, 0)) == frames[0].convert('RGB').getpixel((0, 0))

def test_unsupported_and_duplicate_basenames(tmp_path):
    make_dataset(tmp_path)
    drawing(11).save(tmp_path/'old.bmp'); (tmp_path/'old.txt').write_text('ohwx, bmp')
    drawing(12).save(tmp_path/'twin.jpg'); drawing(13).save(tmp_path/'twin.PNG'); (tmp_path/'twin.txt').write_text('ohwx, twin')
    ds = load_dataset(tmp_path)
    codes = {f.code: f for f in ds.findings}
    assert 'old.bmp' in codes['unsupported-format'].message and 'JPG, PNG, WebP' in codes['unsupported-format'].message
    assert codes['duplicate-basename'].severity == 'error' and 'twin.PNG' in codes['duplicate-basename'].message
    assert [it.name for it in ds.items] == GOOD

def test_decode_time_downscale_of_a_phone_photo(tmp_path):
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (750, 1000, 3), np.uint8)).resize((4000, 3000)).save(tmp_path/'phone.jpg', quality=80)
    im = load_image(tmp_path/'phone.jpg', max_side=1024)
    assert im.size == (1000, 750) or max(im.size) <= 1024 and im.size[0] / im.size[1] == pytest.approx(4 / 3, rel=0.01)
