"""Synthetic chest CT in Hounsfield units (HU), and its exact whole-heart mask.

Arrays are ``(Z, Y, X)``: Z runs inferior -> superior, Y anterior -> posterior (rows, anterior at
the top), X from the patient's right to their left (columns): the radiological axial view. Every
structure is an analytic shape in patient millimetres (origin on the body axis at the height of
the heart centre), so the voxel spacing changes the resolution, never the anatomy.

Anatomy: body (subcutaneous fat, muscle, sometimes breasts and arms), lungs (gravity gradient,
texture, vessels), the diaphragm (domes, raised under the heart, which rests on it, with the
cardiophrenic fat pad beside it) and the upper abdomen below it (liver with vessels, stomach with
an enhancing wall, fluid or food and gas in front, bowel loops, colon with stool and gas, spleen,
kidneys, adrenals, pancreas tail, crura), azygos vein, spine (vertebral bodies with
cortex and discs, canal, posterior arch, paraspinal muscles), ribs and costal cartilage, sternum,
trachea and bronchi, oesophagus, aorta (root, ascending, arch, descending), pulmonary trunk and
arteries, pulmonary veins, venae cavae, the table, and the heart: four blood pools in a tilted,
smoothly blended shape with the long axis pointing left, anterior and inferior, a 7-13 mm left
ventricular wall, septa, epicardial fat with the coronary arteries (sometimes calcified) in the
atrioventricular groove, and the pericardium. With contrast the left heart and aorta are 250-450
HU (right heart and pulmonary arteries 35-105 % of that, at least 90); without, blood is 30-50 HU
and the heart shows only by its outline against fat and lung.

The heart mask ("heart" as in TotalSegmentator: the whole heart) is the set of voxel centres
inside the epicardial surface: chambers, myocardium and septa. Epicardial and pericardial fat,
the pericardium and the great vessels beyond the valve planes are not heart.

Partial volume: edges are anti-aliased over one pixel in plane and each slice is the mean of 1, 3
or 5 planes across its thickness; then an in-plane point spread function (0.3-0.8 mm), slightly
correlated Gaussian noise (SD 5-40 HU), rounding and clipping to -1024..3071 as a scanner stores.

Kinds (``KINDS``; ``generate_ct(..., kind=...)``, ``generate_ct_slice``, ``training_frames``,
``sample_run``, ``score_cases``):

    standard    the above (unchanged, bit for bit).
    randomised  the same patient for a seed (its draws come from a stream of their own, the seed's
                third, after the standard ones; slice heights are the standard ones, scaled with the
                patient), with what real acquisitions vary drawn per scan:
                geometry (80 %; the other 20 % keep the standard field, slices and heart mask exactly)
                  patient scale   adult x0.88-1.15, child (25 %) x0.4-0.85; aspect: y x e^(+-0.12),
                                  x the inverse, z x0.92-1.08 more (the heart scales with the body)
                  field of view   whole chest, the body 0.65-1.25 of its width (the sides cut off
                                  beyond 1), centre +-6 % (50 %); a cardiac zoom 1.2-2.6 heart widths,
                                  the heart off-centre by 10 % SD of the field (35 %); or 1.1-2 heart
                                  widths with the heart 10-40 % of its width beyond one edge (15 %)
                  thickness       0.6-3 mm (60 %) or 3-8 mm (40 %), 1-5 planes averaged; volumes:
                                  spacing = thickness, at least 1 mm
                  resolution      30 %: rendered at 1/1.3-1/2.5 of the size and interpolated back
                                  (the mask stays exact, at the full size)
                  slab            volumes, 15 %: 10-40 % of the heart's height cut off (top or bottom)
                contrast phase (non-contrast 30 %, arterial 35 %, venous 20 %, delayed 15 %; with
                ``contrast`` given, non-contrast or one of the others), HU before calibration:
                  non-contrast    blood 20-60 (anaemic to concentrated), myocardium 30-60: either brighter
                  arterial        left heart and aorta 180-600, right heart 15-110 % of it (at least 40),
                                  superior vena cava to 5x the right heart (at most 2500) or a saline
                                  chaser at 30-100 % (40 %); myocardium +30..+110
                  venous          all blood 120-230 (right = left +-20), myocardium 80-140
                  delayed         all blood 60-120, myocardium 60-120: either brighter
                  tissues         fat -130..-70, muscle 30-70, lung -900..-700, marrow 120-350, cortex
                                  400-1200; liver, kidneys, gut wall and pancreas enhance with contrast
                scanner
                  calibration     HU x0.93-1.07 + (-25..+25)
                  kernel          point spread 0.3-1.6 mm; sharpening (35 %) 0.2-1.0 x (image - blur
                                  of 0.8-2 px): edge overshoot, sharper noise
                  noise           SD 3-90 HU (log-uniform) at the body's edge, up to 2.2x at its centre;
                                  grain: blur 0-1.8 px per axis (anisotropic), band-pass (50 %: 30-85 %
                                  of a 1.5-4 px blur taken out)
                  beam hardening  cupping (50 %): 5-40 HU darker at the body's centre
                  metal streaks   from every part over 1800 HU (metal, undiluted contrast): 6-16 lines
                                  each, bright or dark, amplitude SD 150-700 HU x size, fading over
                                  20-80 mm, 0.4-1.2 px wide; dark bands (50-300 HU) between parts
                  circle          35 %: -1024 outside the reconstruction circle
                  8-bit export    25 %: window width 300-1500, level 0-300 with its lower end below
                                  -100 HU (at most level - 110: air stays under ``Training.tasks``'
                                  check_ct threshold), 256 levels, mapped back to HU linearly
                unlabelled confusers (outside the heart mask, which never changes with them)
                  metal           25 %: sternal wires (3-7 loops about the sternum), a pacemaker (can
                                  in the left (80 %) or right chest wall, 1-2 leads down the superior
                                  vena cava into the right atrium and ventricle, which are heart: as in
                                  TotalSegmentator, the mask is the epicardial surface's inside), a
                                  mitral or aortic valve ring (radius 10-15 mm); 8000-20000 HU,
                                  stored as 3071 where they bloom
                  pericardial     20 %: 4-20 mm of fluid (0-20 HU; x0.3-1.6, thicker behind and below)
                    effusion      between the epicardial fat and a 1.5 mm pericardium
                  pleural fluid   15 %: 10-45 mm deep (0-25 HU) at the back of one or both sides
                  thymus          70 % of children: 40-80 HU (+25 with contrast) above the heart
                  epicardial fat  x0.3-2.5 (children x0-0.3)
                Labels are the same anatomy sampled on the same (scaled) grid as the image.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from scipy import ndimage

from .seeds import HELD_OUT_SEED_BASE  # noqa: F401  (seeds at or above it are never trained on)


def _occ(d, w):
    """Soft occupancy in [0, 1] from a signed distance ``d`` (mm, negative inside), edge ``w`` mm."""
    return np.clip(0.5 - d / w, 0.0, 1.0)


def _ell(c, r):
    """Approximate signed distance (mm) to the ellipse or ellipsoid ``sum (c/r)^2 = 1``."""
    k0 = np.sqrt(sum((ci / ri) ** 2 for ci, ri in zip(c, r)))
    k1 = np.sqrt(sum((ci / ri / ri) ** 2 for ci, ri in zip(c, r))) + 1e-9
    return k0 * (k0 - 1.0) / k1


def _seg(c, a, b):
    """Distance (mm) from points ``c`` (tuple of coordinate arrays) to the segment ``a``-``b``."""
    ab = [q - p for p, q in zip(a, b)]
    t = np.clip(sum((ci - ai) * d for ci, ai, d in zip(c, a, ab)) / max(sum(d * d for d in ab), 1e-9), 0, 1)
    return np.sqrt(sum((ci - ai - t * d) ** 2 for ci, ai, d in zip(c, a, ab)))


def _smin(a, b, k):
    """Smooth union of two signed distances (blend radius ``k`` mm)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _chain(c, pts, radii):
    """Signed distance (mm) to tubes along polyline ``pts`` whose radius runs linearly through ``radii``."""
    best = None
    for a, b, ra, rb in zip(pts[:-1], pts[1:], radii[:-1], radii[1:]):
        ab = [q - p for p, q in zip(a, b)]
        t = np.clip(sum((ci - ai) * d for ci, ai, d in zip(c, a, ab)) / max(sum(d * d for d in ab), 1e-9), 0, 1)
        d = np.sqrt(sum((ci - ai - t * d) ** 2 for ci, ai, d in zip(c, a, ab))) - (ra + (rb - ra) * t)
        best = d if best is None else np.minimum(best, d)
    return best


def _heart_dist(p, z, y, x):
    """Signed distances (mm) to the four blood pools, to the epicardial surface, and the heart-local
    u coordinate, at broadcastable patient coordinates ``z, y, x``."""
    inv, hc, tw = p.hinv.tolist(), p.hc.tolist(), p.twall.tolist()
    loc = [inv[k][0] * (z - hc[0]) + inv[k][1] * (y - hc[1]) + inv[k][2] * (x - hc[2]) for k in range(3)]
    d = [_ell([loc[k] - c[k] for k in range(3)], r) for c, r in zip(p.cc.tolist(), p.cr.tolist())]
    outer = _smin(_smin(d[0] - tw[0], d[1] - tw[1], 8), _smin(d[2] - tw[2], d[3] - tw[3], 8), 10)
    return d, outer, loc[0]


def _cradle(p, lifts, slopes, h=6.0, reach=60.0):
    """Heights (mm) of surfaces draped over the heart's lowest part, on a (y, x) lattice ``h`` mm apart:
    for each lift ``(a, b)`` (mm above the heart's underside: ``a``, plus ``b`` in front of the heart)
    and slope (mm down per mm beside it). Returns the lattice origin (y, x), ``h``, maps (-1e4: far)."""
    cap = p.abdomen.cap  # only the lowest ``cap`` mm of the heart rests on the diaphragm
    zs = np.arange(p.hlo[0], p.hlo[0] + cap, 2.0, dtype=np.float32)
    ys = np.arange(p.hlo[1], p.hhi[1] + h, h, dtype=np.float32)
    xs = np.arange(p.hlo[2], p.hhi[2] + h, h, dtype=np.float32)
    inside = _heart_dist(p, zs[:, None, None], ys[None, :, None], xs[None, None, :])[1] < 0
    m = int(reach / h)
    floor = np.pad(np.where(inside.any(0), zs[inside.argmax(0)], -1e4), m, constant_values=-1e4)
    front = np.clip((p.hc[1] - (ys[0] - m * h + h * np.arange(floor.shape[0]))) / 60, 0, 1)[:, None]
    s = np.array(slopes, np.float32)[:, None, None]
    f = np.stack([np.where(floor > -1e3, floor + a + b * front, -1e4) for a, b in lifts]) / s
    k = -np.hypot(*np.mgrid[-1:2, -1:2])[None] * h
    for _ in range(m):  # a cone dilation (of heights / slope): each step one lattice cell further, h lower
        f = ndimage.grey_dilation(f, structure=k, mode="nearest")
    return (float(ys[0] - m * h), float(xs[0] - m * h)), h, list(np.maximum(f * s, -1e4))


