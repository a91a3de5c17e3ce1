"""LPIPS and FID, built from local weight files so that they work offline.

- LPIPS: v0.1 with AlexNet, exactly what ``lpips.LPIPS(net='alex')`` computes. We build that very
  class with its downloads switched off (``pretrained=False, pnet_rand=True``) and load the
  backbone (``alexnet_features.pth``) and the linear heads (``lpips_v0.1_alex.pth``) ourselves.
- FID: pytorch-fid's ``InceptionV3`` (pool3, 2048-d, ``use_fid_inception=True``, its resize to
  299x299 and [0, 1] -> [-1, 1] scaling) with the weights of ``pt_inception-2015-12-05.pth`` in
  place of its URL download, and pytorch-fid's ``calculate_frechet_distance``.

The weight files are those written by ``../shared/tools/metric-weights DIR``; the folder comes from
``--metric-weights DIR`` or the ``RSISR_METRIC_WEIGHTS`` environment variable. Without a folder the
packages' usual download (into the torch hub cache) is tried; where that fails, the metric is
unavailable and :func:`load_lpips` / :func:`load_fid_inception` return None with a
:class:`~rsisr.errors.MetricWeightsWarning`.

All image inputs here are (B, 3, H, W) float tensors with values in [0, 255].
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rsisr.errors import InputError, MetricWeightsWarning

log = logging.getLogger(__name__)

ENV_VAR = "RSISR_METRIC_WEIGHTS"
ALEXNET_FILE = "alexnet_features.pth"
LPIPS_HEADS_FILE = "lpips_v0.1_alex.pth"
#: LPIPS(VGG16), the training loss of stage 1 (``ae.perceptual_weight``), never an evaluation metric.
VGG16_FILE = "vgg16_features.pth"
LPIPS_VGG_HEADS_FILE = "lpips_v0.1_vgg.pth"
INCEPTION_FILE = "pt_inception-2015-12-05.pth"
HOW_TO_GET = "write them with `../shared/tools/metric-weights DIR` (see the README, section Evaluate)"

# AlexNet `features` indices of the convolutions that lpips' alexnet wrapper puts into its
# slices 1-5 (features[0:2], [2:5], [5:8], [8:10], [10:12]).
_ALEX_SLICE_OF = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}
# VGG16 `features` slices of lpips' vgg16 wrapper: [0:4], [4:9], [9:16], [16:23], [23:30]
# (ending at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).
_VGG_SLICE_ENDS = (4, 9, 16, 23, 30)


def _vgg_slice_of(index: int) -> int:
    return next(k for k, end in enumerate(_VGG_SLICE_ENDS, start=1) if index < end)


def metric_weights_dir(path: str | os.PathLike | None = None) -> Path | None:
    """The folder of local metric weights: ``path``, else $RSISR_METRIC_WEIGHTS, else None.

    A folder that is named but does not exist is an error (a typo should not silently turn the
    metrics into nulls).
    """
    given = path if path is not None else os.environ.get(ENV_VAR) or None
    if given is None:
        return None
    folder = Path(given).expanduser()
    source = "--metric-weights" if path is not None else f"${ENV_VAR}"
    if not folder.is_dir():
        raise InputError(f"metric weights folder {str(folder)!r} (from {source}) does not exist; {HOW_TO_GET}")
    return folder


def _weights_file(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise InputError(f"metric weights folder {str(folder)!r} has no {name}; {HOW_TO_GET}")
    return path


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which one
        raise InputError(f"cannot read metric weights {str(path)!r} ({exc}); {HOW_TO_GET}") from None
    if not isinstance(state, dict):
        raise InputError(f"metric weights {str(path)!r} hold a {type(state).__name__}, not a state dict; {HOW_TO_GET}")
    return state


def _unavailable(metric: str, reason: str) -> None:
    warnings.warn(
        MetricWeightsWarning(
            f"{metric} is reported as null: {reason}. Pass --metric-weights DIR (or set ${ENV_VAR}); {HOW_TO_GET}"
        ),
        stacklevel=4,  # the caller of load_lpips / load_fid_inception
    )


# --------------------------------------------------------------------------------------------- LPIPS


def build_lpips_local(folder: str | os.PathLike, net: str = "alex", layers: int = 5) -> nn.Module:
    """``lpips.LPIPS(net=net)`` (v0.1; ``alex`` or ``vgg``) with both weight sets loaded from
    ``folder``; no download. ``layers`` < 5 keeps the first feature levels only (VGG up to
    relu3_3 with 3), and the deeper slices are not even run: a cheaper training loss."""
    import lpips

    folder = Path(folder)
    files = {"alex": (ALEXNET_FILE, LPIPS_HEADS_FILE), "vgg": (VGG16_FILE, LPIPS_VGG_HEADS_FILE)}[net]
    backbone = _load_state(_weights_file(folder, files[0]))
    heads = _load_state(_weights_file(folder, files[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation notice for `pretrained=`
        model = lpips.LPIPS(pretrained=False, net=net, version="0.1", pnet_rand=True, verbose=False)
    renamed = {}
    for key, value in backbone.items():
        prefix, index, param = key.split(".")
        if prefix != "features" or (net == "alex" and int(index) not in _ALEX_SLICE_OF):
            raise InputError(f"unexpected key {key!r} in {files[0]}; {HOW_TO_GET}")
        level = _ALEX_SLICE_OF[int(index)] if net == "alex" else _vgg_slice_of(int(index))
        renamed[f"slice{level}.{index}.{param}"] = value
    try:
        model.net.load_state_dict(renamed, strict=True)
        model.lins.load_state_dict({k.removeprefix("lin"): v for k, v in heads.items()}, strict=True)
    except RuntimeError as exc:
        raise InputError(f"metric weights in {str(folder)!r} do not fit LPIPS-{net}: {exc}; {HOW_TO_GET}") from None
    if layers < model.L:
        for k in range(layers + 1, model.L + 1):
            setattr(model.net, f"slice{k}", nn.Sequential())  # identity: nothing deeper is computed
        model.L = layers
    return model.eval().requires_grad_(False)


def load_lpips(folder: Path | None, device: torch.device) -> nn.Module | None:
    """LPIPS-alex on ``device`` from local weights, else by the package's download, else None
    (with a :class:`MetricWeightsWarning`)."""

    def download(lpips) -> nn.Module:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return lpips.LPIPS(net="alex", version="0.1", verbose=False)

    return _load_net("LPIPS", folder, device, package="lpips", local=build_lpips_local, download=download,
                     what="the lpips package", download_of="AlexNet")


@torch.no_grad()
def lpips_distance(net: nn.Module, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """LPIPS between (B, 3, H, W) images in [0, 255]: (B,) float64 (the package's spatial mean)."""
    device = next(net.parameters()).device
    a = sr.to(device, torch.float32) / 127.5 - 1.0
    b = hr.to(device, torch.float32) / 127.5 - 1.0
    return net(a, b).flatten().double().cpu()


# ----------------------------------------------------------------------------------------------- FID


def build_fid_inception_local(folder: str | os.PathLike) -> nn.Module:
    """pytorch-fid's ``InceptionV3([3])`` (the FID Inception) with ``pt_inception-2015-12-05.pth``
    from ``folder`` in place of its URL download."""
    from unittest import mock

    from pytorch_fid import inception

    state = _load_state(_weights_file(Path(folder), INCEPTION_FILE))

    def local_weights(url, *args, **kwargs):
        if url != inception.FID_WEIGHTS_URL:
            raise RuntimeError(f"pytorch-fid asked for {url!r}, expected its FID weights URL")
        return state

    # fid_inception_v3() builds the network and then calls load_state_dict_from_url (a module
    # global); swapping that one name for the duration of the build is the only change.
    try:
        with mock.patch.object(inception, "load_state_dict_from_url", local_weights):
            net = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], use_fid_inception=True)
    except RuntimeError as exc:
        raise InputError(f"{INCEPTION_FILE} in {str(folder)!r} does not fit pytorch-fid's Inception: {exc}; "
                         f"{HOW_TO_GET}") from None
    return net.eval()


