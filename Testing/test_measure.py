"""Measurements against the generators' ground truth: heart volume in mL from the CT generator,
LV area and ED/ES frames from the echo generator's motion model."""
import numpy as np
import pytest

from Training import ct, echo
from Training.measure import area_per_frame_mm2, ed_es_frames, volume_ml


def test_heart_volume_in_ml_matches_the_generator():
    _, mask, info = ct.generate_ct(3, shape=(48, 128, 128))
    ml = volume_ml(mask, info["spacing"])
    assert ml == pytest.approx(info["heart_ml"], rel=0.05)
    assert 250 < ml < 1500


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lv_area_curve_finds_the_motion_models_ed_and_es(seed):
    _, labels, info = echo.generate_clip(seed, n_frames=16, size=(128, 128))
    area = area_per_frame_mm2(labels, info["pixel_spacing_mm"])
    assert np.allclose(area, info["lv_area_px"] * np.prod(info["pixel_spacing_mm"]))
    ed, es = ed_es_frames(area)
    assert area[ed] >= area[info["ed_frame"]] and area[es] <= area[info["es_frame"]]
    assert area[info["ed_frame"]] >= 0.995 * area[ed] and area[info["es_frame"]] <= 1.005 * area[es]
    assert area[ed] > 1.2 * area[es]


def test_measurements_refuse_what_they_cannot_measure():
    with pytest.raises(ValueError, match="no LV was found"):
        ed_es_frames([0, 0, 0])
    with pytest.raises(ValueError, match="same in every frame"):
        ed_es_frames([5, 5, 5])
    with pytest.raises(ValueError, match="3D label map"):
        volume_ml(np.zeros((4, 4), np.uint8), (1, 1))
    assert volume_ml(np.ones((10, 10, 10), np.uint8), (1.0, 2.0, 0.5)) == pytest.approx(1.0)
