"""Training of both LCMSR stages (`rsisr train ae`, `rsisr train lcm`).

``rsisr.training.train(stage, out, data=..., ...)`` runs one stage into a run directory:

- :mod:`~rsisr.training.runner`: ``train``, resolving the configuration once and checking the inputs;
- :mod:`~rsisr.training.config` and :mod:`~rsisr.training.sections`: the configuration;
- :mod:`~rsisr.training.data`: the images, random crops and the loader;
- :mod:`~rsisr.training.trainer`: what both stages share; :mod:`~rsisr.training.ae` (stage 1)
  and :mod:`~rsisr.training.lcm` (stage 2), with :mod:`~rsisr.training.losses` and
  :mod:`~rsisr.training.discriminator`;
- :mod:`~rsisr.training.loop`: ``fit`` and Ctrl-C; :mod:`~rsisr.training.state`: RNG states, EMA,
  checkpoints, the run directory; :mod:`~rsisr.training.metrics`: metrics.csv, losses.png, validation.
"""

from __future__ import annotations


def train(*args, **kwargs):
    """See :func:`rsisr.training.runner.train`."""
    from rsisr.training.runner import train as _train

    return _train(*args, **kwargs)
