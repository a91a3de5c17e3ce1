"""Training data: a folder of images -> random HR crops in [-1, 1], deterministic per position.

Every sample is a pure function of (seed, stream position): the data order is a fixed
permutation per pass (epoch) and the crop, flips and rotation of a sample come from a generator
keyed on (seed, position). A resumed run therefore continues the exact same stream, whatever the
number of loader workers. LR images are made from the HR batch on the training device by
:func:`rsisr.imageops.degrade`.

PNG/JPEG are read with Pillow, TIFF/GeoTIFF with rasterio (random windows; the first three
bands, a single band replicated; non-uint8 values scaled as ``rsisr upscale`` does, with
:func:`rsisr.radiometry.resolve_scaling` on a decimated read of the whole raster).

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
from rsisr.radiometry import Scaling, resolve_scaling

log = logging.getLogger(__name__)

PIL_SUFFIXES = (".png", ".jpg", ".jpeg")
RASTER_SUFFIXES = (".tif", ".tiff")
SUFFIXES = PIL_SUFFIXES + RASTER_SUFFIXES


@dataclass(frozen=True)
class ImageRecord:
    """One usable training image: where it is, its size and (rasters) its value scaling."""

    path: str
    height: int
    width: int
    scaling: Scaling | None = None  # None: 8-bit, read by Pillow or a uint8 raster


@dataclass
class FolderScan:
    images: list[ImageRecord]
    unreadable: int
    too_small: int
    #: (path, why) of every unreadable image that was skipped
    skipped: list[tuple[str, str]] = field(default_factory=list)


#: Rows decoded at once when :func:`_scan_one` checks every block of a raster.
SCAN_ROWS = 1024


def _scan_one(path: Path, scale: str) -> ImageRecord:
    """Decode ``path`` whole, so that a damaged file fails here and not in the middle of training;
    an :class:`InputError` naming the file and GDAL's or Pillow's message if it cannot be read."""
    if path.suffix.lower() in PIL_SUFFIXES:
        from PIL import Image

        try:
            with Image.open(path) as im:
                im.load()
                return ImageRecord(str(path), im.height, im.width)
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken files
            raise InputError(f"cannot read {path}: {' '.join(str(exc).split()) or type(exc).__name__}") from None
    from rasterio.windows import Window

    from rsisr.rasterio_io import describe_window, open_raster, reading

    with open_raster(path) as src:
        bands = _bands(src.count)
        scaling = None
        for r0 in range(0, src.height, SCAN_ROWS):
            window = Window(0, r0, src.width, min(SCAN_ROWS, src.height - r0))
            with reading(path, f"pixels ({describe_window(window, bands)})"):
                src.read(bands, window=window)
                src.dataset_mask(window=window)
        if np.dtype(src.dtypes[0]) != np.uint8:
            step = max(1, max(src.height, src.width) // 512)
            shape = (len(bands), max(1, src.height // step), max(1, src.width // step))
            with reading(path, "the statistics sample"):
                sample = src.read(bands, out_shape=shape)
                valid = src.dataset_mask(out_shape=shape[1:]) > 0
            scaling = resolve_scaling(scale, src.dtypes[0], len(bands), sample, valid)
        return ImageRecord(str(path), src.height, src.width, scaling)


def _bands(count: int) -> list[int]:
    """1-based band indexes read: the first three (one band is replicated later)."""
    return [1, 2, 3] if count >= 3 else [1]


def scan_folder(folder: str | Path, crop: int, scale: str = "auto", strict: bool = False) -> FolderScan:
    """Readable images of at least ``crop`` x ``crop``; each unreadable one is skipped with one
    warning naming it, and counted (``strict``: the first one is an :class:`InputError`).

    InputError: no images, none readable, or every readable one smaller than the crop.
    """
    from rsisr.errors import RsisrError

    files = list_images(folder, SUFFIXES, "data folder")
    images, too_small, skipped = [], 0, []
    for path in files:
        try:
            rec = _scan_one(path, scale)
        except RsisrError as exc:
            if strict:
                raise InputError(f"{exc} (--strict-data: every image must be readable; drop the flag to skip "
                                 "unreadable ones)") from None
            log.warning("skipping unreadable image: %s", exc)
            skipped.append((str(path), str(exc)))
            continue
        if rec.height < crop or rec.width < crop:
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


def read_window(rec: ImageRecord, top: int, left: int, size: int, with_mask: bool = False):
    """(3, size, size) float32 in [0, 1] (and the valid fraction when ``with_mask``)."""
    if rec.path.lower().endswith(PIL_SUFFIXES):
        from PIL import Image

        try:
            with Image.open(rec.path) as im:
                im = im.convert("RGB").crop((left, top, left + size, top + size))
                arr = np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken files
            raise InputError(f"cannot read {rec.path} (changed since the scan?): "
                             f"{' '.join(str(exc).split()) or type(exc).__name__}") from None
        return (arr, 1.0) if with_mask else arr
    from rasterio.windows import Window

    from rsisr.rasterio_io import describe_window, open_raster, reading

    with open_raster(rec.path, check=False) as src:
        window = Window(left, top, size, size)
        with reading(rec.path, f"pixels ({describe_window(window, _bands(src.count))})"):
            values = src.read(_bands(src.count), window=window)
            valid = float((src.dataset_mask(window=window) > 0).mean()) if with_mask else 1.0
        arr = values.astype(np.float32) / 255.0 if rec.scaling is None else rec.scaling.forward(values)
    if arr.shape[0] == 1:
        arr = np.repeat(arr, 3, axis=0)
    return (arr, valid) if with_mask else arr


def augment(arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random horizontal flip, vertical flip and 90-degree rotation (the 8 dihedral transforms)."""
    if rng.random() < 0.5:
        arr = arr[:, :, ::-1]
    if rng.random() < 0.5:
        arr = arr[:, ::-1, :]
    return np.rot90(arr, k=int(rng.integers(4)), axes=(1, 2))


