"""Training data: a folder of images -> random HR crops in [-1, 1], deterministic per position.

Every sample is a pure function of (seed, stream position): the data order is a fixed
permutation per pass (epoch) and the crop, flips and rotation of a sample come from a generator
keyed on (seed, position). A resumed run therefore continues the exact same stream, whatever the
number of loader workers. LR images are made from the HR batch on the training device by
:func:`rsisr.imageops.degrade`.

PNG/JPEG are read with Pillow (RGB: for 3-band models only), TIFF/GeoTIFF with rasterio window by
window (:mod:`rsisr.training.rasters`: the model's N bands, a single band replicated for a 3-band
model; the model's stored scaling, else uint8 as is and other dtypes scaled as ``rsisr upscale``
does; windows are drawn only where every pixel is valid, so nodata never enters a crop).

Damaged images. :func:`scan_folder` decodes every image once before training: one that cannot
be read (truncated, corrupt blocks, a damaged header) is skipped with one warning naming it, or
is an error with ``strict``; a folder with no readable image is an error. A read that still fails
during training (a file changed underneath) stops the run with one :class:`InputError` line.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from rsisr.errors import InputError
from rsisr.imageops import list_images
from rsisr.radiometry import Scaling

log = logging.getLogger(__name__)

PIL_SUFFIXES = (".png", ".jpg", ".jpeg")
RASTER_SUFFIXES = (".tif", ".tiff")
SUFFIXES = PIL_SUFFIXES + RASTER_SUFFIXES


@dataclass(frozen=True)
class ImageRecord:
    """One usable training image: where it is, its size, its value scaling, and (rasters) the
    bands read and the validity grid of :func:`rsisr.training.rasters.scan_raster`."""

    path: str
    height: int
    width: int
    scaling: Scaling | None = None  # None: 8-bit, read by Pillow or a uint8 raster
    bands: tuple[int, ...] = ()  # raster bands read (1-based); () for Pillow images
    channels: int = 3  # the model's bands: what a crop holds (one band read is replicated to them)
    #: cells of rasters.CELL pixels that are all valid; None: every pixel is valid
    grid: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass
class FolderScan:
    images: list[ImageRecord]
    unreadable: int
    too_small: int
    #: (path, why) of every unreadable image that was skipped
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _scan_one(path: Path, scale: str, model=None) -> ImageRecord:
    """Decode ``path`` whole, so that a damaged file fails here and not in the middle of training;
    an :class:`InputError` naming the file and GDAL's or Pillow's message if it cannot be read,
    or if it does not suit ``model`` (a ModelConfig; None: RGB, no stored scaling)."""
    bands = getattr(model, "bands", 3)
    stored = model.band_scaling() if model is not None else None
    if path.suffix.lower() in PIL_SUFFIXES:
        from PIL import Image

        if bands != 3:
            raise InputError(f"{path} is an RGB image; this {bands}-band model trains on rasters of {bands} bands")
        try:
            with Image.open(path) as im:
                im.load()
                return ImageRecord(str(path), im.height, im.width, stored)  # RGB, as the model
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken files
            raise InputError(f"cannot read {path}: {' '.join(str(exc).split()) or type(exc).__name__}") from None
    from rsisr.training.rasters import scan_raster

    return ImageRecord(str(path), **scan_raster(path, scale, bands, stored), channels=bands)


def scan_folder(folder: str | Path, crop: int, scale: str = "auto", strict: bool = False, model=None) -> FolderScan:
    """Readable images of at least ``crop`` x ``crop`` (with a window of it free of nodata) for
    ``model`` (a ModelConfig: its bands and stored scaling; None: RGB); each unreadable or
    unsuitable one is skipped with one warning naming it, and counted (``strict``: the first one
    is an :class:`InputError`).

    InputError: no images, none readable, or every readable one smaller than the crop.
    """
    from rsisr.errors import RsisrError

    files = list_images(folder, SUFFIXES, "data folder")
    images, too_small, skipped = [], 0, []
    for path in files:
        try:
            rec = _scan_one(path, scale, model)
        except RsisrError as exc:
            if strict:
                raise InputError(f"{exc} (--strict-data: every image must be readable; drop the flag to skip "
                                 "unreadable ones)") from None
            log.warning("skipping unreadable image: %s", exc)
            skipped.append((str(path), str(exc)))
            continue
        if rec.height < crop or rec.width < crop or not _has_window(rec, crop):
            too_small += 1
            continue
        images.append(rec)
    unreadable = len(skipped)
    if too_small:
        log.info("%d images in %s are smaller than the %d px crop and were skipped", too_small, folder, crop)
    if not images:
        if unreadable == len(files):
            raise InputError(f"none of the {len(files)} images in {folder} is readable (first: {skipped[0][1]})")
        raise InputError(
            f"every readable image in {folder} is smaller than the {crop}x{crop} crop "
            f"({too_small} too small, {unreadable} unreadable); use larger images or a smaller crop (--set data.crop=N)"
        )
    return FolderScan(images, unreadable, too_small, skipped)


def is_held_out(path: str, root: str | Path, fraction: float) -> bool:
    """The fixed validation split: a file is held out when a hash of its path relative to the
    data folder falls below ``fraction`` (stable when files are added or removed)."""
    rel = Path(path).relative_to(root).as_posix()
    h = int(hashlib.sha1(rel.encode()).hexdigest()[:8], 16)
    return h / 2**32 < fraction


def split(images: list[ImageRecord], root: str | Path, fraction: float) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """(train, val) by :func:`is_held_out`; everything trains if the split would leave no training image."""
    val = [r for r in images if is_held_out(r.path, root, fraction)]
    train = [r for r in images if not is_held_out(r.path, root, fraction)]
    if not train:
        return images, []
    return train, val


def _has_window(rec: ImageRecord, size: int) -> bool:
    """Whether ``rec`` holds a ``size`` window with only valid pixels."""
    from rsisr.training.rasters import valid_anchors

    return rec.grid is None or len(valid_anchors(rec.grid, rec.height, rec.width, size)) > 0


def read_window(rec: ImageRecord, top: int, left: int, size: int) -> np.ndarray:
    """(C, size, size) float32 in [0, 1]: C is the model's bands (three, or one replicated)."""
    if rec.path.lower().endswith(PIL_SUFFIXES):
        from PIL import Image

        try:
            with Image.open(rec.path) as im:
                im = im.convert("RGB").crop((left, top, left + size, top + size))
                raw = np.asarray(im).transpose(2, 0, 1)
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken files
            raise InputError(f"cannot read {rec.path} (changed since the scan?): "
                             f"{' '.join(str(exc).split()) or type(exc).__name__}") from None
        return raw.astype(np.float32) / 255.0 if rec.scaling is None else rec.scaling.forward(raw)
    from rsisr.training.rasters import read_raster_window

    arr = read_raster_window(rec.path, rec.bands or (1,), rec.scaling, top, left, size)
    if arr.shape[0] != rec.channels:  # one band for a 3-band model
        arr = np.repeat(arr, rec.channels, axis=0)
    return arr


