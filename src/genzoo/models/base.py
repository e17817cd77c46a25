"""The contract every genzoo model keeps (docs/models.md): every hook that the trainer,
evaluation, the command line and the tests use is declared here, with its default.

A model is a `torch.nn.Module` built as `Model(spec, config)` from a `DataSpec` and a frozen
config dataclass `Model.Config`. It takes discrete levels x (B, C, H, W) int64 in [0, K-1] and does
its own preprocessing (scaling, dequantization). Likelihoods are log-probabilities of the
*discrete* image, in nats, and carry their kind ("exact" or "lower_bound").

Class attributes (read without building a model):
    name             the registry name (set by `genzoo.register` when left empty)
    description      one line for `genzoo list` (default: the first line of the class docstring)
    Config           the frozen config dataclass; every field has a default, and its comment (or
                     `field(metadata={"help": ...})`) is the help of its `genzoo train` flag
    has_likelihood   derived, never set by hand: True exactly for subclasses of `LikelihoodModel`,
                     which must define `log_likelihood`
    validation_is_likelihood  derived: True unless the class overrides `validation_nats`
    conditional      True for models that draw only given an input (no unconditional `sample`)
    loss_unit        what `loss` returns, in words (shown in progress bars and reports)
    train_defaults   TrainConfig fields this model trains best with (`--help` shows them)
    stages           training stages, run in order; each selects its own best weights
    quick_sample_options  options of `sample` for the grids of `genzoo train` and for compare: a
                     quick sampler where the default one is slow (default {}: the default sampler)

Methods (those marked * must be defined; the rest have working defaults):
  * loss(x)                       scalar training objective, in `loss_unit` (`x` by that name: the
                                  trainer passes it as a keyword, with `labels` when num_classes > 0)
  * sample(n, generator, ...)     (n, C, H, W) int64 levels; keyword options become CLI flags
  * log_likelihood(x, ...)        LogLikelihood (LikelihoodModel only)
    validation_nats(x)            the validation objective (default: log_likelihood)
    num_classes                   > 0: loss, log_likelihood and sample take `labels` (n,) too
    prepare(train_data)           data-dependent initialisation, once before training starts
    begin_stage(name, train_data) set up stage `name` (e.g. encode the data for a prior)
    stage_parameters(name)        the parameters stage `name` optimizes
    task_metrics(data, generator) extra metrics for `genzoo eval` and compare (PSNR, ...)
    figures(data, generator)      extra figures for `genzoo sample`, as data (drawn by genzoo.viz)
    inpaint(x, known, generator, labels, ...)  x completed where `known` is False (default: refused)
    edit(x, strength, generator, ...)          SDEdit: x noised to `strength`, then denoised (default: refused)
    options(method)               the keyword options of a method, for the command line
    sample_stats()                the sampler and NFE of the last `sample` call (default: None)
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from typing import Any, ClassVar, Iterator, Literal, NamedTuple

import torch
from torch import Tensor, nn

from ..data.spec import Dataset, DataSpec
from ..errors import GenzooError

Kind = Literal["exact", "lower_bound"]
# Methods whose keyword options the command line offers as flags (`genzoo sample`, `genzoo eval`).
OPTION_METHODS = ("sample", "figures", "log_likelihood", "task_metrics", "inpaint", "edit")
_NOT_OPTIONS = {"self", "n", "x", "known", "strength", "generator", "data", "labels", "callback", "args", "kwargs",
                "options"}


@dataclasses.dataclass(frozen=True)
class ImageRows:
    """A figure: equally long rows of images of levels, each (n, C, H, W), drawn one under another
    (for example inputs above their reconstructions), with each row's name in `labels` (or none)."""

    rows: tuple[Tensor, ...]
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.labels and len(self.labels) != len(self.rows):
            raise ValueError(f"{len(self.labels)} labels for {len(self.rows)} rows")


