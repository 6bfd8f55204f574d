"""The endoscopy generator's "randomised" kind (domain randomisation), and that "standard" and
"smoke" are unchanged."""
import hashlib

import numpy as np
import pytest
from scipy import ndimage, stats

from Training import endoscopy, tasks
from Training.synthetic_train import _sampler, recipe_for

SIZE = (96, 96)
N_FRAMES = 2
SEEDS = range(700, 736)

# Fingerprints of standard and smoke runs: per colour channel the mean and spread of the frames'
# values, and each frame's count of instrument pixels. Taken once the randomised kind was added,
# after the sha256 of every case had been checked bit for bit against the generator before it
# (git HEAD 10647ba). Floating-point bits differ between CPUs (numpy's vectorised exp and sin on
# AVX2 against AVX-512), so the comparison allows 0.05 grey levels and 0.2 % of the pixels.
STANDARD = {
    (3, 4, (96, 96), "standard"): ([59.541, 28.986, 28.076, 41.345, 18.251, 17.055], [224, 221, 205, 199]),
    (11, 3, (80, 112), "standard"): ([112.303, 46.4, 39.218, 57.228, 35.528, 30.994], [722, 735, 720]),  # circular fov
    (40, 2, (97, 130), "standard"): ([123.69, 74.599, 62.329, 55.303, 46.644, 43.352], [2067, 2103]),
    (1234, 2, (97, 130), "smoke"): ([152.9, 123.389, 119.959, 29.621, 19.123, 19.15], [1223, 1333]),
    (5, 3, (96, 96), "smoke"): ([157.899, 139.852, 140.457, 35.376, 33.751, 33.314], [834, 827, 821]),
}
STANDARD_FRAME = ([59.121, 30.289, 21.034, 57.677, 43.235, 39.392], [1415])  # seed 21 at 96
STANDARD_TRAINING = ([101.769, 49.064, 46.977, 62.2, 38.694, 37.215], [834, 1495, 247])  # seeds 5, 6, 7 at 96
SMOKE_TRAINING = ([166.146, 145.043, 147.71, 30.017, 25.376, 25.526], [515, 588])  # seeds 8, 9 at 64
STANDARD_SAMPLE = ([56.187, 22.975, 16.705, 43.046, 26.332, 24.189], [260, 257])  # seed 11, 2 frames, 64 x 80
SMOKE_SAMPLE = ([106.045, 80.05, 92.21, 30.359, 20.603, 23.985], [556, 547])  # seed 12, 2 frames, 64 x 64


def _same_as(frames, masks, expected):
    """Whether frames (T, H, W, 3) and masks (T, H, W) match a fingerprint of ``STANDARD``."""
    f = frames.astype(np.float64).reshape(-1, frames.shape[-1])
    values, counts = np.r_[f.mean(0), f.std(0)], (masks.reshape(len(masks), -1) > 0).sum(1)
    return (np.abs(values - expected[0]).max() <= 0.05
            and np.abs(counts - expected[1]).max() <= 0.002 * masks[0].size)


def _sha(*arrays):
    return hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()


@pytest.fixture(scope="module")
def videos():
    """seed -> (randomised, standard), each ``_video``'s (frames, masks, info), 2 frames at 96 x 96."""
    return {s: (endoscopy._video(s, N_FRAMES, SIZE, "randomised"), endoscopy._video(s, N_FRAMES, SIZE, "standard"))
            for s in SEEDS}


def _look(videos, s):
    return videos[s][0][2]["look"]


def _nearest(a, crop):
    """``a`` (..., H, W) through the randomised crop: at each output pixel centre, the source pixel
    it falls in (the nearest source pixel centre)."""
    (sy, sx), (py, px) = crop
    H, W = a.shape[-2:]
    iy = np.clip(np.floor(py * H * (1 - 1 / sy) + (np.arange(H) + 0.5) / sy), 0, H - 1).astype(int)
    ix = np.clip(np.floor(px * W * (1 - 1 / sx) + (np.arange(W) + 0.5) / sx), 0, W - 1).astype(int)
    return a[..., iy, :][..., ix]


def _plain(monkeypatch, **more):
    """Randomised looks without the lens, motion blur, lower resolution and JPEG (and ``more``), the
    draws unchanged (so the rest of a seed's look stays the same)."""
    draw = endoscopy._camera_look

    def plain(rng, size):
        look = draw(rng, size)
        look.update(shake=None, defocus=0.0, blur_p=0.0, low_res=None, jpeg=None, **more)
        return look

    monkeypatch.setattr(endoscopy, "_camera_look", plain)


