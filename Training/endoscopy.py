"""Synthetic RGB laparoscopic / endoscopic video with rigid surgical instruments and exact masks.

The tissue is a static world canvas, larger than the frame, that the camera looks at through a
smooth drift of translation, rotation and zoom. Its colour mixes two random tissue hues
(blood red .. pink .. liver brown) by low-frequency noise, with sometimes yellow fat lobules and
dark glossy blood pools, darker vessels along the zero crossings of band-limited noise, and
multiplicative texture. It is lit by the endoscope's light: Lambert shading of a height field of
smooth bumps and folds, and Blinn-Phong highlights (small saturated white specks on wet tissue).

Instruments are rigid and drawn in the image plane. Each pivots about a trocar point outside the
frame, so its shaft always enters from the border and ends at a tip inside the frame that moves
smoothly. A shaft (steel or black plastic, wider towards the camera, shaded as a cylinder with a
specular stripe, perhaps a coloured ring) carries a steel collar and a tip: two jaws opening and
closing over time (grasper, possibly fenestrated, or scissors/dissector), a hook, or a blunt
suction tip. Every part is a region ``sdf > 0`` of a signed distance-like function; the mask is
exactly the pixel centres inside any part (and inside the circular field of view, if any),
computed before motion blur and haze. Instruments cast a soft shadow on the tissue.

Then: motion blur of the instrument layer along its motion (some frames), smoke (a whitish
low-frequency veil of varying density), vignetting and sometimes a circular field of view, gain,
white balance, gamma and edge enhancement, and noise. About one video in eight has no
instrument; instruments cover typically 3-23% of a frame (median about 9%). Kind ``"smoke"``
draws the same scene, instruments and camera as ``"standard"`` for the same seed, under dense
smoke over most of the frame.

Frames are ``float32`` RGB 0..255 shaped ``(frames, height, width, 3)``; masks ``uint8`` 0/1
shaped ``(frames, height, width)``.
"""
from __future__ import annotations

from functools import lru_cache, partial
from types import SimpleNamespace

import numpy as np
from scipy import ndimage

from . import generated
from .seeds import HELD_OUT_SEED_BASE  # noqa: F401  (seeds at or above it are never trained on)

KINDS = ("standard", "smoke")
_TIPS = ("grasper", "scissors", "hook", "blunt")


def _noise(rng, shape, sigma):
    """White noise smoothed by a Gaussian of ``sigma`` pixels, normalised to unit std.

    Uniform white noise is cheaper to draw than normal; smoothed, it is Gaussian all the same.
    """
    n = ndimage.gaussian_filter(rng.random(shape, np.float32) - np.float32(0.5), sigma, mode="wrap")
    return n / (n.std() + 1e-6)


def _lerp_axis(a, n_out, axis):
    """Linear interpolation of ``a`` along ``axis`` to ``n_out`` samples (pixel centres, edges held)."""
    n_in = a.shape[axis]
    x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    i0 = np.minimum(x.astype(int), max(n_in - 2, 0))
    i1 = np.minimum(i0 + 1, n_in - 1)
    f = (x - i0).astype(np.float32).reshape([-1] + [1] * (a.ndim - 1 - axis % a.ndim))
    out, right = np.take(a, i0, axis), np.take(a, i1, axis)
    out *= 1 - f  # in place: large temporaries are costly
    right *= f
    out += right
    return out


def _up(a, shape):
    """Bilinear upsampling of the last two axes of ``a`` to ``shape`` (no BLAS: no thread pools)."""
    return _lerp_axis(_lerp_axis(a, shape[0], -2), shape[1], -1)


def _sample(canvas, y, x):
    """Bilinear samples (C, ...) of ``canvas`` (C, Ry, Rx) at pixel coordinates (y, x), mirrored
    at the edges (a cheaper ``map_coordinates(order=1, mode="mirror")`` for all channels at once)."""
    C, Ry, Rx = canvas.shape
    idx = []
    for v, n in ((y, Ry), (x, Rx)):
        v = np.mod(v, 2 * (n - 1))
        v = np.minimum(np.where(v > n - 1, 2 * (n - 1) - v, v), n - 1.001)
        i = v.astype(np.int32)
        idx.append((i, (v - i).astype(np.float32)))
    (y0, fy), (x0, fx) = idx
    flat, i = canvas.reshape(C, -1), y0 * Rx + x0
    top = flat[:, i] * (1 - fx) + flat[:, i + 1] * fx
    bottom = flat[:, i + Rx] * (1 - fx) + flat[:, i + Rx + 1] * fx
    return top * (1 - fy) + bottom * fy


