"""Training-step speed on one thread: genzoo against peer libraries at equal parameter counts, model
FLOP utilisation (MFU) against the measured fp32 matrix-multiply peak (fastest of repeated 1024- and
2048-square products), the step options (channels_last, torch.compile) against the plain step, the
1x1 convolutions as matrix products (genzoo.nn.pointwise) against torch's convolution, and data
parallelism on 2 gloo processes against 1 process. Prints one JSON object.

    OMP_NUM_THREADS=1 python benchmarks/speed.py                       # genzoo only: peers skipped
    OMP_NUM_THREADS=1 /tmp/peers-venv/bin/python benchmarks/speed.py   # with diffusers and normflows

Pairs, each peer sized to genzoo's parameter count and built as its documentation builds it:
genzoo's ddpm U-Net against diffusers' UNet2DModel (eps-prediction loss, the same widths, levels,
attention and dropout), genzoo's Glow against normflows' multiscale Glow (its README's construction),
genzoo's RealNVP against a normflows RealNVP of the same layout (checkerboard couplings, squeeze,
channel couplings, factor-out; normflows' checkerboard coupling runs its network on the kept half).
Each library trains with its own optimizer as its users get it: genzoo's (torch's fused AdamW), and
for the peers `torch.optim.AdamW(parameters)`, torch's default (a per-tensor loop on a CPU).
`model_ratio` times forward and backward alone, without the optimizer. Rounds alternate between
the two of a pair and each reports the median seconds per step; `speedup` is the peer's median over
genzoo's (above 1: genzoo is faster). "realnvp-squeezed" is RealNVP with checkerboard="squeezed".
MFU = (FLOPs of one step, forward and backward, by torch.utils.flop_counter) / step time / peak.
`kernel_mfu` divides the same FLOPs by the time spent inside the kernels that do them (convolutions,
matrix products, attention; torch.profiler), the MFU the step would reach if everything else took no
time; `kernel_share` is that time's share of the step.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import genzoo  # noqa: E402
from common import MNIST_8K, emit, log, machine  # noqa: E402
from genzoo.nn.pointwise import to_channels_last  # noqa: E402
from genzoo.optim import make_optimizer  # noqa: E402
from genzoo.training import TrainConfig  # noqa: E402


def gemm_peak(sizes: tuple[int, ...] = (1024, 2048), repeat: int = 10) -> float:
    """Peak fp32 matrix-multiply FLOP/s: the fastest n x n x n product, over sizes and repeats."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        for _ in range(repeat):
            t = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def trainer(module: torch.nn.Module, loss_fn: Callable[[Tensor], Tensor], x: Tensor,
            opt: torch.optim.Optimizer | None) -> Callable[[], None]:
    """One step on batch `x`: forward, backward and, with `opt`, the optimizer's update."""
    params = [p for p in module.parameters() if p.requires_grad]

    def step() -> None:
        for p in params:
            p.grad = None
        loss_fn(x).backward()
        if opt is not None:
            opt.step()
    return step


def genzoo_optimizer(module: torch.nn.Module) -> torch.optim.Optimizer:
    return make_optimizer([p for p in module.parameters() if p.requires_grad], TrainConfig())


def peer_optimizer(module: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-3)


def step_flops(step: Callable[[], None]) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


GEMM_OPS = ("convolution", "mm", "addmm", "bmm", "baddbmm", "scaled_dot_product")


def kernel_seconds(step: Callable[[], None], repeat: int = 5) -> tuple[float, float]:
    """(seconds per step inside the FLOP-counted kernels: convolutions, matrix products, attention;
    seconds per step in all), by torch.profiler over `repeat` steps (one thread: self times add up)."""
    from torch.profiler import profile
    step()
    with profile() as prof:
        t = time.perf_counter()
        for _ in range(repeat):
            step()
        total = time.perf_counter() - t
    inside = sum(e.self_cpu_time_total for e in prof.key_averages()
                 if any(op in e.key.removeprefix("aten::").lstrip("_").split("_backward")[0] for op in GEMM_OPS))
    return inside / 1e6 / repeat, total / repeat


