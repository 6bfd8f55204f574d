"""The catheter stress suite (images unlike the generator's, never trained on), the real
radiographs' split, the randomised generator kind and its display, and `cardioseg score --suite stress`."""
from dataclasses import replace

import numpy as np
import pytest

from Training import realxray, xraylook
from Training.cli import main
from Training.fluoro import generate_run
from Training.stress_catheter import KINDS, NEGATIVE_KINDS, stress_run
from Training.tasks import TASKS, get_task
from conftest import score_stress_output


@pytest.mark.parametrize("kind", KINDS)
def test_every_stress_kind_is_reproducible_with_masks_where_devices_are(kind):
    frames, masks = stress_run(7, 2, (128, 128), kind)
    again, again_masks = stress_run(7, 2, (128, 128), kind)
    assert np.array_equal(frames, again) and np.array_equal(masks, again_masks)
    assert frames.shape == masks.shape and frames.dtype == np.float32 and masks.dtype == np.uint8
    assert np.isfinite(frames).all() and frames.min() >= 0
    if kind in NEGATIVE_KINDS:
        assert not masks.any()
    else:
        assert 0 < masks.mean() < 0.2
    if kind == "guidewire-1024":
        assert frames.shape[1:] == (1024, 1024)
        assert masks.mean() < 0.01  # wires below one pixel in radius
    if kind == "linear-8bit":
        assert frames.max() <= 255


def test_stress_radiographs_are_never_training_backgrounds_and_carry_no_device():
    held, train = set(realxray.held_out()), set(realxray.backgrounds())
    assert held and train and not held & train
    assert not (held | train) & realxray.WITH_DEVICES
    assert len(held | train | realxray.WITH_DEVICES) == len(list(realxray.FOLDER.glob("nih_*.png")))
    assert (realxray.FOLDER.parent / "SOURCES.md").read_text().count("NIH ChestX-ray14") > 3


def test_display_polarity_bit_depth_and_jpeg():
    counts = np.ones((64, 64), np.float32)
    counts[20:40, 20:40] = 0.2  # an attenuating square: fewer counts
    base = dict(window=(0, 100), gamma=1.0, gain=1.0, jpeg=0, lowres=1.0, shutters=[], shutter_level=0.1,
                shutter_width=np.full(4, 0.1), round=False, marks=0, marks_seed=0)
    for log in (True, False):
        for bright in (True, False):
            for bits in (8, 16):
                shown = xraylook.display(counts, dict(base, log=log, bright=bright, bits=bits))
                inside, outside = shown[30, 30], shown[5, 5]
                assert (inside > outside) == bright, (log, bright)
                assert shown.max() == 2**bits - 1
    jpeg = xraylook.display(counts, dict(base, log=False, bright=False, bits=8, jpeg=30))
    assert jpeg.max() <= 255 and not np.array_equal(jpeg, xraylook.display(counts, dict(base, log=False, bright=False, bits=8)))


def test_randomised_runs_keep_the_standard_devices_and_vary_the_look():
    tops = set()
    for seed in range(12):
        frames, masks = generate_run(seed, 1, (96, 96), "randomised")
        _, standard_masks = generate_run(seed, 1, (96, 96), "standard")
        if masks.any():  # same devices, 0.5-1.5 times as thick; none on some real backgrounds
            inter = np.logical_and(masks, standard_masks).sum()
            assert inter >= 0.5 * min(masks.sum(), standard_masks.sum())
        tops.add(int(np.ceil(np.log2(frames.max() + 1))))
    assert len(tops) >= 2  # several bit depths


def test_score_stress_prints_every_kind_the_worst_and_the_mean(tiny_model, capsys):
    score_stress_output(capsys, "catheter", tiny_model)


def test_score_stress_refuses_an_unknown_kind_and_a_task_without_a_suite(tiny_model, capsys, monkeypatch):
    assert main(["score", "--task", "catheter", "--model", str(tiny_model), "--suite", "stress", "--kind", "bogus"]) == 2
    assert "no stress kind 'bogus'" in capsys.readouterr().err
    monkeypatch.setitem(TASKS, "catheter", replace(get_task("catheter"), stress=""))
    assert main(["score", "--task", "catheter", "--model", str(tiny_model), "--suite", "stress", "--runs", "1"]) == 2
    assert "has no stress suite" in capsys.readouterr().err


def test_the_model_card_records_the_stress_suite(tiny_model, tmp_path):
    model = tmp_path / "m.safetensors"
    model.write_bytes(tiny_model.read_bytes())
    assert main(["card", str(model), "--runs", "1", "--frames", "1", "--size", "64", "--stress-runs", "1"]) == 0
    card = model.with_suffix(".md").read_text()
    assert "Held-out:" in card and "Stress suite" in card and "--suite stress --runs 1" in card
    for kind in KINDS:
        assert kind in card
    assert "stress mean Dice" in card
    assert main(["card", str(model), "--runs", "1", "--frames", "1", "--size", "64", "--stress-runs", "0"]) == 0
    assert "Stress suite" not in model.with_suffix(".md").read_text()


def test_a_negative_kind_alone_prints_the_labelled_share_and_no_mean(tiny_model, capsys):
    assert main(["score", "--task", "catheter", "--model", str(tiny_model), "--suite", "stress",
                 "--kind", "radiograph-device-free", "--runs", "1", "--frames", "1"]) == 0
    text = capsys.readouterr().out
    assert "% of pixels labelled" in text and "stress mean Dice" not in text and "nan" not in text.splitlines()[-1]
