"""The 2015 formulation: the reverse process learns its variance as well as its mean and is
trained on the variational bound, so its bound is comparable with DDPM's in the same units.

Sohl-Dickstein et al. 2015, "Deep Unsupervised Learning using Nonequilibrium Thermodynamics",
section 2.4: p(x_t-1 | x_t) = N(mu_theta(x_t, t), Sigma_theta(x_t, t)), trained on the bound
K = -sum_t KL(q(x_t-1 | x_t, x_0) || p(x_t-1 | x_t)) + ... .  Here the variance is the
interpolation of Nichol & Dhariwal 2021 (eq. 15),
    Sigma_theta = exp(v log beta_t + (1 - v) log beta-tilde_t),   v = (net output + 1) / 2,
and the mean is, by default, the posterior mean mu-tilde_t at x_0-hat, the mean of a categorical
over the data's K levels that adds the exact evidence of x_t to the network's logits
(prediction="levels", see ddpm.py); prediction="eps" gives DDPM's parametrization. Training uses
the hybrid objective, the simple loss plus lambda L_vlb with the mean held fixed in L_vlb (their
section 3.1), by default, or L_vlb alone (objective="vlb"). The bound itself (log_likelihood) is
DDPM's, term for term, so the two are compared in the same units.

Why the levels: most of an eps model's bound on 8x8 digits (17 levels) sits in the first 50 of
1000 steps, where the noise is far below the bin width and the best denoiser rounds x_t to its
level, which a smooth eps network does not learn; the evidence term does it exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ...errors import GenzooError
from .ddpm import DDPM, DDPMConfig


@dataclass(frozen=True)
class SohlDicksteinConfig(DDPMConfig):
    """DDPM's config with a learned reverse variance and a bound-based objective."""

    prediction: str = "levels"  # what the U-Net predicts: the noise eps, or x_0 as a categorical over the K levels
    # reverse variance: beta-tilde, beta, or learned (needed by the hybrid and vlb objectives)
    variance: str = "learned"
    objective: str = "hybrid"  # L_simple, L_simple + vlb_weight * L_vlb (hybrid), or the bound alone (vlb)
    vlb_weight: float = 0.001  # weight of L_vlb in the hybrid objective

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.variance != "learned":
            raise GenzooError(f"sohl-dickstein learns its reverse variance, so variance must be 'learned', "
                              f"got {self.variance!r}.")
        if self.objective == "simple":
            raise GenzooError("sohl-dickstein trains on the variational bound, so objective must be 'hybrid' or 'vlb', "
                              "got 'simple'.")


class SohlDickstein(DDPM):
    """Diffusion with learned reverse variance, trained on the bound (Sohl-Dickstein et al. 2015)."""

    name = "sohl-dickstein"
    Config = SohlDicksteinConfig
    # 1500 steps keep the default digits run inside 10 minutes on 2 CPU cores.
    train_defaults: ClassVar[dict[str, Any]] = {**DDPM.train_defaults, "steps": 1500, "sample_every": 1500}
