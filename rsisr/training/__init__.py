"""Training of both LCMSR stages (`rsisr train ae`, `rsisr train lcm`).

``rsisr.training.train(stage, out, data=..., ...)`` runs one stage into a run directory; see
:mod:`rsisr.training.runner`, :mod:`rsisr.training.config` (the configuration),
:mod:`rsisr.training.data`, :mod:`rsisr.training.ae`, :mod:`rsisr.training.lcm` and
:mod:`rsisr.training.common` (run directory, checkpoints, metrics, the loop).
"""

from __future__ import annotations


def train(*args, **kwargs):
    """See :func:`rsisr.training.runner.train`."""
    from rsisr.training.runner import train as _train

    return _train(*args, **kwargs)
