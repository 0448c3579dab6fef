"""FLUX.1-dev LoRA training speed and memory on one GPU, with random weights (nothing is downloaded).

    python bench/gpu_bench.py                 # H200: full-size transformer, ~8 min
    python bench/gpu_bench.py --only swap,fsdp --budget-s 420   # block swap under 12/16/24 GB caps, FSDP, ~5 min
    python bench/gpu_bench.py --reduced       # CPU (CI): tiny width/depth, 1 timed step, same tables

For each base (bf16, FP8 storage via fluxid's fp8_base_, NF4; `--bases` also takes fp8_layerwise: diffusers' casting,
for comparison), profile (fast: rank 32; final: rank 64, dropout 0.1) and resolution (512², 768², 1024²): LoRA
training steps on cached-style inputs (latents + T5/CLIP embeddings, batch 1, checkpointing on), seconds/step,
measured peak (CUDA: max_memory_allocated; CPU: profiler-allocated peak), the memory planner's prediction beside it,
and the fraction of the bf16 FLOP floor reached (FLUX_FACTS.md: a LoRA step with a frozen base and checkpointing
≈ 3 × forward, forward ≈ 2 × params × tokens; H200 bf16 dense ≈ 790 TFLOP/s).
Then the speed levers on one config: SDPA backends and torch.compile of the blocks.

Block swap (`blocks_to_swap`, fluxid_nb/swap.py) on cards of 12, 16 and 24 GB, emulated on the big GPU with
`torch.cuda.set_per_process_memory_fraction` (the card's size less the CUDA context): for each case the planner picks
the fewest blocks to swap that fit; the run under the cap is compared with the same settings unswapped and uncapped
(losses, s/step), its measured peak with the planner's, and its slowdown with the planner's estimate, made with the
host-to-device bandwidth and block throughput measured here. FSDP (fluxid_nb/shard.py): the sharded code path on this
GPU (a one-process group; sharding across GPUs needs several) against the unsharded run."""
from __future__ import annotations
import argparse, contextlib, json, os, statistics, sys, time
from pathlib import Path
T0 = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import torch

H200_BF16_FLOPS = 790e12
PROFILES = {'fast': dict(network_dim=32, network_alpha=32.0, network_dropout=0.0),
            'final': dict(network_dim=64, network_alpha=64.0, network_dropout=0.1)}

def build(device, dtype, double, single, width, seed=0):
    "The transformer with random weights allocated straight on `device` (no fp32 copy, no download)."
    from fluxid_nb.models import random_flux
    return random_flux(double, single, width, dtype, device=device, seed=seed)

class Peak:
    "Peak allocated bytes over a block: CUDA allocator stats, or on CPU static bytes + torch.profiler's running sum."
    def __init__(self, device, model, extra=0): self.device, self.model, self.extra = device, model, extra
    def __enter__(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); self.prof = None
        else:
            from torch.profiler import profile, ProfilerActivity
            self.prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True); self.prof.__enter__()
        return self
    def __exit__(self, *exc):
        if self.prof is None:
            torch.cuda.synchronize(); self.bytes = torch.cuda.max_memory_allocated(); return
        self.prof.__exit__(*exc)
        live = peak = 0
        for e in sorted((e for e in self.prof.profiler.kineto_results.events() if e.name() == '[memory]'), key=lambda e: e.start_ns()):
            live += e.nbytes(); peak = max(peak, live)
        self.bytes = model_bytes(self.model) + self.extra + peak

def model_bytes(model) -> int:
    "Bytes a model holds on the CPU (4-bit state included); of a sharded model, this process's shards."
    from fluxid_nb.models import quantized_bytes
    from torch.distributed.tensor import DTensor
    if any(isinstance(p, DTensor) for p in model.parameters()):
        return sum(p.to_local().untyped_storage().nbytes() for p in model.parameters())
    return quantized_bytes(model)

def _pct(x): return 'n/a (CPU)' if x is None else f'{x:.1%}'

def floor_flops(params: int, tokens: int, batch: int = 1) -> float:
    "FLUX_FACTS' floor for one LoRA step with checkpointing: 3 × (2 × params × tokens)."
    return 3 * 2 * params * tokens * batch

