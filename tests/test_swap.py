"""Block swap (`blocks_to_swap`): on a CPU the same code path runs as a no-op, so training is bit-identical to no swap;
the schedule keeps weights loaded exactly while autograd needs them (a weight used out of turn fails loudly)."""
import pytest
import torch
from safetensors.torch import load_file
from conftest import demo_cfg
from fluxid_nb.config import ConfigError, resolve_config
from fluxid_nb.models import tiny_flux, load_component
from fluxid_nb.lora import add_lora
from fluxid_nb.swap import BlockSwap
from fluxid_nb.train import Trainer

QUIET = dict(log=lambda *a: None)


def _run(tmp, name, **kw):
    t = Trainer(demo_cfg(tmp, run_name=name, **kw), **QUIET)
    return t, t.run()


def test_demo_swap_is_bit_identical_and_resumes(tmp_path):
    "The demo profile with blocks_to_swap = 0, 2 and 4 (all blocks): the same losses, LoRA and optimizer state, to the bit."
    steps = dict(max_train_steps=4, checkpoint_every_n_steps=2, gradient_accumulation_steps=2)
    _, ref = _run(tmp_path, 'none', **steps)
    for n in (2, 4):
        t, res = _run(tmp_path, f'swap{n}', blocks_to_swap=n, **steps)
        assert res.losses == ref.losses and len(res.losses) == 4
        a, b = load_file(ref.lora), load_file(res.lora)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        o1 = torch.load(ref.run_dir/'checkpoints'/'step_000004'/'optimizer.pt', weights_only=True)['state']
        o2 = torch.load(res.run_dir/'checkpoints'/'step_000004'/'optimizer.pt', weights_only=True)['state']
        assert all(torch.equal(o1[k]['exp_avg'], o2[k]['exp_avg']) for k in o1)
        # each micro-batch: every swapped block loaded for forward, all but the last again for backward; never more than 2
        assert t.swap.stats['backward_loads'] >= 4 * 2 * (n - 1) and t.swap.stats['most_resident'] == 2
        assert not t.swap.loaded and len(t.swap.blocks) == n
    _, resumed = _run(tmp_path, 'swap_resumed', blocks_to_swap=2, resume_from=str(tmp_path/'swap2'/'checkpoints'/'step_000002'), **steps)
    assert resumed.losses == ref.losses[2:]
    assert all(torch.equal(load_file(ref.lora)[k], v) for k, v in load_file(resumed.lora).items())


@pytest.mark.parametrize('base', [dict(fp8_base=True), dict(quant_base='nf4')])
def test_demo_swap_fp8_and_nf4(tmp_path, base):
    "FP8 (float8 weights) and NF4 (4-bit codes with their quant_state scales) swap bit-identically too."
    _, ref = _run(tmp_path, 'none', max_train_steps=2, checkpoint_every_n_steps=2, **base)
    t, res = _run(tmp_path, 'swap', max_train_steps=2, checkpoint_every_n_steps=2, blocks_to_swap=3, **base)
    assert res.losses == ref.losses
    assert all(torch.equal(load_file(ref.lora)[k], v) for k, v in load_file(res.lora).items())
    assert t.swap.stats['loads'] > 0 and not t.swap.loaded


def test_swap_refuses_training_without_checkpointing(tmp_path):
    with pytest.raises(ConfigError, match='gradient_checkpointing'):
        Trainer(demo_cfg(tmp_path, blocks_to_swap=2, gradient_checkpointing=False), **QUIET).setup()
    with pytest.raises(ConfigError, match='has 4 blocks'):
        Trainer(demo_cfg(tmp_path, blocks_to_swap=5), **QUIET).setup()


def _tiny():
    tr = load_component(tiny_flux(), 'transformer', dtype=torch.float32)
    tr.enable_gradient_checkpointing()
    add_lora(tr, resolve_config('demo', env={}, run_name='t'))
    return tr.train()


def _x(seed):
    g = torch.Generator().manual_seed(seed)
    return dict(hidden_states=torch.randn(1, 16, 64, generator=g), encoder_hidden_states=torch.randn(1, 8, 64, generator=g),
                pooled_projections=torch.randn(1, 64, generator=g), timestep=torch.full((1,), 0.5), guidance=torch.ones(1),
                txt_ids=torch.zeros(8, 3), img_ids=torch.zeros(16, 3), return_dict=False)


def test_two_forwards_then_one_backward():
    "Prior preservation runs two forwards before one backward: each block is kept until both backward passes are done."
    ref, sw_model = _tiny(), _tiny()
    sw = BlockSwap(sw_model, 3, 'cpu')
    grads = []
    for m in (ref, sw_model):
        loss = (m(**_x(0))[0] ** 2).mean() + 0.5 * (m(**_x(1))[0] ** 2).mean()
        loss.backward()
        grads.append([p.grad for p in m.parameters() if p.requires_grad])
    assert all(torch.equal(a, b) for a, b in zip(*grads)) and not sw.loaded


def test_a_weight_used_out_of_turn_fails_loudly(monkeypatch):
    "The CPU no-op still checks the schedule: a released block holds empty placeholders, so using it out of turn raises."
    from fluxid_nb import swap as S
    m = _tiny()
    sw = BlockSwap(m, 2, 'cpu')
    with torch.no_grad(): m(**_x(0))
    lin = sw.blocks[0].attn.to_q.base_layer
    assert lin.weight.numel() == 0
    with pytest.raises(RuntimeError): lin(torch.randn(1, 64))
    pre = BlockSwap._pre  # a schedule that forgets to bring blocks back for backward
    monkeypatch.setattr(BlockSwap, '_pre', lambda self, i, *a: None if S._in_backward() else pre(self, i, *a))
    monkeypatch.setattr(BlockSwap, '_before_backward', lambda self, i: None)
    with pytest.raises(RuntimeError):
        (m(**_x(0))[0] ** 2).mean().backward()
