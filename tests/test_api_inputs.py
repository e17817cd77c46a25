"""Every public entry of every model, given any input a user may pass (tensors, numpy arrays and lists
of any dtype, shape and range; counts and temperatures of any type and size), gives a valid result
or one GenzooError sentence, never another exception."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import genzoo
from genzoo import GenzooError
from tiny import tiny, tiny_spec

MODELS = [n for n in genzoo.list_models() if n in genzoo.registry._MODELS]
_built: dict[str, genzoo.GenerativeModel] = {}


def model_of(name: str) -> genzoo.GenerativeModel:
    if name not in _built:
        _built[name] = genzoo.create(name, genzoo.DataSpec(*tiny_spec(name)), seed=0, **tiny(name)).eval()
    return _built[name]


@st.composite
def images(draw, spec: genzoo.DataSpec):
    n = draw(st.sampled_from([0, 1, 2]))
    shape = draw(st.sampled_from([(n, *spec.shape), (n, spec.channels + 1, spec.height, spec.width),
                                  (n, spec.height, spec.width), (n, *spec.shape, 1)]))
    dtype = draw(st.sampled_from(["int64", "int32", "uint8", "int8", "float32", "float64", "bool"]))
    high = draw(st.sampled_from([spec.levels, spec.levels + 3]))  # in range, or beyond the top level
    low = draw(st.sampled_from([0, -2]))
    values = np.random.default_rng(draw(st.integers(0, 9))).integers(max(low, -128), high, size=shape)
    array = values.astype(dtype)
    container = draw(st.sampled_from(["tensor", "numpy", "list"]))
    return torch.from_numpy(array) if container == "tensor" else array if container == "numpy" else array.tolist()


COUNTS = st.sampled_from([1, 2, 0, -1, 2.5, True, "3", None, 10 ** 30])
TEMPERATURES = st.sampled_from([1.0, 0.5, 0.0, -1.0, 1e308, 1e-308, math.nan, math.inf, "hot", None, True])


def _valid_or_one_sentence(call) -> None:
    try:
        call()
    except GenzooError as e:
        assert "\n" not in str(e) and str(e).endswith("."), str(e)


SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.mark.parametrize("name", MODELS)
def test_images_in_any_form_give_a_result_or_one_sentence(name):
    model = model_of(name)

    @SETTINGS
    @given(x=images(model.spec))
    def check(x):
        with torch.no_grad():
            _valid_or_one_sentence(lambda: model.loss(x))
            if model.has_likelihood:
                _valid_or_one_sentence(lambda: genzoo.bits_per_dim(model, x))
                if name in ("score-sde", "flow-matching"):  # the ODE bound: the quick solver keeps the test short
                    _valid_or_one_sentence(lambda: model.log_likelihood(x, method="rk4", steps=2))
                else:
                    _valid_or_one_sentence(lambda: model.log_likelihood(x))
    check()


@pytest.mark.parametrize("name", [n for n in MODELS if not genzoo.registry.model_class(n).conditional])
def test_counts_and_temperatures_of_any_type_give_samples_or_one_sentence(name):
    model = model_of(name)
    options = {o.name for o in model.options("sample")}

    @SETTINGS
    @given(n=COUNTS, temperature=TEMPERATURES)
    def check(n, temperature):
        extra = {"temperature": temperature} if "temperature" in options else {}
        fast = {"steps": 2} if "steps" in options else {}
        if "sampler" in options and name in ("score-sde",):
            fast["sampler"] = "euler"
        try:
            x = model.sample(n, generator=torch.Generator().manual_seed(0), **fast, **extra)
        except GenzooError as e:
            assert "\n" not in str(e)
            return
        assert x.dtype == torch.int64 and x.shape == (n, *model.spec.shape)
        assert int(x.min()) >= 0 and int(x.max()) < model.spec.levels
    check()
