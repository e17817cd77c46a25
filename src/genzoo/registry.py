"""Model registry: name -> model class. The only place that lists models.

Each model class carries its config dataclass as `Model.Config`. Models written elsewhere join
with `genzoo.register(name, ModelClass)` or through the entry-point group `genzoo.models`
(`[project.entry-points."genzoo.models"]` in a package's pyproject.toml: `name = "module:Class"`).
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import torch

from . import configs
from .data.spec import DataSpec
from .errors import GenzooError
from .models.base import GenerativeModel
from .models.contract import check_model_class

# name -> "module:Class". Ordered by family, as in the README's table of models.
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
    "flow-matching": "genzoo.models.diffusion.flow_matching:FlowMatching",
    "edm": "genzoo.models.diffusion.edm:EDM",
    "vdm": "genzoo.models.diffusion.vdm:VDM",
    "realnvp": "genzoo.models.flows.realnvp:RealNVP",
    "glow": "genzoo.models.flows.glow:Glow",
    # more families register here
}


_PLUGINS: dict[str, type[GenerativeModel]] = {}
_entry_points_loaded = False
ENTRY_POINT_GROUP = "genzoo.models"


def register(name: str, cls: type[GenerativeModel]) -> type[GenerativeModel]:
    """Put model class `cls` into the registry under `name`, for the API, the command line and compare.

    One clear sentence for a name that is taken or a class that breaks the contract
    (models/base.py). Returns `cls`, so it also works as `register("name", Cls)` at module level.
    """
    if not isinstance(name, str) or not name or name != name.strip() or " " in name or name.startswith("-"):
        raise GenzooError(f"a model name must be a non-empty word without spaces, got {name!r}.")
    _load_entry_points()
    if name in _MODELS or name in _PLUGINS:
        if _PLUGINS.get(name) is cls:
            return cls
        raise GenzooError(f"a model named {name!r} is already registered; register {getattr(cls, '__name__', cls)!r} "
                          f"under another name.")
    check_model_class(name, cls)
    if not cls.name:
        cls.name = name
    _PLUGINS[name] = cls
    return cls


def _load_entry_points() -> None:
    """Register the models that installed packages declare in the entry-point group `genzoo.models`."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception as e:  # a broken plugin package: say which, in one sentence
            raise GenzooError(f"the model plugin {ep.name!r} ({ep.value}) does not import: "
                              f"{type(e).__name__}: {e}.") from e
        register(ep.name, cls)


def _resolve(name: str) -> type[GenerativeModel]:
    _load_entry_points()
    if name in _PLUGINS:
        return _PLUGINS[name]
    if name not in _MODELS:
        raise GenzooError(f"unknown model {name!r}; choose one of {', '.join(list_models())}.")
    module, cls = _MODELS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def list_models() -> list[str]:
    """Registered model names: the built-in ones, then plugins in the order they registered."""
    _load_entry_points()
    return list(_MODELS) + list(_PLUGINS)


def model_class(name: str) -> type[GenerativeModel]:
    """The class registered as `name`; one sentence for an unknown name."""
    return _resolve(name)


def config_fields(name: str) -> list[dataclasses.Field]:
    return list(dataclasses.fields(_resolve(name).Config))


def make_config(name: str, overrides: dict[str, Any], require_all: bool = False) -> Any:
    """Build `name`'s frozen config from `overrides`, checked field by field (genzoo.configs): one
    clear sentence for an unknown or (with `require_all`, as in a checkpoint) missing field, a wrong
    type or a bad value."""
    return configs.build(_resolve(name).Config, overrides, f"the config of model {name!r}", require_all)


def check_seed(seed: Any) -> int:
    """A seed is an integer in [0, 2^63 - 1]; one sentence otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 63:
        raise GenzooError(f"a seed must be an integer from 0 to 2^63 - 1, got {seed!r}.")
    return seed


def check_size(cls: type[GenerativeModel], spec: DataSpec, config: Any) -> None:
    """Refuse, in one sentence, a config whose model would hold more than MAX_PARAMETERS parameters:
    the model is first built on the meta device, which allocates no memory."""
    try:
        with torch.device("meta"):
            count = sum(p.numel() for p in cls(spec, config).parameters())
    except GenzooError:
        raise
    except Exception:  # a constructor that computes on its tensors cannot run on meta: build for real
        return
    if count > configs.MAX_PARAMETERS:
        raise GenzooError(f"this {cls.name} config would have {count:,} parameters; genzoo builds at most "
                          f"{configs.MAX_PARAMETERS:,} (check the sizes in the config).")


def create(name: str, spec: DataSpec, seed: int | None = None, **overrides: Any) -> GenerativeModel:
    """Build model `name` for data of `spec`; `overrides` are fields of its config dataclass.

    With `seed`, torch's global generator is seeded first, so the initial weights repeat exactly.
    """
    if not isinstance(spec, DataSpec):
        raise GenzooError(f"create() needs a DataSpec, got {type(spec).__name__}.")
    cls = _resolve(name)
    config = make_config(name, overrides)
    check_size(cls, spec, config)
    if seed is not None:
        torch.manual_seed(check_seed(seed))
    model = cls(spec, config)
    model.train()
    return model


def unregister(name: str) -> None:
    """Remove a model that `register` added (built-in models stay)."""
    if name not in _PLUGINS:
        raise GenzooError(f"{name!r} is not a registered plugin model.")
    del _PLUGINS[name]