def _lattice(origin, h, f, y, x):
    """Bilinear interpolation of lattice map ``f`` at broadcastable (1, Y, 1), (1, 1, X) coordinates."""
    out = f
    for ax, c in enumerate((y.ravel(), x.ravel())):
        t = np.clip((c - origin[ax]) / h, 0, f.shape[ax] - 1.001)
        i, wt = t.astype(int), (t - t.astype(int)).astype(np.float32)
        a = out.take(i, ax)
        out = a + (out.take(i + 1, ax) - a) * (wt[:, None] if ax == 0 else wt)
    return out[None]


def _paint(hu, sl, alpha, value):
    hu[sl] += alpha * (value - hu[sl])


class _Grid:
    """Voxel-centre coordinates (mm) of a block of planes: 1D ``z, y, x`` and crops of them."""

    def __init__(self, z, y, x, w):
        self.axes, self.w, self.shape = (z, y, x), w, (len(z), len(y), len(x))  # w: pixel size (mm)

    def box(self, lo=(-1e9,) * 3, hi=(1e9,) * 3):
        """Slices and broadcastable (z, y, x) coordinates of the voxels within [lo, hi] mm."""
        sl = tuple(slice(np.searchsorted(a, l_), np.searchsorted(a, h_, "right"))
                   for a, l_, h_ in zip(self.axes, lo, hi))
        if any(s.stop <= s.start for s in sl):
            return None, (None, None, None)
        z, y, x = (a[s] for a, s in zip(self.axes, sl))
        return sl, (z[:, None, None], y[None, :, None], x[None, None, :])


def _field(key, g, sigma, cache):
    """Smooth random field (unit variance, correlation length ``sigma`` mm) fixed in patient space:
    white noise on a lattice ``sigma / 2`` apart (one seeded layer per lattice z), blurred, then
    interpolated linearly to the grid, so that any block or single plane of it agrees. (No BLAS:
    its threads would fight a data loader's processes.)"""
    h, m = sigma / 2, 7  # lattice spacing (mm); margin (lattice points) = the blur's reach
    n, t = int(np.ceil(420 / h)) + m, [c / h for c in g.axes]  # t: lattice coordinates of the grid
    lo = [int(np.floor(ti.min())) - m for ti in t]
    hi = [int(np.floor(ti.max())) + m + 2 for ti in t]
    iy, ix = np.clip(np.arange(lo[1], hi[1]) + n, 0, 2 * n - 1), np.arange(lo[2], hi[2]) + n  # beyond +-420 mm:
    r0, r1 = int(iy[0]), int(iy[-1]) + 1  # the edge repeats; only rows r0..r1 of each layer are drawn
    for k in range(lo[0], hi[0]):
        if (key, k, r0, r1) not in cache:
            rng = np.random.default_rng([*key, k + 10**6])
            rng.bit_generator.advance(r0 * n)  # skip r0 rows of 2n float32 (two per 64-bit draw)
            cache[key, k, r0, r1] = rng.random((r1 - r0, 2 * n), np.float32) - 0.5
    f = np.stack([cache[key, k, r0, r1].take(iy - r0, 0).take(ix, 1, mode="clip") for k in range(lo[0], hi[0])])
    # blur, keeping the part that the margins make exact: in z only those layers (few), as a sum
    wz = np.exp(-0.5 * (np.arange(-m, m + 1) / 2.0) ** 2).astype(np.float32)
    f = sum(float(wi) * f[i:len(f) - 2 * m + i] for i, wi in enumerate(wz / wz.sum()))
    for ax in (1, 2):
        f = ndimage.gaussian_filter1d(f, 2.0, ax, truncate=m / 2.0 - 0.01)
        f = np.moveaxis(np.moveaxis(f, ax, 0)[m:-m], 0, ax)
    f *= float(np.sqrt(12) * (2 * np.sqrt(np.pi) * 2.0) ** 1.5)  # uniform noise of variance 1/12
    for ax in (0, 2, 1):
        ti = t[ax] - lo[ax] - m
        i0 = np.floor(ti).astype(int)
        wt = (ti - i0).astype(np.float32).reshape([-1 if a == ax else 1 for a in range(3)])
        f0 = np.take(f, i0, ax)
        f = f0 + (np.take(f, i0 + 1, ax) - f0) * wt
    return f


def _patient(rng):
    """Draw one patient: shapes, positions and sizes in mm."""
    p = _draw_body(rng)
    to_patient = _draw_heart(rng, p)
    top, bot = float(p.hhi[0]), float(p.hlo[0])
    _draw_domes_and_stomach(rng, p, bot)
    carina = _draw_great_vessels(rng, p, to_patient, top, bot)
    _draw_abdomen(p)  # its own random stream
    _route_oesophagus_and_azygos(p, carina, top, bot)
    ab = p.abdomen
    ab.lift = _cradle(p, [(-ab.gap, 0.0), ab.pad[:2]], [ab.slope, ab.pad[2]])
    return p


def _draw_body(rng):
    """Body outline (mm), breathing, arms and breasts, spine and rib pattern: a new namespace."""
    u_ = rng.uniform
    p = SimpleNamespace(key=int(rng.integers(2**31)), breath=u_(0, 1))  # breath: 0 expiration, 1 deep inspiration
    p.fat, p.wall, p.mw = u_(4, 28), u_(14, 22), u_(6, 16)  # subcutaneous fat, chest wall, mediastinum half-width
    p.a, p.b = u_(130, 170) + p.fat, u_(100, 125) + 6 * p.breath + p.fat  # body half-width and half-depth
    p.back, p.wobble, p.table = p.b * u_(0.8, 0.92), u_(0, 2 * np.pi), u_(2, 30)
    p.arms = (u_(5, 40), u_(-0.2, 0.3) * p.b, u_(40, 55), u_(45, 60)) if rng.random() < 0.25 else None
    p.breasts = (u_(-60, 0), u_(0.4, 0.55) * p.a, u_(5, 35), u_(35, 60)) if rng.random() < 0.35 else None
    p.yv, p.vr = p.b - p.fat - u_(52, 62), u_(15, 19)  # vertebral body centre (y) and radius
    p.pitch, p.vphase = u_(24, 30), u_(0, 30)  # vertebral level height (mm)
    p.rib_pitch, p.rib_slope, p.rib_phase = u_(22, 30), u_(90, 140), u_(0, 30)
    return p


def _draw_heart(rng, p):
    """Heart size, orientation, chambers, walls and epicardial fat, fitted into the chest. Sets
    ``p.twall, calc, pfat`` and (by :func:`_fit_heart`) its placement; returns the map of a
    heart-local point (u, v, w) mm to patient (z, y, x) mm."""
    u_ = rng.uniform
    s = u_(0.85, 1.12) * (1.2 if rng.random() < 0.1 else 1.0)  # 10 % enlarged hearts
    rot = _heart_axes(rng, p.breath)
    # chambers LV, RV, LA, RA: blood-pool centres and radii in (u, v, w) mm, and wall thickness
    cc = np.array([[12, -12, 2], [4, 18, -6], [-44, -14, 18], [-38, 20, 10]]) + rng.normal(0, 3, (4, 3))
    cr = np.array([[50, 28, 28], [44, 24, 36], [28, 34, 24], [31, 27, 28]]) * u_(0.9, 1.1, (4, 3))
    cr[:2] *= u_(0.85, 1.05)  # cardiac phase: smaller ventricles in systole
    p.twall, p.calc = np.array([u_(7, 13), 3.5, 2.5, 2.5]), rng.random() < 0.25
    p.pfat = u_(1, 5), u_(0, 12), u_(0, 10)  # epicardial fat (mm): everywhere, in the AV groove, at the apex
    s, hmap = _fit_heart(rng, p, s, rot, cc, cr)
    return lambda *q: p.hc + hmap @ (s * np.array(q, float))  # heart-local point -> patient


def _heart_axes(rng, breath):
    """Rotation (3, 3) whose columns are the heart's local axes in patient (z, y, x): u (base -> apex:
    left, anterior, inferior; steeper in deep inspiration), v (towards the right ventricle), w."""
    u_ = rng.uniform
    az, el = np.radians(u_(35, 60)), np.radians(u_(15, 40) + 10 * breath)
    u = np.array([-np.sin(el), -np.cos(az) * np.cos(el), np.sin(az) * np.cos(el)])  # (z, y, x)
    v = np.array([0.3, -1.0, -0.6]) - np.array([0.3, -1.0, -0.6]) @ u * u
    v /= np.linalg.norm(v)
    roll = u_(-0.25, 0.25)
    v = v * np.cos(roll) + np.cross(u, v) * np.sin(roll)
    w = np.cross(u, v)
    return np.stack([u, v, w if w[1] > 0 else -w], 1)


def _heart_box(rot, cc, cr, twall, s, k):
    """Heart bounding box (z, y, x) mm about its centre, chambers scaled by ``s`` and flattened to
    ``k`` in y, and the (flattened) local -> patient map (3, 3)."""
    m = np.diag([1.0, k, 1.0]) @ rot
    ext = np.sqrt(((m[None] * (s * cr + twall[:, None])[:, None, :]) ** 2).sum(-1))
    return (s * cc @ m.T - ext).min(0), (s * cc @ m.T + ext).max(0), m


