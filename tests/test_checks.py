"""`fluxid validate`'s wiring half: every config key changes a value computed by the core, or names the test that
proves it; a core function that stops reading a key is reported by name."""
import dataclasses
import pytest
import torch
from fluxid_nb import checks, flow, models
from fluxid_nb.config import config_fields


def test_every_key_is_proven_by_a_probe_or_a_named_test():
    problems, lines = checks.wiring_report()
    assert problems == []
    assert len(lines) == len(config_fields())
    assert not set(checks.PROBES) & set(checks.BY_TESTS)
    by_key = {l.split()[1]: l for l in lines}
    for k in ('adam_beta1', 'adam_beta2', 'adam_epsilon', 'sigmoid_scale', 'bucket_step', 'max_upscale', 'mixed_precision'):
        assert by_key[k].lstrip().startswith('✓'), by_key[k]                  # proven by a probe, not by a name
    assert 'only by the test suite: tests/test_wiring.py::' in by_key['max_grad_norm']


def test_sigmoid_probe_sees_the_shape_not_just_the_median():
    (m1, tail1), (m3, tail3) = checks.PROBES['sigmoid_scale'].run()
    assert abs(m1 - 0.5) <= 0.02 and abs(m3 - 0.5) <= 0.02 and tail1 < 0.05 and tail3 > 0.4


def test_probe_values_are_ones_a_user_can_set():
    from fluxid_nb.config import _coerce
    for k, p in checks.PROBES.items():
        for v in p.values(): _coerce(k, v, 'test')


def test_a_core_function_that_ignores_a_key_is_reported(monkeypatch, capsys):
    real = flow.make_optimizer
    monkeypatch.setattr(flow, 'make_optimizer', lambda params, cfg: real(params, dataclasses.replace(cfg, adam_beta1=0.9, adam_beta2=0.999)))
    problems = checks.validate(verbose=True)
    out = capsys.readouterr().out
    bad = [p for p in problems if 'changes nothing' in p]
    assert [p.split('`')[1] for p in bad] == ['adam_beta1', 'adam_beta2'], problems
    assert 'flow.make_optimizer: betas gives (0.9, 0.999)' in bad[0]
    assert '✗ adam_beta1' in out and '✓ adam_epsilon' in out and '✓ learning_rate' in out


def test_a_broken_precision_map_is_reported(monkeypatch):
    monkeypatch.setattr(models, 'compute_dtype', lambda cfg: torch.float32)   # every precision computes in fp32
    problems, _ = checks.wiring_report(['mixed_precision', 'fp8_base', 'noise_offset'])
    assert len(problems) == 1 and problems[0].startswith('`mixed_precision` changes nothing'), problems


def test_a_probe_that_crashes_is_a_problem_not_a_pass(monkeypatch):
    def boom(*a, **k): raise RuntimeError('lost')
    monkeypatch.setattr(flow, 'snr_weight', boom)
    problems, lines = checks.wiring_report(['min_snr_gamma'])
    assert problems == ['`min_snr_gamma`: its probe (flow.snr_weight at σ 0.1, 0.5, 0.9) failed: RuntimeError: lost']


def test_unproven_key_and_missing_test_are_reported(monkeypatch):
    monkeypatch.delitem(checks.BY_TESTS, 'max_grad_norm')
    monkeypatch.setitem(checks.BY_TESTS, 'sample_seed', ('tests/test_wiring.py::test_no_such_test', 'gone'))
    problems, _ = checks.wiring_report(['max_grad_norm', 'sample_seed', 'seed'])
    assert problems == ['`max_grad_norm` is proven by nothing: add its probe (checks.add_probe) or name its test (checks.BY_TESTS)',
                        '`sample_seed` names tests/test_wiring.py::test_no_such_test, which does not exist']


def test_cli_validate_fails_on_a_probe(monkeypatch, capsys):
    from fluxid_nb.cli import main
    monkeypatch.setattr(flow, 'lr_at', lambda step, cfg: 1.0)              # a schedule that ignores every LR key
    assert main(['validate']) == 1
    out = capsys.readouterr().out
    for k in ('lr_scheduler', 'lr_warmup_steps', 'lr_num_cycles'): assert f'✗ {k}' in out
