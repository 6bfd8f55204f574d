"""The heart-ct stress suite (``Training.stress_ct``): CT volumes unlike the generator's, never
trained on; reproducible per seed, in HU with air, a whole-heart label inside the body, and
`cardioseg score --task heart-ct --suite stress`."""

import numpy as np
import pytest

from Training.stress_ct import KINDS, stress_volume
from Training.tasks import AIR_HU, check_ct, get_task
from conftest import score_stress_output

SEED = 1_000_000_000


@pytest.fixture(scope="module")
def tiny_ct_model(tmp_path_factory):
    """A tiny untrained heart-ct model (64x64, CT window, LPS slices), seeded."""
    import torch

    from Training.modelfile import ModelSpec, save_model

    torch.manual_seed(0)
    task = get_task("heart-ct")
    spec = ModelSpec(task="heart-ct", architecture="unet-resnet18",
                     architecture_args={"decoder_channels": [16, 16, 16, 16, 16]}, in_channels=1,
                     classes=list(task.classes),
                     preprocessing={"size": [64, 64], "intensity": {"method": "window", "lower": -200, "upper": 400},
                                    "threshold": 0.5, "orientation": "LPS"})
    return save_model(tmp_path_factory.mktemp("model") / "heart_ct_tiny.safetensors", spec.build(), spec)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_is_a_reproducible_ct_with_a_heart_inside_the_body(kind):
    vol, mask, info = stress_volume(SEED + 3, 64, kind)
    again, again_mask, _ = stress_volume(SEED + 3, 64, kind)
    assert np.array_equal(vol, again) and np.array_equal(mask, again_mask)
    assert vol.dtype == np.float32 and mask.dtype == np.uint8 and vol.shape == mask.shape
    assert 24 <= vol.shape[0] <= 40 and vol.shape[1:] == (64, 64)
    assert np.isfinite(vol).all() and vol.max() <= 3071 and vol.min() >= -3024
    dz, dy, dx = info["spacing"]
    assert 2.5 <= dz <= 7.0 and dy == dx and 0.5 < dx < 8
    check_ct(vol)  # the task's own input check passes: air below AIR_HU
    if kind == "8bit-windowed":
        assert len(np.unique(vol)) <= 256
        assert vol.min() <= AIR_HU and vol.max() < 500  # clipped to the window
    else:
        assert vol.min() <= -800  # air or lung
    assert mask.any() and set(np.unique(mask)) <= {0, 1}
    assert 0.001 < mask.mean() < 0.3
    # the heart is inside the body: soft tissue or blood around its voxels (median in HU)
    assert -50 < np.median(vol[mask > 0]) < 500
    assert info["phase"] in ("non-contrast", "arterial", "venous")


def test_phases_kinds_and_8bit_windows_have_their_values():
    hu = {}
    for k in ("non-contrast", "arterial"):
        vol, mask, _ = stress_volume(SEED, 96, k)
        hu[k] = np.median(vol[mask > 0])
    assert hu["non-contrast"] < 80 < hu["arterial"]
    vol, _, info = stress_volume(SEED, 64, "8bit-windowed")
    w, lvl = info["window"]
    lo, hi = lvl - w / 2, lvl + w / 2
    assert abs(vol.min() - lo) < 1e-3 and vol.max() <= hi + 1e-3 and lo <= -120
    q = (vol - lo) / (w / 255)  # the 8-bit grey values
    assert np.allclose(q, np.round(q), atol=1e-3) and q.min() > -1e-3 and q.max() < 255 + 1e-3
    metal, _, minfo = stress_volume(SEED, 64, "metal")
    assert metal.max() == 3071 and minfo["metal_parts"]


def test_stress_renderer_uses_no_generator_code():
    import Training.stress_ct as s

    text = open(s.__file__).read()
    for imported in ("from .ct ", "from . import ct", "from Training.ct ", "import Training.ct",
                     "from Training import ct"):
        assert imported not in text


def test_score_heart_ct_stress_prints_every_kind_and_the_mean(tiny_ct_model, capsys):
    assert get_task("heart-ct").stress == "Training.stress_ct"
    score_stress_output(capsys, "heart-ct", tiny_ct_model)