def _central_window(rec: ImageRecord, crop: int) -> tuple[int, int]:
    """(top, left) of the centre crop, or of the valid window nearest it."""
    top, left = (rec.height - crop) // 2, (rec.width - crop) // 2
    if rec.grid is None:
        return top, left
    from rsisr.training.rasters import valid_anchors

    anchors = valid_anchors(rec.grid, rec.height, rec.width, crop)
    k = int(np.argmin(np.abs(anchors[:, 0] - top) + np.abs(anchors[:, 1] - left)))
    return int(anchors[k, 0]), int(anchors[k, 1])


def augment(arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random horizontal flip, vertical flip and 90-degree rotation (the 8 dihedral transforms)."""
    if rng.random() < 0.5:
        arr = arr[:, :, ::-1]
    if rng.random() < 0.5:
        arr = arr[:, ::-1, :]
    return np.rot90(arr, k=int(rng.integers(4)), axes=(1, 2))


class CropDataset(torch.utils.data.Dataset):
    """``dataset[(image_index, position)]`` -> (C, crop, crop) float32 HR in [-1, 1] (C: the model's bands).

    The crop window and augmentation depend only on (seed, position). Windows hold only valid
    pixels (:func:`rsisr.training.rasters.draw_window`). ``min_valid`` is no longer used (windows
    used to be redrawn while fewer of their pixels were valid); it stays for old configurations.
    """

    def __init__(self, images: list[ImageRecord], crop: int, seed: int, min_valid: float = 0.9,
                 hr_scales: tuple[int, ...] = (1,)):
        self.images = images
        self.crop = crop
        self.seed = seed
        self.min_valid = min_valid
        self.hr_scales = tuple(int(f) for f in hr_scales)
        self._bad: dict[int, np.ndarray] = {}  # summed-area tables of the validity grids, per image
        self._factors: dict[int, list[int]] = {}  # the hr_scales that fit, per image

    def __len__(self) -> int:
        return len(self.images)

    def _fits(self, index: int, rec: ImageRecord) -> list[int]:
        """The ``hr_scales`` factors whose window fits the image (and has a valid place in it)."""
        from rsisr.training.rasters import valid_anchors

        if index not in self._factors:
            fits = [f for f in self.hr_scales if min(rec.height, rec.width) >= self.crop * f]
            if rec.grid is not None:
                fits = [f for f in fits if f == 1 or len(valid_anchors(rec.grid, rec.height, rec.width, self.crop * f))]
            self._factors[index] = fits or [1]
        return self._factors[index]

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        from rsisr.training.rasters import _bad_counts, draw_window

        index, position = key
        rec = self.images[index]
        rng = np.random.default_rng([self.seed, 1, position])
        factor = 1
        if self.hr_scales != (1,):  # (1,) draws nothing, so existing streams stay as they were
            fits = self._fits(index, rec)
            factor = fits[int(rng.integers(len(fits)))]
        size = self.crop * factor
        if rec.grid is not None and index not in self._bad:
            self._bad[index] = _bad_counts(rec.grid)
        top, left = draw_window(rec.grid, rec.height, rec.width, size, rng, self._bad.get(index))
        arr = read_window(rec, top, left, size)
        if factor > 1:  # area average: (C, crop * f, crop * f) -> (C, crop, crop)
            arr = arr.reshape(arr.shape[0], self.crop, factor, self.crop, factor).mean(axis=(2, 4))
        arr = augment(arr, rng)
        return torch.from_numpy(np.ascontiguousarray(arr)) * 2.0 - 1.0


class StreamSampler(torch.utils.data.Sampler):
    """Infinite stream of (image_index, position) from ``start``: pass e is a permutation of
    the images drawn from (seed, e). ``position // n`` is the (fractional) epoch."""

    def __init__(self, n: int, seed: int, start: int = 0):
        self.n = n
        self.seed = seed
        self.start = start

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 0, epoch]).permutation(self.n)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        position = self.start
        epoch, perm = -1, None
        while True:
            e, i = divmod(position, self.n)
            if e != epoch:
                epoch, perm = e, self.permutation(e)
            yield int(perm[i]), position
            position += 1


