"""`make bench`: the CPU side-by-side table, the analyzer's and the captioner's throughput, and gpu_bench (full on CUDA, reduced on CPU).

    .venv/bin/python bench/run_all.py [--steps 30] [--skip-train] [--skip-analyzer] [--skip-caption]

Results: output/bench/*.md and *.json (a table and JSON per part). Benchmarks, not timed tests."""
from __future__ import annotations
import argparse, subprocess, sys, time
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--steps', type=int, default=30); ap.add_argument('--out', default=str(ROOT/'output'/'bench'))
    ap.add_argument('--skip-train', action='store_true'); ap.add_argument('--skip-analyzer', action='store_true')
    ap.add_argument('--skip-caption', action='store_true')
    a = ap.parse_args()
    py, t0 = sys.executable, time.time()
    parts = []
    if not a.skip_train: parts.append([py, str(ROOT/'bench'/'bench_train.py'), '--steps', str(a.steps), '--out', a.out])
    if not a.skip_analyzer: parts.append([py, str(ROOT/'bench'/'bench_analyze.py'), '--out', a.out])
    if not a.skip_caption: parts.append([py, str(ROOT/'bench'/'bench_caption.py'), '--out', a.out])
    import torch
    parts.append([py, str(ROOT/'bench'/'gpu_bench.py'), '--out', a.out] + ([] if torch.cuda.is_available() else ['--reduced']))
    for cmd in parts:  # one heavy process at a time
        print(f"$ {' '.join(Path(c).name if i < 2 else c for i, c in enumerate(cmd))}", flush=True)
        subprocess.run(cmd, check=True)
    print(f"bench done in {time.time() - t0:.0f} s; tables in {a.out}")

if __name__ == '__main__': main()
