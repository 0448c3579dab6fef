"""Faults a pod sees, before training starts: a dataset path that is a file, symlink loops in the dataset folder, an
output folder that cannot be written, a disk too small for the run. Each is a clear message naming the path and the
fix, never a traceback; the dataset is not touched, and nothing is written before the checks pass.

Running as root (as on a pod, and here), a folder without write permission does not stop a write, so those tests say
what they really prove: a real file in place of the output folder and a real disk too small for a run are real; the
read-only file system and the missing permission are the kernel's answers (`statvfs`'s read-only flag, `access`)
replaced by a monkeypatch, which proves the decision and the message, not the kernel. A full disk during a checkpoint
write is `lora.save_state`'s, tested with the trainer."""
import dataclasses, errno, os, shutil
from pathlib import Path
import pytest
from fluxid_nb.analyze import analyze
from fluxid_nb.checks import disk_need, dry_run_report, preflight
from fluxid_nb.config import ConfigError, resolve_config
from fluxid_nb.data import DatasetError, load_dataset
from _data_helpers import make_dataset, snapshot

GB = 2**30


# --- the dataset path ---

@pytest.mark.parametrize('name,content,hint', [
    ('subject.zip', b'PK\x03\x04', 'unzip subject.zip'),
    ('photo1.jpg', b'\xff\xd8\xff', 'this one is in'),
    ('notes', b'my notes', 'folder holding the images'),
])
def test_dataset_path_that_is_a_file(tmp_path, name, content, hint):
    p = tmp_path/name; p.write_bytes(content)
    with pytest.raises(DatasetError) as e: load_dataset(p)
    msg = str(e.value)
    assert f"{p} is a file, not a folder" in msg and hint in msg and 'Option A' in msg and 'Option B' in msg
    a = analyze(p, profile='demo', faces=False)
    assert [f.code for f in a.findings] == ['dataset-folder'] and hint in a.findings[0].message
    assert p.read_bytes() == content


# --- symlink loops inside the dataset folder ---

def test_symlink_loops_in_the_dataset_folder_are_findings(tmp_path):
    d = make_dataset(tmp_path/'subj')
    os.symlink('.', d/'loop')                                                           # ln -s . loop
    os.symlink('b.jpg', d/'a.jpg'); os.symlink('a.jpg', d/'b.jpg')                      # a -> b -> a
    (d/'a.txt').write_text('ohwx, a'); (d/'b.txt').write_text('ohwx, b')
    (d/'good2.txt').unlink(); os.symlink('c.txt', d/'good2.txt'); os.symlink('good2.txt', d/'c.txt')  # a caption loop
    before = snapshot(d)
    ds = load_dataset(d)
    by = {(f.code, f.files[0]): f for f in ds.findings}
    cyc = by[('symlink-cycle', 'loop')]
    assert cyc.severity == 'warning' and str(d) in cyc.message and 'Remove the link' in cyc.message
    a = by[('symlink-loop', 'a.jpg')]
    assert a.severity == 'error' and 'a.jpg → b.jpg → a.jpg' in a.message and 'real file' in a.message
    assert by[('symlink-loop', 'b.jpg')].severity == 'error'
    cap = by[('symlink-loop', 'good2.txt')]
    assert cap.severity == 'error' and 'good2.txt → c.txt → good2.txt' in cap.message
    assert [it.name for it in ds.items] == ['good0', 'good1']
    res = analyze(d, profile='demo', faces=False)  # the analyzer's loader path: the same findings, no traceback
    assert {('symlink-loop', 'a.jpg'), ('symlink-cycle', 'loop'), ('symlink-loop', 'good2.txt')} <= {(f.code, f.files[0]) for f in res.findings if f.files}
    assert snapshot(d) == before


@pytest.mark.parametrize('sub', ['images', 'captions'])
def test_split_layout_folder_that_is_a_symlink_loop(tmp_path, sub):
    d = make_dataset(tmp_path/'subj', layout='split')
    shutil.rmtree(d/sub); os.symlink(sub, d/sub)
    with pytest.raises(DatasetError) as e: load_dataset(d)
    assert f"{sub} is a symlink loop ({sub} → {sub})" in str(e.value) and 'real folder' in str(e.value)
    a = analyze(d, profile='demo', faces=False)
    assert [f.code for f in a.findings] == ['dataset-folder'] and 'symlink loop' in a.findings[0].message


def test_dataset_folder_that_is_a_symlink_loop(tmp_path):
    os.symlink('other', tmp_path/'subj'); os.symlink('subj', tmp_path/'other')
    with pytest.raises(DatasetError, match='symlink loop \\(subj → other → subj\\).*Point DATA_DIR at the real folder'):
        load_dataset(tmp_path/'subj')


# --- the output folder ---

