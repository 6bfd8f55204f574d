"""Synthetic X-ray fluoroscopy runs with catheters and guidewires, and their exact masks.

The image is formed physically: a line integral of attenuation (mu * path length) through the
patient and the devices, then Beer-Lambert (``counts = dose * exp(-sum mu*L)``), Poisson quantum
noise, detector blur and display processing. Devices are tubes: the path length through a solid
wire of radius ``r`` at distance ``d`` from its axis is the chord ``2*sqrt(r^2 - d^2)``, so the
intensity falls towards the axis as it does on a real detector. The mask is exactly the set of
pixel centres within ``r`` of a device axis.

Frames are ``float32`` in detector units (0..4095, like 12-bit fluoroscopy), masks ``uint8``;
both are shaped ``(frames, height, width)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

# Seeds at or above this are never used for training; evaluation draws from here.
from . import generated
from .seeds import HELD_OUT_SEED_BASE  # noqa: F401  (re-exported)


@dataclass
class Device:
    points: np.ndarray  # (n, 2) axis in pixels (row, col), spaced <= 0.5 px
    radius: float  # pixels
    mu: float  # attenuation per pixel of path
    tip_mu: float  # radiopaque tip attenuation
    tip_len: int  # number of axis points in the tip
    marker_every: int  # axis points between marker bands (0: none)


def _smooth_noise(rng, shape, scales, weights):
    """Sum of Gaussian-filtered white noise at several scales (lung-like texture)."""
    out = np.zeros(shape, np.float32)
    for s, w in zip(scales, weights):
        n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), s)
        out += w * n / (n.std() + 1e-6)
    return out


def _centerline(rng, size, length, loopiness):
    """A smooth random curve entering from a random border, as (n, 2) points 0.5 px apart."""
    h, w = size
    side = rng.integers(4)
    t = rng.uniform(0.15, 0.85)
    start = [(0.0, t * w), (h - 1.0, t * w), (t * h, 0.0), (t * h, w - 1.0)][side]
    heading = [0.0, np.pi, np.pi / 2, -np.pi / 2][side] + rng.uniform(-0.6, 0.6)
    # heading is measured with x along rows: direction = (cos, sin) in (row, col)
    step = 0.5
    n = int(length / step)
    curv = np.zeros(n)
    # smooth curvature signal, with an occasional strong bend that makes a loop
    base = ndimage.gaussian_filter1d(rng.standard_normal(n), sigma=60) * 0.02 * np.sqrt(60)
    curv += base
    if rng.random() < loopiness:
        c = rng.integers(n // 4, 3 * n // 4)
        width = rng.integers(150, 400)
        sign = rng.choice([-1, 1])
        lo, hi = max(0, c - width // 2), min(n, c + width // 2)
        curv[lo:hi] += sign * 2 * np.pi / ((hi - lo) * step) * rng.uniform(0.9, 1.3)
    ang = heading + np.cumsum(curv * step)
    pts = np.empty((n, 2))
    pts[:, 0] = start[0] + np.cumsum(np.cos(ang) * step)
    pts[:, 1] = start[1] + np.cumsum(np.sin(ang) * step)
    # keep the part up to where it first leaves the image (after entering)
    inside = (pts[:, 0] >= -2) & (pts[:, 0] <= h + 1) & (pts[:, 1] >= -2) & (pts[:, 1] <= w + 1)
    out = np.nonzero(~inside)[0]
    if len(out):
        pts = pts[: max(out[0], 20)]
    return pts


def _thin_wires(rng, size, scale):
    """Only guidewires, thinner than any in the standard runs (a harder kind)."""
    devices = []
    for _ in range(rng.integers(1, 4)):
        pts = _centerline(rng, size, rng.uniform(0.6, 1.6) * max(size), loopiness=0.3)
        mu = rng.uniform(0.25, 0.6)
        tip_len = int(rng.uniform(10, 50)) if rng.random() < 0.4 else 0
        devices.append(Device(pts, rng.uniform(0.5, 0.85) * scale, mu, mu * rng.uniform(1.5, 3), tip_len, 0))
    return devices


def _random_devices(rng, size, scale):
    devices = []
    n_cath = rng.choice([1, 1, 2, 2, 3])
    for _ in range(n_cath):
        length = rng.uniform(0.5, 1.6) * max(size)
        pts = _centerline(rng, size, length, loopiness=0.3)
        kind = rng.random()
        if kind < 0.65:  # catheter
            r = rng.uniform(1.6, 4.2) * scale
            mu = rng.uniform(0.04, 0.35)
            marker = int(rng.choice([0, 0, 40, 60])) if len(pts) > 120 else 0
        else:  # guidewire, thin and dense
            r = rng.uniform(1.0, 1.7) * scale
            mu = rng.uniform(0.15, 0.7)
            marker = 0
        tip_len = int(rng.uniform(10, 50)) if rng.random() < 0.6 else 0
        devices.append(Device(pts, r, mu, mu * rng.uniform(2, 4), tip_len, marker))
        # a guidewire running out of the tip of a catheter
        if kind < 0.65 and rng.random() < 0.35 and len(pts) > 10:
            tip = pts[-1]
            d = pts[-1] - pts[-5]
            heading = np.arctan2(d[1], d[0])
            wire_len = rng.uniform(20, 80) * scale
            curv = ndimage.gaussian_filter1d(rng.standard_normal(int(wire_len / 0.5)), 20) * 0.05
            ang = heading + np.cumsum(curv * 0.5)
            wpts = tip + np.stack([np.cumsum(np.cos(ang) * 0.5), np.cumsum(np.sin(ang) * 0.5)], 1)
            devices.append(Device(wpts, rng.uniform(0.9, 1.4) * scale, rng.uniform(0.3, 0.8), 0.0, 0, 0))
    return devices


def _anatomy(rng, size):
    """Background attenuation (mu*L) of a chest: body, lungs, heart, spine, ribs, diaphragm.

    Returns the static part and the heart shadow separately, so the heart can beat.
    """
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yn, xn = yy / h, xx / w
    body = 1.2 + 0.6 * ((xn - 0.5) ** 2 * 2.0) * rng.uniform(-1, 1)
    lung = np.zeros(size, np.float32)
    for cx in (rng.uniform(0.2, 0.33), rng.uniform(0.67, 0.8)):
        e = ((xn - cx) / rng.uniform(0.16, 0.24)) ** 2 + ((yn - 0.45) / rng.uniform(0.35, 0.5)) ** 2
        lung += 1.0 / (1.0 + np.exp(np.clip((e - 1.0) * 8, -50, 50)))
    texture = _smooth_noise(rng, size, (1.5, 4, 10), (0.3, 0.5, 0.4))
    att = body - lung * rng.uniform(0.3, 0.7) + lung * texture * rng.uniform(0.02, 0.08)
    # spine: a vertical band with vertebral bodies
    sx = rng.uniform(0.4, 0.6) * w
    sw = rng.uniform(0.07, 0.12) * w
    band = np.exp(-(((xx - sx) / sw) ** 4))
    period = rng.uniform(0.09, 0.14) * h
    vert = 0.6 + 0.4 * (np.cos(2 * np.pi * (yy / period + rng.random())) > -0.6)
    att += band * vert * rng.uniform(0.3, 0.7)
    # ribs: curved arcs on both sides
    for k in range(rng.integers(4, 9)):
        y0 = rng.uniform(-0.1, 0.9) * h
        thick = rng.uniform(0.015, 0.03) * h
        curve = y0 + (np.abs(xx - sx) / w) ** 1.5 * h * rng.uniform(0.3, 0.7)
        rib = np.exp(-(((yy - curve) / thick) ** 2)) * (np.abs(xx - sx) > sw)
        att += rib * rng.uniform(0.05, 0.2)
    # diaphragm dome at the bottom
    dome = rng.uniform(0.75, 1.0) * h - 0.25 * h * np.exp(-(((xx - 0.5 * w) / (0.35 * w)) ** 2))
    att += 0.5 / (1 + np.exp(np.clip(-(yy - dome) / 4.0, -50, 50))) * rng.uniform(0.3, 1.0)
    heart = dict(
        cy=rng.uniform(0.45, 0.7) * h, cx=rng.uniform(0.35, 0.6) * w,
        ry=rng.uniform(0.2, 0.32) * h, rx=rng.uniform(0.18, 0.3) * w,
        mu=rng.uniform(0.3, 0.8), rot=rng.uniform(-0.6, 0.6),
    )
    return att.astype(np.float32), heart


def _heart_shadow(size, heart, beat):
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c, s = np.cos(heart["rot"]), np.sin(heart["rot"])
    dy, dx = yy - heart["cy"], xx - heart["cx"]
    u, v = c * dy - s * dx, s * dy + c * dx
    k = 1.0 + 0.06 * beat
    e = (u / (heart["ry"] * k)) ** 2 + (v / (heart["rx"] * k)) ** 2
    return heart["mu"] / (1.0 + np.exp(np.clip((e - 1.0) * 6.0, -50, 50)))


def _render_device(dev, size, offset):
    """Path length * mu of one device and its mask, for axis shifted by ``offset`` (row, col)."""
    h, w = size
    pts = dev.points + offset
    r = dev.radius
    lo = np.floor(pts.min(0) - r - 2).astype(int).clip(0, [h, w])
    hi = np.ceil(pts.max(0) + r + 3).astype(int).clip(0, [h, w])
    att = np.zeros(size, np.float32)
    mask = np.zeros(size, bool)
    if (hi <= lo).any():
        return att, mask
    yy, xx = np.mgrid[lo[0]:hi[0], lo[1]:hi[1]]
    grid = np.stack([yy.ravel(), xx.ravel()], 1).astype(np.float64)
    tree = cKDTree(pts)
    d, idx = tree.query(grid, distance_upper_bound=r + 1.0)
    near = np.isfinite(d)
    d = np.where(near, d, r + 1.0)
    chord = 2.0 * np.sqrt(np.clip(r * r - d * d, 0.0, None))
    mu = np.full(len(d), dev.mu, np.float64)
    idx = np.where(near, idx, 0)
    n = len(pts)
    if dev.tip_len:
        mu = np.where(idx >= n - dev.tip_len, dev.tip_mu, mu)
    if dev.marker_every:
        band = (idx % dev.marker_every) < 4
        mu = np.where(band & (idx < n - dev.tip_len), dev.mu * 3.0, mu)
    # partial-volume: average the chord over a 2x2 sub-pixel footprint via a small blur later
    att[lo[0]:hi[0], lo[1]:hi[1]] = (mu * chord).reshape(yy.shape)
    mask[lo[0]:hi[0], lo[1]:hi[1]] = (d <= r).reshape(yy.shape)
    return att, mask


def _confusers(rng, size, scale):
    """Unlabelled look-alikes of a device, as (static attenuation, [Device] that move with the
    patient): ECG electrodes and their leads, sternal wires, surgical clips, a contrast-filled
    vessel tree and a skin fold; each present in a run with probability 0.25-0.4."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    att = np.zeros(size, np.float32)
    moving = []
    if rng.random() < 0.3:  # electrodes (a pad, a metal snap) with leads (a thin core in a faint sheath)
        for _ in range(rng.integers(1, 5)):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            d2 = (yy - cy) ** 2 + (xx - cx) ** 2
            att += rng.uniform(0.05, 0.2) * (d2 < (rng.uniform(6, 11) * scale) ** 2)
            att += rng.uniform(0.8, 2.0) * (d2 < (rng.uniform(2, 3.5) * scale) ** 2)
            lead = _centerline(rng, size, rng.uniform(0.4, 1.2) * max(size), loopiness=0.2)
            lead = lead[::-1] + (np.array([cy, cx]) - lead[-1])
            moving.append(Device(lead, rng.uniform(2.0, 3.0) * scale, rng.uniform(0.01, 0.04), 0.0, 0, 0))
            moving.append(Device(lead, rng.uniform(0.4, 0.7) * scale, rng.uniform(0.2, 0.6), 0.0, 0, 0))
    if rng.random() < 0.25:  # sternal wires: small dense loops down the midline
        x0 = rng.uniform(0.4, 0.6) * w
        for k in range(rng.integers(3, 7)):
            e = ((yy - (0.2 + 0.08 * k) * h) / (3 * scale)) ** 2 + ((xx - x0) / (6 * scale)) ** 2
            att += rng.uniform(0.8, 1.8) * ((e > 0.5) & (e < 1.0))
    if rng.random() < 0.3:  # surgical clips
        for _ in range(rng.integers(1, 6)):
            a, dy, dx = rng.uniform(0, np.pi), yy - rng.uniform(0, h), xx - rng.uniform(0, w)
            u, v = dy * np.cos(a) + dx * np.sin(a), -dy * np.sin(a) + dx * np.cos(a)
            att += 1.5 * ((np.abs(u) < 4 * scale) & (np.abs(v) < 1 * scale))
    if rng.random() < 0.3:  # a contrast-filled vessel: wide, tapering, with branches
        for b in range(rng.integers(1, 4)):
            pts = _centerline(rng, size, rng.uniform(0.3, 0.9) * max(size), loopiness=0.0)
            for part, r in zip(np.array_split(pts, 3), np.array([4.0, 2.8, 1.8]) * scale / (1 + 0.4 * b)):
                if len(part) > 4:
                    a, _ = _render_device(Device(part, r, rng.uniform(0.03, 0.12), 0.0, 0, 0), size, np.zeros(2))
                    att += ndimage.gaussian_filter(a, 0.7)
    if rng.random() < 0.3:  # a skin fold: a soft step along a gentle curve
        edge = yy - (rng.uniform(0.1, 0.9) * h + rng.uniform(-0.2, 0.2) * h * np.sin(xx / w * rng.uniform(2, 5)))
        att += rng.uniform(0.05, 0.2) / (1 + np.exp(np.clip(-edge / (1.5 * scale), -50, 50)))
    return att, moving


