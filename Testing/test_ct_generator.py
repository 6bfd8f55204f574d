"""The synthetic chest CT generator: determinism, Hounsfield units, anatomy and the heart mask."""
import numpy as np
import pytest
from scipy import ndimage

from Training import ct, fluoro

SMALL = (None, 96, 96)  # Z from the drawn extent; 96 x 96 pixels
WHOLE = (2.5, 4.5, 4.5)  # mm: a 432 mm field of view shows the whole chest


@pytest.fixture(scope="module")
def volumes():
    """Twelve small whole-chest volumes (seed -> (volume, mask, info)), made once for the module."""
    return {s: ct.generate_ct(s, shape=SMALL, spacing=WHOLE) for s in range(12)}


def _body(slice_hu):
    """Inside of the patient on one slice: everything above -500 HU, holes (lungs) filled,
    the largest component (not the table or the arms)."""
    lab, n = ndimage.label(ndimage.binary_fill_holes(slice_hu > -500))
    if n == 0:
        return lab > 0
    return lab == 1 + np.argmax(ndimage.sum(np.ones_like(lab), lab, range(1, n + 1)))


def test_same_seed_same_volume_and_slice():
    a, ma, ia = ct.generate_ct(7, shape=(20, 64, 64))
    b, mb, ib = ct.generate_ct(7, shape=(20, 64, 64))
    assert np.array_equal(a, b) and np.array_equal(ma, mb) and ia == ib
    s1, m1, _ = ct.generate_ct_slice(7, size=(64, 64))
    s2, m2, _ = ct.generate_ct_slice(7, size=(64, 64))
    assert np.array_equal(s1, s2) and np.array_equal(m1, m2)


def test_different_seeds_differ(volumes):
    assert not np.array_equal(volumes[0][0][:10], volumes[1][0][:10])
    assert len({round(v[2]["heart_ml"], 1) for v in volumes.values()}) == len(volumes)


def test_drawn_geometry_varies():
    infos, zoom = [], 0
    for seed in range(8):
        vol, mask, info = ct.generate_ct(seed, shape=(None, 48, 48))
        assert vol.dtype == np.float32 and mask.dtype == np.uint8 and vol.shape == mask.shape
        assert vol.shape[1:] == (48, 48) and set(np.unique(mask)) <= {0, 1}
        dz, dy, dx = info["spacing"]
        assert 1.0 <= dz <= 5.0 and dy == dx and mask.any()
        assert 180 <= info["fov_mm"][1] <= 480 + 1e-6
        assert vol.min() >= -1024 and vol.max() <= 3071 and np.array_equal(vol, np.round(vol))
        infos.append(info)
        zoom += info["fov_mm"][1] < 290
    assert len({i["spacing"] for i in infos}) == 8 and 0 < zoom < 8  # whole chest and cardiac zoom
    vol, mask, info = ct.generate_ct(3, shape=(40, 64, 64))
    assert vol.shape == (40, 64, 64)  # a fixed Z: the spacing grows so that the heart fits
    assert mask[0].sum() == 0 and mask[-1].sum() == 0 and mask[20].sum() > 0


def test_hounsfield_units(volumes):
    for seed, (vol, mask, info) in volumes.items():
        corner = vol[:, :4, :4]
        assert abs(np.median(corner) + 1000) < 30, seed  # air (or the -1024 outside the reconstruction circle)
        k = int(np.argmax(mask.sum((1, 2))))
        body = _body(vol[k])
        lung = body & (vol[k] < -500)
        assert lung.sum() > 0.1 * body.sum(), seed  # the lungs fill much of the chest at the heart
        assert np.median(vol[k][lung]) < -700, seed
        assert np.percentile(vol[k][body], 99.5) > 200, seed  # bone
        fat_or_soft = vol[k][body & (vol[k] > -200) & (vol[k] < 100)]
        assert fat_or_soft.size > 0.2 * body.sum(), seed


