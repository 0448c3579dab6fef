"""Config resolution: profile < environment < explicit parameter for every guide variable, and clear errors;
`fluxid validate` on the repository and on a broken copy of configs/."""
import shutil
from pathlib import Path
import pytest
import os
from fluxid_nb.config import resolve_config, ConfigError, configs_dir, GUIDE_ENV, env_near_misses, env_report
from fluxid_nb.checks import validate, dry_run_report

# guide variable → (config key, env text, typed env value, explicit parameter value)
CASES = {
    'MODEL_PATH': ('model_path', '/m/env', '/m/env', '/m/param'), 'DATA_DIR': ('data_dir', '/d/env', '/d/env', '/d/param'),
    'OUT_DIR': ('out_dir', '/o/env', '/o/env', '/o/param'), 'RUN_NAME': ('run_name', 'envrun', 'envrun', 'paramrun'),
    'SEED': ('seed', '7', 7, 8), 'MAX_STEPS': ('max_train_steps', '2000', 2000, 3000),
    'RANK': ('network_dim', '48', 48, 16), 'ALPHA': ('network_alpha', '24', 24.0, 12.0),
    'LEARNING_RATE': ('learning_rate', '5e-5', 5e-5, 2e-5), 'NOISE_OFFSET': ('noise_offset', '0.08', 0.08, 0.02),
    'DROPOUT': ('network_dropout', '0.2', 0.2, 0.3), 'SNR_GAMMA': ('min_snr_gamma', '3', 3.0, 1.0),
    'GRAD_ACCUM': ('gradient_accumulation_steps', '2', 2, 8), 'FP8_BASE': ('fp8_base', '1', True, False),
    'RESUME_FROM': ('resume_from', '/r/env', '/r/env', '/r/param'), 'DRY_RUN': ('dry_run', '1', True, False),
    'USE_REG': ('use_reg', '1', True, False), 'BATCH_SIZE': ('train_batch_size', '2', 2, 3),
    'RESOLUTION': ('resolution', '640', 640, 576),
}


def test_every_guide_variable_is_covered():
    guide = {'MODEL_PATH', 'DATA_DIR', 'OUT_DIR', 'RUN_NAME', 'SEED', 'MAX_STEPS', 'RANK', 'ALPHA', 'LEARNING_RATE',
             'NOISE_OFFSET', 'DROPOUT', 'SNR_GAMMA', 'GRAD_ACCUM', 'FP8_BASE', 'RESUME_FROM', 'DRY_RUN', 'USE_REG',
             'BATCH_SIZE', 'RESOLUTION', 'PROFILE'}
    assert guide <= set(GUIDE_ENV)
    assert guide - {'PROFILE'} == set(CASES)


@pytest.mark.parametrize('var', sorted(CASES))
def test_precedence_profile_env_parameter(var):
    key, text, env_val, param_val = CASES[var]
    extra = {'REG_DIR': '/reg'} if var == 'USE_REG' else {}
    prof = resolve_config('fast', env=dict(extra), run_name=None if key == 'run_name' else 'x')
    env = resolve_config('fast', env={var: text, **extra}, run_name=None if key == 'run_name' else 'x')
    assert getattr(env, key) == env_val and env.sources[key] == f'env {var}={text}'
    assert getattr(prof, key) != env_val or key in ('dry_run',)
    par = resolve_config('fast', env={var: text, **extra}, **({key: param_val} | ({} if key == 'run_name' else {'run_name': 'x'})))
    assert getattr(par, key) == param_val and par.sources[key].startswith('parameter')


def test_profile_variable_and_default():
    assert resolve_config(env={'PROFILE': 'final'}, run_name='x').profile == 'final'
    assert resolve_config(env={}, run_name='x').profile == 'fast'
    assert resolve_config('final', env={'PROFILE': 'fast'}, run_name='x').profile == 'final'  # explicit beats env


def test_alpha_follows_rank_unless_explicit():
    c = resolve_config('final', env={'RANK': '96'}, run_name='x')
    assert (c.network_dim, c.network_alpha, c.lora_scale) == (96, 96.0, 1.0)
    c = resolve_config('final', env={'RANK': '96', 'ALPHA': '48'}, run_name='x')
    assert (c.network_dim, c.network_alpha) == (96, 48.0)
    c = resolve_config('final', env={}, rank=8, run_name='x')
    assert c.network_alpha == 8.0
    c = resolve_config('final', env={}, rank=8, alpha=4, run_name='x')
    assert c.network_alpha == 4.0


def test_run_name_defaults_to_profile_and_timestamp():
    c = resolve_config('fast', env={})
    assert c.run_name.startswith('fast_') and c.sources['run_name'].startswith('derived')