def _fit_heart(rng, p, s, rot, cc, cr):
    """Place the heart: the left atrium lies against the oesophagus; hearts deeper than the chest
    are flattened front to back (to 80 % at most), then shrunk. Sets ``p.hinv, cc, cr`` (scaled),
    ``p.hc`` (centre) and ``p.hlo, hhi`` (bounding box), all mm; returns the final scale and the
    local (u, v, w) -> patient (z, y, x) map."""
    y_post, y_ant = p.yv - p.vr - 14 + rng.uniform(-3, 6), -p.b + p.fat + 17
    lo, hi, _ = _heart_box(rot, cc, cr, p.twall, s, 1.0)
    k = float(np.clip((y_post - y_ant) / (hi[1] - lo[1]), 0.8, 1.0))
    lo, hi, _ = _heart_box(rot, cc, cr, p.twall, s, k)
    s *= min(1.0, (y_post - y_ant) / (hi[1] - lo[1]))
    lo, hi, hmap = _heart_box(rot, cc, cr, p.twall, s, k)  # hmap: heart-local (u, v, w) -> patient (z, y, x)
    p.hinv, p.cc, p.cr = np.linalg.inv(hmap), s * cc, s * cr
    p.hc = np.array([0.0, y_post - hi[1], rng.uniform(5, 25)])  # heart centre (z, y, x)
    p.hlo, p.hhi = p.hc + lo, p.hc + hi  # heart bounding box
    return s, hmap


def _draw_domes_and_stomach(rng, p, bot):
    """Diaphragm: (height, x) mm of the right and left domes (lower in deep inspiration) and the
    central tendon, below the heart's underside ``bot`` mm; dome radius; the stomach under the left
    dome: (centre (z, y, x), radii) mm and whether it holds gas."""
    u_ = rng.uniform
    p.domes = [(bot + u_(10, 40) - 25 * p.breath, -0.45 * p.a), (bot + u_(-5, 20) - 25 * p.breath, 0.45 * p.a),
               (bot - 5, 10.0)]
    p.dome_r = u_(90, 140)
    p.stomach = [p.domes[1][0] - u_(25, 45), p.yv - 40, 0.4 * p.a], u_(25, 45, 3).tolist(), rng.random() < 0.6


def _draw_great_vessels(rng, p, to_patient, top, bot):
    """Tubes as polylines (n, 3) in (z, y, x) mm: aorta and its branches, pulmonary arteries and
    veins, venae cavae, trachea and bronchi. ``top``, ``bot``: the heart's z extent (mm).
    Returns the carina (z, y, x) mm."""
    u_, L = rng.uniform, to_patient
    root, z_arch = L(-22, 4, 6), top + u_(15, 40)
    asc = np.array([z_arch - 15, root[1] - 8, root[2] - u_(5, 15)])
    desc = np.array([z_arch - 15, p.yv - 0.6 * p.vr - 6, p.vr + u_(6, 14)])
    tr = np.array([z_arch - u_(15, 30), p.yv - p.vr - 26, u_(-5, 3)])  # carina
    t = np.linspace(0, 1, 7)[:, None]
    arch = (1 - t) ** 2 * asc + 2 * t * (1 - t) * np.array([z_arch + 25, tr[1], desc[2] + 15]) + t ** 2 * desc
    p.aorta, p.aorta_r = np.vstack([root, arch, [bot - 300, desc[1] + 5, desc[2] - 8]]), (u_(12, 17), u_(10, 13))
    p.branches = [(np.array([arch[i], arch[i] + [300, dy, dx]]), r) for i, dy, dx, r in  # brachiocephalic, carotid,
                  ((2, -5, -30, 6.5), (3, 0, 5, 4.0), (4, 5, 25, 5.0))]  # subclavian arteries
    bif = np.array([top + u_(-5, 10), root[1] + 10, root[2] + 25])
    p.pa = [np.vstack([L(-10, 34, -12), bif]), np.vstack([bif, [bif[0] + 3, bif[1] + 25, 55]]),
            np.vstack([bif, [bif[0] + 5, root[1] + 22, root[2] - 20], [bif[0] - 5, root[1] + 25, -55]])]
    p.svc = np.array([L(-44, 24, 16), [top + 40, root[1] + 5, root[2] - 35], [top + 300, root[1] + 10, -30]])
    p.ivc = np.array([L(-36, 20, 24), [bot - 300, p.yv - 30, -25]])
    la = L(-44, -14, 18)
    p.pv = [np.array([la, la + [u_(-20, 5), u_(-10, 10), sx * 45]]) for sx in (-1, -1, 1, 1)]
    p.airway = [np.array([tr + [400, 0, 0], tr]), np.array([tr, tr + [-25, 8, -38]]),
                np.array([tr, tr + [-40, 10, 42]])]
    return tr


def _draw_abdomen(p):
    """The upper abdomen (``p.abdomen``), from its own random stream so that the chest above stays
    as each seed drew it; also raises the right dome (the liver) beside the heart."""
    ra = np.random.default_rng([p.key, 5])
    u_ = ra.uniform
    (sz, sy, sx), sr, _ = p.stomach
    rf = float(np.mean(sr))
    p.abdomen = ab = SimpleNamespace(
        liver_x=u_(-0.1, 0.2) * p.a,  # how far the liver reaches to the left (+x) in front
        spleen=([p.domes[1][0] - u_(15, 40), p.yv - u_(5, 30), 0.6 * p.a * u_(0.9, 1.1)],
                u_([35, 22, 16], [65, 40, 28]).tolist()),
        bowel=u_(-0.8, 0.4), stomach_hu=u_(5, 45),  # bowel: how much of the fat is gut
        colon=([p.domes[1][0] - u_(30, 70), -0.3 * p.b, 0.55 * p.a], u_(15, 30, 3).tolist())
        if ra.random() < 0.6 else None)
    # the heart rests on the diaphragm (a gap of fat and muscle), which drapes down beside it; the
    # cardiophrenic fat pad fills the angle, more in front
    ab.cap, ab.gap, ab.slope, ab.pad = u_(8, 30), u_(2, 7), u_(0.8, 2.0), (u_(0, 12), u_(0, 30), u_(1.2, 3))
    # the liver dome often rises well above the heart's underside, just right of it
    zr, xr = p.domes[0]
    p.domes[0] = (zr + u_(-10, 30), xr * u_(0.65, 1.05))
    # stomach: fundus under the left dome, body and antrum sweeping forward, down and to the right;
    # a thick wall when empty; food mottled; gas in front of a level (supine); some with no lumen gas
    ab.stomach = ([np.array([sz, sy, sx]), np.array([sz - 40, sy - 45, sx - 20]),
                   np.array([sz - 70, -0.5 * p.b, 0.05 * p.a])], [rf, 0.8 * rf, 0.45 * rf])
    ab.st_wall, ab.food, ab.level = u_(3, 9), u_(0, 1) if ra.random() < 0.4 else 0.0, sy - rf * u_(0.1, 1.2)
    ab.lumen, ab.gut_gas, ab.stool = u_(0.2, 0.5), u_(0.8, 2.5), u_(-0.5, 1.0)  # bowel: wall depth, gas, colon
    if ab.colon:  # splenic flexure with the transverse colon in front and the descending colon behind
        (cz, cy, cx), cr = ab.colon
        r = float(np.mean(cr))
        ab.colon = [np.array([cz - 25, cy - 15, cx - 70]), np.array([cz, cy, cx]),
                    np.array([cz - 70, cy + 45, cx + 5])], r
    _draw_retroperitoneum(ra, p, ab)


def _draw_retroperitoneum(ra, p, ab):
    """Kidneys ((centre (z, y, x), radii) mm), adrenal height, pancreas tail and crus thickness (mm)."""
    u_ = ra.uniform
    kz = p.domes[1][0] - u_(70, 120)  # upper pole of the left kidney; the right is lower
    ab.kidneys = [((kz - 50 - u_(0, 25) * (sx_ < 0), p.yv + u_(-5, 10), sx_ * (p.vr + u_(38, 50))),
                   tuple(u_([48, 22, 24], [60, 30, 32]))) for sx_ in (-1, 1)]
    ab.adrenal = kz + u_(5, 25)
    (cz, cy, cx), _ = ab.spleen
    ab.pancreas = [np.array([kz - 10, cy - 25, cx - 30]), np.array([kz - 30, p.yv - 50, 0.05 * p.a])], u_(9, 13)
    ab.crus = u_(4, 9)


def _route_oesophagus_and_azygos(p, carina, top, bot):
    """Oesophagus (polyline, mm) into the cardia; azygos vein beside the spine, arching over the
    right bronchus into the SVC. No random draws."""
    (sz, sy, sx), sr, _ = p.stomach
    rf = float(np.mean(sr))
    p.oes = np.array([[sz + 0.4 * rf, sy - 8, sx - 0.7 * rf], [bot - 8, p.yv - p.vr - 6, 8],
                      [top + 300, p.yv - p.vr - 8, 0]])
    p.azygos = np.array([[bot - 300, p.yv - p.vr + 4, -12], [carina[0] + 5, p.yv - p.vr, -14],
                         [carina[0] + 15, p.svc[1][1] + 12, p.svc[1][2] + 6]])


def _values(rng, contrast):
    """HU of blood and tissues for one scan (the same draws whether or not ``contrast``)."""
    u_ = rng.uniform
    v = SimpleNamespace(fat=u_(-120, -80), muscle=u_(35, 60), lung=u_(-880, -780), myo=u_(35, 55),
                        blood_l=u_(30, 50), liver=u_(45, 65), bone=u_(150, 300), cortex=u_(500, 900),
                        cartilage=u_(80, 200))
    cl, right, myo_e, liver_e, svc = u_(250, 450), u_(0.35, 1.05), u_(50, 90), u_(10, 60), u_(1, 2.5)
    v.blood_r = v.svc = v.blood_l
    if contrast:
        v.blood_l, v.blood_r, v.myo, v.liver = cl, max(90.0, cl * right), v.myo + myo_e, v.liver + liver_e
        v.svc = min(v.blood_r * svc, 1400)  # undiluted contrast arriving from the arm
    # abdomen: enhancing gut wall, kidneys, pancreas, veins (portal, hepatic, azygos); fluid in the gut
    e = u_([20, 80, 30, 30], [70, 170, 90, 110]) * contrast
    v.wall, v.kidney, v.pancreas = v.muscle + e[0], u_(25, 35) + e[1], u_(35, 45) + e[2]
    dark, v.fluid = u_(8, 20), u_(0, 25)  # unenhanced vessels are darker than the liver
    v.vein = v.liver + e[3] if contrast else v.liver - dark
    return v


