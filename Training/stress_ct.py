"""The heart-ct task's stress suite: chest CT volumes made unlike the training generator, never trained on.

Written apart from ``Training.ct`` (no shape, value or scanner code of it is used): its own body,
heart and vessel construction (ellipsoid chambers with shells, a smoothed union, distances by a
Euclidean distance transform), its own scanner (Gaussian slice profile and point spread, CT-like
band-pass noise with lateral anisotropy, optional sharp kernel, a projection-domain model of metal
streaks, padding outside the reconstruction circle) and its own patients, several well outside the
generator's ranges. A model that learnt the generator's look rather than the heart scores low here.

Volumes are float32 (Z, Y, X) in HU, in the generator's axis order (Z inferior -> superior, Y
anterior -> posterior, X patient right -> left: LPS, identity direction), 24-40 slices of
``size`` x ``size`` pixels; slice spacing 2.5-7 mm (the slab spans the heart, slices = thickness
or overlapping), pixels ``fov / size``. Every volume holds air (-1000 HU) or lung unless said.

The label is the generator's "Heart" (TotalSegmentator's whole heart): voxel centres inside the
epicardial surface, i.e. chambers, myocardium, septa and what lies in them (papillary muscles,
pacemaker leads); epicardial fat, pericardium, pericardial fluid and the great vessels outside the
epicardial surface (beyond the valve planes) are not heart.

Kinds (values are the HU painted before blur and noise):

    non-contrast    blood 20-50 (anaemic blood darker than the myocardium), myocardium 38-58: the heart a
                    soft-tissue blob against fat and lung
    arterial        left heart, pulmonary veins and aorta 250-450; right heart 10-100 % of that (at
                    least 45: a saline chaser leaves it almost unenhanced) with swirling mixing in the
                    right atrium; superior vena cava 500-1400 (undiluted inflow); myocardium 90-150
    venous          all chambers and vessels 120-200 (left and right within 25 of each other),
                    myocardium 80-125, liver 100-140
    cropped         a cardiac zoom (field of view 150-230 mm about the heart, the body beyond it) with
                    the heart cut by the field's edge in half the cases (10-40 % of its width), and in
                    half the volumes a slab that misses 15-40 % of the heart's height; any phase
    child           chest half-width 55-115 mm (newborn to school age), rounder, subcutaneous fat 1-8 mm,
                    a heart 1.15-1.4 times the adult size for that chest (less where the chest is too
                    shallow), no epicardial fat, a large thymus (45-85 HU, 65-105 with contrast) in front
                    of the great vessels, field of view 170-300 mm, noise SD 15-55 (low dose); any phase
    congenital      adult or child chest with one or two of: dextrocardia (the heart and vessels
                    mirrored; half also situs inversus, abdomen mirrored), a single ventricle (one
                    ventricle 1.1-1.3 times the LV size, mixed blood), an apex pointing anterior or
                    far left (azimuth 0-20 or 75-95 degrees, elevation 0-50), a dilated right atrium or
                    a dilated, thick-walled right ventricle; any phase, mostly contrast
    metal           a pacemaker (titanium can in the left or right chest wall, one or two leads down
                    the superior vena cava into the right atrium and the right ventricular apex),
                    a prosthetic valve ring (mitral or aortic, 10-14 mm radius) and/or 4-7 sternal wires,
                    painted at 3071 with streaks from a projection model: beam hardening (dark bands
                    between metal parts) and photon starvation (bright and dark lines): the 99th
                    percentile of |streak| over a slice 40-450 HU, thousands next to the metal; thin
                    metal blooms to 3071 over its blurred extent; any phase
    effusion        pericardial fluid 8-22 HU, 5-25 mm thick on average (0.3-1.25 times that around the
                    heart: thicker behind and below, the patient is supine) between the epicardial fat
                    and a 1.5-3 mm pericardium (25-45 HU, 55-75 with contrast); not labelled (outside
                    the epicardial surface); any phase
    8bit-windowed   a volume of any phase windowed (width 350-800, level 20-80, with the window's lower
                    end at or below -120) to 0..255, rounded, and mapped linearly back to HU: at most 256
                    distinct values, everything outside the window clipped to its ends (air becomes the
                    lower end, -120 to -380 HU)

Adults (every kind but child, and half the congenital): chest half-width 125-165 mm inside 5-60 mm of
subcutaneous fat (obese beyond the generator's 28 mm; the body may reach the field's edge), 12-20 mm
chest wall, field of view 320-500 mm, noise SD 12-40 HU (x1.5 when the fat is over 35 mm), epicardial
fat 0.5-5 mm plus 2-10 mm in the AV groove. Noise is band-pass (CT-like), up to 1.6 times more
correlated left-right; a slice profile of 1-1.6 slice spacings; point spread 0.35-0.8 mm; a sharp
kernel's overshoot in 25 %.

Confusers in every kind where the anatomy has them: the liver dome and stomach beside the heart's
underside, pleural effusions (15 % of adults, 5-25 HU, behind the lungs), breasts, coronary
arteries and calcium, the descending aorta, oesophagus, a thymus (children), a table and padding of
-1024, -2048 or -3024 outside the reconstruction circle (60 % of all but cropped). Phases where a kind
says "any": 30 % non-contrast, 40 % arterial, 30 % venous (congenital 10/60/30). Everything comes
from one seed and the kind; seeds are the held-out ones (``Training.seeds.HELD_OUT_SEED_BASE``).
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from scipy import ndimage

KINDS = ("non-contrast", "arterial", "venous", "cropped", "child", "congenital", "metal", "effusion",
         "8bit-windowed")

MU_WATER = 0.0193  # linear attenuation of water (1/mm) at about 70 keV


# --- a grid of voxel centres in patient millimetres -------------------------------------------------------

class _Grid:
    """Voxel centres: 1D ``z`` (inferior -> superior), ``y`` (anterior -> posterior), ``x`` (right -> left),
    in mm; ``mirror`` flips x for the heart and vessels (dextrocardia)."""

    def __init__(self, z, y, x):
        self.z, self.y, self.x = (np.asarray(a, np.float32) for a in (z, y, x))
        self.shape = (len(z), len(y), len(x))
        self.Z, self.Y, self.X = self.z[:, None, None], self.y[None, :, None], self.x[None, None, :]
        self.dz = float(abs(z[1] - z[0])) if len(z) > 1 else 1.0
        self.dxy = float(abs(x[1] - x[0]))

    def box(self, lo, hi):
        """Slices of the voxels within [lo, hi] (x, y, z) mm, and their broadcast coordinates (x, y, z);
        (None, None) when empty."""
        out = []
        for a, l_, h_ in ((self.z, lo[2], hi[2]), (self.y, lo[1], hi[1]), (self.x, lo[0], hi[0])):
            i0, i1 = np.searchsorted(a, l_), np.searchsorted(a, h_, "right")
            if i1 <= i0:
                return None, None
            out.append(slice(int(i0), int(i1)))
        sl = tuple(out)
        return sl, (self.x[sl[2]][None, None, :], self.y[sl[1]][None, :, None], self.z[sl[0]][:, None, None])


def _put(hu, sl, alpha, value):
    """Paint ``value`` with opacity ``alpha`` (bool or 0..1) into ``hu[sl]``."""
    if sl is None:
        return
    a = alpha.astype(np.float32) if alpha.dtype == bool else alpha
    hu[sl] += a * (np.float32(value) - hu[sl]) if np.ndim(value) == 0 else a * (value - hu[sl])


def _soft(d, w):
    """Opacity from a distance ``d`` (mm, negative inside) with an edge ``w`` mm wide."""
    return np.clip(0.5 - d / w, 0, 1).astype(np.float32)


def _superellipse(x, y, a, b_front, b_back, n):
    """Value < 1 inside a chest-like superellipse of half-width ``a``, half-depth ``b_front`` in front
    (y < 0) and ``b_back`` behind."""
    b = np.where(y < 0, b_front, b_back)
    return (np.abs(x) / a) ** n + (np.abs(y) / b) ** n


def _seg_dist(px, py, pz, a, b):
    """Distance (mm) from points to the segment a-b ((x, y, z) each)."""
    ab = np.subtract(b, a)
    L2 = max(float(ab @ ab), 1e-6)
    t = np.clip(((px - a[0]) * ab[0] + (py - a[1]) * ab[1] + (pz - a[2]) * ab[2]) / L2, 0, 1)
    return np.sqrt((px - a[0] - t * ab[0]) ** 2 + (py - a[1] - t * ab[1]) ** 2 + (pz - a[2] - t * ab[2]) ** 2)


def _tube(hu, g, pts, r, value, mirror=1.0, keep=None, sheath=0.0, sheath_value=-100.0):
    """A tube of radius ``r`` mm along polyline ``pts`` ((n, 3) x, y, z mm); first a ``sheath`` mm fat
    layer (not where ``keep``). Returns nothing; paints soft edges."""
    pts = np.asarray(pts, np.float32)
    for a, b in zip(pts[:-1], pts[1:]):
        rr = r + sheath
        lo, hi = np.minimum(a, b) - rr - 3, np.maximum(a, b) + rr + 3
        if mirror < 0:
            lo[0], hi[0] = -hi[0], -lo[0]
        sl, c = g.box(lo, hi)
        if sl is None:
            continue
        d = _seg_dist(mirror * c[0], c[1], c[2], a, b)
        if sheath:
            alpha = _soft(d - rr, g.dxy)
            if keep is not None:
                alpha = alpha * ~keep[sl]
            _put(hu, sl, alpha, sheath_value)
        _put(hu, sl, _soft(d - r, g.dxy), value)


def _smooth_field(rng, shape, coarse):
    """A smooth random field of unit SD over ``shape``, correlated over about ``coarse`` voxels in plane."""
    small = [max(2, int(np.ceil(s / c))) + 2 for s, c in zip(shape, (max(coarse / 3, 1), coarse, coarse))]
    f = ndimage.gaussian_filter(rng.standard_normal(small).astype(np.float32), 1.0)
    f = ndimage.zoom(f, [s / m for s, m in zip(shape, small)], order=1)[: shape[0], : shape[1], : shape[2]]
    f = np.pad(f, [(0, s - m) for s, m in zip(shape, f.shape)], mode="edge")
    return (f - f.mean()) / (f.std() + 1e-6)


# --- the patient ------------------------------------------------------------------------------------------

def _patient(rng, kind):
    u = rng.uniform
    P = SimpleNamespace(kind=kind)
    child = kind == "child" or (kind == "congenital" and rng.random() < 0.5)
    P.child = child
    if child:
        P.A = u(55, 115)  # body half-width (mm, skin)
        P.fat, P.wall = u(1, 8), u(5, 10)
        k_rel = u(1.15, 1.4)
    else:
        P.fat, P.wall = u(5, 60), u(12, 20)  # up to obese (the generator's fat: 4-28 mm)
        P.A = u(125, 165) + P.fat
        k_rel = u(0.9, 1.12)
    rounder = 0.12 if child else 0.0  # children's chests are rounder
    P.Bf, P.Bb = P.A * (u(0.62, 0.8) + rounder), P.A * (u(0.66, 0.85) + rounder)  # half-depth in front and behind
    P.n = u(2.0, 2.8)  # superellipse exponent: squarer chests
    inner = P.A - P.fat - P.wall  # thoracic cavity half-width
    P.k = float(inner / 125 * k_rel * 1.18)  # heart scale (1: an adult heart in a 125 mm cavity half-width)
    P.rv = (9 if child else 17) * u(0.85, 1.15) * (P.A / (85 if child else 165)) ** 0.5  # vertebral body radius
    P.ys = P.Bb - P.fat - P.wall - P.rv * 1.2  # vertebral body centre y (posterior)
    P.ystern = -P.Bf + P.fat + P.wall * 0.6  # sternum centre y
    P.breasts = (not child) and rng.random() < 0.35
    P.mirror, P.situs_inversus = 1.0, False
    P.variants = []
    P.thymus = child
    P.pleural = (not child) and rng.random() < 0.15
    # heart orientation: azimuth from anterior towards the left, elevation downwards (degrees)
    az, el = u(35, 65), u(15, 38)
    P.single, P.big_ra, P.big_rv = False, 1.0, (1.0, 0.0)
    if kind == "congenital":
        options = ["dextrocardia", "single-ventricle", "rotated", "dilated-right"]
        P.variants = list(rng.choice(options, size=int(rng.integers(1, 3)), replace=False))
        if "dextrocardia" in P.variants:
            P.mirror = -1.0
            P.situs_inversus = rng.random() < 0.5
        if "single-ventricle" in P.variants:
            P.single = True
        if "rotated" in P.variants:
            az = u(0, 20) if rng.random() < 0.5 else u(75, 95)
            el = u(0, 50)
        if "dilated-right" in P.variants:
            if rng.random() < 0.5:
                P.big_ra = u(1.3, 1.7)
            else:
                P.big_rv = (u(1.25, 1.5), u(3, 5))  # RV scale, extra wall (mm)
    P.az, P.el = np.radians(az), np.radians(el)
    P.roll = u(-0.3, 0.3)
    P.twall = u(7, 12) * (0.7 if child else 1.0)
    P.epifat = (0.0, 0.0) if child else (u(0.5, 5), u(2, 10))  # everywhere, extra in the AV groove
    P.calcium = (not child) and rng.random() < 0.3
    P.effusion = u(5, 25) if kind == "effusion" else 0.0
    P.pericardium = u(1.5, 3)
    P.noise_field_seed = int(rng.integers(2**31))
    return P


def _frame(P):
    """Heart axes (columns u: base -> apex, v: towards the RV, w) in patient (x, y, z), unmirrored."""
    u = np.array([np.cos(P.el) * np.sin(P.az), -np.cos(P.el) * np.cos(P.az), -np.sin(P.el)])
    v0 = np.array([-0.5, -1.0, 0.35])
    v = v0 - (v0 @ u) * u
    v /= np.linalg.norm(v)
    v = v * np.cos(P.roll) + np.cross(u, v) * np.sin(P.roll)
    w = np.cross(u, v)
    if w[1] < 0:
        w = -w
    return np.stack([u, v, w], 1)


def _chambers(P):
    """Chamber cavities in heart-local unit mm: name -> (centre (u, v, w), radii, wall mm, side)."""
    tw = P.twall
    ch = {}
    if P.single:
        ch["V"] = ((10, 6, 0), np.array([52, 30, 30]) * np.random.default_rng(P.noise_field_seed).uniform(1.1, 1.3),
                   tw * 0.85, "mix")
    else:
        ch["LV"] = ((12, -6, 0), np.array([44, 22, 22]), tw, "L")
        s, extra = P.big_rv
        ch["RV"] = ((2, 20, -3), np.array([38, 15, 30]) * s, 3.5 + extra, "R")
    ch["LA"] = ((-42, -14, 13), np.array([22, 26, 20]), 2.5, "L")
    ch["RA"] = ((-34, 23, 4), np.array([26, 22, 24]) * P.big_ra, 2.5, "R")
    return ch


def _local(P, R, c, X, Y, Z):
    """Heart-local unit coordinates (u, v, w) of patient points (X mirrored already)."""
    dx, dy, dz = X - c[0], Y - c[1], Z - c[2]
    return [(R[0, i] * dx + R[1, i] * dy + R[2, i] * dz) / P.k for i in range(3)]


def _ell(loc, centre, radii):
    return sum(((loc[i] - centre[i]) / radii[i]) ** 2 for i in range(3))


def _place_heart(P):
    """Heart centre (x, y, z) in (mirrored) patient mm, its half-extent and the frame."""
    R = _frame(P)
    ch = _chambers(P)
    th, ph = np.meshgrid(np.linspace(0, np.pi, 13), np.linspace(0, 2 * np.pi, 25))
    sphere = np.stack([np.cos(th), np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph)], -1).reshape(-1, 3)
    pts = np.concatenate([P.k * (np.array(c) + sphere * (r + t / P.k)) for c, r, t, _ in ch.values()])
    pts = pts @ R.T  # patient offsets (x, y, z) of the chambers' outer surfaces
    lo, hi = pts.min(0), pts.max(0)
    depth_free = (P.ys - P.rv - 4) - (P.ystern + 8)
    if hi[1] - lo[1] > depth_free:  # too deep for the chest: shrink
        f = depth_free / (hi[1] - lo[1])
        P.k *= f
        lo, hi = lo * f, hi * f
    y = P.ys - P.rv - 4 - hi[1]
    x = P.A * 0.05 + 0.2 * (hi[0] - lo[0]) * 0.5
    return np.array([x, y, 0.0]), lo, hi, R


# --- the volume -------------------------------------------------------------------------------------------

def _values(rng, phase, child):
    u = rng.uniform
    v = SimpleNamespace(fat=u(-120, -75), muscle=u(35, 60), lung=u(-900, -820), liver=u(48, 65),
                        bone=u(180, 320), cortex=u(550, 950), cartilage=u(70, 160), fluid=u(8, 22))
    if child:
        v.fat = u(-100, -60)
    if phase == "non-contrast":
        v.bl = u(20, 50)  # down to anaemic blood, darker than the myocardium
        v.br, v.svc, v.myo = v.bl + u(-5, 5), v.bl, max(v.bl + u(3, 10), u(38, 58))
    elif phase == "arterial":
        v.bl = u(250, 450)
        v.br = max(45.0, v.bl * u(0.1, 1.0))
        v.svc, v.myo, v.liver = u(500, 1400), u(90, 150), v.liver + u(5, 25)
    else:  # venous
        v.bl = u(120, 200)
        v.br = float(np.clip(v.bl + u(-25, 25), 120, 200))
        v.svc, v.myo, v.liver = v.br, u(80, 125), u(100, 140)
    v.thymus = u(45, 85) + (20 if phase != "non-contrast" else 0)
    v.pericardium = u(25, 45) + (30 if phase != "non-contrast" else 0)
    v.phase = phase
    return v


def _scan_plan(rng, P, kind, lo, hi, c, size):
    """Slices (z centres) and the in-plane grid (y, x) of the volume."""
    u = rng.uniform
    zlo, zhi = c[2] + lo[2], c[2] + hi[2]
    height = zhi - zlo
    n = int(rng.integers(24, 41))
    cut = None
    if kind == "cropped" and rng.random() < 0.5:  # the slab misses part of the heart
        frac = u(0.15, 0.4)
        cut = "top" if rng.random() < 0.5 else "bottom"
        a, b = (zlo, zhi - frac * height) if cut == "top" else (zlo + frac * height, zhi)
        a, b = (a - u(5, 30), b) if cut == "top" else (a, b + u(5, 30))
    else:
        a, b = zlo - u(8, 40), zhi + u(8, 40)
    dz = float(np.clip((b - a) / n, 2.5, 7.0))
    n = int(np.clip(np.ceil((b - a) / dz), 24, 40))
    z = a + (b - a - (n - 1) * dz) / 2 + dz * np.arange(n)
    hx = c[0] * P.mirror
    if kind == "cropped":
        fov = u(150, 230)
        if rng.random() < 0.5:  # the field's edge cuts the heart
            half_w = 0.5 * (hi[0] - lo[0])
            off = fov / 2 - half_w + u(0.1, 0.4) * 2 * half_w  # heart centre this far from the field centre
            ang = rng.uniform(0, 2 * np.pi)
            centre = (c[1] - off * np.sin(ang) * 0.6, hx - off * np.cos(ang))
        else:
            centre = (c[1] + rng.normal(0, 8), hx + rng.normal(0, 8))
    elif P.child:
        fov = u(max(170, 2 * P.A + 10), max(190, 2 * P.A + 60, 300 if P.A > 110 else 0))
        centre = (rng.normal(5, 5), rng.normal(0, 5))
    else:
        fov = u(max(320, min(2 * P.A + 15, 460)), 500)  # obese bodies may touch the field's edge
        centre = (rng.normal(10, 8), rng.normal(0, 8))
    dxy = fov / size
    y = centre[0] + (np.arange(size) - (size - 1) / 2) * dxy
    x = centre[1] + (np.arange(size) - (size - 1) / 2) * dxy
    return _Grid(z, y, x), fov, cut


def _paint_body(hu, g, P, v, rng):
    X, Y, Z = g.X, g.Y, g.Z
    se = _superellipse(X, Y, P.A, P.Bf, P.Bb, P.n)
    body = (se < 1) & (Y < P.Bb * 0.93)
    # table under the back: foam and two carbon shells, curved
    yt = P.Bb * 0.93 + 6 + 0.0004 * X ** 2
    dt = np.abs(Y - yt - 12)
    table = (np.abs(X) < 240) & (dt < 12) & np.ones_like(Z, bool)
    _put(hu, np.s_[:], table, -700.0)
    _put(hu, np.s_[:], table & (np.abs(dt - 11) < 1.2), 200.0)
    _put(hu, np.s_[:], np.broadcast_to(body, hu.shape), v.fat)
    if P.breasts:
        bz, br = rng.uniform(-40, 20), rng.uniform(35, 70)
        for sx in (-1, 1):
            d = ((X - sx * 0.45 * P.A) / br) ** 2 + ((Y + P.Bf * 0.9) / (br * 0.55)) ** 2 + ((Z - bz) / (br * 1.1)) ** 2
            _put(hu, np.s_[:], (d < 1) & (Y < 0), v.fat + 60 * np.clip(1.3 - d, 0, 1))
    inner_a, inner_bf, inner_bb = P.A - P.fat, P.Bf - P.fat, P.Bb - P.fat
    muscle = _superellipse(X, Y, inner_a, inner_bf, inner_bb, P.n) < 1
    _put(hu, np.s_[:], np.broadcast_to(muscle & (Y < P.Bb * 0.93 - P.fat), hu.shape), v.muscle)
    return body


def _cavity(g, P):
    a, bf, bb = P.A - P.fat - P.wall, P.Bf - P.fat - P.wall, P.Bb - P.fat - P.wall
    return _superellipse(g.X, g.Y, a, bf, bb, P.n) < 1, (a, bf, bb)


def _diaphragm(g, P, c, lo, rng):
    """Height (mm) of the diaphragm under each (y, x); the heart rests on its centre."""
    u = rng.uniform
    bottom = c[2] + lo[2]
    sx = -1 if P.situs_inversus else 1
    R = u(90, 140) * (0.6 if P.child else 1.0)
    right = bottom + u(0, 35) * P.k - ((g.X + sx * 0.4 * P.A) ** 2 + 0.5 * (g.Y - 0.1 * P.Bb) ** 2) / (2 * R)
    left = bottom + u(-15, 15) * P.k - ((g.X - sx * 0.45 * P.A) ** 2 + 0.5 * (g.Y - 0.1 * P.Bb) ** 2) / (2 * R)
    centre = bottom - 4 - ((g.X - c[0] * P.mirror) ** 2 + (g.Y - c[1]) ** 2) / (2 * 200)
    return np.maximum(np.maximum(right, left), centre)


def _paint_abdomen(hu, g, P, v, below, rng):
    u = rng.uniform
    X, Y, Z = g.X, g.Y, g.Z
    sx = -1.0 if P.situs_inversus else 1.0
    Xa = sx * X  # abdomen coordinates: liver on the patient's right (x < 0) unless situs inversus
    _put(hu, np.s_[:], below, v.fat + 25)  # fat with bowel and vessels, on average
    reach = u(-0.1, 0.25) * P.A
    edge = reach - 0.35 * P.A + 0.5 * P.A * np.clip((P.ys - Y) / (P.ys + P.Bf), 0, 1) ** 1.5
    liver = below & (Xa < edge)
    _put(hu, np.s_[:], liver, v.liver)
    st_c = (0.35 * P.A, -0.05 * P.Bf)
    # stomach below the left dome: an ellipsoid with gas in front of a level, fluid behind
    sr = np.array([u(30, 50), u(25, 40), u(30, 45)]) * (0.55 if P.child else 1.0)
    sz = u(-60, -30) * P.k - 10
    d = ((Xa - st_c[0]) / sr[0]) ** 2 + ((Y - st_c[1]) / sr[1]) ** 2 + ((Z - sz) / sr[2]) ** 2
    stomach = below & (d < 1)
    _put(hu, np.s_[:], stomach, v.muscle + 15)
    lumen = below & (d < 0.75)
    level = st_c[1] + u(-0.6, 0.6) * sr[1]
    _put(hu, np.s_[:], lumen, np.where(Y < level, -1000.0, v.fluid + 5).astype(np.float32))
    # spleen: posterior left
    d = ((Xa - 0.55 * P.A) / (0.18 * P.A)) ** 2 + ((Y - 0.45 * P.Bb) / (0.3 * P.Bb)) ** 2 + ((Z - sz + 10) / 50) ** 2
    _put(hu, np.s_[:], below & (d < 1), v.liver - 8)


def _paint_lungs(hu, g, P, v, lungs, rng):
    """Lung parenchyma denser at the back, vessels as blurred points denser towards the hila."""
    X, Y, Z = g.X, g.Y, g.Z
    dep = np.clip((Y + P.Bf) / (P.Bf + P.Bb), 0, 1) ** 2
    base = v.lung + rng.uniform(20, 90) * dep
    _put(hu, np.s_[:], lungs, base.astype(np.float32) + np.zeros_like(hu))
    n = int(g.shape[0] * g.shape[1] * g.shape[2] * g.dxy ** 2 * g.dz / 6000)
    idx = rng.integers(0, hu.size, n)
    pts = np.zeros(hu.size, np.float32)
    pts[idx] = 1
    pts = pts.reshape(hu.shape)
    hil = np.exp(-((np.abs(X) - 45 * P.k) ** 2 + (Y - 10) ** 2) / (2 * (60 * P.k) ** 2))
    sig = (max(3.0 / g.dz, 0.4), 1.6 / g.dxy, 1.6 / g.dxy)
    f = ndimage.gaussian_filter(pts * (0.3 + hil), sig)
    f /= np.percentile(f[f > 0], 99.5) + 1e-9 if (f > 0).any() else 1
    ves = np.clip(f, 0, 1) * lungs
    _put(hu, np.s_[:], ves, 0.5 * (v.bl + v.br))


def _paint_spine_ribs(hu, g, P, v, cav_axes, rng):
    X, Y, Z = g.X, g.Y, g.Z
    u = rng.uniform
    rv = P.rv
    pitch = rv * 1.6
    phase = u(0, pitch)
    disc = np.abs((Z - phase) % pitch - pitch / 2) < max(rv * 0.18, 2)
    vb = ((X / (rv * 1.1)) ** 2 + ((Y - P.ys) / rv) ** 2)
    _put(hu, np.s_[:], np.broadcast_to(vb < 1, hu.shape), v.cortex)
    _put(hu, np.s_[:], np.broadcast_to(vb < 0.8, hu.shape), v.bone)
    _put(hu, np.s_[:], (vb < 1) & disc, 85.0)
    yc = P.ys + rv * 1.55
    canal = (X ** 2 + (Y - yc) ** 2) < (rv * 0.55) ** 2
    arch = ((X ** 2 + (Y - yc) ** 2) < (rv * 0.85) ** 2) | ((np.abs(X) < rv * 0.25) & (Y > yc) & (Y < yc + rv * 1.6))
    arch = arch | ((np.abs(np.abs(X) - rv * 0.9) < rv * 0.25) & (np.abs(Y - yc - rv * 0.1) < rv * 0.3))
    _put(hu, np.s_[:], np.broadcast_to(arch & ~canal, hu.shape) & ~disc, v.cortex * 0.8)
    _put(hu, np.s_[:], np.broadcast_to(canal, hu.shape), 25.0)
    # paraspinal muscles
    for s in (-1, 1):
        m = ((X - s * rv * 2.0) / (rv * 1.5)) ** 2 + ((Y - yc - rv * 0.3) / (rv * 1.3)) ** 2 < 1
        _put(hu, np.s_[:], np.broadcast_to(m, hu.shape), v.muscle)
    # ribs: each descends from the spine to the front; cortex and marrow
    a, bf, bb = cav_axes
    band_out = _superellipse(X, Y, a + P.wall * 0.75, bf + P.wall * 0.75, bb + P.wall * 0.75, P.n) < 1
    band_in = _superellipse(X, Y, a + P.wall * 0.1, bf + P.wall * 0.1, bb + P.wall * 0.1, P.n) < 1
    band_core = (_superellipse(X, Y, a + P.wall * 0.6, bf + P.wall * 0.6, bb + P.wall * 0.6, P.n) < 1) & \
        ~(_superellipse(X, Y, a + P.wall * 0.25, bf + P.wall * 0.25, bb + P.wall * 0.25, P.n) < 1)
    phi = np.arctan2(np.abs(X), Y) / np.pi  # 0 at the back, 1 in front
    band = band_out & ~band_in & (np.abs(X) > rv * 1.4)
    gap, drop, hh = pitch * u(0.95, 1.25), u(60, 110) * P.k, max(4.5 * P.k, 2.5)
    z0 = float(g.z.min()) - drop - gap + u(0, gap)
    for zk in np.arange(z0, float(g.z.max()) + 2 * gap, gap):
        zc = zk - drop * phi ** 1.3 + 0.0
        dzr = np.abs(Z - zc)
        rib = band & (dzr < hh) & (phi < 0.93)
        cart = phi > 0.72
        _put(hu, np.s_[:], rib, np.where(cart, v.cartilage, v.cortex).astype(np.float32))
        _put(hu, np.s_[:], rib & band_core & (dzr < hh - 1.5) & ~cart, v.bone)
    # sternum
    st = ((X / (16 * P.k ** 0.5 + 4)) ** 2 + ((Y - P.ystern) / 7) ** 2) < 1
    stz = Z < 90
    _put(hu, np.s_[:], st & stz, v.cortex)
    _put(hu, np.s_[:], st & stz & (((X / (16 * P.k ** 0.5 + 2)) ** 2 + ((Y - P.ystern) / 5) ** 2) < 1), v.bone)


def _vessels(P, c, lo, hi, R, rng):
    """Polylines (x, y, z mm, mirrored frame) and radii of the great vessels."""
    u = rng.uniform
    k = P.k
    L = lambda a, b, w: c + R @ (k * np.array([a, b, w], float))  # noqa: E731
    top = c[2] + hi[2]
    ytr = P.ys - P.rv - 22 * k  # trachea
    ao_r, ao_d = u(12, 16) * k, u(10, 13) * k
    root = L(-24, 2, -4)
    asc = np.array([root[0] - 12 * k, root[1] - 8 * k, top + 20 * k])
    arch_top = np.array([-2 * k, ytr - 5 * k, top + 50 * k])
    desc_top = np.array([P.rv + 10 * k, P.ys - P.rv - 2, top + 30 * k])
    desc_bot = np.array([P.rv + 8 * k, P.ys - P.rv + 2, c[2] + lo[2] - 300])
    aorta = [([root, asc, arch_top, desc_top], ao_r), ([desc_top, desc_bot], ao_d)]
    pa_root = L(-18, 24, -12)
    bif = np.array([asc[0] + 30 * k, asc[1] + 12 * k, top + u(5, 18) * k])
    pa = [([pa_root, bif], u(11, 15) * k),
          ([bif, [asc[0] + 2 * k, ytr + 10 * k, bif[2] - 4], [-50 * k, ytr + 15 * k, bif[2] - 10]], 9 * k),
          ([bif, [50 * k, ytr + 12 * k, bif[2] + 3]], 9 * k)]
    svc = ([L(-48, 26, 4), [asc[0] - 22 * k, asc[1] + 8 * k, top + 20 * k],
            [asc[0] - 24 * k, asc[1] + 10 * k, top + 200]], u(8, 11) * k)
    ivc = ([L(-30, 22, -16), [-18 * k, P.ys - P.rv - 20 * k, c[2] + lo[2] - 300]], u(10, 13) * k)
    la = L(-42, -14, 13)
    pv = [([la, la + np.array([s * 40 * k, 8 * k, dz * k])], 6 * k) for s in (-1, 1) for dz in (-10, 12)]
    return SimpleNamespace(aorta=aorta, pa=pa, svc=svc, ivc=ivc, pv=pv, ytr=ytr, top=top, asc=asc)


def _render(seed, kind, size):
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    u = rng.uniform
    if kind in ("non-contrast", "arterial", "venous"):
        phase = kind
    else:
        phase = rng.choice(["non-contrast", "arterial", "venous"], p=[0.3, 0.4, 0.3] if kind != "congenital"
                           else [0.1, 0.6, 0.3])
    P = _patient(rng, kind)
    v = _values(rng, phase, P.child)
    c, lo, hi, R = _place_heart(P)
    g, fov, cut = _scan_plan(rng, P, kind, lo, hi, c, size)
    hu = np.full(g.shape, -1000.0, np.float32)
    X, Y, Z = g.X, g.Y, g.Z
    Xm = P.mirror * X

    _paint_body(hu, g, P, v, rng)
    cav, cav_axes = _cavity(g, P)
    dia = _diaphragm(g, P, c, lo, rng)
    above = Z > dia
    incav = np.broadcast_to(cav, hu.shape)
    lungs = incav & above
    _paint_lungs(hu, g, P, v, lungs, rng)
    _paint_abdomen(hu, g, P, v, incav & ~above, rng)
    _put(hu, np.s_[:], incav & (np.abs(Z - dia) < 2.5), v.muscle)  # the diaphragm
    if P.pleural:  # dependent pleural effusion(s)
        depth = u(10, 45)
        for s in ([-1, 1] if rng.random() < 0.5 else [rng.choice([-1, 1])]):
            eff = lungs & (Y > P.Bb - P.fat - P.wall - depth) & (s * X > P.rv * 1.5)
            _put(hu, np.s_[:], eff, u(5, 25))
    _paint_spine_ribs(hu, g, P, v, cav_axes, rng)

    # heart geometry, in a box about it
    margin = 40 + P.effusion
    hsl, hc = g.box(np.minimum(c + lo, c + hi) - margin if P.mirror > 0 else
                    np.array([-(c[0] + hi[0]) - margin, c[1] + lo[1] - margin, c[2] + lo[2] - margin]),
                    np.maximum(c + lo, c + hi) + margin if P.mirror > 0 else
                    np.array([-(c[0] + lo[0]) + margin, c[1] + hi[1] + margin, c[2] + hi[2] + margin]))
    heart = np.zeros(g.shape, bool)
    ch = _chambers(P)
    if hsl is not None:
        loc = _local(P, R, c, P.mirror * hc[0], hc[1], hc[2])
        outers = {n: _ell(loc, cc, r + t / P.k) < 1 for n, (cc, r, t, _) in ch.items()}
        union = np.logical_or.reduce(list(outers.values()))
        sig = [3.0 / g.dz, 3.0 / g.dxy, 3.0 / g.dxy]
        heart[hsl] = ndimage.gaussian_filter(union.astype(np.float32), sig) > 0.5
    # distances outside the heart (mm) for fat, fluid and pericardium
    H = heart[hsl] if hsl is not None else None
    dist = ndimage.distance_transform_edt(~H, sampling=(g.dz, g.dxy, g.dxy)).astype(np.float32) if H is not None \
        and H.any() else None
    # mediastinum: fat between the lungs, wider around the heart
    med_w = (30 if not P.child else 18) * max(P.k, 0.5)
    ym, hd = 0.5 * (P.ystern + P.ys), 0.5 * (P.ys - P.ystern)
    med = lungs & (np.abs((Xm - 8 * P.k) / med_w) ** 2.5 + np.abs((Y - ym) / hd) ** 2.5 < 1) & (Z > c[2] + lo[2] * 0.3)
    _put(hu, np.s_[:], med, v.fat)
    if dist is not None:
        sub_lungs = lungs[hsl]
        _put(hu, hsl, (dist < u(3, 10) + P.effusion + P.pericardium) & sub_lungs & (dist > 0), v.fat)
    # thymus: in front of the great vessels and the heart's upper part
    if P.thymus:
        top = c[2] + hi[2]
        tc = (8 * P.k, P.ystern + 25 * P.k, top + 5)
        d = ((Xm - tc[0]) / (35 * P.k)) ** 2 + ((Y - tc[1]) / (16 * P.k)) ** 2 + ((Z - tc[2]) / (45 * P.k)) ** 2
        _put(hu, np.s_[:], (d < 1) & incav, v.thymus)
    # airway and oesophagus
    vs = _vessels(P, c, lo, hi, R, rng)
    carina = vs.top + u(5, 20) * P.k
    _tube(hu, g, [[0, vs.ytr, carina], [0, vs.ytr, carina + 300]], 8 * P.k + 1, -1000.0, P.mirror, sheath=1.5,
          sheath_value=v.muscle)
    for s in (-1, 1):
        _tube(hu, g, [[0, vs.ytr, carina], [s * 40 * P.k, vs.ytr + 8 * P.k, carina - 30 * P.k]], 5.5 * P.k + 0.5,
              -1000.0, 1.0, sheath=1.2, sheath_value=v.muscle)
    oes = [[6 * P.k, P.ys - P.rv - 8 * P.k, c[2] + lo[2] - 40], [4 * P.k, P.ys - P.rv - 8 * P.k, carina + 300]]
    _tube(hu, g, oes, 7 * P.k, v.muscle, P.mirror)
    if rng.random() < 0.6:
        _tube(hu, g, oes, 2 * P.k, -1000.0, P.mirror)

    # great vessels, with fat sheaths that stay out of the heart
    for pts, r in vs.aorta:
        _tube(hu, g, pts, r, v.bl, P.mirror, heart, 2.5, v.fat)
    for pts, r in vs.pa:
        _tube(hu, g, pts, r, v.br, P.mirror, heart, 2.0, v.fat)
    _tube(hu, g, vs.svc[0], vs.svc[1], v.svc, P.mirror, heart, 1.5, v.fat)
    _tube(hu, g, vs.ivc[0], vs.ivc[1], v.br, P.mirror)
    for pts, r in vs.pv:
        _tube(hu, g, pts, r, v.bl, P.mirror)

    # the heart: epicardial fat, (effusion,) pericardium, myocardium, blood pools
    if hsl is not None and dist is not None:
        sub = hu[hsl]
        fat_t = P.epifat[0] + P.epifat[1] * np.exp(-((loc[0] + 18) / 8) ** 2)
        pt, ef = P.pericardium, P.effusion
        if ef:
            # thicker behind and below (supine), thinner in front
            ef_t = ef * (0.55 + 0.45 * np.clip((hc[1] - c[1]) / 50, -1, 1) - 0.25 * np.clip((hc[2] - c[2]) / 60, -1, 1))
        else:
            ef_t = 0.0
        sac = dist < fat_t + ef_t + pt
        _put(sub, np.s_[:], sac & (dist > 0), v.pericardium)
        _put(sub, np.s_[:], (dist < fat_t + ef_t) & (dist > 0), v.fluid if ef else v.fat)
        _put(sub, np.s_[:], (dist < fat_t) & (dist > 0), v.fat)
        # coronary arteries in the AV groove (and calcium)
        groove = (np.abs(loc[0] + 18) < 3.5 / P.k + 1) & (dist > 0.3) & (dist < 0.3 + 3.5 * P.k + 1)
        _put(sub, np.s_[:], groove & (P.epifat[1] > 3), v.bl)
        if P.calcium:
            spots = groove & (_smooth_field(rng, sub.shape, 3) > 1.8)
            _put(sub, np.s_[:], spots, u(400, 1000))
        Hs = heart[hsl]
        _put(sub, np.s_[:], Hs, v.myo)
        swirl = _smooth_field(rng, sub.shape, 4.0 / g.dxy * 3)
        right_blood = v.br + (np.clip(swirl, -2, 2) * 0.25 * (v.bl - v.br) if phase == "arterial" else 0)
        mix = 0.5 * (v.bl + v.br)
        cav = {n: _ell(loc, cc, r) < 1 for n, (cc, r, _, _) in ch.items()}
        if P.single:
            _put(sub, np.s_[:], cav["RA"] & Hs, right_blood)
            _put(sub, np.s_[:], outers["LA"] & Hs, v.myo)
            _put(sub, np.s_[:], outers["V"] & Hs, v.myo)
            _put(sub, np.s_[:], cav["V"] & Hs, mix)
            _put(sub, np.s_[:], cav["LA"] & ~outers["V"] & Hs, v.bl)
        else:
            _put(sub, np.s_[:], (cav["RA"] | cav["RV"]) & Hs, right_blood)
            _put(sub, np.s_[:], outers["LV"] & Hs, v.myo)
            _put(sub, np.s_[:], outers["LA"] & ~cav["RV"] & Hs, v.myo)
            _put(sub, np.s_[:], cav["LV"] & Hs, v.bl)
            _put(sub, np.s_[:], cav["LA"] & ~outers["LV"] & Hs, v.bl)
            for sv, sw in ((-9, 11), (-8, -12)):  # papillary muscles
                _put(sub, np.s_[:], (_ell(loc, (30, sv, sw), (13, 4.5, 4.5)) < 1) & cav["LV"], v.myo)
        # the aortic root and pulmonary trunk run through the base: keep them visible there
        hu[hsl] = sub
    extra = {}
    if kind == "metal":
        extra = _metal(hu, g, P, c, lo, hi, R, vs, rng, hsl, loc if hsl is not None else None)
    label = heart.astype(np.uint8)
    vol = _scanner(hu, g, P, kind, rng, extra.get("metal"))
    if kind == "8bit-windowed":
        w = u(350, 800)
        lvl = u(20, min(80, w / 2 - 120))
        q = np.round(np.clip((vol - (lvl - w / 2)) / w, 0, 1) * 255)
        vol = (q / 255 * w + lvl - w / 2).astype(np.float32)
        extra["window"] = (float(w), float(lvl))
    info = dict(spacing=(g.dz, g.dxy, g.dxy), kind=kind, phase=str(phase), fov_mm=float(fov), child=P.child,
                variants=[str(s) for s in P.variants], cut=cut, blood_hu=float(v.bl),
                heart_ml=float(label.sum()) * g.dz * g.dxy * g.dxy / 1000)
    info.update({k: v_ for k, v_ in extra.items() if k != "metal"})
    return vol, label, info


# --- metal and its streaks -------------------------------------------------------------------------------

def _metal(hu, g, P, c, lo, hi, R, vs, rng, hsl, loc):
    """Paint metal (3071 HU) and return its attenuation excess (1/mm) for the streak model."""
    u = rng.uniform
    mu = np.zeros(g.shape, np.float32)
    parts = []
    kinds = [k for k in ("pacemaker", "valve", "wires") if rng.random() < 0.6] or [rng.choice(["pacemaker", "valve"])]
    k = P.k
    if "pacemaker" in kinds:
        side = 1 if rng.random() < 0.75 else -1
        cx = side * P.A * u(0.35, 0.55)
        front = -P.Bf * (1 - (abs(cx) / P.A) ** P.n) ** (1 / P.n)  # the skin in front at that x
        can = np.array([cx, front + max(P.fat * 0.5, 4) + 3, vs.top + u(10, 50)])
        sl, cc = g.box(can - [27, 6, 27], can + [27, 6, 27])
        if sl is not None:
            d = np.maximum(np.maximum(np.abs(cc[0] - can[0]) / 25, np.abs(cc[1] - can[1]) / 4),
                           np.abs(cc[2] - can[2]) / 22)
            m = (d < 1).astype(np.float32)
            mu[sl] = np.maximum(mu[sl], m * 0.2)  # titanium can (with its battery)
        svc_top, svc_in = np.array(vs.svc[0][-1]), np.array(vs.svc[0][1])
        svc_top[0] *= P.mirror
        svc_in[0] *= P.mirror
        ra = c + R @ (k * np.array([-40, 24, 2]))
        rv_apex = c + R @ (k * np.array([40, 18, -3]))
        ra[0] *= P.mirror
        rv_apex[0] *= P.mirror
        entry = np.array([side * P.A * 0.2, P.ystern + 5, can[2] + 10])
        leads = [[can, entry, [svc_in[0], svc_in[1], can[2]], svc_in, ra, rv_apex]]
        if rng.random() < 0.6:
            leads.append([can, entry, [svc_in[0], svc_in[1], can[2]], svc_in, ra + R @ (k * np.array([-5, 8, 12]))])
        for lead in leads:
            t = np.zeros(g.shape, np.float32)
            _tube(t, g, lead, u(0.8, 1.2), 1.0)
            mu = np.maximum(mu, t * 0.6)
        parts.append("pacemaker")
    if "valve" in kinds:
        aortic = rng.random() < 0.5
        ctr = np.array([-24, 2, -4]) if aortic else np.array([-24, -10, 6])
        rr, tr = u(10, 14) / k, u(1.2, 2.0)
        if loc is not None:
            q = [loc[i] - ctr[i] for i in range(3)]
            rad = np.sqrt(q[1] ** 2 + q[2] ** 2)
            d = np.sqrt(q[0] ** 2 + (rad - rr) ** 2) * k
            m = _soft(d - tr, g.dxy)
            mu[hsl] = np.maximum(mu[hsl], m * 0.6)
        parts.append("aortic valve" if aortic else "mitral valve")
    if "wires" in kinds:
        n = int(rng.integers(4, 8))
        zs = np.sort(u(float(g.z.min()), float(g.z.max()), n))
        for zw in zs:
            e = np.sqrt((g.X / (20 * k ** 0.5 + 6)) ** 2 + ((g.Y - P.ystern) / 9) ** 2)
            ring = _soft(np.abs(e - 1) * 9 - 0.5, g.dxy) * _soft(np.abs(g.Z - zw) - 0.5, g.dz)
            mu = np.maximum(mu, ring * 0.6)
        parts.append("sternal wires")
    return {"metal": mu, "metal_parts": parts}


def _streaks(mu_slice, dxy, rng, n_angles=120):
    """Streak image (HU) of one slice's metal by filtered back-projection of a projection error:
    beam hardening (-beta p^2) and photon starvation (noise growing as exp(p)). Pixel-driven projection."""
    h, w = mu_slice.shape
    iy, ix = np.nonzero(mu_slice > 1e-3)
    if len(iy) == 0:
        return np.zeros_like(mu_slice)
    wts = mu_slice[iy, ix] * dxy  # attenuation per pixel width
    ys, xs = (iy - (h - 1) / 2) * dxy, (ix - (w - 1) / 2) * dxy
    nbin = int(np.ceil(np.hypot(h, w))) + 4
    s0 = -(nbin - 1) / 2 * dxy
    th = np.linspace(0, np.pi, n_angles, endpoint=False)
    proj = np.zeros((n_angles, nbin), np.float32)
    for i, t in enumerate(th):
        s = (xs * np.cos(t) + ys * np.sin(t) - s0) / dxy
        i0 = np.floor(s).astype(int)
        f = s - i0
        proj[i] += np.bincount(i0, wts * (1 - f), nbin)[:nbin] + np.bincount(i0 + 1, wts * f, nbin + 1)[:nbin]
    beta, sigma = rng.uniform(0.12, 0.3), rng.uniform(0.025, 0.06)
    proj = 4 * np.tanh(proj / 4)  # the detector's dynamic range
    err = -beta * proj ** 2 + sigma * (np.exp(proj / 2) - 1) * rng.standard_normal(proj.shape)
    err = ndimage.gaussian_filter1d(err, 0.7, axis=1)
    # ramp filter (Ram-Lak) by FFT, zero padded
    n2 = 1 << int(np.ceil(np.log2(2 * nbin)))
    freq = np.abs(np.fft.rfftfreq(n2, d=dxy))
    q = np.fft.irfft(np.fft.rfft(err, n2, axis=1) * freq, n2, axis=1)[:, :nbin]
    yy, xx = (np.arange(h) - (h - 1) / 2) * dxy, (np.arange(w) - (w - 1) / 2) * dxy
    out = np.zeros((h, w), np.float32)
    grid = np.arange(nbin) * dxy + s0
    for i, t in enumerate(th):
        s = xx[None, :] * np.cos(t) + yy[:, None] * np.sin(t)
        out += np.interp(s, grid, q[i]).astype(np.float32)
    out *= np.pi / n_angles
    out -= np.median(out)  # inconsistent data leave an offset
    return out / MU_WATER * 1000


# --- the scanner -------------------------------------------------------------------------------------------

def _scanner(hu, g, P, kind, rng, metal):
    u = rng.uniform
    thick = g.dz * u(1.0, 1.6)
    psf = u(0.35, 0.8)
    vol = ndimage.gaussian_filter(hu, (thick / 2.355 / g.dz, psf / g.dxy, psf / g.dxy))
    if metal is not None:  # streaks, then the metal itself, blooming (thin wires saturate too)
        for i in range(vol.shape[0]):
            if metal[i].max() > 1e-3:
                vol[i] += _streaks(metal[i], g.dxy, rng)
        occ = ndimage.gaussian_filter(np.clip(metal / 0.1, 0, 1), (thick / 2.355 / g.dz, (psf + 0.3) / g.dxy,
                                                                    (psf + 0.3) / g.dxy))
        bloom = np.clip(occ * 4, 0, 1)
        vol += bloom * (3071 - vol)
    # noise: band-pass (ramp times a smooth cut-off), stronger and more correlated laterally
    sd = u(15, 55) if P.child else u(12, 40) * (1 + 0.5 * (P.fat > 35))  # obese: noisier
    fy = np.fft.fftfreq(g.shape[1])[:, None]
    fx = np.fft.rfftfreq(g.shape[2])[None, :]
    aniso = u(1.0, 1.6)
    fc = u(0.15, 0.35) * min(1.0, 0.7 / g.dxy + 0.4)
    fr = np.sqrt((fx * aniso) ** 2 + fy ** 2)
    filt = (fr * np.exp(-(fr / fc) ** 2)).astype(np.float32)
    white = rng.standard_normal(g.shape).astype(np.float32)
    noise = np.fft.irfft2(np.fft.rfft2(white) * filt, s=g.shape[1:]).astype(np.float32)
    noise *= sd / (noise.std() + 1e-9)
    # more noise in the body's middle (longest paths), less at the edges
    X, Y = g.X[0], g.Y[0]
    se = _superellipse(X, Y, P.A, P.Bf, P.Bb, P.n)
    noise *= (0.7 + 0.5 * np.exp(-se))[None]
    vol = vol + noise
    if rng.random() < 0.25:  # a sharp kernel: overshoot at edges
        vol = vol + u(0.3, 0.8) * (vol - ndimage.gaussian_filter(vol, (0, 1.0, 1.0)))
    pad = float(rng.choice([-1024, -2048, -3024]))
    vol = np.clip(np.round(vol), -1024, 3071).astype(np.float32)
    if kind != "cropped":
        h, w = g.shape[1:]
        yy, xx = np.mgrid[:h, :w]
        outside = (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2 > (min(h, w) / 2) ** 2
        if rng.random() < 0.6:
            vol[:, outside] = pad
    return vol


# --- the suite's interface ---------------------------------------------------------------------------------

def stress_volume(seed: int, size: int = 160, kind: str = "non-contrast"):
    """One stress CT: HU float32 (Z, Y, X) (24-40 slices of ``size`` x ``size``, LPS order), the heart
    label uint8 and info (``spacing`` (z, y, x) mm, ``phase``, ``heart_ml``, ...)."""
    if kind not in KINDS:
        raise ValueError(f"unknown stress kind '{kind}'; known: {', '.join(KINDS)}")
    return _render(int(seed), kind, int(size))


def score_cases(p, seed, runs, frames, size, kind):
    """(prediction, truth, extra) of ``runs`` stress CTs of ``kind``; ``p`` a Predictor; ``frames`` unused."""
    for r in range(runs):
        vol, mask, info = stress_volume(seed + r, size, kind)
        pred = p.predict(vol, direction=np.eye(3))  # LPS axes, as the generator's
        yield pred, mask, {"heart_ml": info["heart_ml"], "slices": len(vol), "phase": info["phase"],
                           "predicted_ml": float((pred == 1).sum() * np.prod(info["spacing"]) / 1000)}
