"""LCMSR networks: one file per architectural unit, shared blocks in ``layers``."""

from rsisr.models.autoencoder import Decoder, DiagonalGaussian, ResidualAutoencoder
from rsisr.models.consistency import ConsistencyFunction, sample
from rsisr.models.encoder import Encoder
from rsisr.models.imdb import FRU, IMDB
from rsisr.models.lcmsr import LCMSR, build_condnet
from rsisr.models.unet import UNet

__all__ = [
    "ConsistencyFunction", "Decoder", "DiagonalGaussian", "Encoder", "FRU", "IMDB", "LCMSR",
    "ResidualAutoencoder", "UNet", "build_condnet", "sample",
]
