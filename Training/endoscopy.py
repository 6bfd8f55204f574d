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
instrument; instruments cover typically 3-23% of a frame (median about 9%).

Kinds (``KINDS``; ``generate_video(..., kind=...)``, ``training_frames``, ``sample_run``, ``score_cases``):

    standard    the above (unchanged, bit for bit, since the randomised kind was added).
    smoke       the same scene, instruments and camera as "standard" for a seed, under dense smoke
                over most of the frame (held-out evaluation).
    randomised  the same scene geometry, instrument shapes and motion and camera path for a seed
                (its draws come from a second stream seeded by the seed, after the standard draws;
                the noise realisation differs), with what real acquisitions vary drawn per video:

    tissue colour      hue turned -35..35 deg (65 % of videos), 35-90 deg either way (20 %) or
                       90-180 deg (15 %: teal, blue, green displays); saturation x0.25-1.8,
                       brightness x0.45-1.5 (log-uniform), on the lit tissue
    fat                40 %: yellow fat (R 0.88-1.0, G 0.68-0.9, B 0.3-0.6) over 20-90 % of the
                       tissue, lobules about 6-24 px across (at 256 px) with reddish septa
    blood on tissue    30 %: dark red pools (R 0.25-0.5, G and B under 0.05) over 5-35 %; 30 %:
                       1-6 streaks, 2-10 px wide (at 256 px), 50-90 % opaque
    wet highlights     50 %: white specks, small and irregular, clustered where wet or bloody
                       (peak 1.5-4 x full white); 30 %: 1-5 broad sheens
    confusers          unlabelled, lying on the tissue: 2-9 in every video without instruments,
                       else in 50 %: titanium or polymer (violet, green, white, yellow) clips,
                       curved needles (half with a suture), sutures (violet, green, blue, black,
                       white, undyed) and gauze (half blood-stained)
    instruments        no instrument in 15 % more videos (about 25 % in all: empty masks); each
                       instrument's shaft (30-100 % chance per video) in steel, black plastic, matte
                       grey, gold/bronze, blue, green or white plastic, its head in steel, black
                       coating, gold or dark grey; 35 %: one more instrument of another shape
                       (a thin probe or suction tube, 2-4.5 % of the frame wide; a stapler, 10-16 %
                       wide with long nearly closed jaws; a J-hook); 30 %: blood on the heads
                       (2-6 blobs of 0.2-0.7 shaft widths, 60-95 % opaque, on 70 % of the
                       instruments); 40 %: 3-19 glints
                       per frame on them (0.6-1.5 px, 1-3 x white)
    smoke              none 40 %, light (density 0.05-0.3) 30 %, medium (0.3-0.55) 20 %, dense
                       (0.55-0.8) 10 %; variation 0.1-0.8, opacity at most 0.9, grey-white to
                       yellowish (G x0.88-1, B x0.7-1)
    light              the light's centre at 30-70 % of the frame (rows, columns); vignetting
                       fall-off radius 0.6-2.5 (log-uniform; x half the frame's mean side), or
                       0.4-0.6 (15 %); 20 %: a hot spot (gain 0.5-2.5, radius 0.1-0.35 of the side)
    exposure           auto exposure to a mean of 12-60 % of full scale (log-uniform), whatever
                       the tissue; gamma 0.5-1.8 (log-uniform)
    white balance      colour temperature t and tint m uniform -0.6..0.6 (60 %), -1..1 (25 %) or
                       -1.6..1.6 (15 %): gains R e^0.35t,
                       G e^0.3m, B e^-0.45t (amber .. blue, magenta .. green), each x0.9-1.1
    lens               25 %: camera shake, a 2-12 px motion blur of the whole frame; 30 %: defocus,
                       Gaussian 0.6-2.5 px; instrument motion blur in 0-70 % of frames (x0.5-3)
    sensor             noise SD 0.3-10 grey levels (log-uniform); 50 %: shot noise, SD
                       0.1-0.8 x sqrt(level)
    display            30 %: a monotone tone curve through 6 knots; 40 %: saturation x0.6-1.4
    optics border      black (level 0-10) outside: a circle of radius 0.6-1.0 x half the diagonal,
                       centre within 4 % (25 %), bands at top and bottom and/or the sides, 4-15 %
                       (15 %), or an octagon, corners cut by 20-50 % (15 %)
    resolution         30 %: acquired at 1/1.3-1/3 of the size (area) and interpolated back
    scale and aspect   35 %: a window of 1/1-1/1.45 of the height and, independently, the width
                       stretched to the frame
    overlays           35 %: 1-4 lines of 3-11 burnt-in glyphs (white, yellow, green, cyan),
                       some on a dark box; a red record dot in 30 % of those
    JPEG               35 %: quality 15-85, then all frames are whole numbers (8-bit)

    What is labelled (the mask) in randomised videos: the instruments' pixels as in the standard
    kind, blood, glints and smoke over them included (the mask is drawn before them, as before the
    standard kind's smoke and motion blur); never the confusers, tissue highlights, border or
    overlays (the mask is cleared under burnt-in overlays and outside the border). After a scale
    or aspect change the mask is the source mask at the nearest source pixel centre.

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

KINDS = ("standard", "smoke", "randomised")
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
        kind: "standard" (light or no smoke), "smoke": dense smoke over most of the frame, low
            contrast (held-out evaluation), or "randomised": the same scene geometry, instruments and
            camera, with what real acquisitions vary drawn per video (module docstring); its frames
            are whole numbers (8-bit).

    Returns:
        frames: float32 (T, H, W, 3), RGB 0..255.
        masks: uint8 (T, H, W), 1 where a pixel centre lies on an instrument (shaft, collar, jaws)
            inside the field of view (randomised: blood, smoke and glints on it included; clips,
            needles, sutures, gauze, highlights and burnt-in overlays never).
    """
    frames, masks, _ = _video(seed, n_frames, size, kind)
    return frames, masks


def generate_frame(seed: int, size: tuple[int, int] = (256, 256), kind: str = "standard"):
    """One frame of a new scene: (float32 (H, W, 3) RGB 0..255, uint8 (H, W) instrument mask)."""
    frames, masks, _ = _video(seed, 1, size, kind)
    return frames[0], masks[0]


def _video(seed, n_frames, size, kind):
    """generate_video, plus info: the field-of-view mask (H, W) bool and ``look`` (the randomised
    settings of ``_random_look``; None for the other kinds)."""
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
    look = None
    if kind == "randomised":  # its own stream, after the standard draws: the scene stays the seed's
        look_rng = np.random.default_rng([int(seed), 15])
        look = _random_look(look_rng, size, len(tools))
        tissue, tissue_mean = _restyle_tissue(tissue, tissue_mean, look, look_rng)
        tools = _restyle_tools(tools, look, look_rng, size)
        _restyle_optics(opt, smoke, look)
    view = _view(size, opt, world)
    if look is not None:
        view.illum = view.illum * _hotspot(view, look)
        view.illum *= _exposure(view.illum, tissue, opt, look.level)
    frames = np.empty((n_frames, H, W, 3), np.float32)
    masks = np.empty((n_frames, H, W), np.uint8)
    for t in range(n_frames):
        img = _tissue_frame(tissue, world, cam, view, t)
        mask = np.zeros(size, bool)
        if tools:
            _composite_tools(img, mask, rng, tools, t, view, light, tissue_mean, opt, look)
        img *= view.illum
        if smoke.dens > 0:
            _add_smoke(img, smoke, t, view.illum)
        if look is not None:
            _lens(img, look, t)
        _sensor(img, rng, opt, view.fov255)
        if look is not None:
            _shot_noise(img, look, look_rng)
        frames[t] = np.moveaxis(img, 0, -1)
        masks[t] = mask & view.fov
    np.clip(frames, 0, 255, out=frames)
    fov = view.fov
    if look is not None:
        frames, masks, fov = _export(frames, masks, fov, look, look_rng)
    return frames, masks, dict(fov=fov, look=look)


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


def _composite_tools(img, mask, rng, tools, t, view, light, tissue_mean, opt, look=None):
    """Instruments over ``img`` (3, H, W), in place: a premultiplied colour layer and alpha, their
    soft shadow, sometimes motion blur; ORs their pixels into ``mask`` (before the blur). With a
    randomised ``look``: blood on their heads and glints on them (labelled, as the instrument)."""
    size, S = view.size, view.S
    layer = np.zeros((4, *size), np.float32)  # premultiplied RGB, alpha
    for tool in tools:
        _render_tool(tool, t, view.rr, view.cc, light, tissue_mean, layer[:3], layer[3], mask)
    if look is not None:
        _soil_tools(layer, tools, t, view, look)
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


# --- the "randomised" kind (issue 15 point 3; ranges in the module docstring): drawn from its own
# stream (seeded by the seed), after the standard draws, so a seed keeps its scene, instruments and camera ---

_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_INV = np.linalg.inv(_YIQ)
_SHAFTS = {  # material: (colour at 0, colour at 1, specular gain range)
    "steel": ((0.45, 0.45, 0.47), (0.8, 0.8, 0.82), (0.4, 1.2)),
    "black plastic": ((0.02, 0.02, 0.03), (0.12, 0.12, 0.15), (0.1, 0.6)),
    "matte grey": ((0.25, 0.25, 0.25), (0.6, 0.6, 0.6), (0.0, 0.12)),
    "gold": ((0.55, 0.38, 0.1), (0.9, 0.7, 0.35), (0.4, 1.2)),
    "blue plastic": ((0.05, 0.15, 0.4), (0.2, 0.35, 0.75), (0.2, 0.7)),
    "green plastic": ((0.05, 0.3, 0.15), (0.2, 0.55, 0.35), (0.2, 0.7)),
    "white plastic": ((0.75, 0.75, 0.7), (0.95, 0.95, 0.92), (0.1, 0.5)),
}
_HEADS = {"steel": ((0.5,) * 3, (0.85,) * 3), "black coated": ((0.04,) * 3, (0.15,) * 3),
          "gold": ((0.6, 0.45, 0.15), (0.85, 0.68, 0.35)), "dark grey": ((0.22,) * 3, (0.4,) * 3)}
_THREADS = ((0.4, 0.2, 0.55), (0.15, 0.45, 0.25), (0.15, 0.25, 0.6), (0.05, 0.05, 0.05), (0.9, 0.9, 0.85),
            (0.75, 0.65, 0.45))
_POLYMER = ((0.45, 0.2, 0.6), (0.2, 0.5, 0.3), (0.9, 0.9, 0.88), (0.85, 0.75, 0.2))
_OVERLAY = ((255, 255, 255), (255, 240, 80), (90, 255, 120), (100, 230, 255), (235, 235, 235))


def _log_uniform(rng, lo, hi):
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _random_look(rng, size, n_tools):
    """The randomised settings of one video (``n_tools``: the standard scene's instruments)."""
    look = _scene_look(rng, n_tools)
    look.update(_camera_look(rng, size))
    return SimpleNamespace(**look)


def _scene_look(rng, n_tools):
    """Tissue colour, fat, blood, confusers, highlights, instruments and smoke of one video."""
    u = rng.random()
    hue = rng.uniform(-35, 35) if u < 0.65 else rng.choice([-1, 1]) * (
        rng.uniform(35, 90) if u < 0.85 else rng.uniform(90, 180))
    drop = rng.random() < 0.15
    empty = drop or n_tools == 0
    u = rng.random()
    smoke = None if u < 0.4 else (
        rng.uniform(0.05, 0.3) if u < 0.7 else rng.uniform(0.3, 0.55) if u < 0.9 else rng.uniform(0.55, 0.8),
        rng.uniform(0.1, 0.8), rng.uniform(0.6, 1.0) * np.array([1.0, rng.uniform(0.88, 1.0), rng.uniform(0.7, 1.0)]))
    n_confusers = int(rng.integers(2, 10)) if empty or rng.random() < 0.5 else 0
    return dict(
        hue=float(np.deg2rad(hue)), saturation=_log_uniform(rng, 0.25, 1.8), brightness=_log_uniform(rng, 0.45, 1.5),
        fat=(rng.uniform(0.2, 0.9), rng.uniform(1.5, 4.0), rng.uniform([0.88, 0.68, 0.3], [1.0, 0.9, 0.6]))
        if rng.random() < 0.4 else None,
        pools=rng.uniform(0.05, 0.35) if rng.random() < 0.3 else 0.0,
        streaks=int(rng.integers(1, 7)) if rng.random() < 0.3 else 0,
        blood_col=rng.uniform([0.25, 0.01, 0.01], [0.5, 0.05, 0.04]),
        confusers=list(rng.choice(["clip", "needle", "suture", "gauze"], n_confusers, p=[0.35, 0.2, 0.3, 0.15])),
        specks=rng.uniform(0.2, 3.0) if rng.random() < 0.5 else 0.0,
        speck_size=rng.uniform(0.4, 1.0), speck_gain=rng.uniform(1.5, 4.0),
        sheen=int(rng.integers(1, 6)) if rng.random() < 0.3 else 0,
        drop=drop, extra=str(rng.choice(["probe", "stapler", "j-hook"])) if rng.random() < 0.35 else None,
        restyle=rng.uniform(0.3, 1.0), tip_blood=rng.random() < 0.3,
        glints=(int(rng.integers(3, 20)), rng.uniform(0.6, 1.5), rng.uniform(1.0, 3.0), int(rng.integers(2**31)))
        if rng.random() < 0.4 else None,
        smoke=smoke,
    )


def _camera_look(rng, size):
    """Light, white balance, exposure, gamma, lens, sensor, display and export of one video."""
    H, W = size
    temp, tint = rng.uniform(-1, 1, 2) * rng.choice([0.6, 1.0, 1.6], p=[0.6, 0.25, 0.15])
    harsh = rng.random() < 0.15  # strong falloff (the centre then overexposed, the corners dark)
    u = rng.random()
    border = (("circle", rng.uniform(0.6, 1.0), *rng.uniform(-0.04, 0.04, 2)) if u < 0.25 else
              ("bars", *_bands(rng)) if u < 0.4 else
              ("octagon", rng.uniform(0.2, 0.5)) if u < 0.55 else None)
    return dict(
        centre=np.array([H, W]) * rng.uniform(0.3, 0.7, 2),
        falloff=rng.uniform(0.4, 0.6) if harsh else _log_uniform(rng, 0.6, 2.5),
        hotspot=(rng.uniform(0.5, 2.5), rng.uniform(0.1, 0.35)) if rng.random() < 0.2 else None,
        level=_log_uniform(rng, 0.12, 0.6), gamma=_log_uniform(rng, 0.5, 1.8),
        balance=np.exp([0.35 * temp, 0.3 * tint, -0.45 * temp]) * rng.uniform(0.9, 1.1, 3),
        noise_sd=_log_uniform(rng, 0.3, 10.0), shot=rng.uniform(0.1, 0.8) if rng.random() < 0.5 else 0.0,
        blur_p=rng.uniform(0.0, 0.7), blur_gain=rng.uniform(0.5, 3.0),
        shake=(rng.uniform(2, 12), rng.uniform(0, np.pi)) if rng.random() < 0.25 else None,
        defocus=rng.uniform(0.6, 2.5) if rng.random() < 0.3 else 0.0,
        tone=np.sort(rng.random(4)) if rng.random() < 0.3 else None,
        chroma=rng.uniform(0.6, 1.4) if rng.random() < 0.4 else 1.0,
        border=border, black=rng.uniform(0, 10),
        low_res=rng.uniform(1.3, 3.0) if rng.random() < 0.3 else None,
        crop=(rng.uniform(1.0, 1.45, 2), rng.random(2)) if rng.random() < 0.35 else None,
        overlays=rng.random() < 0.35, jpeg=int(rng.integers(15, 86)) if rng.random() < 0.35 else None,
    )


def _bands(rng):
    """Widths (fractions of the side) of black bands at the top and bottom (50 %) and at the sides
    (70 %, and whenever there are none at the top and bottom: a "bars" border always has bands)."""
    width, on = rng.uniform(0.04, 0.15, 2), rng.random(2) < [0.5, 0.7]
    on[1] |= not on[0]
    return width * on


def _restyle_optics(opt, smoke, look):
    """The standard optics and smoke of the seed, in place, with the randomised ones (the exposure
    is set by ``_exposure`` once the view is known)."""
    opt.centre, opt.falloff, opt.exposure, opt.gamma = look.centre, look.falloff, 1.0, look.gamma
    opt.balance = look.balance.astype(np.float32)[:, None, None]
    opt.noise_sd, opt.blur_p, opt.blur_gain = look.noise_sd, look.blur_p, look.blur_gain
    opt.circle = None  # the optics' border is ``look.border``, drawn on export
    if look.smoke is None:
        smoke.dens = 0.0
    else:
        smoke.dens, smoke.var, col = look.smoke
        smoke.a_lim, smoke.col = (0.0, 0.9), col.astype(np.float32)[:, None, None]


def _exposure(illum, tissue, opt, level):
    """Auto exposure: the gain that brings the frame's mean, through white balance and gamma (clipping
    aside), to ``level`` (0..1) of full scale."""
    mean = float(tissue.mean() * illum.mean() * opt.balance.mean()) + 1e-4
    return np.float32(level ** (1 / opt.gamma) / mean)


def _hotspot(view, look):
    """Extra light where the source points: 1 + gain x a Gaussian spot (H, W), or 1."""
    if look.hotspot is None:
        return 1.0
    gain, radius = look.hotspot
    d2 = ((view.rr - look.centre[0]) ** 2 + (view.cc - look.centre[1]) ** 2) / (radius * view.S) ** 2
    return (1 + gain * np.exp(-d2)).astype(np.float32)


def _restyle_tissue(tissue, tissue_mean, look, rng):
    """The lit tissue canvas (3, R, R) recoloured (hue, saturation, brightness), with fat lobules,
    blood, unlabelled confusers lying on it and wet highlights; and its new mean colour."""
    c, s, k = np.cos(look.hue), np.sin(look.hue), look.saturation
    M = look.brightness * _YIQ_INV @ np.array([[1, 0, 0], [0, k * c, -k * s], [0, k * s, k * c]]) @ _YIQ
    M = M.astype(np.float32)
    tissue = sum(M[:, j, None, None] * tissue[j] for j in range(3))
    np.maximum(tissue, 0, out=tissue)
    mean = np.maximum(M @ tissue_mean, 0.02).astype(np.float32)
    R = tissue.shape[1]
    sc = R / 192  # canvas pixels per confuser unit (a 256-pixel frame's canvas is 192 wide)
    lum = tissue.mean(0)
    local = ndimage.gaussian_filter(lum, 6 * sc) + 1e-3
    shade = np.clip(lum / local, 0.4, 1.6) * np.sqrt(np.clip(local / (lum.mean() + 1e-3), 0.3, 2.0))
    if look.fat is not None:
        _fat(tissue, shade, look.fat, rng)
    wet = _blood_pools(tissue, shade, look, rng) if look.pools else None
    for _ in range(look.streaks):
        pts = _walk(rng, R * rng.uniform(0.2, 0.8, 2), rng.uniform(0, 2 * np.pi), int(rng.integers(6, 20)),
                    rng.uniform(2, 4) * sc, 0.15)
        _stroke(tissue, pts, rng.uniform(0.6, 2.5) * sc, look.blood_col * 1.3, 0.2, rng.uniform(0.5, 0.9))
    for kind in look.confusers:
        _confuser(tissue, shade, str(kind), rng, sc)
    _specks(tissue, look, wet, rng, sc)
    return tissue.astype(np.float32), mean


def _fat(tissue, shade, fat, rng):
    """Yellow fat over ``cover`` of the canvas, in lobules of about ``cell`` pixels with reddish septa."""
    cover, cell, colour = fat
    R = tissue.shape[1]
    g = max(8, R // 4)
    region = _up(_noise(rng, (g, g), 3 * cell * g / R), (R, R))
    thr = np.quantile(region, 1 - cover)
    w = _smooth(region, thr - 0.1, thr + 0.2)
    septa = np.exp(-(_noise(rng, (R, R), cell * R / 192) / 0.2) ** 2)
    col = colour.astype(np.float32)[:, None, None] * shade * (1 - 0.45 * septa * np.float32([0.3, 1, 1])[:, None, None])
    tissue *= 1 - w
    tissue += w * col


def _blood_pools(tissue, shade, look, rng):
    """Dark red, flat blood over ``look.pools`` of the canvas, in place; returns its weight (R, R)."""
    R = tissue.shape[1]
    g = max(8, R // 4)
    n = _up(_noise(rng, (g, g), 3 * g / 48), (R, R))
    thr = np.quantile(n, 1 - look.pools)
    w = _smooth(n, thr, thr + 0.25)
    tissue *= 1 - w
    tissue += w * look.blood_col.astype(np.float32)[:, None, None] * (0.7 + 0.3 * shade)
    return w


def _walk(rng, start, heading, n, step, curl):
    """A random walk of ``n`` steps from ``start`` (row, col): points (n + 1, 2)."""
    turns = heading + np.cumsum(rng.normal(0, curl, n))
    steps = step * np.stack([np.cos(turns), np.sin(turns)], 1)
    return np.vstack([start, start + np.cumsum(steps, 0)])


def _stroke(canvas, pts, half_w, colour, shine, opacity=1.0):
    """A polyline ``pts`` (n, 2) of half-width ``half_w`` over ``canvas`` (3, R, R), in place, shaded
    as a thin cylinder with a highlight ``shine`` along its axis, antialiased."""
    R = canvas.shape[1]
    lo = np.floor(pts.min(0) - half_w - 2).clip(0, R).astype(int)
    hi = np.ceil(pts.max(0) + half_w + 2).clip(0, R).astype(int)
    if (hi <= lo).any():
        return
    rr, cc = np.mgrid[lo[0]:hi[0], lo[1]:hi[1]].astype(np.float32)
    d = np.full(rr.shape, np.inf, np.float32)
    for a, b in zip(pts[:-1], pts[1:]):
        ab = b - a
        t = np.clip(((rr - a[0]) * ab[0] + (cc - a[1]) * ab[1]) / max(ab @ ab, 1e-9), 0, 1)
        d = np.minimum(d, np.hypot(rr - a[0] - t * ab[0], cc - a[1] - t * ab[1]))
    alpha = opacity * np.clip(half_w + 0.5 - d, 0, 1)
    x = np.clip(d / max(half_w, 0.5), 0, 1)
    col = np.asarray(colour, np.float32)[:, None, None] * (0.55 + 0.45 * np.sqrt(1 - x * x)) + shine * np.exp(
        -(x / 0.35) ** 2)
    sub = canvas[:, lo[0]:hi[0], lo[1]:hi[1]]
    sub *= 1 - alpha
    sub += alpha * col


def _confuser(tissue, shade, kind, rng, sc):
    """One unlabelled object lying on the tissue: a clip, a needle (perhaps with its suture), a
    suture or a piece of gauze, near the canvas centre (where the camera looks)."""
    R = tissue.shape[1]
    centre, ang = R * rng.uniform(0.25, 0.75, 2), rng.uniform(0, 2 * np.pi)

    def towards(a):
        return np.array([np.cos(a), np.sin(a)])

    if kind == "clip":  # a V: titanium or polymer
        arm, spread = rng.uniform(3, 7) * sc, rng.uniform(0.15, 0.5)
        metal = rng.random() < 0.6
        col = np.full(3, rng.uniform(0.6, 0.85)) if metal else _POLYMER[rng.integers(len(_POLYMER))]
        pts = np.stack([centre + arm * towards(ang - spread), centre, centre + arm * towards(ang + spread)])
        _stroke(tissue, pts, rng.uniform(0.6, 1.3) * sc, col, 0.8 if metal else 0.3)
    elif kind == "needle":  # a curved needle, half the time with its suture
        radius, th = rng.uniform(4, 12) * sc, ang + np.linspace(0, rng.uniform(2.0, 3.5), 12)
        pts = centre + radius * np.stack([np.cos(th), np.sin(th)], 1)
        _stroke(tissue, pts, rng.uniform(0.4, 0.8) * sc, np.full(3, rng.uniform(0.6, 0.85)), 0.9)
        if rng.random() < 0.5:
            thread = _walk(rng, pts[-1], th[-1] + np.pi / 2, int(rng.integers(10, 30)), 2 * sc, 0.3)
            _stroke(tissue, thread, rng.uniform(0.35, 0.7) * sc, _THREADS[rng.integers(len(_THREADS))], 0.15)
    elif kind == "suture":
        pts = _walk(rng, centre, ang, int(rng.integers(15, 40)), rng.uniform(1.5, 3) * sc, rng.uniform(0.1, 0.5))
        _stroke(tissue, pts, rng.uniform(0.35, 0.8) * sc, _THREADS[rng.integers(len(_THREADS))], 0.15)
    else:
        _gauze(tissue, shade, centre, ang, rng, sc)


def _gauze(tissue, shade, centre, ang, rng, sc):
    """A piece of woven gauze (white, half the time stained with blood) with a ragged edge."""
    R = tissue.shape[1]
    r, aspect = rng.uniform(6, 20) * sc, rng.uniform(0.5, 1.0)
    lo = np.floor(centre - r - 2).clip(0, R).astype(int)
    hi = np.ceil(centre + r + 2).clip(0, R).astype(int)
    rr, cc = np.mgrid[lo[0]:hi[0], lo[1]:hi[1]].astype(np.float32)
    dy, dx = rr - centre[0], cc - centre[1]
    u, v = dy * np.cos(ang) + dx * np.sin(ang), (dx * np.cos(ang) - dy * np.sin(ang)) / aspect
    phi = np.arctan2(v, u)
    edge = r * (1 + 0.06 * np.sin(3 * phi + rng.uniform(0, 6)) + 0.05 * np.sin(7 * phi + rng.uniform(0, 6)))
    alpha = np.clip(edge - np.hypot(u, v), 0, 1)
    period = rng.uniform(1.5, 3) * sc
    weave = 0.8 + 0.2 * np.abs(np.sin(np.pi * u / period) * np.sin(np.pi * v / period))
    col = rng.uniform(0.82, 0.97) * np.float32([1.0, 0.98, 0.93])[:, None, None] * weave
    if rng.random() < 0.5:
        stain = np.exp(-((u - rng.uniform(-r, r) / 2) ** 2 + (v - rng.uniform(-r, r) / 2) ** 2) / (0.5 * r) ** 2)
        col = col * (1 - 0.8 * stain) + 0.8 * stain * np.float32([0.55, 0.05, 0.05])[:, None, None]
    col = col * shade[lo[0]:hi[0], lo[1]:hi[1]]
    sub = tissue[:, lo[0]:hi[0], lo[1]:hi[1]]
    sub *= 1 - alpha
    sub += alpha * col


def _specks(tissue, look, pools, rng, sc):
    """Unlabelled wet highlights on the tissue (in place): white specks, clustered where a
    low-frequency wetness (and blood) is high, and a few broad sheens."""
    R = tissue.shape[1]
    if look.specks:  # the peaks of fine noise where it is wet: small, irregular, some elongated
        g = max(8, R // 8)
        wet = _up(_noise(rng, (g, g), 2.0 * g / 24), (R, R)) + (0 if pools is None else 2 * pools)
        fine = _noise(rng, (R, R), look.speck_size * sc)
        thr = 3.2 - 0.4 * look.specks  # ``specks``: 0.2 (few) .. 3 (many)
        tissue += look.speck_gain * _smooth(fine + 0.5 * np.clip(wet, -1, 2), thr, thr + 0.6)
    rr, cc = _grid(R, R)
    for _ in range(look.sheen):
        p, s = R * rng.uniform(0.25, 0.75, 2), rng.uniform(2, 5) * sc
        lo, hi = np.floor(p - 3 * s).clip(0, R).astype(int), np.ceil(p + 3 * s).clip(0, R).astype(int)
        box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]))
        tissue[:, box[0], box[1]] += rng.uniform(0.3, 0.8) * np.exp(
            -((rr[box] - p[0]) ** 2 + (cc[box] - p[1]) ** 2) / (2 * s * s))


def _material(rng):
    """A shaft material of ``_SHAFTS``: (colour (3,), specular gain)."""
    lo, hi, spec = _SHAFTS[list(_SHAFTS)[rng.integers(len(_SHAFTS))]]
    return np.asarray(lo) + (np.asarray(hi) - np.asarray(lo)) * rng.uniform(), rng.uniform(*spec)


def _restyle_tools(tools, look, rng, size):
    """The seed's instruments (same geometry and motion) in other materials, some with blood on
    their heads, perhaps one more of another shape; none if the video is to show none."""
    if look.drop:
        return []
    out = []
    for tool in tools:
        tool = dict(tool)
        if rng.random() < look.restyle:
            tool["shaft"], tool["shaft_spec"] = _material(rng)
            tool["spec_w"] = rng.uniform(0.1, 0.45)
        if rng.random() < look.restyle:
            lo, hi = _HEADS[list(_HEADS)[rng.integers(len(_HEADS))]]
            tool["metal"] = rng.uniform(lo, hi)
        tool["blood"] = [(rng.uniform(-1.5, tool["jaw_len"]), rng.uniform(-0.5, 0.5), rng.uniform(0.2, 0.7),
                          rng.uniform(0.6, 0.95)) for _ in range(rng.integers(2, 7))] \
            if look.tip_blood and rng.random() < 0.7 else None
        out.append(tool)
    if look.extra and out:
        out.insert(int(rng.integers(len(out) + 1)), _extra_tool(rng, size, look.extra))
    return out


def _extra_tool(rng, size, shape):
    """A labelled instrument of a shape the standard kind lacks: a thin probe or suction tube, a
    stapler (wide shaft, long nearly closed jaws) or a J-hook (thin rod, short bend)."""
    tool = _tools(rng, size, 1)[0]
    S = np.sqrt(size[0] * size[1])
    if shape == "probe":
        tool.update(kind="blunt", width=rng.uniform(0.02, 0.045) * S, taper=0.0, collar=rng.uniform(0.2, 0.8))
    elif shape == "stapler":
        tool.update(kind="grasper", width=rng.uniform(0.1, 0.16) * S, jaw_len=rng.uniform(2.2, 3.5),
                    jaw_w=rng.uniform(0.45, 0.55), open_max=np.deg2rad(rng.uniform(0, 12)), window=False, curve=0.0)
    else:
        tool.update(kind="hook", width=rng.uniform(0.03, 0.05) * S, jaw_len=rng.uniform(0.8, 1.6))
    tool["shaft"], tool["shaft_spec"] = _material(rng)
    tool["blood"] = None
    return tool


def _soil_tools(layer, tools, t, view, look):
    """Blood on the instruments' heads and glints on them, over ``layer`` (4, H, W), in place."""
    for tool in tools:
        if tool.get("blood"):
            _tool_blood(layer, tool, t, view, look.blood_col)
    if look.glints is not None:
        n, sigma, gain, seed = look.glints
        on = np.flatnonzero(layer[3] > 0.95)
        if on.size:
            rng = np.random.default_rng([seed, t])
            imp = np.zeros(view.size, np.float32)
            imp.flat[rng.choice(on, min(n, on.size))] = gain * 2 * np.pi * sigma**2 * rng.uniform(0.5, 1.0)
            layer[:3] += ndimage.gaussian_filter(imp, sigma) * layer[3]


def _tool_blood(layer, tool, t, view, colour):
    """Blood blobs (along, across, radius in shaft widths from the tip; opacity) on one instrument."""
    H, W = view.size
    tip = _tip_at(tool, t, view.size)
    d = (tip - tool["trocar"]) / np.linalg.norm(tip - tool["trocar"])
    nrm, w = np.array([-d[1], d[0]]), tool["width"]
    col = np.asarray(colour, np.float32)[:, None, None]
    for along, across, radius, opacity in tool["blood"]:
        p, r = tip + (along * d + across * nrm) * w, radius * w
        lo = np.floor(p - r - 1).clip(0, [H, W]).astype(int)
        hi = np.ceil(p + r + 1).clip(0, [H, W]).astype(int)
        box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]))
        b = opacity * _smooth(1 - np.hypot(view.rr[box] - p[0], view.cc[box] - p[1]) / r, 0, 0.4)
        lay = layer[:, box[0], box[1]]
        lay[:3] = lay[:3] * (1 - b) + b * lay[3] * col


