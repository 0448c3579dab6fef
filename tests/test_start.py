"Time to the first step: the caches' batched caption encoding gives the bits of one-at-a-time encoding, with a progress bar."
import torch
from safetensors.torch import load_file
from fluxid_nb.config import resolve_config
from fluxid_nb.data import load_dataset
from fluxid_nb.models import tiny_flux, load_pipeline
from fluxid_nb import caches as C, flux1

def test_batched_captions_are_bitwise_the_single_encodes(tmp_path, capsys, monkeypatch):
    cfg = resolve_config('demo', env={}, run_name='t')
    items = load_dataset('builtin:demo').items[:5]
    monkeypatch.setattr(C, 'TEXT_BATCH', 3)                # two batches, the second one short
    said = []
    caches, exs, prompts = C.build_caches(cfg, items, tiny_flux(), 'cpu', torch.float32, extra_prompts=['a photo of ohwx'],
                                          log=said.append, root=tmp_path)
    assert caches.computed == 5 + 6 and said == [f"caches: 11 encoded, 0 reused ({tmp_path})"]
    assert 'caching' in capsys.readouterr().out              # the progress bar
    pipe = load_pipeline(tiny_flux(), dtype=torch.float32, transformer=None, vae=None)
    with torch.no_grad():
        for k, p in prompts.items():
            t5, pooled = flux1.encode_prompt(pipe, p, 'cpu', cfg.t5_max_length)
            got = load_file(caches.txt_path(k))
            assert torch.equal(got['t5'], t5) and torch.equal(got['pooled'], pooled), p
    again, _, _ = C.build_caches(cfg, items, tiny_flux(), 'cpu', torch.float32, extra_prompts=['a photo of ohwx'],
                                 log=said.append, root=tmp_path)
    assert (again.computed, again.reused) == (0, 11) and 'caching' not in capsys.readouterr().out
