"""The echo stress suite (apical clips from a renderer written apart from the training generator,
never trained on) and `cardioseg score --task echo --suite stress`."""

import numpy as np
import pytest
from scipy import ndimage

from Training.stress_echo import KINDS, stress_run
from Training.tasks import get_task

from conftest import score_stress_output, _tiny_model


@pytest.fixture(scope="module")
def tiny_echo_model(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    return _tiny_model(tmp_path_factory.mktemp("model") / "echo.safetensors", "echo", "unet-resnet18",
                       {"method": "window", "lower": 0, "upper": 255})


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_is_reproducible_grey_with_every_class_and_a_wall_around_the_cavity(kind):
    frames, labels = stress_run(7, 2, (96, 96), kind)
    again, again_labels = stress_run(7, 2, (96, 96), kind)
    assert np.array_equal(frames, again) and np.array_equal(labels, again_labels)
    assert frames.shape == labels.shape == (2, 96, 96)
    assert frames.dtype == np.float32 and labels.dtype == np.uint8
    assert frames.min() >= 0 and frames.max() <= 255 and np.array_equal(frames, np.rint(frames))
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    for t in range(2):
        for c in (1, 2, 3):
            assert (labels[t] == c).sum() > 20, (t, c)
        cav = labels[t] == 1
        ring = ndimage.binary_dilation(cav, iterations=2) & ~cav
        on_myo = (labels[t][ring] == 2).mean()
        assert on_myo > (0.45 if kind == "narrow-sector" else 0.65), on_myo  # the rest: LA at the mitral plane


def test_the_clip_moves_the_cavity_is_dark_and_the_wall_brighter():
    frames, labels = stress_run(3, 8, (128, 128), "renderer")
    area = (labels == 1).sum(axis=(1, 2))
    assert area.max() > 1.2 * area.min()  # the cavity shrinks in systole
    lv, myo = frames[labels == 1].mean(), frames[labels == 2].mean()
    assert lv < 0.6 * myo
    assert not np.array_equal(frames[0], frames[1])
    assert not np.array_equal(stress_run(4, 8, (128, 128), "renderer")[1], labels)  # another seed, another clip


def test_post_processing_kinds_degrade_the_renderer_clip_and_gains_move_the_grey():
    base, base_labels = stress_run(5, 2, (96, 96), "renderer")
    for kind in ("jpeg", "smoothed", "overlays", "low-res"):
        frames, labels = stress_run(5, 2, (96, 96), kind)
        assert np.array_equal(labels, base_labels), kind  # the same anatomy and scanner
        assert not np.array_equal(frames, base), kind
    bright, dark = stress_run(5, 2, (96, 96), "bright-gain")[0], stress_run(5, 2, (96, 96), "dark-gain")[0]
    assert dark.mean() < base.mean() < bright.mean()
    with pytest.raises(ValueError, match="unknown stress kind"):
        stress_run(5, 1, (64, 64), "bogus")


def test_the_echo_task_registers_the_suite():
    assert get_task("echo").stress_module().KINDS == KINDS


def test_score_stress_echo_prints_every_kind_and_the_mean(tiny_echo_model, capsys):
    _r, text = score_stress_output(capsys, "echo", tiny_echo_model)
    assert "LV endocardium" in text
