"""The synthetic laparoscopy generator: API, determinism, exact instrument masks, video, smoke."""
import numpy as np
import pytest
from scipy import ndimage

from Training import endoscopy
from Training.fluoro import HELD_OUT_SEED_BASE

SEEDS = [HELD_OUT_SEED_BASE + 700 + k for k in range(12)]


@pytest.fixture(scope="module")
def videos():
    """(frames, masks, info) of 12 short standard videos."""
    return [endoscopy._video(s, 6, (128, 160), "standard") for s in SEEDS]


def _saturation(frame):
    return (frame.max(-1) - frame.min(-1)) / (frame.max(-1) + 1.0)


def test_shapes_types_ranges_and_determinism():
    f1, m1 = endoscopy.generate_video(7, n_frames=3, size=(97, 130))
    f2, m2 = endoscopy.generate_video(7, n_frames=3, size=(97, 130))
    assert f1.shape == (3, 97, 130, 3) and m1.shape == (3, 97, 130)
    assert f1.dtype == np.float32 and m1.dtype == np.uint8
    assert f1.min() >= 0 and f1.max() <= 255 and f1.max() > 100
    assert set(np.unique(m1)) <= {0, 1}
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(m1, m2)
    frame, mask = endoscopy.generate_frame(7, size=(97, 130))
    assert frame.shape == (97, 130, 3) and mask.shape == (97, 130)
    assert frame.dtype == np.float32 and mask.dtype == np.uint8
    np.testing.assert_array_equal(frame, endoscopy.generate_frame(7, size=(97, 130))[0])
    np.testing.assert_array_equal(frame, endoscopy.generate_video(7, n_frames=1, size=(97, 130))[0][0])
    assert endoscopy.KINDS == ("standard", "smoke", "randomised")


def test_different_seeds_differ():
    frames = [endoscopy.generate_frame(s, size=(96, 96)) for s in range(8)]
    for (fa, ma), (fb, mb) in zip(frames, frames[1:]):
        assert np.abs(fa - fb).mean() > 5
        assert (ma != mb).any() or not ma.any()
    assert len({round(float(f.mean()), 3) for f, _ in frames}) == len(frames)


def test_unknown_kind_raises():
    with pytest.raises(ValueError, match="standard.*smoke"):
        endoscopy.generate_video(1, kind="fog")
    with pytest.raises(ValueError, match="smoke"):
        endoscopy.generate_frame(1, kind="")


def test_mask_is_the_drawn_instrument(videos):
    """Instrument pixels are grey (less saturated than the tissue just around them) and the mask
    outline lies on strong colour edges."""
    checked = grey = edged = 0
    for frames, masks, info in videos:
        for frame, mask in zip(frames, masks.astype(bool)):
            if mask.sum() < 40:
                continue
            checked += 1
            sat = _saturation(frame)
            ring = ndimage.binary_dilation(mask, iterations=4) & ~ndimage.binary_dilation(mask) & info["fov"]
            grey += sat[mask].mean() < sat[ring].mean() - 0.1
            lum = frame.mean(-1)
            grad = np.hypot(ndimage.sobel(lum, 0), ndimage.sobel(lum, 1))
            outline = (ndimage.binary_dilation(mask) ^ ndimage.binary_erosion(mask)) & ndimage.binary_erosion(
                info["fov"], iterations=2)
            edged += grad[outline].mean() > 2 * grad[info["fov"]].mean()
    assert checked >= 40
    assert grey / checked > 0.9
    assert edged / checked > 0.8


def test_every_instrument_enters_from_the_border(videos):
    n = 0
    for _, masks, info in videos:
        fov = info["fov"]
        edge = np.zeros_like(fov)
        edge[[0, -1], :] = edge[:, [0, -1]] = True
        edge |= fov & ~ndimage.binary_erosion(fov)  # the rim of a circular field of view
        for mask in masks:
            lab, k = ndimage.label(mask, structure=np.ones((3, 3)))
            for i in range(1, k + 1):
                assert (edge & (lab == i)).any(), "an instrument floats inside the frame"
            assert not (mask & ~fov).any()
            n += k
    assert n >= 40


def test_video_is_coherent_and_moves(videos):
    within, across, iou, moved = [], [], [], 0
    for (frames, masks, _), (other, _, _) in zip(videos, videos[1:] + videos[:1]):
        within += [np.abs(frames[t + 1] - frames[t]).mean() for t in range(len(frames) - 1)]
        across += [np.abs(other[t] - frames[t]).mean() for t in range(len(frames))]
        for a, b in zip(masks[:-1].astype(bool), masks[1:].astype(bool)):
            if a.any() and b.any():
                iou.append((a & b).sum() / (a | b).sum())
                moved += (a != b).any()
    assert np.median(within) < 0.5 * np.median(across)
    assert min(within) > 0  # the camera, the instruments or the noise change every frame
    assert np.median(iou) > 0.5  # instruments move smoothly...
    assert moved / len(iou) > 0.8  # ...but they do move


def test_smoke_lowers_contrast_of_the_same_scene():
    def rms_contrast(frame, fov):  # std / mean of the luminance in the field of view
        lum = frame.mean(-1)[fov]
        return lum.std() / (lum.mean() + 1)

    def tool_contrast(frame, mask, fov):  # instrument vs tissue mean luminance (Michelson)
        lum, mask = frame.mean(-1), mask.astype(bool)
        a, b = lum[mask].mean(), lum[fov & ~mask].mean()
        return abs(a - b) / (a + b + 1)

    ratios = []
    for seed in SEEDS:
        f_std, m_std, info = endoscopy._video(seed, 2, (96, 112), "standard")
        f_smk, m_smk, _ = endoscopy._video(seed, 2, (96, 112), "smoke")
        np.testing.assert_array_equal(m_std, m_smk)  # same scene, same instruments
        fov = info["fov"]
        for a, b, m in zip(f_std, f_smk, m_std):
            assert rms_contrast(b, fov) < 0.8 * rms_contrast(a, fov)
            assert _saturation(b)[fov].mean() < _saturation(a)[fov].mean()
            if m.sum() >= 20:
                ratios.append(tool_contrast(b, m, fov) / tool_contrast(a, m, fov))
    assert len(ratios) >= 10 and np.median(ratios) < 0.6


def test_instrument_frequency_and_coverage():
    cover = np.array([endoscopy.generate_frame(s, size=(96, 96))[1].mean() for s in range(100)])
    present = cover > 0
    assert 0.75 <= present.mean() <= 0.97  # mostly one or more instruments, sometimes none
    assert 0.03 <= cover[present].mean() <= 0.25
    assert np.percentile(cover[present], 90) < 0.4
