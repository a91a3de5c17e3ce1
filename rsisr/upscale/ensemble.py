"""Ensembles (``--ensemble N``): the mean of N samples per pixel and their standard deviation.

Each tile is run N times, in batches of ``--batch-size`` samples, with the noise fields of the N
seeds of :func:`rsisr.noise.sample_seeds` (sample 0 is ``--seed`` itself). Per tile, the
samples' mean and (population) variance come from Welford's update over the samples of a call,
merged call by call, so identical samples give a variance of exactly 0. Tiles are then blended with the engine's overlap-add weights: the
accumulator holds, per pixel, the weight so far, the weighted mean and the weighted sum of squared
deviations, merged tile by tile with Chan et al.'s pairwise update (exact for the blended first
and second moments, without the cancellation of E[y^2] - E[y]^2)::

    W' = W + w;  r = w / W';  d = m_t - mean;  mean += r d;  M2 += w v_t + w (1 - r) d^2

and the variance is M2 / W: the variance of the mixture of the tiles' samples under the blending
weights (inside a tile it is the samples' variance). The accumulator has 1 + 2 C channels
instead of C (7 instead of 3 for RGB), whatever N is, so memory stays bounded; an ensemble of one
is the plain engine.
"""

from __future__ import annotations

import torch

from rsisr.errors import ConfigError
from rsisr.noise import sample_seeds
from rsisr.upscale.engine import TiledUpscaler

_TINY = 1e-30  # guards w / W' where a tile's weight (and so far the total) is 0


def check_ensemble(ensemble) -> int:
    """``--ensemble`` as an int >= 1, or a one-line ConfigError."""
    if isinstance(ensemble, bool) or not isinstance(ensemble, int) or ensemble < 1:
        raise ConfigError(f"--ensemble must be a whole number of samples, at least 1 (1 is a single sample), "
                          f"got {ensemble!r}")
    return ensemble


def make_engine(model, *, ensemble: int = 1, **options) -> TiledUpscaler:
    """The engine for ``ensemble`` samples: the plain :class:`TiledUpscaler` for one (so
    ``--ensemble 1`` is today's output bit for bit), an :class:`EnsembleUpscaler` for more."""
    if check_ensemble(ensemble) == 1:
        return TiledUpscaler(model, **options)
    return EnsembleUpscaler(model, ensemble=ensemble, **options)


def sample_moments(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, ...) samples -> their mean and population variance (...), by Welford's update: N
    identical samples give exactly that value and a variance of exactly 0."""
    mean = samples[0].clone()
    m2 = torch.zeros_like(mean)
    for k in range(1, samples.shape[0]):
        delta = samples[k] - mean
        mean.add_(delta / (k + 1))
        m2.addcmul_(delta, samples[k] - mean)
    return mean, m2.div_(samples.shape[0])


def merge_moments(a: tuple, b: tuple) -> tuple:
    """(count, mean, population variance) of two groups of samples -> that of all of them
    (Chan et al.'s pairwise update; equal means add nothing to the variance, exactly)."""
    na, ma, va = a
    nb, mb, vb = b
    n = na + nb
    delta = mb - ma
    mean = ma + delta * (nb / n)
    m2 = va * na + vb * nb + delta * delta * (na * nb / n)
    return n, mean, m2 / n


class EnsembleUpscaler(TiledUpscaler):
    """The tiling engine over ``ensemble`` samples per tile: the sink gets the blended mean and
    standard deviation, ``sink.write(row, col, mean, std)``, both (C, h, w) in model units [0, 1].

    ``batch_size`` counts model inputs (samples), so a call, and the memory it takes, is what
    ``batch_size`` says whatever N is: a call holds all N samples of ``batch_size // N`` tiles
    when ``batch_size >= N``, else ``batch_size`` samples of one tile. The samples' moments are
    merged call by call (:func:`merge_moments`), so a tile's N samples are never held at once. A
    sink with ``bands == 1`` under a model of more (one input band replicated for the model, the
    output their mean) gets the moments of the channel mean, replicated to the C channels.
    """

    @property
    def acc_channels(self) -> int:
        """Weight so far (1), weighted mean (C), weighted sum of squared deviations (C): 1 + 2 C
        whatever N is (7 for RGB). The hooks below read C from their tensors."""
        return 1 + 2 * self.bands

    def __init__(self, model, *, ensemble: int = 2, **options):
        super().__init__(model, **options)
        self.ensemble = check_ensemble(ensemble)
        self.seeds = sample_seeds(self.seed, self.ensemble)
        self.mono = False

    def run(self, source, sink, window=None, on_tile=None) -> int:
        self.mono = self.bands > 1 and getattr(sink, "bands", self.bands) == 1
        return super().run(source, sink, window, on_tile)

    def sample_stats(self, lr: torch.Tensor, origins) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, h, w) LR tiles in [-1, 1] -> the mean and population variance of their N
        samples, each (B, 3, 4h, 4w) in [0, 1] units. Sample k has the noise of ``seeds[k]``; the
        samples run in calls of ``max(1, batch_size // B)`` samples of every tile."""
        b, n = lr.shape[0], self.ensemble
        per_call = max(1, self.batch_size // b)
        stats = None
        for k0 in range(0, n, per_call):
            k = min(n, k0 + per_call) - k0
            out = self.forward(lr.repeat(k, 1, 1, 1), list(origins) * k,
                               [s for s in self.seeds[k0:k0 + k] for _ in range(b)])
            samples = out.add_(1.0).mul_(0.5).view(k, b, *out.shape[1:])
            if self.mono:
                samples = samples.mean(dim=2, keepdim=True).expand_as(samples)
            mean, var = sample_moments(samples)
            stats = (k, mean, var) if stats is None else merge_moments(stats, (k, mean, var))
        return stats[1], stats[2]

    def _tiles_per_call(self) -> int:
        return max(1, self.batch_size // self.ensemble)

    def _run_batch(self, lr: torch.Tensor, origins) -> torch.Tensor:
        """(B, 6, 4h, 4w): each tile's samples' mean and variance in [0, 1] units."""
        return torch.cat(self.sample_stats(lr, origins), dim=1)

    @staticmethod
    def _blend(region: torch.Tensor, out: torch.Tensor, weight: torch.Tensor) -> None:
        c = out.shape[0] // 2  # out: the tile's mean and variance, C channels each
        total, mean, m2 = region[:1], region[1:1 + c], region[1 + c:]
        total.add_(weight)
        ratio = weight / total.clamp_min(_TINY)
        delta = out[:c] - mean
        mean.addcmul_(delta, ratio)
        m2.addcmul_(out[c:], weight).addcmul_(delta * delta, weight * (1.0 - ratio))

    @staticmethod
    def _finish(acc: torch.Tensor, norm: torch.Tensor) -> tuple[torch.Tensor, ...]:
        c = (acc.shape[0] - 1) // 2
        var = acc[1 + c:] / acc[:1].clamp_min(_TINY)
        return acc[1:1 + c].clamp(0.0, 1.0), var.clamp_(min=0.0).sqrt_()


def ensemble_tags(engine: TiledUpscaler) -> dict[str, str]:
    """The ``RSISR_ENSEMBLE*`` tags of an ensemble's outputs (none for a single sample, whose
    output stays as it was)."""
    n = getattr(engine, "ensemble", 1)
    if n == 1:
        return {}
    return {"RSISR_ENSEMBLE": str(n), "RSISR_ENSEMBLE_SEEDS": ",".join(map(str, engine.seeds))}
