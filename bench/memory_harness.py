"""Measure real peaks of reduced-depth FLUX training on CPU and compare them with the memory planner.

    .venv/bin/python bench/memory_harness.py            # all rows (about 10 min on 2 cores), writes docs/memory_validation.md
    .venv/bin/python bench/memory_harness.py --quick    # the first two rows, printed only
    .venv/bin/python bench/memory_harness.py --fsdp     # FSDP over 2 CPU processes (gloo): each process's peak vs the plan

Each row trains FLUX.1-dev's transformer cut to a few blocks at full width, in a fresh process, with fluxid's own
`add_lora`, `flow_loss` and `make_optimizer`, and reads torch.profiler's allocation events (the CPU analogue of
`torch.cuda.max_memory_allocated`). The planner itself is `fluxid_nb.memory` (nbs/10_memory.ipynb).
A spec with `world` > 1 runs under torch.distributed.run with that many processes, the model sharded with fluxid's
FSDP2 (`shard.shard_model`): each process reports its own peak, the planner predicts one GPU of `world`."""
from __future__ import annotations
import argparse, json, os, subprocess, sys, time
from pathlib import Path
import torch
from fluxid_nb.config import Config, resolve_config, repo_root
from fluxid_nb.flow import Batch, flow_loss, make_optimizer
from fluxid_nb.lora import add_lora
from fluxid_nb.memory import GB, BACKWARD_TRANSIENT, Plan, architecture, plan_memory
from fluxid_nb.models import compute_dtype, fp8_base_, quantize_nf4_, quantized_bytes, random_flux

def _rss_bytes() -> int:
    with open('/proc/self/statm') as f: return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')

def run_spec(spec: dict) -> dict:
    "Train a reduced FLUX transformer as `spec` says, in this process; report what was measured."
    from torch.profiler import profile, ProfilerActivity
    torch.set_num_threads(spec.get('threads', torch.get_num_threads()))
    cfg = spec_config(spec)
    base, dt = spec.get('base', 'bf16'), compute_dtype(spec_config(spec))
    rss0 = _rss_bytes()
    m = random_flux(spec['double'], spec['single'], spec.get('width', 3072), dt)
    if base == 'fp8': fp8_base_(m, compute_dtype=torch.bfloat16)
    if base == 'fp8_layerwise': m.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    if base == 'nf4': quantize_nf4_(m, compute_dtype=torch.bfloat16)
    if cfg.gradient_checkpointing: m.enable_gradient_checkpointing()
    params = add_lora(m, cfg)
    if spec.get('world', 1) > 1:  # FSDP: the launcher's process group, the LoRA taken again from the sharded model
        import torch.distributed as dist
        from fluxid_nb.shard import shard_model
        dist.init_process_group('gloo')
        shard_model(m, 'cpu', dist.get_world_size())
        params = [p for p in m.parameters() if p.requires_grad]
    opt = make_optimizer(params, cfg)
    h = spec['resolution'] // 8
    B = cfg.train_batch_size
    g = torch.Generator().manual_seed(0)
    batch = Batch(torch.randn(B, 16, h, h, generator=g), torch.rand(B, 16, h, h, generator=g) * 0.1,
                  torch.randn(B, cfg.t5_max_length, 4096, generator=g), torch.randn(B, 768, generator=g), ['x'] * B)
    held = (sum(p.to_local().untyped_storage().nbytes() for p in m.parameters()) if spec.get('world', 1) > 1
            else quantized_bytes(m))  # a sharded model: this process's shards
    static = held + sum(t.untyped_storage().nbytes() for t in (batch.mean, batch.std, batch.t5, batch.pooled))
    times, losses = [], []
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for step in range(spec.get('steps', 2)):
            t0 = time.perf_counter()
            loss = flow_loss(m, batch, cfg, torch.Generator().manual_seed(step), torch.device('cpu'), dt)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step(); opt.zero_grad(set_to_none=True)
            losses.append(float(loss)); times.append(time.perf_counter() - t0)
    ev = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == '[memory]'), key=lambda e: e.start_ns())
    live = peak = 0
    for e in ev: live += e.nbytes(); peak = max(peak, live)
    import resource
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return dict(spec=spec, allocated_peak=static + peak, static=static, dynamic_peak=peak, rss_delta=rss_peak - rss0,
                seconds_per_step=min(times), losses=losses)