@lru_cache(maxsize=4)
def _grid(H, W):
    """Row and column coordinates of the pixel centres, float32 (H, W) each, read-only."""
    rr, cc = np.mgrid[0:H, 0:W].astype(np.float32)
    rr.flags.writeable = cc.flags.writeable = False
    return rr, cc


def _smooth(x, lo, hi):
    x = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _tissue(rng, R, light):
    """Lit tissue colour on the world canvas, (3, R, R) float32, about 0..1 (highlights above)."""
    g = max(8, R // 4)
    low = np.stack([_noise(rng, (g, g), s * g / 48) for s in (6, 4, 3, 5, 8, 3, 1.5, 4)])
    hue, fat, pool, vdens, h_big, h_fold, tex, wet = low
    height = h_big * rng.uniform(0.5, 1.5) + rng.uniform(0, 2.5) * (1 - np.abs(h_fold)) ** 4
    gy, gx = np.gradient(height)
    hue, fat, pool, vdens, gy, gx, tex, wet = _up(np.stack([hue, fat, pool, vdens, gy, gx, tex, wet]), (R, R))
    ves = _up(_noise(rng, (R // 2, R // 2), 1.75 * R / 190), (R, R))
    ves_fine, bump = np.stack([_noise(rng, (R, R), s * R / 190) for s in (1.8, 1.0)])
    pool = pool + 0.4 * ves  # ragged pool edges

    def rgb(*c):
        return np.array(c, np.float32)[:, None, None]

    # albedo: two tissue hues, fat lobules, vessels, blood pools
    deep = rgb(rng.uniform(0.5, 0.8), rng.uniform(0.08, 0.22), rng.uniform(0.06, 0.18))
    if rng.random() < 0.25:  # liver-like brown
        deep = rgb(rng.uniform(0.35, 0.5), rng.uniform(0.1, 0.17), rng.uniform(0.06, 0.12))
    pale = rgb(rng.uniform(0.75, 0.95), rng.uniform(0.3, 0.55), rng.uniform(0.28, 0.5))
    m = _smooth(hue, -rng.uniform(0.3, 1.5), rng.uniform(0.3, 1.5))
    alb = (deep * (1 - m) + pale * m) * (1 + rng.uniform(0.08, 0.25) * tex)
    fat_w = _smooth(fat, rng.uniform(0.6, 1.4), 1.9) * (1 + 0.15 * bump) if rng.random() < 0.4 else 0 * fat
    fat_col = rgb(rng.uniform(0.95, 1.0), rng.uniform(0.62, 0.75), rng.uniform(0.25, 0.4))
    alb = alb * (1 - fat_w) + fat_col * fat_w * (1 + 0.1 * tex)
    w = rng.uniform(0.05, 0.12)
    vessels = np.exp(-(ves / w) ** 2) * _smooth(vdens, -0.5, 0.8) * rng.uniform(0.3, 0.8)
    vessels += np.exp(-(ves_fine / (0.7 * w)) ** 2) * _smooth(vdens, 0.0, 1.5) * rng.uniform(0.2, 0.6)
    vessels *= 1 - fat_w * 0.7
    alb = alb * (1 - np.clip(vessels, 0, 0.9) * rgb(0.35, 0.7, 0.55))
    pool_w = _smooth(pool, rng.uniform(1.4, 2.2), 2.6) if rng.random() < 0.3 else 0 * pool
    alb = alb * (1 - pool_w) + rgb(rng.uniform(0.35, 0.55), 0.03, 0.03) * pool_w
    # shading: normals of the height field (+ fine bumps, flat in pools); Blinn-Phong, view = +z
    bump_gy, bump_gx = np.gradient(bump)
    k = rng.uniform(0.8, 2.0) * (1 - 0.8 * pool_w)
    kb = rng.uniform(0.03, 0.15) * (1 - 0.8 * pool_w)
    nx, ny = -(gx * k + bump_gx * kb), -(gy * k + bump_gy * kb)
    inv = 1 / np.sqrt(nx * nx + ny * ny + 1)
    lr, lc, lz = (float(v) for v in light)
    ndl = np.clip((nx * lr + ny * lc + lz) * inv, 0, 1)
    hr, hc, hz = np.array([lr, lc, lz + 1]) / np.linalg.norm([lr, lc, lz + 1])
    ndh = np.clip((nx * float(hr) + ny * float(hc) + float(hz)) * inv, 0, 1)
    gloss = rng.uniform(0.3, 1.5) * (_smooth(wet, -1.5, 0.5) + pool_w)  # some regions are matte
    shininess = rng.uniform(100, 600)
    spec = np.zeros_like(ndh)
    lit = ndh > 1 - 8 / shininess  # elsewhere ndh ** shininess < 4e-4
    spec[lit] = gloss[lit] * ndh[lit] ** shininess
    col = alb * (rng.uniform(0.25, 0.4) + 0.8 * ndl) + spec
    lum = col.mean(0)
    col += rng.uniform(0, 1.5) * (lum - ndimage.gaussian_filter(lum, 1.5))  # edge enhancement
    return col.astype(np.float32), alb.reshape(3, -1).mean(1)


def _tools(rng, size, n):
    """Random rigid instruments: trocar outside the frame, tip path inside, shape and colours."""
    H, W = size
    S = np.sqrt(H * W)
    tools = []
    for _ in range(n):
        tip = np.array([rng.uniform(0.15, 0.85) * H, rng.uniform(0.15, 0.85) * W])
        ang = rng.uniform(0, 2 * np.pi)
        d = np.array([np.cos(ang), np.sin(ang)])  # from the trocar towards the tip
        # distance from the tip back to the border along -d, then beyond it to the trocar
        back = min((tip[i] - (0 if d[i] > 0 else lim)) / d[i]
                   for i, lim in ((0, H), (1, W)) if abs(d[i]) > 1e-9)
        trocar = tip - d * (back + rng.uniform(0.1, 0.8) * S)
        black = rng.random() < 0.5
        tools.append(dict(
            trocar=trocar, tip=tip,
            amp=rng.uniform(0.01, 0.1, (2, 2)) * S, freq=rng.uniform(0.02, 0.12, (2, 2)) * 2 * np.pi,
            phase=rng.uniform(0, 2 * np.pi, (2, 2)),
            width=rng.uniform(0.04, 0.13) * S, taper=rng.uniform(0.0, 0.8),
            shaft=(np.full(3, rng.uniform(0.03, 0.14)) + [0, 0, rng.uniform(0, 0.04)]) if black
            else np.full(3, rng.uniform(0.45, 0.8)) * rng.uniform(0.9, 1.1, 3),
            shaft_spec=rng.uniform(0.15, 0.6) if black else rng.uniform(0.4, 1.2),
            metal=np.full(3, rng.uniform(0.5, 0.85)) if rng.random() < 0.85 else np.full(3, 0.1),
            tint=rng.uniform(0.0, 0.3), spec_w=rng.uniform(0.1, 0.3),
            collar=rng.uniform(0.4, 1.6), collar_w=rng.uniform(0.75, 1.0),
            ring=(rng.uniform(0.3, 2.5), rng.uniform(0.2, 0.7),
                  [(0.1, 0.3, 0.85), (0.1, 0.65, 0.3), (0.95, 0.8, 0.1), (0.9, 0.9, 0.9)][rng.integers(4)])
            if rng.random() < 0.35 else None,
            kind=_TIPS[rng.choice(4, p=[0.45, 0.3, 0.12, 0.13])],
            jaw_len=rng.uniform(1.2, 3.0), jaw_w=rng.uniform(0.3, 0.5), curve=rng.uniform(-0.15, 0.15),
            open_max=np.deg2rad(rng.uniform(0, 70)), open_freq=rng.uniform(0.1, 0.6),
            open_phase=rng.uniform(0, 2 * np.pi), window=rng.random() < 0.3,
        ))
    return tools


def _tip_at(tool, t, size):
    """Tip position (row, col) at time ``t`` (frames), kept inside the frame."""
    osc = (tool["amp"] * np.sin(tool["freq"] * t + tool["phase"])).sum(1)
    return np.clip(tool["tip"] + osc, [0.05 * size[0], 0.05 * size[1]], [0.95 * size[0], 0.95 * size[1]])


def _cylinder(x, base, lateral, spec_gain, spec_w):
    """Colour (.., 3) of a cylinder seen from the side; ``x`` = -1..1 across its width."""
    x = np.clip(x, -1, 1)
    nz = np.sqrt(1 - x * x)
    diffuse = np.clip(lateral * x + np.sqrt(1 - lateral**2) * nz, 0, 1)
    stripe = spec_gain * np.exp(-(((x - 0.6 * lateral) / spec_w) ** 2))
    return base * (0.2 + 0.85 * diffuse)[..., None] + stripe[..., None]


def _render_tool(tool, t, rr, cc, light, tissue_mean, layer, alpha, mask):
    """Draw one instrument at time ``t`` over (layer premultiplied colour, alpha); OR its mask."""
    c = _ToolCanvas(tool, t, rr, cc, light, tissue_mean, layer, alpha, mask)
    c.shaft()
    c.collar()
    if tool["kind"] == "blunt":  # rounded end of a suction tube
        c.blunt_end()
    else:
        c.jaws(t)


class _ToolCanvas:
    """One instrument at one time, drawn in the bounding box of the segment trocar..tip grown by
    its widest part. Pixel coordinates: ``s`` along the shaft from the trocar, ``u`` across it;
    ``layer`` (3, h, w) premultiplied colour, ``alpha`` and ``mask`` are views into the frame's."""

    def __init__(self, tool, t, rr, cc, light, tissue_mean, layer, alpha, mask):
        H, W = rr.shape
        self.tool, self.tissue_mean = tool, tissue_mean
        p0, tip = tool["trocar"], _tip_at(tool, t, (H, W))
        L = float(np.linalg.norm(tip - p0))
        d = (tip - p0) / L
        nrm = np.array([-d[1], d[0]])
        (p0r, p0c), (dr, dc), (nr, nc) = (tuple(float(v) for v in a) for a in (p0, d, nrm))
        w, jl = tool["width"], tool["jaw_len"] * tool["width"]
        grow = 0.5 * w * (1 + tool["taper"] * L / np.sqrt(H * W)) + jl + w + 2
        lo = np.floor(np.minimum(p0, tip) - grow).clip(0, [H, W]).astype(int)
        hi = np.ceil(np.maximum(p0, tip) + grow).clip(0, [H, W]).astype(int)
        box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]))
        self.rr, self.cc = rr[box], cc[box]
        self.layer, self.alpha, self.mask = layer[(slice(None), *box)], alpha[box], mask[box]
        self.s = (self.rr - p0r) * dr + (self.cc - p0c) * dc  # along the shaft from the trocar
        self.u = (self.rr - p0r) * nr + (self.cc - p0c) * nc  # across it
        self.lateral = float(np.clip(light[0] * nr + light[1] * nc, -0.9, 0.9))
        self.hw = 0.5 * w * (1 + tool["taper"] * np.clip(L - self.s, 0, None) / np.sqrt(H * W))  # shaft half-width
        self.L, self.tip, self.lo, self.d, self.nrm, self.w, self.jl = L, tip, lo, (dr, dc), nrm, w, jl
        self.c_len = tool["collar"] * w  # collar length
        self.hc = 0.5 * w * tool["collar_w"]  # collar half-width
        self.metal = self.tone(tool["metal"])

    def tone(self, c):
        """Colour ``c`` tinted towards the tissue's mean colour (reflections)."""
        tint = self.tool["tint"]
        return (np.asarray(c) * (1 - tint) + tint * self.tissue_mean).astype(np.float32)

    def put(self, sdf, colour, sub=(slice(None), slice(None))):
        """Composite one part, ``sdf`` over the sub-box ``sub``; colour(sel) -> (n, 3) at sdf > -0.5."""
        lay, alp = self.layer[(slice(None), *sub)], self.alpha[sub]
        sel = sdf > -0.5
        if sel.any():
            a = np.clip(sdf[sel] + 0.5, 0, 1)
            near = 1 + 0.4 * np.clip((self.L - self.s[sub][sel]) / self.L, 0, 1)  # brighter towards the camera
            lay[:, sel] = lay[:, sel] * (1 - a) + colour(sel).T * (a * near)
            alp[sel] = alp[sel] * (1 - a) + a
            self.mask[sub] |= sdf > 0

    def shaft(self):
        """The shaft from the trocar to the collar, perhaps with a coloured ring."""
        tool, s, u, hw, L = self.tool, self.s, self.u, self.hw, self.L
        shaft = self.tone(tool["shaft"])

        def shaft_colour(sel):
            col = _cylinder(u[sel] / hw[sel], shaft, self.lateral, tool["shaft_spec"], tool["spec_w"])
            if tool["ring"] is not None:
                pos, width, rc = tool["ring"]
                on = np.abs(s[sel] - (L - self.c_len - (pos + 0.5 * width) * self.w)) < 0.5 * width * self.w
                col[on] = _cylinder(u[sel][on] / hw[sel][on], self.tone(rc), self.lateral, 0.3, 0.3)
            return col

        self.put(np.minimum(np.minimum(hw - np.abs(u), L - self.c_len - s), s), shaft_colour)

    def _metal(self, sel):
        """Colour (n, 3) of the steel collar (and blunt end) at the pixels ``sel``."""
        return _cylinder(self.u[sel] / self.hc, self.metal, self.lateral, 0.9, 0.25)

    def collar(self):
        """The steel collar between the shaft and the tip."""
        s, L = self.s, self.L
        self.put(np.minimum(self.hc - np.abs(self.u), np.minimum(L - s, s - L + self.c_len + 1)), self._metal)

    def blunt_end(self):
        """The rounded end of a suction tube."""
        sdf = self.hc - np.hypot(np.maximum(self.s - self.L, 0), self.u)
        self.put(np.minimum(sdf, self.s - self.L + 1), self._metal)

    def jaws(self, t):
        """Two jaws opening and closing over time (grasper, scissors), or a hook, in the box about the tip."""
        tool = self.tool
        opening = tool["open_max"] * (0.5 + 0.5 * np.sin(tool["open_freq"] * t + tool["open_phase"]))
        jaws = [(0, 0.0)] if tool["kind"] == "hook" else [(-1, -0.5 * opening), (1, 0.5 * opening)]
        reach = self.jl + self.hc + 2  # the jaws lie within this distance of the tip
        jlo = np.floor(self.tip - self.lo - reach).clip(0, self.rr.shape).astype(int)
        jhi = np.ceil(self.tip - self.lo + reach).clip(0, self.rr.shape).astype(int)
        sub = (slice(jlo[0], jhi[0]), slice(jlo[1], jhi[1]))
        for side, th in jaws:
            self.jaw(side, th, sub)

    def jaw(self, side, th, sub):
        """One jaw on ``side`` (-1, 1; 0: hook), turned ``th`` radians from the shaft, over ``sub``."""
        tool, kind, w, jl, (dr, dc) = self.tool, self.tool["kind"], self.w, self.jl, self.d
        rr, cc = self.rr[sub], self.cc[sub]
        djr, djc = dr * np.cos(th) - dc * np.sin(th), dr * np.sin(th) + dc * np.cos(th)
        br, bc = (float(v) for v in self.tip + side * 0.45 * self.hc * self.nrm)  # hinge of this jaw
        sj = (rr - br) * djr + (cc - bc) * djc
        x = np.clip(sj / jl, 0, 1)
        uj = (rr - br) * -djc + (cc - bc) * djr - tool["curve"] * jl * x * x
        if kind == "grasper":  # wide, blunt
            hj = tool["jaw_w"] * w * np.sqrt(1 - (x * x) ** 2) + 0.5
        elif kind == "scissors":  # tapering to a point
            hj = 0.75 * tool["jaw_w"] * w * (1 - x) ** 0.8 + 0.5
        else:  # hook: a thin rod with a bend at its end
            hj = np.full_like(x, 0.25 * w + 0.5)
        sdf = np.minimum(np.minimum(hj - np.abs(uj), sj + 1), jl - sj)
        if kind == "hook":
            bend = np.minimum(0.25 * w - np.abs(sj - jl + 0.25 * w), np.minimum(uj, 0.5 * jl - uj))
            sdf = np.maximum(sdf, bend)
        if kind == "grasper" and tool["window"] and tool["jaw_w"] * w > 6:  # fenestrated jaw
            sdf = np.minimum(sdf, (np.hypot((sj - 0.55 * jl) / (0.25 * jl), uj / (0.45 * hj)) - 1) * 3)

        def jaw_colour(sel):
            teeth = 1 + (0.12 * np.sin(sj[sel] * 2.2) if kind == "grasper" else 0)
            return _cylinder(uj[sel] / hj[sel], self.metal, self.lateral, 0.9, 0.3) * np.asarray(teeth)[..., None]

        self.put(sdf, jaw_colour, sub)


def _shift_average(stack, vec, taps):
    """Mean of ``stack`` (C, H, W) shifted along ``vec`` (pixels, total) in ``taps`` steps; edges held."""
    offs = np.rint(np.linspace(-0.5, 0.5, taps)[:, None] * vec).astype(int)
    m = int(np.abs(offs).max())
    if m == 0:
        return stack
    pad = np.pad(stack, ((0, 0), (m, m), (m, m)), mode="edge")
    H, W = stack.shape[1:]
    return sum(pad[:, m + dy:m + dy + H, m + dx:m + dx + W] for dy, dx in offs) / taps


def generate_video(seed: int, n_frames: int = 8, size: tuple[int, int] = (256, 256), kind: str = "standard"):
    """One laparoscopic video: a fixed scene, moving camera, moving instruments.

    Args:
        seed: all randomness comes from this; the same seed gives the same video. The same seed
            with the other kind gives the same scene, instruments and camera.
        n_frames: number of frames (T).
        size: (height, width) in pixels.
        kind: "standard" (light or no smoke) or "smoke": dense smoke over most of the frame, low
            contrast (held-out evaluation).

    Returns:
        frames: float32 (T, H, W, 3), RGB 0..255.
        masks: uint8 (T, H, W), 1 where a pixel centre lies on an instrument (shaft, collar, jaws)
            inside the field of view.
    """
    frames, masks, _ = _video(seed, n_frames, size, kind)
    return frames, masks


def generate_frame(seed: int, size: tuple[int, int] = (256, 256), kind: str = "standard"):
    """One frame of a new scene: (float32 (H, W, 3) RGB 0..255, uint8 (H, W) instrument mask)."""
    frames, masks, _ = _video(seed, 1, size, kind)
    return frames[0], masks[0]


def _video(seed, n_frames, size, kind):
    """generate_video, plus info: the field-of-view mask (H, W) bool."""
    if kind not in KINDS:
        raise ValueError(f"unknown endoscopy kind '{kind}'; known: {', '.join(KINDS)}")
    rng = np.random.default_rng(seed)
    H, W = size = tuple(int(v) for v in size)
    S = np.sqrt(H * W)
    # light: from the endoscope, slightly off axis; (row, col, towards the camera)
    light = np.array([*rng.normal(0, 0.35, 2), 1.0])
    light /= np.linalg.norm(light)
    world = int(np.ceil(1.5 * max(H, W)))  # world canvas side in image pixels
    tissue, tissue_mean = _tissue(rng, world // 2, light)  # stored at half resolution
    tools = _tools(rng, size, rng.choice(4, p=[0.12, 0.43, 0.33, 0.12]))
    cam = _draw_camera(rng, S)
    opt = _draw_optics(rng, size, light)
    smoke = _draw_smoke(rng, kind)
    view = _view(size, opt, world)
    frames = np.empty((n_frames, H, W, 3), np.float32)
    masks = np.empty((n_frames, H, W), np.uint8)
    for t in range(n_frames):
        img = _tissue_frame(tissue, world, cam, view, t)
        mask = np.zeros(size, bool)
        if tools:
            _composite_tools(img, mask, rng, tools, t, view, light, tissue_mean, opt)
        img *= view.illum
        if smoke.dens > 0:
            _add_smoke(img, smoke, t, view.illum)
        _sensor(img, rng, opt, view.fov255)
        frames[t] = np.moveaxis(img, 0, -1)
        masks[t] = mask & view.fov
    np.clip(frames, 0, 255, out=frames)
    return frames, masks, dict(fov=view.fov)


def _draw_camera(rng, S):
    """Camera rotation (rad), zoom and translation (pixels; ``S``: the frame's mean side) drifting
    smoothly over the video, with a little shake."""
    rot0, rot_v = rng.uniform(0, 2 * np.pi), rng.normal(0, 0.02)
    zoom0, zoom_v = rng.uniform(0.85, 1.3), rng.normal(0, 0.01)
    pan_v = rng.normal(0, 0.008, 2) * S
    shake = (rng.uniform(0, 0.01, 2) * S, rng.uniform(0.2, 1.0, 2), rng.uniform(0, 2 * np.pi, 2))
    return SimpleNamespace(rot0=rot0, rot_v=rot_v, zoom0=zoom0, zoom_v=zoom_v, pan_v=pan_v, shake=shake)


def _draw_optics(rng, size, light):
    """Optics and sensor: vignetting centre (pixels) and falloff, circular field of view (radius in
    pixels, or None), exposure, white balance (3, 1, 1), gamma, noise SD (0..255), motion blur
    probability and gain, instrument shadow (strength, offset in pixels)."""
    H, W = size
    S = np.sqrt(H * W)
    o = SimpleNamespace(centre=np.array([H, W]) * (0.5 + rng.normal(0, 0.05, 2)), falloff=rng.uniform(0.75, 1.6))
    o.circle = rng.uniform(0.95, 1.3) * 0.5 * np.hypot(H, W) / np.sqrt(2) if rng.random() < 0.3 else None
    o.exposure = rng.uniform(0.85, 1.35)
    o.balance = rng.uniform([0.95, 0.9, 0.85], [1.1, 1.05, 1.1]).astype(np.float32)[:, None, None]
    o.gamma = rng.uniform(0.75, 1.2)
    o.noise_sd = rng.uniform(0.5, 4.0)
    o.blur_p, o.blur_gain = rng.uniform(0.1, 0.5), rng.uniform(0.5, 2.5)
    o.shadow = (rng.uniform(0.2, 0.6), light[:2] / max(light[2], 0.3) * rng.uniform(0.01, 0.04) * S)
    return o


def _draw_smoke(rng, kind):
    """Smoke: a low-frequency veil (64, 64), density, its variation, alpha limits, colour (3, 1, 1)
    and drift (veil cells per frame). The same draws for both kinds, mapped to denser smoke for
    "smoke"."""
    gh = 16
    veil = _up(_noise(rng, (gh, gh), 2.0)[None], (gh * 4, gh * 4))[0]
    u_dens, u_var, u_has = rng.random(3)
    if kind == "smoke":  # dense everywhere, a little thinner in places
        dens, var, a_lim = 0.65 + 0.2 * u_dens, 0.1 + 0.3 * u_var, (0.5, 0.93)
    else:  # none in 40% of videos, else mostly light, in patches
        dens, var, a_lim = (0.05 + 0.35 * u_dens**2) * (u_has < 0.6), 0.2 + 0.5 * u_var, (0.0, 0.7)
    col = (rng.uniform(0.8, 1.0) * np.array([1.0, rng.uniform(0.95, 1.0), rng.uniform(0.9, 1.0)]))
    col = col.astype(np.float32)[:, None, None]
    return SimpleNamespace(gh=gh, veil=veil, dens=dens, var=var, a_lim=a_lim, col=col, v=rng.normal(0, 0.3, 2))


def _view(size, opt, world):
    """What every frame shares: pixel grids ``rr, cc`` (H, W), illumination (vignetting), the field of
    view (bool, and x 255 as float32), and the half-resolution grid ``gy, gx`` (pixels about the
    frame centre) on which the tissue is sampled (as fine as the canvas), then upsampled."""
    H, W = size
    S = np.sqrt(H * W)
    rr, cc = _grid(H, W)
    rad = np.hypot(rr - float(opt.centre[0]), cc - float(opt.centre[1])) / (0.5 * S)
    illum = opt.exposure / (1 + (rad / opt.falloff) ** 2) ** 2
    fov = np.ones(size, bool) if opt.circle is None else np.hypot(rr - H / 2 + 0.5, cc - W / 2 + 0.5) <= opt.circle
    h2, w2 = (H + 1) // 2, (W + 1) // 2
    gy, gx = np.meshgrid((np.arange(h2) + 0.5) * H / h2 - 0.5 - H / 2 + 0.5,
                         (np.arange(w2) + 0.5) * W / w2 - 0.5 - W / 2 + 0.5, indexing="ij")
    return SimpleNamespace(size=size, S=S, rr=rr, cc=cc, illum=illum, fov=fov, fov255=fov * np.float32(255),
                           gy=gy, gx=gx)


def _tissue_frame(tissue, world, cam, view, t):
    """The tissue canvas (3, R, R) seen by the camera at frame ``t``: float32 (3, H, W), 0..1."""
    R = world // 2
    th, z = cam.rot0 + cam.rot_v * t, cam.zoom0 * (1 + cam.zoom_v * t)
    pan = cam.pan_v * t + cam.shake[0] * np.sin(cam.shake[1] * t + cam.shake[2])
    wy = (np.cos(th) * view.gy - np.sin(th) * view.gx) / z + world / 2 + pan[0]
    wx = (np.sin(th) * view.gy + np.cos(th) * view.gx) / z + world / 2 + pan[1]
    return _up(_sample(tissue, wy * (R / world), wx * (R / world)), view.size)


def _composite_tools(img, mask, rng, tools, t, view, light, tissue_mean, opt):
    """Instruments over ``img`` (3, H, W), in place: a premultiplied colour layer and alpha, their
    soft shadow, sometimes motion blur; ORs their pixels into ``mask`` (before the blur)."""
    size, S = view.size, view.S
    layer = np.zeros((4, *size), np.float32)  # premultiplied RGB, alpha
    for tool in tools:
        _render_tool(tool, t, view.rr, view.cc, light, tissue_mean, layer[:3], layer[3], mask)
    sh = _up(ndimage.uniform_filter(layer[3, ::2, ::2], int(0.02 * S) | 1), size)
    sh = _shift_average(sh[None], 2 * opt.shadow[1], 2)[0]
    if rng.random() < opt.blur_p:
        tool = tools[rng.integers(len(tools))]
        vec = (_tip_at(tool, t + 0.5, size) - _tip_at(tool, t - 0.5, size)) * opt.blur_gain
        vec = vec + rng.normal(0, 0.01 * S, 2)
        vec *= min(1.0, 0.06 * S / (np.hypot(*vec) + 1e-6))  # at most 6% of the frame
        layer = _shift_average(layer, vec, int(np.clip(np.abs(vec).max() + 1, 2, 16)))
    img *= (1 - opt.shadow[0] * sh) * (1 - layer[3])
    img += layer[:3]


def _add_smoke(img, smoke, t, illum):
    """Smoke over ``img`` (3, H, W), in place: a drifting low-frequency veil, lit by ``illum``."""
    gh = smoke.gh
    off = smoke.v * t + 1.5 * gh
    v = ndimage.map_coordinates(smoke.veil, np.stack(np.meshgrid(
        np.linspace(0, gh, 32) + off[0], np.linspace(0, gh, 32) + off[1], indexing="ij")),
        order=1, mode="mirror")
    a = _up(np.clip(smoke.dens * (1 + smoke.var * v), *smoke.a_lim).astype(np.float32), img.shape[1:])
    img *= 1 - a
    img += a * (0.6 + 0.4 * illum) * smoke.col


def _sensor(img, rng, opt, fov255):
    """Camera: white balance, gamma, field of view, noise; ``img`` (3, H, W) 0..1 -> 0..255, in place
    (fewer large allocations)."""
    img *= opt.balance
    np.power(np.clip(img, 0, 1, out=img), opt.gamma, out=img)
    img *= fov255
    noise = rng.random(img.shape, np.float32)
    noise -= 0.5
    noise *= opt.noise_sd * np.sqrt(12)
    img += noise


# --- the instruments task's use of this generator (Training.tasks: training, synth, score) ---


training_frames = partial(generated.training_frames, generate_video)  # one generated frame per seed
score_cases = partial(generated.score_runs, generate_video)  # (prediction, truth, {}) per generated video


def sample_run(seed, n_frames, size, kind="standard"):
    """What ``cardioseg synth`` writes: an RGB video uint8 (T, H, W, 3), masks uint8, info."""
    frames, masks = generate_video(seed, n_frames=n_frames, size=size, kind=kind)
    return frames.round().astype(np.uint8), masks, {}