def race(steps: dict[str, Callable[[], None]], rounds: int, per_round: int) -> dict[str, float]:
    """Median seconds per step of each contender, the rounds alternating between them (on CUDA, each
    round's clock stops when the device has finished)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            sync()
            t = time.perf_counter()
            for _ in range(per_round):
                step()
            sync()
            times[name].append((time.perf_counter() - t) / per_round)
    return {name: statistics.median(ts) for name, ts in times.items()}


def genzoo_model(name: str, data: Any, **config: Any) -> tuple[torch.nn.Module, Callable[[Tensor], Tensor]]:
    torch.manual_seed(0)
    model = genzoo.create(name, data.spec, **config)
    model.prepare(data)
    model.train()
    return model, lambda x: model.loss(x)


def closest(build: Callable[[int], torch.nn.Module], target: int) -> int:
    """The width (a multiple of 8 up to 256) whose model has the parameter count closest to `target`."""
    return min(range(8, 257, 8), key=lambda w: abs(num_params(build(w)) - target))


def diffusers_unet(model: Any, spec: Any) -> tuple[torch.nn.Module, Callable[[Tensor], Tensor]]:
    """UNet2DModel with genzoo's levels (two, attention on the lower) and dropout, widths scaled to its parameters."""
    from diffusers import UNet2DModel

    def build(width: int) -> torch.nn.Module:
        return UNet2DModel(sample_size=spec.height, in_channels=spec.channels, out_channels=spec.channels,
                           layers_per_block=1, block_out_channels=(width, 2 * width), norm_num_groups=8,
                           down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                           up_block_types=("AttnUpBlock2D", "UpBlock2D"), dropout=model.config.dropout)
    width = closest(build, num_params(model))
    torch.manual_seed(0)
    unet = build(width)
    alpha_bar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)

    def loss(x: Tensor) -> Tensor:
        x0 = x.float() / (spec.levels - 1) * 2 - 1
        t = torch.randint(0, 1000, (len(x),), device=x.device)
        eps = torch.randn_like(x0)
        abar = alpha_bar.to(x.device)[t].view(-1, 1, 1, 1)
        return (unet(abar.sqrt() * x0 + (1 - abar).sqrt() * eps, t).sample - eps).pow(2).mean()
    return unet, loss


def _normflows_loss(flow: torch.nn.Module, spec: Any) -> Callable[[Tensor], Tensor]:
    def loss(x: Tensor) -> Tensor:
        v = (x.float() + torch.rand_like(x, dtype=torch.float32)) / spec.levels
        return flow.forward_kld(v)
    with torch.no_grad():  # actnorm's data-dependent initialisation
        loss(torch.randint(0, spec.levels, (64, *spec.shape)))
    return loss