def _tube(hu, g, pts, r, value, halo=0, halo_value=0, keep=None):
    """Paint tubes of radius ``r`` mm about polyline ``pts`` (n, 3); first a ``halo`` mm sheath,
    except where ``keep`` (bool, the grid's shape) is set."""
    for rr, val in ((r + halo, halo_value), (r, value)) if halo else ((r, value),):
        for a, b in zip(pts[:-1], pts[1:]):
            sl, (z, y, x) = g.box(np.minimum(a, b) - rr - 2, np.maximum(a, b) + rr + 2)
            if sl is not None:
                alpha = _occ(_seg((z, y, x), a.tolist(), b.tolist()) - rr, g.w)
                _paint(hu, sl, alpha * ~keep[sl] if rr > r and keep is not None else alpha, val)


def _abdomen(hu, sl, p, v, g, zyx, below, fields, cache):
    """Paint the upper abdomen where ``below`` (occupancy under the diaphragm): fat with bowel loops
    (enhancing walls; fluid or gas), the liver on the right reaching left in front (vessels), spleen,
    colon, stomach, kidneys, adrenals, pancreas tail and the crura about the aorta."""
    (z, y, x), (n1, n2, f3), ab, w = zyx, fields, p.abdomen, g.w
    near = lambda lo, hi: z.max() >= lo and z.min() <= hi  # noqa: E731  (organs out of the slab are skipped)
    _paint(hu, sl, below, v.fat + 10 * n1)
    gut = _field((p.key, 4), g, 14.0, cache)
    _paint(hu, sl, below * _occ(8 * (ab.bowel - gut), w), v.wall + 10 * n2)
    gas = np.clip(2 * (f3 - ab.gut_gas), 0, 1)
    _paint(hu, sl, below * _occ(8 * (ab.bowel + ab.lumen - gut), w), v.fluid + gas * (-1000 - v.fluid))
    q = np.clip((p.yv - y) / (p.yv + p.b), 0, 1)
    x_liver = ab.liver_x - 0.3 * p.a + 0.45 * p.a * q ** 1.5 + 6 * n2
    hv = np.exp(-(n1 ** 2 + n2 ** 2) / (2 * 0.17 ** 2))
    _paint(hu, sl, below * _occ(x - x_liver, w), v.liver + 6 * n1 + hv * (v.vein - v.liver))
    (cz, cy, cx), cr = ab.spleen  # concave towards the stomach
    if near(cz - cr[0], cz + cr[0]):
        bite = _ell((z - cz, y - cy + 0.3 * cr[1], x - cx + 1.1 * cr[2]), (1.3 * cr[0], cr[1], 0.9 * cr[2]))
        spleen = np.maximum(_ell((z - cz, y - cy, x - cx), cr), -bite)
        _paint(hu, sl, below * _occ(spleen, w), v.liver - 5 + 6 * n2)
    if ab.colon and near(ab.colon[0][2][0] - 30, ab.colon[0][1][0] + 30):  # stool: mottled, bubbles; gas in front
        pts, r = ab.colon
        col = _chain((z, y, x), pts, [0.8 * r, r, 0.9 * r])
        _paint(hu, sl, below * _occ(col, w), v.wall)
        stool, gas = 15 + 30 * n2, np.clip(2 * (f3 + (pts[1][1] - y) / r - ab.stool), 0, 1) + (n1 > 1.3)
        _paint(hu, sl, below * _occ(col + 2, w), stool + np.minimum(gas, 1) * (-1000 - stool))
    pts, radii = ab.stomach
    if near(pts[2][0] - 30, pts[0][0] + 50):
        st = _chain((z, y, x), pts, radii)
        _paint(hu, sl, below * _occ(st, w), v.wall + 5 * n2)
        food = ab.stomach_hu + ab.food * (20 * f3 + 25 * n1)
        food = food + ab.food * (n1 > 1.6) * (-1000 - food)  # bubbles in food
        if p.stomach[2]:  # gas in front of an air-fluid level (supine)
            food = food + _occ(y - ab.level, w) * (-1000 - food)
        _paint(hu, sl, below * _occ(st + ab.st_wall, w), food)
    for (kz, ky, kx), kr in ab.kidneys:  # in their perirenal fat
        if near(kz - kr[0] - 10, kz + kr[0] + 10):
            kd = _ell((z - kz, y - ky, x - kx), kr)
            _paint(hu, sl, below * _occ(kd - 8, w), v.fat + 10 * n1)
            _paint(hu, sl, below * _occ(kd, w), v.kidney + 5 * n2)
    for sx in (-1, 1):  # adrenals: two thin limbs each
        za = ab.adrenal - 10 * (sx < 0)
        if near(za - 17, za + 17):
            a = (p.yv - 12, sx * (p.vr + 20))
            limbs = np.minimum(_seg((y, x), a, (a[0] + 22, a[1] + sx * 8)), _seg((y, x), a, (a[0] + 18, a[1] - sx * 6)))
            _paint(hu, sl, below * _occ(np.maximum(limbs - 2.5, np.abs(z - za) - 15), w), v.wall)
    pts, r = ab.pancreas
    if near(pts[1][0] - 20, pts[0][0] + 20):
        _paint(hu, sl, below * _occ(_chain((z, y, x), pts, [r, 1.2 * r]), w), v.pancreas + 8 * n1)
    a, b = p.aorta[-2].tolist(), p.aorta[-1].tolist()
    _paint(hu, sl, below * _occ(_seg((z, y, x), a, b) - p.aorta_r[1] - ab.crus, w), v.muscle)


def _render(p, v, g, cache):
    """Noise-free HU (float32, the grid's shape) and bool: voxel centre inside the heart."""
    hu, inside = np.full(g.shape, -1000.0, np.float32), np.zeros(g.shape, bool)
    sl, zyx = g.box()
    _paint_table(hu, sl, p, zyx, g.w)
    body = _paint_body(hu, sl, p, v, zyx, g.w)
    cav, above, n2 = _paint_thorax(hu, sl, p, v, g, zyx, cache)
    extra = getattr(p, "extra", None)  # the randomised kind's unlabelled confusers
    if extra is not None and extra.pleural:
        _paint_pleural(hu, sl, p, v, zyx, cav, above, g.w)
    _paint_mediastinum(hu, sl, p, v, g, zyx, body, above)
    if extra is not None and extra.thymus:
        _paint_thymus(hu, p, v, g)
    _paint_heart(hu, inside, p, v, g, n2)
    _paint_great_vessels(hu, g, p, v, inside)
    _paint_spine(hu, sl, p, v, zyx, g.w)
    _paint_ribs(hu, sl, p, v, zyx, cav, g.w)
    _paint_sternum(hu, p, v, g)
    if extra is not None and extra.metal:
        _paint_metal(hu, p, g)
    return hu, inside


def _paint_table(hu, sl, p, zyx, w):
    """The table under the back: two carbon shells with foam between."""
    _, y, x = zyx
    yt = p.back + p.table + 16 - 0.0003 * x ** 2
    _paint(hu, sl, _occ(np.maximum(np.abs(y - yt) - 6, np.abs(x) - 230), w), -900)
    _paint(hu, sl, _occ(np.maximum(np.abs(np.abs(y - yt) - 6) - 1, np.abs(x) - 230), w), 250)


def _wobble(p, z):
    """Scale (within 3 %) of the body outline along ``z`` (mm): the chest is not a perfect cylinder."""
    return 1 + 0.03 * np.sin(z / 80 + p.wobble)


def _paint_body(hu, sl, p, v, zyx, w):
    """Subcutaneous fat, breasts, the muscle of the chest wall and arms; returns the signed
    distance (mm) to the skin (flat at the back)."""
    z, y, x = zyx
    wob = _wobble(p, z)
    body = np.maximum(_ell((y, x), (p.b * wob, p.a * wob)), y - p.back)  # flat back
    _paint(hu, sl, _occ(body, w), v.fat)
    if p.breasts:  # (z, |x|, depth, radius)
        bz, bx, bd, br = p.breasts
        for sx in (-1, 1):
            breast = _ell((z - bz, y + p.b * 0.85, x - sx * bx), (br * 1.2, bd + 0.15 * p.b, br))
            _paint(hu, sl, _occ(breast, w), v.fat + 40)
    _paint(hu, sl, _occ(body + p.fat, w), v.muscle)
    if p.arms:  # (gap to the body, y, half-width, half-depth): arms down at the sides
        gap, ay, ra, rb = p.arms
        for sx in (-1, 1):
            ac = (y - ay, x - sx * (p.a + gap + ra))
            for d, val in ((_ell(ac, (rb, ra)), v.fat), (_ell(ac, (rb - 8, ra - 8)), v.muscle),
                           (np.hypot(*ac) - 11, v.cortex), (np.hypot(*ac) - 8, v.bone)):
                _paint(hu, sl, _occ(d, w), val)
    return body


def _paint_thorax(hu, sl, p, v, g, zyx, cache):
    """Thoracic cavity: lungs above the diaphragm (attached higher in front, raised under the heart,
    which rests on it), the cardiophrenic fat pad, the upper abdomen below, the diaphragm (5 mm).
    Returns the cavity's signed distance (mm), the occupancy above the diaphragm and noise field 2."""
    (z, y, x), w = zyx, g.w
    wob = _wobble(p, z)
    cav, ab = _ell((y + 5, x), (p.b * wob - p.fat - p.wall, p.a * wob - p.fat - p.wall)), p.abdomen
    origin, h, (cradle, fatpad) = ab.lift
    yd = y + 0.3 * p.b
    dia = np.maximum.reduce([zt - ((x - xd) ** 2 + 0.6 * yd ** 2) / (2 * p.dome_r) - 0.1 * yd for zt, xd in p.domes]
                            + [_lattice(origin, h, cradle, y, x)])
    gy, gx = np.gradient(dia[0], w)
    sd = (z - dia) / np.sqrt(1 + gy ** 2 + gx ** 2)  # about the distance (mm) above the diaphragm
    above, in_cav = _occ(-sd, w), _occ(cav, w)
    n1, n2 = _field((p.key, 1), g, 8.0, cache), _field((p.key, 2), g, 8.0, cache)
    hilum = np.exp(-((np.abs(x) - 50) ** 2 + (y - p.yv + 45) ** 2 + (z - float(p.hhi[0])) ** 2) / 7200.0)
    vessel = np.exp(-(n1 ** 2 + n2 ** 2) / (2 * (0.12 + 0.2 * hilum) ** 2))  # tubes where two fields cross zero
    f3 = _field((p.key, 3), g, 12.0, cache)
    lung = v.lung + 25 * f3 + 60 * (1 - p.breath) * np.clip((y + p.b) / (2 * p.b), 0, 1) ** 2  # denser at the back
    _paint(hu, sl, in_cav * above, lung + vessel * (0.5 * (v.blood_l + v.blood_r) - lung))
    pad = in_cav * above * _occ(z - _lattice(origin, h, fatpad, y, x), w)  # cardiophrenic fat, with strands
    _paint(hu, sl, pad, v.fat + 60 * vessel + 8 * n2)
    below = in_cav * (1 - above)
    if below.any():
        _abdomen(hu, sl, p, v, g, (z, y, x), below, (n1, n2, f3), cache)
    _paint(hu, sl, in_cav * _occ(np.abs(sd + 2.5) - 2.5, w), v.muscle)  # the diaphragm, 5 mm
    return cav, above, n2


