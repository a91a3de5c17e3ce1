"""The rules training and evaluation share (rsisr.imageops): the degradation, the 8-bit rounding
and the image lister."""

from __future__ import annotations

import pytest
import torch

from rsisr.errors import InputError
from rsisr.imageops import bicubic_down, degrade, list_images, to_8bit


def test_degrade_is_antialiased_bicubic_down_clamped():
    hr = torch.rand(2, 3, 32, 32) * 2.4 - 1.2
    lr = degrade(hr)
    assert lr.shape == (2, 3, 8, 8)
    assert torch.equal(lr, bicubic_down(hr, 4).clamp(-1, 1))


def test_to_8bit_rounds_as_an_8_bit_file_holds_values():
    """Clipped to [0, 255] and rounded half to even in float64, on the CPU, as float32."""
    k = torch.arange(256, dtype=torch.float64)
    x = (k / 255.0 * 2.0 - 1.0).float()  # every 8-bit value in model range
    assert torch.equal(to_8bit(x), k.float())
    y = to_8bit(torch.tensor([-3.0, 3.0, (0.5 / 255) * 2 - 1, (2.5 / 255) * 2 - 1]))
    assert y.dtype == torch.float32 and y.tolist() == [0.0, 255.0, 0.0, 2.0]


def test_list_images_searches_subfolders_and_sorts_by_path(tmp_path):
    for name in ("b.png", "a.JPG", "sub/c.tif", "sub/deeper/d.png", "notes.txt", "sub/x.webp"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "folder.png").mkdir()  # a folder named like an image is not one
    found = list_images(tmp_path, (".png", ".jpg", ".tif"))
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a.JPG", "b.png", "sub/c.tif", "sub/deeper/d.png"]


def test_list_images_names_what_is_missing(tmp_path):
    with pytest.raises(InputError, match=r"--data '.*nope' does not exist or is not a folder"):
        list_images(tmp_path / "nope", (".png",), "--data")
    (tmp_path / "a.txt").write_text("")
    with pytest.raises(InputError, match=r"data folder '.*' holds no images \(\.png\)"):
        list_images(tmp_path, (".png",), "data folder")