def normflows_glow(model: Any, spec: Any, levels: int = 2, steps: int = 8) -> tuple[torch.nn.Module, Callable]:
    """normflows' multiscale Glow (its README's construction), hidden width scaled to genzoo's parameters."""
    import normflows as nf

    C, H, W = spec.channels, spec.height, spec.width

    def build(hidden: int) -> torch.nn.Module:
        q0, merges, flows = [], [], []
        for i in range(levels):
            flows.append([nf.flows.GlowBlock(C * 2 ** (levels + 1 - i), hidden, split_mode="channel", scale=True)
                          for _ in range(steps)] + [nf.flows.Squeeze()])
            if i > 0:
                merges.append(nf.flows.Merge())
                shape = (C * 2 ** (levels - i), H // 2 ** (levels - i), W // 2 ** (levels - i))
            else:
                shape = (C * 2 ** (levels + 1), H // 2 ** levels, W // 2 ** levels)
            q0.append(nf.distributions.GlowBase(shape))
        return nf.MultiscaleFlow(q0, flows, merges, class_cond=False)
    hidden = closest(build, num_params(model))
    torch.manual_seed(0)
    flow = build(hidden)
    return flow, _normflows_loss(flow, spec)


def normflows_realnvp(model: Any, spec: Any) -> tuple[torch.nn.Module, Callable]:
    """genzoo's RealNVP layout in normflows: per scale 3 checkerboard couplings, squeeze, 3 channel
    couplings, factor out half; 4 checkerboard couplings at the top; s, t nets conv 3-1-3, exp scale."""
    import normflows as nf

    C, H, W = spec.channels, spec.height, spec.width
    scales = 3

    def coupling(c_in: int, c_out: int, hidden: int, mode: str) -> Any:
        net = nf.nets.ConvNet2d([c_in, hidden, hidden, 2 * c_out], [3, 1, 3], init_zeros=True)
        return nf.flows.AffineCouplingBlock(net, scale=True, scale_map="exp", split_mode=mode)

    def build(hidden: int) -> torch.nn.Module:
        q0, merges, flows = [], [], []
        c, h, w = C * 2 ** (2 * (scales - 1)) // 2 ** (scales - 1), H // 2 ** (scales - 1), W // 2 ** (scales - 1)
        flows.append([coupling(c, c, hidden, "checkerboard" + ("_inv" if k % 2 else "")) for k in range(4)])
        q0.append(nf.distributions.DiagGaussian((c, h, w), trainable=False))
        for _ in range(scales - 1):  # from the top down to the data
            level = [coupling(c, c, hidden, "channel" + ("_inv" if k % 2 else "")) for k in range(3)]  # on 2c channels
            level.append(nf.flows.Squeeze())
            level += [coupling(c // 2, c // 2, hidden, "checkerboard" + ("_inv" if k % 2 else "")) for k in range(3)]
            flows.append(level)
            merges.append(nf.flows.Merge())
            q0.append(nf.distributions.DiagGaussian((c, h, w), trainable=False))
            c, h, w = c // 2, 2 * h, 2 * w
        return nf.MultiscaleFlow(q0, flows, merges, class_cond=False)
    hidden = closest(build, num_params(model))
    torch.manual_seed(0)
    flow = build(hidden)
    return flow, _normflows_loss(flow, spec)


def ddp_images_per_second(steps: int, rounds: int) -> dict[str, Any]:
    """`genzoo train pixelcnn` on the digits by 1 process and by torchrun with 2 gloo processes (the
    same global batch of 64), alternating; images/s between step 50 and the last step (before the
    final validation), from the run's metrics."""
    def run(procs: int, out: Path) -> float:
        launcher = [] if procs == 1 else ["-m", "torch.distributed.run", f"--nproc_per_node={procs}",
                                          "--master_addr=127.0.0.1", f"--master_port={29500 + os.getpid() % 1000}"]
        cmd = [sys.executable, *launcher, "-m", "genzoo", "train", "pixelcnn", "--steps", str(steps),
               "--eval-every", str(steps), "--sample-every", "0", "--device", "cpu", "--no-progress", "--out", str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(genzoo.__file__).parents[1])}
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        first = next(r for r in rows if r.get("step") == 50)
        last = next(r for r in rows if r.get("step") == steps)
        return 64 * (steps - 50) / (last["seconds"] - first["seconds"])

    ips: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for procs in ips:
                ips[procs].append(run(procs, Path(tmp) / f"{procs}-{r}"))
    one, two = statistics.median(ips[1]), statistics.median(ips[2])
    return {"model": "pixelcnn", "global_batch": 64, "steps": steps, "rounds": rounds, "images_per_second_1": one,
            "images_per_second_2": two, "speedup": two / one, "cores": os.cpu_count()}


def step_options(name: str, data: Any, x: Tensor, rounds: int, per_round: int, device: str = "cpu") -> dict[str, float]:
    """The plain step against the same model in channels_last and under torch.compile."""
    steps, compile_seconds = {}, 0.0
    for option in ("plain", "channels_last", "compile"):
        model, _ = genzoo_model(name, data)
        model.to(device)
        loss = model.loss
        if option == "channels_last":
            to_channels_last(model)  # as genzoo train --channels-last does
        if option == "compile":
            loss = torch.compile(model.loss)
        steps[option] = trainer(model, loss, x, genzoo_optimizer(model))
        if option == "compile":
            t = time.perf_counter()
            steps[option]()
            compile_seconds = time.perf_counter() - t
    medians = race(steps, rounds, per_round)
    return {"plain_seconds_per_step": medians["plain"], "compile_seconds": compile_seconds,
            **{f"{k}_speedup": medians["plain"] / medians[k] for k in ("channels_last", "compile")}}


def pointwise_speedup(name: str, data: Any, x: Tensor, rounds: int, per_round: int) -> float:
    """A whole training step with genzoo.nn.pointwise.conv1x1 (1x1 convolutions as matrix products)
    against the same step with torch's convolution in its place, alternating: the plain step's time
    over the pointwise one's."""
    import torch.nn.functional as F

    from genzoo.nn import causal, flow_layers, masked, pointwise
    homes, fast = (pointwise, masked, flow_layers, causal), pointwise.conv1x1

    def use(fn: Callable) -> None:
        for module in homes:
            module.conv1x1 = fn

    model, loss = genzoo_model(name, data)
    step = trainer(model, loss, x, genzoo_optimizer(model))
    try:
        medians = race({"conv": lambda: (use(lambda x, w, b=None: F.conv2d(x, w, b)), step()),
                        "pointwise": lambda: (use(fast), step())}, rounds, per_round)
    finally:
        use(fast)
    return medians["conv"] / medians["pointwise"]


def versus(model: Any, loss: Callable, peer: Any, peer_loss: Callable, x: Tensor, rounds: int, per_round: int) -> dict:
    """Each with its own optimizer, then forward and backward alone."""
    full = race({"genzoo": trainer(model, loss, x, genzoo_optimizer(model)),
                 "peer": trainer(peer, peer_loss, x, peer_optimizer(peer))}, rounds, per_round)
    bare = race({"genzoo": trainer(model, loss, x, None), "peer": trainer(peer, peer_loss, x, None)}, rounds, per_round)
    return {"params": num_params(model), "peer_params": num_params(peer), "genzoo_seconds_per_step": full["genzoo"],
            "peer_seconds_per_step": full["peer"], "speedup": full["peer"] / full["genzoo"],
            "model_ratio": bare["peer"] / bare["genzoo"]}


PEERS = {"ddpm": ("diffusers UNet2DModel", diffusers_unet), "glow": ("normflows MultiscaleFlow Glow", normflows_glow),
         "realnvp": ("normflows MultiscaleFlow RealNVP", normflows_realnvp),
         "realnvp-squeezed": ("normflows MultiscaleFlow RealNVP", normflows_realnvp)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--per-round", type=int, default=4)
    p.add_argument("--skip", default="", help="parts to leave out: mfu, versus, options, pointwise, ddp (comma-separated)")
    p.add_argument("--ddp-steps", type=int, default=250)
    p.add_argument("--data", default="digits", help="digits (default) or mnist (28x28; with --root, or the mnist-8k "
                                                      "beside the repository)")
    p.add_argument("--root", default=None)
    args = p.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    torch.set_num_threads(1)
    data = genzoo.data.load(args.data, split="train",
                            root=args.root or (str(MNIST_8K) if args.data == "mnist" else None))
    x = data.x[torch.randperm(len(data.x), generator=torch.Generator().manual_seed(0))[: args.batch_size]]
    peak = gemm_peak()
    log(f"fp32 GEMM peak, one thread: {peak / 1e9:.1f} GFLOP/s")
    result: dict[str, Any] = {"machine": machine(), "torch": torch.__version__, "data": args.data,
                              "image": list(data.spec.shape), "batch_size": args.batch_size,
                              "rounds": args.rounds, "steps_per_round": args.per_round,
                              "gemm_peak_gflops": peak / 1e9, "mfu": {}, "versus": {}, "options": {}}
    variants = {"pixelcnn": {}, "ddpm": {}, "glow": {}, "realnvp": {}, "realnvp-squeezed": {"checkerboard": "squeezed"}}
    models = {name: genzoo_model(name.split("-")[0], data, **config) for name, config in variants.items()}
    for name, (model, loss) in models.items() if "mfu" not in skip else ():
        step = trainer(model, loss, x, genzoo_optimizer(model))
        flops = step_flops(step)
        seconds = race({name: step}, args.rounds, args.per_round)[name]
        inside, profiled = kernel_seconds(step)
        result["mfu"][name] = {"params": num_params(model), "gflop_per_step": flops / 1e9,
                               "seconds_per_step": seconds, "mfu": flops / seconds / peak,
                               "kernel_share": inside / profiled, "kernel_mfu": flops / inside / peak}
        log(name, result["mfu"][name])
    for name, (peer_name, build_peer) in PEERS.items() if "versus" not in skip else ():
        try:
            peer, peer_loss = build_peer(models[name][0], data.spec)
        except Exception as e:  # not installed, or not buildable for this image size
            result["versus"][name] = {"peer": peer_name, "skipped": f"{type(e).__name__}: {e}"}
        else:
            result["versus"][name] = {"peer": peer_name, **versus(*models[name], peer, peer_loss, x, args.rounds,
                                                                   args.per_round)}
        log(name, result["versus"][name])
    for name in ("pixelcnn", "ddpm", "glow") if "options" not in skip else ():
        result["options"][name] = step_options(name, data, x, args.rounds, args.per_round)
        log(name, result["options"][name])
    for name in ("pixelcnn", "gated-pixelcnn", "pixelcnn++", "ddpm", "glow", "realnvp") if "pointwise" not in skip else ():
        result.setdefault("pointwise_speedup", {})[name] = pointwise_speedup(name, data, x, args.rounds, args.per_round)
        log(name, "pointwise speedup", result["pointwise_speedup"][name])
    if "ddp" not in skip:
        result["ddp"] = ddp_images_per_second(args.ddp_steps, rounds=3)
        log("ddp", result["ddp"])
    emit(result)


if __name__ == "__main__":
    main()
