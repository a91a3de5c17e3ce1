"""LPIPS and FID built from local weight files, checked against the lpips and pytorch-fid packages.

The weights come from ``../shared/tools/metric-weights`` (it downloads three pinned PyPI
distributions, a few seconds). To compare with the *packages' own* code paths offline, the tests
fill a private torch hub cache (``TORCH_HOME``) with the files those packages would download:
torchvision's AlexNet (same values as ``alexnet_features.pth``, plus a classifier that LPIPS never
uses) and pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``. ``lpips.LPIPS(net='alex')`` then
runs unmodified with its own bundled v0.1 heads, and pytorch-fid's ``calculate_fid_given_paths``
unmodified end to end (reading PNG files itself).

FID itself is slow on a CPU (pytorch-fid's scipy ``sqrtm`` of a 2048x2048 matrix), so its test
is marked ``slow``; the Inception features are compared in the default run.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from rsisr.errors import InputError, MetricWeightsWarning
from rsisr.evaluation import perceptual




@pytest.fixture
def package_hub_cache(tmp_path, monkeypatch, metric_weights) -> Path:
    """A torch hub cache holding what torchvision and pytorch-fid would download."""
    import torchvision

    checkpoints = tmp_path / "torch-home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    features = torch.load(metric_weights / perceptual.ALEXNET_FILE, map_location="cpu", weights_only=True)
    full = torchvision.models.alexnet().state_dict()
    assert set(features) <= set(full)
    full.update(features)
    torch.save(full, checkpoints / "alexnet-owt-7be5be79.pth")
    (checkpoints / "pt_inception-2015-12-05-6726825d.pth").symlink_to(metric_weights / perceptual.INCEPTION_FILE)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return checkpoints



def _pair(h: int = 64, w: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    base = ((torch.sin(xx / 5.0) + torch.cos(yy / 3.0) + 2) / 4 * 255).expand(2, 3, h, w)
    a = (base + torch.randn(2, 3, h, w, generator=g) * 8).clamp(0, 255).round()
    b = (a + torch.randn(2, 3, h, w, generator=g) * 25).clamp(0, 255).round()
    return a, b


def _real_crops(shared_data: Path, names: list[str], size: int = 128) -> torch.Tensor:
    from PIL import Image

    crops = [np.asarray(Image.open(shared_data / "eval" / n).convert("RGB"))[:size, :size] for n in names]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()


def test_lpips_of_identical_images_is_zero_and_it_is_symmetric(metric_weights):
    net = perceptual.build_lpips_local(metric_weights)
    a, b = _pair()
    assert torch.all(perceptual.lpips_distance(net, a, a) == 0)
    ab, ba = perceptual.lpips_distance(net, a, b), perceptual.lpips_distance(net, b, a)
    assert ab.shape == (2,) and torch.all(ab > 0.01)
    torch.testing.assert_close(ab, ba, rtol=0, atol=1e-7)


def test_lpips_equals_the_lpips_packages_own_model(metric_weights, package_hub_cache, shared_data):
    import lpips

    ours = perceptual.build_lpips_local(metric_weights)
    theirs = lpips.LPIPS(net="alex", verbose=False)  # bundled heads, backbone via torchvision's hub cache
    a = _real_crops(shared_data, ["HARV_001.png", "OSBS_001.png"])
    b = _real_crops(shared_data, ["HARV_002.png", "OSBS_001.png"])
    b[1] = (b[1] + 20).clamp(0, 255)
    expected = theirs(a / 127.5 - 1, b / 127.5 - 1).flatten().double()
    got = perceptual.lpips_distance(ours, a, b)
    assert expected.min() > 0.01  # a real difference, not two zeros
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.slow  # three 2048x2048 matrix square roots (scipy sqrtm): 20 s to 90 s each on a 2-core CPU
def test_fid_features_and_distance_equal_pytorch_fid(metric_weights, package_hub_cache, shared_data, tmp_path):
    from PIL import Image
    from pytorch_fid.fid_score import calculate_fid_given_paths
    from pytorch_fid.inception import InceptionV3

    names = sorted(os.listdir(shared_data / "eval"))[:12]
    hr = _real_crops(shared_data, names)
    blurred = torch.nn.functional.avg_pool2d(hr, 3, stride=1, padding=1, count_include_pad=False).round()
    net = perceptual.build_fid_inception_local(metric_weights)
    feats_hr = perceptual.inception_features(net, hr)
    feats_blur = perceptual.inception_features(net, blurred)
    assert feats_hr.shape == (12, 2048)

    with torch.no_grad():
        theirs = InceptionV3([3]).eval()(hr / 255.0)[0].squeeze(3).squeeze(2).double().numpy()
    np.testing.assert_allclose(feats_hr, theirs, rtol=0, atol=1e-5)

    assert abs(perceptual.frechet_distance(feats_hr, feats_hr)) < 1e-3
    for folder, images in (("hr", hr), ("blur", blurred)):
        (tmp_path / folder).mkdir()
        for name, img in zip(names, images):
            Image.fromarray(img.permute(1, 2, 0).byte().numpy()).save(tmp_path / folder / name)
    expected = calculate_fid_given_paths([str(tmp_path / "blur"), str(tmp_path / "hr")], 4, "cpu", 2048, 0)
    got = perceptual.frechet_distance(feats_blur, feats_hr)
    assert expected > 1.0
    assert got == pytest.approx(expected, rel=1e-4)


def test_fid_inception_features_equal_pytorch_fids_own_network(metric_weights, package_hub_cache, shared_data):
    from pytorch_fid.inception import InceptionV3

    hr = _real_crops(shared_data, ["HARV_001.png", "SJER_002.png"], size=96)
    ours = perceptual.inception_features(perceptual.build_fid_inception_local(metric_weights), hr)
    with torch.no_grad():
        theirs = InceptionV3([3]).eval()(hr / 255.0)[0].squeeze(3).squeeze(2).double().numpy()
    assert ours.shape == (2, 2048) and np.abs(ours).max() > 0.1
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)


def test_frechet_distance_needs_two_images_per_set():
    with pytest.raises(InputError, match="at least 2 images"):
        perceptual.frechet_distance(np.zeros((1, 2048)), np.zeros((3, 2048)))


def test_without_weights_and_offline_both_metrics_are_unavailable_with_a_warning(offline):
    with pytest.warns(MetricWeightsWarning, match="LPIPS is reported as null"):
        assert perceptual.load_lpips(None, torch.device("cpu")) is None
    with pytest.warns(MetricWeightsWarning, match="FID is reported as null"):
        assert perceptual.load_fid_inception(None, torch.device("cpu")) is None


def test_local_weights_need_no_download(metric_weights, offline):
    """With a weights folder nothing is fetched: every download in this test raises."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", MetricWeightsWarning)
        assert perceptual.load_lpips(metric_weights, torch.device("cpu")) is not None
        assert perceptual.load_fid_inception(metric_weights, torch.device("cpu")) is not None