def _saturation(frames):
    return (frames.max(-1) - frames.min(-1)) / (frames.max(-1) + 1.0)


# --- standard and smoke: as before ---


def test_standard_and_smoke_are_unchanged():
    for (seed, n, size, kind), expected in STANDARD.items():
        frames, masks = endoscopy.generate_video(seed, n_frames=n, size=size, kind=kind)
        assert _same_as(frames, masks, expected), (seed, kind)
        if kind == "standard":  # the default kind, bit for bit
            assert _sha(*endoscopy.generate_video(seed, n_frames=n, size=size)) == _sha(frames, masks)
    frame, mask = endoscopy.generate_frame(21, size=(96, 96))[:2]
    assert _same_as(frame[None], mask[None], STANDARD_FRAME)
    assert _same_as(*endoscopy.training_frames([5, 6, 7], (96, 96)), STANDARD_TRAINING)
    assert _same_as(*endoscopy.training_frames([8, 9], (64, 64), kind="smoke"), SMOKE_TRAINING)
    frames, masks, _ = endoscopy.sample_run(11, 2, (64, 80))
    assert frames.dtype == np.uint8 and _same_as(frames, masks, STANDARD_SAMPLE)
    frames, masks, _ = endoscopy.sample_run(12, 2, (64, 64), "smoke")
    assert frames.dtype == np.uint8 and _same_as(frames, masks, SMOKE_SAMPLE)


# --- kinds and plumbing ---


class _Zeros:
    def predict(self, x):
        return np.zeros(x.shape[:3], np.uint8)


def test_kinds_and_plumbing():
    assert endoscopy.KINDS == ("standard", "smoke", "randomised")
    assert tasks.get_task("instruments").kinds == endoscopy.KINDS
    for call in (lambda: endoscopy.generate_video(1, 1, (32, 32), kind="nope"),
                 lambda: endoscopy.generate_frame(1, (32, 32), kind="nope"),
                 lambda: endoscopy.training_frames([1], (32, 32), kind="nope"),
                 lambda: endoscopy.sample_run(1, 1, (32, 32), kind="nope"),
                 lambda: next(endoscopy.score_cases(_Zeros(), 1, 1, 1, 32, "nope"))):
        with pytest.raises(ValueError, match="nope"):
            call()
    recipe = recipe_for("instruments", kind="randomised")
    assert recipe.kind == "randomised"
    x, y = _sampler(tasks.get_task("instruments"), recipe)([700, 701], SIZE)
    assert x.shape == (2, *SIZE, 3) and y.shape == (2, *SIZE) and x.dtype == np.float32 and y.dtype == np.uint8
    for i, s in enumerate((700, 701)):
        f, m = endoscopy.generate_frame(s, size=SIZE, kind="randomised")
        np.testing.assert_array_equal(x[i], f)
        np.testing.assert_array_equal(y[i], m)
        assert not np.array_equal(f, endoscopy.generate_frame(s, size=SIZE)[0])
    tasks.check_colour(x)
    frames, masks, _ = endoscopy.sample_run(703, 2, (48, 64), "randomised")
    ref, ref_masks = endoscopy.generate_video(703, n_frames=2, size=(48, 64), kind="randomised")
    assert frames.dtype == np.uint8 and np.array_equal(frames, ref) and np.array_equal(masks, ref_masks)
    (pred, truth, extra), = endoscopy.score_cases(_Zeros(), 702, 1, 2, 48, "randomised")
    np.testing.assert_array_equal(truth, endoscopy.generate_video(702, 2, (48, 48), "randomised")[1])
    assert pred.shape == truth.shape and extra == {}


# --- reproducible; the seed's scene ---


def test_reproducible_and_differs_from_standard(videos):
    frames, masks = endoscopy.generate_video(705, n_frames=N_FRAMES, size=SIZE, kind="randomised")
    np.testing.assert_array_equal(frames, videos[705][0][0])
    np.testing.assert_array_equal(masks, videos[705][0][1])
    assert np.abs(frames - videos[705][1][0]).mean() > 5
    assert not np.array_equal(frames, videos[706][0][0])


