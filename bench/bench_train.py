"""CPU side by side: fluxid's trainer vs a plain diffusers-example-style loop: time to first step and s/step.

    .venv/bin/python bench/bench_train.py [--steps 30] [--reps 3] [--models demo,bigger] [--out output/bench]

Per model, each repetition runs, in this order (so the modes alternate across repetitions):
  plain loop                       bench/plain_loop.py, in an environment without bitsandbytes (see below)
  fluxid, cold                     an empty FLUXID_CACHE: dataset analysis, latent and text caches, all from scratch
                                   (cache_encoding auto: on this CPU, each photo and caption encoded when a step reads it)
  fluxid, cold, upfront            the same with cache_encoding = "upfront": everything encoded before the first step
  fluxid, warm, 1 caption edited   that cache, after ", smiling" was appended to one caption (fix a caption, rerun)
  fluxid, warm, unchanged          that cache again, dataset unchanged
  fluxid, cold, `fluxid warm`      an empty cache again, run by a ready `fluxid warm` standby (imports already done)
  fluxid, warm, `fluxid warm`      that cache, unchanged dataset, run by the next standby
Then, once each, the identity levers (--levers) as warm, unchanged runs with the lever on.

Every measurement is its own process (nothing imported yet; the parent never imports torch, so no child inherits its
peak RSS). Time to first step runs from the child's interpreter start (T0 below) to the end of its first optimizer
step; s/step is the median step interval after the first; "to last step" runs to the end of the last optimizer step.
A `fluxid warm` run is timed from its client process's start (what a user types: `fluxid train ...`) to the end of the first step in the standby, by wall clock; the standby is
started once per model and the bench waits until the next one is ready before measuring anything else. The fluxid child goes through `fluxid train`'s own path,
`fluxid_nb.cli.train_gated(cfg)` (the dataset gate, then the trainer); the plain child sets
`sys.modules['bitsandbytes'] = None` before any other import, so peft and diffusers see no bitsandbytes, as in the
diffusers example's own environment (fluxid's child does not: fluxid decides for itself). Each model trains on a
private copy of the demo dataset under --out, so editing a caption never touches the shipped demo. The table gives
medians over the repetitions (min–max beside them). A benchmark, not a test: no timing is asserted.
Writes bench_train.md and bench_train.json in --out."""
from __future__ import annotations
import sys, time
T0 = time.perf_counter()  # the child's clock: its interpreter has started, nothing heavy is imported yet
W0 = time.time()          # the same moment by wall clock, for runs that happen in a `fluxid warm` standby
if '--no-bitsandbytes' in sys.argv: sys.modules['bitsandbytes'] = None  # before any other import: "not installed"
import argparse, contextlib, json, os, resource, shutil, statistics, subprocess, tempfile
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT/'bench'))

PLAIN, COLD, EDITED, WARM = 'plain loop', 'fluxid, cold', 'fluxid, warm, 1 caption edited', 'fluxid, warm, unchanged'
COLD_UP = 'fluxid, cold, cache_encoding=upfront'
COLD_W, WARM_W = 'fluxid, cold, `fluxid warm`', 'fluxid, warm, `fluxid warm`'
TARGETS = dict(cold=1.0, warm=0.6)                 # time to first step, × the plain loop's (issue 15)
SPS_TARGETS = dict(demo=0.50, bigger=0.67)         # s/step, × the plain loop's (the baseline)
LEVERS = (('masked_loss=face', 'mask', dict(masked_loss='face', mask_background_weight=0.25)),
          ('preservation=dop', 'dop', dict(preservation='dop', class_word='person')),
          ('caption_dropout_rate=0.05', 'drop', dict(caption_dropout_rate=0.05)))