def _lens(img, look, t):
    """Camera shake (motion blur of the whole frame) and defocus of ``img`` (3, H, W), in place."""
    if look.shake is not None:
        length, ang = look.shake
        ang += 0.3 * np.sin(0.7 * t)  # the direction wanders over the video
        img[:] = _shift_average(img, length * np.array([np.sin(ang), np.cos(ang)]), int(length) + 1)
    if look.defocus:
        img[:] = ndimage.gaussian_filter(img, (0, look.defocus, look.defocus))


def _shot_noise(img, look, rng):
    """Signal-dependent (shot) noise on ``img`` (3, H, W) 0..255, in place."""
    if look.shot:
        noise = rng.standard_normal(img.shape, np.float32)
        noise *= look.shot * np.sqrt(np.clip(img, 0, None))
        img += noise


def _export(frames, masks, fov, look, rng):
    """Display, optics border, lower resolution, scale and aspect, burnt-in overlays, JPEG and
    8-bit quantisation of a randomised video (T, H, W, 3); masks and field of view follow."""
    T, H, W, _ = frames.shape
    if look.tone is not None:  # a monotone tone curve through 6 knots (0 and 1 held)
        frames[:] = 255 * np.interp(frames / 255, np.linspace(0, 1, 6), np.r_[0, look.tone, 1])
    if look.chroma != 1.0:
        grey = frames.mean(-1, keepdims=True)
        frames[:] = grey + look.chroma * (frames - grey)
    if look.border is not None:
        inside = _border((H, W), look.border)
        frames[:] = frames * inside[..., None] + look.black * (1 - inside[..., None])
        masks &= inside > 0.5
        fov = fov & (inside > 0.5)
    if look.low_res is not None:
        frames = _low_res(frames, look.low_res)
    if look.crop is not None:
        frames, masks, fov = _crop(frames, masks, fov, look.crop)
    if look.overlays:
        _burn_overlays(frames, masks, rng)
    np.clip(frames, 0, 255, out=frames)
    if look.jpeg is not None:
        frames = _jpeg(frames, look.jpeg)
    return np.round(frames, out=frames), masks, fov


