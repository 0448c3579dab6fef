"Small datasets and real face photos for the data, faces and analyzer tests (no downloads)."
import hashlib, os, struct, zlib
from pathlib import Path
import numpy as np
from PIL import Image, ImageDraw

def drawing(i: int, size=(320, 320)) -> Image.Image:
    "A distinct, sharp little drawing per i (different hashes, no face)."
    rng = np.random.default_rng(i)
    im = Image.new('RGB', size, tuple(int(v) for v in rng.integers(40, 220, 3)))
    d = ImageDraw.Draw(im)
    for _ in range(12):
        x0, y0 = rng.integers(0, size[0] - 40), rng.integers(0, size[1] - 40)
        d.rectangle([x0, y0, x0 + rng.integers(10, 120), y0 + rng.integers(10, 120)],
                    fill=tuple(int(v) for v in rng.integers(0, 255, 3)), outline='black', width=2)
    return im

WORDS = ['red squares on a beach', 'a blue city at night', 'green fields under rain', 'an orange kitchen table',
         'purple mountains in fog', 'a grey office corridor', 'yellow flowers in spring', 'a dark forest path',
         'white snow on rooftops', 'a pink sunset sky', 'brown leather armchair', 'a crowded train station',
         'silver cars in traffic', 'a quiet library corner', 'golden wheat at dusk', 'a windy harbour pier']

def make_dataset(folder: Path, n: int = 3, layout: str = 'flat', trigger: str = 'ohwx') -> Path:
    "n good image+caption pairs in the guide's flat or split layout."
    folder = Path(folder)
    imgs, caps = (folder/'images', folder/'captions') if layout == 'split' else (folder, folder)
    imgs.mkdir(parents=True, exist_ok=True); caps.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        drawing(i).save(imgs/f'good{i}.png')
        (caps/f'good{i}.txt').write_text(f'{trigger}, {WORDS[i % len(WORDS)]} drawing {i}', encoding='utf-8')
    return folder

def snapshot(folder: Path) -> dict:
    "Everything about a folder's entries that a modification would change (links are not followed)."
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath)/name
            st = os.lstat(p)
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else os.readlink(p) if p.is_symlink() else ''
            out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns, st.st_mode, digest)
    return out

def bomb_png(path: Path, width: int = 20000, height: int = 20000):
    "A tiny PNG whose header claims width×height pixels (over PIL's decompression-bomb limit)."
    def chunk(kind, data): return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff)
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)
    Path(path).write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(b'\0' * 64)) + chunk(b'IEND', b''))

# real photos shipped inside installed PyPI packages
def astronaut() -> Image.Image:
    "Eileen Collins (NASA), shipped with scikit-image."
    from skimage import data
    return Image.fromarray(data.astronaut())

def grace_hopper() -> Image.Image:
    "Grace Hopper, shipped with matplotlib's sample data."
    import matplotlib
    return Image.open(Path(matplotlib.get_data_path())/'sample_data'/'grace_hopper.jpg').convert('RGB')

def two_people() -> Image.Image:
    "Both real photos side by side: a picture with two faces."
    a, g = astronaut(), grace_hopper().resize((440, 515))
    canvas = Image.new('RGB', (a.width + g.width, max(a.height, g.height)), (90, 90, 90))
    canvas.paste(a, (0, 0)); canvas.paste(g, (a.width, 0))
    return canvas


def fake_run(tmp, train: list, steps) -> "Path":
    "A run folder with `train` (PIL images) as its dataset and checkpoint folders whose LoRA files are never loaded."
    import json
    from pathlib import Path
    import torch
    from safetensors.torch import save_file
    from fluxid_nb.config import resolve_config
    from fluxid_nb.train import config_dict
    tmp = Path(tmp); data = tmp/'data'; data.mkdir(parents=True)
    for i, im in enumerate(train): im.save(data/f'img_{i}.png'); (data/f'img_{i}.txt').write_text(f'ohwx, photo {i}')
    run = tmp/'run'
    cfg = resolve_config('demo', env={}, data_dir=str(data), out_dir=str(tmp), run_name='run')
    for s in steps:
        ck = run/'checkpoints'/f'step_{s:06d}'; ck.mkdir(parents=True)
        save_file({'x': torch.zeros(1)}, ck/'lora.safetensors')
        (ck/'state.json').write_text(json.dumps(dict(run_name='run', config=config_dict(cfg), step=s), default=str))
    (run/'config.json').write_text(json.dumps(config_dict(cfg), default=str))
    (run/'metrics.jsonl').write_text(''.join(json.dumps(dict(step=s, loss=1.0 / (1 + s / 100), lr=1e-4)) + '\n' for s in range(1, max(steps) + 1)))
    return run
