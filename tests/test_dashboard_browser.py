"""The dashboard as a person uses it: JupyterLab on loopback, headless Chromium (Debian's chromium + chromium-driver)
driven by Selenium. Start a demo run with the Start button, watch the loss plot and the sample gallery update while
it trains, stop it with the Stop button, then upload a photo and caption it in the dataset panel.
Screenshots and the timeline go to the test's temporary folder (pytest keeps the last three:
/tmp/pytest-of-<user>/pytest-current/test_dashboard_in_jupyterlab*/screenshots/); nothing in the checkout changes,
except with README_SCREENSHOT=1 (`make screenshot`), which copies the training view to docs/dashboard.png."""
import hashlib, json, os, secrets, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parents[1]
README_SHOT = REPO/'docs'/'dashboard.png'
CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
CHROMEDRIVER = shutil.which('chromedriver') or '/usr/bin/chromedriver'
# the flags this closed network needs: no background connections, no QUIC, no first-run or sync traffic
CHROME_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                '--disable-background-networking', '--disable-component-update', '--disable-sync',
                '--disable-dev-shm-usage', '--window-size=1400,1100', '--force-device-scale-factor=1']


def _missing() -> list[str]:
    miss = []
    if not Path(CHROMIUM).is_file(): miss.append("chromium (Debian package `chromium`; .ci/install-browser.sh installs it)")
    if not Path(CHROMEDRIVER).is_file(): miss.append("chromedriver (Debian package `chromium-driver`; .ci/install-browser.sh installs it)")
    for mod, pkg in (('jupyterlab', 'jupyterlab'), ('selenium', 'selenium')):
        try: __import__(mod)
        except ImportError: miss.append(f"{pkg} (pip, requirements.txt)")
    return miss


@pytest.fixture(scope='module')
def browser_ready():
    miss = _missing()
    if miss:
        msg = "browser test needs " + '; '.join(miss)
        if os.environ.get('CI'): pytest.fail(msg + " — CI installs them (make test runs .ci/install-browser.sh), so this is an error there")
        pytest.skip(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _notebook(path: Path, data_dir: Path, out_dir: Path, prompts: Path):
    src = f"""from fluxid_nb.dashboard import dashboard
board = dashboard('demo', data_dir={str(data_dir)!r}, out_dir={str(out_dir)!r}, run_name='browser',
                  max_train_steps=400, sample_every_n_steps=20, checkpoint_every_n_steps=50,
                  sample_steps=2, sample_prompts={str(prompts)!r}, faces=False)
board"""
    nb = dict(nbformat=4, nbformat_minor=5, cells=[dict(cell_type='code', id='dash', metadata={}, execution_count=None,
                                                       outputs=[], source=src)],
              metadata=dict(kernelspec=dict(display_name='Python 3', language='python', name='python3'),
                            language_info=dict(name='python')))
    path.write_text(json.dumps(nb, indent=1))


@pytest.fixture(scope='module')
def lab(browser_ready, tmp_path_factory):
    "JupyterLab on 127.0.0.1, a random free port and a token, its config isolated in a temp folder."
    tmp = tmp_path_factory.mktemp('lab')
    root, cfg = tmp/'root', tmp/'config'
    (cfg/'labconfig').mkdir(parents=True); root.mkdir()
    # no news feed, no update check: nothing in the page reaches for the internet
    (cfg/'labconfig'/'page_config.json').write_text(json.dumps(
        {'disabledExtensions': {'@jupyterlab/apputils-extension:announcements': True}}))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(cfg), JUPYTER_RUNTIME_DIR=str(tmp/'runtime'),
               JUPYTERLAB_SETTINGS_DIR=str(tmp/'settings'), JUPYTERLAB_WORKSPACES_DIR=str(tmp/'workspaces'),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')])),
               OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', TOKENIZERS_PARALLELISM='false')  # 2 cores: leave one to Chromium
    log = open(tmp/'jupyterlab.log', 'w')
    proc = subprocess.Popen([sys.executable, '-m', 'jupyterlab', '--no-browser', '--allow-root', '--ServerApp.ip=127.0.0.1',
                             f'--ServerApp.port={port}', '--ServerApp.port_retries=0', f'--IdentityProvider.token={token}',
                             f'--ServerApp.root_dir={root}', '--LabApp.expose_app_in_browser=True',
                             '--LabApp.news_url=', '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate'],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}'
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f'{url}/api/status?token={token}', timeout=2) as r:
                    if r.status == 200: break
            except OSError: pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"JupyterLab did not start (exit {proc.poll()}):\n{(tmp/'jupyterlab.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield dict(url=url, token=token, root=root, tmp=tmp, log=tmp/'jupyterlab.log')
    finally:
        proc.terminate()
        try: proc.wait(20)
        except subprocess.TimeoutExpired: proc.kill()
        log.close()


