"""Vector quantization: nearest codebook vector, straight-through gradient, EMA or loss-trained codebook.

Shapes: encoder outputs z_e (B, D, H, W), a codebook e (K, D), codes k (B, H, W) int64.

    k = argmin_j ||z_e - e_j||^2,  z_q = e_k                     van den Oord et al. 2017, eq. 1-2
    forward value z_q, gradient passed to z_e unchanged:  z_e + sg(z_q - z_e)  (straight-through)
    commitment loss  ||z_e - sg(e_k)||^2                          eq. 3, third term (times beta)
    codebook loss    ||sg(z_e) - e_k||^2                          eq. 3, second term ("loss" update)

With update="ema" the codebook is a buffer, learnt by exponential moving averages instead of the
codebook loss (van den Oord et al. 2017, appendix A.1), with Laplace smoothing of the counts:

    N_i <- gamma N_i + (1 - gamma) n_i              n_i = number of z_e assigned to code i
    m_i <- gamma m_i + (1 - gamma) sum_{j: k_j = i} z_e,j
    e_i  = m_i / N~_i,   N~_i = (N_i + eps) / (N + K eps) * N,   N = sum_i N_i

Dead codes -- codes whose moving-average usage N_i falls below `restart_threshold` assignments
per batch -- are restarted at randomly chosen encoder outputs of the batch (as in Jukebox,
Dhariwal et al. 2020) with usage N_i = threshold: a restarted code stays while it is assigned at
least `restart_threshold` vectors per batch on average, and moves to a new encoder output otherwise.
The codebook starts at random encoder outputs of the first training batch.

The moving averages are training state: `update(z_e)` writes them and is called explicitly by the
model before quantizing a training batch; `forward` itself writes nothing. Under data parallelism
(torch.distributed initialised) `update` sees the encoder outputs of every rank, in rank order, and
every rank then takes rank 0's result, so the codebook is the one a single process would learn.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..distributed import active, gather_rows
from ..functional import float32

UPDATES = ("ema", "loss")


class Quantized(NamedTuple):
    """Straight-through z_q (B, D, H, W), codes (B, H, W), and the two loss terms (scalars, means)."""

    z_q: Tensor
    codes: Tensor
    commitment: Tensor
    codebook_loss: Tensor


class VectorQuantizer(nn.Module):
    """Codebook of `num_codes` vectors of size `dim`; maps (B, D, H, W) to the nearest codes."""

    def __init__(self, num_codes: int, dim: int, update: str = "ema", decay: float = 0.99,
                 restart_threshold: float = 1.0, eps: float = 1e-5) -> None:
        super().__init__()
        if update not in UPDATES:
            raise ValueError(f"update must be one of {UPDATES}, got {update!r}")
        self.num_codes, self.dim = num_codes, dim
        self.update_rule, self.decay, self.restart_threshold, self.eps = update, decay, restart_threshold, eps
        codebook = torch.randn(num_codes, dim)
        if update == "loss":
            self.codebook = nn.Parameter(codebook)
        else:
            self.register_buffer("codebook", codebook)
            self.register_buffer("embed_sum", codebook.clone())   # m_i
        self.register_buffer("cluster_size", torch.ones(num_codes))  # N_i, usage per batch
        self.register_buffer("initialized", torch.tensor(False))

    # -- quantization -------------------------------------------------------------------------
    @staticmethod
    def flatten(z_e: Tensor) -> Tensor:
        """(B, D, H, W) -> (B*H*W, D)."""
        return z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])

    @float32
    def nearest(self, flat: Tensor) -> Tensor:
        """Index of the nearest code for each row of (N, D): argmin ||z||^2 - 2 z.e + ||e||^2."""
        e = self.codebook.to(flat.dtype)
        d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e.T + e.pow(2).sum(1)[None]
        return d.argmin(1)

    def assign(self, z_e: Tensor) -> Tensor:
        """Codes (B, H, W) of encoder outputs (B, D, H, W)."""
        B, _, H, W = z_e.shape
        return self.nearest(self.flatten(z_e)).view(B, H, W)

    def lookup(self, codes: Tensor) -> Tensor:
        """Code vectors (B, D, H, W) of codes (B, H, W)."""
        return F.embedding(codes, self.codebook).permute(0, 3, 1, 2)

    def forward(self, z_e: Tensor) -> Quantized:
        codes = self.assign(z_e.detach())
        e = self.lookup(codes).to(z_e.dtype)
        commitment = F.mse_loss(z_e, e.detach())
        codebook_loss = F.mse_loss(e, z_e.detach())
        z_q = z_e + (e - z_e).detach()
        return Quantized(z_q, codes, commitment, codebook_loss)

    # -- training state -----------------------------------------------------------------------
    @torch.no_grad()
    def update(self, z_e: Tensor) -> None:
        """One training batch's effect on the codebook: first-batch initialisation, usage and EMA
        statistics, dead-code restarts. Call before `forward` on that batch."""
        flat = self.flatten(z_e.detach()).to(self.cluster_size.dtype)
        parallel = active()
        flat = gather_rows(flat)  # the global batch's encoder outputs
        n, K = flat.shape[0], self.num_codes
        if not bool(self.initialized):
            pick = torch.randperm(n, device=flat.device)[:K] if n >= K else torch.randint(n, (K,), device=flat.device)
            self.codebook.copy_(flat[pick])
            self.cluster_size.fill_(n / K)
            if self.update_rule == "ema":
                self.embed_sum.copy_(self.codebook * self.cluster_size[:, None])
            self.initialized.fill_(True)
        codes = self.nearest(flat)
        counts = torch.bincount(codes, minlength=K).to(flat.dtype)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        if self.update_rule == "ema":
            sums = torch.zeros_like(self.embed_sum).index_add_(0, codes, flat)
            self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            total = self.cluster_size.sum()
            smoothed = (self.cluster_size + self.eps) / (total + K * self.eps) * total
            self.codebook.copy_(self.embed_sum / smoothed[:, None])
        if self.restart_threshold > 0:
            dead = self.cluster_size < self.restart_threshold
            num_dead = int(dead.sum())
            if num_dead:
                fresh = flat[torch.randint(n, (num_dead,), device=flat.device)]
                self.codebook[dead] = fresh.to(self.codebook.dtype)
                self.cluster_size[dead] = self.restart_threshold
                if self.update_rule == "ema":
                    self.embed_sum[dead] = fresh * self.restart_threshold
        if parallel:  # the random picks above are rank 0's
            for t in [*self.buffers(), *(p.data for p in self.parameters())]:
                dist.broadcast(t, 0)

    # -- statistics ---------------------------------------------------------------------------
    def usage(self, codes: Tensor) -> tuple[float, float]:
        """(fraction of codes used, perplexity exp(H(p))) of the code frequencies p in `codes`."""
        p = torch.bincount(codes.flatten(), minlength=self.num_codes).double()
        p = p / p.sum().clamp_min(1)
        entropy = -(p[p > 0] * p[p > 0].log()).sum()
        return float((p > 0).double().mean()), float(entropy.exp())
