"""Model registry: name -> model class. The only place that lists models.

Each model class carries its config dataclass as `Model.Config`.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from .data.spec import DataSpec
from .errors import GenzooError
from .models.base import GenerativeModel

# name -> "module:Class". Ordered by family, as in DESIGN.md.
_MODELS: dict[str, str] = {
    "pixelcnn": "genzoo.models.autoregressive.pixelcnn:PixelCNN",
    "gated-pixelcnn": "genzoo.models.autoregressive.gated_pixelcnn:GatedPixelCNN",
    "pixelcnn++": "genzoo.models.autoregressive.pixelcnn_pp:PixelCNNPlusPlus",
    "ae": "genzoo.models.autoencoders.ae:AE",
    "dae": "genzoo.models.autoencoders.ae:DenoisingAE",
    "vae": "genzoo.models.autoencoders.vae:VAE",
    "vqvae": "genzoo.models.autoencoders.vqvae:VQVAE",
    "vqvae2": "genzoo.models.autoencoders.vqvae2:VQVAE2",
    "colorization": "genzoo.models.colorization:Colorization",
    "ddpm": "genzoo.models.diffusion.ddpm:DDPM",
    "sohl-dickstein": "genzoo.models.diffusion.sohl_dickstein:SohlDickstein",
    "score-sde": "genzoo.models.diffusion.sde:ScoreSDE",
    "realnvp": "genzoo.models.flows.realnvp:RealNVP",
    "glow": "genzoo.models.flows.glow:Glow",
    # more families register here
}


def _resolve(name: str) -> type[GenerativeModel]:
    if name not in _MODELS:
        raise GenzooError(f"unknown model {name!r}; choose one of {', '.join(_MODELS)}.")
    module, cls = _MODELS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def list_models() -> list[str]:
    """Registered model names."""
    return list(_MODELS)


def model_class(name: str) -> type[GenerativeModel]:
    return _resolve(name)


def config_fields(name: str) -> list[dataclasses.Field]:
    return list(dataclasses.fields(_resolve(name).Config))


def make_config(name: str, overrides: dict[str, Any]) -> Any:
    """Build `name`'s frozen config from overrides, one clear sentence for unknown fields or bad values."""
    cls = _resolve(name)
    known = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise GenzooError(f"model {name!r} has no config field {unknown[0]!r}; its fields are: {', '.join(sorted(known))}.")
    try:
        return cls.Config(**overrides)
    except (TypeError, ValueError) as e:
        raise GenzooError(f"bad config for model {name!r}: {e}.") from e


def create(name: str, spec: DataSpec, **overrides: Any) -> GenerativeModel:
    """Build model `name` for data of `spec`; `overrides` are fields of its config dataclass."""
    if not isinstance(spec, DataSpec):
        raise GenzooError(f"create() needs a DataSpec, got {type(spec).__name__}.")
    cls = _resolve(name)
    model = cls(spec, make_config(name, overrides))
    model.train()
    return model