KINDS = ("standard", "randomised", "thin-wire")

# Real images a kind of run uses, for the model file and its card (origin and attribution)
REAL_IMAGES = {"randomised": "device-free real chest radiographs as backgrounds in 30 % of runs "
                             "(Training.realxray.backgrounds(); the held-out ones never)"}


def generate_run(seed: int, n_frames: int = 8, size: tuple[int, int] = (256, 256), kind: str = "standard"):
    """One fluoroscopy run.

    Args:
        seed: all randomness comes from this; the same seed gives the same run.
        n_frames: number of frames (T).
        size: (height, width) in pixels.
        kind: "standard" (version 1's runs): the generated chest, one display (dark = attenuating,
            12-bit); "randomised": the same run (same anatomy and devices for a seed), but in 30 %
            of runs on a real radiograph instead (``Training.xraylook.real_background``; 15 % of
            those with no device), with the unlabelled look-alikes of ``_confusers`` and the
            randomised detector and display of ``Training.xraylook``; "thin-wire": standard, with
            guidewires only, radius 0.5-0.85 px at 256 (standard wires are 0.9-1.7 px), at doses of
            300 photons/px and above. Randomised runs also scale every device's radius by 0.5-1.5.

    Returns:
        frames: float32 (T, H, W), shown values: 0..4095 for standard and thin-wire, 0..2^bits-1
            (8, 12 or 16 bits) for randomised.
        masks: uint8 (T, H, W), 1 where a pixel centre lies inside a catheter or guidewire.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown run kind '{kind}'; known: {', '.join(KINDS)}")
    rng = np.random.default_rng(seed)
    size = tuple(int(s) for s in size)
    scale = max(size) / 256.0
    static, heart = _anatomy(rng, size)
    devices = _random_devices(rng, size, scale) if kind != "thin-wire" else _thin_wires(rng, size, scale)
    low_dose = 30 if kind != "thin-wire" else 300  # thin wires vanish in noise at the lowest doses
    dose = float(np.exp(rng.uniform(np.log(low_dose), np.log(3000))))  # photons per pixel
    blur = rng.uniform(0.4, 1.1) * scale
    gamma = rng.uniform(0.6, 1.4)
    sharpen = rng.uniform(0.0, 1.0) if rng.random() < 0.5 else 0.0
    collimate = rng.random() < 0.4
    period = rng.uniform(6, 20)  # frames per heart beat
    breath = rng.uniform(0, 6) * scale
    phase = rng.uniform(0, 2 * np.pi)
    drift = rng.normal(0, 0.8 * scale, 2)
    look = moving = None
    if kind == "randomised":  # drawn after the standard run's draws: a seed's anatomy and devices stay
        from . import xraylook

        look = xraylook.random_look(rng)
        thickness = rng.uniform(0.5, 1.5)  # real wires are thinner, big catheters thicker
        for dev in devices:
            dev.radius *= thickness
        confusers, moving = _confusers(rng, size, scale)
        static = static + confusers
        if rng.random() < 0.3:
            static, heart = xraylook.real_background(rng, size), dict(heart, mu=0.0)
            if rng.random() < 0.15:
                devices = []
    frames = np.empty((n_frames, *size), np.float32)
    masks = np.empty((n_frames, *size), np.uint8)
    for t in range(n_frames):
        beat = np.sin(2 * np.pi * t / period + phase)
        shift = np.array([breath * np.sin(2 * np.pi * t / (period * 3.5) + phase), 0.0]) + drift * t
        total = static + _heart_shadow(size, heart, beat)
        if abs(shift[0]) > 0.01 or abs(shift[1]) > 0.01:
            total = ndimage.shift(total, shift * 0.5, order=1, mode="nearest")
        for dev in moving or ():
            total += _render_device(dev, size, shift * 0.5)[0]
        mask = np.zeros(size, bool)
        for dev in devices:
            wobble = np.array([1.5 * scale * beat, 1.0 * scale * beat])
            a, m = _render_device(dev, size, shift + wobble)
            total += a
            mask |= m
        counts = dose * np.exp(-total)
        counts = rng.poisson(counts).astype(np.float32) / dose
        counts = ndimage.gaussian_filter(counts, blur)
        if sharpen:
            counts = counts + sharpen * (counts - ndimage.gaussian_filter(counts, 3 * scale))
        if look is not None:
            frames[t] = xraylook.display(counts, look)
        else:
            frames[t] = _standard_display(counts, static, gamma, collimate, size)
        masks[t] = mask
    return frames, masks


def _standard_display(counts, static, gamma, collimate, size):
    """Version 1's one display: dark = attenuating, gamma, 12-bit, sometimes collimated."""
    img = np.clip(counts / np.exp(-static.min()), 0, None) ** gamma
    img = img / (np.percentile(img, 99.5) + 1e-6)
    if collimate:
        m = int(0.06 * size[0])
        img[:m] *= 0.1
        img[-m:] *= 0.1
    return np.clip(img * 3500.0 + 200.0, 0, 4095)


# --- the catheter task's use of this generator (Training.tasks: training, synth, score) ---


training_frames = partial(generated.training_frames, generate_run)  # one generated frame per seed
score_cases = partial(generated.score_runs, generate_run)  # (prediction, truth, {}) per generated run


def sample_run(seed, n_frames, size, kind="standard"):
    """What ``cardioseg synth`` writes: frames uint16 (T, H, W), masks uint8, info (no spacing)."""
    frames, masks = generate_run(seed, n_frames=n_frames, size=size, kind=kind)
    return frames.round().astype(np.uint16), masks, {}
