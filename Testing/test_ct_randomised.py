"""The chest-CT generator's "randomised" kind (domain randomisation), and that "standard" is unchanged."""
import hashlib

import numpy as np
import pytest
from scipy import ndimage

from Training import ct, tasks
from Training.synthetic_train import _sampler, recipe_for

SIZE = (96, 96)
SEEDS = range(700, 732)

# sha256 of images + masks from the generator before the randomised kind was added
STANDARD_CT = {
    (3, (12, 48, 48), None, None): "a04bb8302792be732b27172b15c8c987e928e94b124aadd949314fa36da51777",
    (17, (None, 40, 56), None, None): "d52bcea0347ea1b057658efb0f153cd1392002888411490233535c3c864dfb67",
    (5, (8, 64, 64), (3.0, 4.0, 4.0), False): "b34bf5f11edb181c61265c1e668e1f183670110888aafddafbde8a3eb503f01d",
}
STANDARD_SLICE = {
    (1, (64, 64)): "4568164896b59c3774cc100f1a69516f5536e8412746647d5a2bf0775491655b",
    (2, (96, 80)): "3e4a6934b92ff8cbcc0c01f5b9bc93c60ba48d1e7f7721b1f3ea9277ec973a2f",
    (1234, (160, 160)): "90d1743260f71f7b77add5df11de5484fe170396310acc6d155e092e37774f46",
}
STANDARD_TRAINING = "9f8c31269d03b086b68a0b38fc06060a9985f4dc1012417e9749261680a91194"  # seeds 5, 6, 7 at 96
STANDARD_SAMPLE = "83070de698596d1398a6bb27a03466c0f2ac6f862d59a89b1ae8a462af8aaecb"  # seed 11 at 40 x 40


def _sha(*arrays):
    return hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()


@pytest.fixture(scope="module")
def slices():
    """One randomised slice per seed: (image, mask, info)."""
    return [ct.generate_ct_slice(s, size=SIZE, kind="randomised") for s in SEEDS]


@pytest.fixture(scope="module")
def volumes():
    """Small randomised volumes and the standard ones of the same seeds: seed -> (randomised, standard)."""
    return {s: (ct.generate_ct(s, shape=(24, 48, 48), kind="randomised"), ct.generate_ct(s, shape=(24, 48, 48)))
            for s in range(40, 52)}


def test_standard_is_bit_identical():
    for (seed, shape, spacing, contrast), digest in STANDARD_CT.items():
        vol, mask, _ = ct.generate_ct(seed, shape=shape, spacing=spacing, contrast=contrast)
        assert _sha(vol, mask) == digest, (seed, shape)
        vol, mask, _ = ct.generate_ct(seed, shape=shape, spacing=spacing, contrast=contrast, kind="standard")
        assert _sha(vol, mask) == digest
    for (seed, size), digest in STANDARD_SLICE.items():
        assert _sha(*ct.generate_ct_slice(seed, size=size)[:2]) == digest, (seed, size)
        assert _sha(*ct.generate_ct_slice(seed, size=size, kind="standard")[:2]) == digest
    assert _sha(*ct.training_frames([5, 6, 7], (96, 96))) == STANDARD_TRAINING
    vol, mask, _ = ct.sample_run(11, 1, (40, 40))
    assert vol.dtype == np.int16 and _sha(vol, mask) == STANDARD_SAMPLE


class _Zeros:
    def predict(self, vol, direction=None):
        return np.zeros(vol.shape, np.uint8)


def test_kinds_and_plumbing():
    assert ct.KINDS == ("standard", "randomised")
    assert tasks.get_task("heart-ct").kinds == ct.KINDS
    for call in (lambda: ct.generate_ct(1, shape=(4, 32, 32), kind="nope"),
                 lambda: ct.generate_ct_slice(1, size=(32, 32), kind="nope"),
                 lambda: ct.training_frames([1], (32, 32), kind="nope"),
                 lambda: ct.sample_run(1, 1, (32, 32), kind="nope"),
                 lambda: next(ct.score_cases(_Zeros(), 1, 1, 1, 32, kind="nope"))):
        with pytest.raises(ValueError, match="nope"):
            call()
    recipe = recipe_for("heart-ct", kind="randomised")
    x, y = _sampler(tasks.get_task("heart-ct"), recipe)([700, 701], SIZE)
    assert x.shape == y.shape == (2, *SIZE) and x.dtype == np.float32 and y.dtype == np.uint8
    im, m, _ = ct.generate_ct_slice(701, size=SIZE, kind="randomised")
    np.testing.assert_array_equal(x[1], im)
    np.testing.assert_array_equal(y[1], m)
    tasks.check_ct(x, slices=True)
    vol, mask, info = ct.sample_run(41, 1, (32, 32), kind="randomised")
    ref, ref_mask, _ = ct.generate_ct(41, shape=(None, 32, 32), kind="randomised")
    assert vol.dtype == np.int16 and np.array_equal(vol, ref) and np.array_equal(mask, ref_mask)
    assert len(info["spacing"]) == 3 and info["kind"] == "randomised"
    (pred, truth, extra), = ct.score_cases(_Zeros(), 41, 1, 1, 32, kind="randomised")
    np.testing.assert_array_equal(truth, ref_mask)
    assert extra["slices"] == len(ref) and extra["heart_ml"] == pytest.approx(info["heart_ml"])


