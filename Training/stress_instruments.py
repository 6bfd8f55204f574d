"""The instruments task's stress suite: RGB endoscopy frames made unlike the training generator, never trained on.

Written apart from ``Training.endoscopy`` (its own tissue, lighting, instruments, confusers and camera;
nothing of it is called) so that a model that learnt the generator's look, not the instruments,
fails here. The renderer: a tissue canvas larger than the frame (two-octave value noise for colour,
a height field shaded by a light at the camera with inverse-square fall-off of depth, branching
vessels drawn as random walks, a Phong lobe and wet specks), seen by a camera that pans, turns and
zooms; instruments drawn in the image plane as tapered capsules and arcs, each pivoting about a
trocar outside the frame so that its shaft enters from a border while its tip moves, its jaws open
and close and it goes in and out; then the endoscope's light (vignetting), smoke, the display
(white balance, gamma), chroma blur, noise and 8-bit quantisation. Motion: the camera pans about
1.5 % of the frame, turns about 0.02 rad and zooms about 1.5 % per frame (SDs); each tip drifts
about 2.5 % of the frame per frame (SD) plus a swing of 2-6 %, jaws open and close. Shaft radii
2.5-6 % of the frame side (suction tubes 2-3.5 %, clip appliers 4.5-7 %, staplers 5-8 %), wider
towards the trocar. Per kind:

    laparoscopy        the independent renderer, ordinary look: red, pink, liver-brown or peritoneal
                       tissue, bowel loops in 60 % of runs, exposure 0.9-1.2, vignetting fall-off
                       radius 0.8-1.4 (x half the frame diagonal: corners at 15-45 %), 1-3 graspers,
                       dissectors or scissors (steel or black shafts), wet highlights over 0.1-0.6 %
    fat-field          fat-dominated fields: about 60-95 % of the tissue pale yellow/cream fat lobules
                       (lobules 6-22 px) with reddish septa, instruments low in contrast on them
    colour-cast        dark bluish or greenish casts: red gain 0.45-0.75, green 0.8-1.4, blue 0.6-1.5
                       (bluish or greenish), exposure 0.3-0.55, noise SD 3-8, a round field of view
                       (black outside) in half the runs
    harsh-light        strong vignetting (fall-off radius 0.3-0.5: corners at 0.7-4 % of the centre),
                       exposure 1.1-1.5 and an overexposed centre (a spot of 0.15-0.35 x the frame
                       side, gain 1.5-3.5: tissue and metal clip to white there)
    nbi                narrow-band-imaging-like display: the green band shown as red, the blue band
                       as green and blue; teal mucosa, brown capillaries, cyan deep vessels, auto gain
    blood              dark glossy flat blood pools (10-40 % of the tissue), 3-8 smears, and blood
                       patches on every instrument's head and the shaft near it
    smoke              dense patchy smoke: a haze of alpha 0.25-0.5 everywhere plus 2-5 plumes of peak
                       alpha 0.5-0.95 (at most 0.97), broken by noise, grey-white to yellowish,
                       drifting about 2.5 % of the frame per frame (SD), blurring what it veils
    specular           wet highlights over 2-6 % of the tissue and 150-600 small saturated specks
                       clustered where it is wet and faces the light, a strong Phong lobe (gain
                       1.5-3), 12 glints per frame on the instruments' edges, bloom around saturation
    other-instruments  1-3 of: monopolar hooks (L or J), clip appliers holding a clip, suction-
                       irrigation tubes with side holes, staplers (articulated head, coloured
                       cartridge), needle drivers holding a curved needle with its suture; with 3-10
                       confusers left in tissue: titanium clips, Hem-o-lok polymer clips, needles,
                       sutures (violet, green, blue, white, black), gauze (some blood-stained)
    no-instrument      nothing labelled: tissue (fat lobules in 30 % of runs) with 3-10 confusers as
                       above and wet highlights over 0.2-2 %

What counts as "Instrument" (the mask): the visible pixels of tools held through a trocar: shaft,
collar, wrist, jaws, hook, suction tube, stapler head and cartridge, blood on them included, smoke
over them included. What a tool holds or has left behind is not: a clip in an applier's jaws, a
needle in a driver's jaws (where it lies over the jaws, those pixels are not labelled), sutures,
clips, needles and gauze lying in tissue. Masks are the pixel centres inside a labelled part's
outline (and inside the field of view), as uint8 0/1 (T, H, W); frames float32 RGB (T, H, W, 3),
whole numbers 0..255. Everything comes from one seed; seeds are the held-out ones
(``Training.seeds.HELD_OUT_SEED_BASE``).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

KINDS = ("laparoscopy", "fat-field", "colour-cast", "harsh-light", "nbi", "blood", "smoke", "specular",
         "other-instruments", "no-instrument")
NEGATIVE_KINDS = ("no-instrument",)  # nothing to find: scored by the pixels labelled

_COMMON = ("grasper", "dissector", "scissors")
_OTHER = ("hook", "clip-applier", "suction", "stapler", "needle-driver")


# --- small drawing kit: value noise, random walks, signed distances of capsules and arcs ---------

def _value_noise(rng, shape, cell, octaves=2, stretch=1.0, angle=0.0):
    """Random values on a lattice of ``cell`` px (``cell * stretch`` along a direction ``angle``),
    cubic-spline interpolated, octaves halving the cell; unit standard deviation (H, W) float32."""
    H, W = shape
    rr, cc = np.mgrid[:H, :W].astype(np.float32)
    u = (rr - H / 2) * np.cos(angle) - (cc - W / 2) * np.sin(angle)
    v = (rr - H / 2) * np.sin(angle) + (cc - W / 2) * np.cos(angle)
    half = 0.5 * np.hypot(H, W)
    out = np.zeros(shape, np.float32)
    for o in range(octaves):
        c = max(cell / 2**o, 1.5)
        cy, cx = c, max(c * stretch, 1.5)
        lat = rng.standard_normal((int(2 * half / cy) + 4, int(2 * half / cx) + 4)).astype(np.float32)
        out += 0.55**o * ndimage.map_coordinates(lat, [(u + half) / cy + 1.5, (v + half) / cx + 1.5], order=3,
                                                 mode="nearest")
    return out / (out.std() + 1e-6)


def _smoothstep(x, lo, hi):
    x = np.clip((x - lo) / (hi - lo), 0, 1)
    return x * x * (3 - 2 * x)


def _walk(rng, start, heading, length, curl):
    """A smooth random walk (N, 2) (row, col) every 0.5 px: heading drifts by ``curl`` rad per px (SD)."""
    n = max(int(length / 0.5), 2)
    turn = ndimage.gaussian_filter1d(rng.normal(0, curl * 0.5, n), 12) * 12
    ang = heading + np.cumsum(turn)
    return np.asarray(start, float) + np.cumsum(np.stack([np.sin(ang), np.cos(ang)], 1) * 0.5, 0)


def _line_distance(shape, walks):
    """Distance (px) of every pixel centre to the nearest point of any of ``walks``."""
    skel = np.zeros(shape, bool)
    for pts in walks:
        r, c = np.round(pts).astype(int).T
        ok = (r >= 0) & (r < shape[0]) & (c >= 0) & (c < shape[1])
        skel[r[ok], c[ok]] = True
    if not skel.any():
        return np.full(shape, 1e3, np.float32)
    return ndimage.distance_transform_edt(~skel).astype(np.float32)


def _capsule(rr, cc, a, b, ra, rb):
    """Signed distance (px, < 0 inside) to a capsule from ``a`` (radius ``ra``) to ``b`` (``rb``),
    and the coordinate across it (-1..1 at its outline) for shading."""
    (a0, a1), (b0, b1) = (float(v) for v in a), (float(v) for v in b)
    d0, d1 = b0 - a0, b1 - a1
    n2 = d0 * d0 + d1 * d1 + 1e-9
    t = np.clip(((rr - a0) * d0 + (cc - a1) * d1) / n2, 0, 1)
    er, ec = rr - (a0 + t * d0), cc - (a1 + t * d1)
    rad = ra + (rb - ra) * t
    across = (-er * d1 + ec * d0) / np.sqrt(n2) / rad
    return np.hypot(er, ec) - rad, across


def _arc(rr, cc, centre, R, a0, span, rad):
    """Signed distance to a thick circular arc (centre, radius ``R``, from angle ``a0`` over ``span``)."""
    dy, dx = rr - centre[0], cc - centre[1]
    rho = np.hypot(dy, dx)
    on = np.mod(np.arctan2(dy, dx) - a0, 2 * np.pi) <= span
    ends = [np.hypot(rr - centre[0] - R * np.sin(a), cc - centre[1] - R * np.cos(a)) for a in (a0, a0 + span)]
    d = np.where(on, np.abs(rho - R), np.minimum(*ends))
    return d - rad, np.where(on, (rho - R) / rad, 0.0)


def _cyl(across, base, spec, x0, width, amb=0.22):
    """Colour (H, W, 3) of a glossy cylinder (or rod) seen side-on, lit from the camera."""
    x = np.clip(across, -1, 1)
    nz = np.sqrt(1 - x * x)
    stripe = spec * np.exp(-((x - x0) / width) ** 2)
    return np.asarray(base, np.float32) * (amb + 0.9 * nz)[..., None] + stripe[..., None]


class _Layer:
    """Premultiplied RGB + alpha of drawn objects over an (H, W) frame, and the instrument mask."""

    def __init__(self, shape):
        self.rgb = np.zeros((*shape, 3), np.float32)
        self.alpha = np.zeros(shape, np.float32)
        self.mask = np.zeros(shape, bool)

    def put(self, sdf, colour, labelled, gain=1.0):
        """Composite a part (``sdf`` < 0 inside; ``colour`` (H, W, 3) or a function of the pixels);
        labelled parts set the mask where their centre is inside, unlabelled ones clear it."""
        a = np.clip(0.5 - sdf, 0, 1)
        sel = a > 0
        if not sel.any():
            return
        col = colour(sel) if callable(colour) else colour[sel]
        a = a[sel]
        g = gain[sel] if isinstance(gain, np.ndarray) else gain
        self.rgb[sel] = self.rgb[sel] * (1 - a[:, None]) + col * (a * g)[:, None]
        self.alpha[sel] = self.alpha[sel] * (1 - a) + a
        inside = sdf <= 0
        self.mask = self.mask | inside if labelled else self.mask & ~inside

    def over(self, img):
        img *= 1 - self.alpha[..., None]
        img += self.rgb
        return img


# --- tissue --------------------------------------------------------------------------------------

def _tissue(rng, shape, S, kind):
    """The lit tissue canvas (Hc, Wc, 3), display-like values (1 = white; highlights above)."""
    H, W = shape
    rr, cc = np.mgrid[:H, :W].astype(np.float32)
    hue = _value_noise(rng, shape, rng.uniform(0.25, 0.6) * S)
    tex = _value_noise(rng, shape, rng.uniform(0.02, 0.06) * S)
    fine = _value_noise(rng, shape, rng.uniform(0.008, 0.02) * S, octaves=1)
    # albedo: two tissue colours mixed by low-frequency noise, texture
    red = np.array([rng.uniform(0.55, 0.85), rng.uniform(0.12, 0.3), rng.uniform(0.1, 0.25)])
    other = [np.array([rng.uniform(0.85, 1.0), rng.uniform(0.45, 0.65), rng.uniform(0.45, 0.6)]),  # pink
             np.array([rng.uniform(0.4, 0.55), rng.uniform(0.15, 0.22), rng.uniform(0.1, 0.15)]),  # liver brown
             np.array([rng.uniform(0.8, 0.95), rng.uniform(0.55, 0.7), rng.uniform(0.55, 0.7)])  # peritoneum
             ][rng.integers(3)]
    m = _smoothstep(hue, -1, 1)[..., None]
    alb = (red * (1 - m) + other * m) * (1 + 0.12 * tex + 0.05 * fine)[..., None]
    height = _value_noise(rng, shape, rng.uniform(0.3, 0.7) * S) * rng.uniform(0.04, 0.12) * S
    if rng.random() < 0.6:  # bowel loops: tubes of 0.08-0.2 x the frame in radius, lying on each other
        for _ in range(rng.integers(2, 6)):
            R = rng.uniform(0.08, 0.2) * S
            loop = _walk(rng, rng.uniform(0, 1, 2) * (H, W), rng.uniform(0, 2 * np.pi), rng.uniform(0.8, 2) * S, 0.008)
            dist = _line_distance(shape, [loop])
            height = np.maximum(height, rng.uniform(0, 0.1) * S + 0.5 * np.sqrt(np.clip(R * R - dist * dist, 0, None)))
    if kind == "fat-field" or (kind == "no-instrument" and rng.random() < 0.3):
        # fat lobules: cells around random centres, bulging, with thin reddish septa between them
        cell = rng.uniform(6, 22)
        pts = np.stack([rng.uniform(0, H, int(H * W / cell**2)), rng.uniform(0, W, int(H * W / cell**2))], 1)
        d, _ = cKDTree(pts).query(np.stack([rr.ravel(), cc.ravel()], 1), k=2)
        d1, d2 = d[:, 0].reshape(shape), d[:, 1].reshape(shape)
        septa = np.exp(-(((d2 - d1) / (0.12 * cell)) ** 2)).astype(np.float32)
        frac = rng.uniform(0.6, 0.95)
        fat_w = _smoothstep(_value_noise(rng, shape, 0.3 * S), np.quantile(hue, 1 - frac) - 0.5, 0.4)
        fat_w = fat_w * (1 - 0.6 * septa)
        fat = np.array([rng.uniform(0.92, 1.0), rng.uniform(0.78, 0.92), rng.uniform(0.38, 0.7)])
        alb = alb * (1 - fat_w[..., None]) + fat * (1 + 0.04 * tex)[..., None] * fat_w[..., None]
        height = height + fat_w * (cell * 0.35) * np.sqrt(np.clip(1 - (d1 / (0.7 * cell)) ** 2, 0, 1))
    # vessels: branching random walks, three calibres; superficial ones absorb blue most, deep ones green
    walks = {w: [] for w in (0.8, 1.8, 3.5)}
    for _ in range(rng.integers(3, 9)):
        trunk = _walk(rng, rng.uniform(0, 1, 2) * (H, W), rng.uniform(0, 2 * np.pi), rng.uniform(0.4, 1.2) * S, 0.02)
        walks[rng.choice([1.8, 3.5])].append(trunk)
        for _ in range(rng.integers(2, 8)):
            p = trunk[rng.integers(len(trunk))]
            walks[0.8].append(_walk(rng, p, rng.uniform(0, 2 * np.pi), rng.uniform(0.05, 0.3) * S, 0.06))
    shade = np.ones((*shape, 3), np.float32)
    for w, ws in walks.items():
        v = np.exp(-((_line_distance(shape, ws) / w) ** 2)) * rng.uniform(0.3, 0.7)
        absorb = np.array([0.25, 0.75, 0.9]) if w < 1 else np.array([0.4, 0.85, 0.6])
        shade *= 1 - v[..., None] * absorb
    alb *= shade
    wet = _smoothstep(_value_noise(rng, shape, 0.15 * S), -0.6, 0.8)
    if kind == "blood":  # pools (flat, dark, glossy) and smears (streaks along a direction)
        x = _value_noise(rng, shape, 0.2 * S) + 0.4 * tex
        lo = np.quantile(x, 1 - rng.uniform(0.1, 0.4)) - 0.15
        pool = _smoothstep(x, lo, lo + 0.3)
        ang = rng.uniform(0, np.pi)
        for _ in range(rng.integers(3, 9)):
            cy, cx = rng.uniform(0, H), rng.uniform(0, W)
            along = ((rr - cy) * np.cos(ang) + (cc - cx) * np.sin(ang)) / (rng.uniform(0.1, 0.3) * S)
            acr = (-(rr - cy) * np.sin(ang) + (cc - cx) * np.cos(ang)) / (rng.uniform(0.01, 0.04) * S)
            pool = np.maximum(pool, rng.uniform(0.5, 0.9) * np.exp(-along**2 - acr**2) * (0.7 + 0.3 * fine))
        blood = np.array([rng.uniform(0.3, 0.5), rng.uniform(0.01, 0.05), rng.uniform(0.01, 0.05)])
        alb = alb * (1 - pool[..., None]) + blood * pool[..., None]
        wet = np.maximum(wet, pool)
    # shading: normals from the height field on a surface seen obliquely, light at the camera; depth
    # fall-off (a tilted surface); blood pools are flat
    tilt = rng.normal(0, 0.6, 2)
    gy, gx = np.gradient(ndimage.gaussian_filter(height, 1.0))
    flat = 1 - 0.85 * pool if kind == "blood" else 1
    gy, gx = gy * flat + tilt[0] * 0.5, gx * flat + tilt[1] * 0.5
    inv = 1 / np.sqrt(gx * gx + gy * gy + 1)
    depth = 1 + 0.35 * ((rr / H - 0.5) * tilt[0] + (cc / W - 0.5) * tilt[1]) + 0.05 * hue
    col = alb * ((0.15 + 0.85 * inv) / np.clip(depth, 0.5, 2) ** 2)[..., None]
    gain = rng.uniform(1.5, 3.0) if kind == "specular" else rng.uniform(0.3, 1.0)
    col += (gain * wet * inv ** rng.uniform(200, 800))[..., None]  # Phong lobe about the view axis
    # wet highlights: irregular specks and streaks along the folds, saturated
    streak = _value_noise(rng, shape, rng.uniform(0.006, 0.015) * S, 1, rng.uniform(1, 3), rng.uniform(0, np.pi))
    cover = {"specular": (0.02, 0.06), "no-instrument": (0.002, 0.02)}.get(kind, (0.001, 0.006))
    thr = np.quantile(streak * (0.4 + wet), 1 - rng.uniform(*cover))
    specks = _smoothstep(streak * (0.4 + wet), thr, thr + 0.25)
    if kind == "specular":  # and many small round ones
        sp = np.zeros(shape, np.float32)
        n = int(rng.integers(150, 600))
        where = (wet * inv ** 30).ravel() + 1e-3  # clustered where wet and facing the light
        at = rng.choice(H * W, n, p=where / where.sum())
        sp.flat[at] = rng.uniform(0.3, 2.0, n) ** 2
        specks = np.maximum(specks, np.clip(ndimage.gaussian_filter(sp, 1.0) * 6, 0, 1))
    col += (2.5 * specks)[..., None]
    return col.astype(np.float32)


def _confusers(rng, tissue, S, n):
    """Unlabelled things left in the tissue, drawn onto the canvas in place: titanium clips, polymer
    (Hem-o-lok) clips, curved needles, sutures with a knot, gauze."""
    H, W = tissue.shape[:2]
    rr, cc = np.mgrid[:H, :W].astype(np.float32)
    lay = _Layer((H, W))
    threads = []
    for _ in range(n):
        what = rng.choice(["clip", "hemolok", "needle", "suture", "gauze"], p=[0.3, 0.15, 0.15, 0.3, 0.1])
        p = rng.uniform(0.1, 0.9, 2) * (H, W)
        ang = rng.uniform(0, 2 * np.pi)
        d = np.array([np.sin(ang), np.cos(ang)])
        if what in ("clip", "hemolok"):
            ln, r = rng.uniform(0.04, 0.08) * S, max(rng.uniform(0.006, 0.012) * S, 1.0)
            col = np.full(3, rng.uniform(0.6, 0.85)) if what == "clip" else \
                [np.array([0.45, 0.2, 0.6]), np.array([0.2, 0.55, 0.3]), np.array([0.85, 0.85, 0.8])][rng.integers(3)]
            if what == "hemolok":
                r *= 1.6
            spread = rng.uniform(0.05, 0.3)
            for side in (-1, 1):
                dd = np.array([np.sin(ang + side * spread), np.cos(ang + side * spread)])
                sdf, acr = _capsule(rr, cc, p, p + dd * ln, r, r)
                lay.put(sdf, lambda s, acr=acr, col=col: _cyl(acr[s], col, 1.0, 0.2, 0.35), False)
        elif what == "needle":
            R = rng.uniform(0.04, 0.1) * S
            sdf, acr = _arc(rr, cc, p, R, ang, rng.uniform(0.6, 1.6), max(0.008 * S, 0.8))
            lay.put(sdf, lambda s, acr=acr: _cyl(acr[s], np.full(3, 0.7), 1.2, 0.1, 0.4), False)
        elif what == "suture":
            threads.append((_walk(rng, p, ang, rng.uniform(0.2, 0.6) * S, 0.03), rng.uniform(0.6, 1.5),
                            [np.array([0.35, 0.12, 0.5]), np.array([0.1, 0.4, 0.2]), np.array([0.1, 0.15, 0.5]),
                             np.array([0.9, 0.88, 0.8]), np.array([0.05, 0.05, 0.05])][rng.integers(5)]))
        else:  # gauze: a bright, woven, irregular patch, sometimes blood-stained
            ry, rx = rng.uniform(0.08, 0.18, 2) * S
            blob = ((rr - p[0]) / ry) ** 2 + ((cc - p[1]) / rx) ** 2 + 0.3 * _value_noise(rng, (H, W), 0.05 * S, 1)
            weave = 0.85 + 0.15 * np.sin(rr * 1.7) * np.sin(cc * 1.7)
            col = np.array([0.95, 0.93, 0.88]) * weave[..., None]
            if rng.random() < 0.5:
                stain = _smoothstep(_value_noise(rng, (H, W), 0.05 * S, 1), 0, 1)[..., None]
                col = col * (1 - stain) + np.array([0.55, 0.05, 0.05]) * stain
            lay.put((blob - 1) * min(ry, rx) * 0.5, col.astype(np.float32), False)
    tissue = lay.over(tissue)
    for pts, w, col in threads:
        dist = _line_distance((H, W), [pts])
        a = np.clip(w + 0.5 - dist, 0, 1)[..., None] * 0.95
        knot = np.exp(-(np.hypot(rr - pts[-1][0], cc - pts[-1][1]) / (2.5 * w)) ** 2)[..., None]
        a = np.maximum(a, knot * 0.95)
        tissue = tissue * (1 - a) + a * col
    return tissue


# --- instruments ---------------------------------------------------------------------------------

def _tool(rng, shape, S, what):
    """A random instrument: trocar outside the frame, tip path inside, sizes, colours, motion."""
    H, W = shape
    tip = rng.uniform(0.2, 0.8, 2) * (H, W)
    ang = rng.uniform(0, 2 * np.pi)
    d = np.array([np.sin(ang), np.cos(ang)])
    back = min((tip[i] - (0 if d[i] > 0 else (H, W)[i])) / d[i] for i in (0, 1) if abs(d[i]) > 1e-6)
    r = {"clip-applier": (0.045, 0.07), "stapler": (0.05, 0.08), "suction": (0.02, 0.035)}.get(what, (0.025, 0.06))
    black = rng.random() < (0.9 if what in ("hook", "stapler") else 0.4)
    return dict(
        what=what, tip=tip, trocar=tip - d * (back + rng.uniform(0.2, 0.9) * S), r=rng.uniform(*r) * S,
        taper=rng.uniform(0.2, 1.0) if what != "suction" else rng.uniform(0.0, 0.3),
        vel=rng.normal(0, 0.025, 2) * S, amp=rng.uniform(0.02, 0.06, 2) * S, w=rng.uniform(0.4, 1.2, 2),
        ph=rng.uniform(0, 2 * np.pi, 2), shaft=np.full(3, rng.uniform(0.04, 0.12)) if black else
        np.full(3, rng.uniform(0.5, 0.8)) * rng.uniform(0.95, 1.05, 3),
        metal=np.full(3, rng.uniform(0.55, 0.85)) * (np.array([1.0, 0.85, 0.45]) if rng.random() < 0.15 else 1),
        spec=rng.uniform(0.5, 1.5), x0=rng.uniform(-0.5, 0.5), sw=rng.uniform(0.15, 0.35),
        jaw=rng.uniform(2.5, 4.5), open_max=rng.uniform(0.2, 1.1), open_w=rng.uniform(0.5, 1.5),
        open_ph=rng.uniform(0, 2 * np.pi), bend=rng.uniform(0.3, 0.9) * rng.choice([-1, 1]),
        curve=rng.uniform(-0.4, 0.4), hook_j=rng.random() < 0.4,
        cart=[np.array([0.9, 0.9, 0.85]), np.array([0.15, 0.3, 0.7]), np.array([0.75, 0.6, 0.2]),
              np.array([0.15, 0.5, 0.25]), np.array([0.4, 0.2, 0.5])][rng.integers(5)],
        clip=np.full(3, 0.75) if rng.random() < 0.6 else np.array([0.45, 0.2, 0.6]),
        thread=[np.array([0.35, 0.12, 0.5]), np.array([0.1, 0.4, 0.2]), np.array([0.9, 0.88, 0.8])][rng.integers(3)],
        thread_walk=rng.uniform(0, 2 * np.pi), thread_seed=int(rng.integers(1 << 30)),
        blood_seed=int(rng.integers(1 << 30)), blood_frac=rng.uniform(0.25, 0.7),
    )


def _draw_tool(tool, t, rr, cc, S, lay, env, blood):
    """Draw ``tool`` at frame ``t`` into ``lay``; ``env`` (3,) the tissue colour metal reflects."""
    H, W = rr.shape
    tip = tool["tip"] + tool["vel"] * t + tool["amp"] * np.sin(tool["w"] * t + tool["ph"])
    tip = np.clip(tip, [0.08 * H, 0.08 * W], [0.92 * H, 0.92 * W])
    p0 = tool["trocar"]
    L = float(np.linalg.norm(tip - p0))
    d = (tip - p0) / L
    n = np.array([-d[1], d[0]])
    r, what = tool["r"], tool["what"]
    # perspective: the shaft is nearer the camera towards the trocar: wider and brighter
    along = np.clip(((rr - p0[0]) * d[0] + (cc - p0[1]) * d[1]) / L, 0, 1)
    near = 1 + tool["taper"] * (1 - along) * L / S
    gain = np.clip(near, 1, 1.8) ** 1.2
    metal = tool["metal"] * 0.8 + 0.2 * env
    shaft = tool["shaft"] * 0.85 + 0.15 * env
    x0, sw, spec = tool["x0"], tool["sw"], tool["spec"]

    def part(sdf, acr, base, s=spec, labelled=True, amb=0.22):
        lay.put(sdf, lambda sel: _cyl(acr[sel], base, s, x0, sw, amb), labelled, gain)

    def rot(v, a):
        return np.array([v[0] * np.cos(a) - v[1] * np.sin(a), v[0] * np.sin(a) + v[1] * np.cos(a)])

    before = lay.mask.copy()
    head_dir = rot(d, tool["bend"]) if what == "stapler" else d  # a stapler's head turns at its wrist
    collar = 0.0 if what in ("suction",) else (0.6 if what == "stapler" else 1.0) * r
    end = tip - d * collar
    sdf, acr = _capsule(rr, cc, p0, end, r * (1 + tool["taper"] * L / S), r)
    part(sdf, acr, shaft if what != "suction" else metal)
    if collar:
        sdf, acr = _capsule(rr, cc, end, tip, 0.95 * r, 0.95 * r)
        part(sdf, acr, metal, 1.2)
    opening = tool["open_max"] * (0.5 + 0.5 * np.sin(tool["open_w"] * t + tool["open_ph"]))
    jl = tool["jaw"] * r
    if what in ("grasper", "dissector", "scissors", "needle-driver", "clip-applier"):
        if what == "needle-driver":
            jl, opening = 0.9 * jl * 0.6, 0.05
        if what == "clip-applier":
            jl, opening = 1.5 * r, 0.25 + 0.15 * opening / max(tool["open_max"], 1e-3)
            # the clip it holds, in the jaws' gap (drawn first: the jaws cover its sides; unlabelled)
            for side in (-1, 1):
                dd = rot(d, side * 0.12)
                sdf, acr = _capsule(rr, cc, tip + d * 0.2 * r, tip + dd * 1.3 * r, 0.12 * r, 0.12 * r)
                part(sdf, acr, tool["clip"], 1.0, labelled=False)
        for side in (-1, 1):
            a = side * opening / 2
            base = tip + n * side * 0.25 * r
            if what == "scissors" or what == "dissector":  # curved: two segments
                mid = base + rot(d, a) * jl * 0.55
                tipj = mid + rot(d, a + tool["curve"]) * jl * 0.5
                rads = (0.45, 0.3, 0.08) if what == "scissors" else (0.45, 0.35, 0.2)
                for (q0, q1, ra, rb) in ((base, mid, rads[0], rads[1]), (mid, tipj, rads[1], rads[2])):
                    sdf, acr = _capsule(rr, cc, q0, q1, ra * r, rb * r)
                    part(sdf, acr, metal, 1.3)
            else:
                w0, w1 = (0.5, 0.4) if what != "clip-applier" else (0.45, 0.35)
                sdf, acr = _capsule(rr, cc, base, base + rot(d, a) * jl, w0 * r, w1 * r)
                teeth = (1 + 0.15 * np.sin(((rr - base[0]) * d[0] + (cc - base[1]) * d[1]) * 2.5 / max(r * 0.08, 0.3)))
                lay.put(sdf, lambda sel, acr=acr, teeth=teeth: _cyl(acr[sel], metal, spec * 1.2, x0, sw) *
                        teeth[sel][:, None], True, gain)
        if what == "needle-driver":  # a curved needle in the jaws and its suture (unlabelled)
            R = 1.8 * r
            c = tip + d * jl * 0.7 + n * R * np.sign(tool["bend"])
            a0 = np.arctan2(*(tip + d * jl * 0.7 - c)) - 0.3
            sdf, acr = _arc(rr, cc, c, R, a0 if tool["bend"] > 0 else a0 - 2.0, 2.3, max(0.1 * r, 0.8))
            part(sdf, acr, np.full(3, 0.75), 1.5, labelled=False)
            trng = np.random.default_rng(tool["thread_seed"])
            end_pt = c + R * np.array([np.sin(a0), np.cos(a0)])
            pts = _walk(trng, end_pt, tool["thread_walk"] + 0.05 * t, 0.6 * S, 0.02)
            dist = _line_distance((H, W), [pts])
            lay.put(dist - max(0.004 * S, 0.8), np.broadcast_to(tool["thread"], (H, W, 3)), False)
    elif what == "hook":  # a thin rod out of the insulated shaft, bent at its end (L) or curled (J)
        rod = 0.22 * r
        a = tip + d * 1.6 * r
        sdf, acr = _capsule(rr, cc, tip, a, rod, rod)
        part(sdf, acr, metal, 1.4)
        if tool["hook_j"]:
            c = a + n * 0.5 * r
            sdf, acr = _arc(rr, cc, c, 0.5 * r, np.arctan2(*(a - c)), np.pi, rod)
        else:
            sdf, acr = _capsule(rr, cc, a, a + n * np.sign(tool["bend"]) * 0.8 * r, rod, rod)
        part(sdf, acr, metal, 1.4)
    elif what == "suction":  # a rounded end with dark side holes
        holes = np.zeros((H, W), np.float32)
        for k in range(3):
            q = tip - d * (0.8 + 1.1 * k) * r
            holes = np.maximum(holes, np.exp(-((rr - q[0]) ** 2 + (cc - q[1]) ** 2) / (0.35 * r) ** 2))
        sdf, acr = _capsule(rr, cc, tip - d * 4 * r, tip, r, r)
        lay.put(sdf, lambda sel: _cyl(acr[sel], metal, spec, x0, sw) * (1 - 0.85 * holes[sel])[:, None], True, gain)
    elif what == "stapler":  # anvil (steel) and cartridge (coloured) side by side, slightly open
        jl = tool["jaw"] * 1.8 * r
        for side, base_col in ((-1, metal), (1, tool["cart"])):
            q = tip + n * side * 0.35 * r
            a = rot(head_dir, side * 0.06 * opening)
            sdf, acr = _capsule(rr, cc, q, q + a * jl, 0.45 * r, 0.4 * r)
            part(sdf, acr, base_col, 0.8)
    if blood:  # blood on the instrument: patches on its head, drips on the shaft, attached to it
        brng = np.random.default_rng(tool["blood_seed"])
        s = (rr - tip[0]) * d[0] + (cc - tip[1]) * d[1]
        u = (rr - tip[0]) * n[0] + (cc - tip[1]) * n[1]
        f = sum(np.sin(s * brng.uniform(0.05, 0.3) / (0.05 * r) * 0.1 + u * brng.uniform(-0.3, 0.3) / r
                       + brng.uniform(0, 6.3)) for _ in range(4))
        near_tip = np.clip(1.3 - np.maximum(-s, 0) / (r * (2 + 4 * tool["blood_frac"])), 0, 1)
        b = _smoothstep(f, 1.5 - 3 * tool["blood_frac"], 2.2 - 3 * tool["blood_frac"]) * near_tip * 0.9
        on = (lay.mask & ~before) & (b > 0)
        col = np.array([0.42, 0.03, 0.03])
        lum = lay.rgb[on].mean(1, keepdims=True)
        wet = col * (0.5 + 0.5 * np.minimum(lum, 1)) + 0.5 * np.clip(lum - 1, 0, 1)  # keeps the strongest glints
        lay.rgb[on] = lay.rgb[on] * (1 - b[on][:, None]) + b[on][:, None] * wet


# --- the whole run -------------------------------------------------------------------------------

def _smoke_alpha(shape, t, plumes):
    """Patchy smoke (H, W) at frame ``t``: Gaussian plumes whose edges are broken by noise, drifting."""
    H, W = shape
    rr, cc = np.mgrid[:H, :W].astype(np.float32)
    a = np.zeros(shape, np.float32)
    for p in plumes:
        cy, cx = p["c"] + p["v"] * t
        q = (((rr - cy) * np.cos(p["ang"]) + (cc - cx) * np.sin(p["ang"])) / p["ry"]) ** 2 \
            + ((-(rr - cy) * np.sin(p["ang"]) + (cc - cx) * np.cos(p["ang"])) / p["rx"]) ** 2
        a = np.maximum(a, p["dens"] * np.exp(-q))
    return a


def stress_run(seed: int, n_frames: int = 4, size=(256, 256), kind: str = "laparoscopy"):
    """One stress run: frames float32 (T, H, W, 3) RGB whole numbers 0..255, masks uint8 (T, H, W)."""
    if kind not in KINDS:
        raise ValueError(f"unknown stress kind '{kind}'; known: {', '.join(KINDS)}")
    rng = np.random.default_rng(seed)
    H, W = (int(v) for v in size)
    S = float(np.sqrt(H * W))
    margin = int(0.2 * S)
    canvas = _tissue(rng, (H + 2 * margin, W + 2 * margin), S, kind)
    if kind in ("other-instruments", "no-instrument"):
        canvas = _confusers(rng, canvas, S, int(rng.integers(3, 11)))
    env = canvas.reshape(-1, 3).mean(0)
    if kind == "no-instrument":
        tools = []
    elif kind == "other-instruments":
        tools = [_tool(rng, (H, W), S, rng.choice(_OTHER)) for _ in range(rng.integers(1, 4))]
    else:
        tools = [_tool(rng, (H, W), S, rng.choice(_COMMON)) for _ in range(rng.integers(1, 4))]
    # camera: pan, turn and zoom over the canvas
    pan_v, rot_v, zoom_v = rng.normal(0, 0.015, 2) * S, rng.normal(0, 0.02), rng.normal(0, 0.015)
    # light and display
    falloff = rng.uniform(0.3, 0.5) if kind == "harsh-light" else rng.uniform(0.8, 1.4)
    exposure = {"colour-cast": (0.3, 0.55), "harsh-light": (1.1, 1.5)}.get(kind, (0.9, 1.2))
    exposure = rng.uniform(*exposure)
    hot = (rng.uniform(1.5, 3.5), rng.uniform(0.15, 0.35) * S, rng.normal(0, 0.08, 2) * (H, W)) \
        if kind == "harsh-light" else None
    balance = rng.uniform([0.92, 0.92, 0.9], [1.08, 1.05, 1.1])
    if kind == "colour-cast":
        bluish = np.array([rng.uniform(0.45, 0.7), rng.uniform(0.8, 1.0), rng.uniform(1.1, 1.5)])
        greenish = np.array([rng.uniform(0.5, 0.75), rng.uniform(1.1, 1.4), rng.uniform(0.6, 0.9)])
        balance = bluish if rng.random() < 0.5 else greenish
    gamma = rng.uniform(0.8, 1.2)
    noise = rng.uniform(3, 8) if kind == "colour-cast" else rng.uniform(0.5, 3)
    round_fov = rng.random() < (0.5 if kind == "colour-cast" else 0.2)
    rr, cc = np.mgrid[:H, :W].astype(np.float32)
    centre = np.array([H, W]) / 2 + rng.normal(0, 0.03, 2) * S
    rad = np.hypot(rr - centre[0], cc - centre[1]) / (0.5 * np.hypot(H, W))
    illum = exposure / (1 + (rad / falloff) ** 2) ** 2
    if hot is not None:
        illum = illum * (1 + hot[0] * np.exp(-(np.hypot(rr - centre[0] - hot[2][0], cc - centre[1] - hot[2][1])
                                                / hot[1]) ** 2))
    fov = np.hypot(rr - H / 2 + 0.5, cc - W / 2 + 0.5) <= rng.uniform(0.5, 0.62) * np.hypot(H, W) if round_fov \
        else np.ones((H, W), bool)
    plumes = []
    if kind == "smoke":
        for _ in range(rng.integers(2, 6)):
            plumes.append(dict(c=rng.uniform(0, 1, 2) * (H, W), v=rng.normal(0, 0.025, 2) * S,
                               ang=rng.uniform(0, np.pi), ry=rng.uniform(0.25, 0.6) * S, rx=rng.uniform(0.15, 0.45) * S,
                               dens=rng.uniform(0.5, 0.95)))
        smoke_base = rng.uniform(0.25, 0.5)
        smoke_col = np.array([1.0, rng.uniform(0.95, 1.0), rng.uniform(0.8, 1.0)]) * rng.uniform(0.75, 1.0)
        smoke_tex = _value_noise(rng, (H + 2 * margin, W + 2 * margin), 0.15 * S)
    nbi_gain = None
    chroma = rng.uniform(0.7, 1.5)
    frames = np.empty((n_frames, H, W, 3), np.float32)
    masks = np.empty((n_frames, H, W), np.uint8)
    for t in range(n_frames):
        th, z = rot_v * t, 1 + zoom_v * t
        c, s = np.cos(th) / z, np.sin(th) / z
        warp = np.array([[c, -s], [s, c]])
        off = margin + pan_v * t + np.array([H, W]) / 2 - warp @ (np.array([H, W]) / 2)
        img = np.stack([ndimage.affine_transform(canvas[..., k], warp, off, (H, W), order=1, mode="mirror")
                        for k in range(3)], -1)
        lay = _Layer((H, W))
        for tool in tools:
            _draw_tool(tool, t, rr, cc, S, lay, env, blood=kind == "blood")
        if kind == "specular" and tools:  # glints: saturated specks along the metal's edges
            edge = lay.mask & ~ndimage.binary_erosion(lay.mask, iterations=2)
            ys, xs = np.nonzero(edge)
            if len(ys):
                g = np.zeros((H, W), np.float32)
                pick = np.random.default_rng(seed * 31 + t).integers(0, len(ys), 12)
                g[ys[pick], xs[pick]] = 40
                lay.rgb += ndimage.gaussian_filter(g, 1.2)[..., None] * lay.alpha[..., None]
        img = lay.over(img) * illum[..., None]
        if plumes:
            a = smoke_base + _smoke_alpha((H, W), t, plumes)
            brk = ndimage.shift(smoke_tex, (-margin, -margin) + np.asarray(plumes[0]["v"]) * t, order=1)[:H, :W]
            a = np.clip(a * (0.85 + 0.2 * brk), 0, 0.97)[..., None]
            blurred = ndimage.gaussian_filter(img, (3, 3, 0))
            lit = (0.5 + 0.5 * np.sqrt(illum))[..., None]
            img = (img * (1 - 0.6 * a) + blurred * 0.6 * a) * (1 - a) + a * smoke_col * lit
        if kind == "specular":  # bloom around saturated pixels
            over = np.clip(img.max(-1) - 1, 0, None)
            img += 0.5 * ndimage.gaussian_filter(over, 3)[..., None]
        if kind == "nbi":  # green band -> red, blue band -> green and blue, then auto gain
            img = np.stack([img[..., 1] * 0.9, img[..., 2] * 1.0, img[..., 2] * 0.95], -1)
            if nbi_gain is None:
                nbi_gain = 0.8 / (np.percentile(img.mean(-1), 95) + 1e-3)
            img *= nbi_gain
        img = np.clip(img * balance, 0, 1) ** gamma * 255
        ycc = img @ np.array([[0.299, -0.169, 0.5], [0.587, -0.331, -0.419], [0.114, 0.5, -0.081]])
        ycc[..., 1:] = ndimage.gaussian_filter(ycc[..., 1:], (chroma, chroma, 0))
        img = ycc @ np.array([[1.0, 1.0, 1.0], [0.0, -0.344, 1.772], [1.402, -0.714, 0.0]])
        img += rng.normal(0, noise, img.shape)
        img[~fov] = rng.uniform(0, 4, (int((~fov).sum()), 3))
        frames[t] = np.clip(np.round(img), 0, 255)
        masks[t] = lay.mask & fov
    return frames, masks


def score_cases(p, seed, runs, frames, size, kind):
    """(prediction, truth, {}) of ``runs`` stress runs of ``kind``; ``p`` a Predictor."""
    for r in range(runs):
        x, y = stress_run(seed + r, frames, (size, size), kind)
        yield p.predict(x), y, {}