def spec_config(spec: dict) -> Config:
    "The fluxid config a measurement spec stands for (fast profile + the spec's settings)."
    mp = {'bf16': 'bf16', 'fp8': 'bf16', 'fp8_layerwise': 'bf16', 'nf4': 'bf16', 'fp32': 'no', 'fp16': 'fp16'}[spec.get('base', 'bf16')]
    return resolve_config('fast', env={}, run_name='measure', network_dim=spec.get('rank', 32), resolution=spec['resolution'],
                          min_bucket_reso=min(256, spec['resolution']), max_bucket_reso=max(1024, spec['resolution']),
                          train_batch_size=spec.get('batch', 1), gradient_checkpointing=spec.get('gc', True),
                          mixed_precision=mp, fp8_base=spec.get('base', '').startswith('fp8'), optimizer=spec.get('optimizer', 'adamw'),
                          t5_max_length=spec.get('t5', 512))

def measure_peak(spec: dict,     # base: 'bf16'|'fp16'|'fp32'|'fp8' (fp8_base_)|'fp8_layerwise' (diffusers)|'nf4'; world: processes (FSDP)
                 timeout: int = 900) -> dict:
    "run_spec in a fresh Python process (clean RSS baseline, allocator tuned to return memory); under FSDP the largest process's."
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536', MALLOC_TRIM_THRESHOLD_='0', PYTHONWARNINGS='ignore')
    world = spec.get('world', 1)
    launch = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(world)] if world > 1 else [sys.executable]
    r = subprocess.run([*launch, __file__, '--run-spec', json.dumps(spec)], capture_output=True, text=True, env=env, timeout=timeout)
    lines = [json.loads(l[2:]) for l in r.stdout.splitlines() if l.startswith('@@')]
    if r.returncode or len(lines) != world: raise RuntimeError(f"measurement failed for {spec}:\n{r.stderr[-3000:]}")
    return max(lines, key=lambda m: m['allocated_peak']) | dict(per_process=[m['allocated_peak'] for m in lines])

def predict_spec(spec: dict) -> Plan:
    "The planner's prediction for a measurement spec (CPU: no context overhead)."
    cfg = spec_config(spec)
    base = spec.get('base', 'bf16')
    if base == 'fp8_layerwise': raise ValueError("the planner models fp8_base_ (base 'fp8'), not diffusers' layerwise casting")
    return plan_memory(cfg, arch=architecture(spec['double'], spec['single'], spec.get('width', 3072)),
                       base=base, device='cpu', gpus=spec.get('world', 1), sharded=spec.get('world', 1) > 1)


VALIDATION_SPECS = [  # the first one calibrates BACKWARD_TRANSIENT; the others check it
    dict(double=1, single=1, resolution=512),
    dict(double=2, single=2, resolution=512),
    dict(double=1, single=1, resolution=512, gc=False),
    dict(double=1, single=1, resolution=768),
    dict(double=1, single=1, resolution=512, batch=2),
    dict(double=1, single=1, resolution=512, base='fp8'),
    dict(double=2, single=2, resolution=512, base='fp8'),
    dict(double=1, single=1, resolution=512, base='fp8', gc=False),
    dict(double=1, single=1, resolution=512, base='nf4', optimizer='adamw8bit'),
    dict(double=1, single=1, resolution=512, rank=128),
]

FSDP_SPECS = [  # sharded over 2 CPU processes, one thread each: the peak of one process against one GPU's plan
    dict(double=2, single=2, resolution=512, world=2, threads=1),
    dict(double=2, single=2, resolution=512, world=2, threads=1, base='fp8'),
]

