"""genzoo.functional: each shared equation against an independent computation, in float64."""
from __future__ import annotations

import pytest
import torch

from genzoo.functional import discretized_logistic_log_prob, standard_normal_log_prob


@pytest.mark.parametrize("levels", [2, 5, 17, 256])
def test_discretized_logistic_bins_sum_to_one_and_match_the_cdf(levels):
    """P(k) = F(v_k + d) - F(v_k - d) for the logistic CDF F = sigmoid((. - mean) / s), with the
    first bin from -inf and the last to +inf: the K masses are the CDF differences and sum to one."""
    g = torch.Generator().manual_seed(levels)
    mean = torch.cat([torch.tensor([[-1.3], [0.2], [0.9]]), 2 * torch.rand(5, 1, generator=g) - 1]).double()
    log_s = torch.cat([torch.tensor([[-3.0], [-0.5], [1.0]]), 3 * torch.rand(5, 1, generator=g) - 4]).double()
    k = torch.arange(levels)[None, :]
    lp = discretized_logistic_log_prob(k, mean, log_s, levels)
    assert lp.shape == (8, levels)
    torch.testing.assert_close(lp.exp().sum(1), torch.ones(8, dtype=torch.float64))
    edges = torch.linspace(-1, 1, levels, dtype=torch.float64) + 1.0 / (levels - 1)   # upper bin edges
    cdf = 1 / (1 + torch.exp(-(edges[None, :] - mean) / log_s.exp()))              # logistic CDF
    cdf[:, -1] = 1.0
    expected = torch.diff(cdf, prepend=torch.zeros(8, 1, dtype=torch.float64))
    torch.testing.assert_close(lp.exp(), expected)


def test_discretized_logistic_is_finite_far_in_the_tails():
    lp = discretized_logistic_log_prob(torch.tensor([3]), torch.tensor([-50.0]), torch.tensor([-7.0]), 256)
    assert torch.isfinite(lp).all() and lp.item() < -1000


def test_discretized_logistic_edge_bins_take_the_tails():
    """Level 0 is F(v_0 + d), level K-1 is 1 - F(v_K-1 - d), each close to 1 for a mean far past the edge."""
    K = 9
    mean = torch.tensor([-3.0, 3.0], dtype=torch.float64)
    log_s = torch.full((2,), -1.0, dtype=torch.float64)
    lp = discretized_logistic_log_prob(torch.tensor([0, K - 1]), mean, log_s, K)
    d = 1.0 / (K - 1)
    torch.testing.assert_close(lp, torch.stack([torch.sigmoid((-1 + d - mean[0]) / log_s[0].exp()),
                                                torch.sigmoid(-(1 - d - mean[1]) / log_s[1].exp())]).log())


def test_standard_normal_log_prob_sums_the_unit_gaussian_over_every_non_batch_dimension():
    z = torch.randn(4, 3, 2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(standard_normal_log_prob(z), expected)
    assert standard_normal_log_prob(z[:, :1, :1, :1]).shape == (4,)
