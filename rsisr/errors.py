"""Exceptions and warnings raised by rsisr.

One root, :class:`RsisrError`; each subclass also derives from the builtin that matches it, so
callers can catch either. The CLI turns every ``RsisrError`` into a one-line message and exit 1.
"""

from __future__ import annotations


class RsisrError(Exception):
    """Root of every error rsisr raises on purpose."""


class ConfigError(RsisrError, ValueError):
    """An invalid configuration value or an unknown configuration key."""


class CheckpointError(RsisrError, ValueError):
    """A weights file that is missing, truncated, foreign or does not match its config."""


class DeviceError(RsisrError, RuntimeError):
    """A requested device or precision that this machine cannot provide."""


class InputError(RsisrError, ValueError):
    """Input data (an image, a raster, a vector file, a folder) that cannot be used as given."""


class OutputError(RsisrError, OSError):
    """An output path that cannot be written (exists, not writable, same as the input)."""


class TrainingInterrupted(RsisrError, KeyboardInterrupt):
    """Ctrl-C during training: a resumable checkpoint was written first."""


class TrainingDiverged(RsisrError, ArithmeticError):
    """A training loss became NaN or infinite."""


class ClusterError(RsisrError, RuntimeError):
    """A Dask cluster that cannot be reached, has no workers, or whose workers keep dying."""


class RsisrWarning(UserWarning):
    """Root of the warnings rsisr emits."""


class GeoreferencingWarning(RsisrWarning):
    """A raster without a CRS or geotransform: the output keeps a scaled pixel transform."""


class BandSelectionWarning(RsisrWarning):
    """More than three bands and no explicit band choice."""


class MetricWeightsWarning(RsisrWarning):
    """LPIPS or FID weights are not available: the metric is reported as null."""
