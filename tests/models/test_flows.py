"""Flows (RealNVP, Glow) against the mathematics of the change of variables, in float64 with random
non-identity weights: every layer and every model inverts exactly and its log_det equals log abs
det of the autograd Jacobian; densities integrate to 1; the dequantized bound is a bound."""
from __future__ import annotations

import math
from typing import Callable

import pytest
import torch
from torch import Tensor, nn

import genzoo
from genzoo.data.spec import DataSpec
from genzoo.errors import GenzooError
from genzoo.functional import standard_normal_log_prob
from genzoo.nn.flow_layers import (
    ActNorm,
    AffineCoupling,
    GaussianizeSplit,
    GaussianizeTop,
    InvConv1x1,
    InvConv1x1LU,
    Squeeze,
    checkerboard,
)
from tiny import tiny

TOY = DataSpec(2, 1, 1, 256)


def randomize(module: nn.Module, scale: float = 0.3, seed: int = 0) -> nn.Module:
    """Perturb every parameter (zero-initialised layers are the identity and test nothing)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, ActNorm):
                m.initialized.fill_(1)
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return module


def layer(build: Callable[[], nn.Module], shape: tuple[int, int, int]):
    """A FlowLayer as (module, u -> (flat y, log_det), flat y -> u, input shape)."""
    def make():
        m = randomize(build().double())
        with torch.no_grad():
            y_shape = m(torch.zeros(1, *shape, dtype=torch.float64))[0].shape[1:]

        def forward(u: Tensor) -> tuple[Tensor, Tensor]:
            y, log_det = m(u)
            return y.flatten(1), log_det

        return m, forward, lambda y: m.inverse(y.view(y.shape[0], *y_shape)), shape
    return make


def model(name: str, spec: DataSpec, **overrides):
    def make():
        m = genzoo.create(name, spec, **overrides).double()
        randomize(m, scale=0.2)
        return m, m.encode, m.decode, spec.shape
    return make


CASES = {
    "actnorm": layer(lambda: ActNorm(3), (3, 4, 4)),
    "invconv1x1": layer(lambda: InvConv1x1(3), (3, 4, 4)),
    "invconv1x1-lu": layer(lambda: InvConv1x1LU(4), (4, 2, 3)),
    "squeeze": layer(lambda: Squeeze(), (2, 4, 2)),
    "coupling-checkerboard-0-tanh": layer(lambda: AffineCoupling(2, 4, 4, "checkerboard", 0, 8, 1, "tanh"), (2, 4, 4)),
    "coupling-checkerboard-1-sigmoid": layer(lambda: AffineCoupling(1, 3, 4, "checkerboard", 1, 8, 1, "sigmoid"), (1, 3, 4)),
    "coupling-squeezed-checkerboard-0-tanh":
        layer(lambda: AffineCoupling(2, 4, 4, "squeezed-checkerboard", 0, 8, 1, "tanh"), (2, 4, 4)),
    "coupling-squeezed-checkerboard-1-sigmoid":
        layer(lambda: AffineCoupling(1, 4, 6, "squeezed-checkerboard", 1, 8, 1, "sigmoid"), (1, 4, 6)),
    "coupling-squeezed-checkerboard-2x2":
        layer(lambda: AffineCoupling(3, 2, 2, "squeezed-checkerboard", 1, 8, 0, "tanh"), (3, 2, 2)),
    "coupling-channel-0-tanh": layer(lambda: AffineCoupling(3, 3, 3, "channel", 0, 8, 2, "tanh"), (3, 3, 3)),
    "coupling-channel-1-sigmoid": layer(lambda: AffineCoupling(5, 2, 2, "channel", 1, 8, 0, "sigmoid"), (5, 2, 2)),
    "coupling-channel-toy": layer(lambda: AffineCoupling(2, 1, 1, "channel", 1, 8, 1, "tanh"), (2, 1, 1)),
    "split-prior": layer(lambda: GaussianizeSplit(4, 2, 8, 2, 2), (4, 2, 2)),
    "top-prior": layer(lambda: GaussianizeTop(2, 2, 2), (2, 2, 2)),
    "realnvp-grey": model("realnvp", DataSpec(1, 4, 4, 17), hidden_channels=8, num_blocks=1),
    "realnvp-colour": model("realnvp", DataSpec(3, 4, 4, 256), hidden_channels=8, num_blocks=1, couplings_per_scale=2),
    "realnvp-squeezed-grey": model("realnvp", DataSpec(1, 4, 4, 17), hidden_channels=8, num_blocks=1,
                                   checkerboard="squeezed"),
    "realnvp-squeezed-colour": model("realnvp", DataSpec(3, 4, 4, 256), hidden_channels=8, num_blocks=1,
                                     couplings_per_scale=2, checkerboard="squeezed"),
    "realnvp-toy": model("realnvp", TOY, hidden_channels=8),
    "glow-grey": model("glow", DataSpec(1, 4, 4, 17), hidden_channels=8, steps_per_level=2),
    "glow-colour": model("glow", DataSpec(3, 4, 4, 256), hidden_channels=8, steps_per_level=2, lu=False),
    "glow-toy": model("glow", TOY, hidden_channels=8, steps_per_level=3),
}


@pytest.mark.parametrize("case", list(CASES))
def test_flow_inverts_and_log_det_matches_autograd(case: str):
    m, forward, inverse, shape = CASES[case]()
    torch.manual_seed(1)
    u = torch.randn(2, *shape, dtype=torch.float64)
    y, log_det = forward(u)
    assert y.shape == (2, math.prod(shape)) and log_det.shape == (2,)
    torch.testing.assert_close(inverse(y), u, atol=1e-9, rtol=1e-9)
    for b in range(2):
        J = torch.autograd.functional.jacobian(lambda v: forward(v.view(1, *shape))[0].flatten(), u[b].flatten(),
                                             vectorize=True)
        torch.testing.assert_close(log_det[b], torch.linalg.slogdet(J).logabsdet, atol=1e-8, rtol=1e-8)
    assert log_det.abs().max() > 1e-3 or case == "squeeze", "the layer is (close to) volume-preserving: weights not random?"


@pytest.mark.parametrize("parity", [0, 1])
def test_squeezed_checkerboard_coupling_changes_the_pixels_of_the_masked_one(parity: int):
    torch.manual_seed(0)
    coupling = AffineCoupling(2, 4, 6, "squeezed-checkerboard", parity, 8, 1, "tanh").double()
    with torch.no_grad():  # zero-initialised output layer is the identity and tests nothing
        for p in coupling.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(3, 2, 4, 6, dtype=torch.float64)
    y, _ = coupling(x)
    kept = checkerboard(4, 6, parity).bool().expand_as(x)
    assert torch.equal(y[kept], x[kept]), "a kept pixel changed"
    assert (y[~kept] != x[~kept]).all(), "a pixel to change was left as it was"


def test_actnorm_initialisation_gives_zero_mean_unit_variance():
    torch.manual_seed(0)
    x = torch.randn(16, 3, 5, 5, dtype=torch.float64) * torch.tensor([0.5, 2.0, 7.0]).view(1, 3, 1, 1) + 3.0
    norm = ActNorm(3).double()
    y, _ = norm(x)
    assert int(norm.initialized) == 1
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(y.var(dim=(0, 2, 3), unbiased=False), torch.ones(3, dtype=torch.float64))
    y2, _ = norm(x * 10)  # initialised once: a second batch does not re-initialise
    torch.testing.assert_close(y2, (x * 10 + norm.bias) * norm.log_scale.exp())


def test_lu_invconv_log_det_equals_slogdet_of_its_weight():
    conv = randomize(InvConv1x1LU(5).double(), scale=0.5)
    x = torch.randn(2, 5, 3, 2, dtype=torch.float64)
    y, log_det = conv(x)
    torch.testing.assert_close(log_det, (6 * torch.linalg.slogdet(conv.weight).logabsdet).expand(2))
    torch.testing.assert_close(y, torch.einsum("ij,bjhw->bihw", conv.weight, x))


def grid_mass(m: nn.Module, lo: Tensor | float, hi: Tensor | float, n: int = 200) -> float:
    """Midpoint-rule integral of the flow's density p(u) over the rectangle [lo, hi] of 2-D model space."""
    lo, hi = torch.as_tensor(lo, dtype=torch.float64).expand(2), torch.as_tensor(hi, dtype=torch.float64).expand(2)
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    u = torch.cartesian_prod(lo[0] + (hi[0] - lo[0]) * t, lo[1] + (hi[1] - lo[1]) * t).view(-1, 2, 1, 1)
    with torch.no_grad():
        z, log_det = m.encode(u)
        return float((standard_normal_log_prob(z) + log_det).exp().sum() * ((hi - lo) / n).prod())