@dataclasses.dataclass(frozen=True)
class DensityMap:
    """A 2-D toy figure: sample points beside a heat map of the learned density over a square box.

    points (n, 2) in box coordinates; log_density (R, R) on a grid of bin centres, rows along y
    (row 0 at the bottom), columns along x; box (lo, hi) is the square [lo, hi]^2.
    """

    points: Tensor
    log_density: Tensor
    box: tuple[float, float]
    title: str = ""


Figure = ImageRows | DensityMap


class LogLikelihood(NamedTuple):
    """log P(x) of discrete images in nats, shape (B,), and whether it is exact or a lower bound."""

    nats: Tensor
    kind: Kind


class SampleStats(NamedTuple):
    """What the last `sample` call cost: the sampler's name and its number of network evaluations (NFE)
    per batch (classifier-free guidance counts two per step)."""

    sampler: str
    nfe: int


class Option(NamedTuple):
    """A keyword option of a model method: its name, type annotation, default and the method."""

    name: str
    annotation: Any
    default: Any
    method: str


# Hooks whose images `x` pass through `check_input`, and whose sample count `n` through `check_n`,
# before the model's own code sees them, whoever calls them: one validation path for every entry.
CHECKED_HOOKS = ("loss", "log_likelihood", "validation_nats", "sample", "inpaint", "edit")
MAX_SAMPLES = 100_000  # images one `sample` call draws


