"""Losses and LoRA digests of the demo profile and four variants: check that a refactor changed no bit.

    .venv/bin/python bench/identity_digest.py OUT_DIR [variant ...]     # writes OUT_DIR/digests.json

Run it on the commit before a change and on the change, then compare the two digests.json files: every metric row
(loss, grad norm, held-out loss) and the LoRA weights' sha256 must be equal. Variants cover the timestep samplers,
flip augmentation, LoRA dropout, gradient accumulation and the cosine schedule. About 2 minutes on 2 cores."""
import hashlib, json, sys, os
from pathlib import Path
from safetensors.torch import load_file
from fluxid_nb.config import resolve_config
from fluxid_nb.train import Trainer
if len(sys.argv) < 2: sys.exit(__doc__)
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
variants = {'demo': {}, 'uniform': dict(timestep_sampling='uniform', max_train_steps=20),
            'logit_normal': dict(timestep_sampling='logit_normal', max_train_steps=20),
            'sigmoid': dict(timestep_sampling='sigmoid', sigmoid_scale=1.5, max_train_steps=20),
            'shift': dict(timestep_sampling='shift', max_train_steps=20, random_flip=True, network_dropout=0.1,
                          gradient_accumulation_steps=2, lr_scheduler='cosine')}
only = sys.argv[2:] or list(variants)
res = {}
for name in only:
    kw = variants[name]
    cfg = resolve_config('demo', run_name=f'bl_{name}', out_dir=str(out), ignore_dataset_errors=True,
                         **({} if name == 'demo' else dict(sample_every_n_steps=0)), **kw)
    r = Trainer(cfg).run()
    rows = [json.loads(l) for l in (cfg.run_dir/'metrics.jsonl').read_text().splitlines()]
    sd = load_file(r.lora)
    h = hashlib.sha256()
    for k in sorted(sd): h.update(k.encode()); h.update(sd[k].float().numpy().tobytes())
    res[name] = dict(losses=[(r_['step'], r_.get('loss'), r_.get('eval_loss'), r_.get('grad_norm')) for r_ in rows],
                     lora_sha=h.hexdigest())
    print(name, res[name]['lora_sha'], res[name]['losses'][-1], flush=True)
(out/'digests.json').write_text(json.dumps(res, indent=1))