class CropDataset(torch.utils.data.Dataset):
    """``dataset[(image_index, position)]`` -> (3, crop, crop) float32 HR in [-1, 1].

    The crop window and augmentation depend only on (seed, position).
    """

    def __init__(self, images: list[ImageRecord], crop: int, seed: int, min_valid: float = 0.9,
                 hr_scales: tuple[int, ...] = (1,)):
        self.images = images
        self.crop = crop
        self.seed = seed
        self.min_valid = min_valid
        self.hr_scales = tuple(int(f) for f in hr_scales)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        index, position = key
        rec = self.images[index]
        rng = np.random.default_rng([self.seed, 1, position])
        factor = 1
        if self.hr_scales != (1,):  # (1,) draws nothing, so existing streams stay as they were
            fits = [f for f in self.hr_scales if min(rec.height, rec.width) >= self.crop * f] or [1]
            factor = fits[int(rng.integers(len(fits)))]
        size = self.crop * factor
        for attempt in range(10):  # redraw windows that are mostly nodata (GeoTIFF collars)
            top = int(rng.integers(rec.height - size + 1))
            left = int(rng.integers(rec.width - size + 1))
            arr, valid = read_window(rec, top, left, size, with_mask=True)
            if valid >= self.min_valid:
                break
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
    """Batches of (B, 3, crop, crop) from stream position ``start_position`` on."""
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
    """Centre crops of up to ``count`` images, evenly spread over the list: (N, 3, crop, crop) in [-1, 1]."""
    if not images or count == 0:
        return None
    idx = np.unique(np.linspace(0, len(images) - 1, min(count, len(images))).round().astype(int))
    crops = []
    for i in idx:
        rec = images[i]
        arr = read_window(rec, (rec.height - crop) // 2, (rec.width - crop) // 2, crop)
        crops.append(torch.from_numpy(np.ascontiguousarray(arr)))
    return torch.stack(crops) * 2.0 - 1.0