def _checking_input(fn: Any) -> Any:
    if fn.__name__ == "sample":
        def checked(self: "GenerativeModel", n: Any, *args: Any, **kwargs: Any) -> Any:
            return fn(self, self.check_n(n), *args, **kwargs)
    else:
        def checked(self: "GenerativeModel", x: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
            return fn(self, self.check_input(x), *args, **kwargs)
    checked = functools.wraps(fn)(checked)
    checked._checks_input = True  # type: ignore[attr-defined]
    return checked


class GenerativeModel(nn.Module):
    """Base class of every model: holds `spec` and the frozen `config`, declares the hooks."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Config: ClassVar[type]
    has_likelihood: ClassVar[bool] = False
    validation_is_likelihood: ClassVar[bool] = True
    conditional: ClassVar[bool] = False
    loss_unit: ClassVar[str] = "nats per dimension"
    train_defaults: ClassVar[dict[str, Any]] = {}
    stages: ClassVar[tuple[str, ...]] = ("main",)
    # `sample` options for the grids written during and after training and for compare's samples
    quick_sample_options: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for hook in CHECKED_HOOKS:  # one validation path for the images every public entry takes
            fn = cls.__dict__.get(hook)
            if callable(fn) and not getattr(fn, "_checks_input", False):
                setattr(cls, hook, _checking_input(fn))
        if "description" not in cls.__dict__:
            doc = (cls.__dict__.get("__doc__") or "").strip()
            cls.description = doc.splitlines()[0] if doc else ""
        # the validation objective is the log-likelihood unless a class below LikelihoodModel overrides it
        owner = next((k for k in cls.__mro__ if "validation_nats" in k.__dict__), None)
        cls.validation_is_likelihood = owner is None or getattr(owner.__dict__["validation_nats"], "_default", False)

    def __init__(self, spec: DataSpec, config: Any) -> None:
        super().__init__()
        if not dataclasses.is_dataclass(config):
            raise TypeError(f"config must be a dataclass instance, got {type(config).__name__}")
        self.spec = spec
        self.config = config

    # -- required -----------------------------------------------------------------------------
    def loss(self, x: Tensor) -> Tensor:
        """Scalar training objective on a batch of levels x, in `loss_unit` (lower is better)."""
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        """n new images, (n, C, H, W) int64 levels; a given generator makes them reproducible."""
        raise NotImplementedError

    # -- hooks with defaults ------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Number of classes the model is conditioned on: its config's `num_classes` field, 0 (an
        unconditional model) without one. When positive, the trainer and evaluation pass the
        dataset's `labels` (B,) to loss and log_likelihood."""
        return int(getattr(self.config, "num_classes", 0))

    def check_labels(self, labels: Any, n: int) -> Tensor | None:
        """Labels (n,) int64 in [0, num_classes) on the model's device; None for an unconditional
        model, which ignores any labels it is given (so one training loop passes a dataset's labels
        to both); one sentence otherwise."""
        k = self.num_classes
        if k == 0:
            return None
        if labels is None:
            raise GenzooError(f"this model is conditioned on {k} classes; pass labels of shape ({n},).")
        if type(labels).__module__ == "numpy":
            labels = torch.from_numpy(labels)
        if not isinstance(labels, Tensor) or labels.shape != (n,) or labels.dtype.is_floating_point or \
                labels.dtype == torch.bool:
            got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise GenzooError(f"labels must be {n} integer class indices, shape ({n},), got {got}.")
        if n and (int(labels.min()) < 0 or int(labels.max()) >= k):
            raise GenzooError(f"labels must lie in [0, {k - 1}] (num_classes = {k}), "
                              f"got values in [{int(labels.min())}, {int(labels.max())}].")
        return labels.long().to(self.device)

    def labels_of(self, data: Dataset, index: Any) -> Tensor | None:
        """The labels of data[index] on the model's device for a class-conditional model, else None."""
        if self.num_classes == 0 or data.labels is None:
            return None
        return data.labels[index].to(self.device)

    def classes_to_draw(self, n: int, label: Any = None, labels: Any = None, guidance: Any = 1.0) -> Tensor | None:
        """The classes n samples are drawn from: `labels` (n,), or `label` for all, or by default the
        classes 0, 1, ... in turn; None for an unconditional model, which refuses a class or a guidance
        weight in one sentence rather than ignore it. A guidance weight is a number from -100 to 100."""
        if not isinstance(guidance, (int, float)) or isinstance(guidance, bool) or not -100 <= guidance <= 100:
            raise GenzooError(f"guidance must be a number from -100 to 100, got {guidance!r}.")
        if self.num_classes == 0:
            if label is not None or labels is not None or guidance != 1.0:
                raise GenzooError(f"model {self.name!r} is not conditioned on classes; label, labels and guidance do "
                                  f"not apply (train it with --num-classes N).")
            return None
        if labels is None:
            if label is not None and (isinstance(label, bool) or not isinstance(label, int)):
                raise GenzooError(f"label must be an integer class index, got {label!r}.")
            labels = torch.full((n,), label) if label is not None else torch.arange(n) % self.num_classes
        return self.check_labels(labels, n)

    def prepare(self, train_data: Dataset) -> None:
        """Data-dependent initialisation (actnorm, PixelCNN++ data_init, class rebalancing), called by
        the trainer once before the first step, fresh or resumed: a prepared model (e.g. reloaded)
        must leave itself as it is. Default: nothing."""

    def begin_stage(self, name: str, train_data: Dataset) -> None:
        """Set up training stage `name` (e.g. encode the data for a prior); called before the stage
        starts, and again when a run resumes inside it. Default: nothing."""

    def stage_parameters(self, name: str) -> Iterator[nn.Parameter]:
        """Parameters optimized in stage `name`. Default: all."""
        return self.parameters()

    def task_metrics(self, data: Dataset, generator: torch.Generator | None = None) -> dict[str, float]:
        """Extra metrics on `data` (PSNR, codebook usage, ...) for `genzoo eval` and compare. Default: none."""
        return {}

    def figures(self, data: Dataset, generator: torch.Generator | None = None) -> dict[str, Figure]:
        """Extra figures for `genzoo sample`, name -> figure data; genzoo.viz draws them as NAME.png.
        Default: none."""
        return {}

    def inpaint(self, x: Tensor, known: Tensor, generator: torch.Generator | None = None,
                labels: Tensor | None = None, **options: Any) -> Tensor:
        """x (B, C, H, W) completed where `known` (a boolean tensor of x's shape) is False, drawn from
        the model's conditional given the known sub-pixels, which come back exactly as given.
        Default: refused in one sentence (`inpaints` is False); a family with a principled method
        defines it."""
        raise GenzooError(f"model {self.name!r} does not inpaint: its family has no principled completion of "
                          f"a partial image here; the autoregressive models, vae and the diffusion and flow-matching "
                          f"models do (`genzoo inpaint --help` lists them).")

    def edit(self, x: Tensor, strength: float, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        """SDEdit (Meng et al. 2022): x taken to the noise level `strength` in [0, 1] of the model's
        forward process and brought back by its sampler; strength 0 returns x, 1 draws afresh.
        Default: refused in one sentence; the diffusion and flow-matching families define it."""
        raise GenzooError(f"model {self.name!r} does not edit: SDEdit needs a process from data to noise "
                          f"(the diffusion and flow-matching models); `genzoo edit --help` lists them.")

    @property
    def inpaints(self) -> bool:
        """Whether the model's class defines inpaint (derived, never set by hand)."""
        return type(self).inpaint is not GenerativeModel.inpaint

    def check_known(self, known: Any, x: Tensor) -> Tensor:
        """`known` as a boolean tensor of x's shape on the model's device (a numpy array is converted);
        one sentence otherwise."""
        if type(known).__module__ == "numpy":
            known = torch.from_numpy(known)
        if not isinstance(known, Tensor) or known.dtype != torch.bool or known.shape != x.shape:
            got = f"{known.dtype} {tuple(known.shape)}" if isinstance(known, Tensor) else type(known).__name__
            raise GenzooError(f"known must be a boolean tensor of the images' shape {tuple(x.shape)} (True where a "
                              f"sub-pixel is given), got {got}.")
        return known.to(self.device)

    def sample_stats(self) -> SampleStats | None:
        """The sampler and NFE of the last `sample` call, for `genzoo sample`, run metrics and compare;
        None (the default) for a model that does not record them. A model records them with
        `self._sample_stats = SampleStats(...)` at the end of `sample`."""
        return self.__dict__.get("_sample_stats")

    @classmethod
    def options(cls, method: str) -> list[Option]:
        """The keyword options of `method` (one of OPTION_METHODS) that a user may set, with their
        annotations and defaults: the command line turns them into flags."""
        if method not in OPTION_METHODS:
            raise GenzooError(f"no options for {method!r}; choose one of {', '.join(OPTION_METHODS)}.")
        fn = getattr(cls, method, None)
        if fn is None:
            return []
        try:
            hints = typing.get_type_hints(fn)
        except Exception:  # an annotation that does not resolve: take the options as text
            hints = {}
        out = []
        for p in inspect.signature(fn).parameters.values():
            if p.name in _NOT_OPTIONS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            annotation = hints.get(p.name, str)
            if annotation is Tensor or Tensor in typing.get_args(annotation):
                continue  # tensors (e.g. `given` pixels) come from code, not from a command line
            default = None if p.default is inspect.Parameter.empty else p.default
            out.append(Option(p.name, annotation, default, method))
        return out

    # -- helpers ------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    def check_input(self, x: Any, what: str = "x") -> Tensor:
        """x as int64 levels (B, C, H, W) of this model's spec (any integer tensor or numpy array is
        converted), on the model's device; one clear sentence otherwise."""
        return self.spec.check(x, what).to(self.device)

    def check_n(self, n: int) -> int:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SAMPLES:
            raise GenzooError(f"the number of samples must be an integer from 1 to {MAX_SAMPLES:,} (draw more in "
                              f"several calls), got {n!r:.40}.")
        return n


class LikelihoodModel(GenerativeModel):
    """A model with a likelihood: `log_likelihood` gives log P(x) of discrete images, or a bound."""

    has_likelihood: ClassVar[bool] = True

    def log_likelihood(self, x: Tensor) -> LogLikelihood:
        """log P(x) in nats per image, (B,), exact or a lower bound (its kind says which)."""
        raise NotImplementedError

    def validation_nats(self, x: Tensor, **options: Any) -> LogLikelihood:
        """The objective that selects the best weights during training, in nats per image (B,).
        Default: log_likelihood (options such as `labels` go to it); a model whose full likelihood
        is slow gives a cheaper estimate."""
        return self.log_likelihood(x, **options)

    validation_nats._default = True  # type: ignore[attr-defined]  (read by validation_is_likelihood)
    log_likelihood._required = True  # type: ignore[attr-defined]  (a subclass must define it)
