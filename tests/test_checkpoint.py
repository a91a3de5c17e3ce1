import json

import pytest
import torch

import rsisr
from rsisr.checkpoint import load_autoencoder, read_metadata
from rsisr.errors import CheckpointError, RsisrError


def test_round_trip_is_bit_exact(tmp_path, tiny_model):
    tiny_model.scale_factor.fill_(0.37)
    path = rsisr.save_model(tiny_model, tmp_path / "m.safetensors")
    loaded = rsisr.load_model(path)
    assert loaded.config == tiny_model.config
    a, b = tiny_model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    meta = read_metadata(path)
    assert meta["format"] == "rsisr" and meta["kind"] == "lcmsr"
    assert json.loads(meta["config"])["preset"] == "tiny"
    lr = torch.rand(1, 3, 16, 16) * 2 - 1
    noises = tiny_model.make_noises(lr.shape, 1, seed=0)
    with torch.no_grad():
        assert torch.equal(tiny_model(lr, noises), loaded(lr, noises))


def test_autoencoder_round_trip_and_kind_check(tmp_path):
    ae = rsisr.build_autoencoder("tiny")
    path = rsisr.save_model(ae, tmp_path / "ae.safetensors")
    loaded = load_autoencoder(path)
    assert loaded.full_config.preset == "tiny"
    with pytest.raises(CheckpointError, match="autoencoder model"):
        rsisr.load_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        rsisr.load_model(tmp_path / "nope.safetensors")


def test_truncated_file(tmp_path, tiny_model_file):
    data = tiny_model_file.read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        rsisr.load_model(bad)


def test_foreign_files(tmp_path):
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not an rsisr model"):
        rsisr.load_model(foreign)
    pickle = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(3)}, pickle)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        rsisr.load_model(pickle)


def test_mismatched_config(tmp_path, tiny_model):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in tiny_model.state_dict().items()}
    meta = {"format": "rsisr", "format_version": "1", "kind": "lcmsr",
            "config": rsisr.PRESETS["tiny"].replace({"unet.ch": 16}).to_json()}
    path = tmp_path / "mismatch.safetensors"
    save_file(state, path, metadata=meta)
    with pytest.raises(CheckpointError, match="does not match its config"):
        rsisr.load_model(path)
    meta["format_version"] = "99"
    save_file(state, path, metadata=meta)
    with pytest.raises(RsisrError, match="format version"):
        rsisr.load_model(path)


def test_compiled_wrapper_saves_plain_keys(tmp_path, tiny_model):
    class Wrapper(torch.nn.Module):  # what torch.compile returns exposes _orig_mod
        def __init__(self, m):
            super().__init__()
            self._orig_mod = m

    path = rsisr.save_model(Wrapper(tiny_model), tmp_path / "w.safetensors")
    assert set(rsisr.load_model(path).state_dict()) == set(tiny_model.state_dict())


def test_saved_file_has_ordinary_permissions(tmp_path, tiny_model):
    import os

    umask = os.umask(0o022)
    try:
        path = rsisr.save_model(tiny_model, tmp_path / "perm.safetensors")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644
