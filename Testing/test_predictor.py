"""The predictor's contracts: shapes, bad input, progress and cancel, clean-up."""
import threading

import numpy as np
import pytest
import torch

from Training import fluoro
from Training.predictor import Cancelled, InputError, Predictor, _connected_keep_largest, check_frames
from Training.tasks import get_task


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return Predictor(tiny_model, task="catheter", batch=2)


@pytest.mark.parametrize(
    "frames, message",
    [
        (np.zeros((2, 3, 32, 32), np.float32) + np.arange(32), "4 dimensions"),
        (np.random.rand(2, 32, 32, 3), "colour"),
        (np.zeros((0, 32, 32), np.float32), "empty"),
        (np.full((2, 32, 32), 7.0, np.float32), "constant"),
        (np.where(np.eye(32) > 0, np.nan, 1.0)[None], "NaN"),
        (np.random.rand(2, 8, 8), "too small"),
        (np.array([["a"]]), "pixel type"),
    ],
)
def test_bad_input_names_the_problem(tiny, frames, message):
    with pytest.raises(InputError, match=message):
        tiny.predict(frames)


def test_any_frame_size_maps_back_to_the_input_grid(tiny):
    frames = np.random.default_rng(0).random((3, 100, 140)).astype(np.float32)
    out = tiny.predict(frames)
    assert out.shape == (3, 100, 140) and out.dtype == np.uint8
    assert tiny.predict(frames[0]).shape == (1, 100, 140)  # a 2D frame is one frame


def test_progress_and_cancel(tiny):
    frames = np.random.default_rng(1).random((5, 64, 64)).astype(np.float32)
    calls = []
    tiny.predict(frames, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(2, 5), (4, 5), (5, 5)]
    stop = threading.Event()
    seen = []

    def progress(done, total):
        seen.append(done)
        stop.set()

    with pytest.raises(Cancelled, match="after 2 of 5"):
        tiny.predict(frames, progress=progress, cancel=stop)
    assert seen == [2]


def test_keep_largest_components():
    mask = np.zeros((40, 40), bool)
    mask[2:4, 2:30] = True  # 56 px
    mask[10:12, 2:10] = True  # 16 px
    mask[20:21, 20:22] = True  # 2 px
    kept = _connected_keep_largest(mask, 1)
    assert kept.sum() == 56
    assert _connected_keep_largest(mask, 2).sum() == 72


def test_check_frames_passes_good_frames_unchanged():
    a = np.random.rand(2, 32, 32).astype(np.float32)
    assert check_frames(a) is not None and check_frames(a).shape == (2, 32, 32)


def test_bundled_model_finds_catheters_on_unseen_runs():
    """A small sample of the held-out score; `cardioseg score` reports the full one."""
    p = Predictor(get_task("catheter").bundled_model, task="catheter")
    inter = total = 0
    for seed in (fluoro.HELD_OUT_SEED_BASE + 100, fluoro.HELD_OUT_SEED_BASE + 101):
        x, y = fluoro.generate_run(seed, n_frames=4)
        pred = p.predict(x) > 0
        inter += np.logical_and(pred, y > 0).sum()
        total += pred.sum() + (y > 0).sum()
    assert 2 * inter / total > 0.8


def test_tile_mode_covers_large_frames_at_native_resolution(tiny_model, tmp_path):
    from Training.modelfile import load_model, save_model

    model, spec = load_model(tiny_model)
    spec.preprocessing = {**spec.preprocessing, "mode": "tile"}
    tiled_path = tmp_path / "tiled.safetensors"
    save_model(tiled_path, model, spec)
    resized = Predictor(tiny_model, batch=2, precision="fp32")
    tiled = Predictor(tiled_path, batch=2, precision="fp32")
    frames = np.random.default_rng(3).random((2, 64, 64)).astype(np.float32)
    # one tile the size of the model input: tiling and resizing see the same pixels
    assert np.array_equal(tiled.predict(frames), resized.predict(frames))
    big = np.random.default_rng(4).random((2, 150, 130)).astype(np.float32)
    assert tiled.predict(big).shape == (2, 150, 130)
    spec.preprocessing["mode"] = "crop"
    save_model(tiled_path, model, spec)
    with pytest.raises(InputError, match="'crop' is not"):
        Predictor(tiled_path)


def test_window_normalisation_maps_hounsfield_units_to_0_1():
    from Training.preprocess import normalize_intensity

    hu = torch.tensor([-1000.0, -200.0, 100.0, 400.0, 3000.0]).view(1, 1, 1, 5)
    out = normalize_intensity(hu, {"method": "window", "lower": -200, "upper": 400})
    assert torch.allclose(out.flatten(), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    with pytest.raises(ValueError, match="unknown intensity normalisation"):
        normalize_intensity(hu, {"method": "zscore"})


def test_frame_uncertainty_is_low_where_sure_and_high_where_doubt_outweighs_the_labels():
    from Training.predictor import frame_uncertainty

    sure = torch.full((1, 1, 32, 32), -12.0)
    sure[..., 10:20, 10:20] = 12.0  # a confident square
    empty = torch.full((1, 1, 32, 32), -12.0)  # confidently nothing
    missed = empty.clone()
    missed[..., 5:25, 5:25] = -0.5  # a faint structure just under the threshold
    half = sure.clone()
    half[..., 10:20, 15:20] = 0.3  # half the square barely over it
    u = frame_uncertainty(torch.cat([sure, empty, missed, half]))
    assert u[0] < 0.01 and u[1] < 0.01
    assert u[2] > 0.9  # doubt over 400 pixels, none labelled
    assert 0.2 < u[3] < 0.6
    # several classes: the same for softmax logits
    three = torch.zeros((2, 3, 16, 16))
    three[0, 0] = 10.0
    three[0, 1, 4:8, 4:8] = 20.0
    three[1] = torch.randn(3, 16, 16) * 0.1  # a coin toss everywhere
    u3 = frame_uncertainty(three)
    assert u3[0] < 0.01 and u3[1] > 0.5


def test_predict_reports_one_uncertainty_per_frame_that_tracks_errors():
    """On held-out runs, the model's least certain frames are among its worst."""
    p = Predictor(get_task("catheter").bundled_model, task="catheter")
    x, y = fluoro.generate_run(fluoro.HELD_OUT_SEED_BASE + 7, n_frames=6)
    noisy = x.copy()
    noisy[3:] += np.random.default_rng(0).normal(0, 3 * x.std(), x[3:].shape).astype(np.float32)  # a ruined half
    pred = p.predict(noisy)
    u = np.array(p.stats["uncertainty"])
    assert u.shape == (6,) and np.all((u >= 0) & (u <= 1))
    dice = [2 * ((pred[k] > 0) & (y[k] > 0)).sum() / max((pred[k] > 0).sum() + (y[k] > 0).sum(), 1) for k in range(6)]
    assert min(u[3:]) > max(u[:3]), (u, dice)
    assert max(dice[3:]) < min(dice[:3])