def test_launcher_rank_is_not_lora_rank():
    c = resolve_config('fast', env={'RANK': '1', 'WORLD_SIZE': '2', 'LOCAL_RANK': '1'}, run_name='x')
    assert c.network_dim == 32
    c = resolve_config('fast', env={'RANK': '1', 'WORLD_SIZE': '2', 'LORA_RANK': '48'}, run_name='x')
    assert c.network_dim == 48
    with pytest.raises(ConfigError, match='LORA_RANK'):
        resolve_config('fast', env={'RANK': '64', 'LORA_RANK': '48'}, run_name='x')


@pytest.mark.parametrize('env,msg', [
    ({'MAX_STEPS': 'many'}, "`max_train_steps` = 'many' (from env MAX_STEPS=many) must be an integer"),
    ({'DROPOUT': '1.5'}, "`network_dropout` = 1.5 (from env DROPOUT=1.5) must be < 1"),
    ({'RESOLUTION': '500'}, "`resolution` = 500 (from env RESOLUTION=500) must be a multiple of 64"),
    ({'FP8_BASE': 'maybe'}, "`fp8_base` = 'maybe' (from env FP8_BASE=maybe) must be true or false"),
    ({'FLUXID_LR_SCHEDULR': 'cosine'}, "Did you mean `FLUXID_LR_SCHEDULER`"),
    ({'FLUXID_LR_SCHEDULER': 'cosin'}, "Did you mean `cosine`"),
])
def test_bad_values_name_key_value_and_source(env, msg):
    with pytest.raises(ConfigError) as e: resolve_config('fast', env=env, run_name='x')
    assert msg in str(e.value)


def test_bad_parameter_names_source():
    with pytest.raises(ConfigError, match=r"`network_dim` = 0 \(from parameter rank\) must be >= 1"):
        resolve_config('fast', env={}, rank=0)
    with pytest.raises(ConfigError, match='Did you mean'):
        resolve_config('fast', env={}, netwrok_alpha=3)


@pytest.mark.parametrize('name,meant,why', [
    ('NOISE_OFSET', 'NOISE_OFFSET', 'no such variable'), ('NOSIE_OFFSET', 'NOISE_OFFSET', 'no such variable'),
    ('LEARNING_RAT', 'LEARNING_RATE', 'no such variable'), ('GRADACCUM', 'GRAD_ACCUM', 'no such variable'),
    ('OUTDIR', 'OUT_DIR', 'no such variable'), ('MAX_STEP', 'MAX_STEPS', 'no such variable'), ('SEDD', 'SEED', 'no such variable'),
    ('noise_offset', 'NOISE_OFFSET', 'case-sensitive'), ('Rank', 'RANK', 'case-sensitive'),
    ('fluxid_lr_scheduler', 'FLUXID_LR_SCHEDULER', 'case-sensitive'),
    ('LR_SCHEDULER', 'FLUXID_LR_SCHEDULER', 'FLUXID_<KEY>'), ('FLUX_SEED', 'FLUXID_SEED', 'no such variable'),
])
def test_near_miss_environment_variables_are_named(name, meant, why):
    "An unprefixed typo is not an error (it could be anyone's variable) but it is never silent."
    env = {name: '0.08'}
    assert resolve_config('fast', env=env, run_name='x').noise_offset == 0.05  # still ignored: the profile's value
    (w,) = env_near_misses(env)
    assert w.startswith(f"{name}=0.08 is ignored") and f"did you mean {meant}?" in w and why in w
    assert f"warning: {w}" in env_report(env)


