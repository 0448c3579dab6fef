"""The tiny FLUX.1-dev-shaped pipeline: saves, reloads and generates with no network at all."""
import json, socket
import pytest
import torch
from fluxid_nb.models import build_tiny_flux, load_pipeline, check_model_dir, ModelError


class _NoSocket(socket.socket):
    def __init__(self, *a, **k): raise AssertionError(f"a socket was opened: {a}")


def test_tiny_pipeline_offline_roundtrip(tmp_path, monkeypatch):
    monkeypatch.setattr(socket, 'socket', _NoSocket)
    monkeypatch.setattr(socket, 'create_connection', lambda *a, **k: (_ for _ in ()).throw(AssertionError('connection')))
    folder = build_tiny_flux(tmp_path/'tiny', seed=3)
    assert json.loads((folder/'model_index.json').read_text())['_class_name'] == 'FluxPipeline'
    assert json.loads((folder/'transformer/config.json').read_text())['guidance_embeds'] is True
    pipe = load_pipeline(folder, dtype=torch.float32)
    img = pipe('a photo of ohwx, portrait', height=128, width=192, num_inference_steps=2, guidance_scale=3.5,
               generator=torch.Generator().manual_seed(0)).images[0]
    assert img.size == (192, 128)
    lin = [m for m in pipe.transformer.modules() if isinstance(m, torch.nn.Linear)]
    assert all(m.in_features % 64 == 0 and m.out_features % 64 == 0 for m in lin)  # 4-bit-ready widths


def test_missing_model_path_message(tmp_path):
    with pytest.raises(ModelError, match='hf download black-forest-labs/FLUX.1-dev'):
        check_model_dir(tmp_path/'nope')
