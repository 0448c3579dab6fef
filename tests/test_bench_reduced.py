"""bench/gpu_bench.py --reduced runs on CPU and prints the GPU table's format (what CI keeps working)."""
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_gpu_bench_reduced(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT/'bench'/'gpu_bench.py'), '--reduced', '--out', str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    assert '| base | profile | resolution | tokens | s/step | peak GiB | planner GiB | planner error | bf16 FLOP-floor fraction |' in out
    data = json.loads((tmp_path/'gpu_bench_reduced.json').read_text())
    rows = [x for x in data['rows'] if 'skipped' not in x]
    assert {(x['base'], x['profile']) for x in rows} == {(b, p) for b in ('bf16', 'fp8', 'nf4') for p in ('fast', 'final')}
    assert {x['resolution'] for x in rows} == {256, 320, 384}
    for x in rows:
        assert x['sec_per_step'] > 0 and x['peak_gib'] > 0 and x['planned_gib'] > 0
        assert abs(x['plan_error']) < 0.5, x   # tiny widths: fixed costs dominate; the full-width check is test_memory
    assert any(l['lever'].startswith('sdpa') and 'sec_per_step' in l for l in data['levers'])
    assert (tmp_path/'gpu_bench_reduced.md').read_text().startswith('# gpu_bench (reduced, CPU)')