# what a pod's environment holds: shell, container, CUDA, launchers, Hugging Face, Python, clusters, trackers
POD_ENV = """PATH HOME USER SHELL PWD OLDPWD SHLVL TERM LANG LC_ALL LANGUAGE HOSTNAME LOGNAME MAIL TZ DEBIAN_FRONTEND EDITOR PAGER
LESS LS_COLORS COLORTERM DISPLAY SSH_CLIENT SSH_CONNECTION SSH_TTY _ TMPDIR XDG_RUNTIME_DIR XDG_DATA_DIRS XDG_CACHE_HOME
HISTFILE PS1 COLUMNS LINES TERM_PROGRAM FORCE_COLOR MPLBACKEND RUNPOD_POD_ID RUNPOD_API_KEY RUNPOD_GPU_COUNT RUNPOD_PUBLIC_IP
PUBLIC_KEY JUPYTER_PASSWORD JUPYTER_TOKEN NVIDIA_VISIBLE_DEVICES NVIDIA_DRIVER_CAPABILITIES NVIDIA_REQUIRE_CUDA CUDA_VERSION
NCCL_VERSION LIBRARY_PATH LD_LIBRARY_PATH NVARCH CUDA_HOME TORCH_CUDA_ARCH_LIST CUDA_VISIBLE_DEVICES RANK WORLD_SIZE LOCAL_RANK
LOCAL_WORLD_SIZE GROUP_RANK ROLE_RANK ROLE_NAME ROLE_WORLD_SIZE GROUP_WORLD_SIZE MASTER_ADDR MASTER_PORT NODE_RANK
TORCHELASTIC_RUN_ID OMP_NUM_THREADS ACCELERATE_MIXED_PRECISION ACCELERATE_USE_CPU HF_HOME HF_TOKEN HF_HUB_ENABLE_HF_TRANSFER
HF_HUB_OFFLINE HUGGINGFACE_HUB_CACHE TRANSFORMERS_CACHE DIFFUSERS_CACHE TOKENIZERS_PARALLELISM PYTHONPATH PYTHONUNBUFFERED
PYTHONHASHSEED PIP_NO_CACHE_DIR VIRTUAL_ENV CONDA_PREFIX CONDA_DEFAULT_ENV MAMBA_ROOT_PREFIX UV_CACHE_DIR SLURM_JOB_ID
SLURM_PROCID MODULEPATH MODULESHOME LOADEDMODULES WANDB_API_KEY WANDB_PROJECT WANDB_MODE MLFLOW_TRACKING_URI JPY_PARENT_PID
KUBERNETES_SERVICE_HOST HTTP_PROXY https_proxy NO_PROXY AWS_ACCESS_KEY_ID GOOGLE_APPLICATION_CREDENTIALS DATA_PATH
OUTPUT_DIR MODEL_DIR WORK_DIR WORKDIR CACHE_DIR LOG_LEVEL DEBUG PORT HOST VERSION MODE FLUXID_CACHE FLUXID_CONFIGS_DIR""".split()


def test_near_misses_stay_quiet_on_real_environments():
    assert env_near_misses(os.environ) == []                       # this machine
    assert env_near_misses({k: '1' for k in POD_ENV}) == []        # a pod under torchrun / accelerate, with the usual tools
    assert env_near_misses({'NOISE_OFFSET': '0.1', 'LORA_RANK': '8', 'FLUXID_SEED': '3'}) == []  # variables fluxid reads


def test_dry_run_warns_about_near_misses(monkeypatch):
    monkeypatch.setenv('NOISE_OFSET', '0.08')
    c = resolve_config('demo', env={}, run_name='x', out_dir='/tmp/fluxid-dry-run-test')
    assert "warning: NOISE_OFSET=0.08 is ignored (no such variable): did you mean NOISE_OFFSET?" in dry_run_report(c)


def _copy_configs(tmp_path):
    d = tmp_path/'configs'; shutil.copytree(configs_dir(), d); return d


def test_typo_key_in_toml_names_closest(tmp_path):
    d = _copy_configs(tmp_path)
    p = d/'flux_final.toml'
    p.write_text(p.read_text().replace('network_alpha = 64', 'netwrok_alpha = 64'))
    with pytest.raises(ConfigError, match=r"unknown key `netwrok_alpha` in \[network\]\. Did you mean `network_alpha`"):
        resolve_config(str(p), env={}, run_name='x')


def test_wrong_type_in_toml_names_file(tmp_path):
    d = _copy_configs(tmp_path)
    p = d/'flux_fast.toml'
    p.write_text(p.read_text().replace('network_dim = 32', 'network_dim = "32"'))
    with pytest.raises(ConfigError, match=r"`network_dim` = '32' \(from profile flux_fast.toml\) must be an integer"):
        resolve_config(str(p), env={}, run_name='x')


def test_validate_passes_on_repo_and_fails_on_broken_copy(tmp_path, capsys):
    assert validate() == []
    d = _copy_configs(tmp_path)
    (d/'flux_final.toml').write_text((d/'flux_final.toml').read_text().replace('min_snr_gamma = 5.0', 'min_snr_gamma = 0.0'))
    fast = (d/'flux_fast.toml').read_text()
    (d/'flux_fast.toml').write_text('\n'.join(l for l in fast.splitlines() if not l.startswith('guidance_scale')))
    (d/'sample_prompts.txt').write_text('a photo of a person\n' * 5)
    problems = validate(d, verbose=False)
    text = '\n'.join(problems)
    assert '`min_snr_gamma` = 0.0, the guide says 5.0' in text
    assert 'FLUX-required `guidance_scale` is not stated' in text
    assert 'line without {trigger}' in text


def test_validate_cli_exit_status(tmp_path):
    from fluxid_nb.cli import main
    assert main(['validate']) == 0
    d = _copy_configs(tmp_path)
    (d/'flux_fast.toml').write_text('[network]\nnetwork_dim = [\n')
    assert main(['validate', '--configs', str(d)]) == 1
