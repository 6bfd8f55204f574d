"""The echo generator's "randomised" kind (domain randomisation), and that "standard" is unchanged."""
import hashlib

import numpy as np
import pytest

from Training import echo

SIZE = (128, 128)
SEEDS = range(900, 916)

# sha256 of frames + labels from the generator before the randomised kind was added
STANDARD = {
    (3, 3, (128, 128), None): "ee1e67ad0a695fad38640e7b4cf543098dc8b321c3d46b75feef0078b2556372",
    (11, 2, (160, 128), "4CH"): "38b48078afda98be49c50f57cdb54b5ec5ebb3026c8879c41b73511f3d75da9c",
    (1234, 1, (128, 160), "2CH"): "f8368bdba666e6415cf2d6f784551f1de5f6e8fee07feb05cc65a64b8848f68d",
}
STANDARD_TRAINING = "26e53bb438904e39c0671474d0705267055fb85d7dc39271d5c3c4c2c3c21e77"  # seeds 5, 6 at 128


def _sha(*arrays):
    return hashlib.sha256(b"".join(a.tobytes() for a in arrays)).hexdigest()


@pytest.fixture(scope="module")
def clips():
    """One frame of each seed, randomised: (frame, label, info)."""
    out = []
    for s in SEEDS:
        f, l, info = echo.generate_clip(s, n_frames=1, size=SIZE, kind="randomised")
        out.append((f[0], l[0], info))
    return out


def test_standard_is_bit_identical():
    for (seed, n, size, view), digest in STANDARD.items():
        f, l, _ = echo.generate_clip(seed, n_frames=n, size=size, view=view)
        assert _sha(f, l) == digest, (seed, n, size, view)
        f2, l2, _ = echo.generate_clip(seed, n_frames=n, size=size, view=view, kind="standard")
        assert _sha(f2, l2) == digest
    assert _sha(*echo.training_frames([5, 6], (128, 128))) == STANDARD_TRAINING


def test_kinds_and_plumbing():
    assert echo.KINDS == ("standard", "randomised")
    with pytest.raises(ValueError, match="kind"):
        echo.generate_clip(1, n_frames=1, size=(64, 64), kind="nope")
    x, y = echo.training_frames([900, 901], SIZE, kind="randomised")
    assert x.shape == y.shape == (2, *SIZE) and x.dtype == np.float32 and y.dtype == np.uint8
    f, l = echo.generate_frame(901, size=SIZE, kind="randomised")
    np.testing.assert_array_equal(x[1], f)
    np.testing.assert_array_equal(y[1], l)
    clip, labels, info = echo.sample_run(900, 2, SIZE, kind="randomised")
    f, l, _ = echo.generate_clip(900, n_frames=2, size=SIZE, kind="randomised")
    assert clip.dtype == np.uint8 and np.array_equal(clip, f.round().astype(np.uint8))
    np.testing.assert_array_equal(labels, l)
    assert len(info["spacing"]) == 3


def test_randomised_reproducible_same_anatomy_and_motion():
    a = echo.generate_clip(905, n_frames=2, size=SIZE, kind="randomised")
    b = echo.generate_clip(905, n_frames=2, size=SIZE, kind="randomised")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    std = echo.generate_clip(905, n_frames=2, size=SIZE)
    assert a[2]["view"] == std[2]["view"] and a[2]["mirrored"] == std[2]["mirrored"]
    np.testing.assert_array_equal(a[2]["contraction"], std[2]["contraction"])
    assert a[2]["kind"] == "randomised" and std[2]["kind"] == "standard" and std[2]["look"] is None


def test_randomised_labels_and_values(clips):
    present, darker = [], []
    for f, lab, info in clips:
        assert f.dtype == np.float32 and lab.dtype == np.uint8
        assert f.min() >= 0 and f.max() <= 255
        assert set(np.unique(lab)) <= {0, 1, 2, 3}
        present.append({1, 2, 3} <= set(np.unique(lab)))
        # the labels lie on the image's anatomy: LV blood darker than the myocardium
        darker.append(np.median(f[lab == 1]) < np.median(f[lab == 2]))
        # labels only inside the fan (apex, depth and sector of info)
        H, W = lab.shape
        dy, dx = info["pixel_spacing_mm"]
        r0, c0 = info["apex_px"]
        X, Y = (np.arange(W) - c0) * dx, (np.arange(H) - r0) * dy
        rr = np.hypot(X[None], Y[:, None])
        ang = np.degrees(np.abs(np.arctan2(X[None], Y[:, None])))
        outside = (rr > info["depth_mm"] + 1) | (ang > info["sector_deg"] / 2 + 1)
        assert lab[outside].max() == 0
    assert np.mean(present) >= 0.9
    assert np.mean(darker) >= 0.8


def test_randomised_varies(clips):
    sectors = [info["sector_deg"] for _, _, info in clips]
    assert min(sectors) >= 40 - 1e-6 and max(sectors) <= 110 + 1e-6
    assert len({int(s // 15) for s in sectors}) >= 3 and max(sectors) - min(sectors) > 35
    depths = [info["depth_mm"] for _, _, info in clips]
    assert max(depths) - min(depths) > 60
    # the LA's lowest row: sometimes at the bottom edge (or cut off), sometimes well above it
    low = [np.nonzero((lab == 3).any(1))[0].max() / lab.shape[0] for _, lab, _ in clips if (lab == 3).any()]
    assert min(low) < 0.75 and max(low) > 0.9
    # the display differs: mean grey and its spread
    means = [f[lab > 0].mean() for f, lab, _ in clips]
    assert max(means) - min(means) > 40
    stds = [info["pixel_spacing_mm"][1] / info["pixel_spacing_mm"][0] for _, _, info in clips]
    assert max(stds) / min(stds) > 1.2


def test_jpeg_changes_frames_not_labels(monkeypatch):
    seed = next(s for s in range(900, 960)
                if echo.generate_clip(s, n_frames=1, size=(64, 64), kind="randomised")[2]["look"]["jpeg"])
    f, l, info = echo.generate_clip(seed, n_frames=1, size=SIZE, kind="randomised")
    assert info["look"]["jpeg"]
    draw = echo._random_look

    def no_jpeg(rng, P):
        look = draw(rng, P)
        look["jpeg"] = None
        return look

    monkeypatch.setattr(echo, "_random_look", no_jpeg)
    f0, l0, _ = echo.generate_clip(seed, n_frames=1, size=SIZE, kind="randomised")
    np.testing.assert_array_equal(l, l0)
    diff = np.abs(f - f0).mean()
    assert 0.3 < diff < 25
    assert np.corrcoef(f.ravel(), f0.ravel())[0, 1] > 0.8
