"""Tiny configurations of every built-in model, for fast tests: name -> (DataSpec fields, config overrides).

Models that are not listed (plugins) are tested on 8x8 images with 17 levels and their defaults.
"""
from __future__ import annotations

from typing import Any

DEFAULT_SPEC = (1, 8, 8, 17)
_DDPM = {"timesteps": 20, "base_channels": 8, "channel_mults": (1, 2), "attention_resolutions": (2,), "validation_terms": 5}
_VQ = {"hidden_channels": 8, "num_blocks": 1, "num_codes": 4, "code_dim": 4,
       "prior": {"hidden_channels": 8, "num_blocks": 1, "first_kernel_size": 3, "output_hidden": 8}}
_AE = {"latent_dim": 4, "hidden_channels": 8, "num_blocks": 1}

TINY: dict[str, dict[str, Any]] = {
    "pixelcnn": {"hidden_channels": 12, "num_blocks": 1, "first_kernel_size": 3, "output_hidden": 12},
    "gated-pixelcnn": {"hidden_channels": 12, "num_layers": 2, "first_kernel_size": 3, "output_hidden": 12},
    "pixelcnn++": {"hidden_channels": 8, "num_resnet": 1, "num_scales": 2, "num_mixtures": 2},
    "ae": _AE,
    "dae": _AE,
    "vae": _AE,
    "vqvae": _VQ,
    "vqvae2": {**_VQ, "bottom_prior_channels": 8, "bottom_prior_blocks": 1},
    "colorization": {"hidden_channels": 8, "num_blocks": 1, "bin_size": 20.0},
    "ddpm": _DDPM,
    "sohl-dickstein": dict(_DDPM),
    "score-sde": {"base_channels": 8, "attention_resolutions": (2,), "sample_steps": 10,
                  "validation_steps": 2, "ode_rtol": 1e-3, "ode_atol": 1e-3},
    "flow-matching": {"base_channels": 8, "attention_resolutions": (2,), "sample_steps": 4,
                      "validation_steps": 2, "ode_rtol": 1e-3, "ode_atol": 1e-3},
    "edm": {"base_channels": 8, "attention_resolutions": (2,), "sample_steps": 3,
            "validation_steps": 2, "ode_rtol": 1e-3, "ode_atol": 1e-3},
    "vdm": {"base_channels": 8, "attention_resolutions": (2,), "schedule_hidden": 16, "sample_steps": 4,
            "likelihood_samples": 2, "validation_samples": 2},
    "realnvp": {"hidden_channels": 8, "num_blocks": 1, "couplings_per_scale": 1, "final_couplings": 2, "num_scales": 2},
    "glow": {"hidden_channels": 8, "num_blocks": 0, "steps_per_level": 2, "num_levels": 2},
}
TINY_SPEC: dict[str, tuple[int, int, int, int]] = {"colorization": (3, 8, 8, 16)}


def tiny(name: str) -> dict[str, Any]:
    """The tiny config overrides of model `name` (none for models not listed)."""
    return dict(TINY.get(name, {}))


def tiny_spec(name: str) -> tuple[int, int, int, int]:
    return TINY_SPEC.get(name, DEFAULT_SPEC)