def _border(size, border):
    """The endoscope optics' field (H, W) float32, 1 inside, 0 in the black border, antialiased."""
    H, W = size
    rr, cc = _grid(H, W)
    y, x = rr - (H - 1) / 2, cc - (W - 1) / 2
    if border[0] == "circle":
        _, radius, dy, dx = border
        r = radius * 0.5 * np.hypot(H, W)
        return np.clip(r - np.hypot(y - dy * H, x - dx * W) + 0.5, 0, 1)
    if border[0] == "bars":  # black bands top and bottom, left and right (fractions of the side)
        _, top, side = border
        return ((np.abs(y) < (0.5 - top) * H) & (np.abs(x) < (0.5 - side) * W)).astype(np.float32)
    cut = border[1]  # an octagon: the corners cut
    return np.clip(((1 - 0.5 * cut) * (H + W) / 2 - np.abs(y) - np.abs(x)) / np.sqrt(2) + 0.5, 0, 1)


def _low_res(frames, factor):
    """Frames (T, H, W, 3) area-averaged to 1/``factor`` and bilinearly back (the same pixel centres)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    size = frames.shape[1:3]
    small = tuple(max(8, round(s / factor)) for s in size)
    x = F.interpolate(F.interpolate(x, size=small, mode="area"), size=size, mode="bilinear", align_corners=False)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def _crop(frames, masks, fov, crop):
    """A window 1/(sy, sx) of the frame at (py, px) (0..1 of the slack) stretched to the frame:
    frames bilinear, masks and field of view at the nearest source pixel centre."""
    (sy, sx), (py, px) = crop
    T, H, W, _ = frames.shape
    ys = py * H * (1 - 1 / sy) + (np.arange(H) + 0.5) / sy - 0.5
    xs = px * W * (1 - 1 / sx) + (np.arange(W) + 0.5) / sx - 0.5
    for axis, x in ((1, ys), (2, xs)):
        n = frames.shape[axis]
        x = np.clip(x, 0, n - 1)
        i0 = np.minimum(x.astype(int), n - 2)
        f = (x - i0).astype(np.float32).reshape([-1] + [1] * (3 - axis))
        frames = np.take(frames, i0, axis) * (1 - f) + np.take(frames, i0 + 1, axis) * f
    iy = np.clip(np.floor(ys + 0.5), 0, H - 1).astype(int)
    ix = np.clip(np.floor(xs + 0.5), 0, W - 1).astype(int)
    return frames, masks[:, iy][:, :, ix], fov[iy][:, ix]


def _burn_overlays(frames, masks, rng):
    """Unlabelled burnt-in text (random 3x5 glyphs, perhaps on a dark box) and a record dot, the same
    on every frame; the masks are cleared under them (the instrument is not seen there)."""
    T, H, W, _ = frames.shape
    cell = max(1, round(min(H, W) / 170))
    drawn, colour = np.zeros((H, W), bool), np.zeros((H, W, 3), np.float32)
    for _ in range(rng.integers(1, 5)):
        row = int((rng.uniform(0.01, 0.12) if rng.random() < 0.5 else rng.uniform(0.85, 0.95)) * H)
        col, n = int(rng.uniform(0.01, 0.6) * W), int(rng.integers(3, 12))
        if rng.random() < 0.3:  # a dark box behind the text
            box = np.s_[max(row - cell, 0):row + 6 * cell, max(col - cell, 0):col + 4 * n * cell]
            drawn[box], colour[box] = True, rng.uniform(0, 40)
        value = _OVERLAY[rng.integers(len(_OVERLAY))]
        for g in range(n):
            glyph = np.kron(rng.random((5, 3)) < 0.55, np.ones((cell, cell), bool))
            sub = np.s_[row:row + 5 * cell, col + 4 * g * cell:col + (4 * g + 3) * cell]
            on = glyph[: drawn[sub].shape[0], : drawn[sub].shape[1]]
            drawn[sub] |= on
            colour[sub][on] = value
    if rng.random() < 0.3:  # a red record dot in a corner
        rr, cc = _grid(H, W)
        r = 3 * cell
        dot = np.hypot(rr - rng.choice([2 * r, H - 2 * r]), cc - rng.choice([2 * r, W - 2 * r])) <= r
        drawn |= dot
        colour[dot] = (230, 30, 30)
    frames[:, drawn] = colour[drawn]
    masks[:, drawn] = 0


def _jpeg(frames, quality):
    """Frames (T, H, W, 3) 0..255 through an 8-bit JPEG of ``quality`` and back (float32)."""
    import warnings

    import torch
    from torchvision.io import decode_jpeg, encode_jpeg

    u8 = torch.from_numpy(np.round(frames).astype(np.uint8)).permute(0, 3, 1, 2).contiguous()
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its image codecs
        warnings.simplefilter("ignore", DeprecationWarning)
        out = torch.stack([decode_jpeg(encode_jpeg(f, quality=quality)) for f in u8])
    return out.permute(0, 2, 3, 1).numpy().astype(np.float32)


# --- the instruments task's use of this generator (Training.tasks: training, synth, score) ---


training_frames = partial(generated.training_frames, generate_video)  # one generated frame per seed
score_cases = partial(generated.score_runs, generate_video)  # (prediction, truth, {}) per generated video


def sample_run(seed, n_frames, size, kind="standard"):
    """What ``cardioseg synth`` writes: an RGB video uint8 (T, H, W, 3), masks uint8, info."""
    frames, masks = generate_video(seed, n_frames=n_frames, size=size, kind=kind)
    return frames.round().astype(np.uint8), masks, {}