def spec_label(spec: dict) -> str:
    "Short name of a measurement spec, e.g. '1d+1s bf16 ckpt 512² r32 b1 adamw'."
    return (f"{spec['double']}d+{spec['single']}s {spec.get('base', 'bf16')} {'ckpt' if spec.get('gc', True) else 'no-ckpt'} "
            f"{spec['resolution']}² r{spec.get('rank', 32)} b{spec.get('batch', 1)} {spec.get('optimizer', 'adamw')}"
            + (f" FSDP×{spec['world']}" if spec.get('world', 1) > 1 else ''))

def validation_rows(specs=None, log=print) -> list[dict]:
    "Measure each spec in its own process, sequentially, next to the planner's prediction."
    rows = []
    for spec in specs or VALIDATION_SPECS:
        t0 = time.time()
        m = measure_peak(spec)
        p = predict_spec(spec)
        row = dict(config=spec_label(spec), spec=spec, predicted_gib=p.train_peak / GB, allocated_gib=m['allocated_peak'] / GB,
                   rss_gib=m['rss_delta'] / GB, error_vs_allocated=p.train_peak / m['allocated_peak'] - 1,
                   error_vs_rss=p.train_peak / m['rss_delta'] - 1, seconds_per_step=m['seconds_per_step'],
                   parts_gib={k: v / GB for k, v in p.parts.items()}, wall_s=time.time() - t0)
        rows.append(row)
        log(f"  {row['config']:<40} predicted {row['predicted_gib']:.3f}  allocated {row['allocated_gib']:.3f} "
            f"({row['error_vs_allocated']:+.1%})  rss {row['rss_gib']:.3f} ({row['error_vs_rss']:+.1%})  {row['seconds_per_step']:.1f} s/step")
    return rows

REFERENCE_SPECS = [  # measured only, not modelled: FP8_BASE as it was before fp8_base_ (diffusers' layerwise casting)
    dict(double=2, single=2, resolution=512, base='fp8_layerwise'),
]

def reference_rows(specs=None, log=print) -> list[dict]:
    "Measure configurations the planner does not model (each in its own process), for comparison."
    rows = []
    for spec in specs or REFERENCE_SPECS:
        t0 = time.time()
        m = measure_peak(spec)
        rows.append(dict(config=spec_label(spec), spec=spec, allocated_gib=m['allocated_peak'] / GB, rss_gib=m['rss_delta'] / GB,
                         seconds_per_step=m['seconds_per_step'], wall_s=time.time() - t0))
        log(f"  {rows[-1]['config']:<40} allocated {rows[-1]['allocated_gib']:.3f}  rss {rows[-1]['rss_gib']:.3f}")
    return rows

def validation_markdown(rows: list[dict]) -> str:
    "The validation table as markdown."
    out = ["| configuration (full width 3072, T5 512 tokens) | predicted GiB | allocated peak GiB | error | RSS delta GiB | error | s/step |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    out += [f"| {r['config']} | {r['predicted_gib']:.3f} | {r['allocated_gib']:.3f} | {r['error_vs_allocated']:+.1%} | "
            f"{r['rss_gib']:.3f} | {r['error_vs_rss']:+.1%} | {r['seconds_per_step']:.1f} |" for r in rows]
    return '\n'.join(out)

def reference_markdown(rows: list[dict]) -> str:
    "The measured-only rows as markdown."
    out = ["| measured only, not modelled (full width 3072, T5 512 tokens) | allocated peak GiB | RSS delta GiB | s/step |",
           "|---|---:|---:|---:|"]
    return '\n'.join(out + [f"| {r['config']} | {r['allocated_gib']:.3f} | {r['rss_gib']:.3f} | {r['seconds_per_step']:.1f} |" for r in rows])

