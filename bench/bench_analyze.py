"""The analyzer's throughput on 30 phone-size photos (12 MP JPEGs made from scikit-image's astronaut photo).

    .venv/bin/python bench/bench_analyze.py [--n 30] [--out output/bench]"""
from __future__ import annotations
import argparse, json, resource, sys, time
from pathlib import Path
T0 = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

def phone_photos(folder: Path, n: int = 30, size=(3024, 4032)) -> Path:
    "n portrait 12 MP JPEGs (varied crop, brightness, rotation) with captions, written once."
    from PIL import Image, ImageEnhance
    from skimage.data import astronaut
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob('*.jpg'))) == n: return folder
    base = Image.fromarray(astronaut())
    for i in range(n):
        s = 0.55 + 0.4 * (i % 5) / 4
        w = int(base.width * s); x0 = (base.width - w) * (i % 3) // 2
        img = base.crop((x0, 0, x0 + w, int(w * 4 / 3) if int(w * 4 / 3) <= base.height else base.height))
        img = img.rotate((i % 7 - 3) * 2, resample=Image.BICUBIC).resize(size, Image.LANCZOS)
        img = ImageEnhance.Brightness(img).enhance(0.8 + 0.05 * (i % 9))
        img.save(folder/f'photo_{i:02d}.jpg', quality=90)
        (folder/f'photo_{i:02d}.txt').write_text(f"ohwx, photo of a person in a white suit, shot {i}\n")
    return folder

def main(argv=None):
    ap = argparse.ArgumentParser(); ap.add_argument('--n', type=int, default=30); ap.add_argument('--out', default=str(ROOT/'output'/'bench'))
    a = ap.parse_args(argv)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    folder = phone_photos(out/'phone_photos', a.n)
    from fluxid_nb.analyze import analyze
    t_imp = time.perf_counter() - T0
    rows = []
    for faces in (False, True):
        t = time.perf_counter(); an = analyze(str(folder), profile='fast', faces=faces); dt = time.perf_counter() - t
        rows.append(dict(faces=faces, images=a.n, seconds=dt, images_per_s=a.n / dt, findings=len(an.findings)))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    md = ["| analyzer (30 × 12 MP JPEG) | seconds | images/s | findings |", "|---|---:|---:|---:|"]
    md += [f"| {'with' if r['faces'] else 'without'} face model | {r['seconds']:.1f} | {r['images_per_s']:.2f} | {r['findings']} |" for r in rows]
    md.append(f"\nimports {t_imp:.1f} s · peak RSS {rss:.0f} MB")
    text = '\n'.join(md)
    (out/'bench_analyze.json').write_text(json.dumps(dict(rows=rows, import_s=t_imp, peak_rss_mb=rss), indent=1))
    (out/'bench_analyze.md').write_text(f"# Analyzer throughput\n\n{text}\n")
    print(text)

if __name__ == '__main__': main()
