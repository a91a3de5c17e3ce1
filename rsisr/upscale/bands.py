"""Which input bands a model reads and which bands the output holds (``--bands``, ``--other-bands``).

An N-band model (``ModelConfig.bands``; 3 for RGB) reads N bands of the input: ``--bands`` names
them, in the model's order, and by default they are the first N (an alpha band is the mask,
never a model band). A 3-band model also takes a single band, replicated to three and averaged
back, as it always has. The output holds:

- ``drop`` (the default): the model's bands, in that order; a warning names the input bands
  that are not written, unless ``--other-bands drop`` was asked for;
- ``bicubic``: every input band, in the input's order: the model's bands super-resolved, the
  others bicubic x4 in their own units (:func:`other_bands_up`).

An alpha band, if any, follows them, as before. Pure functions: the raster source and the
in-memory API (:mod:`rsisr.array_io`) share them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from rsisr.errors import BandSelectionWarning, InputError

#: Values of ``--other-bands``.
OTHER_BANDS = ("drop", "bicubic")


@dataclass(frozen=True)
class BandChoice:
    """``model``: the 1-based input bands the model reads, in its order; ``out``: the input bands
    written, in output order (the alpha band excluded); ``mode``: drop | bicubic."""

    model: tuple[int, ...]
    out: tuple[int, ...]
    mode: str = "drop"

    @property
    def others(self) -> tuple[int, ...]:
        """The input bands written bicubic x4 (``bicubic`` mode), in input order."""
        return tuple(b for b in self.out if b not in self.model) if self.mode == "bicubic" else ()

    def assemble(self, model_values: np.ndarray, other_values: np.ndarray | None) -> np.ndarray:
        """(len(out), h, w): the model's output bands (one per model band, or one averaged band)
        and the others' ``other_values``, each at its place in ``out``."""
        if self.mode != "bicubic":
            return model_values
        out = np.empty((len(self.out), *model_values.shape[1:]), model_values.dtype)
        others = iter(range(len(self.others)))
        for k, b in enumerate(self.out):
            out[k] = model_values[self.model.index(b)] if b in self.model else other_values[next(others)]
        return out


def parse_other_bands(value: str | None) -> str | None:
    """``--other-bands``: None (the default, drop with a warning), ``drop`` or ``bicubic``."""
    if value is None:
        return None
    mode = str(value).strip().lower()
    if mode not in OTHER_BANDS:
        raise InputError(f"invalid --other-bands {value!r}; use drop (the model's bands only) or bicubic "
                         "(every input band, the others bicubic x4)")
    return mode


def parse_bands(bands, model_bands: int | None = 3) -> tuple[int, ...] | None:
    """``--bands`` ("4,3,2" or a sequence of 1-based band numbers) -> a tuple, or None for the
    default choice. With ``model_bands``, the count is checked too (:func:`check_band_count`)."""
    if bands is None or bands == "" or bands == ():
        return None
    if isinstance(bands, int):
        bands = (bands,)
    if isinstance(bands, str):
        try:
            bands = [int(b) for b in bands.replace(" ", "").split(",") if b]
        except ValueError:
            raise InputError(f"invalid --bands {bands!r}; give 1-based band numbers, e.g. 4,3,2") from None
    bands = tuple(int(b) for b in bands)
    if not bands:
        return None
    if model_bands is not None:
        check_band_count(bands, model_bands)
    return bands


def check_band_count(bands: tuple[int, ...], model_bands: int) -> None:
    """A 3-band model takes one band or three; an N-band model takes N."""
    listed = ",".join(map(str, bands))
    if model_bands == 3 and len(bands) not in (1, 3):
        raise InputError(f"--bands takes one band or three (red,green,blue), got {len(bands)}: {listed}")
    if model_bands != 3 and len(bands) != model_bands:
        raise InputError(f"--bands gives {len(bands)} bands ({listed}) for a model of {model_bands} bands; "
                         f"name {model_bands} bands, in the model's order")


def _listed(bands) -> str:
    return ",".join(map(str, bands))


def _default(candidates: list[int], model_bands: int, name: str) -> tuple[tuple[int, ...], bool]:
    """(the model's bands, whether a warning already named the choice) without ``--bands``."""
    if len(candidates) < model_bands:
        if model_bands == 3 and len(candidates) == 2:
            warnings.warn(f"{name} has 2 bands; using band {candidates[0]} only (choose with --bands N)",
                          BandSelectionWarning, stacklevel=4)
            return (candidates[0],), True
        if model_bands == 3 and len(candidates) == 1:
            return (candidates[0],), False
        raise InputError(f"{name} has {len(candidates)} band{'s' if len(candidates) != 1 else ''}; this model "
                         f"takes {model_bands}: use a raster with at least {model_bands} bands or a model of fewer")
    return tuple(candidates[:model_bands]), False


