"""CPU side by side: fluxid's trainer vs a plain diffusers-example-style loop, on the demo model and a bigger one.

    .venv/bin/python bench/bench_train.py [--steps 30] [--out output/bench]

Every measurement runs in its own process (clean peak RSS). fluxid runs twice per model: with an empty cache
(latents + text embeddings are encoded first) and again with that cache reused. Writes bench_train.md/.json."""
from __future__ import annotations
import argparse, json, os, resource, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path
T0 = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT/'bench'))

def child(job: dict) -> dict:
    "One measured run in this process."
    import torch
    torch.manual_seed(0)
    torch.set_num_threads(job.get('threads', 1))  # one thread: on a shared 2-core machine OpenMP barriers turn contention into noise
    os.environ['FLUXID_CACHE'] = job['cache']
    stamps = []
    if job['kind'] == 'plain':
        from plain_loop import plain_train
        t_imp = time.perf_counter() - T0
        losses = plain_train(Path(job['model']), Path(job['data']), job['steps'], job['resolution'], job['rank'], job['t5_len'],
                             on_step=lambda s: stamps.append(time.perf_counter()))
        setup = gate = None
    else:
        from fluxid_nb.train import Trainer
        from fluxid_nb.config import resolve_config
        t_imp = time.perf_counter() - T0
        cfg = resolve_config('demo', env={}, model_path=job['model'], data_dir=job['data'], out_dir=job['out'],
                             run_name=job['run'], max_train_steps=job['steps'], sample_every_n_steps=0,
                             checkpoint_every_n_steps=10_000, holdout_images=2, resolution=job['resolution'],
                             network_dim=job['rank'], network_alpha=job['rank'], t5_max_length=job['t5_len'], **job.get('extra', {}))
        from fluxid_nb.analyze import dataset_gate
        tr = Trainer(cfg, log=lambda *a: None)
        t = time.perf_counter(); dataset_gate(cfg, log=lambda *a: None); gate = time.perf_counter() - t
        tr.setup(); setup = time.perf_counter() - t  # what `fluxid train` does: the gate, then the caches and the model
        step = tr.optimizer.step
        def timed(*a, **k):
            r = step(*a, **k); stamps.append(time.perf_counter()); return r
        tr.optimizer.step = timed
        res = tr.run(); losses = res.losses
    steps = [b - a for a, b in zip(stamps, stamps[1:])][1:]  # drop the first (warm-up) interval
    return dict(import_s=t_imp, setup_s=setup, gate_s=gate, first_step_s=stamps[0] - T0, sec_per_step=statistics.median(steps),
                peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, loss_first=losses[0], loss_last=losses[-1])