def write_validation(rows: list[dict], folder: Path | None = None, reference: list[dict] | None = None) -> Path:
    "docs/memory_validation.md and .json."
    folder = Path(folder or repo_root()/'docs')
    folder.mkdir(parents=True, exist_ok=True)
    (folder/'memory_validation.json').write_text(json.dumps(dict(
        backward_transient=BACKWARD_TRANSIENT, torch=torch.__version__, cpu_threads=torch.get_num_threads(), rows=rows,
        reference_rows=reference or []), indent=1))
    md = (folder/'memory_validation.md')
    md.write_text(VALIDATION_PREAMBLE + '\n' + validation_markdown(rows) + '\n'
                  + ('\n' + reference_markdown(reference) + '\n' if reference else ''))
    return md

VALIDATION_PREAMBLE = """# Memory planner: predicted vs measured peak (CPU)

Generated by `python bench/memory_harness.py` (`validation_rows` / `write_validation`).
Each row is FLUX.1-dev's transformer cut to the given double (d) and single (s) blocks at full width (3072, 24 heads),
random weights, trained for 2 optimizer steps on CPU with fluxid's `add_lora`, `flow_loss` and `make_optimizer`
(fast profile LoRA targets; T5 length 512). Each configuration runs in a fresh process.

- **allocated peak**: parameter/buffer bytes (4-bit state included) + batch + the highest running sum of torch's
  allocation/free events (`torch.profiler`, `profile_memory=True`): the CPU analogue of `torch.cuda.max_memory_allocated`.
- **RSS delta**: `ru_maxrss` at the end minus resident size before the model is built (`MALLOC_MMAP_THRESHOLD_=65536`).
- **predicted**: `plan_memory(...).train_peak` for the same settings (no CUDA context/allocator overhead on CPU).
  The first row calibrated the one fitted constant, `BACKWARD_TRANSIENT`; the other rows are checks.

Reading the table:
- RSS sits ~0.3 GiB above the allocated peak in every bf16 row, whatever the size: process memory that is not
  tensors (peft imported on first use, oneDNN scratch and kernels, profiler buffers): the CPU analogue of the CUDA
  context, which the planner adds as `overhead` on a GPU.
- NF4: the process's RSS peak is the bf16 model *before* quantization (the reduced model is built in bf16, then
  quantized); training itself peaks at the allocated value. On a GPU `quantize_nf4_(..., device='cuda')` quantizes
  layer by layer, so the device never holds the bf16 model.
- FP8 (`fp8_base_`, what FP8_BASE=1 sets up): the block Linears are stored in float8 and up-cast to bf16 inside one
  matmul; autograd keeps only the float8 weight. Compare `2d+2s fp8` with `2d+2s bf16`: the difference is the float8
  bytes saved. The second table is FP8_BASE as it was before, diffusers' `enable_layerwise_casting` on the same model:
  it peaks *above* bf16, because autograd keeps every cast's bf16 weight copy until backward, for every block, even with
  gradient checkpointing. The planner models `fp8_base_` only. On CPU a float8 step is ~25% slower than bf16 (the
  weight casts in forward, recomputation and backward); diffusers' casting is as slow.
"""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--run-spec', help=argparse.SUPPRESS)
    p.add_argument('--quick', action='store_true', help="measure the first two rows only and print them")
    p.add_argument('--out', default=None, help="folder for memory_validation.md/.json (default docs/)")
    p.add_argument('--fsdp', action='store_true', help="measure the FSDP rows only (2 processes each) and print them")
    a = p.parse_args(argv)
    if a.run_spec:
        sys.stdout.write('@@' + json.dumps(run_spec(json.loads(a.run_spec))) + '\n'); sys.stdout.flush(); return 0  # one write: processes share the pipe
    if a.fsdp: print(validation_markdown(validation_rows(FSDP_SPECS))); return 0
    rows = validation_rows(VALIDATION_SPECS[:2] if a.quick else VALIDATION_SPECS + FSDP_SPECS)
    if a.quick: print(validation_markdown(rows)); return 0
    print(write_validation(rows, a.out, reference_rows()))
    return 0

if __name__ == '__main__': sys.exit(main())
