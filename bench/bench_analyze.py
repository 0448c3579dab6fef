"""Analyzer speed on phone-size photos: 30 JPEGs of 4000×3000 (12 MP) with a real face, time per image and the split.

    .venv/bin/python bench/bench_analyze.py [--n 30] [--keep DIR]
"""
import argparse, shutil, sys, tempfile, time
from pathlib import Path
import numpy as np
from PIL import Image, ImageEnhance, ImageOps

def build(folder: Path, n: int) -> Path:
    "n phone-size JPEGs of the astronaut (scikit-image's real photo) at varied scale, position, light, with captions."
    from skimage import data
    face = Image.fromarray(data.astronaut())
    rng = np.random.default_rng(0)
    bg = Image.fromarray(rng.integers(60, 200, (375, 500, 3), np.uint8)).resize((4000, 3000), Image.Resampling.BICUBIC)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        side = int(rng.integers(1400, 3000))
        im = bg.copy()
        subject = ImageEnhance.Brightness(face.resize((side, side), Image.Resampling.BICUBIC)).enhance(float(rng.uniform(0.7, 1.3)))
        if i % 2: subject = ImageOps.mirror(subject)
        im.paste(subject, (int(rng.integers(0, 4000 - side)), int(rng.integers(0, 3000 - side + 1))))
        im.save(folder/f'phone_{i:02d}.jpg', quality=90)
        (folder/f'phone_{i:02d}.txt').write_text(f'ohwx, photo {i}, {["indoor", "outdoor", "studio", "street", "park"][i % 5]} scene, variant {i}')
    return folder

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=30)
    ap.add_argument('--keep', default='', help='build the photos here and keep them')
    args = ap.parse_args(argv)
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix='fluxid-bench-'))/'subject'
    try:
        t = time.perf_counter(); build(folder, args.n); t_build = time.perf_counter() - t
        t = time.perf_counter()
        from fluxid_nb.analyze import analyze
        import fluxid_nb.faces  # model loading is a one-off per process: timed apart
        fluxid_nb.faces._models()
        t_import = time.perf_counter() - t
        t = time.perf_counter(); a = analyze(folder, profile='fast'); t_an = time.perf_counter() - t
        tm = a.timings
        print(f"built {args.n} JPEGs 4000×3000 in {t_build:.1f} s; imports + face models {t_import:.1f} s")
        print(f"analyze: {t_an:.2f} s total, {t_an / args.n * 1000:.0f} ms per image  (verdict {a.verdict}, faces found in "
              f"{sum(r['faces'] > 0 for r in a.rows)}/{len(a.rows)})")
        for k in ('decode', 'hash', 'faces', 'other', 'fingerprint'):
            print(f"  {k:<12} {tm.get(k, 0):6.2f} s  {tm.get(k, 0) / args.n * 1000:6.0f} ms/image  {tm.get(k, 0) / t_an:5.0%}")
        print(f"  {'load+probe':<12} {t_an - sum(tm.get(k, 0) for k in ('decode', 'hash', 'faces', 'other', 'fingerprint')):6.2f} s  "
              "(dataset scan, header + reduced-scale decode check, captions)")
    finally:
        if not args.keep: shutil.rmtree(folder.parent, ignore_errors=True)

if __name__ == '__main__': main()
