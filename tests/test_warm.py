"`fluxid warm` end to end: a manager, its standbys, real `fluxid` jobs through client processes."
import os, re, signal, subprocess, sys, time
from pathlib import Path
from unittest import mock
import pytest
from fluxid_nb import warm

PY, ROOT = sys.executable, Path(warm.__file__).resolve().parents[1]
CLIENT = ("import sys; from fluxid_nb.warm import run_in_standby\n"
          "r = run_in_standby(sys.argv[2:], entry=sys.argv[1] or None)\n"
          "sys.exit(99 if r is None else r)")  # 99: no standby, the command would run in-process


def probe(argv):
    "A job for the standby (entry 'tests.test_warm:probe'): `threads N` matmul on N threads, `tty`, `sleep`."
    if argv[0] == 'threads':
        import torch
        torch.set_num_threads(int(argv[1]))
        a = torch.randn(512, 512, generator=torch.Generator().manual_seed(0))
        ok = torch.allclose(a @ a, (a.double() @ a.double()).float(), atol=1e-3)
        print(f"threads={torch.get_num_threads()} ok={ok}", flush=True)
        return 0 if ok else 1
    if argv[0] == 'tty':
        from tqdm import tqdm
        for _ in tqdm(range(3), desc='bar'): pass
        print(f"isatty={sys.stdin.isatty()},{sys.stdout.isatty()},{sys.stderr.isatty()} "
              f"line_buffering={sys.stdout.line_buffering}")
        return 0
    print('sleeping', flush=True); time.sleep(120); return 0


def sock(env) -> Path:
    with mock.patch.dict(os.environ, env, clear=True): return warm.socket_path()


def wait_ready(env, timeout=120):
    "Poll until the standby's socket appears (the standby imports torch and diffusers first: slow on a busy machine)."
    p, t0 = sock(env), time.monotonic()
    while not p.exists():
        assert time.monotonic() - t0 < timeout, f"no standby at {p} after {timeout} s"
        time.sleep(0.2)


def client(env, *argv, entry='', **kw):
    return subprocess.run([PY, '-c', CLIENT, entry, *argv], env=env, capture_output=True, text=True, timeout=300,
                          cwd=ROOT, **kw)


def job_pid(r) -> int:
    m = re.search(r"started in the warm process \(fluxid warm, pid (\d+)\)", r.stderr)
    assert m, r.stderr
    return int(m.group(1))


