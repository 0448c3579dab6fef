"""The dashboard notebook without a widget front end: papermill runs the same cells, starts a short demo run from
the parameters, and the saved notebook keeps the training view's last frame (the run folder keeps the files)."""
import base64, json, os, subprocess, sys
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parents[1]


def test_papermill_runs_the_dashboard_headless(tmp_path):
    prompts = tmp_path/'prompts.txt'
    prompts.write_text('a photo of {trigger}\n{trigger}, full body shot\n')
    out_nb = tmp_path/'dashboard_run.ipynb'
    overrides = json.dumps(dict(run_name='papermill', sample_every_n_steps=10, sample_steps=2, sample_prompts=str(prompts),
                                checkpoint_every_n_steps=10))
    env = dict(os.environ, OMP_NUM_THREADS='1')
    r = subprocess.run([sys.executable, '-m', 'papermill', str(REPO/'nbs'/'20_dashboard.ipynb'), str(out_nb),
                        '-p', 'start', 'True', '-p', 'max_steps', '20', '-p', 'out_dir', str(tmp_path/'runs'),
                        '-y', f'overrides: {overrides}', '--cwd', str(tmp_path), '-k', 'python3'],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    run = tmp_path/'runs'/'papermill'
    assert (run/'dashboard.png').is_file() and (run/'papermill.safetensors').is_file() and (run/'loss.png').is_file()
    nb = json.loads(out_nb.read_text())
    outs = [o for c in nb['cells'] for o in c.get('outputs', [])]
    frames = [o for o in outs if o.get('output_type') == 'display_data' and 'image/png' in o.get('data', {})
              and 'fluxid training · papermill · finished' in ''.join(o['data'].get('text/plain', ''))]
    assert len(frames) == 1, [o.get('data', {}).get('text/plain') for o in outs if o.get('output_type') == 'display_data']
    png = base64.b64decode(frames[0]['data']['image/png'])
    assert png[:4] == b'\x89PNG' and png == (run/'dashboard.png').read_bytes()  # the frame in the notebook is the file
    assert 'step 20/20' in ''.join(frames[0]['data']['text/plain'])
    assert any('20 steps' in ''.join(o.get('text', '')) for o in outs if o.get('output_type') == 'stream')
