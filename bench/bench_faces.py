"""Face detection cost: HOG alone against HOG + dlib's CNN fallback, per 512² image (the evaluator) and on 30 × 12 MP
photos (the analyzer). The budgets (issue #12): evaluator ≤ 0.5 s per 512² image on CPU, analyzer ≤ 15 s for 30 × 12 MP.
The fallback looks at crops around HOG's weak candidates first (`faces.CNN_CROP_SIDE`), then at the whole image at
`faces.CNN_MAX_SIDE`; `--cnn-side 512 --crops 0` looks like the earlier scheme (the whole image at 512 px only).

    .venv/bin/python bench/bench_faces.py [--repeat 3] [--analyzer-n 30] [--out output/bench]

Real photos only, all shipped with installed packages: scikit-image's astronaut (a frontal face HOG finds), a sheared
close-up of it (HOG misses it, the CNN finds it), scikit-image's cameraman (a small back-lit face HOG misses), and
scikit-image's coffee cup (no face, no HOG candidate: the whole-image CNN pass runs for nothing) and coins (no face,
but textures HOG gives weak candidates for: the crops and the whole-image pass run for nothing, the worst case)."""
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
            'coffee (no face)': Image.fromarray(data.coffee()), 'coins (no face, weak candidates)': Image.fromarray(data.coins()).convert('RGB')}

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

LFW_BUSH = [0, 36, 73, 90]  # scikit-image's lfw_subset ships without names: these four are George W. Bush, labelled by eye