def test_reproducible_and_same_patient(slices, volumes):
    a = ct.generate_ct_slice(705, size=SIZE, kind="randomised")
    np.testing.assert_array_equal(a[0], slices[5][0])
    np.testing.assert_array_equal(a[1], slices[5][1])
    assert not np.array_equal(a[0], ct.generate_ct_slice(705, size=SIZE)[0])
    # the 20 % with the standard geometry: the standard slice height and heart mask, voxel for voxel
    neutral = [(s, info) for s, (_, _, info) in zip(SEEDS, slices) if info["look"]["neutral"]]
    assert 2 <= len(neutral) <= 14
    for s, info in neutral:
        _, mask, std = ct.generate_ct_slice(s, size=SIZE)
        np.testing.assert_array_equal(slices[s - SEEDS[0]][1], mask)
        assert info["z_mm"] == std["z_mm"] and info["spacing"] == std["spacing"]
    # the others: the same heart, scaled with the patient (volumes of whole hearts inside the field)
    ratios, n_neutral = [], 0
    for (vol, mask, info), (_, std_mask, std) in volumes.values():
        look = info["look"]
        n_neutral += look["neutral"]
        if look["neutral"]:
            np.testing.assert_array_equal(mask, std_mask)
        edge = mask[:, [0, -1]].any() or mask[:, :, [0, -1]].any() or mask[[0, -1]].any()
        if not edge and not look["slab_cut"]:
            ratios.append(info["heart_ml"] / std["heart_ml"] / np.prod(look["scale"]))
    assert n_neutral < len(volumes) and len(ratios) >= 6
    assert np.allclose(ratios, 1, atol=0.08), ratios


def test_contracts(slices, volumes):
    for im, mask, info in slices:
        assert im.dtype == np.float32 and mask.dtype == np.uint8 and im.shape == mask.shape == SIZE
        assert set(np.unique(mask)) <= {0, 1} and np.array_equal(im, np.round(im))
        assert im.min() >= -1024 and im.max() <= 3071 and im.min() < tasks.AIR_HU
    assert 0.25 <= np.mean([m.any() for _, m, _ in slices]) <= 0.7  # about 40 % of slices show heart
    for (vol, mask, info), _ in volumes.values():
        assert vol.dtype == np.float32 and mask.dtype == np.uint8 and vol.shape == mask.shape == (24, 48, 48)
        tasks.check_ct(vol)
        assert mask.any()


def test_crops(volumes):
    """Some hearts are cut by the field's edge or by the slab's end; the others lie whole inside."""
    side = [m[:, [0, -1]].any() or m[:, :, [0, -1]].any() for (_, m, _), _ in volumes.values()]
    ends = [(info["look"]["slab_cut"], m[[0, -1]].any()) for (_, m, info), _ in volumes.values()]
    assert any(side) and not all(side)
    assert any(cut and touches for cut, touches in ends)
    assert not any(touches for cut, touches in ends if not cut)


def test_labels_on_the_heart(slices):
    """The heart is brighter than what lies 2-5 pixels outside it (fat, lung, fluid) in most slices."""
    brighter = []
    for im, mask, _ in slices:
        m = mask.astype(bool)
        if m.sum() < 40:
            continue
        ring = ndimage.binary_dilation(m, iterations=5) & ~ndimage.binary_dilation(m, iterations=2)
        brighter.append(np.median(im[ndimage.binary_erosion(m)]) > np.median(im[ring]) + 20)
    assert len(brighter) >= 6 and np.mean(brighter) >= 0.8


