"""The list-at-once optimizer step and EMA give the numbers of the per-tensor loops they replace."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import torch

import genzoo
from genzoo.data.spec import DataSpec
from genzoo.optim import lr_at, make_optimizer, update_ema
from tiny import tiny

CFG = SimpleNamespace(lr=3e-3, weight_decay=0.1, warmup_steps=3, steps=12, min_lr_ratio=0.1)


def _per_tensor_optimizer(params):
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": CFG.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=CFG.lr, betas=(0.9, 0.999), foreach=False, fused=False)


@torch.no_grad()
def _per_tensor_ema(ema, model, decay):
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p.detach(), 1 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def _train(make_opt, ema_update, steps=10):
    torch.manual_seed(0)
    model = genzoo.create("pixelcnn", DataSpec(1, 6, 6, 5), **tiny("pixelcnn")).double()
    with torch.no_grad():  # random weights, so that every step moves every parameter
        for p in model.parameters():
            p.normal_(0, 0.2)
    ema = copy.deepcopy(model)
    params = list(model.parameters())
    opt = make_opt(params)
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, CFG)
        x = torch.randint(0, 5, (4, 1, 6, 6), generator=gen)
        opt.zero_grad(set_to_none=True)
        model.loss(x).backward()
        torch.nn.utils.clip_grad_norm_(params, 0.5)
        opt.step()
        ema_update(ema, model, min(0.99, (1 + step) / (10 + step)))
    return model, ema


def test_list_at_once_adamw_and_ema_match_the_per_tensor_loops_in_float64():
    model, ema = _train(lambda ps: make_optimizer(ps, CFG), update_ema)
    ref_model, ref_ema = _train(_per_tensor_optimizer, _per_tensor_ema)
    for (name, p), q in zip(model.named_parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12, msg=f"parameter {name} differs")
    for (name, p), q in zip(ema.state_dict().items(), ref_ema.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12, msg=f"EMA entry {name} differs")
    moved = [not torch.equal(p, q) for p, q in zip(ema.parameters(), model.parameters())]
    assert all(moved), "the EMA should trail the weights, not equal them"


def test_the_optimizer_is_torchs_fused_kernel_on_a_cpu():
    params = [torch.nn.Parameter(torch.randn(3, 3)), torch.nn.Parameter(torch.randn(3))]
    group = make_optimizer(params, CFG).param_groups[0]
    assert group["fused"] and not group["foreach"]


def test_the_fused_adamw_matches_the_per_tensor_loop_in_float64():
    model, _ = _train(lambda ps: make_optimizer(ps, CFG), update_ema)
    ref_model, _ = _train(_per_tensor_optimizer, _per_tensor_ema)
    for (name, p), q in zip(model.named_parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12, msg=f"parameter {name} differs")