def test_same_instruments_as_standard(videos):
    """Where the randomised video keeps the seed's instruments, its masks are the standard kind's
    (through the crop, where there is one), inside both fields of view; an extra instrument only adds."""
    exact = cropped = grown = dropped = 0
    for s, ((_, m, info), (_, ms, std)) in videos.items():
        look, got, fov = info["look"], m.astype(bool), info["fov"]
        ref, std_fov = ms.astype(bool), std["fov"]
        if look.drop:
            assert not got.any()
            dropped += ref.any()
            continue
        if look.overlays:  # cleared under the overlays: test_overlays_burnt_in_and_never_labelled
            continue
        if look.crop is not None:
            ref, std_fov = _nearest(ref, look.crop), _nearest(std_fov, look.crop)
            cropped += 1
        if look.extra is None or not ref.any():
            np.testing.assert_array_equal(got & std_fov, ref & fov, err_msg=str(s))
            exact += ref.any()
        else:
            assert not (ref & fov & ~got).any(), s
            grown += (got & std_fov).sum() > (ref & fov).sum()
    assert exact >= 10 and cropped >= 4 and grown >= 3 and dropped >= 2, (exact, cropped, grown, dropped)


# --- contracts ---


def test_contracts(videos):
    empty, std_empty = [], []
    for (f, m, info), (_, ms, _) in videos.values():
        assert f.dtype == np.float32 and m.dtype == np.uint8
        assert f.shape == (N_FRAMES, *SIZE, 3) and m.shape == (N_FRAMES, *SIZE) and info["fov"].shape == SIZE
        assert f.min() >= 0 and f.max() <= 255 and f.max() > 60
        assert np.array_equal(f, np.round(f))  # whole numbers, 8-bit
        assert set(np.unique(m)) <= {0, 1}
        empty.append(not m.any())
        std_empty.append(not ms.any())
    empty, std_empty = np.array(empty), np.array(std_empty)
    assert 0.1 <= empty.mean() <= 0.42  # about 25 % of videos without instruments
    assert not (std_empty & ~empty).any() and empty.sum() > std_empty.sum()
    for size in ((33, 47), (48, 130)):  # odd sizes, every look
        for s in range(700, 712):
            f, m = endoscopy.generate_video(s, n_frames=1, size=size, kind="randomised")
            assert f.shape == (1, *size, 3) and m.shape == (1, *size) and f.dtype == np.float32
            assert f.min() >= 0 and f.max() <= 255 and np.array_equal(f, np.round(f))


def test_looks_follow_the_docstring():
    looks = [endoscopy._random_look(np.random.default_rng(k), (256, 256), 2) for k in range(2000)]

    def share(pred):
        return np.mean([bool(pred(look)) for look in looks])

    hue = np.abs(np.rad2deg([look.hue for look in looks]))
    assert hue.max() <= 180 and abs(np.mean(hue <= 35) - 0.65) < 0.04 and abs(np.mean(hue > 90) - 0.15) < 0.03
    for name, lo, hi in (("saturation", 0.25, 1.8), ("brightness", 0.45, 1.5), ("level", 0.12, 0.6),
                         ("gamma", 0.5, 1.8), ("noise_sd", 0.3, 10.0), ("blur_p", 0.0, 0.7)):
        v = np.array([getattr(look, name) for look in looks])
        assert lo <= v.min() < lo * 1.1 + 0.01 and hi * 0.95 < v.max() <= hi, name
    assert abs(share(lambda lk: lk.fat is not None) - 0.4) < 0.04
    assert abs(share(lambda lk: lk.drop) - 0.15) < 0.03
    assert abs(share(lambda lk: lk.extra) - 0.35) < 0.04
    assert abs(share(lambda lk: lk.confusers) - (0.15 + 0.85 * 0.5)) < 0.04
    assert all(2 <= len(lk.confusers) <= 9 for lk in looks if lk.confusers)
    no_tools = [endoscopy._random_look(np.random.default_rng(k), (96, 96), 0) for k in range(200)]
    assert all(2 <= len(lk.confusers) <= 9 for lk in no_tools)  # every video without instruments
    dens = np.array([0 if lk.smoke is None else lk.smoke[0] for lk in looks])
    assert abs(np.mean(dens == 0) - 0.4) < 0.04 and abs(np.mean(dens > 0.55) - 0.1) < 0.03 and dens.max() <= 0.8
    assert abs(share(lambda lk: lk.jpeg is not None) - 0.35) < 0.04
    assert all(15 <= lk.jpeg <= 85 for lk in looks if lk.jpeg is not None)
    assert abs(share(lambda lk: lk.overlays) - 0.35) < 0.04
    assert abs(share(lambda lk: lk.crop is not None) - 0.35) < 0.04
    assert all(1 <= lk.crop[0].min() and lk.crop[0].max() <= 1.45 for lk in looks if lk.crop is not None)
    assert abs(share(lambda lk: lk.low_res is not None) - 0.3) < 0.04
    for shape, p in (("circle", 0.25), ("bars", 0.15), ("octagon", 0.15)):
        assert abs(share(lambda lk: lk.border is not None and lk.border[0] == shape) - p) < 0.035, shape
    for lk in looks:
        if lk.border is not None and lk.border[0] == "bars":  # bands at the top and bottom and/or the sides
            assert max(lk.border[1:]) >= 0.04 and max(lk.border[1:]) <= 0.15