def test_blood_with_and_without_contrast():
    for seed in range(4):
        for contrast in (True, False):
            vol, mask, info = ct.generate_ct(seed, shape=(None, 128, 128), contrast=contrast)
            assert info["contrast"] is contrast
            inner = ndimage.binary_erosion(mask, iterations=2)
            p75 = np.percentile(vol[inner > 0], 75)  # blood pools are most of the heart
            if contrast:
                assert 250 <= info["blood_hu"] <= 450
                assert 200 < p75 < 480, (seed, p75)
            else:
                assert info["blood_hu"] < 60 and p75 < 100, (seed, p75)


def test_contrast_is_drawn_and_does_not_change_the_anatomy():
    drawn = [ct.generate_ct_slice(s, size=(32, 32))[2]["contrast"] for s in range(40)]
    assert 0.3 < np.mean(drawn) < 0.9
    a = ct.generate_ct(5, shape=SMALL, contrast=True)
    b = ct.generate_ct(5, shape=SMALL, contrast=False)
    assert np.array_equal(a[1], b[1]) and a[2]["spacing"] == b[2]["spacing"]
    assert np.mean(a[0][a[1] > 0]) > np.mean(b[0][b[1] > 0]) + 100


def test_heart_volume_is_realistic(volumes):
    ml = np.array([v[2]["heart_ml"] for v in volumes.values()])
    assert np.all((ml > 300) & (ml < 1200)), ml
    assert 450 < ml.mean() < 800, ml
    for vol, mask, info in volumes.values():  # heart_ml is what the mask says
        assert info["heart_ml"] == pytest.approx(mask.sum() * np.prod(info["spacing"]) / 1000)


def test_mask_is_in_the_middle_slices_and_not_beyond_the_heart(volumes):
    for vol, mask, info in volumes.values():
        per_slice = mask.sum((1, 2))
        nz = np.nonzero(per_slice)[0]
        assert len(nz) and np.all(per_slice[nz[0]:nz[-1] + 1] > 0)  # one block of slices
        assert per_slice[0] == 0 and per_slice[-1] == 0  # the volume covers the whole heart
        extent = (nz[-1] - nz[0] + 1) * info["spacing"][0]
        assert 60 < extent < 160  # cranio-caudal extent of a heart (mm)
    # a long volume: many slices above and below the heart, none of them with heart
    vol, mask, info = ct.generate_ct(2, shape=(80, 48, 48), spacing=(5.0, 8.0, 8.0))
    empty = mask.sum((1, 2)) == 0
    assert empty.sum() > 30 and (~empty).sum() > 10
    # 2D training slices: negatives and positives both common
    has_heart = [ct.generate_ct_slice(s, size=(32, 32))[1].any() for s in range(40)]
    assert 0.3 < np.mean(has_heart) < 0.8


def test_spacing_changes_resolution_not_anatomy():
    for seed in (0, 4):
        fine = ct.generate_ct(seed, shape=(None, 160, 160), spacing=(2.0, 2.0, 2.0))
        coarse = ct.generate_ct(seed, shape=(None, 80, 80), spacing=(4.0, 4.0, 4.0))
        assert fine[0].shape[1:] == (160, 160) and coarse[0].shape[1:] == (80, 80)
        assert fine[2]["heart_ml"] == pytest.approx(coarse[2]["heart_ml"], rel=0.03)
        centres = []
        for vol, mask, info in (fine, coarse):
            idx = np.array(ndimage.center_of_mass(mask))
            centres.append(np.array(info["origin"]) + idx * np.array(info["spacing"]))
        assert np.linalg.norm(centres[0] - centres[1]) < 3.0  # mm


def test_mask_lies_in_the_body_not_in_lung_or_air(volumes):
    for seed, (vol, mask, info) in volumes.items():
        hu = vol[mask > 0]
        assert np.mean(hu < -500) < 0.01, seed
        for k in np.nonzero(mask.sum((1, 2)))[0]:
            assert np.all(_body(vol[k])[mask[k] > 0]), (seed, k)


