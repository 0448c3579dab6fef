"""Face detection cost: HOG alone against HOG + dlib's CNN fallback, per 512² image (the evaluator) and on 30 × 12 MP
photos (the analyzer). The budgets (issue #12): evaluator ≤ 0.5 s per 512² image on CPU, analyzer ≤ 15 s for 30 × 12 MP.

    .venv/bin/python bench/bench_faces.py [--repeat 3] [--analyzer-n 30] [--out output/bench]

Real photos only, all shipped with installed packages: scikit-image's astronaut (a frontal face HOG finds), a sheared
close-up of it (HOG misses it, the CNN finds it), scikit-image's cameraman (a small back-lit face HOG misses), and
scikit-image's coffee cup (no face: the worst case, both detectors run for nothing)."""
from __future__ import annotations
import argparse, json, os, sys, time
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT/'bench'))

def images() -> dict:
    from PIL import Image
    from skimage import data
    a = Image.fromarray(data.astronaut())
    sheared = a.crop((155, 59, 290, 194)).resize((512, 512)).transform((512, 512), Image.Transform.AFFINE, (1, 0.4, -102, 0, 1, 0), fillcolor=(200, 180, 160))
    return {'astronaut (frontal)': a, 'sheared close-up': sheared, 'cameraman (small, back-lit)': Image.fromarray(data.camera()).convert('RGB'),
            'coffee (no face)': Image.fromarray(data.coffee())}

def per_image(repeat: int) -> list:
    from fluxid_nb import faces as F
    ims = images()
    F.detect_faces(ims['astronaut (frontal)']); F._cnn()  # load the models outside the timings
    rows = []
    for name, im in ims.items():
        for cnn in (False, True):
            ts, found = [], None
            for _ in range(repeat):
                t = time.perf_counter(); fs = F.detect_faces(im, cnn=cnn); ts.append(time.perf_counter() - t); found = fs
            rows.append(dict(image=name, size=f'{im.width}×{im.height}', detectors='HOG + CNN fallback' if cnn else 'HOG',
                             seconds=min(ts), faces=len(found), by=','.join(f.detector for f in found)))
    return rows

def analyzer(n: int, out: Path) -> list:
    from bench_analyze import phone_photos
    from fluxid_nb import faces as F
    from fluxid_nb.analyze import analyze
    folder = phone_photos(out/'phone_photos', n)
    rows = []
    for cnn in (False, True):
        F.CNN_FALLBACK = cnn
        t = time.perf_counter(); an = analyze(str(folder), profile='fast', faces=True); dt = time.perf_counter() - t
        rows.append(dict(detectors='HOG + CNN fallback' if cnn else 'HOG', images=n, seconds=dt))
    F.CNN_FALLBACK = True
    return rows

def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('--repeat', type=int, default=3); ap.add_argument('--analyzer-n', type=int, default=30)
    ap.add_argument('--out', default=str(ROOT/'output'/'bench'))
    a = ap.parse_args(argv)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    rows = per_image(a.repeat)
    md = [f"cores: {os.cpu_count()}, load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())}", "",
          "| image | size | detectors | seconds (best of %d) | faces | found by |" % a.repeat, "|---|---|---|---:|---:|---|"]
    md += [f"| {r['image']} | {r['size']} | {r['detectors']} | {r['seconds']:.2f} | {r['faces']} | {r['by']} |" for r in rows]
    arows = analyzer(a.analyzer_n, out) if a.analyzer_n else []
    if arows:
        md += ["", f"| analyzer, {a.analyzer_n} × 12 MP JPEG, faces on | seconds | per image |", "|---|---:|---:|"]
        md += [f"| {r['detectors']} | {r['seconds']:.1f} | {r['seconds'] / r['images']:.2f} |" for r in arows]
    print('\n'.join(md))
    (out/'bench_faces.json').write_text(json.dumps(dict(per_image=rows, analyzer=arows, load=os.getloadavg()), indent=1))

if __name__ == '__main__':
    main()