# --- what varies, and what is never labelled ---


def test_randomised_varies(videos):
    rgb, lum, level, mean = [], [], [], []
    for (f, m, info), (fs, ms, std) in videos.values():
        sel = info["fov"] & ~m[0].astype(bool)
        rgb.append(np.median(f[0][sel], 0))
        level.append(info["look"].level)
        mean.append(f[:, info["fov"]].mean())
        assert std["look"] is None
        assert np.median(fs[0][std["fov"] & ~ms[0].astype(bool)], 0).argmax() == 0  # standard tissue: red
    rgb = np.array(rgb)
    dominant = np.bincount(rgb.argmax(1), minlength=3)
    assert dominant[0] >= len(rgb) // 2 and dominant[1] + dominant[2] >= 3  # mostly red, some teal, blue, green
    lum = rgb.mean(1)
    assert lum.max() > 4 * lum.min() and lum.max() > 150 and lum.min() < 30
    assert stats.spearmanr(level, mean)[0] > 0.4  # auto exposure to the drawn level, whatever the tissue
    looks = [_look(videos, s) for s in SEEDS]
    dens = [0 if lk.smoke is None else lk.smoke[0] for lk in looks]
    assert 0.2 <= np.mean(np.equal(dens, 0)) <= 0.6 and max(dens) > 0.55 and 0 < min(d for d in dens if d) < 0.3
    assert 0.15 <= np.mean([lk.jpeg is not None for lk in looks]) <= 0.6
    sd = [lk.noise_sd for lk in looks]
    assert max(sd) / min(sd) > 8


def test_smoke_over_the_same_scene(videos, monkeypatch):
    seed = max(SEEDS, key=lambda s: 0 if _look(videos, s).smoke is None else _look(videos, s).smoke[0])
    f, m, info = videos[seed][0]
    draw = endoscopy._scene_look

    def clear(rng, n_tools):
        look = draw(rng, n_tools)
        look["smoke"] = None
        return look

    monkeypatch.setattr(endoscopy, "_scene_look", clear)
    f0, m0, _ = endoscopy._video(seed, N_FRAMES, SIZE, "randomised")
    np.testing.assert_array_equal(m, m0)  # smoke over the instruments: still labelled
    fov = info["fov"]
    assert _saturation(f)[:, fov].mean() < 0.8 * _saturation(f0)[:, fov].mean()
    lum, lum0 = f.mean(-1)[:, fov], f0.mean(-1)[:, fov]
    assert lum.std() / (lum.mean() + 1) < 0.8 * lum0.std() / (lum0.mean() + 1)


def test_jpeg_changes_frames_not_masks(videos, monkeypatch):
    seed = min((s for s in SEEDS if _look(videos, s).jpeg is not None and _look(videos, s).crop is None
                and _look(videos, s).low_res is None), key=lambda s: _look(videos, s).jpeg)
    assert _look(videos, seed).jpeg < 40
    with_jpeg, m, _ = videos[seed][0]
    draw = endoscopy._camera_look
    monkeypatch.setattr(endoscopy, "_camera_look", lambda rng, size: {**draw(rng, size), "jpeg": None})
    f0, m0, _ = endoscopy._video(seed, N_FRAMES, SIZE, "randomised")
    np.testing.assert_array_equal(m, m0)
    assert 0.3 < np.abs(with_jpeg - f0).mean() < 25
    assert np.corrcoef(with_jpeg.ravel(), f0.ravel())[0, 1] > 0.8

    def blockiness(frames):  # steps across the 8 x 8 block edges over steps elsewhere
        g = np.abs(np.diff(frames.mean(-1), axis=2))
        edge = np.arange(g.shape[2]) % 8 == 7
        return g[..., edge].mean() / g[..., ~edge].mean()

    assert blockiness(with_jpeg) > 1.2 * blockiness(f0)