@pytest.mark.parametrize("name", ["realnvp", "glow"])
def test_toy_flow_density_integrates_to_one(name: str):
    m = randomize(genzoo.create(name, TOY, hidden_channels=8).double(), scale=0.2)
    with torch.no_grad():  # a rectangle holding the mass: 2000 samples' range, widened by half each side
        u = m.decode(torch.randn(2000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)).view(-1, 2)
    lo, hi = u.min(0).values, u.max(0).values
    assert abs(grid_mass(m, lo - (hi - lo) / 2, hi + (hi - lo) / 2, n=300) - 1) < 1e-2


@pytest.mark.parametrize("name", ["realnvp", "glow"])
def test_dequantized_bound_is_a_bound_on_discrete_probabilities(name: str):
    """Over every image of a 2-D, 4-level space, exp(bound) sums to the mass the density puts on
    the unit square (at most 1); the mean bound is <= 0 nats."""
    spec = DataSpec(2, 1, 1, 4)
    m = randomize(genzoo.create(name, spec, hidden_channels=8, alpha=0.01).double(), scale=0.1)
    x = torch.cartesian_prod(torch.arange(4), torch.arange(4)).view(16, 2, 1, 1)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        ll = m.log_likelihood(x, num_samples=1000, generator=g)
        single = m.log_likelihood(x, generator=g)
    assert ll.kind == "lower_bound" and single.kind == "lower_bound"
    edge = math.log(0.99 / 0.01)  # the unit square in model space: logit(alpha) .. logit(1 - alpha)
    mass = grid_mass(m, -edge, edge)
    total = float(ll.nats.exp().sum())
    assert mass <= 1 + 1e-3 and abs(total - mass) < 0.03 * mass, f"sum of bounds {total}, mass on the square {mass}"
    assert float(single.nats.mean()) <= 0.0
    # the importance-weighted bound is the tighter one (Jensen), up to Monte Carlo noise
    assert float(ll.nats.mean()) >= float(single.nats.mean()) - 0.05