def run_case(args, device, base, profile, resolutions, budget_left):
    from fluxid_nb.config import resolve_config
    from fluxid_nb.lora import add_lora
    from fluxid_nb.flow import flow_loss, make_optimizer, Batch
    from fluxid_nb.models import quantize_nf4_, fp8_base_
    from fluxid_nb.memory import plan_memory, architecture, GB
    dt = torch.bfloat16
    arch = architecture(args.double, args.single, args.width)
    t = time.perf_counter()
    m = build(device, dt, args.double, args.single, args.width)
    if base == 'fp8': fp8_base_(m, compute_dtype=torch.bfloat16)  # what FP8_BASE=1 sets up (load_transformer)
    if base == 'fp8_layerwise': m.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    if base == 'nf4': quantize_nf4_(m, compute_dtype=torch.bfloat16, device=device)
    m.enable_gradient_checkpointing()
    build_s = time.perf_counter() - t
    rows = []
    for res in resolutions:
        if budget_left() < 0:
            rows.append(dict(base=base, profile=profile, resolution=res, skipped='time budget')); continue
        cfg = resolve_config('fast', env={}, run_name='gpu_bench', resolution=res, min_bucket_reso=min(256, res),
                             max_bucket_reso=max(1024, res), t5_max_length=args.t5, fp8_base=base.startswith('fp8'), **PROFILES[profile])
        if not rows:  # one LoRA per (base, profile)
            params = add_lora(m, cfg); opt = make_optimizer(params, cfg)
        h = res // 8
        g = torch.Generator().manual_seed(0)
        batch = Batch(torch.randn(1, 16, h, h, generator=g), torch.rand(1, 16, h, h, generator=g) * 0.1,
                      torch.randn(1, args.t5, 4096, generator=g), torch.randn(1, 768, generator=g), ['x'])
        def step(i):
            loss = flow_loss(m, batch, cfg, torch.Generator().manual_seed(i), device, dt)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step(); opt.zero_grad(set_to_none=True)
            return loss
        step(0)  # warm-up (allocator, kernels, optimizer state)
        if device.type == 'cuda': torch.cuda.synchronize()
        extra = sum(x.numel() * x.element_size() for x in (batch.mean, batch.std, batch.t5, batch.pooled))
        times = []
        with Peak(device, m, extra) as pk:
            for i in range(args.steps):
                t = time.perf_counter(); loss = step(i + 1)
                if device.type == 'cuda': torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
        sps = statistics.median(times)
        tokens = (res // 16) ** 2 + args.t5
        plan = plan_memory(cfg, arch=arch, base='fp8' if base == 'fp8_layerwise' else base, device='cpu')  # layerwise: not modelled
        fl = floor_flops(arch.params, tokens)
        rows.append(dict(base=base, profile=profile, resolution=res, tokens=tokens, sec_per_step=sps, peak_gib=pk.bytes / GB,
                         planned_gib=plan.train_peak / GB, plan_error=plan.train_peak / pk.bytes - 1,
                         floor_fraction=(fl / sps) / H200_BF16_FLOPS if device.type == 'cuda' else None,
                         loss=float(loss), build_s=build_s))
        print(f"  {base:<5} {profile:<6} {res:>5}²  {sps:8.3f} s/step  peak {pk.bytes/GB:7.3f} GiB  plan {plan.train_peak/GB:7.3f} GiB"
              f"  ({rows[-1]['plan_error']:+.1%})  floor {_pct(rows[-1]['floor_fraction'])}", flush=True)
    del m
    if device.type == 'cuda': torch.cuda.empty_cache()
    return rows

SWAP_CASES = [  # (card GiB, profile, base, resolution): the targets of issue 13
    (24, 'fast', 'bf16', 512),   # swap on a 24 GB card: at most 1.5× the step time of no swap at the same settings
    (16, 'fast', 'fp8', 512),    # FP8 + swap under 16 GB
    (12, 'fast', 'nf4', 512),    # NF4 under 12 GB
    (16, 'final', 'fp8', 768),   # the final profile on a 16 GB card
    (24, 'final', 'bf16', 768),  # … and on a 24 GB one in bf16
]

def _bench_cfg(args, profile, base, res):
    from fluxid_nb.config import resolve_config
    return resolve_config(profile, env={}, run_name='gpu_bench', resolution=res, min_bucket_reso=min(256, res), max_bucket_reso=max(1024, res),
                          t5_max_length=args.t5, fp8_base=base == 'fp8', quant_base='nf4' if base == 'nf4' else 'none',
                          gradient_accumulation_steps=1)  # one micro-batch per timed step

def _model(args, device, base, cfg):
    "The transformer in `base` storage, checkpointing on, with the profile's LoRA."
    from fluxid_nb.lora import add_lora
    from fluxid_nb.models import quantize_nf4_, fp8_base_
    m = build(device, torch.bfloat16, args.double, args.single, args.width)
    if base == 'fp8': fp8_base_(m, compute_dtype=torch.bfloat16)
    if base == 'nf4': quantize_nf4_(m, compute_dtype=torch.bfloat16, device=device)
    m.enable_gradient_checkpointing()
    add_lora(m, cfg)
    return m

def _train(m, cfg, device, steps, extra=0):
    "Warm-up + `steps` timed LoRA steps: (median s/step, peak bytes, losses). The optimizer is built here (after any sharding)."
    from fluxid_nb.flow import flow_loss, make_optimizer, Batch
    params = [p for p in m.parameters() if p.requires_grad]
    opt = make_optimizer(params, cfg)
    h, g = cfg.resolution // 8, torch.Generator().manual_seed(0)
    batch = Batch(torch.randn(1, 16, h, h, generator=g), torch.rand(1, 16, h, h, generator=g) * 0.1,
                  torch.randn(1, cfg.t5_max_length, 4096, generator=g), torch.randn(1, 768, generator=g), ['x'])
    def step(i):
        loss = flow_loss(m, batch, cfg, torch.Generator().manual_seed(i), device, torch.bfloat16)
        loss.backward(); torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step(); opt.zero_grad(set_to_none=True)
        return float(loss)
    losses = [step(0)]
    extra += sum(x.numel() * x.element_size() for x in (batch.mean, batch.std, batch.t5, batch.pooled))
    times = []
    with Peak(device, m, extra) as pk:
        for i in range(steps):
            t = time.perf_counter(); losses.append(step(i + 1))
            if device.type == 'cuda': torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    return statistics.median(times), pk.bytes, losses

def h2d_gbps(device) -> float | None:
    "Host-to-device GB/s from pinned memory (256 MiB copies); None on a CPU."
    if device.type != 'cuda': return None
    src = torch.empty(2**28, dtype=torch.uint8, pin_memory=True)
    ts = []
    for _ in range(5):
        torch.cuda.synchronize(); t = time.perf_counter()
        src.to(device, non_blocking=True); torch.cuda.synchronize(); ts.append(time.perf_counter() - t)
    return 2**28 / statistics.median(ts) / 1e9

def swap_cases(args, device, budget_left):
    "Each SWAP_CASE: unswapped and uncapped, then the planner's swap under the card's cap; measured against predicted."
    from fluxid_nb.memory import plan_memory, architecture, step_seconds, block_flops, CUDA_CONTEXT_GB, GB
    from fluxid_nb.swap import BlockSwap
    arch, rows, link = architecture(args.double, args.single, args.width), [], h2d_gbps(device)
    cases = SWAP_CASES if device.type == 'cuda' else [(None, 'fast', 'bf16', 256)]
    for card, profile, base, res in cases:
        row = dict(card_gb=card, profile=profile, base=base, resolution=res)
        if budget_left() < 0: rows.append(row | dict(skipped='time budget')); continue
        cfg = _bench_cfg(args, profile, base, res)
        plan = lambda n: plan_memory(cfg, card, arch=arch, base=base, device='cuda', blocks_to_swap=n)
        n = next((n for n in range(arch.double + arch.single + 1) if plan(n).fits), None) if card else 1
        if n is None: rows.append(row | dict(skipped='the planner finds no swap that fits')); continue
        try:
            m = _model(args, device, base, cfg)
            ref_s, ref_peak, ref_losses = _train(m, cfg, device, args.steps)
            del m
            if device.type == 'cuda': torch.cuda.empty_cache()
            m = _model(args, device, base, cfg)
            sw = BlockSwap(m, n, device)
            if device.type == 'cuda':
                torch.cuda.empty_cache()
                torch.cuda.set_per_process_memory_fraction((card - CUDA_CONTEXT_GB) * GB / torch.cuda.get_device_properties(0).total_memory)
            s, peak, losses = _train(m, cfg, device, args.steps, extra=0 if device.type == 'cuda' else sw.host_bytes)
        except torch.OutOfMemoryError as e:
            rows.append(row | dict(swap=n, skipped=f"out of memory under the cap: {str(e).splitlines()[0][:80]}"))
            m = sw = None; torch.cuda.empty_cache(); continue
        finally:
            if device.type == 'cuda': torch.cuda.set_per_process_memory_fraction(1.0)
        p = plan(n)
        fd, fs = block_flops(arch.width, (res // 16) ** 2, args.t5)
        tflops = 3 * (arch.double * fd + arch.single * fs) / ref_s / 1e12  # what the blocks reached unswapped
        t, t0 = step_seconds(p, arch, tflops=tflops, pcie_gbps=link or 25.0)
        rows.append(row | dict(swap=n, host_gib=sw.host_bytes / GB, sec_per_step_none=ref_s, sec_per_step=s, slowdown=s / ref_s,
                               predicted_slowdown=t / t0, peak_gib=peak / GB, planned_gib=p.train_peak / GB,
                               plan_error=p.train_peak / peak - 1, loss_diff=max(abs(a - b) for a, b in zip(losses, ref_losses)),
                               tflops=tflops, h2d_gbps=link, stats=dict(sw.stats)))
        print(f"  swap {card} GiB {profile} {base} {res}²: {n} blocks, {s:.3f} vs {ref_s:.3f} s/step (×{s/ref_s:.2f}, predicted ×{t/t0:.2f}), "
              f"peak {peak/GB:.2f} GiB, plan {p.train_peak/GB:.2f} GiB ({rows[-1]['plan_error']:+.1%}), |Δloss| {rows[-1]['loss_diff']:.2g}", flush=True)
        del m, sw
        if device.type == 'cuda': torch.cuda.empty_cache()
    return rows, link

def fsdp_case(args, device, budget_left):
    "fast FP8 (bf16 on a CPU) 512²: sharded with FSDP2 in a one-process group against the same run unsharded."
    import torch.distributed as dist
    from fluxid_nb.memory import plan_memory, architecture, GB
    from fluxid_nb.shard import shard_model
    if budget_left() < 0: return [dict(case='fsdp', skipped='time budget')]
    base, res = ('fp8', 512) if device.type == 'cuda' else ('bf16', 256)
    cfg, arch = _bench_cfg(args, 'fast', base, res), architecture(args.double, args.single, args.width)
    if not dist.is_initialized():
        dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo', store=dist.HashStore(), rank=0, world_size=1)
    m = _model(args, device, base, cfg)
    ref_s, ref_peak, ref_losses = _train(m, cfg, device, args.steps)
    del m
    if device.type == 'cuda': torch.cuda.empty_cache()
    m = shard_model(_model(args, device, base, cfg), device, 1)
    s, peak, losses = _train(m, cfg, device, args.steps)
    p1 = plan_memory(cfg, arch=arch, base=base, device='cpu')
    p2 = plan_memory(cfg, arch=arch, base=base, device='cpu', gpus=2, sharded=True)
    row = dict(case='fsdp', base=base, resolution=res, processes=1, sec_per_step_none=ref_s, sec_per_step=s, peak_gib=peak / GB,
               peak_gib_none=ref_peak / GB, planned_gib=p1.train_peak / GB, plan_error=p1.train_peak / peak - 1,
               planned_gib_2gpus=p2.train_peak / GB, loss_diff=max(abs(a - b) for a, b in zip(losses, ref_losses)))
    print(f"  fsdp {base} {res}² (1 process): {s:.3f} vs {ref_s:.3f} s/step, peak {peak/GB:.2f} GiB (unsharded {ref_peak/GB:.2f}), "
          f"plan {p1.train_peak/GB:.2f} GiB; 2 GPUs planned {p2.train_peak/GB:.2f} GiB each; |Δloss| {row['loss_diff']:.2g}", flush=True)
    del m
    if device.type == 'cuda': torch.cuda.empty_cache()
    return [row]

def levers(args, device, budget_left):
    "SDPA backends and torch.compile of the blocks, bf16 fast profile at the first resolution."
    from torch.nn.attention import sdpa_kernel, SDPBackend
    from fluxid_nb.config import resolve_config
    from fluxid_nb.lora import add_lora
    from fluxid_nb.flow import flow_loss, make_optimizer, Batch
    res = args.resolutions[0]
    cfg = resolve_config('fast', env={}, run_name='levers', resolution=res, min_bucket_reso=min(256, res),
                         max_bucket_reso=max(1024, res), t5_max_length=args.t5)
    m = build(device, torch.bfloat16, args.double, args.single, args.width)
    m.enable_gradient_checkpointing()
    params = add_lora(m, cfg); opt = make_optimizer(params, cfg)
    h = res // 8
    batch = Batch(torch.randn(1, 16, h, h), torch.rand(1, 16, h, h) * 0.1, torch.randn(1, args.t5, 4096), torch.randn(1, 768), ['x'])
    def timed(n=args.steps):
        ts = []
        for i in range(n + 1):
            t = time.perf_counter()
            loss = flow_loss(m, batch, cfg, torch.Generator().manual_seed(i), device, torch.bfloat16); loss.backward()
            opt.step(); opt.zero_grad(set_to_none=True)
            if device.type == 'cuda': torch.cuda.synchronize()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts[1:]), ts[0]
    backends = ([('default', None), ('flash', SDPBackend.FLASH_ATTENTION), ('efficient', SDPBackend.EFFICIENT_ATTENTION),
                 ('cudnn', SDPBackend.CUDNN_ATTENTION)] if device.type == 'cuda' else [('default (flash for CPU)', None), ('math', SDPBackend.MATH)])
    rows = []
    for name, be in backends:
        if budget_left() < 0: rows.append(dict(lever=f'sdpa {name}', skipped='time budget')); continue
        try:
            with (sdpa_kernel(be) if be else contextlib.nullcontext()): sps, first = timed()
            rows.append(dict(lever=f'sdpa {name}', sec_per_step=sps))
        except Exception as e: rows.append(dict(lever=f'sdpa {name}', error=str(e).splitlines()[0][:120]))
        print(f"  lever {rows[-1]}", flush=True)
    if device.type == 'cuda' and not args.no_compile and budget_left() > 120:
        for b in [*m.transformer_blocks, *m.single_transformer_blocks]: b.compile()
        try:
            sps, first = timed()
            rows.append(dict(lever='torch.compile blocks', sec_per_step=sps, first_step_s=first))
        except Exception as e: rows.append(dict(lever='torch.compile blocks', error=str(e).splitlines()[0][:120]))
        print(f"  lever {rows[-1]}", flush=True)
    else:
        rows.append(dict(lever='torch.compile blocks', skipped='CPU: compile time exceeds the run' if device.type != 'cuda' else 'time budget'))
    return rows

def swap_table(rows, fsdp_rows, link) -> str:
    "The swap and FSDP rows as markdown."
    out = ['', f"host→device: {'%.1f GB/s measured (pinned)' % link if link else 'n/a (CPU: swap is a no-op, nothing is copied)'}",
           "| card | profile | base | resolution | swap | host GiB | s/step unswapped | s/step swapped | slowdown | predicted | peak GiB | planner GiB | planner error | max abs Δloss |",
           "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        card = f"{r['card_gb']} GB" if r['card_gb'] else 'CPU'
        if 'skipped' in r:
            out.append(f"| {card} | {r['profile']} | {r['base']} | {r['resolution']}² | {r.get('swap', '')} | | skipped: {r['skipped']} | | | | | | | |"); continue
        out.append(f"| {card} | {r['profile']} | {r['base']} | {r['resolution']}² | {r['swap']} | {r['host_gib']:.1f} | {r['sec_per_step_none']:.3f} | "
                   f"{r['sec_per_step']:.3f} | {r['slowdown']:.2f}× | {r['predicted_slowdown']:.2f}× | {r['peak_gib']:.3f} | {r['planned_gib']:.3f} | "
                   f"{r['plan_error']:+.1%} | {r['loss_diff']:.2g} |")
    out += ['', "| FSDP (one process: the sharded code path) | s/step unsharded | s/step sharded | peak GiB | planner GiB | planner error | planner GiB per GPU, 2 GPUs | max abs Δloss |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in fsdp_rows:
        if 'skipped' in r: out.append(f"| fsdp | skipped: {r['skipped']} | | | | | | |"); continue
        out.append(f"| {r['base']} {r['resolution']}² | {r['sec_per_step_none']:.3f} | {r['sec_per_step']:.3f} | {r['peak_gib']:.3f} | "
                   f"{r['planned_gib']:.3f} | {r['plan_error']:+.1%} | {r['planned_gib_2gpus']:.3f} (needs 2 GPUs to measure) | {r['loss_diff']:.2g} |")
    return '\n'.join(out)

def table(rows, lever_rows, device_name) -> str:
    out = [f"device: {device_name}",
           "| base | profile | resolution | tokens | s/step | peak GiB | planner GiB | planner error | bf16 FLOP-floor fraction |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if 'skipped' in r: out.append(f"| {r['base']} | {r['profile']} | {r['resolution']}² | | skipped ({r['skipped']}) | | | | |"); continue
        out.append(f"| {r['base']} | {r['profile']} | {r['resolution']}² | {r['tokens']} | {r['sec_per_step']:.3f} | {r['peak_gib']:.3f} | "
                   f"{r['planned_gib']:.3f} | {r['plan_error']:+.1%} | {_pct(r['floor_fraction'])} |")
    out += ['', "| speed lever (bf16, fast, first resolution) | s/step |", "|---|---:|"]
    for r in lever_rows:
        out.append(f"| {r['lever']} | {r.get('sec_per_step', float('nan')):.3f} |" if 'sec_per_step' in r
                   else f"| {r['lever']} | {r.get('skipped') or r.get('error')} |")
    return '\n'.join(out)

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--reduced', action='store_true', help='CPU: width 128, 1 double + 1 single block, T5 16 tokens, 1 timed step')
    ap.add_argument('--out', default=str(ROOT/'output'/'bench'))
    ap.add_argument('--budget-s', type=float, default=480, help='stop starting new cases after this many seconds')
    ap.add_argument('--bases', default='bf16,fp8,nf4', help="comma list of bf16, fp8 (fluxid's fp8_base_), "
                    "fp8_layerwise (diffusers' enable_layerwise_casting, for comparison), nf4")
    ap.add_argument('--profiles', default='fast,final')
    ap.add_argument('--no-compile', action='store_true')
    ap.add_argument('--only', default='bases,levers,swap,fsdp', help="comma list of sections: bases, levers, swap, fsdp")
    a = ap.parse_args(argv)
    only = set(a.only.split(','))
    if a.reduced:
        a.device, a.double, a.single, a.width, a.t5, a.steps, a.resolutions = 'cpu', 1, 1, 128, 16, 1, [256, 320, 384]
    else:
        if not torch.cuda.is_available(): sys.exit("no CUDA device: run with --reduced on CPU")
        a.device, a.double, a.single, a.width, a.t5, a.steps, a.resolutions = 'cuda', 19, 38, 3072, 512, 3, [512, 768, 1024]
    device = torch.device(a.device)
    name = torch.cuda.get_device_name(0) if device.type == 'cuda' else f'CPU ({os.cpu_count()} cores), reduced mode'
    budget_left = lambda: a.budget_s - (time.perf_counter() - T0)
    print(f"gpu_bench on {name}: {a.double}+{a.single} blocks × {a.width}, T5 {a.t5} tokens, {a.steps} timed step(s)", flush=True)
    rows = []
    for base in a.bases.split(',') if 'bases' in only else []:
        for prof in a.profiles.split(','):
            if budget_left() < 0: rows += [dict(base=base, profile=prof, resolution=r, skipped='time budget') for r in a.resolutions]; continue
            try: rows += run_case(a, device, base, prof, a.resolutions, budget_left)
            except torch.OutOfMemoryError as e:
                rows += [dict(base=base, profile=prof, resolution=r, skipped='out of memory') for r in a.resolutions]
                torch.cuda.empty_cache()
    lever_rows = levers(a, device, budget_left) if 'levers' in only else []
    swap_rows, link = swap_cases(a, device, budget_left) if 'swap' in only else ([], None)
    fsdp_rows = fsdp_case(a, device, budget_left) if 'fsdp' in only else []
    md = table(rows, lever_rows, name) + '\n' + swap_table(swap_rows, fsdp_rows, link)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    stem = 'gpu_bench_reduced' if a.reduced else 'gpu_bench'
    (out/f'{stem}.json').write_text(json.dumps(dict(device=name, args={k: v for k, v in vars(a).items()}, rows=rows, levers=lever_rows,
                                                    swap_rows=swap_rows, fsdp_rows=fsdp_rows, h2d_gbps=link,
                                                    wall_s=time.perf_counter() - T0), indent=1, default=str))
    (out/f'{stem}.md').write_text(f"# gpu_bench ({'reduced, CPU' if a.reduced else 'full size'})\n\n{md}\n")
    print(md); print(f"wall {time.perf_counter() - T0:.0f} s")
    return rows, lever_rows, swap_rows, fsdp_rows

if __name__ == '__main__': main()
