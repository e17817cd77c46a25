"""Vector quantizer: nearest codes, straight-through gradient, EMA update in closed form, restarts."""
from __future__ import annotations

import torch

from genzoo.nn.quantize import VectorQuantizer


def brute_force_codes(flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    return ((flat[:, None, :] - codebook[None, :, :]) ** 2).sum(-1).argmin(1)


def test_quantizer_picks_the_nearest_code_and_passes_the_gradient_straight_through():
    vq = VectorQuantizer(5, 3, update="loss").double()
    z_e = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    q = vq(z_e)
    flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, 3)
    assert torch.equal(q.codes.flatten(), brute_force_codes(flat, vq.codebook.detach()))
    torch.testing.assert_close(q.z_q.detach(), vq.lookup(q.codes))
    r = torch.randn_like(z_e)
    (q.z_q * r).sum().backward()
    torch.testing.assert_close(z_e.grad, r)  # d z_q / d z_e is the identity
    assert vq.codebook.grad is None  # the straight-through path gives the codebook nothing


def test_codebook_loss_trains_the_codebook_and_commitment_trains_the_encoder():
    vq = VectorQuantizer(4, 2, update="loss").double()
    z_e = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    q = vq(z_e)
    q.codebook_loss.backward()
    assert z_e.grad is None and vq.codebook.grad.abs().sum() > 0
    z_e.grad = None
    vq.codebook.grad = None
    vq(z_e).commitment.backward()
    assert vq.codebook.grad is None and z_e.grad.abs().sum() > 0


def test_ema_update_equals_the_closed_form():
    K, D, gamma, eps = 3, 2, 0.9, 1e-5
    vq = VectorQuantizer(K, D, update="ema", decay=gamma, restart_threshold=0.0, eps=eps).double()
    e0 = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-2.0, 1.0]], dtype=torch.float64)
    N0 = torch.tensor([2.0, 3.0, 0.5], dtype=torch.float64)
    vq.codebook.copy_(e0)
    vq.cluster_size.copy_(N0)
    vq.embed_sum.copy_(e0 * N0[:, None])
    vq.initialized.fill_(True)
    flat = torch.tensor([[0.1, -0.2], [0.9, 1.2], [1.3, 0.8], [0.2, 0.1], [-1.5, 0.7], [5.0, 5.0]], dtype=torch.float64)
    z_e = flat.T.reshape(1, D, 2, 3)  # (B, D, H, W) with the rows of `flat` in raster order
    assert torch.equal(VectorQuantizer.flatten(z_e), flat)
    vq.update(z_e)
    k = brute_force_codes(flat, e0)
    n = torch.stack([(k == i).sum() for i in range(K)]).double()
    s = torch.stack([flat[k == i].sum(0) for i in range(K)])
    N = gamma * N0 + (1 - gamma) * n
    m = gamma * e0 * N0[:, None] + (1 - gamma) * s
    N_smoothed = (N + eps) / (N.sum() + K * eps) * N.sum()
    torch.testing.assert_close(vq.cluster_size, N)
    torch.testing.assert_close(vq.embed_sum, m)
    torch.testing.assert_close(vq.codebook, m / N_smoothed[:, None])


def test_dead_codes_restart_at_encoder_outputs_of_the_batch():
    vq = VectorQuantizer(4, 2, update="loss", decay=0.99, restart_threshold=1.0).double()
    live = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    vq.codebook.data.copy_(torch.cat([live, torch.tensor([[100.0, 100.0]], dtype=torch.float64)]))
    vq.cluster_size.copy_(torch.tensor([50.0, 50.0, 50.0, 0.5], dtype=torch.float64))
    vq.initialized.fill_(True)
    z_e = torch.rand(2, 2, 4, 4, dtype=torch.float64)  # far from code 3: it stays unused
    vq.update(z_e)
    flat = VectorQuantizer.flatten(z_e)
    new = vq.codebook.detach()[3]
    assert ((flat - new).abs().sum(1) == 0).any(), "the dead code did not move to an encoder output of the batch"
    torch.testing.assert_close(vq.codebook.detach()[:3], live)  # live codes untouched (loss-trained codebook)
    assert float(vq.cluster_size[3]) == 1.0
    assert (vq.cluster_size[:3] >= 1.0).all()


def test_ema_restart_keeps_the_moving_averages_consistent():
    vq = VectorQuantizer(3, 2, update="ema", decay=0.9, restart_threshold=1.0).double()
    vq.codebook.copy_(torch.tensor([[0.5, 0.5], [0.4, 0.6], [50.0, 50.0]], dtype=torch.float64))
    vq.cluster_size.copy_(torch.tensor([10.0, 10.0, 0.2], dtype=torch.float64))
    vq.embed_sum.copy_(vq.codebook * vq.cluster_size[:, None])
    vq.initialized.fill_(True)
    z_e = torch.rand(1, 2, 3, 3, dtype=torch.float64)
    vq.update(z_e)
    assert ((VectorQuantizer.flatten(z_e) - vq.codebook[2]).abs().sum(1) == 0).any()
    torch.testing.assert_close(vq.embed_sum[2], vq.codebook[2] * vq.cluster_size[2])


def test_first_batch_initialises_the_codebook_at_distinct_encoder_outputs():
    vq = VectorQuantizer(6, 3, update="loss", restart_threshold=0.0).double()
    z_e = torch.randn(2, 3, 3, 3, dtype=torch.float64) + 10.0
    vq.update(z_e)
    assert bool(vq.initialized)
    flat = VectorQuantizer.flatten(z_e)
    match = (vq.codebook.detach()[:, None, :] == flat[None]).all(-1)  # (K, N)
    assert match.any(1).all(), "every code starts at an encoder output"
    assert len(set(match.float().argmax(1).tolist())) == 6, "at six different outputs"
    torch.testing.assert_close(vq.cluster_size.sum(), torch.tensor(18.0, dtype=torch.float64))
    used, perplexity = vq.usage(vq.assign(z_e))
    assert used == 1.0 and 1 < perplexity <= 6