def test_randomised_varies(slices):
    infos = [info for _, _, info in slices]
    looks = [info["look"] for info in infos]
    diff = [info["blood_hu"] - info["myo_hu"] for info in infos]
    assert min(diff) < -5 and max(diff) > 100  # blood darker than the myocardium, and far brighter
    assert len({info["phase"] for info in infos}) == 4
    heart = [np.median(im[m > 0]) for im, m, _ in slices if m.sum() > 30]
    assert min(heart) < 80 and max(heart) > 200  # in the images: unenhanced and enhanced hearts
    sd = np.array([info["noise_sd"] for info in infos])
    assert sd.max() / sd.min() > 8
    # in the images: the fine-scale variation of soft tissue, in the quietest and the noisiest quarter
    measured = np.array([np.median(np.abs(im - ndimage.uniform_filter(im, 3))[(im > -150) & (im < 200)])
                         for im, _, _ in slices])
    order = np.argsort(sd)
    assert measured[order[-8:]].mean() > 1.5 * measured[order[:8]].mean()
    fov = [look["fov"] for look in looks]
    assert min(fov) < 200 and max(fov) > 400
    assert any(look["child"] for look in looks) and any(look["lowres"] > 1 for look in looks)
    thick = [info["spacing"][0] for info in infos]
    assert min(thick) < 1.5 and max(thick) > 5
    assert any(look["effusion_mm"] for look in looks) and any(look["pleural"] for look in looks)


def test_8bit_export(slices):
    exported = [(im, info["look"]["export"]) for im, _, info in slices if info["look"]["export"]]
    others = [im for im, _, info in slices if not info["look"]["export"]]
    assert 3 <= len(exported) <= 16
    for im, (width, level) in exported:
        assert len(np.unique(im)) <= 256
        assert im.min() == np.round(level - width / 2) < tasks.AIR_HU  # air: the window's lower end
        assert im.max() <= level + width / 2 + 1
    assert np.mean([len(np.unique(im)) > 256 for im in others]) > 0.9


def test_metal_outside_the_label(slices):
    hot = [info for im, m, info in slices if im[m == 0].max() > 2000]
    assert hot and any(info["look"]["metal"] for info in hot)
    assert all(info["look"]["metal"] or info["phase"] == "arterial" for info in hot)  # metal or undiluted contrast
    cool = [im.max() for im, _, info in slices if not info["look"]["metal"] and info["phase"] != "arterial"]
    assert cool and max(cool) < 2000


def test_streaks_bright_and_dark():
    img = np.zeros((96, 96), np.float32)
    ct._add_streaks(img, [(48.0, 48.0, 1.0), (48.0, 20.0, 1.0)], (500, 50, 1.0, 200), (2.0, 2.0),
                    np.random.default_rng(0))
    far = np.hypot(*np.mgrid[-48:48, -48:48]) > 25
    assert img[far].max() > 50 and img[far].min() < -50
    assert img[48, 34] < -100  # the dark band between the two sources


def test_pericardial_effusion_outside_the_label(monkeypatch):
    seed = next(s for s in range(700, 900)
                if (r := ct.generate_ct_slice(s, size=SIZE, kind="randomised"))[2]["look"]["effusion_mm"] > 8
                and r[1].sum() > 150 and not r[2]["look"]["export"])
    im, mask, _ = ct.generate_ct_slice(seed, size=SIZE, kind="randomised")
    draw = ct._random_confusers

    def dry(rng, p, child, look):
        draw(rng, p, child, look)
        p.extra.effusion = 0.0

    monkeypatch.setattr(ct, "_random_confusers", dry)
    im0, mask0, _ = ct.generate_ct_slice(seed, size=SIZE, kind="randomised")
    np.testing.assert_array_equal(mask, mask0)
    changed = np.abs(im - im0) > 25
    assert changed.sum() > 30
    assert not (changed & ndimage.binary_erosion(mask.astype(bool), iterations=2)).any()
    assert -40 < np.median(im[changed & (mask == 0)]) < 70  # fluid, where fat or lung was


def test_low_resolution_stays_aligned(monkeypatch):
    """An image rendered at half the size and interpolated back lies on the full-size one (and the mask)."""
    draw = ct._randomised

    def clean(lowres):
        def randomised(*args):
            look, v, rng = draw(*args)
            look.update(lowres=lowres, noise_sd=0.0, sharpen=None, export=None, circle=False, cupping=0.0)
            return look, v, rng
        return randomised

    images = {}
    for lowres in (1.0, 2.0):
        monkeypatch.setattr(ct, "_randomised", clean(lowres))
        images[lowres] = ct.generate_ct_slice(727, size=(128, 128), kind="randomised")[:2]
    np.testing.assert_array_equal(images[1.0][1], images[2.0][1])
    assert images[1.0][1].sum() > 1000  # an enhanced heart in the slice
    full, low = ndimage.gaussian_filter(images[1.0][0], 1.0), images[2.0][0]
    for q in (np.s_[8:64, 8:64], np.s_[64:-8, 64:-8], np.s_[8:64, 64:-8], np.s_[64:-8, 8:64]):
        err = {s: np.abs(ndimage.shift(full, s, order=1, mode="nearest") - low)[q].mean()
               for s in ((0, 0), (0.4, 0.4), (-0.4, -0.4), (0.4, -0.4), (-0.4, 0.4))}
        assert min(err, key=err.get) == (0, 0), err
