"""VQ-VAE and VQ-VAE-2: code round trip, normalised priors, an honest bound, stage switching,
samples distributed as the priors say, the prior's nested config, the reconstruction figure."""
from __future__ import annotations

import itertools

import pytest
import torch

import genzoo
from genzoo.data.spec import Dataset, DataSpec
from genzoo.models.autoregressive.code_prior import ConditionalPixelCNN, PriorConfig
from genzoo.models.base import ImageRows

TINY_PRIOR = {"hidden_channels": 8, "num_blocks": 1, "first_kernel_size": 3, "output_hidden": 8, "dropout": 0.0}


def build(name: str, spec: DataSpec, **overrides) -> genzoo.GenerativeModel:
    options = {"hidden_channels": 8, "num_blocks": 1, "num_codes": 3, "code_dim": 2, "prior": TINY_PRIOR}
    if name == "vqvae2":
        options.update(bottom_prior_channels=8, bottom_prior_blocks=1, bottom_prior_dropout=0.0)
    model = genzoo.create(name, spec, **{**options, **overrides}).double()
    with torch.no_grad():  # random, non-identity weights everywhere
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def all_codes(num_codes: int, shape: tuple[int, int]) -> torch.Tensor:
    """Every grid of codes, (num_codes ** (h*w), h, w)."""
    grids = list(itertools.product(range(num_codes), repeat=shape[0] * shape[1]))
    return torch.tensor(grids).view(-1, *shape)


@pytest.mark.parametrize("name", ["vqvae", "vqvae2"])
def test_decoding_the_codes_of_x_gives_the_reconstruction_of_x(name):
    spec = DataSpec(1, 8, 8, 17)
    model = build(name, spec)
    x = torch.randint(0, 17, (6, *spec.shape))
    model.train()
    model.loss(x)  # first-batch codebook initialisation
    model.eval()
    codes = model.encode(x)
    torch.testing.assert_close(model.decode(codes), model.reconstruct(x), rtol=0, atol=0)
    if name == "vqvae":
        assert codes.shape == (6, 4, 4)
    else:
        assert codes[0].shape == (6, 2, 2) and codes[1].shape == (6, 4, 4)
    with pytest.raises(genzoo.GenzooError):
        model.decode(torch.full((2, 3, 3), 0))


def test_code_grids_follow_the_image_size():
    assert build("vqvae", DataSpec(1, 28, 28, 2)).grid == (7, 7)
    m = build("vqvae2", DataSpec(1, 28, 28, 2))
    assert (m.grid, m.top_grid) == ((7, 7), (4, 4))
    assert build("vqvae", DataSpec(3, 32, 32, 4), downsamples=3).grid == (4, 4)


def test_vqvae_prior_normalises_over_all_code_grids():
    model = build("vqvae", DataSpec(1, 2, 2, 2)).eval()
    assert model.grid == (2, 2)
    codes = all_codes(3, (2, 2))  # 81 grids
    with torch.no_grad():
        lp = model._prior_log_probs([codes])[0]
    torch.testing.assert_close(lp.logsumexp(0), torch.tensor(0.0, dtype=torch.float64))


def test_vqvae2_priors_normalise_over_all_top_and_bottom_code_grids():
    model = build("vqvae2", DataSpec(1, 2, 2, 2)).eval()
    assert (model.top_grid, model.grid) == ((1, 1), (2, 2))
    bottom = all_codes(3, (2, 2))
    top = torch.arange(3).repeat_interleave(len(bottom)).view(-1, 1, 1)
    with torch.no_grad():
        lp_top, lp_bottom = model._prior_log_probs([top, bottom.repeat(3, 1, 1)])
    torch.testing.assert_close((lp_top + lp_bottom).logsumexp(0), torch.tensor(0.0, dtype=torch.float64))
    # and the conditional prior normalises for each top code on its own
    torch.testing.assert_close(lp_bottom.view(3, -1).logsumexp(1), torch.zeros(3, dtype=torch.float64))