def _lfw_face(a25, side: int = 150):
    "A 25 × 25 grey LFW crop, enlarged and padded so the detector sees a whole face: its largest Face."
    from PIL import Image, ImageOps
    from fluxid_nb.faces import detect_faces
    im = Image.fromarray(a25).resize((side, side), Image.Resampling.BICUBIC).convert('RGB')
    fs = detect_faces(ImageOps.expand(im, border=side // 2, fill=(128, 128, 128)))
    return fs[0] if fs else None

def calibration() -> dict:
    "The calibration on real photos of one person: scikit-image's LFW subset (100 faces, 25 px), four of them one man."
    import numpy as np
    from PIL import Image, ImageOps
    from skimage import data
    import matplotlib.cbook
    from fluxid_nb.faces import detect_faces
    from fluxid_nb.identity import DLIB, calibrated_threshold, central_index, own_spread
    from fluxid_nb import faces as F
    x = (data.lfw_subset()[:100] * 255).astype(np.uint8)
    faces = [_lfw_face(a) for a in x]
    missed = [i for i, f in enumerate(faces) if f is None]
    side, F.CNN_MAX_SIDE = F.CNN_MAX_SIDE, 512   # the calibration needs every face: look again with the CNN at 512 px
    faces = [f or _lfw_face(a) for f, a in zip(faces, x)]; F.CNN_MAX_SIDE = side
    E = np.array([f.embedding for f in faces if f is not None]); assert len(E) == 100, "every LFW face must be found"
    D = np.linalg.norm(E[:, None] - E[None], axis=-1)
    iu = np.triu_indices(100, 1)
    same_pair = np.isin(iu[0], LFW_BUSH) & np.isin(iu[1], LFW_BUSH)
    others = D[iu][~same_pair]   # every other pair: different people, bar any repeat not labelled
    spread = own_spread(E[LFW_BUSH]); med = E[LFW_BUSH][central_index(E[LFW_BUSH])]
    imp = np.array([DLIB.distance(E[j], med) for j in range(100) if j not in LFW_BUSH])
    # what 25 px costs: a photo against itself brought down to an LFW crop
    a = Image.fromarray(data.astronaut()); h = Image.open(matplotlib.cbook.get_sample_data('grace_hopper.jpg', asfileobj=False)).convert('RGB')
    penalty = {}
    for name, im, (l, t, r, b) in (('Collins', a, (179, 83, 266, 170)), ('Hopper', h, (161, 137, 376, 352))):
        cx, cy, sz = (l + r) / 2, (t + b) / 2, (r - l) * 1.25
        g = ImageOps.grayscale(im.crop((int(cx - sz / 2), int(cy - 0.6 * sz), int(cx + sz / 2), int(cy + 0.4 * sz)))).resize((25, 25), Image.Resampling.BILINEAR)
        penalty[name] = DLIB.distance(detect_faces(im)[0].embedding, _lfw_face(np.asarray(g)).embedding)
    pct = lambda v, q: float(np.percentile(v, q))
    return dict(found_by={d: sum(f.detector == d for f in faces) for d in ('hog', 'cnn')}, missed_at_default=missed,
                bush_pairs=sorted(float(v) for v in D[np.ix_(LFW_BUSH, LFW_BUSH)][np.triu_indices(4, 1)]),
                bush_own_spread=[float(v) for v in spread], bush_threshold=calibrated_threshold(spread),
                others_pairs=dict(n=int(len(others)), min=float(others.min()), p1=pct(others, 1), p5=pct(others, 5), median=pct(others, 50)),
                others_to_bush_medoid=dict(n=len(imp), min=float(imp.min()), p5=pct(imp, 5), median=pct(imp, 50),
                                           below={str(t): int((imp < t).sum()) for t in (0.4, 0.45, 0.5, 0.55, 0.6)}),
                others_pairs_below={str(t): int((others < t).sum()) for t in (0.4, 0.45, 0.5, 0.55, 0.6)},
                resolution_penalty=penalty)

def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('--repeat', type=int, default=3); ap.add_argument('--analyzer-n', type=int, default=30)
    ap.add_argument('--out', default=str(ROOT/'output'/'bench'))
    ap.add_argument('--cnn-side', type=int, default=None, help="faces.CNN_MAX_SIDE for this run")
    ap.add_argument('--crops', type=int, default=None, help="faces.CNN_CROPS for this run (0: no candidate crops)")
    ap.add_argument('--calibration', action='store_true', help="only the calibration figures on scikit-image's LFW subset")
    a = ap.parse_args(argv)
    from fluxid_nb import faces as F
    if a.cnn_side: F.CNN_MAX_SIDE = a.cnn_side
    if a.crops is not None: F.CNN_CROPS = a.crops
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    if a.calibration:
        c = calibration(); print(json.dumps(c, indent=1)); (out/'calibration_lfw.json').write_text(json.dumps(c, indent=1)); return
    rows = per_image(a.repeat)
    md = [f"cores: {os.cpu_count()}, load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())}; "
          f"CNN: whole image at {F.CNN_MAX_SIDE} px, up to {F.CNN_CROPS} candidate crops at {F.CNN_CROP_SIDE} px", "",
          "| image | size | detectors | seconds (best of %d) | faces | found by |" % a.repeat, "|---|---|---|---:|---:|---|"]
    md += [f"| {r['image']} | {r['size']} | {r['detectors']} | {r['seconds']:.2f} | {r['faces']} | {r['by']} |" for r in rows]
    arows = analyzer(a.analyzer_n, out) if a.analyzer_n else []
    if arows:
        md += ["", f"| analyzer, {a.analyzer_n} × 12 MP JPEG, faces on | seconds | per image |", "|---|---:|---:|"]
        md += [f"| {r['detectors']} | {r['seconds']:.1f} | {r['seconds'] / r['images']:.2f} |" for r in arows]
    print('\n'.join(md))
    (out/'bench_faces.json').write_text(json.dumps(dict(per_image=rows, analyzer=arows, load=os.getloadavg(), cnn_max_side=F.CNN_MAX_SIDE,
                                                        cnn_crops=F.CNN_CROPS, cnn_crop_side=F.CNN_CROP_SIDE), indent=1))

if __name__ == '__main__':
    main()