def _paint_mediastinum(hu, sl, p, v, g, zyx, body, above):
    """Mediastinal fat from the sternum to the spine, paraspinal muscles, airway and oesophagus."""
    _, y, x = zyx
    ys = -p.b + p.fat
    _paint(hu, sl, _occ(_ell((y - (ys + p.yv) / 2, x - 5), ((p.yv - ys) / 2, p.mw)), g.w) * above, v.fat)
    for sx in (-1, 1):
        muscle = np.maximum(_ell((y - p.yv - p.vr - 12, x - sx * 30), (26, 24)), body + p.fat)
        _paint(hu, sl, _occ(muscle, g.w), v.muscle)
    for i, a in enumerate(p.airway):
        _tube(hu, g, a, 9 if i == 0 else 6.5, -1000, 2, v.muscle)
    _tube(hu, g, p.oes, 8, v.muscle)
    _tube(hu, g, p.oes, 2.5, -1000)


def _paint_heart(hu, inside, p, v, g, n2):
    """The heart: pericardium, epicardial fat, coronaries (``n2``: noise field placing calcified
    plaques), myocardium, blood pools; sets ``inside`` (bool) at voxel centres inside the heart."""
    effusion = getattr(p, "extra", None) and p.extra.effusion  # mm of pericardial fluid (randomised kind)
    margin = 20 + 1.6 * effusion if effusion else 20
    hsl, (hz, hy, hx) = g.box(p.hlo - margin, p.hhi + margin)
    if hsl is None:
        return
    w = g.w
    d, outer, u = _heart_dist(p, hz, hy, hx)
    tw = p.twall.tolist()
    rv = np.maximum(d[1], tw[0] - d[0])  # septa: each cavity ends where the one before begins
    la = np.maximum.reduce([d[2], 3 - d[0], 3 - rv])
    ra = np.maximum.reduce([d[3], 3 - la, 3 - d[0], 3 - rv])
    fat = p.pfat[0] + p.pfat[1] * np.exp(-((u + 22) / 12) ** 2) + p.pfat[2] * np.clip((u - 20) / 40, 0, 1)
    if effusion:  # fluid between the epicardial fat and the pericardium, thicker behind and below (supine)
        sac = fat + effusion * np.clip(1 + (hy - p.hc[1]) / 60 - (hz - p.hc[0]) / 120, 0.3, 1.6)
        _paint(hu, hsl, _occ(outer - sac - 1.5, w), v.muscle)
        _paint(hu, hsl, _occ(outer - sac, w), v.peri_fluid)
    else:
        _paint(hu, hsl, _occ(outer - fat - 1.2, w), v.muscle)
    _paint(hu, hsl, _occ(outer - fat, w), v.fat)
    ring = _occ(np.maximum(np.abs(u + 22) - 2, np.abs(outer - 2.5) - 2), w) * (p.pfat[1] > 3)
    _paint(hu, hsl, ring, v.blood_l)
    _paint(hu, hsl, ring * (n2[hsl] > 1.6) * p.calc, 700.0)  # calcified plaques
    _paint(hu, hsl, _occ(outer, w), v.myo)
    _paint(hu, hsl, _occ(np.minimum(d[0], la), w), v.blood_l)
    _paint(hu, hsl, _occ(np.minimum(rv, ra), w), v.blood_r)
    inside[hsl] = outer < 0


def _paint_great_vessels(hu, g, p, v, inside):
    """Great vessels, joining the blood pools; their fat sheaths stay out of the heart (``inside``)."""
    for pts, r, val, halo in [(p.ivc, 13, v.blood_r, 0), (p.svc, 10, v.svc, 0), (p.azygos, 4, v.vein, 0),
                              (p.aorta[:2], p.aorta_r[0], v.blood_l, 0), (p.aorta[1:8], p.aorta_r[0], v.blood_l, 3),
                              (p.aorta[7:], p.aorta_r[1], v.blood_l, 2), *[(q, 6, v.blood_l, 0) for q in p.pv],
                              *[(q, r, v.blood_l, 0) for q, r in p.branches],
                              *[(q, r, v.blood_r, 2) for q, r in zip(p.pa, (13, 10, 10))]]:
        _tube(hu, g, pts, r, val, halo, v.fat, inside)


def _paint_spine(hu, sl, p, v, zyx, w):
    """Spine: vertebral bodies (cortex, marrow, discs), posterior arch, canal."""
    z, y, x = zyx
    vb = _ell((y - p.yv, x), (p.vr * 0.85, p.vr * 1.1))
    disc = _occ(np.abs((z - p.vphase) % p.pitch - p.pitch / 2) - 3, w)
    yc = p.yv + p.vr + 9
    arch = np.minimum.reduce([np.hypot(y - yc, x) - 13, _seg((y, x), (yc, 0), (p.back - p.fat - 8, 0)) - 4,
                              _seg((y, np.abs(x)), (yc - 4, 8), (yc + 6, 30)) - 5])
    for d, val, a in ((arch, v.cortex, 1 - disc), (arch + 2, v.bone, 1 - disc), (np.hypot(y - yc, x) - 8, 15.0, 1),
                      (vb, v.cortex, 1), (vb + 1.5, v.bone, 1), (vb, 80.0, disc)):
        _paint(hu, sl, _occ(d, w) * a, val)


def _paint_ribs(hu, sl, p, v, zyx, cav, w):
    """Ribs and costal cartilage: a pattern periodic in z that descends towards the front, just
    outside the cavity (``cav``: its signed distance, mm)."""
    z, y, x = zyx
    theta = np.abs(np.arctan2(x, y - p.yv)) / np.pi  # 0 at the spine, 1 at the sternum
    dz = np.abs((z + p.rib_slope * theta - p.rib_phase) % p.rib_pitch - p.rib_pitch / 2) - 4.5
    dr = np.abs(cav - 7) - 3.5
    rib = np.sqrt(np.maximum(dr, 0) ** 2 + np.maximum(dz, 0) ** 2) + np.minimum(np.maximum(dr, dz), 0)
    rib = np.maximum(rib, np.where(y > p.yv, 28 - np.abs(x), -99.0))  # leave the spine free
    front = np.clip((theta - 0.75) / 0.05, 0, 1)  # costal cartilage
    _paint(hu, sl, _occ(np.maximum(rib, theta - 0.95), w), v.cortex * (1 - front) + v.cartilage * front)
    _paint(hu, sl, _occ(np.maximum(rib + 1.5, theta - 0.75), w), v.bone)


def _paint_sternum(hu, p, v, g):
    """The sternum, in front from below the heart to 80 mm above it."""
    ssl, (sz, sy, sx) = g.box((p.hlo[0] - 20, -p.b, -40.0), (p.hhi[0] + 80, 0.0, 40.0))
    if ssl is not None:
        st = _ell((sy + p.b - p.fat - 9, sx), (6, 16))
        _paint(hu, ssl, _occ(st, g.w), v.cortex)
        _paint(hu, ssl, _occ(st + 1.5, g.w), v.bone)


def _scan(p, rng, v, z_planes, size, fov, centre, dz):
    """Slices centred at ``z_planes`` (mm), ``dz`` mm thick, ``size`` (H, W) pixels over ``fov`` mm
    about ``centre`` (y, x) mm: HU (Z, H, W) with partial volume, blur and noise; mask; noise SD."""
    h, wd = size
    dxy = float(fov / max(h, wd))
    y, x = ((c + (np.arange(m) - (m - 1) / 2) * dxy).astype(np.float32) for c, m in zip(centre, size))
    n = 1 if dz <= 1.5 else 3 if dz <= 4 else 5  # planes per slice (odd: the middle one is the centre)
    offs = dz * ((np.arange(n) + 0.5) / n - 0.5)
    vol, mask = _slabs(p, v, z_planes, offs, y, x, dxy)
    psf, sd, corr = rng.uniform(0.3, 0.8) / dxy, np.exp(rng.uniform(np.log(5), np.log(40))), rng.uniform(0.4, 1.0)
    vol = ndimage.gaussian_filter(vol, (0, psf, psf))
    noise = ndimage.gaussian_filter(rng.standard_normal(vol.shape, np.float32), (0, corr, corr))
    vol += noise * float(sd / noise.std())
    if rng.random() < 0.3:  # -1024 outside the reconstruction circle
        yy, xx = np.mgrid[:h, :wd]
        vol[:, (yy - (h - 1) / 2) ** 2 + (xx - (wd - 1) / 2) ** 2 > (max(h, wd) / 2) ** 2] = -1024
    return np.clip(np.round(vol), -1024, 3071), mask, float(sd)


