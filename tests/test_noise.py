import numpy as np

from rsisr.noise import scene_noise


def test_windows_of_the_field_agree():
    whole = scene_noise(42, 4, 0, 0, 40, 50)
    part = scene_noise(42, 4, 13, 7, 10, 20)
    assert np.array_equal(whole[:, 13:23, 7:27], part)


def test_seed_and_step_change_the_field_and_it_is_gaussian():
    a = scene_noise(1, 4, 0, 0, 64, 64)
    assert not np.array_equal(a, scene_noise(2, 4, 0, 0, 64, 64))
    assert not np.array_equal(a, scene_noise(1, 4, 0, 0, 64, 64, step=1))
    big = scene_noise(3, 4, -100, 5000, 128, 128)
    assert abs(big.mean()) < 0.02 and abs(big.std() - 1) < 0.02
    assert big.dtype == np.float32 and np.isfinite(big).all()
    # neighbouring pixels are uncorrelated
    assert abs(np.corrcoef(big[0, :, :-1].ravel(), big[0, :, 1:].ravel())[0, 1]) < 0.03