def run_job(job: dict) -> dict:
    r = subprocess.run([sys.executable, __file__, '--child', json.dumps(job)], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONWARNINGS='ignore'), timeout=1800)
    line = next((l for l in r.stdout.splitlines() if l.startswith('@@')), None)
    if r.returncode or not line: raise RuntimeError(f"bench job failed: {job}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return json.loads(line[2:])

def models(work: Path) -> dict:
    from fluxid_nb.models import tiny_flux
    from fluxid_nb.demo import demo_subject
    from models import build_bench_flux, BIG
    return dict(demo=(tiny_flux(), 256, 8, 64), bigger=(build_bench_flux(work/'models'/'bench-big-v1', **BIG), 256, 16, 128)), demo_subject()

LEVERS = (('masked_loss=face', 'mask', dict(masked_loss='face', mask_background_weight=0.25)),
          ('preservation=dop', 'dop', dict(preservation='dop', class_word='person')),
          ('caption_dropout_rate=0.05', 'drop', dict(caption_dropout_rate=0.05)))

def lever_lines(rows) -> list[str]:
    "Each lever's s/step against the warm run without it (same model, cache and steps)."
    out = []
    for m in dict.fromkeys(r['model'] for r in rows):
        ref = next((r for r in rows if r['model'] == m and r['trainer'] == 'fluxid, cache reused'), None)
        for r in rows:
            lbl = r['trainer'].removeprefix('fluxid, ')
            if ref and r['model'] == m and lbl in {l for l, _, _ in LEVERS}:
                out.append(f"- {m}, {lbl}: {r['sec_per_step']:.3f} s/step against {ref['sec_per_step']:.3f} without "
                           f"({r['sec_per_step'] / ref['sec_per_step']:.2f}×), first step after {r['first_step_s']:.1f} s vs {ref['first_step_s']:.1f} s")
    return out

def table(rows) -> str:
    out = ["| model | trainer | s/step | peak RSS MB | time to first step s | of which imports s | of which setup s (gate) | loss first→last |",
           "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        setup = '' if r['setup_s'] is None else f"{r['setup_s']:.1f} ({r.get('gate_s') or 0:.1f})"
        out.append(f"| {r['model']} | {r['trainer']} | {r['sec_per_step']:.3f} | {r['peak_rss_mb']:.0f} | {r['first_step_s']:.1f} | "
                   f"{r['import_s']:.1f} | {setup} | {r['loss_first']:.3f}→{r['loss_last']:.3f} |")
    out.append('')
    for m in dict.fromkeys(r['model'] for r in rows):
        p = next(r for r in rows if r['model'] == m and r['trainer'] == 'plain loop')
        for r in rows:
            if r['model'] == m and r['trainer'] in ('fluxid, empty cache', 'fluxid, cache reused'):
                out.append(f"- {m}, {r['trainer']}: {p['sec_per_step']/r['sec_per_step']:.2f}× faster per step, "
                           f"peak RSS {r['peak_rss_mb']/p['peak_rss_mb']:.2f}× the plain loop's, "
                           f"first step after {r['first_step_s']:.1f} s vs {p['first_step_s']:.1f} s")
    return '\n'.join(out + (['', 'Identity levers (issue 11):'] + lever_lines(rows) if lever_lines(rows) else []))

def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('--child'); ap.add_argument('--steps', type=int, default=30); ap.add_argument('--out', default=str(ROOT/'output'/'bench'))
    ap.add_argument('--models', default='demo,bigger'); ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--levers', default='demo', help="models on which the identity levers are timed too ('' for none)")
    a = ap.parse_args(argv)
    if a.child:
        print('@@' + json.dumps(child(json.loads(a.child)))); return
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    mods, data = models(out)
    rows = []
    for name in a.models.split(','):
        model, res, rank, t5 = mods[name]
        cache = Path(tempfile.mkdtemp(prefix='cache-', dir=out))
        base = dict(model=str(model), data=str(data), steps=a.steps, resolution=res, rank=rank, t5_len=t5, out=str(out/'runs'),
                    threads=a.threads)
        jobs = [('plain loop', dict(base, kind='plain', cache=str(cache), run='plain')),
                ('fluxid, empty cache', dict(base, kind='fluxid', cache=str(cache), run=f'{name}_cold')),
                ('fluxid, cache reused', dict(base, kind='fluxid', cache=str(cache), run=f'{name}_warm'))]
        if name in a.levers.split(','):  # the identity levers' cost per step, beside the same warm run without them
            jobs += [(f'fluxid, {lbl}', dict(base, kind='fluxid', cache=str(cache), run=f'{name}_{tag}', extra=extra)) for lbl, tag, extra in LEVERS]
        for trainer, job in jobs:
            r = run_job(job) | dict(model=name, trainer=trainer)
            rows.append(r)
            print(f"  {name:<7} {trainer:<22} {r['sec_per_step']:.3f} s/step  peak {r['peak_rss_mb']:.0f} MB  first step {r['first_step_s']:.1f} s"
                  f" (imports {r['import_s']:.1f} s" + (f", setup {r['setup_s']:.1f} s of which gate {r['gate_s']:.1f} s)" if r['setup_s'] else ')'), flush=True)
        shutil.rmtree(cache, ignore_errors=True)
    md = table(rows)
    info = dict(steps=a.steps, threads=a.threads, models={k: dict(path=str(v[0]), resolution=v[1], rank=v[2], t5_len=v[3]) for k, v in mods.items()},
                cpu_count=os.cpu_count())
    (out/'bench_train.json').write_text(json.dumps(dict(info, rows=rows), indent=1))
    (out/'bench_train.md').write_text(f"# fluxid vs a plain loop (CPU, {a.steps} steps)\n\n{md}\n")
    print(md)
    return rows

if __name__ == '__main__': main()