def _cfg(out, **kw):
    return resolve_config('demo', env={}, run_name='run', out_dir=str(out), **kw)


def test_output_folder_that_is_a_file(tmp_path):
    (tmp_path/'out').write_text('not a folder')
    c = _cfg(tmp_path/'out')
    with pytest.raises(ConfigError) as e: preflight(c)
    msg = str(e.value)
    assert f"{tmp_path/'out'} is a file, not a folder" in msg and 'OUT_DIR' in msg and 'parameter out_dir' in msg
    assert (tmp_path/'out').read_text() == 'not a folder'
    assert 'output: NOT USABLE' in dry_run_report(c)


def test_read_only_file_system(tmp_path, monkeypatch):
    "statvfs's read-only flag stops root too; it is faked here (no read-only mount to use): the decision and message."
    real = os.statvfs
    class RO:
        def __init__(self, st): self.st = st
        def __getattr__(self, k): return getattr(self.st, k)
        f_flag = os.ST_RDONLY
    monkeypatch.setattr(os, 'statvfs', lambda p: RO(real(p)) if Path(p) == tmp_path else real(p))
    with pytest.raises(ConfigError) as e: preflight(_cfg(tmp_path/'out'))
    assert f"{tmp_path} is on a read-only file system" in str(e.value) and 'set OUT_DIR' in str(e.value)
    assert not (tmp_path/'out').exists()


def test_output_folder_without_write_permission(tmp_path, monkeypatch):
    "Real for a non-root user; as root, access() is made to answer as it would for one (root may write anyway)."
    locked = tmp_path/'locked'; locked.mkdir(); locked.chmod(0o555)
    if os.geteuid() == 0:
        real = os.access
        monkeypatch.setattr(os, 'access', lambda p, mode, **k: False if Path(p) == locked else real(p, mode, **k))
    with pytest.raises(ConfigError) as e: preflight(_cfg(locked/'out'))
    assert f"{locked} is not writable by this user" in str(e.value) and 'chmod' in str(e.value) and 'OUT_DIR' in str(e.value)
    locked.chmod(0o755)
    assert not (locked/'out').exists()


def test_write_test_failure_names_folder_and_leaves_nothing(tmp_path, monkeypatch):
    "Flags can say yes and the write still fail (quota, a full disk, NFS): the test write is caught, named, cleaned up."
    def full(self, data): raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(Path, 'write_bytes', full)
    with pytest.raises(ConfigError) as e: preflight(_cfg(tmp_path/'out'))
    assert 'No space left on device' in str(e.value) and 'free space, or set OUT_DIR' in str(e.value)
    monkeypatch.undo()
    assert list((tmp_path/'out'/'run').iterdir()) == []


def test_writable_output_folder(tmp_path):
    c = _cfg(tmp_path/'out')
    assert preflight(c, write=False)[0].startswith(f"output: {tmp_path/'out'/'run'} can be written")
    assert not (tmp_path/'out').exists()  # looking (the dry run) makes nothing
    assert preflight(c)[0].startswith(f"output: {tmp_path/'out'/'run'} is writable")
    assert list((tmp_path/'out'/'run').iterdir()) == []  # the test file is gone


# --- free disk space ---

def test_disk_too_small_is_refused_before_anything_is_written(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    c = _cfg(tmp_path/'out')
    with pytest.raises(ConfigError) as e: preflight(c, lora_params=free // 12)  # one checkpoint alone fills the disk
    msg = str(e.value)
    assert 'free on the disk of' in msg and 'the first checkpoint and the LoRA files need about' in msg and 'set OUT_DIR' in msg
    assert not (tmp_path/'out').exists()
    lines = preflight(c, lora_params=free // 40)  # room for the first checkpoint, not for four at once
    assert lines[-1].startswith('warning: ') and 'previous one stays usable' in lines[-1] and 'keep_last_n_checkpoints' in lines[-1]


def test_disk_need_estimate():
    c = resolve_config('fast', env={}, run_name='x', model_path='/models/FLUX.1-dev')
    need = disk_need(c)  # LoRA parameters from memory's FLUX.1-dev table
    p = 130_744_320      # rank 32, the default targets
    assert need['checkpoints'] == 4 * (12 * p + 2**20)  # fp32 LoRA + AdamW's two moments; keep_last 3, + the one being written
    assert need['lora_files'] == 2 * (4 * p + 2**20)    # diffusers and kohya
    assert 2.3 * GB < need['first'] < 2.5 * GB and need['total'] > need['checkpoints'] + need['lora_files']
    c8 = dataclasses.replace(c, optimizer='adamw8bit', keep_last_n_checkpoints=1, sample_every_n_steps=0)
    n8 = disk_need(c8, lora_params=p)
    assert n8['checkpoints'] == 2 * (6 * p + 2**20) and n8['samples'] == 0
