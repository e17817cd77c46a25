"""Training-step speed on one thread: genzoo against peer libraries at equal parameter counts, and
model FLOP utilisation (MFU) against the measured fp32 matrix-multiply peak (fastest of repeated
1024- and 2048-square products). Prints one JSON object.

    OMP_NUM_THREADS=1 python benchmarks/speed.py                       # genzoo only: peers skipped
    OMP_NUM_THREADS=1 /tmp/peers-venv/bin/python benchmarks/speed.py   # with diffusers and normflows

Pairs: genzoo's ddpm U-Net against diffusers' UNet2DModel (eps-prediction loss), genzoo's Glow against
normflows' multiscale Glow (Kingma & Dhariwal 2018), each peer sized to genzoo's parameter count. A
peer that is not importable is skipped with the reason. Every contender trains on the digits
(1x8x8) with AdamW; rounds alternate between the two of a pair and each reports the median seconds
per step; `ratio` is genzoo's median over the peer's (below 1: genzoo is faster). "realnvp-squeezed"
is RealNVP with checkerboard="squeezed".
MFU = (FLOPs of one step, forward and backward, by torch.utils.flop_counter) / step time / peak.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import genzoo  # noqa: E402
from common import emit, log, machine  # noqa: E402
from genzoo.optim import make_optimizer  # noqa: E402
from genzoo.train import TrainConfig  # noqa: E402


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


def trainer(module: torch.nn.Module, loss_fn: Callable[[Tensor], Tensor], x: Tensor) -> Callable[[], None]:
    """One AdamW step on batch `x` (genzoo's optimizer settings for everyone)."""
    opt = make_optimizer([p for p in module.parameters() if p.requires_grad], TrainConfig())

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(x).backward()
        opt.step()
    return step


def step_flops(step: Callable[[], None]) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def race(steps: dict[str, Callable[[], None]], rounds: int, per_round: int) -> dict[str, float]:
    """Median seconds per step of each contender, the rounds alternating between them."""
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            t = time.perf_counter()
            for _ in range(per_round):
                step()
            times[name].append((time.perf_counter() - t) / per_round)
    return {name: statistics.median(ts) for name, ts in times.items()}


def genzoo_model(name: str, data: Any, **config: Any) -> tuple[torch.nn.Module, Callable[[Tensor], Tensor]]:
    torch.manual_seed(0)
    model = genzoo.create(name, data.spec, **config)
    model.prepare(data)
    model.train()
    return model, lambda x: model.loss(x)


def diffusers_unet(target: int, spec: Any) -> tuple[torch.nn.Module, Callable[[Tensor], Tensor]]:
    """UNet2DModel with two levels (attention on the lower), widths scaled to `target` parameters."""
    from diffusers import UNet2DModel

    def build(width: int) -> torch.nn.Module:
        return UNet2DModel(sample_size=spec.height, in_channels=spec.channels, out_channels=spec.channels,
                           layers_per_block=1, block_out_channels=(width, 2 * width), norm_num_groups=8,
                           down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                           up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    width = min(range(8, 257, 8), key=lambda w: abs(num_params(build(w)) - target))
    torch.manual_seed(0)
    unet = build(width)
    alpha_bar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)

    def loss(x: Tensor) -> Tensor:
        x0 = x.float() / (spec.levels - 1) * 2 - 1
        t = torch.randint(0, 1000, (len(x),))
        eps = torch.randn_like(x0)
        abar = alpha_bar[t].view(-1, 1, 1, 1)
        return (unet(abar.sqrt() * x0 + (1 - abar).sqrt() * eps, t).sample - eps).pow(2).mean()
    return unet, loss


def normflows_glow(target: int, spec: Any, levels: int = 2, steps: int = 8) -> tuple[torch.nn.Module, Callable]:
    """normflows' multiscale Glow (its README's construction), hidden width scaled to `target` parameters."""
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
    hidden = min(range(8, 257, 8), key=lambda h: abs(num_params(build(h)) - target))
    torch.manual_seed(0)
    flow = build(hidden)

    def loss(x: Tensor) -> Tensor:
        v = (x.float() + torch.rand_like(x, dtype=torch.float32)) / spec.levels
        return flow.forward_kld(v)
    with torch.no_grad():  # actnorm's data-dependent initialisation
        flow.forward_kld((torch.randint(0, spec.levels, (64, C, H, W)).float() + 0.5) / spec.levels)
    return flow, loss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--per-round", type=int, default=4)
    args = p.parse_args()
    torch.set_num_threads(1)
    data = genzoo.data.load("digits", split="train")
    x = data.x[torch.randperm(len(data.x), generator=torch.Generator().manual_seed(0))[: args.batch_size]]
    peak = gemm_peak()
    log(f"fp32 GEMM peak, one thread: {peak / 1e9:.1f} GFLOP/s")
    result: dict[str, Any] = {"machine": machine(), "batch_size": args.batch_size, "rounds": args.rounds,
                              "steps_per_round": args.per_round, "gemm_peak_gflops": peak / 1e9,
                              "mfu": {}, "versus": {}}
    genzoo_steps = {}
    variants = {"pixelcnn": {}, "ddpm": {}, "glow": {}, "realnvp": {}, "realnvp-squeezed": {"checkerboard": "squeezed"}}
    for name, config in variants.items():
        model, loss = genzoo_model(name.split("-")[0], data, **config)
        genzoo_steps[name] = (model, trainer(model, loss, x))
        flops = step_flops(genzoo_steps[name][1])
        seconds = race({name: genzoo_steps[name][1]}, args.rounds, args.per_round)[name]
        result["mfu"][name] = {"params": num_params(model), "gflop_per_step": flops / 1e9, "seconds_per_step": seconds,
                               "mfu": flops / seconds / peak}
        log(name, result["mfu"][name])
    peers = {"ddpm": ("diffusers UNet2DModel", diffusers_unet), "glow": ("normflows MultiscaleFlow", normflows_glow)}
    for name, (peer_name, build_peer) in peers.items():
        model, step = genzoo_steps[name]
        try:
            peer, peer_loss = build_peer(num_params(model), data.spec)
        except ImportError as e:
            result["versus"][name] = {"peer": peer_name, "skipped": f"not importable: {e}"}
            log(name, result["versus"][name])
            continue
        medians = race({"genzoo": step, "peer": trainer(peer, peer_loss, x)}, args.rounds, args.per_round)
        result["versus"][name] = {"peer": peer_name, "params": num_params(model), "peer_params": num_params(peer),
                                  "genzoo_seconds_per_step": medians["genzoo"], "peer_seconds_per_step": medians["peer"],
                                  "ratio": medians["genzoo"] / medians["peer"]}
        log(name, result["versus"][name])
    emit(result)


if __name__ == "__main__":
    main()