def test_conditional_prior_sees_only_earlier_codes_and_all_of_the_condition():
    prior = ConditionalPixelCNN(4, 3, (3, 3), 8, 2, 0.0).double().eval()
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.3 * torch.randn_like(p))
    k = torch.randint(0, 4, (1, 3, 3))
    c = torch.randint(0, 3, (1, 2, 2))
    base = prior.logits(k, c).flatten(2)  # (1, K, 9) in raster order
    for i in range(9):
        changed = k.clone().flatten()
        changed[i] = (changed[i] + 1) % 4
        out = prior.logits(changed.view(1, 3, 3), c).flatten(2)
        torch.testing.assert_close(out[..., : i + 1], base[..., : i + 1])  # code i and earlier ones unaffected
        if i < 8:
            assert not torch.allclose(out[..., i + 1:], base[..., i + 1:]), f"no later code sees code {i}"
    other = prior.logits(k, (c + 1) % 3)
    assert not torch.allclose(other[..., 0, 0], base[..., 0, 0]), "the first code ignores the condition"


@pytest.mark.parametrize("name", ["vqvae", "vqvae2"])
def test_log_likelihood_is_a_lower_bound_on_the_exact_marginal(name):
    """log P(x) = log sum_z p(x | z) p(z), by enumeration on a 2x2 image with 2 levels: it sums to 1
    over all 16 images, and the bound log p(x | z_q(x)) + log p(z_q(x)) stays below it."""
    spec = DataSpec(1, 2, 2, 2)
    model = build(name, spec).eval()
    images = all_codes(2, (2, 2)).view(-1, 1, 2, 2)
    if name == "vqvae":
        codes = [all_codes(3, (2, 2))]
    else:
        bottom = all_codes(3, (2, 2))
        codes = [torch.arange(3).repeat_interleave(len(bottom)).view(-1, 1, 1), bottom.repeat(3, 1, 1)]
    with torch.no_grad():
        log_prior = sum(model._prior_log_probs(codes))                  # (Z,)
        logits = model._decode(codes)                                    # (Z, K, C, H, W)
        log_px_z = torch.stack([torch.distributions.Categorical(logits=logits.movedim(1, -1)).log_prob(
            x.expand(len(log_prior), -1, -1, -1)).flatten(1).sum(1) for x in images])  # (16, Z)
        exact = (log_px_z + log_prior[None]).logsumexp(1)
        bound = model.log_likelihood(images)
    assert bound.kind == "lower_bound"
    torch.testing.assert_close(exact.logsumexp(0), torch.tensor(0.0, dtype=torch.float64))
    assert (bound.nats <= exact + 1e-9).all()


@pytest.mark.parametrize("name", ["vqvae", "vqvae2"])
def test_each_stage_trains_only_its_own_parameters(name):
    spec = DataSpec(1, 8, 8, 17)
    model = build(name, spec).float()
    data = Dataset(torch.randint(0, 17, (32, *spec.shape)), spec, name="random")
    names = {id(p): n for n, p in model.named_parameters()}
    stage_params = {s: {id(p) for p in model.stage_parameters(s)} for s in model.stages}
    assert not (stage_params["autoencoder"] & stage_params["prior"])
    assert stage_params["autoencoder"] | stage_params["prior"] == set(names)
    assert all(names[i].split(".")[0] in model.prior_modules for i in stage_params["prior"])
    for stage in model.stages:
        model.begin_stage(stage, data)
        params = list(model.stage_parameters(stage))
        opt = torch.optim.SGD(params, lr=0.1)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        model.train()
        for _ in range(2):
            opt.zero_grad()
            model.loss(data.x[:16]).backward()
            opt.step()
        after = model.state_dict()
        for key, p in model.named_parameters():
            moved = not torch.equal(before[key], after[key])
            assert moved == (id(p) in stage_params[stage]), f"[{stage}] {key} moved={moved}"
        if stage == "prior":  # the frozen autoencoder's codebooks do not move either
            for key in after:
                if "quantizers" in key:
                    assert torch.equal(before[key], after[key]), key


def test_prior_config_round_trips_through_config_json_and_rebuilds_the_prior(tmp_path):
    model = build("vqvae", DataSpec(1, 8, 8, 17))
    assert model.config.prior == PriorConfig(**TINY_PRIOR)
    assert model.prior.config.hidden_channels == 8 and model.prior.config.dropout == 0.0
    genzoo.save(model, tmp_path)
    loaded = genzoo.load(tmp_path)
    assert loaded.config == model.config and isinstance(loaded.config.prior, PriorConfig)
    assert loaded.prior.config == model.prior.config


