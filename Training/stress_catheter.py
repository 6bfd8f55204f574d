"""The catheter task's stress suite: X-ray frames made unlike the training generator, never trained on.

Written apart from ``Training.fluoro`` (its own anatomy, device paths, detector and display) so
that a model that learnt the generator's look, not the device, fails here. Each kind pushes one
way real acquisitions differ:

    fluoro                  the independent renderer: log or linear detector, dark = attenuating, 12-bit
    bright-attenuating      radiograph display (attenuating bright), log response, 16-bit values
    linear-8bit             linear response, strong gamma, low dose, 8-bit quantisation
    confusers               ribs, lung/heart/diaphragm borders, skin folds, sternal wires, clips, ECG
                            electrodes and leads, contrast-filled vessels, burnt-in text and markers,
                            collimator shutters and a round image-intensifier border, all unlabelled
    guidewire-1024          1024x1024 frames (whatever --size says), guidewires of 0.4-0.9 px radius
    radiograph              real held-out chest radiographs (``Training.realxray.held_out``), crops of
                            50-100 % of the side at native resolution, with devices composited by
                            Beer-Lambert (catheters 1.2-4.5 px, guidewires 0.5-1.7 px in radius at
                            about 0.35 mm per pixel), either display convention, 8-bit
    radiograph-device-free  the same radiographs with nothing added: nothing should be labelled

Device masks are the pixel centres within max(radius, 0.5 px) of a device axis. Everything comes
from one seed; seeds are the held-out ones (``Training.seeds.HELD_OUT_SEED_BASE``).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

KINDS = ("fluoro", "bright-attenuating", "linear-8bit", "confusers", "guidewire-1024", "radiograph",
         "radiograph-device-free")
NEGATIVE_KINDS = ("radiograph-device-free",)  # nothing to find: scored by the pixels labelled


# --- devices: smooth random paths with a constant radius, rendered as solid tubes -----------------

def _path(rng, h, w, scale, pigtail):
    """Axis points (N, 2) every 0.25 px: enters from a border, turns smoothly, may end in a loop."""
    side = rng.integers(4)
    t = rng.uniform(0.2, 0.8)
    start = [(0.0, t * w), (h - 1.0, t * w), (t * h, 0.0), (t * h, w - 1.0)][side]
    heading = [np.pi / 2, -np.pi / 2, 0.0, np.pi][side] + rng.normal(0, 0.35)  # into the image
    length = rng.uniform(0.6, 1.4) * max(h, w)
    step = 0.25
    n = int(length / step)
    wiggle = ndimage.gaussian_filter1d(rng.normal(0, 1, n), 30 * scale / step)
    curvature = wiggle / (wiggle.std() + 1e-9) / (rng.uniform(25, 120) * scale)  # turning radius in px
    if pigtail:  # a tight loop of 1-1.5 turns at the tip
        radius = rng.uniform(6, 14) * scale
        loop = int(rng.uniform(1.0, 1.5) * 2 * np.pi * radius / step)
        curvature = np.concatenate([curvature[: max(n - loop, 10)], np.full(loop, rng.choice([-1, 1]) / radius)])
    angle = heading + np.cumsum(curvature) * step
    dy, dx = np.sin(angle) * step, np.cos(angle) * step
    pts = np.stack([start[0] + np.cumsum(dy), start[1] + np.cumsum(dx)], 1)
    inside = (pts[:, 0] > -20) & (pts[:, 0] < h + 20) & (pts[:, 1] > -20) & (pts[:, 1] < w + 20)
    return pts[: max(int(np.argmin(inside)) if not inside.all() else len(pts), 8)]


def _tube(points, radius, shape):
    """(path length through the tube per pixel, 2x2 supersampled; mask of centres within the radius)."""
    h, w = shape
    lo = np.floor(points.min(0) - radius - 2).astype(int).clip(0, [h - 1, w - 1])
    hi = np.ceil(points.max(0) + radius + 2).astype(int).clip(0, [h - 1, w - 1])
    if (hi <= lo).any():
        return np.zeros(shape, np.float32), np.zeros(shape, bool)
    yy, xx = np.mgrid[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1]
    tree = cKDTree(points)
    chord = np.zeros(yy.shape, np.float32)
    for oy, ox in ((-0.25, -0.25), (-0.25, 0.25), (0.25, -0.25), (0.25, 0.25)):
        d, _ = tree.query(np.stack([yy.ravel() + oy, xx.ravel() + ox], 1), distance_upper_bound=radius + 1)
        d = np.minimum(d, radius).reshape(yy.shape)
        chord += 0.5 * np.sqrt(np.maximum(radius**2 - d**2, 0))  # mean of 4 chords 2*sqrt(r^2 - d^2)
    d, _ = tree.query(np.stack([yy.ravel(), xx.ravel()], 1), distance_upper_bound=radius + 1)
    out, mask = np.zeros(shape, np.float32), np.zeros(shape, bool)
    out[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1] = chord
    mask[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1] = d.reshape(yy.shape) <= max(radius, 0.5)
    return out, mask


def _devices(rng, shape, scale, wires_only=False, thin=False):
    """Attenuation (line integral) and mask of 1-3 catheters and guidewires."""
    att, mask = np.zeros(shape, np.float32), np.zeros(shape, bool)
    for _ in range(rng.integers(1, 4)):
        wire = wires_only or rng.random() < 0.35
        if thin:
            radius = rng.uniform(0.4, 0.9)
        else:
            radius = (rng.uniform(0.6, 1.3) if wire else rng.uniform(1.5, 3.5)) * scale
        peak = rng.uniform(0.3, 1.5) if wire else rng.uniform(0.15, 0.8)  # line integral on the axis
        mu = peak / (2 * radius)
        pts = _path(rng, *shape, scale, pigtail=not wire and rng.random() < 0.3)
        chord, m = _tube(pts, radius, shape)
        att += mu * chord
        if not wire and rng.random() < 0.7:  # radiopaque tip
            tip, _ = _tube(pts[-int(rng.uniform(10, 30) * scale / 0.25):], radius, shape)
            att += mu * tip
        mask |= m
    return att, mask


# --- anatomy and confusers, as attenuation line integrals ---------------------------------------

def _ellipse(shape, cy, cx, ry, rx, angle=0.0):
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    u, v = ((yy - cy) * c + (xx - cx) * s) / ry, (-(yy - cy) * s + (xx - cx) * c) / rx
    return u * u + v * v


def _chest(rng, shape, scale):
    """Body, lungs, heart, diaphragm, spine and ribs; edges blurred by a few pixels."""
    h, w = shape
    soft = lambda m, s: ndimage.gaussian_filter(m.astype(np.float32), s * scale)  # noqa: E731
    cx = w * rng.uniform(0.4, 0.6)
    att = 1.6 + 0.8 * soft(_ellipse(shape, h * 0.55, cx, h * 0.7, w * rng.uniform(0.42, 0.6)) < 1, 6)
    for side in (-1, 1):
        lung = _ellipse(shape, h * rng.uniform(0.38, 0.48), cx + side * w * rng.uniform(0.17, 0.24),
                        h * rng.uniform(0.28, 0.38), w * rng.uniform(0.11, 0.16), rng.normal(0, 0.15)) < 1
        att -= rng.uniform(0.5, 0.9) * soft(lung, 3)
    att += rng.uniform(0.3, 0.7) * soft(_ellipse(shape, h * 0.58, cx + w * 0.06, h * 0.17, w * 0.16, 0.5) < 1, 4)
    dome = np.mgrid[: h, : w][0] > h * rng.uniform(0.68, 0.8) + 0.004 / scale * (np.arange(w) - cx) ** 2
    att += rng.uniform(0.6, 1.2) * soft(dome, 2)
    spine = np.abs(np.arange(w) - cx) < w * 0.05
    vertebrae = 1 + 0.3 * (np.sin(np.arange(h) * 2 * np.pi / (h * 0.06)) > 0.7)
    att += rng.uniform(0.3, 0.6) * soft(spine[None, :] * vertebrae[:, None], 2)
    yy, xx = np.mgrid[: h, : w].astype(np.float32)
    for k in range(rng.integers(5, 10)):  # ribs: arcs with brighter cortical edges
        y0, side = h * (0.15 + 0.08 * k + rng.normal(0, 0.01)), rng.choice([-1, 1])
        centre = y0 + 0.0025 / scale * (xx - cx) ** 2 - 0.15 * side * (xx - cx)
        d = np.abs(yy - centre)
        rib = (d < 5 * scale) & (np.sign(xx - cx) == side) & (np.abs(xx - cx) > w * 0.06)
        edge = rib & (d > 3.5 * scale)
        att += rng.uniform(0.08, 0.2) * soft(rib, 1) + 0.1 * soft(edge, 0.7)
    fold = yy - (h * rng.uniform(0.2, 0.9) + 0.2 * h * np.sin(xx / w * rng.uniform(1, 3)))
    att += rng.uniform(0.05, 0.2) * soft(fold > 0, 0.8) * (rng.random() < 0.5)  # a skin fold's edge
    return att.astype(np.float32)


def _confusers(rng, shape, scale):
    """Unlabelled look-alikes: sternal wires, clips, ECG electrodes and leads, contrast vessels."""
    h, w = shape
    att = np.zeros(shape, np.float32)
    for k in range(rng.integers(0, 6)):  # sternal wire loops down the midline
        ring = _ellipse(shape, h * (0.3 + 0.07 * k), w * 0.5, 5 * scale, 8 * scale)
        att += 1.5 * ((ring > 0.55) & (ring < 1.0))
    for _ in range(rng.integers(0, 5)):  # surgical clips
        clip = _ellipse(shape, rng.uniform(0, h), rng.uniform(0, w), 5 * scale, 1.2 * scale, rng.uniform(0, np.pi)) < 1
        att += 2.0 * clip
    for _ in range(rng.integers(0, 5)):  # ECG electrode (pad and snap) with its lead leaving the image
        cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
        pad = _ellipse(shape, cy, cx, 9 * scale, 9 * scale)
        att += 0.15 * (pad < 1) + 1.5 * (pad < 0.06)
        lead = _path(rng, h, w, scale, pigtail=False)[::-1]
        lead = lead + (np.array([cy, cx]) - lead[-1])
        chord, _ = _tube(lead, rng.uniform(0.8, 1.6) * scale, shape)
        att += rng.uniform(0.1, 0.4) * chord
    for _ in range(rng.integers(0, 3)):  # a contrast-filled vessel tree: tapering branches
        pts = _path(rng, h, w, scale, pigtail=False)
        for b, r in enumerate(np.linspace(3.5, 1.0, 3) * scale):
            part = pts[int(len(pts) * b / 3): int(len(pts) * (b + 1) / 3)]
            if len(part) > 8:
                chord, _ = _tube(part, r, shape)
                att += rng.uniform(0.05, 0.12) * chord
    return att


def _burn_in(rng, img, lo, hi):
    """Burnt-in text-like marks (saturated strokes), collimator shutters and a round field edge."""
    h, w = img.shape
    for _ in range(rng.integers(1, 6)):  # text: rows of small stroked glyphs near a corner
        y, x = int(rng.choice([0.04, 0.9]) * h), int(rng.uniform(0.03, 0.7) * w)
        gh = max(int(h * 0.025), 5)
        for g in range(rng.integers(2, 8)):
            gx = x + g * int(gh * 0.8)
            for _ in range(3):
                y0, x0 = y + rng.integers(0, gh), gx + rng.integers(0, gh // 2 + 1)
                if rng.random() < 0.5:
                    img[y0:y0 + max(gh // 6, 1), x0:x0 + gh // 2] = hi
                else:
                    img[y0:y0 + gh // 2, x0:x0 + max(gh // 6, 1)] = hi
    if rng.random() < 0.6:  # shutters: straight dark bands
        m = int(rng.uniform(0.03, 0.12) * h)
        img[:m] = lo + 0.05 * (hi - lo)
        img[h - m:] = lo + 0.05 * (hi - lo)
    if rng.random() < 0.5:  # the round edge of an image intensifier
        img[_ellipse(img.shape, h / 2, w / 2, h * 0.55, w * 0.55) > 1] = lo
    return img


# --- detector and display ------------------------------------------------------------------------

def _detect(rng, att, log_response, bright, bits, dose, gamma):
    """Counts = dose * exp(-att) with Poisson and electronic noise and blur; then the display."""
    counts = rng.poisson(dose * np.exp(-att)).astype(np.float32) + rng.normal(0, 2, att.shape)
    counts = ndimage.gaussian_filter(np.maximum(counts, 0.5), rng.uniform(0.3, 0.9))
    v = -np.log(counts / dose) if log_response else counts / counts.max()
    lo, hi = np.percentile(v, [0.5, 99.5])
    v = np.clip((v - lo) / (hi - lo + 1e-6), 0, 1) ** gamma
    if log_response != bright:  # log shows attenuating bright; counts show it dark
        v = 1 - v
    top = 2**bits - 1
    return np.round(v * top).astype(np.float32), 0.0, float(top)


_STYLE = {  # kind: (log response, attenuating bright, bits, dose range, gamma range, confusers)
    "fluoro": (None, False, 12, (100, 3000), (0.7, 1.4), False),
    "bright-attenuating": (True, True, 16, (200, 5000), (0.7, 1.4), False),
    "linear-8bit": (False, None, 8, (100, 1000), (0.4, 2.2), False),
    "confusers": (None, None, 12, (100, 3000), (0.7, 1.4), True),
    "guidewire-1024": (None, None, 12, (300, 3000), (0.7, 1.4), False),
}


def _xray_run(seed, n_frames, size, kind):
    rng = np.random.default_rng(seed)
    shape = (1024, 1024) if kind == "guidewire-1024" else tuple(size)
    scale = max(shape) / 256
    log, bright, bits, dose, gamma, confusers = _STYLE[kind]
    log = rng.random() < 0.5 if log is None else log
    bright = rng.random() < 0.5 if bright is None else bright
    dose, gamma = float(np.exp(rng.uniform(*np.log(dose)))), rng.uniform(*gamma)
    body = _chest(rng, shape, scale) + (_confusers(rng, shape, scale) if confusers else 0)
    dev, mask = _devices(rng, shape, scale, wires_only=kind == "guidewire-1024", thin=kind == "guidewire-1024")
    frames = np.empty((n_frames, *shape), np.float32)
    masks = np.empty((n_frames, *shape), np.uint8)
    for t in range(n_frames):
        shift = rng.normal(0, 0.7 * scale, 2)
        moved = ndimage.shift(dev, shift, order=1)
        frames[t], lo, hi = _detect(rng, body + moved, log, bright, bits, dose, gamma)
        masks[t] = ndimage.shift(mask.astype(np.float32), shift, order=1) >= 0.5
        if confusers:
            frames[t] = _burn_in(rng, frames[t], lo, hi)
    return frames, masks


# --- devices composited into real radiographs -----------------------------------------------------

def _radiograph_run(seed, n_frames, kind):
    """A held-out real radiograph (or a random crop of it: other scales); devices composited in the
    attenuation domain: the display is taken as log attenuation, T = exp(-k v), T' = T exp(-mu L)."""
    from .realxray import held_out, load

    names = held_out()
    rng = np.random.default_rng(seed)
    image = load(names[seed % len(names)])
    side = int(rng.uniform(0.5, 1.0) * min(image.shape))
    y0, x0 = rng.integers(0, image.shape[0] - side + 1), rng.integers(0, image.shape[1] - side + 1)
    v = image[y0:y0 + side, x0:x0 + side].astype(np.float32)
    k = rng.uniform(2.5, 4.0)
    bright = rng.random() < 0.5
    frames = np.empty((n_frames, side, side), np.float32)
    masks = np.zeros((n_frames, side, side), np.uint8)
    for t in range(n_frames):
        att = k * v
        if kind == "radiograph":
            dev, m = _devices(rng, v.shape, rng.uniform(0.8, 1.3))  # radii in px of the radiograph (~0.35 mm)
            att = att + dev
            masks[t] = m
        dose = float(np.exp(rng.uniform(np.log(300), np.log(5000))))
        counts = rng.poisson(dose * np.exp(-att)).astype(np.float32)
        shown = np.clip(-np.log(np.maximum(counts, 0.5) / dose) / k, 0, 1)
        frames[t] = np.round(255 * (shown if bright else 1 - shown))
    return frames, masks


def stress_run(seed: int, n_frames: int = 4, size=(256, 256), kind: str = "fluoro"):
    """One stress run: frames float32 (T, H, W) (values in the kind's bit depth), masks uint8."""
    if kind not in KINDS:
        raise ValueError(f"unknown stress kind '{kind}'; known: {', '.join(KINDS)}")
    if kind.startswith("radiograph"):
        return _radiograph_run(seed, n_frames, kind)
    return _xray_run(seed, n_frames, size, kind)


def score_cases(p, seed, runs, frames, size, kind):
    """(prediction, truth, {}) of ``runs`` stress runs of ``kind``; ``p`` a Predictor."""
    for r in range(runs):
        x, y = stress_run(seed + r, frames, (size, size), kind)
        yield p.predict(x), y, {}