def choose_bands(count: int, model_bands: int, bands: tuple[int, ...] | None, other_bands: str | None,
                 name: str, alpha: int | None = None) -> BandChoice:
    """The :class:`BandChoice` for an input of ``count`` bands (``alpha``: its alpha band, or
    None) and an N-band model; ``bands`` from :func:`parse_bands` (None: the first N),
    ``other_bands`` from :func:`parse_other_bands`. InputError for bands that do not exist, the
    alpha band, a wrong count, or an input with fewer bands than the model."""
    candidates = [i for i in range(1, count + 1) if i != alpha]
    warned = False
    if bands is not None:
        check_band_count(bands, model_bands)
        for b in bands:
            if not 1 <= b <= count:
                raise InputError(f"--bands {_listed(bands)}: band {b} does not exist; {name} has bands 1 to {count}")
            if b == alpha:
                raise InputError(f"--bands: band {b} is the alpha band, which rsisr uses as the mask; "
                                 "choose colour bands")
        model = tuple(bands)
    else:
        model, warned = _default(candidates, model_bands, name)
    dropped = [b for b in candidates if b not in model]
    mode = other_bands or "drop"
    if mode == "bicubic":
        if len(set(model)) != len(model):
            raise InputError(f"--other-bands bicubic writes every input band once, but --bands {_listed(model)} "
                             "repeats one; name distinct bands or use --other-bands drop")
        return BandChoice(model, tuple(candidates), "bicubic")
    if dropped and other_bands is None and not warned:
        _warn_dropped(name, len(candidates), model, dropped, model_bands, bands is None)
    return BandChoice(model, model, "drop")


def _warn_dropped(name: str, count: int, model, dropped, model_bands: int, default: bool) -> None:
    keep = (f"band{'s' if len(dropped) > 1 else ''} {_listed(dropped)} "
            f"{'are' if len(dropped) > 1 else 'is'} not written (--other-bands bicubic adds "
            f"{'them' if len(dropped) > 1 else 'it'}, bicubic x4; --other-bands drop silences this)")
    if default and model_bands == 3:
        message = (f"{name} has {count} bands; using bands {_listed(model)} as red, green and blue (choose others "
                   f"with --bands, e.g. --bands 4,3,2); {keep}")
    elif default:
        message = f"{name} has {count} bands; the model takes {model_bands}: using bands {_listed(model)}; {keep}"
    else:
        message = f"{name}: {keep}"
    warnings.warn(message, BandSelectionWarning, stacklevel=4)


def other_bands_up(read, lr_shape: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int], grow: int,
                   factor: int = 4):
    """HR rows/cols [a, b) (scene coordinates) of the bicubic x4 of the other bands, in raster
    units (float64 torch, (C, h, w)); a pure function of scene coordinates, like the model's output.

    ``read(r0, r1, c0, c1)`` -> ((C, h, w) raw values, (h, w) validity mask or None). Invalid
    pixels are filled first as the engine fills the model's input
    (:func:`rsisr.upscale.engine.fill_invalid`, ``grow`` pixels; each read has that halo), so a
    nodata value never leaks into a valid pixel's interpolation.
    """
    import torch

    from rsisr.imageops import bicubic_up_window
    from rsisr.upscale.engine import fill_invalid

    def filled(r0: int, r1: int, c0: int, c1: int):
        ra, rb = max(0, r0 - grow), min(lr_shape[0], r1 + grow)
        ca, cb = max(0, c0 - grow), min(lr_shape[1], c1 + grow)
        raw, valid = read(ra, rb, ca, cb)
        x = torch.from_numpy(np.asarray(raw, np.float64))
        if valid is not None:
            valid = torch.from_numpy(np.asarray(valid, bool)) & torch.isfinite(x).all(dim=0)
            x = fill_invalid(torch.where(valid, x, torch.zeros(())), valid, grow, fill=0.0)
        return x[:, r0 - ra: r1 - ra, c0 - ca: c1 - ca]

    return bicubic_up_window(filled, lr_shape, rows, cols, factor)