def load_fid_inception(folder: Path | None, device: torch.device) -> nn.Module | None:
    """The FID Inception on ``device`` from local weights, else by pytorch-fid's download, else
    None (with a :class:`MetricWeightsWarning`)."""

    def download(inception) -> nn.Module:
        return inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], use_fid_inception=True)

    return _load_net("FID", folder, device, package="pytorch_fid.inception", local=build_fid_inception_local,
                     download=download, what="pytorch-fid", download_of="Inception")


def _load_net(metric: str, folder: Path | None, device: torch.device, *, package: str, local, download,
              what: str, download_of: str) -> nn.Module | None:
    """The network of ``metric``: ``local(folder)``, else ``download(package module)``; None with a
    :class:`MetricWeightsWarning` when ``package`` is missing or the download fails."""
    import importlib

    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        _unavailable(metric, f"{what} is not installed ({exc}; pip install 'rsisr[eval]')")
        return None
    if folder is not None:
        return local(folder).to(device)
    try:
        net = download(module)
    except Exception as exc:  # offline: URLError, OSError, RuntimeError from torch.hub
        _unavailable(metric, f"no local weights and the {download_of} download failed ({type(exc).__name__}: {exc})")
        return None
    return net.eval().requires_grad_(False).to(device)


@torch.no_grad()
def inception_features(net: nn.Module, images: torch.Tensor) -> np.ndarray:
    """Pool3 features of (B, 3, H, W) images in [0, 255]: (B, 2048) float64.

    The images go in as [0, 1]; pytorch-fid's InceptionV3 resizes them to 299x299 (bilinear) and
    scales them to [-1, 1] itself, as in its ``fid_score`` (which reads PNGs with ToTensor).
    """
    device = next(net.parameters()).device
    x = images.to(device, torch.float32) / 255.0
    pooled = net(x)[0]
    return pooled.squeeze(3).squeeze(2).double().cpu().numpy()


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two sets of (N, 2048) features: pytorch-fid's statistics (mean, np.cov with
    rowvar=False) and its ``calculate_frechet_distance``. Needs N >= 2 in both sets."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    for name, feats in (("first", features_a), ("second", features_b)):
        if feats.ndim != 2 or feats.shape[0] < 2:
            raise InputError(f"FID needs at least 2 images per set; the {name} set has shape {feats.shape}")
    mu_a, sigma_a = np.mean(features_a, axis=0), np.cov(features_a, rowvar=False)
    mu_b, sigma_b = np.mean(features_b, axis=0), np.cov(features_b, rowvar=False)
    printed = io.StringIO()
    # With fewer images than feature dimensions (2048) the covariances are singular: expected, and
    # pytorch-fid's sqrtm says so with a LinAlgWarning (and prints when it regularises).
    with contextlib.redirect_stdout(printed), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*singular.*")
        value = calculate_frechet_distance(mu_a, sigma_a, mu_b, sigma_b)
    if printed.getvalue().strip():
        log.debug("pytorch-fid: %s", printed.getvalue().strip())
    return float(value)
