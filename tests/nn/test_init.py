"""Data-dependent initialization: every convolution starts normalized on the batch it saw."""
from __future__ import annotations

import torch
from torch import nn

from genzoo.nn.init import data_dependent_init


def random_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ELU(), nn.ConvTranspose2d(5, 4, 2, stride=2), nn.ELU(),
                        nn.Conv2d(4, 6, 1)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.7 + 0.2)  # far from normalized, and biased
    return net


def conv_outputs(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    outs: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda m, i, o: outs.append(o)) for m in net if not isinstance(m, nn.ELU)]
    net(x)
    for h in handles:
        h.remove()
    return outs


def test_each_convolution_starts_with_zero_mean_and_the_set_spread_per_channel():
    net = random_net()
    x = torch.randn(8, 3, 5, 5, dtype=torch.float64) * 3 + 1
    before = [o.std(dim=(0, 2, 3)) for o in conv_outputs(net, x)]
    seen = []
    data_dependent_init(net, lambda: seen.append(net(x)), small=[net[4]])
    for out, target, old in zip(conv_outputs(net, x), [1.0, 1.0, 0.1], before):
        assert not torch.allclose(old, torch.full_like(old, target), atol=0.05)  # the test can fail
        torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(out.shape[1], dtype=torch.float64))
        torch.testing.assert_close(out.std(dim=(0, 2, 3)), torch.full((out.shape[1],), target, dtype=torch.float64))
    # later layers were initialized on the already normalized outputs of earlier ones
    torch.testing.assert_close(seen[0], net(x))


def test_a_channel_without_spread_is_centred_but_not_scaled():
    conv = nn.Conv2d(1, 2, 1).double()
    weight = conv.weight.detach().clone()
    x = torch.full((4, 1, 3, 3), 2.0, dtype=torch.float64)  # every output channel is constant
    data_dependent_init(conv, lambda: conv(x))
    torch.testing.assert_close(conv.weight, weight)
    torch.testing.assert_close(conv(x), torch.zeros(4, 2, 3, 3, dtype=torch.float64))


def test_hooks_are_removed_even_when_the_pass_fails():
    net = random_net()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)

    def failing() -> None:
        raise RuntimeError("stop")

    try:
        data_dependent_init(net, failing)
    except RuntimeError:
        pass
    assert all(not m._forward_hooks for m in net)
    weight = net[0].weight.detach().clone()
    net(x)
    torch.testing.assert_close(net[0].weight, weight)