def _slabs(p, v, z_planes, offs, y, x, w, scale=None):
    """Noise-free slices on pixel centres ``y``, ``x`` (mm): the mean HU over the planes ``z_planes +
    offs`` (mm) of each, and the heart mask at its middle plane. With ``scale`` (z, y, x), the
    coordinates are the scanner's mm and are divided by it into the patient's; ``w``: pixel size in
    the patient's mm."""
    n, h, wd = len(offs), len(y), len(x)
    vol, mask = np.empty((len(z_planes), h, wd), np.float32), np.empty((len(z_planes), h, wd), np.uint8)
    cache, step = {}, max(1, 24 // n)  # render about 24 planes at a time
    for i in range(0, len(z_planes), step):
        zs = (z_planes[i:i + step, None] + offs).ravel().astype(np.float32)
        g = _Grid(zs, y, x, w) if scale is None else _Grid(*(c / np.float32(k) for c, k in zip((zs, y, x), scale)), w)
        hu, inside = _render(p, v, g, cache)
        vol[i:i + step] = hu.reshape(-1, n, h, wd).mean(1)
        mask[i:i + step] = inside.reshape(-1, n, h, wd)[:, n // 2]
    return vol, mask


def _setup(seed, contrast):
    """Patient, scan generator, tissue values and contrast of one seed."""
    r_anat, r_scan = np.random.default_rng(seed).spawn(2)
    p = _patient(r_anat)
    drawn = r_scan.random() < 0.6
    contrast = drawn if contrast is None else bool(contrast)
    v = _values(r_scan, contrast)
    if r_scan.random() < 0.25:  # cardiac zoom: field of view (mm) and centre (y, x) mm
        fov, centre = r_scan.uniform(180, 280), (p.hc[1] + r_scan.normal(0, 10), p.hc[2] + r_scan.normal(0, 10))
    else:  # the whole chest
        fov, centre = r_scan.uniform(max(300, 2 * p.a + 20), 480), (r_scan.normal(5, 10), r_scan.normal(0, 10))
    return p, r_scan, v, contrast, fov, centre


def generate_ct(seed: int, shape=(64, 256, 256), spacing=None, contrast=None, kind="standard"):
    """One synthetic chest CT volume and its heart mask.

    Args:
        seed: all randomness comes from ``np.random.default_rng(seed)``; the same seed and
            arguments give the same volume. The patient (anatomy) depends on the seed only;
            ``shape``, ``spacing`` and ``contrast`` change how that patient is scanned.
        shape: (Z, Y, X) voxels. Z may be None: as many slices as a drawn extent (heart + 20 mm
            to 350 mm) needs.
        spacing: (z, y, x) mm (y = x), or None to draw it: in-plane field of view 300-480 mm
            (whole chest) or 180-280 mm (cardiac zoom, 25 %); slice spacing (= thickness) 1-5 mm,
            raised where a fixed Z needs it so that the slices cover the whole heart.
        contrast: True (contrast-enhanced), False, or None to draw it (60 % with contrast).
        kind: "standard" or "randomised" (``KINDS``; the module docstring): the same patient, its
            scan and confusers randomised.

    Returns:
        volume: float32 (Z, Y, X), HU (-1024..3071, whole numbers).
        mask: uint8 (Z, Y, X), 1 where a voxel centre lies inside the heart. The slices span the
            whole heart with at least 5 mm to spare at each end (unless a given Z x spacing is
            too short), and often much more: slices with no heart.
        info: dict: ``spacing`` (z, y, x) mm, ``origin`` (z, y, x) mm of voxel (0, 0, 0) in
            patient coordinates, ``fov_mm`` (y, x), ``contrast``, ``noise_sd`` (HU), ``blood_hu``
            (left heart, HU) and ``heart_ml`` (mask voxels x voxel volume). Randomised: the
            scanner's mm (a scaled patient), and ``kind``, ``phase``, ``myo_hu``, ``look``.
    """
    _check_kind(kind)
    asked = contrast
    p, rng, v, contrast, fov, centre = _setup(seed, contrast)
    Z, H, W = shape
    dz, heart = rng.uniform(1, 5), float(p.hhi[0] - p.hlo[0]) + 10
    if spacing is not None:
        dz, fov = float(spacing[0]), float(spacing[2]) * max(H, W)
    elif Z is not None:
        dz = max(dz, heart / Z)
    Z = Z or int(np.ceil(rng.uniform(heart + 10, 350) / dz))
    z0 = rng.uniform(*sorted((p.hhi[0] + 5 - Z * dz, p.hlo[0] - 5)))
    z_planes = z0 + (np.arange(Z) + 0.5) * dz
    if kind == "randomised":
        return _ct_randomised(seed, p, asked, shape, spacing, (fov, centre, dz, z_planes))
    vol, mask, sd = _scan(p, rng, v, z_planes, (H, W), fov, centre, dz)
    dxy = fov / max(H, W)
    origin = (float(z_planes[0]), float(centre[0] - (H - 1) / 2 * dxy), float(centre[1] - (W - 1) / 2 * dxy))
    return vol, mask, dict(spacing=(dz, dxy, dxy), origin=origin, fov_mm=(H * dxy, W * dxy), contrast=contrast,
                           noise_sd=sd, blood_hu=float(v.blood_l), heart_ml=float(mask.sum()) * dz * dxy * dxy / 1000)


def generate_ct_slice(seed: int, size=(256, 256), contrast=None, kind="standard"):
    """One axial slice for 2D training, 0.6-5 mm thick, at a random height: 70 % from 80 mm below
    the heart's bounding box to 60 mm above it, 30 % from 40 mm below its lower edge to 15 mm above
    (the upper abdomen under the heart: hard negatives); about 40 % of the slices show heart.
    Field of view and contrast are drawn as in :func:`generate_ct`. About 25-35 ms at 160 x 160 on one core.
    ``kind`` "randomised": the same patient and height (scaled with the patient), the rest randomised.

    Returns:
        image: float32 (H, W), HU. mask: uint8 (H, W), heart. info: dict with ``z_mm``,
        ``spacing`` (thickness, pixel, pixel) mm, ``contrast`` and ``noise_sd`` (HU); randomised
        also ``kind``, ``phase``, ``blood_hu``, ``myo_hu`` and ``look``.
    """
    _check_kind(kind)
    asked = contrast
    p, rng, v, contrast, fov, centre = _setup(seed, contrast)
    dz, edge = rng.uniform(0.6, 5), rng.random() < 0.3
    lo, hi = (p.hlo[0] - 40, p.hlo[0] + 15) if edge else (p.hlo[0] - 80, p.hhi[0] + 60)
    z = rng.uniform(lo, hi)  # 30 %: the heart's lower edge and the abdomen just below it
    if kind == "randomised":
        return _slice_randomised(seed, p, asked, size, (fov, centre, dz, z))
    vol, mask, sd = _scan(p, rng, v, np.array([z]), size, fov, centre, dz)
    dxy = fov / max(size)
    return vol[0], mask[0], dict(z_mm=float(z), spacing=(dz, dxy, dxy), contrast=contrast, noise_sd=sd)


# --- the "randomised" kind (issue 15): what real acquisitions vary. Its draws come from a stream of
# their own (the seed's third), after the standard ones, so a seed keeps its patient; with the
# standard geometry (20 % of runs) also its slices and heart mask, voxel for voxel ---

KINDS = ("standard", "randomised")
PHASES = ("non-contrast", "arterial", "venous", "delayed")


def _check_kind(kind):
    if kind not in KINDS:
        raise ValueError(f"unknown heart-ct generator kind '{kind}'; known: {', '.join(KINDS)}")


def _randomised(seed, p, contrast, fov, centre, dz):
    """The randomised scan of patient ``p`` (module docstring), given the standard field of view,
    centre and thickness: (look dict, tissue values, the stream that goes on to draw the noise).
    Sets ``p.extra`` (the unlabelled confusers) and may change ``p.pfat`` (not the heart)."""
    rng = np.random.default_rng(seed).spawn(3)[2]  # anatomy and standard scan: the first two
    look = {"neutral": rng.random() < 0.2}  # the standard geometry
    child = not look["neutral"] and rng.random() < 0.25
    if look["neutral"]:
        look.update(scale=(1.0, 1.0, 1.0), fov=fov, centre=centre, thickness=dz, lowres=1.0, slab_cut=None)
    else:
        s, a = rng.uniform(0.4, 0.85) if child else rng.uniform(0.88, 1.15), rng.uniform(-0.12, 0.12)
        look["scale"] = (s * rng.uniform(0.92, 1.08), s * np.exp(a), s * np.exp(-a))  # (z, y, x)
        look["fov"], look["centre"] = _random_view(rng, p, look["scale"])
        look.update(thickness=rng.uniform(0.6, 3) if rng.random() < 0.6 else rng.uniform(3, 8),
                    lowres=rng.uniform(1.3, 2.5) if rng.random() < 0.3 else 1.0,
                    slab_cut=(rng.uniform(0.1, 0.4), rng.random() < 0.5) if rng.random() < 0.15 else None)
    if contrast is None:
        phase = PHASES[int(rng.choice(4, p=[0.3, 0.35, 0.2, 0.15]))]
    else:
        phase = PHASES[int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))] if contrast else PHASES[0]
    v = _random_values(rng, phase)
    look.update(child=child, phase=phase, **_random_scanner(rng))
    _random_confusers(rng, p, child, look)
    return look, v, rng


