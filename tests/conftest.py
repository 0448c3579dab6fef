"""Shared fixtures: one demo training run per test session (imports of torch + diffusers cost ~6 s per process)."""
import os, sys, dataclasses
from pathlib import Path
import pytest

os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
# the guide's variables must not leak from the caller's shell into tests
for k in ('PROFILE', 'MODEL_PATH', 'DATA_DIR', 'OUT_DIR', 'RUN_NAME', 'SEED', 'MAX_STEPS', 'RANK', 'LORA_RANK', 'ALPHA',
          'LEARNING_RATE', 'NOISE_OFFSET', 'DROPOUT', 'SNR_GAMMA', 'GRAD_ACCUM', 'FP8_BASE', 'RESUME_FROM', 'DRY_RUN',
          'USE_REG', 'BATCH_SIZE', 'RESOLUTION', 'TRIGGER', 'REG_DIR', 'WORLD_SIZE', 'LOCAL_RANK'):
    os.environ.pop(k, None)
for k in [k for k in os.environ if k.startswith('FLUXID_') and k not in ('FLUXID_CACHE', 'FLUXID_CONFIGS_DIR')]:
    os.environ.pop(k)


def demo_cfg(tmp, **kw):
    from fluxid_nb.config import resolve_config
    base = dict(out_dir=str(tmp), run_name='run', sample_every_n_steps=0)
    return resolve_config('demo', env={}, **(base | kw))


@pytest.fixture(scope='session')
def demo_run(tmp_path_factory):
    "A short demo training run shared by the artifact, format and strength tests."
    from fluxid_nb.cli import train_gated
    out = tmp_path_factory.mktemp('demo_run')
    cfg = demo_cfg(out, max_train_steps=60, checkpoint_every_n_steps=20, sample_every_n_steps=30)
    res = train_gated(cfg, log=lambda *a: None)  # as `fluxid train` runs it: the analyzer first
    return cfg, res