@pytest.fixture(scope='module')
def manager(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('warm')
    env = dict(os.environ, FLUXID_CACHE=str(tmp/'cache'), XDG_RUNTIME_DIR=str(tmp/'rt'))
    env.pop('FLUXID_WARM', None)
    (tmp/'rt').mkdir(mode=0o700)
    stale = sock(env).with_name(sock(env).name.split('-')[0] + '-00000000.sock')
    stale.parent.mkdir(mode=0o700); stale.touch()  # as a killed manager leaves it
    log = open(tmp/'manager.log', 'w+')
    proc = subprocess.Popen([PY, '-m', 'fluxid_nb.warm', '--foreground', '--idle-minutes', '5'], env=env, cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)
    yield env, proc, stale, log
    if proc.poll() is None: proc.kill()
    log.seek(0); print(log.read())


def test_jobs_run_in_fresh_standbys_with_the_clients_fds_and_environment(manager):
    env, proc, stale, _ = manager
    wait_ready(env)
    assert not stale.exists()
    r1 = client(env, 'dry-run', '--profile', 'demo')
    assert r1.returncode == 0, r1.stderr
    assert 'commands that would run' in r1.stdout  # the job's stdout came through the client's fd 1
    wait_ready(env)
    r2 = client(dict(env, MAX_STEPS='7'), 'dry-run', '--profile', 'demo')  # not an import-time variable: same standby
    assert r2.returncode == 0, r2.stderr
    assert re.search(r"max_train_steps +7 +← env MAX_STEPS=7", r2.stdout)
    assert job_pid(r1) != job_pid(r2)  # one job per process: a second standby took the second job


def test_a_failing_job_returns_its_status(manager):
    env, *_ = manager
    wait_ready(env)
    r = client(env, 'dry-run', '--profile', 'no-such-profile')
    assert r.returncode == 2 and 'not found' in r.stderr, r.stderr
    job_pid(r)


def test_another_environment_or_opt_out_finds_no_standby(manager):
    env, *_ = manager
    wait_ready(env)
    for other in (dict(env, OMP_NUM_THREADS='3' if env.get('OMP_NUM_THREADS') != '3' else '5'), dict(env, FLUXID_WARM='0')):
        t0 = time.monotonic()
        r = client(other, 'dry-run', '--profile', 'demo')
        assert r.returncode == 99 and r.stdout == '', r.stderr
        assert time.monotonic() - t0 < 30
    assert sock(env).exists()  # still there for the next matching client


def test_first_torch_op_in_a_job_uses_two_threads(manager):
    env, *_ = manager
    wait_ready(env)
    r = client(env, 'threads', '2', entry='tests.test_warm:probe')
    assert r.returncode == 0 and 'threads=2 ok=True' in r.stdout, r.stdout + r.stderr


def test_a_terminal_stays_a_terminal(manager):
    import fcntl, pty, struct, termios
    env, *_ = manager
    wait_ready(env)
    m, s = pty.openpty()
    fcntl.ioctl(s, termios.TIOCSWINSZ, struct.pack('HHHH', 24, 80, 0, 0))  # a new pty is 0 columns wide: no bar
    p = subprocess.Popen([PY, '-c', CLIENT, 'tests.test_warm:probe', 'tty'], env=env, cwd=ROOT, stdin=s, stdout=s, stderr=s)
    os.close(s)
    assert p.wait(timeout=120) == 0
    out = b''
    while True:
        try: chunk = os.read(m, 4096)
        except OSError: break  # EIO: all writers closed
        if not chunk: break
        out += chunk
    os.close(m)
    text = out.decode(errors='replace')
    assert 'isatty=True,True,True line_buffering=True' in text and 'bar: 100%' in text, text


def test_ctrl_c_is_forwarded_to_the_job(manager):
    env, *_ = manager
    wait_ready(env)
    p = subprocess.Popen([PY, '-c', CLIENT, 'tests.test_warm:probe', 'sleep'], env=env, cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline() == 'sleeping\n'
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and 'KeyboardInterrupt' in err, err


def test_second_manager_says_so_then_stop_removes_the_socket(manager):
    env, proc, _, log = manager
    wait_ready(env)
    r = subprocess.run([PY, '-m', 'fluxid_nb.warm', '--foreground'], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and 'already running' in r.stdout
    r = subprocess.run([PY, '-m', 'fluxid_nb.warm', '--status'], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert f"pid {proc.pid} (this environment): standby ready" in r.stdout, r.stdout
    r = subprocess.run([PY, '-m', 'fluxid_nb.warm', '--stop'], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and str(proc.pid) in r.stdout
    assert proc.wait(timeout=30) == 0
    assert not sock(env).exists() and not list(sock(env).parent.glob('*.sock'))
    log.seek(0); assert log.read().count('took a job') == 6
    assert client(env, 'dry-run', '--profile', 'demo').returncode == 99


def test_idle_manager_stops_and_takes_its_standby_along(tmp_path):
    env = dict(os.environ, FLUXID_CACHE=str(tmp_path/'cache'), XDG_RUNTIME_DIR=str(tmp_path))
    env.pop('FLUXID_WARM', None)
    r = subprocess.run([PY, '-m', 'fluxid_nb.warm', '--foreground', '--idle-minutes', '0.05'], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and 'without a job, stopping' in r.stdout, r.stdout + r.stderr
    assert not list((tmp_path/'fluxid').glob('*.sock'))
    out = subprocess.run(['ps', '-eo', 'args'], capture_output=True, text=True).stdout
    assert str(tmp_path) not in out and not sock(env).exists()
