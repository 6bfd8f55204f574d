"""The synthetic apical echo generator: determinism, CAMUS label geometry, cardiac motion, image."""
import numpy as np
import pytest
from scipy import ndimage

from Training import echo
from Training.fluoro import HELD_OUT_SEED_BASE

SEEDS = [HELD_OUT_SEED_BASE + 600 + k for k in range(6)]
T = 16


@pytest.fixture(scope="module")
def clips():
    """Three clips of each view, (frames, labels, info) each."""
    return [echo.generate_clip(s, n_frames=T, view=echo.VIEWS[k % 2]) for k, s in enumerate(SEEDS)]


def test_shapes_types_and_determinism():
    f1, l1, i1 = echo.generate_clip(7, n_frames=3, size=(128, 160))
    f2, l2, i2 = echo.generate_clip(7, n_frames=3, size=(128, 160))
    assert f1.shape == l1.shape == (3, 128, 160)
    assert f1.dtype == np.float32 and l1.dtype == np.uint8
    assert f1.min() >= 0 and f1.max() <= 255
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(l1, l2)
    assert i1["view"] == i2["view"] and i1["ed_frame"] == i2["ed_frame"]
    f3, l3, _ = echo.generate_clip(8, n_frames=3, size=(128, 160))
    assert np.abs(f1 - f3).mean() > 5 and (l1 != l3).mean() > 0.01
    frame, label = echo.generate_frame(7, size=(128, 160))
    assert frame.shape == label.shape == (128, 160)
    np.testing.assert_array_equal(frame, echo.generate_frame(7, size=(128, 160))[0])


def test_labels_and_classes_present(clips):
    present = []
    for _, labels, _ in clips:
        assert set(np.unique(labels)) <= {0, 1, 2, 3}
        present += [set(np.unique(lab)) == {0, 1, 2, 3} for lab in labels]
    assert np.mean(present) >= 0.9