@pytest.mark.parametrize("name", ["realnvp", "glow"])
def test_mean_bound_on_digits_is_at_most_zero_nats(name: str):
    data = genzoo.data.load("digits", split="test")
    m = genzoo.create(name, data.spec, **tiny(name))
    m.prepare(data)
    with torch.no_grad():
        ll = m.log_likelihood(data.x[:64], generator=torch.Generator().manual_seed(0))
    assert ll.kind == "lower_bound" and torch.isfinite(ll.nats).all()
    assert float(ll.nats.mean()) <= 0.0


def test_non_finite_log_det_names_the_layer():
    m = genzoo.create("glow", DataSpec(1, 4, 4, 17), hidden_channels=8, steps_per_level=2)
    with torch.no_grad():
        m.layers[2].log_s[0] = float("inf")  # layers: 0 squeeze, 1 actnorm, 2 the first 1x1 convolution
    with pytest.raises(GenzooError, match=r"layers\.2 \(InvConv1x1LU\).*log-determinant"):
        m.loss(torch.randint(0, 17, (4, 1, 4, 4)))


def test_check_inverse_reports_a_small_reconstruction_error():
    data = genzoo.data.load("digits", split="val")
    m = genzoo.create("glow", data.spec, **tiny("glow"))
    m.prepare(data)
    randomize(m, scale=0.05)
    assert m.task_metrics(data, torch.Generator().manual_seed(0)) == {}
    err = m.task_metrics(data, torch.Generator().manual_seed(0), check_inverse=True)["inverse_max_abs_error"]
    assert 0 <= err < 1e-3


def test_actnorm_state_survives_save_and_load(tmp_path):
    data = genzoo.data.load("digits", split="val")
    m = genzoo.create("glow", data.spec, **tiny("glow"))
    m.prepare(data)
    genzoo.save(m, tmp_path)
    loaded = genzoo.load(tmp_path)
    norms = [l for l in loaded.layers if isinstance(l, ActNorm)]
    assert norms and all(int(n.initialized) == 1 for n in norms)
    x = data.x[:8]
    a = m.eval().log_likelihood(x, generator=torch.Generator().manual_seed(3)).nats
    b = loaded.log_likelihood(x, generator=torch.Generator().manual_seed(3)).nats
    torch.testing.assert_close(a, b)


def test_temperature_scales_the_latents():
    """decode(T * eps) is what sample draws: at T -> 0 every sample is the image of z = 0."""
    spec = DataSpec(1, 4, 4, 17)
    m = randomize(genzoo.create("glow", spec, hidden_channels=8, steps_per_level=2), scale=0.1)
    with torch.no_grad():
        x = m.sample(5, generator=torch.Generator().manual_seed(0), temperature=1e-6)
        mode = genzoo.data.from_unit(m.postprocess(m.decode(torch.zeros(1, spec.dims))), 17)
    assert x.shape == (5, 1, 4, 4) and x.dtype == torch.int64
    assert (x == mode).all()
    assert (m.sample(2, temperature=0.0) == mode).all()  # the range includes 0: the mode itself
    with pytest.raises(GenzooError, match="temperature must be a number from 0.0 to 100.0"):
        m.sample(2, temperature=1e308)  # every sample value would overflow the levels