# ---- the measured child --------------------------------------------------------------------------------------
def child(job: dict) -> dict:
    "One measured run in this process."
    import torch
    torch.manual_seed(0)
    torch.set_num_threads(job['threads'])  # one thread: on a shared 2-core machine OpenMP barriers turn contention into noise
    stamps, marks = [], {}
    if job['kind'] == 'plain':
        from plain_loop import plain_train
        marks['imports'] = time.perf_counter()
        losses = plain_train(Path(job['model']), Path(job['data']), job['steps'], job['resolution'], job['rank'], job['t5_len'],
                             on_step=lambda s: stamps.append(time.perf_counter()))
    elif job['kind'] == 'standby':  # `fluxid train ...` typed while `fluxid warm` is ready: this process is the client
        from fluxid_nb.warm import run_in_standby
        marks['imports'] = time.perf_counter()
        stamp_file = Path(job['out'])/f"{job['run']}.stamps.json"
        os.environ.update(BENCH_STAMPS=str(stamp_file), BENCH_THREADS=str(job['threads']))
        rc = run_in_standby(cli_args(job), entry='bench_train:standby_entry')
        if rc is None: raise RuntimeError("no `fluxid warm` standby was ready")
        if rc: raise RuntimeError(f"the run in the standby failed with status {rc}")
        stamps = [w - W0 + T0 for w in json.loads(stamp_file.read_text())]  # wall clock → this process's clock
        rows = [json.loads(l) for l in (Path(job['out'])/job['run']/'metrics.jsonl').read_text().splitlines()]
        losses = [r['loss'] for r in rows if 'loss' in r]
    else:
        from fluxid_nb.config import resolve_config
        cfg = resolve_config('demo', env={}, out_dir=job['out'], run_name=job['run'], **run_settings(job))
        from fluxid_nb.models import keep_bitsandbytes_out
        keep_bitsandbytes_out(cfg)  # as `fluxid train` does before anything imports peft or diffusers
        from fluxid_nb.cli import train_gated
        from fluxid_nb.train import Trainer
        marks['imports'] = time.perf_counter()
        stamp_steps(Trainer, stamps, time.perf_counter, marks)
        with open(os.devnull, 'w') as null, contextlib.redirect_stdout(null):  # its progress lines; errors stay on stderr
            losses = train_gated(cfg).losses
    if len(stamps) < 3: raise RuntimeError(f"only {len(stamps)} optimizer steps were stamped (need ≥ 3: --steps too small?)")
    rel = lambda k: marks[k] - T0 if k in marks else None
    ru = lambda who: resource.getrusage(who).ru_maxrss / 1024
    return dict(first_step_s=stamps[0] - T0, last_step_s=stamps[-1] - T0, sec_per_step=statistics.median(b - a for a, b in zip(stamps, stamps[1:])),
                steps_stamped=len(stamps), import_s=rel('imports'), setup_start_s=rel('setup_start'), setup_end_s=rel('setup_end'),
                peak_rss_mb=None if job['kind'] == 'standby' else ru(resource.RUSAGE_SELF),  # a standby's is not this process's
                peak_rss_children_mb=ru(resource.RUSAGE_CHILDREN),
                loss_first=losses[0], loss_last=losses[-1])

def run_settings(job: dict) -> dict:
    "The config keys of a measured fluxid run (on top of the demo profile), in-process or through `fluxid train`."
    return dict(model_path=job['model'], data_dir=job['data'], max_train_steps=job['steps'], sample_every_n_steps=0,
                checkpoint_every_n_steps=10_000, holdout_images=2, resolution=job['resolution'], network_dim=job['rank'],
                network_alpha=job['rank'], t5_max_length=job['t5_len'], **job.get('extra', {}))

def cli_args(job: dict) -> list[str]:
    "The `fluxid train` arguments of the same run as the in-process child's config."
    return (['train', '--profile', 'demo', '--run-name', job['run'], '--out-dir', job['out']]
            + [x for k, v in run_settings(job).items() for x in ('--set', f'{k}={v}')])

def stamp_steps(Trainer, stamps: list, clock, marks: dict | None = None):
    "Patch `Trainer.setup`: the original (timed into `marks`), then a `clock()` stamp after every optimizer step."
    setup = Trainer.setup
    def timed_setup(self, *a, **k):
        if marks is not None: marks['setup_start'] = clock()
        r = setup(self, *a, **k)
        if marks is not None: marks['setup_end'] = clock()
        step = self.optimizer.step
        def timed_step(*a, **k):
            r = step(*a, **k); stamps.append(clock()); return r
        self.optimizer.step = timed_step
        return r
    Trainer.setup = timed_setup