def test_prior_is_set_by_a_dict_or_a_json_string_and_bad_fields_are_one_clear_sentence():
    spec = DataSpec(1, 8, 8, 17)
    from_json = genzoo.create("vqvae2", spec, prior='{"family": "gated-pixelcnn", "hidden_channels": 8, "num_layers": 2}')
    assert from_json.config.prior == PriorConfig(family="gated-pixelcnn", hidden_channels=8, num_layers=2)
    assert type(from_json.top_prior).__name__ == "GatedPixelCNN" and len(from_json.top_prior.layers) == 2
    assert genzoo.create("vqvae", spec, prior={"dropout": 0}).config.prior.dropout == 0.0  # an int is a float
    bad = [({"bogus": 1}, "no field 'bogus'"), ({"hidden_channels": "8"}, "must be of type int"),
           ({"num_blocks": 0}, "num_blocks must be positive"), ({"family": "vae"}, "autoregressive"),
           ("hidden_channels=8", "JSON object"), ("[8]", "dict of its fields")]
    for prior, message in bad:
        with pytest.raises(genzoo.GenzooError, match=message):
            genzoo.create("vqvae", spec, prior=prior)


@pytest.mark.parametrize("name, temperature", [("vqvae", 1.0), ("vqvae", 0.5), ("vqvae2", 1.0)])
def test_samples_follow_the_image_distribution_the_priors_and_decoder_imply(name, temperature):
    """P(sample = x) = sum over code grids z with argmax p(x | z) = x of p_T(z), by enumeration on a
    2x2 image with 2 levels; p_T multiplies the prior's conditionals, each softmax(logits / T)."""
    model = build(name, DataSpec(1, 2, 2, 2)).eval()
    with torch.no_grad():
        if name == "vqvae":
            codes = [all_codes(3, (2, 2))]
            logits = model.prior.logits(codes[0][:, None]) / temperature                  # (Z, K, 1, 2, 2)
            log_p = logits.log_softmax(1).gather(1, codes[0][:, None, None]).flatten(1).sum(1)
        else:
            bottom = all_codes(3, (2, 2))
            codes = [torch.arange(3).repeat_interleave(len(bottom)).view(-1, 1, 1), bottom.repeat(3, 1, 1)]
            log_p = sum(model._prior_log_probs(codes))
        images = model.decode(codes[0] if name == "vqvae" else tuple(codes)).flatten(1)  # (Z, 4) levels 0/1
        index = (images * torch.tensor([8, 4, 2, 1])).sum(1)                              # image as a number
        expected = torch.zeros(16, dtype=torch.float64).index_add_(0, index, log_p.exp())
        n = 20000
        x = model.sample(n, torch.Generator().manual_seed(0), temperature=temperature)
    observed = torch.bincount((x.flatten(1) * torch.tensor([8, 4, 2, 1])).sum(1), minlength=16).double() / n
    torch.testing.assert_close(expected.sum(), torch.tensor(1.0, dtype=torch.float64))
    tolerance = 4 * (expected * (1 - expected) / n).sqrt() + 1e-3
    assert ((observed - expected).abs() <= tolerance).all(), (observed, expected)
    with pytest.raises(genzoo.GenzooError):
        model.sample(2, temperature=0.0)


@pytest.mark.parametrize("name", ["vqvae", "vqvae2"])
def test_reconstruction_figure_shows_inputs_above_their_reconstructions(name):
    spec = DataSpec(1, 8, 8, 17)
    model = build(name, spec).train()
    data = Dataset(torch.randint(0, 17, (20, *spec.shape)), spec, name="random")
    figures = model.figures(data, torch.Generator().manual_seed(0), n=6)
    assert model.training, "figures() left the model in eval mode"
    assert set(figures) == {"reconstructions"} and isinstance(figures["reconstructions"], ImageRows)
    x, x_hat = figures["reconstructions"].rows
    assert x.shape == x_hat.shape == (6, *spec.shape)
    assert x_hat.dtype == torch.int64 and int(x_hat.min()) >= 0 and int(x_hat.max()) <= 16
    assert torch.equal(x, data.x[:6])
    assert torch.equal(x_hat, model.eval().reconstruct(data.x[:6]))