def test_weights_folder_from_the_environment_and_its_errors(tmp_path, monkeypatch, metric_weights):
    monkeypatch.delenv(perceptual.ENV_VAR, raising=False)
    assert perceptual.metric_weights_dir(None) is None
    monkeypatch.setenv(perceptual.ENV_VAR, str(metric_weights))
    assert perceptual.metric_weights_dir(None) == metric_weights
    assert perceptual.metric_weights_dir(tmp_path) == tmp_path  # the option wins over the variable
    monkeypatch.setenv(perceptual.ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(InputError, match=r"RSISR_METRIC_WEIGHTS.*does not exist"):
        perceptual.metric_weights_dir(None)
    with pytest.raises(InputError, match="has no alexnet_features.pth"):
        perceptual.build_lpips_local(tmp_path)
    with pytest.raises(InputError, match="has no pt_inception"):
        perceptual.build_fid_inception_local(tmp_path)
    (tmp_path / perceptual.INCEPTION_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read metric weights"):
        perceptual.build_fid_inception_local(tmp_path)


def test_lpips_vgg_levels(metric_weights):
    from rsisr.evaluation.perceptual import build_lpips_local

    full, three = build_lpips_local(metric_weights, "vgg"), build_lpips_local(metric_weights, "vgg", 3)
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    b = (a + 0.3 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    d_full, d_three = full(a, b).flatten(), three(a, b).flatten()
    assert (d_three > 0).all() and (d_three < d_full).all()  # fewer levels, fewer summed terms
    assert float(full(a, a).abs().max()) == 0.0