def standby_entry(argv: list[str]) -> int:
    "Runs inside the `fluxid warm` standby: `fluxid train` itself, with wall-clock stamps of its optimizer steps in $BENCH_STAMPS."
    import torch
    from fluxid_nb import cli, train
    torch.set_num_threads(int(os.environ.get('BENCH_THREADS', '1')))
    stamps = []
    stamp_steps(train.Trainer, stamps, time.time)
    try: return cli.main(argv)
    finally: Path(os.environ['BENCH_STAMPS']).write_text(json.dumps(stamps))

def child_env(cache: str) -> dict:
    "Every child's environment; the `fluxid warm` manager gets the same (its key hashes it): bench/ importable, sockets in --out."
    return dict(os.environ, PYTHONWARNINGS='ignore', FLUXID_CACHE=str(cache), PYTHONPATH=os.pathsep.join([str(ROOT/'bench'), str(ROOT)]),
                XDG_RUNTIME_DIR=os.environ.get('BENCH_XDG', ''))

def start_warm(cache: Path) -> subprocess.Popen:
    "`fluxid warm` for this cache folder (in the foreground of a child of ours), once ready."
    p = subprocess.Popen([sys.executable, '-m', 'fluxid_nb.warm', '--foreground', '--idle-minutes', '60'], cwd=ROOT,
                         env=child_env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_warm(cache)
    return p

def wait_warm(cache: Path, timeout: float = 300):
    "Until a standby is ready: nothing is measured while one imports (it would take a core)."
    code = 'from fluxid_nb.warm import socket_path; print(socket_path())'
    path = Path(subprocess.run([sys.executable, '-c', code], env=child_env(cache), capture_output=True, text=True, check=True).stdout.strip())
    t = time.time()
    while not path.exists():
        if time.time() - t > timeout: raise RuntimeError(f"no `fluxid warm` standby ready after {timeout:.0f} s ({path})")
        time.sleep(0.5)
    time.sleep(1)  # the manager notes the standby's readiness; let the machine settle

def stop_warm(p: subprocess.Popen, cache: Path):
    subprocess.run([sys.executable, '-m', 'fluxid_nb.warm', '--stop'], env=child_env(cache), capture_output=True)
    try: p.wait(30)
    except subprocess.TimeoutExpired: p.kill()

def run_job(job: dict) -> dict:
    "Run `job` in a fresh interpreter; its result line starts with @@."
    cmd = [sys.executable, __file__, '--child', json.dumps(job)] + (['--no-bitsandbytes'] if job['kind'] == 'plain' else [])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=child_env(job['cache']))
    line = next((l for l in r.stdout.splitlines() if l.startswith('@@')), None)
    if r.returncode or not line: raise RuntimeError(f"bench job failed: {job}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return json.loads(line[2:])

# ---- the parent: models, data, the alternated repetitions ---------------------------------------------------------
def prepare(work: str, names: list[str]) -> dict:
    "Child: the models (name → folder, resolution, LoRA rank, T5 length), built offline on first use, and the demo dataset."
    from fluxid_nb.models import tiny_flux
    from fluxid_nb.demo import demo_subject
    from models import build_bench_flux, BIG
    build = dict(demo=lambda: (str(tiny_flux()), 256, 8, 64),
                 bigger=lambda: (str(build_bench_flux(Path(work)/'models'/'bench-big-v1', **BIG)), 256, 16, 128))
    return dict(models={n: build[n]() for n in names}, demo=str(demo_subject()))

def models_and_demo(work: Path, names: list[str]) -> tuple[dict, Path]:
    "`prepare` in its own process: the parent never holds torch or weights, whose peak RSS its children would inherit."
    r = subprocess.run([sys.executable, __file__, '--prepare', json.dumps(dict(work=str(work), names=names))],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS='ignore'))
    line = next((l for l in r.stdout.splitlines() if l.startswith('@@')), None)
    if r.returncode or not line: raise RuntimeError(f"building the bench models failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    d = json.loads(line[2:])
    return {k: tuple(v) for k, v in d['models'].items()}, Path(d['demo'])

def private_dataset(demo: Path, folder: Path) -> tuple[Path, Path]:
    "A fresh copy of the demo dataset in `folder`, and the caption file the edited runs change."
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(demo, folder)
    return folder, sorted(folder.rglob('*.txt'))[0]

def bench_model(name: str, spec: tuple, demo: Path, out: Path, a) -> list[dict]:
    "All runs of one model: `reps` alternated repetitions of plain, cold, edited, warm; then the levers."
    model, res, rank, t5 = spec
    data, caption = private_dataset(demo, out/'data'/name)
    original = caption.read_text()
    shutil.rmtree(out/'runs'/name, ignore_errors=True)
    base = dict(model=str(model), data=str(data), steps=a.steps, resolution=res, rank=rank, t5_len=t5,
                out=str(out/'runs'/name), threads=a.threads)
    plain_cache = Path(tempfile.mkdtemp(prefix='cache-plain-', dir=out))  # the plain loop caches nothing; keep it off ~/.cache anyway
    runs, cache = [], None
    wcache = out/f'cache-warm-{name}'  # fixed for the standby's lifetime (FLUXID_CACHE is part of its key); emptied for cold
    wcache.mkdir(parents=True, exist_ok=True)
    manager = None
    def measure(mode, rep, **job):
        r = run_job(dict(base, **job)) | dict(model=name, trainer=mode, rep=rep)
        runs.append(r)
        print(f"  {name:<7} rep {rep}  {mode:<32} first step {r['first_step_s']:6.1f} s   {r['sec_per_step']:.3f} s/step"
              f"   peak {_mb(r['peak_rss_mb'])} MB", flush=True)
    try:
        for rep in range(1, a.reps + 1):
            measure(PLAIN, rep, kind='plain', cache=str(plain_cache), run=f'plain_r{rep}')
            if cache: shutil.rmtree(cache, ignore_errors=True)
            cache = Path(tempfile.mkdtemp(prefix='cache-', dir=out))  # empty: the cold run builds everything
            caption.write_text(original)                                # every cold run sees the same dataset
            up = Path(tempfile.mkdtemp(prefix='cache-up-', dir=out))
            measure(COLD_UP, rep, kind='fluxid', cache=str(up), run=f'cold_up_r{rep}', extra=dict(cache_encoding='upfront'))
            shutil.rmtree(up, ignore_errors=True)
            measure(COLD, rep, kind='fluxid', cache=str(cache), run=f'cold_r{rep}')
            caption.write_text(original.rstrip() + ', smiling\n')        # the user fixes one caption and reruns
            measure(EDITED, rep, kind='fluxid', cache=str(cache), run=f'edited_r{rep}')
            measure(WARM, rep, kind='fluxid', cache=str(cache), run=f'warm_r{rep}')
            if not a.no_warm:
                manager = manager or start_warm(wcache)
                for c in wcache.iterdir(): shutil.rmtree(c) if c.is_dir() else c.unlink()
                caption.write_text(original)
                measure(COLD_W, rep, kind='standby', cache=str(wcache), run=f'cold_w_r{rep}'); wait_warm(wcache)
                measure(WARM_W, rep, kind='standby', cache=str(wcache), run=f'warm_w_r{rep}'); wait_warm(wcache)
        if name in a.levers.split(','):  # the identity levers' cost per step, beside the warm run without them
            for lbl, tag, extra in LEVERS:
                measure(f'fluxid, {lbl}', 1, kind='fluxid', cache=str(cache), run=f'{tag}', extra=extra)
    finally:
        if manager: stop_warm(manager, wcache)
        shutil.rmtree(wcache, ignore_errors=True)
        caption.write_text(original)
        for c in (cache, plain_cache):
            if c: shutil.rmtree(c, ignore_errors=True)
    return runs

# ---- the report ------------------------------------------------------------------------------------------------
def summarize(runs: list[dict]) -> list[dict]:
    "One row per (model, trainer): medians over the repetitions, first step's min and max."
    rows = []
    for key in dict.fromkeys((r['model'], r['trainer']) for r in runs):
        rs = [r for r in runs if (r['model'], r['trainer']) == key]
        med = lambda k: statistics.median(r[k] for r in rs)
        fs = [r['first_step_s'] for r in rs]
        rows.append(dict(model=key[0], trainer=key[1], n=len(rs), sec_per_step=med('sec_per_step'), first_step_s=med('first_step_s'), last_step_s=med('last_step_s'),
                         first_step_min=min(fs), first_step_max=max(fs), peak_rss_mb=_med(r['peak_rss_mb'] for r in rs),
                         peak_rss_children_mb=med('peak_rss_children_mb'), import_s=med('import_s'),
                         setup_start_s=_med(r['setup_start_s'] for r in rs), setup_end_s=_med(r['setup_end_s'] for r in rs),
                         loss_first=med('loss_first'), loss_last=med('loss_last')))
    return rows

def _med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def _row(rows, model, trainer): return next((r for r in rows if r['model'] == model and r['trainer'] == trainer), None)
def _verdict(x, target): return f"target ≤ {target:.2f}×: {'PASS' if x <= target else 'MISS'}"

def _mb(x): return '–' if x is None else f'{x:.0f}'

def table(rows: list[dict]) -> str:
    out = ["| model | trainer / mode | s/step (median) | time to first step s, median (min–max) | × plain's first step | to last step s | peak RSS MB | loss first→last |",
           "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        p = _row(rows, r['model'], PLAIN)
        span = f" ({r['first_step_min']:.1f}–{r['first_step_max']:.1f})" if r['n'] > 1 else ' (1 run)'
        out.append(f"| {r['model']} | {r['trainer']} | {r['sec_per_step']:.3f} | {r['first_step_s']:.1f}{span} | "
                   f"{r['first_step_s'] / p['first_step_s']:.2f}× | {r['last_step_s']:.1f} | {_mb(r['peak_rss_mb'])} | {r['loss_first']:.3f}→{r['loss_last']:.3f} |")
    return '\n'.join(out)

def summary_lines(rows: list[dict]) -> list[str]:
    "Per model: the issue's targets against the plain loop's medians."
    out = []
    for m in dict.fromkeys(r['model'] for r in rows):
        p, c, e, w = (_row(rows, m, t) for t in (PLAIN, COLD, EDITED, WARM))
        x = lambda r: r['first_step_s'] / p['first_step_s']
        sps = w['sec_per_step'] / p['sec_per_step']
        sps_txt = (f"s/step {sps:.2f}× the plain loop's (warm unchanged; issue's baseline {SPS_TARGETS[m]:.2f}: "
                   f"{'PASS' if sps <= SPS_TARGETS[m] else 'MISS'})" if m in SPS_TARGETS else f"s/step {sps:.2f}× the plain loop's")
        cu = _row(rows, m, COLD_UP)
        out.append(f"- {m}: cold {x(c):.2f}× the plain loop's time to first step ({_verdict(x(c), TARGETS['cold'])}; "
                   f"{x(cu):.2f}× with everything encoded up front), "
                   f"warm unchanged {x(w):.2f}× ({_verdict(x(w), TARGETS['warm'])}), warm with one caption edited {x(e):.2f}×; {sps_txt}")
        cw, ww = _row(rows, m, COLD_W), _row(rows, m, WARM_W)
        if cw and ww:
            out.append(f"- {m}, with `fluxid warm` ready: cold {x(cw):.2f}× ({_verdict(x(cw), TARGETS['cold'])}), "
                       f"warm unchanged {x(ww):.2f}× ({_verdict(x(ww), TARGETS['warm'])})")
    return out

def phase_lines(rows: list[dict]) -> list[str]:
    "Where fluxid's time to first step goes (medians of the child's marks; not additive across repetitions exactly)."
    out = []
    for r in rows:
        if r['setup_start_s'] is None or r['trainer'] not in (COLD_UP, COLD, EDITED, WARM): continue
        out.append(f"- {r['model']}, {r['trainer']}: imports {r['import_s']:.1f} s, then {r['setup_start_s'] - r['import_s']:.1f} s "
                   f"before the trainer's setup (config; the dataset gate, where it runs first), setup {r['setup_end_s'] - r['setup_start_s']:.1f} s, "
                   f"then {r['first_step_s'] - r['setup_end_s']:.1f} s to the end of the first step")
    return out

def lever_lines(rows: list[dict]) -> list[str]:
    "Each lever's s/step against the warm, unchanged runs without it (same model, cache and steps)."
    out = []
    for r in rows:
        ref, lbl = _row(rows, r['model'], WARM), r['trainer'].removeprefix('fluxid, ')
        if ref and lbl in {l for l, _, _ in LEVERS}:
            out.append(f"- {r['model']}, {lbl}: {r['sec_per_step']:.3f} s/step against {ref['sec_per_step']:.3f} without "
                       f"({r['sec_per_step'] / ref['sec_per_step']:.2f}×), first step after {r['first_step_s']:.1f} s vs {ref['first_step_s']:.1f} s")
    return out

def report(rows: list[dict], a) -> str:
    head = (f"# fluxid vs a plain loop (CPU, {a.steps} steps, medians of {a.reps} alternated repetition{'s' * (a.reps != 1)}, "
            f"{a.threads} torch thread{'s' * (a.threads != 1)}; "
            f"the plain loop runs without bitsandbytes, as in the diffusers example's environment)")
    levers = lever_lines(rows)
    return '\n'.join([head, '', table(rows), '', *summary_lines(rows), '', "Where fluxid's time to first step goes (medians):",
                      *phase_lines(rows)] + (['', 'Identity levers (issue 11), one warm run each:', *levers] if levers else [])) + '\n'

def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('--child', help=argparse.SUPPRESS)
    ap.add_argument('--prepare', help=argparse.SUPPRESS)
    ap.add_argument('--no-bitsandbytes', action='store_true', help=argparse.SUPPRESS)  # read at the top of the file
    ap.add_argument('--steps', type=int, default=30); ap.add_argument('--out', default=str(ROOT/'output'/'bench'))
    ap.add_argument('--models', default='demo,bigger'); ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--reps', type=int, default=3, help='alternated repetitions per model (medians are reported)')
    ap.add_argument('--levers', default='demo', help="models on which the identity levers are timed too ('' for none)")
    ap.add_argument('--no-warm', action='store_true', help="skip the runs in a `fluxid warm` standby")
    a = ap.parse_args(argv)
    if a.child:
        print('@@' + json.dumps(child(json.loads(a.child)))); return
    if a.prepare:
        print('@@' + json.dumps(prepare(**json.loads(a.prepare)))); return
    out = Path(a.out).resolve(); out.mkdir(parents=True, exist_ok=True)
    os.environ['BENCH_XDG'] = str(out/'xdg'); (out/'xdg').mkdir(mode=0o700, exist_ok=True)  # the standby's socket, short and private
    mods, demo = models_and_demo(out, a.models.split(','))
    runs = []
    for name in mods:
        runs += bench_model(name, mods[name], demo, out, a)
    rows = summarize(runs)
    md = report(rows, a)
    info = dict(steps=a.steps, reps=a.reps, threads=a.threads, plain_without_bitsandbytes=True, cpu_count=os.cpu_count(),
                models={k: dict(path=str(v[0]), resolution=v[1], rank=v[2], t5_len=v[3]) for k, v in mods.items()})
    (out/'bench_train.json').write_text(json.dumps(dict(info, rows=rows, runs=runs), indent=1))
    (out/'bench_train.md').write_text(md)
    print(md)
    return rows

if __name__ == '__main__': main()