@pytest.mark.parametrize("override", [{"preprocess": "sigmoid"}, {"alpha": 0.5}, {"hidden_channels": 0},
                                      {"scale_fn": "exp"}, {"num_scales": 5}])
def test_bad_realnvp_config_is_one_sentence(override: dict):
    with pytest.raises(GenzooError):
        genzoo.create("realnvp", DataSpec(1, 8, 8, 17), **override)


def test_encode_rejects_wrong_shapes():
    m = genzoo.create("glow", DataSpec(1, 4, 4, 17), hidden_channels=8, steps_per_level=1)
    with pytest.raises(GenzooError, match="u must be"):
        m.encode(torch.zeros(2, 1, 4, 5))
    with pytest.raises(GenzooError, match="z must have shape"):
        m.decode(torch.zeros(2, 15))


@pytest.mark.parametrize("matplotlib", [True, False])
def test_toy_figure_draws_samples_beside_the_density(tmp_path, monkeypatch, matplotlib: bool):
    import sys

    from genzoo.viz import save_figure

    if not matplotlib:
        monkeypatch.setitem(sys.modules, "matplotlib", None)  # the Pillow fallback
    data = genzoo.data.load("moons", split="test", n=200)
    m = genzoo.create("realnvp", data.spec, hidden_channels=8, final_couplings=2)
    m.prepare(data)
    figures = m.figures(data, torch.Generator().manual_seed(0), n=100, resolution=16)
    assert list(figures) == ["density"]
    density = figures["density"]
    assert density.points.shape == (100, 2) and density.log_density.shape == (16, 16)
    assert bool(((density.points >= -4) & (density.points <= 4)).all())
    path = save_figure(density, m.spec, tmp_path / "density.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert genzoo.create("realnvp", DataSpec(1, 4, 4, 17), **tiny("realnvp")).figures(data, None) == {}


def test_toy_density_heat_map_integrates_to_one_over_the_box():
    """The heat map is the density of points in the box: with the box holding nearly all the mass
    (small alpha), its Riemann sum is 1 up to the mass outside."""
    from genzoo.models.flows.toy_figure import density_grid

    m = randomize(genzoo.create("glow", TOY, hidden_channels=8, alpha=1e-4, steps_per_level=2).double(), scale=0.05)
    log_p, (lo, hi) = density_grid(m, 100)
    mass = float(log_p.exp().sum()) * ((hi - lo) / 100) ** 2
    assert 0.9 < mass <= 1.01


@pytest.mark.parametrize("name", ["realnvp", "glow"])
def test_a_class_conditional_base_is_the_class_gaussian_and_draws_its_mean_at_temperature_0(name):
    """log p(x | y) uses N(mu_y, diag sigma_y^2) on z (the Glow paper's class-conditional prior): by hand
    from the flow's own z and log-determinant; at temperature 0 a sample is the image of mu_y."""
    from genzoo.data.transforms import dequantize

    spec = DataSpec(1, 4, 4, 17)
    m = genzoo.create(name, spec, seed=0, **tiny(name), num_classes=3).double().eval()
    with torch.no_grad():
        m.class_mean.normal_(0, 0.5)
        m.class_log_std.normal_(0, 0.2)
    x = torch.randint(0, 17, (4, *spec.shape), generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 1])
    v = dequantize(x, 17, torch.Generator().manual_seed(1), dtype=torch.float64)
    u, ld_pre = m.preprocess(v)
    z, log_det = m.encode(u)
    mu, log_std = m.class_mean[labels], m.class_log_std[labels]
    by_hand = (-0.5 * (((z - mu) / log_std.exp()) ** 2 + math.log(2 * math.pi)) - log_std).sum(1) + log_det + ld_pre
    torch.testing.assert_close(m._log_density_v(v, labels=labels), by_hand)
    got = m.log_likelihood(x, generator=torch.Generator().manual_seed(1), labels=labels).nats
    torch.testing.assert_close(got, by_hand - spec.dims * math.log(17))
    mode = genzoo.data.from_unit(m.postprocess(m.decode(m.class_mean[2:3])), 17)
    assert (m.sample(2, temperature=0.0, label=2) == mode).all()
