"""genzoo: a generative model zoo for PyTorch.

    import genzoo
    train = genzoo.data.load("digits", split="train")
    model = genzoo.create("pixelcnn", train.spec)
    loss = model.loss(train.x[:32])
    ll = model.log_likelihood(train.x[:32])      # LogLikelihood(nats, kind)
    genzoo.bits_per_dim(model, train.x[:32])     # BitsPerDim(value, kind, se)
    genzoo.sample_quality(model.sample(300), genzoo.data.load("digits", "test").x, data="digits")
    result = genzoo.train(model, train, genzoo.data.load("digits", "val"), steps=300, out="runs/p")
"""
__version__ = "0.1.0"

from . import data
from .checkpoint import load, save
from .data.spec import Dataset, DataSpec
from .errors import GenzooError
from .evaluate import BitsPerDim, bits_per_dim
from .models.base import DensityMap, GenerativeModel, ImageRows, LikelihoodModel, LogLikelihood, SampleStats
from .quality import sample_quality
from .registry import create, list_models, register
from .training import TrainConfig, TrainResult, train

__all__ = ["__version__", "data", "create", "list_models", "register", "save", "load", "bits_per_dim",
           "BitsPerDim", "LogLikelihood", "DataSpec", "Dataset", "GenerativeModel", "LikelihoodModel",
           "ImageRows", "DensityMap", "SampleStats", "GenzooError", "sample_quality",
           "train", "TrainConfig", "TrainResult"]