def _random_view(rng, p, scale):
    """Field of view (mm) and its centre (y, x) mm in the scanner's frame: the whole chest, the body
    0.65-1.25 times the field's width (its sides may be cut off) (50 %); a cardiac zoom 1.2-2.6 times
    the heart's width, the heart off-centre (35 %); or one 1.1-2 times it with the heart reaching
    10-40 % of its width beyond one edge of the field (15 %)."""
    _, sy, sx = scale
    u, half = rng.random(), float(p.hhi[2] - p.hlo[2]) * sx / 2  # the heart's half-width (mm)
    heart = np.array([p.hc[1] * sy, p.hc[2] * sx])
    if u < 0.5:
        fov = float(2 * p.a * sx / rng.uniform(0.65, 1.25))
        return fov, (rng.normal(5, 0.06 * fov), rng.normal(0, 0.06 * fov))
    if u < 0.85:
        fov = 2 * half * rng.uniform(1.2, 2.6)
        return fov, tuple(heart + rng.normal(0, 0.1 * fov, 2))
    fov, side = 2 * half * rng.uniform(1.1, 2.0), int(rng.integers(4))
    shift = np.zeros(2)
    shift[side // 2] = (1 if side % 2 else -1) * (fov / 2 - half + 2 * half * rng.uniform(0.1, 0.4))
    shift[1 - side // 2] = rng.normal(0, 0.05 * fov)
    return fov, tuple(heart - shift)


def _random_values(rng, phase):
    """HU of blood and tissues for one contrast ``phase`` (the same draws for every phase)."""
    u_ = rng.uniform
    v = SimpleNamespace(fat=u_(-130, -70), muscle=u_(30, 70), lung=u_(-900, -700), bone=u_(120, 350),
                        cortex=u_(400, 1200), cartilage=u_(60, 250), fluid=u_(-5, 25), liver=u_(40, 75),
                        myo=u_(30, 60), kidney=u_(25, 40), pancreas=u_(30, 50), peri_fluid=u_(0, 20),
                        pleural_fluid=u_(0, 25), thymus=u_(40, 80))
    v.wall, blood, dark = v.muscle + u_(0, 15), u_(20, 60), u_(5, 25)  # blood: anaemic to concentrated
    arterial, right, svc, chaser = u_(180, 600), u_(0.15, 1.1), u_(1, 5), u_(0.3, 1.0) if rng.random() < 0.4 else 0
    venous, lr, myo_a, myo_v, myo_d = u_(120, 230), u_(-20, 20), u_(30, 110), u_(80, 140), u_(60, 120)
    organ = u_([5, 80, 20, 30], [40, 200, 60, 90])  # enhancement of liver, kidney, gut wall, pancreas
    v.blood_l = v.blood_r = v.svc = blood
    v.vein = v.liver - dark
    if phase == "arterial":  # left heart bright, right heart anything from unenhanced (saline) to as bright
        v.blood_l, v.myo = arterial, v.myo + myo_a
        v.blood_r = max(40.0, arterial * right)
        v.svc = v.blood_r * chaser if chaser else min(v.blood_r * svc, 2500.0)  # saline chaser, or undiluted
        v.vein = v.liver + u_(-10, 30)
    elif phase in ("venous", "delayed"):  # venous: blood over the myocardium; delayed: either side of it
        v.blood_l = venous if phase == "venous" else u_(60, 120)
        v.blood_r = v.svc = v.blood_l + lr
        v.myo = myo_v if phase == "venous" else myo_d
        organ = organ * (1.0 if phase == "venous" else 0.6)
        v.vein = v.liver + organ[0] + u_(10, 60)
    if phase != "non-contrast":
        v.liver, v.kidney, v.wall, v.pancreas = v.liver + organ[0], v.kidney + organ[1], v.wall + organ[2], \
            v.pancreas + organ[3]
        v.thymus += 25
    return v


def _random_scanner(rng):
    """Calibration, kernel, noise, artefacts and export of one scan (module docstring)."""
    u_ = rng.uniform
    lower = u_(0, 300)  # the export window's level; its lower end stays below -100 HU (air for check_ct)
    return dict(
        calibration=(u_(0.93, 1.07), u_(-25, 25)), psf_mm=u_(0.3, 1.6),
        sharpen=(u_(0.2, 1.0), u_(0.8, 2.0)) if rng.random() < 0.35 else None,
        noise_sd=float(np.exp(u_(np.log(3), np.log(90)))), grain=u_(0, 1.8, 2),
        band=(u_(1.5, 4.0), u_(0.3, 0.85)) if rng.random() < 0.5 else None, centre_noise=u_(0, 1.2),
        cupping=u_(5, 40) if rng.random() < 0.5 else 0.0, circle=rng.random() < 0.35,
        streak=(u_(150, 700), u_(20, 80), u_(0.4, 1.2), u_(50, 300)),  # HU, decay mm, width mm, band HU
        export=(u_(max(300, 2 * lower + 220), 1500), lower) if rng.random() < 0.25 else None)  # (width, level)


def _random_confusers(rng, p, child, look):
    """Unlabelled confusers of patient ``p``, all outside the heart's epicardial surface except the
    pacing leads and the valve ring (in the heart, labelled heart as in TotalSegmentator):
    ``p.extra`` (patient mm), epicardial fat rescaled; a summary in ``look``."""
    u_ = rng.uniform
    p.pfat = tuple(f * (u_(0, 0.3) if child else u_(0.3, 2.5)) for f in p.pfat)
    p.extra = SimpleNamespace(
        effusion=u_(4, 20) if rng.random() < 0.2 else 0.0,
        pleural=(int(rng.integers(-1, 2)), u_(10, 45)) if rng.random() < 0.15 else None,  # side (0: both), mm
        thymus=(u_(0, 30), u_(-5, 15), u_([30, 10, 20], [50, 18, 35])) if child and rng.random() < 0.7 else None,
        metal=_random_metal(rng, p))
    look.update(effusion_mm=p.extra.effusion, pleural=p.extra.pleural is not None, thymus=bool(p.extra.thymus),
                metal=p.extra.metal is not None)


def _random_metal(rng, p):
    """Metal (HU 8000-20000: steel and titanium) in 25 % of patients: sternal wires, a pacemaker
    (a can in the chest wall, one or two leads down the superior vena cava), a valve ring."""
    if rng.random() >= 0.25:
        return None
    u_, parts = rng.uniform, rng.random(3) < (0.55, 0.45, 0.3)
    parts[int(rng.integers(3))] |= not parts.any()
    hmap = np.linalg.inv(p.hinv)
    at = lambda loc: p.hc + hmap @ np.asarray(loc, float)  # noqa: E731  (heart-local mm -> patient)
    m = SimpleNamespace(hu=u_(8000, 20000), wires=[], can=None, leads=[], ring=None)
    if parts[0]:
        n = int(rng.integers(3, 8))
        m.wires = (np.linspace(p.hlo[0] - 10, p.hhi[0] + 70, n) + u_(-4, 4, n)).tolist()
    if parts[1]:
        side = 1 if rng.random() < 0.8 else -1  # +x: the patient's left
        can = np.array([p.hhi[0] + u_(50, 100), -0.83 * p.b + 6 + 0.3 * p.fat, side * 0.55 * p.a])
        m.can = can, (25.0, 5.0, 22.0)
        vein = [can, can + [15, 25, -side * 0.25 * p.a], p.svc[1], p.svc[0], at(p.cc[3])]
        m.leads = [(np.array(vein + [at(p.cc[1] + [0.75 * p.cr[1][0], 0, 0])]), u_(0.8, 1.5))]
        if rng.random() < 0.5:  # a second lead into the right atrium
            m.leads.append((np.array(vein + [at(p.cc[3] + [0, 0.6 * p.cr[3][1], 0])]), u_(0.8, 1.2)))
    if parts[2]:
        if rng.random() < 0.5:  # mitral: between the LV and LA centres, facing along them
            c, n = at(0.5 * (p.cc[0] + p.cc[2])), hmap @ (p.cc[2] - p.cc[0])
        else:  # aortic: at the root
            c, n = p.aorta[0], p.aorta[1] - p.aorta[0]
        m.ring = c, n / np.linalg.norm(n), u_(10, 15)
    return m


def _paint_metal(hu, p, g):
    """Sternal wires (loops about the sternum), the pacemaker can, leads and the valve ring."""
    m = p.extra.metal
    ys = -p.b + p.fat + 9  # the sternum's centre (y)
    for zw in m.wires:
        sl, (z, y, x) = g.box((zw - 3, ys - 14, -24), (zw + 3, ys + 14, 24))
        if sl is not None:
            d = np.maximum(np.abs(_ell((y - ys, x), (8.5, 18.5))) - 0.9, np.abs(z - zw) - 0.9)
            _paint(hu, sl, _occ(d, g.w), m.hu)
    if m.can is not None:
        c, r = m.can
        sl, (z, y, x) = g.box(c - r, c + r)
        if sl is not None:
            _paint(hu, sl, _occ(_ell((z - c[0], y - c[1], x - c[2]), r), g.w), m.hu)
    for pts, r in m.leads:
        _tube(hu, g, pts, r, m.hu)
    if m.ring is not None:
        c, n, big = m.ring
        sl, (z, y, x) = g.box(c - big - 4, c + big + 4)
        if sl is not None:
            q = (z - c[0], y - c[1], x - c[2])
            h = q[0] * n[0] + q[1] * n[1] + q[2] * n[2]
            rho = np.sqrt(np.maximum(q[0] ** 2 + q[1] ** 2 + q[2] ** 2 - h ** 2, 0))
            _paint(hu, sl, _occ(np.hypot(rho - big, h) - 1.5, g.w), m.hu)


def _paint_pleural(hu, sl, p, v, zyx, cav, above, w):
    """Pleural effusion: fluid against the back of the cavity (supine), on one side or both."""
    side, depth = p.extra.pleural
    _, y, x = zyx
    back = np.clip((y - p.yv + 60) / 40, 0, 1) * (np.clip(side * x / 20 + 0.5, 0, 1) if side else 1)
    _paint(hu, sl, above * _occ(cav, w) * _occ(-cav - depth * back, w), v.pleural_fluid)


def _paint_thymus(hu, p, v, g):
    """A child's thymus in front of the great vessels, above the heart."""
    dz, x0, r = p.extra.thymus
    c = np.array([p.hhi[0] + dz, -p.b + p.fat + p.wall + r[1] + 4, x0])
    sl, (z, y, x) = g.box(c - r, c + r)
    if sl is not None:
        _paint(hu, sl, _occ(_ell((z - c[0], y - c[1], x - c[2]), r), g.w), v.thymus)


def _streak_sources(hu, px):
    """Where one noise-free slice (HU) is dense enough to streak (over 1800 HU: metal, undiluted
    contrast): (row, column, weight) of its four largest such parts, weight from their size and HU."""
    dense = hu > 1800
    if not dense.any():
        return []
    lab, n = ndimage.label(dense)
    idx = np.arange(1, n + 1)
    area, peak = ndimage.sum(dense, lab, idx) * px[0] * px[1], ndimage.maximum(hu, lab, idx)
    com = ndimage.center_of_mass(dense, lab, idx)
    weight = np.clip(np.sqrt(area) / 6 * np.clip((peak - 1000) / 3000, 0.05, 2), 0.1, 3)
    return [(*com[i], float(weight[i])) for i in np.argsort(-area)[:4]]


def _add_streaks(img, sources, streak, px, rng):
    """Metal artefacts in one slice (in place): 6-16 lines through each source at random angles,
    bright or dark, fading with distance; a dark band between each pair of sources (beam hardening)."""
    amp, decay, width, band = streak  # HU, mm, pixels, HU
    yy = np.arange(img.shape[0], dtype=np.float32)[:, None]
    xx = np.arange(img.shape[1], dtype=np.float32)[None, :]
    for cy, cx, wt in sources:
        k = int(rng.integers(6, 17))
        th = rng.uniform(0, np.pi, k).astype(np.float32)[:, None, None]
        a = rng.normal(0, amp * wt, k).astype(np.float32)[:, None, None]
        dy, dx = yy - cy, xx - cx  # pixels
        perp, along = dy * np.cos(th) - dx * np.sin(th), (dy * np.sin(th) + dx * np.cos(th)) * px[0]
        img += (a * np.exp(-0.5 * (perp / width) ** 2) / (1 + np.abs(along) / decay)).sum(0)
    for i, (ay, ax, wa) in enumerate(sources):
        for by, bx, wb in sources[i + 1:]:
            d = _seg((yy, xx), (ay, ax), (by, bx)) * px[0]  # mm
            img -= band * min(wa, wb, 1.0) * np.exp(-0.5 * (d / 4) ** 2)
    return img


def _kernel(vol, look, px, blur=True):
    """The reconstruction kernel on slices (Z, h, w): a point spread function, then a sharpening
    (edge-enhancing) kernel where the look has one."""
    if blur:
        vol = ndimage.gaussian_filter(vol, (0, look["psf_mm"] / px[0], look["psf_mm"] / px[1]))
    if look["sharpen"]:
        amount, sigma = look["sharpen"]
        vol = vol + amount * (vol - ndimage.gaussian_filter(vol, (0, sigma, sigma)))
    return vol


def _acquire(vol, look, rng, px, body):
    """The scanner on noise-free slices (Z, h, w) of pixels ``px`` (y, x) mm: calibration, kernel,
    streaks, beam-hardening cupping and noise. ``body``: the body's centre and half-axes (pixels),
    where cupping is deepest and the noise strongest."""
    sources = [_streak_sources(s, px) for s in vol]
    k, b = look["calibration"]
    vol = _kernel(vol * np.float32(k) + np.float32(b), look, px)
    for s, src in zip(vol, sources):
        if src:
            _add_streaks(s, src, look["streak"], px, rng)
    (cy, cx), (ry, rx) = body
    yy, xx = np.ogrid[:vol.shape[1], :vol.shape[2]]
    centre = np.exp(-((yy - cy) / ry) ** 2 - ((xx - cx) / rx) ** 2).astype(np.float32)
    noise = ndimage.gaussian_filter(rng.standard_normal(vol.shape, np.float32), (0, *look["grain"]))
    if look["band"]:  # CT-like band-pass texture: less of the coarse blotches
        sigma, part = look["band"]
        noise -= part * ndimage.gaussian_filter(noise, (0, sigma, sigma))
    noise = _kernel(noise, look, px, blur=False)
    noise *= np.float32(look["noise_sd"] / max(float(noise.std()), 1e-6)) * (1 + look["centre_noise"] * centre)
    return vol - np.float32(look["cupping"]) * centre + noise


def _store(vol, look):
    """As stored: -1024 outside the reconstruction circle (where the look has one), whole HU in
    -1024..3071; then the 8-bit windowed export mapped back to HU (where it has one)."""
    h, wd = vol.shape[1:]
    if look["circle"]:
        yy, xx = np.ogrid[:h, :wd]
        vol[:, (yy - (h - 1) / 2) ** 2 + (xx - (wd - 1) / 2) ** 2 > (max(h, wd) / 2) ** 2] = -1024
    vol = np.clip(np.round(vol), -1024, 3071)
    if look["export"]:
        width, level = look["export"]
        lo = level - width / 2  # below -100 HU
        vol = np.round(np.round(np.clip((vol - lo) / width, 0, 1) * 255) / 255 * width + lo)
    return vol.astype(np.float32)


def _heart_mask(p, z, y, x, scale):
    """uint8 (Z, Y, X): voxel centres (scanner mm, divided by ``scale`` into the patient's) inside
    the heart, as :func:`_paint_heart` finds them."""
    g = _Grid(*(np.asarray(c, np.float32) / np.float32(k) for c, k in zip((z, y, x), scale)), 1.0)
    mask = np.zeros(g.shape, np.uint8)
    hsl, (hz, hy, hx) = g.box(p.hlo - 20, p.hhi + 20)
    if hsl is not None:
        mask[hsl] = _heart_dist(p, hz, hy, hx)[1] < 0
    return mask


def _scan_randomised(p, v, look, rng, z_planes, size, dz):
    """Slices centred at ``z_planes`` (scanner mm), ``dz`` mm thick, ``size`` (H, W) pixels over the
    look's field of view: HU (Z, H, W) as stored and the heart mask, both at ``size`` (a low-resolution
    image rendered at 1/1.3-1/2.5 and interpolated up)."""
    (h, wd), scale, centre = size, look["scale"], look["centre"]
    dxy = float(look["fov"] / max(h, wd))
    axis = lambda m, c, step: (c + (np.arange(m) - (m - 1) / 2) * step).astype(np.float32)  # noqa: E731
    mask = _heart_mask(p, z_planes, axis(h, centre[0], dxy), axis(wd, centre[1], dxy), scale)
    hl, wl = (min(m, max(16, round(m / look["lowres"]))) for m in size)
    px = (h * dxy / hl, wd * dxy / wl)
    n = 1 if dz <= 1.5 else 3 if dz <= 4 else 5  # planes per slice
    offs = dz * ((np.arange(n) + 0.5) / n - 0.5)
    w = max(px) / float(np.sqrt(scale[1] * scale[2]))  # pixel size in the patient's mm
    vol = _slabs(p, v, z_planes, offs, axis(hl, centre[0], px[0]), axis(wl, centre[1], px[1]), w, scale)[0]
    body = ((-centre[0] / px[0] + (hl - 1) / 2, -centre[1] / px[1] + (wl - 1) / 2),
            (p.b * scale[1] / px[0], p.a * scale[2] / px[1]))
    vol = _acquire(vol, look, rng, px, body)
    if (hl, wl) != (h, wd):
        vol = ndimage.zoom(vol, (1, h / hl, wd / wl), order=1, grid_mode=True, mode="nearest")
    return _store(vol, look), mask


def _random_info(look, v):
    return dict(contrast=look["phase"] != "non-contrast", noise_sd=look["noise_sd"], kind="randomised",
                phase=look["phase"], blood_hu=float(v.blood_l), myo_hu=float(v.myo), look=look)


def _slice_randomised(seed, p, contrast, size, std):
    """:func:`generate_ct_slice` of the randomised kind; ``std``: the standard (field of view,
    centre, thickness, height z mm) of the seed."""
    fov, centre, dz, z = std
    look, v, rng = _randomised(seed, p, contrast, fov, centre, dz)
    zr = z * look["scale"][0]  # the same height in the scaled patient
    vol, mask = _scan_randomised(p, v, look, rng, np.array([zr]), size, look["thickness"])
    dxy = look["fov"] / max(size)
    return vol[0], mask[0], dict(z_mm=float(zr), spacing=(look["thickness"], dxy, dxy), **_random_info(look, v))


def _random_slab(rng, p, look, Z, dz, fit):
    """Slice centres (scanner mm) of a randomised volume, and its spacing: the whole heart with 5 mm
    or more to spare, or (``slab_cut``) 10-40 % of its height cut off at the top or the bottom."""
    sz = look["scale"][0]
    lo, hi = p.hlo[0] * sz, p.hhi[0] * sz
    if Z is None:
        Z = int(np.ceil(rng.uniform(hi - lo + 20, max(350 * sz, hi - lo + 30)) / dz))
    elif fit:
        dz = max(dz, (hi - lo + 10) / Z)
    if look["slab_cut"]:
        frac, top = look["slab_cut"]
        z0 = hi - frac * (hi - lo) - Z * dz if top else lo + frac * (hi - lo)
    else:
        z0 = rng.uniform(*sorted((hi + 5 - Z * dz, lo - 5)))
    return z0 + (np.arange(Z) + 0.5) * dz, dz


def _ct_randomised(seed, p, contrast, shape, spacing, std):
    """:func:`generate_ct` of the randomised kind; ``std``: the standard (field of view, centre,
    slice spacing, slice centres) of the seed, kept where the look keeps the standard geometry."""
    fov, centre, dz, z_planes = std
    Z, H, W = shape
    look, v, rng = _randomised(seed, p, contrast, fov, centre, dz)
    if not look["neutral"]:
        dz = max(look["thickness"], 1.0)
        if spacing is not None:
            dz, look["fov"] = float(spacing[0]), float(spacing[2]) * max(H, W)
        z_planes, dz = _random_slab(rng, p, look, Z, dz, spacing is None)
    look["thickness"] = dz
    vol, mask = _scan_randomised(p, v, look, rng, z_planes, (H, W), dz)
    dxy, (cy, cx) = look["fov"] / max(H, W), look["centre"]
    origin = (float(z_planes[0]), float(cy - (H - 1) / 2 * dxy), float(cx - (W - 1) / 2 * dxy))
    return vol, mask, dict(spacing=(dz, dxy, dxy), origin=origin, fov_mm=(H * dxy, W * dxy),
                           heart_ml=float(mask.sum()) * dz * dxy * dxy / 1000, **_random_info(look, v))


# --- the heart-ct task's use of this generator (Training.tasks: training, synth, score) ---

def training_frames(seeds, size, kind="standard"):
    """One axial slice of ``kind`` per seed (``generate_ct_slice``): HU float32 (B, H, W), masks uint8."""
    _check_kind(kind)
    slices, masks = zip(*(generate_ct_slice(int(s), size=size, kind=kind)[:2] for s in seeds))
    return np.stack(slices), np.stack(masks)


def sample_run(seed, n_frames, size, kind="standard"):
    """What ``cardioseg synth`` writes: a whole CT of ``kind``, HU int16 (Z, Y, X) in LPS axis order,
    its heart mask and info with ``spacing`` (z, y, x) mm; ``n_frames`` is unused (drawn per CT)."""
    vol, mask, info = generate_ct(seed, shape=(None, *size), kind=kind)
    return vol.astype(np.int16), mask, info


def score_cases(p, seed, runs, frames, size, kind="standard"):
    """Whole generated chest CTs of ``kind`` (slice count and spacing drawn per volume); ``frames`` unused."""
    _check_kind(kind)
    for r in range(runs):
        vol, mask, info = generate_ct(seed + r, shape=(None, size, size), kind=kind)
        pred = p.predict(vol, direction=np.eye(3))  # the generator's axes are LPS
        yield pred, mask, {"heart_ml": info["heart_ml"], "slices": len(vol),
                           "predicted_ml": float((pred == 1).sum() * np.prod(info["spacing"]) / 1000)}