@pytest.fixture(scope='module')
def driver(lab):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM  # Debian's chromium: Selenium Manager never runs, nothing is downloaded
    for f in CHROME_FLAGS + [f"--user-data-dir={lab['tmp']/'chrome-profile'}"]: opts.add_argument(f)
    d = webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=str(lab['tmp']/'chromedriver.log')), options=opts)
    d.set_page_load_timeout(120)
    try: yield d
    finally: d.quit()


def _wait(what: str, fn, timeout: float, every: float = 0.3):
    end = time.time() + timeout
    while True:
        v = fn()
        if v: return v
        if time.time() > end: raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


_VIEW = """
const q = s => document.querySelector(s);
const img = q('img.fluxid-loss'), latest = q('img.fluxid-sample-latest');
return {state: q('.fluxid-state') ? q('.fluxid-state').dataset.state : null,
        stats: q('.fluxid-stats') ? q('.fluxid-stats').innerText : '',
        loss: img && img.naturalWidth > 0 ? img.src : null,
        sample: q('.fluxid-sample-label') ? q('.fluxid-sample-label').innerText : '',
        sample_loaded: !!(latest && latest.naturalWidth > 0),
        errors: Array.from(document.querySelectorAll('.fluxid-error')).map(e => e.innerText.slice(0, 600))};
"""


def _docs_pictures() -> dict:
    "Content and modification time of every picture under docs/ (where a screenshot could land)."
    return {str(f.relative_to(REPO)): (hashlib.sha256(f.read_bytes()).hexdigest(), f.stat().st_mtime_ns)
            for f in sorted((REPO/'docs').rglob('*.png')) if f.is_file()}