def test_overlays_burnt_in_and_never_labelled(videos, monkeypatch):
    seen = []
    burn = endoscopy._burn_overlays

    def spy(frames, masks, rng):
        before, labels = frames.copy(), masks.copy()
        burn(frames, masks, rng)
        seen.append((before, labels, frames.copy(), masks.copy()))

    monkeypatch.setattr(endoscopy, "_burn_overlays", spy)
    over = [s for s in SEEDS if _look(videos, s).overlays]
    assert 5 <= len(over) <= 20
    hidden = 0
    for s in over:
        f, m, _ = endoscopy._video(s, N_FRAMES, SIZE, "randomised")
        np.testing.assert_array_equal(f, videos[s][0][0])
        np.testing.assert_array_equal(m, videos[s][0][1])
        before, labels, after, cleared = seen[-1]
        drawn = (after != before).any(-1).any(0)
        assert 0.001 < drawn.mean() < 0.3
        assert (after[:, drawn] == after[:1, drawn]).all()  # the same on every frame
        assert not cleared[:, drawn].any()
        np.testing.assert_array_equal(cleared[:, ~drawn], labels[:, ~drawn])
        np.testing.assert_array_equal(m, cleared)
        hidden += labels[:, drawn].sum()
    assert hidden > 0  # some overlays lie over instruments


def test_border_black_and_unlabelled(videos):
    bordered = clipped = 0
    for (f, m, info), (_, ms, _) in videos.values():
        look, fov = info["look"], info["fov"]
        assert not (m.astype(bool) & ~fov).any()
        if look.border is None:
            assert fov.all()  # the standard kind's circular field of view is replaced by the border
            continue
        if look.crop is None:
            assert fov.mean() > 0.3
            clipped += (ms.astype(bool) & ~fov).any() and not look.drop
        deep = ~ndimage.binary_dilation(fov, iterations=4)
        if deep.sum() > 20:
            bordered += 1
            assert np.median(f[:, deep]) <= 12
            assert look.overlays or np.percentile(f[:, deep], 90) <= 30  # (burnt-in text lies on the border)
    assert bordered >= 5 and clipped >= 2, (bordered, clipped)


def test_confusers_never_labelled(videos, monkeypatch):
    """Clips, needles, sutures and gauze are drawn on the tissue: hidden (their draws made, so the
    video is otherwise the same), the masks and the instruments' pixels do not change."""
    seeds = [s for s in SEEDS if _look(videos, s).confusers][:10]
    assert len(seeds) >= 8
    _plain(monkeypatch)
    monkeypatch.setattr(endoscopy, "_exposure", lambda illum, tissue, opt, level: np.float32(
        level ** (1 / opt.gamma) / (0.3 * illum.mean() * opt.balance.mean())))  # not from the tissue
    shown = {s: endoscopy._video(s, 1, SIZE, "randomised") for s in seeds}
    draw = endoscopy._confuser
    monkeypatch.setattr(endoscopy, "_confuser", lambda tissue, *args: draw(tissue.copy(), *args))
    visible = on_tools = 0
    for s in seeds:
        f, m, _ = shown[s]
        f0, m0, _ = endoscopy._video(s, 1, SIZE, "randomised")
        np.testing.assert_array_equal(m, m0)
        diff = np.abs(f - f0).max(-1)[0]
        inner = ndimage.binary_erosion(m[0].astype(bool), iterations=2)
        # the instruments hide the tissue: their pixels the same (to a grey level where two parts' edges
        # leave a trace of tissue)
        assert not inner.any() or (diff[inner].max() <= 2 and np.mean(diff[inner] > 0) < 0.01), s
        on_tools += inner.sum() > 20
        visible += (diff[~m[0].astype(bool)] > 20).sum() >= 3
    assert on_tools >= 3 and visible >= 0.6 * len(seeds), (on_tools, visible)


def test_blood_and_glints_on_instruments_labelled(videos, monkeypatch):
    seeds = [s for s in SEEDS if not _look(videos, s).drop and videos[s][1][1].any()
             and (_look(videos, s).tip_blood or _look(videos, s).glints is not None)]
    assert len(seeds) >= 6
    _plain(monkeypatch)
    soiled = {s: endoscopy._video(s, 1, SIZE, "randomised") for s in seeds}
    monkeypatch.setattr(endoscopy, "_soil_tools", lambda *args: None)
    changed = 0
    for s in seeds:
        f, m, _ = soiled[s]
        f0, m0, _ = endoscopy._video(s, 1, SIZE, "randomised")
        np.testing.assert_array_equal(m, m0)
        diff = np.abs(f - f0).max(-1)[0]
        near = ndimage.binary_dilation(m[0].astype(bool), iterations=3)
        assert not diff[~near].any(), s
        changed += (diff[m[0].astype(bool)] > 20).sum() >= 3
    assert changed >= 0.5 * len(seeds), changed