def test_myocardium_surrounds_lv_except_at_the_base(clips):
    for _, labels, info in clips:
        for lab in labels[:: T // 4]:
            lv = lab == 1
            border = lv & ~ndimage.binary_erosion(lv)
            around = ndimage.binary_dilation(lab == 2, iterations=1)
            near_la = ndimage.binary_dilation(lab == 3, iterations=2)
            # the LV border touches myocardium everywhere except at the mitral plane (LA side)
            assert (border & around).sum() / border.sum() > 0.6
            assert (border & ~around & ~near_la).sum() / border.sum() < 0.1
            assert (border & ndimage.binary_dilation(lab == 3)).sum() >= 10  # open base: LV meets LA
            # the myocardium ends at the mitral plane (it does not wrap around the LA): its lowest
            # row is at most 6 mm below the LV's (the plane is tilted by up to 16 degrees)
            low = np.nonzero((lab == 2).any(1))[0].max() - np.nonzero(lv.any(1))[0].max()
            assert low * info["pixel_spacing_mm"][0] <= 6
            # the cavity is closed towards the apex: no LV pixel above the top of the myocardium
            assert np.nonzero(lv.any(1))[0].min() > np.nonzero((lab == 2).any(1))[0].min()


def test_la_below_lv(clips):
    for _, labels, _ in clips:
        for lab in labels:
            rows = np.arange(lab.shape[0])[:, None]
            lv_row = (rows * (lab == 1)).sum() / (lab == 1).sum()
            la_row = (rows * (lab == 3)).sum() / max((lab == 3).sum(), 1)
            apex = np.nonzero((lab == 1).any(1))[0].min()
            assert la_row > lv_row > apex  # the LA is further from the transducer (top) than the LV


def test_lv_area_curve_matches_ed_es(clips):
    for _, labels, info in clips:
        area = info["lv_area_px"]
        np.testing.assert_array_equal(area, (labels == 1).sum(axis=(1, 2)))
        ed, es = info["ed_frame"], info["es_frame"]
        assert area[ed] >= 0.995 * area.max() and area[es] <= 1.005 * area.min()
        assert area[ed] >= 1.2 * area[es]
        c = info["contraction"]
        assert c[ed] == c.min() and c[es] == c.max()
        # LV area falls as the contraction rises: the curve follows the motion model
        assert np.corrcoef(area, -c)[0, 1] > 0.95


def test_myocardium_thickens_and_mitral_plane_moves_to_apex(clips):
    for _, labels, info in clips:
        ed, es = labels[info["ed_frame"]], labels[info["es_frame"]]
        myo_ed, myo_es = (ed == 2).sum(), (es == 2).sum()
        assert 0.75 < myo_es / myo_ed < 1.3  # roughly conserved mass
        # mean wall thickness ~ myocardium area / LV border length grows in systole
        perim = [((x == 1) & ~ndimage.binary_erosion(x == 1)).sum() for x in (ed, es)]
        assert myo_es / perim[1] > 1.1 * myo_ed / perim[0]
        base_ed = np.nonzero((ed == 1).any(1))[0].max()
        base_es = np.nonzero((es == 1).any(1))[0].max()
        assert base_es < base_ed  # the base is closer to the transducer in systole
        assert (es == 3).sum() > (ed == 3).sum()  # the LA fills during systole


def test_views_random_and_forced():
    views = {echo.generate_clip(s, n_frames=1, size=(64, 64))[2]["view"] for s in range(12)}
    assert views == {"2CH", "4CH"}
    for v in echo.VIEWS:
        assert echo.generate_clip(3, n_frames=1, size=(64, 64), view=v)[2]["view"] == v
    with pytest.raises(ValueError, match="view"):
        echo.generate_clip(3, n_frames=1, view="PLAX")


def test_outside_fan_black_and_blood_darker_than_myocardium(clips):
    for frames, labels, info in clips:
        H, W = frames.shape[1:]
        dy, dx = info["pixel_spacing_mm"]
        X = (np.arange(W) - (W - 1) / 2) * dx
        Y = np.arange(H) * dy
        r = np.hypot(X[None], Y[:, None])
        ang = np.degrees(np.abs(np.arctan2(X[None], Y[:, None])))
        outside = (r > info["depth_mm"] + 1) | (ang > info["sector_deg"] / 2 + 1)
        assert outside.mean() > 0.1
        assert frames[:, outside].max() == 0 and labels[:, outside].max() == 0
        inside = (r < info["depth_mm"] - 2) & (ang < info["sector_deg"] / 2 - 2)
        assert (frames[:, inside] > 0).mean() > 0.5
        for f, lab in zip(frames, labels):
            blood, myo = np.median(f[lab == 1]), np.median(f[lab == 2])
            assert myo > blood + 20


def _beside_septum(frame, lab, info):
    """Grey level 4-14 mm beside the septal (in 2CH inferior) wall at mid-LV, relative to the LV
    blood (0) and the myocardium (1)."""
    dx = info["pixel_spacing_mm"][1]
    rows = np.nonzero((lab == 1).any(1))[0]
    vals = []
    for r in range(int(np.percentile(rows, 55)), int(np.percentile(rows, 80))):
        cols = np.nonzero(lab[r] == 2)[0]
        if info["mirrored"]:
            vals.append(frame[r, cols.max() + int(4 / dx): cols.max() + int(14 / dx)])
        else:
            vals.append(frame[r, max(cols.min() - int(14 / dx), 0): cols.min() - int(4 / dx)])
    blood, myo = np.median(frame[lab == 1]), np.median(frame[lab == 2])
    return (np.median(np.concatenate(vals)) - blood) / (myo - blood)


def test_4ch_shows_right_ventricle_beside_septum(clips):
    """The RV is an unlabelled blood pool beside the septum in 4CH; in 2CH that is tissue."""
    rel = {v: [_beside_septum(f[0], lab[0], info) for f, lab, info in clips if info["view"] == v]
           for v in echo.VIEWS}
    assert max(rel["4CH"]) < 0.4
    assert np.mean(rel["2CH"]) > np.mean(rel["4CH"]) + 0.1