def test_dashboard_in_jupyterlab(lab, driver, tmp_path):
    from selenium.webdriver.common.by import By
    from fluxid_nb.demo import demo_subject
    from fluxid_nb.lora import list_checkpoints
    t0, docs_before = time.time(), _docs_pictures()
    shots = tmp_path/'screenshots'; shots.mkdir()
    data = demo_subject(tmp_path/'subject')              # a writable copy: the dataset panel uploads into it
    prompts = tmp_path/'prompts.txt'
    prompts.write_text('a photo of {trigger}, front view portrait\n{trigger}, full body shot, city street\n')
    out = tmp_path/'runs'
    _notebook(lab['root']/'dashboard_test.ipynb', data, out, prompts)

    driver.get(f"{lab['url']}/lab/tree/dashboard_test.ipynb?token={lab['token']}")
    kernel_idle = """const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
        const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
        return k ? k.status : null;"""
    _wait('the notebook and an idle kernel', lambda: driver.execute_script(kernel_idle) == 'idle', 180)
    driver.execute_script("window.jupyterapp.commands.execute('application:toggle-left-area')")  # room for the panels
    driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    _wait('the dashboard widgets', lambda: driver.find_elements(By.CSS_SELECTOR, '.fluxid-dashboard .fluxid-start'), 180)
    _wait('the key values table', lambda: driver.find_elements(By.CSS_SELECTOR, '.fluxid-key-values'), 60)
    table = driver.find_element(By.CSS_SELECTOR, '.fluxid-key-values').text
    assert 'network_dim 8 profile flux_demo.toml' in table and 'max_train_steps 400 parameter max_train_steps' in table, table
    driver.save_screenshot(str(shots/'01_profile.png'))

    # Start: the view switches to the training tab and trains in a background thread
    driver.find_element(By.CSS_SELECTOR, 'button.fluxid-start').click()
    seen_loss, seen_samples, states, timeline = [], [], [], []
    def progressing():
        v = driver.execute_script(_VIEW)
        assert not v['errors'], v['errors']
        states.append(v['state'])
        if v['state'] == 'running':  # updates that arrive while the run goes on
            if v['loss'] and v['loss'] not in seen_loss:
                seen_loss.append(v['loss']); timeline.append((round(time.time() - t0, 1), 'loss', v['stats']))
            if v['sample_loaded'] and v['sample'] and v['sample'] not in seen_samples:
                seen_samples.append(v['sample']); timeline.append((round(time.time() - t0, 1), 'sample', v['sample']))
        assert v['state'] in ('idle', 'setting up', 'running'), f"the run ended before the test could stop it: {v}"
        return len(seen_loss) >= 3 and len(seen_samples) >= 2
    _wait('3 loss plot updates and 2 sample grids while training runs', progressing, 300)
    assert len({s for s in seen_samples}) >= 2 and any('step 0' not in s for s in seen_samples), seen_samples
    assert 'ETA' in timeline[-1][2] or any('ETA' in t[2] for t in timeline if t[1] == 'loss'), timeline
    driver.execute_script("document.querySelector('.fluxid-dashboard').scrollIntoView()")
    driver.save_screenshot(str(shots/'02_training.png'))

    # Stop: the trainer writes a checkpoint at the next sync point, then saves the LoRA
    driver.find_element(By.CSS_SELECTOR, 'button.fluxid-stop').click()
    v = _wait('the run to stop', lambda: (lambda v: v if v['state'] in ('stopped', 'finished', 'failed') else None)(driver.execute_script(_VIEW)), 300)
    assert v['state'] == 'stopped' and not v['errors'], v
    step = int(v['stats'].split('step ')[1].split('/')[0])
    run = out/'browser'
    assert 0 < step < 400
    assert list_checkpoints(run/'checkpoints')[-1].name == f'step_{step:06d}'  # stopped after a checkpoint
    assert (run/'browser.safetensors').is_file()
    _wait('the view saved as dashboard.png', lambda: (run/'dashboard.png').is_file(), 60)
    _wait('the last frame under the dashboard', lambda: driver.find_elements(By.CSS_SELECTOR, '.jp-OutputArea-output img[src^="data:image/png"]'), 30)
    driver.execute_script("document.querySelector('.fluxid-dashboard').scrollIntoView()")
    driver.save_screenshot(str(shots/'03_stopped.png'))

    # Dataset panel: upload a photo through the file picker, caption it without the trigger, save
    tab = _wait('the Dataset tab', lambda: [t for t in driver.find_elements(By.CSS_SELECTOR, '.fluxid-dashboard .lm-TabBar-tab')
                                            if t.text.strip() == 'Dataset'], 30)
    tab[0].click()
    from PIL import Image
    photo = tmp_path/'my_new_photo.png'
    Image.new('RGB', (320, 384), (40, 160, 90)).save(photo)
    # the upload button opens the OS file chooser through a detached <input type=file>; headless, that input is put
    # into the page instead, and WebDriver picks the file in it (the widget's own change handler does the rest)
    driver.execute_script("""const click = HTMLInputElement.prototype.click;
        HTMLInputElement.prototype.click = function () {
            if (this.type !== 'file') return click.call(this);
            this.id = 'fluxid-test-file-chooser'; this.style.display = 'block'; document.body.appendChild(this); };""")
    driver.find_element(By.CSS_SELECTOR, 'button.fluxid-upload').click()
    _wait('the file chooser', lambda: driver.find_elements(By.ID, 'fluxid-test-file-chooser'), 10)[0].send_keys(str(photo))
    _wait('the upload to be saved', lambda: 'saved 1 file(s): images/my_new_photo.png' in
          (driver.execute_script("const e = document.querySelector('.fluxid-upload-result'); return e ? e.innerText : ''")), 60)
    assert (data/'images'/'my_new_photo.png').read_bytes() == photo.read_bytes()
    box = driver.find_element(By.CSS_SELECTOR, '.fluxid-caption textarea')
    _wait('the editor to open the new photo', lambda: driver.execute_script(
        "return document.querySelector('.fluxid-caption-pick select').value") == 'my_new_photo', 30)
    box.clear(); box.send_keys('green square, mid shot, soft light')
    _wait('the note that the trigger will be added', lambda: 'is not in this caption' in
          driver.find_element(By.CSS_SELECTOR, '.fluxid-caption-findings').text, 30)
    driver.find_element(By.CSS_SELECTOR, 'button.fluxid-caption-save').click()
    _wait('the caption to be saved', lambda: (data/'captions'/'my_new_photo.txt').is_file()
          and driver.find_elements(By.CSS_SELECTOR, '.fluxid-saved'), 30)
    assert (data/'captions'/'my_new_photo.txt').read_text() == 'ohwx, green square, mid shot, soft light\n'
    # Analyze: the verdict, and the new photo's thumbnail flagged (a flat green square is blurry to the analyzer)
    driver.find_element(By.CSS_SELECTOR, 'button.fluxid-analyze').click()
    _wait('the analyzer verdict', lambda: 'Analyzer verdict' in driver.find_element(By.CSS_SELECTOR, '.fluxid-dataset-verdict').text, 120)
    card = _wait('the flagged thumbnail', lambda: [c for c in driver.find_elements(By.CSS_SELECTOR, '.fluxid-thumb.fluxid-flagged')
                                                   if 'my_new_photo' in c.text], 30)[0]
    assert 'blurry' in card.text, card.text
    assert not driver.execute_script(_VIEW)['errors']
    driver.execute_script("arguments[0].scrollIntoView()", card)
    driver.save_screenshot(str(shots/'04_dataset.png'))

    (shots/'timeline.json').write_text(json.dumps(dict(seconds=round(time.time() - t0, 1), stopped_at=step,
                                                       loss_updates=len(seen_loss), samples=seen_samples, timeline=timeline), indent=1))
    # `make test` leaves the checkout as it was; only `make screenshot` refreshes the README's picture
    assert _docs_pictures() == docs_before, "the browser test wrote to docs/"
    if os.environ.get('README_SCREENSHOT') == '1':
        shutil.copy(shots/'02_training.png', README_SHOT)
        print(f"copied {shots/'02_training.png'} to {README_SHOT}")