def _worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)


def make_loader(dataset: CropDataset, batch_size: int, start_position: int, workers: int, pin: bool) -> Iterator[torch.Tensor]:
    """Batches of (B, C, crop, crop) from stream position ``start_position`` on."""
    sampler = StreamSampler(len(dataset), dataset.seed, start_position)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, pin_memory=pin,
        worker_init_fn=_worker_init if workers else None, persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )
    return _one_line_errors(iter(loader))


def _one_line_errors(batches: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
    """``batches`` with an :class:`InputError` from a loader worker cut back to its own message
    (torch re-raises it with the worker's traceback in the text)."""
    while True:
        try:
            batch = next(batches)
        except InputError as exc:
            lines = [line for line in str(exc).splitlines() if line.strip()]
            last = lines[-1] if lines else ""
            raise InputError(last.split("InputError: ", 1)[-1]) from None
        yield batch


def load_val_set(images: list[ImageRecord], crop: int, count: int) -> torch.Tensor | None:
    """Up to ``count`` crops of images evenly spread over the list: (N, C, crop, crop) in [-1, 1];
    the centre crop, or (an image with nodata) the valid window nearest the centre."""
    if not images or count == 0:
        return None
    idx = np.unique(np.linspace(0, len(images) - 1, min(count, len(images))).round().astype(int))
    crops = []
    for i in idx:
        rec = images[i]
        arr = read_window(rec, *_central_window(rec, crop), crop)
        crops.append(torch.from_numpy(np.ascontiguousarray(arr)))
    return torch.stack(crops) * 2.0 - 1.0