def test_heart_sits_between_the_lungs_in_front_of_the_spine(volumes):
    for seed, (vol, mask, info) in volumes.items():
        k = int(np.argmax(mask.sum((1, 2))))
        body = _body(vol[k])
        ys, xs = np.nonzero(body)
        cy, cx = ndimage.center_of_mass(mask[k])
        assert 0.25 < (cy - ys.min()) / (ys.max() - ys.min()) < 0.55, seed  # anterior half
        assert 0.45 < (cx - xs.min()) / (xs.max() - xs.min()) < 0.65, seed  # a little to the patient's left
        lung = body & (vol[k] < -500)
        right = lung[:, :int(cx)].sum() / lung.sum()  # the patient's right is on the image's left
        assert 0.35 < right < 0.8, seed  # lung on both sides of the heart


def test_slice_generator():
    img, mask, info = ct.generate_ct_slice(11, size=(96, 128))
    assert img.shape == mask.shape == (96, 128) and img.dtype == np.float32 and mask.dtype == np.uint8
    assert 0.6 <= info["spacing"][0] <= 5.0
    with_heart = next(s for s in range(20) if ct.generate_ct_slice(s, size=(64, 64))[1].any())
    img, mask, _ = ct.generate_ct_slice(with_heart, size=(64, 64))
    assert np.mean(img[mask > 0] < -500) < 0.02


def test_held_out_seeds_are_shared_with_fluoro():
    assert ct.HELD_OUT_SEED_BASE == fluoro.HELD_OUT_SEED_BASE


def _below_heart(seed, mm, size=(128, 128), contrast=None):
    """Slices ``mm`` (array) below the lowest slice of the heart (1 mm steps), whole chest."""
    p, rng, v, _, fov, _ = ct._setup(seed, contrast)
    zs = np.arange(p.hlo[0] - 2, p.hlo[0] + 30, 1.0)
    low = zs[np.nonzero(ct._scan(p, rng, v, zs, (48, 48), 420, (0, 0), 1.0)[1].sum((1, 2)))[0][0]]
    return ct._scan(p, rng, v, low - np.asarray(mm, float), size, 2.3 * p.a, (0.0, 0.0), 3.0)[:2]


def test_upper_abdomen_below_the_heart():
    for seed in range(6):
        vol, mask = _below_heart(seed, [15, 40, 80], contrast=seed % 2 == 0)
        assert mask.sum() == 0, seed
        for k in range(3):
            body = _body(vol[k])
            right = body[:, :64]  # the patient's right: mostly liver, 40-160 HU
            liver = right & (vol[k][:, :64] > 30) & (vol[k][:, :64] < 180)
            assert liver.sum() > 0.3 * right.sum(), (seed, k)
        assert np.mean(vol[2][_body(vol[2])] < -500) < 0.15, seed  # little lung 80 mm down


def test_stomach_gas_in_front_in_some_patients():
    gas = []
    for seed in range(16):
        p = ct._setup(seed, False)[0]
        pts, radii = p.abdomen.stomach
        vol = ct._scan(p, np.random.default_rng(0), ct._values(np.random.default_rng(0), False),
                       np.array([pts[1][0]]), (96, 96), 2.3 * p.a, (0.0, 0.0), 3.0)[0]  # at the stomach body
        dxy = 2.3 * p.a / 96
        y, x = (np.arange(96) - 47.5) * dxy, (np.arange(96) - 47.5) * dxy
        near = np.hypot(*np.meshgrid(y - pts[1][1], x - pts[1][2], indexing="ij")) < 0.6 * radii[1]
        air = (vol[0] < -700) & near
        gas.append(air.any())
        if p.stomach[2] and air.sum() > 3:  # the gas lies in front (supine): smaller y than the fluid
            fluid = near & (vol[0] > -50) & (vol[0] < 80)
            if fluid.sum() > 3:
                assert np.nonzero(air)[0].mean() < np.nonzero(fluid)[0].mean(), seed
    assert 0.2 < np.mean(gas) < 0.95, gas


def test_slices_often_show_the_abdomen_just_below_the_heart():
    hard = 0
    for s in range(120):
        img, mask, info = ct.generate_ct_slice(s, size=(32, 32))
        p = ct._setup(s, None)[0]
        hard += not mask.any() and p.hlo[0] - 45 < info["z_mm"] < p.hlo[0]
    assert hard > 0.12 * 120, hard
