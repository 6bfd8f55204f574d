"""Synthetic chest CT in Hounsfield units (HU), and its exact whole-heart mask.

Arrays are ``(Z, Y, X)``: Z runs inferior -> superior, Y anterior -> posterior (rows, anterior at
the top) and X from the patient's right to their left (columns): the radiological axial view.
Every structure is an analytic shape in patient millimetres (origin on the body axis at the
height of the heart centre), so the voxel spacing changes the resolution, never the anatomy.

Anatomy: body outline with subcutaneous fat and muscle, lungs (density gradient, texture and
vessels), diaphragm domes with liver and stomach below, spine (vertebral bodies with cortex,
discs, canal, posterior arch, paraspinal muscles), ribs with costal cartilage, sternum, trachea
and main bronchi, oesophagus, aorta (root, ascending, arch, descending), pulmonary trunk and
arteries, pulmonary veins, venae cavae, the patient table, and the heart: four chambers (blood
pools) in a tilted, smoothly blended shape whose long axis points left, anterior and inferior,
a 7-13 mm left-ventricular myocardium, septa, epicardial fat with the coronary arteries in the
atrioventricular groove, and the pericardium. With contrast the left blood pool and aorta are
250-450 HU (right heart and pulmonary arteries 35-105 % of that); without, blood is 30-50 HU and
the heart shows only by its outline against fat and lung.

The heart mask ("heart" as in TotalSegmentator: the whole heart) is the set of voxel centres
inside the epicardial surface: chambers, myocardium and septa. Epicardial and pericardial fat,
the pericardium and the great vessels beyond the valve planes are not heart.

Partial volume: boundaries are anti-aliased over one pixel in plane, and each slice is the mean
of 1, 3 or 5 planes spread over its thickness; then an in-plane point spread function, and
slightly correlated Gaussian noise (SD 5-40 HU). Values are rounded and clipped like a scanner's.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from scipy import ndimage

from .fluoro import HELD_OUT_SEED_BASE  # noqa: F401  (seeds at or above it are never trained on)


def _occ(d, w):
    """Soft occupancy in [0, 1] from a signed distance ``d`` (mm, negative inside), edge ``w`` mm."""
    return np.clip(0.5 - d / w, 0.0, 1.0)


def _ell(coords, radii):
    """Approximate signed distance (mm) to the ellipse/ellipsoid ``sum (c/r)^2 = 1``."""
    k0 = np.sqrt(sum((c / r) ** 2 for c, r in zip(coords, radii)))
    k1 = np.sqrt(sum((c / r / r) ** 2 for c, r in zip(coords, radii))) + 1e-9
    return k0 * (k0 - 1.0) / k1


def _smin(a, b, k):
    """Smooth union of two signed distances (blend radius ``k`` mm)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _bezier(p0, p1, p2, n=6):
    t = np.linspace(0, 1, n + 1)[:, None]
    return (1 - t) ** 2 * p0 + 2 * t * (1 - t) * p1 + t ** 2 * p2


class _Grid:
    """Voxel-centre coordinates (mm) of a block: 1D ``z, y, x`` and ``box`` crops of them."""

    def __init__(self, z, y, x, w):
        self.axes, self.w = (z, y, x), w  # w: anti-aliasing edge width (mm), the pixel size
        self.shape = (len(z), len(y), len(x))

    def box(self, lo=(-1e9,) * 3, hi=(1e9,) * 3):
        """Slices and broadcastable (z, y, x) coordinates of the voxels within [lo, hi] mm."""
        sl = tuple(slice(np.searchsorted(a, lo_), np.searchsorted(a, hi_, "right"))
                   for a, lo_, hi_ in zip(self.axes, lo, hi))
        if any(s.stop <= s.start for s in sl):
            return None, None
        z, y, x = (a[s] for a, s in zip(self.axes, sl))
        return sl, (z[:, None, None], y[None, :, None], x[None, None, :])


def _paint(hu, sl, alpha, value):
    hu[sl] += alpha * (value - hu[sl])


def _field(key, g, sigma, cache):
    """Smooth random field, unit variance, correlation length ``sigma`` mm, fixed in patient space:
    white noise on a lattice (one seeded layer per lattice z) blurred by a Gaussian, evaluated
    separably on the grid's axes, so any block or single plane of it is consistent."""
    h = sigma / 1.2
    ks, ws = [], []
    for c in g.axes:
        k = np.arange(np.floor((c.min() - 3 * sigma) / h), np.ceil((c.max() + 3 * sigma) / h) + 1).astype(int)
        ks.append(k)
        ws.append(np.exp(-0.5 * ((c[:, None] - k[None, :] * h) / sigma) ** 2).astype(np.float32))
    n = int(np.ceil(400 / h))
    layers = []
    for k in ks[0]:
        if (key, k) not in cache:
            cache[key, k] = np.random.default_rng([*key, int(k) + 10**6]).standard_normal((2 * n, 2 * n), np.float32)
        layers.append(cache[key, k][np.clip(ks[1] + n, 0, 2 * n - 1)][:, np.clip(ks[2] + n, 0, 2 * n - 1)])
    f = np.tensordot(ws[0], np.stack(layers), 1)  # (nz, ky, kx)
    f = np.einsum("zyk,xk->zyx", f, ws[2])
    f = np.einsum("zkx,yk->zyx", f, ws[1])
    return f / (sigma * np.sqrt(np.pi) / h) ** 1.5


def _patient(rng):
    """Draw one patient: shapes, positions and sizes in mm (all from ``rng``)."""
    p = SimpleNamespace(key=int(rng.integers(2**31)), breath=rng.uniform(0, 1))
    p.a, p.b = rng.uniform(135, 185), rng.uniform(95, 128) + 6 * p.breath  # body half-width, half-depth
    p.fat, p.wall = rng.uniform(4, 28), rng.uniform(14, 22)  # subcutaneous fat, chest wall (mm)
    p.back, p.wobble = p.b * rng.uniform(0.8, 0.92), rng.uniform(0, 2 * np.pi)
    p.yv = p.b - p.fat - rng.uniform(52, 62)  # vertebral body centre (y)
    p.vr = rng.uniform(15, 19)  # vertebral body radius
    p.pitch, p.vphase = rng.uniform(24, 30), rng.uniform(0, 30)  # vertebral level height
    p.rib_pitch, p.rib_slope, p.rib_phase = rng.uniform(22, 30), rng.uniform(50, 90), rng.uniform(0, 30)
    # heart: long axis u (base -> apex) left, anterior and inferior; v towards the right ventricle
    s = rng.uniform(0.85, 1.12) * (1.2 if rng.random() < 0.1 else 1.0)  # 10 % enlarged hearts
    az, el = np.radians(rng.uniform(35, 60)), np.radians(rng.uniform(15, 40) + 10 * p.breath)
    u = np.array([-np.sin(el), -np.cos(az) * np.cos(el), np.sin(az) * np.cos(el)])  # (z, y, x)
    v = np.array([0.3, -1.0, -0.6])
    v -= (v @ u) * u
    v /= np.linalg.norm(v)
    roll = rng.uniform(-0.25, 0.25)
    v = v * np.cos(roll) + np.cross(u, v) * np.sin(roll)
    w = np.cross(u, v)
    p.hrot = np.stack([u, v, w if w[1] > 0 else -w], 1)  # columns: local axes in (z, y, x)
    p.hc = np.array([0.0, -p.b * rng.uniform(0.05, 0.25), rng.uniform(5, 30)])  # heart centre (z, y, x)
    jit = lambda: rng.uniform(0.9, 1.1, 3)
    # chambers LV, RV, LA, RA: centres and blood-pool radii in (u, v, w) mm, wall thickness
    p.cc = s * np.array([[12, -12, 2], [4, 18, -6], [-44, -14, 18], [-38, 20, 10]]) + rng.normal(0, 3, (4, 3))
    p.cr = s * np.array([[44, 24, 24], [40, 22, 32], [24, 30, 21], [27, 23, 24]]) * np.stack([jit() for _ in range(4)])
    p.cr[:2] *= rng.uniform(0.85, 1.05)  # cardiac phase: systole has smaller ventricles
    p.twall = np.array([rng.uniform(7, 13), 3.5, 2.5, 2.5])
    p.pfat = rng.uniform(1, 5), rng.uniform(0, 12), rng.uniform(0, 10)  # epicardial fat: base, groove, apex
    ext = np.sqrt(((p.hrot[None] * (p.cr + p.twall[:, None])[:, None, :]) ** 2).sum(-1))  # (4, 3) half extents
    centres = p.hc + p.cc @ p.hrot.T
    p.hlo, p.hhi = (centres - ext).min(0), (centres + ext).max(0)  # heart box (z, y, x)
    z_top, z_bot = p.hhi[0], p.hlo[0]
    # diaphragm domes: (top height, x centre); lower with deep inspiration
    p.domes = [(z_bot + rng.uniform(10, 40) - 25 * p.breath, -0.45 * p.a),
               (z_bot + rng.uniform(-5, 20) - 25 * p.breath, 0.45 * p.a)]
    p.dome_r = rng.uniform(90, 140)
    p.stomach = np.array([p.domes[1][0] - rng.uniform(25, 45), p.yv - 40, 0.4 * p.a]), rng.uniform(25, 45, 3), rng.random() < 0.6
    # vessels: polylines (n, 3) in (z, y, x) and radii (mm)
    L = lambda *q: p.hc + p.hrot @ (s * np.array(q, float))  # heart-local point -> patient
    root, z_arch = L(-22, 4, 6), z_top + rng.uniform(15, 40)
    asc_top = np.array([z_arch - 15, root[1] - 8, root[2] - rng.uniform(5, 15)])
    desc = np.array([z_arch - 15, p.yv - p.vr - 10, rng.uniform(18, 28)])
    arch = _bezier(asc_top, np.array([z_arch + 25, 0.5 * (asc_top[1] + desc[1]), 0.5 * (asc_top[2] + desc[2])]), desc)
    p.aorta_r = rng.uniform(12, 17), rng.uniform(10, 13)
    p.aorta = np.vstack([root, arch, [z_bot - 300, desc[1] + 5, desc[2] - 8]])
    bif = np.array([z_top + rng.uniform(-5, 10), root[1] + 10, root[2] + 25])
    p.pa = np.vstack([L(-10, 34, -12), bif]), np.vstack([bif, [bif[0] + 3, bif[1] + 30, 70]]), \
        np.vstack([bif, [bif[0] + 5, root[1] + 20, root[2] - 20], [bif[0] - 5, root[1] + 25, -70]])
    p.svc = np.array([L(-44, 24, 16), [z_top + 40, root[1] + 5, root[2] - 35], [z_top + 300, root[1] + 10, -30]])
    p.ivc = np.array([L(-36, 20, 24), [z_bot - 300, p.yv - 30, -25]])
    la = L(-44, -14, 18)
    p.pv = [np.array([la, la + [rng.uniform(-20, 5), rng.uniform(-10, 10), sx * 45]]) for sx in (-1, -1, 1, 1)]
    z_car = z_arch - rng.uniform(15, 30)
    tr = np.array([z_car, p.yv - p.vr - 32, rng.uniform(-5, 5)])
    p.airway = [np.array([tr + [400, 0, 0], tr]), np.array([tr, tr + [-25, 8, -38]]), np.array([tr, tr + [-40, 10, 42]])]
    p.oes = np.array([[z_bot - 300, p.yv - p.vr - 10, 5], [z_top + 300, p.yv - p.vr - 12, 0]])
    return p


def _values(rng, contrast):
    """HU of blood and tissues for this scan."""
    v = SimpleNamespace(fat=rng.uniform(-120, -80), muscle=rng.uniform(35, 60), lung=rng.uniform(-880, -780),
                        myo=rng.uniform(35, 55), blood_l=rng.uniform(30, 50), liver=rng.uniform(45, 65))
    cl, right, myo_e, liver_e, svc = rng.uniform(250, 450), rng.uniform(0.35, 1.05), rng.uniform(50, 90), rng.uniform(10, 60), rng.uniform(1, 2.5)
    v.blood_r = v.blood_l
    if contrast:
        v.blood_l, v.blood_r, v.myo, v.liver = cl, max(v.blood_l, cl * right), v.myo + myo_e, v.liver + liver_e
    v.svc = min(v.blood_r * (svc if contrast else 1.0), 1400)
    v.bone, v.cortex, v.cartilage = rng.uniform(150, 300), rng.uniform(500, 900), rng.uniform(80, 200)
    return v


def _render(p, v, g, cache):
    """HU (noise-free) on grid ``g``, and a bool array: voxel centre inside the heart."""
    hu = np.full(g.shape, -1000.0, np.float32)
    sl, (z, y, x) = g.box()
    w = g.w
    # patient table under the back: two thin carbon shells with foam between
    yt = p.b + 15 + 0.0004 * x ** 2
    _paint(hu, sl, _occ(np.maximum(np.abs(y - yt - 6) - 6, np.abs(x) - 230), w), -900)
    _paint(hu, sl, _occ(np.maximum(np.abs(np.abs(y - yt - 6) - 6) - 1, np.abs(x) - 230), w), 250)
    # body: flat back, fat then muscle
    wob = 1 + 0.03 * np.sin(z / 80 + p.wobble)
    body = np.maximum(_ell((y, x), (p.b * wob, p.a * wob)), y - p.back)
    _paint(hu, sl, _occ(body, w), v.fat)
    _paint(hu, sl, _occ(body + p.fat, w), v.muscle)
    # thoracic cavity: lungs above the diaphragm, liver below it
    cav = _ell((y + 5, x), (p.b * wob - p.fat - p.wall, p.a * wob - p.fat - p.wall))
    dia = np.maximum.reduce([zt - ((x - xd) ** 2 + (y - 10) ** 2) / (2 * p.dome_r) for zt, xd in p.domes])
    above = _occ(dia - z, w)
    n1, n2 = _field((p.key, 1), g, 5.0, cache), _field((p.key, 2), g, 5.0, cache)
    hil = np.exp(-((np.abs(x) - 50) ** 2 + (y - p.yv + 45) ** 2 + (z - p.hhi[0]) ** 2) / (2 * 60.0 ** 2))
    vessel = np.exp(-(n1 ** 2 + n2 ** 2) / (2 * (0.1 + 0.15 * hil) ** 2))
    lung = v.lung + 25 * _field((p.key, 3), g, 12.0, cache) + 60 * (1 - p.breath) * np.clip((y + p.b) / (2 * p.b), 0, 1) ** 2
    lung += vessel * (0.5 * (v.blood_l + v.blood_r) - lung)
    _paint(hu, sl, _occ(cav, w) * above, lung)
    _paint(hu, sl, _occ(cav, w) * (1 - above), v.liver + 8 * n1)
    sc, sr, gas = p.stomach
    st = _ell((z - sc[0], y - sc[1], x - sc[2]), sr)
    _paint(hu, sl, _occ(st, w) * (1 - above), 20.0)
    if gas:
        _paint(hu, sl, _occ(np.maximum(st + 3, sc[0] + sr[0] * 0.3 - z), w) * (1 - above), -1000)
    # mediastinal fat from the sternum to the spine, and paraspinal muscles
    _paint(hu, sl, _occ(np.maximum(np.abs(x - 5) - 22, np.abs(y - (p.yv - p.b) / 2) - (p.yv + p.b) / 2), w), v.fat)
    for sx in (-1, 1):
        _paint(hu, sl, _occ(_ell((y - p.yv - p.vr - 12, x - sx * 30), (26, 24)), w), v.muscle)
    # tubes: airway, oesophagus, great vessels (each: polyline, radius, HU, halo mm, halo HU)
    tubes = [(a, 9 if i == 0 else 6.5, -1000, 2, v.muscle) for i, a in enumerate(p.airway)]
    tubes += [(p.oes, 8, v.muscle, 0, 0), (p.oes, 2.5, -1000, 0, 0), (p.ivc, 13, v.blood_r, 0, 0), (p.svc, 10, v.svc, 2, v.fat)]
    tubes += [(p.aorta[:2], p.aorta_r[0], v.blood_l, 0, 0), (p.aorta[1:9], p.aorta_r[0], v.blood_l, 3, v.fat),
              (p.aorta[8:], p.aorta_r[1], v.blood_l, 2, v.fat)]
    tubes += [(q, r, v.blood_r, 2, v.fat) for q, r in zip(p.pa, (13, 10, 10))] + [(q, 6, v.blood_l, 0, 0) for q in p.pv]
    # heart, painted before the tubes that enter it so that they join its blood pools
    inside = np.zeros(g.shape, bool)
    hsl, (hz, hy, hx) = g.box(p.hlo - 20, p.hhi + 20)
    for t in tubes[:6]:
        _tube(hu, g, *t)
    if hsl is not None:
        loc = [p.hrot[0, k] * (hz - p.hc[0]) + p.hrot[1, k] * (hy - p.hc[1]) + p.hrot[2, k] * (hx - p.hc[2]) for k in range(3)]
        d = [_ell([loc[k] - c[k] for k in range(3)], r) for c, r in zip(p.cc, p.cr)]
        outer = _smin(_smin(d[0] - p.twall[0], d[1] - p.twall[1], 8), _smin(d[2] - p.twall[2], d[3] - p.twall[3], 8), 10)
        rv = np.maximum(d[1], p.twall[0] - d[0])
        la = np.maximum.reduce([d[2], 3 - d[0], 3 - rv])
        ra = np.maximum.reduce([d[3], 3 - la, 3 - d[0], 3 - rv])
        u = loc[0]
        fat = p.pfat[0] + p.pfat[1] * np.exp(-((u + 22) / 12) ** 2) + p.pfat[2] * np.clip((u - 20) / 40, 0, 1)
        _paint(hu, hsl, _occ(outer - fat - 1.2, w), v.muscle)  # pericardium
        _paint(hu, hsl, _occ(outer - fat, w), v.fat)
        ring = np.maximum(np.abs(u + 22) - 2, np.abs(outer - 2.5) - 2)  # coronaries in the AV groove
        _paint(hu, hsl, _occ(ring, w) * (p.pfat[1] > 3), v.blood_l)
        _paint(hu, hsl, _occ(outer, w), v.myo)
        _paint(hu, hsl, _occ(np.minimum(d[0], la), w), v.blood_l)
        _paint(hu, hsl, _occ(np.minimum(rv, ra), w), v.blood_r)
        inside[hsl] = outer < 0
    for t in tubes[6:]:
        _tube(hu, g, *t)
    # spine: vertebral bodies (cortex, marrow, discs), posterior arch, canal
    vb = _ell((y - p.yv, x), (p.vr * 0.85, p.vr * 1.1))
    disc = _occ(np.abs((z - p.vphase) % p.pitch - p.pitch / 2) - 3, w)
    yc = p.yv + p.vr + 9
    arch = np.minimum.reduce([np.sqrt((y - yc) ** 2 + x ** 2) - 13,
                              np.maximum(np.abs(x) - 4, np.abs(y - yc - 22) - 22),
                              np.maximum(np.abs(x) - 32, np.abs(y - yc + 2) - 5)])
    _paint(hu, sl, _occ(arch, w) * (1 - disc), v.cortex)
    _paint(hu, sl, _occ(arch + 2, w) * (1 - disc), v.bone)
    _paint(hu, sl, _occ(np.sqrt((y - yc) ** 2 + x ** 2) - 8, w), 15.0)
    _paint(hu, sl, _occ(vb, w), v.cortex)
    _paint(hu, sl, _occ(vb + 1.5, w), v.bone)
    _paint(hu, sl, _occ(vb, w) * disc, 80.0)
    # ribs: a periodic pattern along z, descending towards the front, just outside the cavity
    theta = np.abs(np.arctan2(x, y - p.yv)) / np.pi  # 0 at the spine, 1 at the sternum
    phase = (z + p.rib_slope * theta - p.rib_phase) % p.rib_pitch - p.rib_pitch / 2
    dr, dz = np.abs(cav - 8) - 4, np.abs(phase) - 6
    rib = np.sqrt(np.maximum(dr, 0) ** 2 + np.maximum(dz, 0) ** 2) + np.minimum(np.maximum(dr, dz), 0)
    rib = np.maximum(rib, np.abs(x) - (35 - 20 * theta) * (theta < 0.5))  # leave the spine free
    front = np.clip((theta - 0.75) / 0.05, 0, 1)  # costal cartilage in front
    _paint(hu, sl, _occ(np.maximum(rib, theta - 0.95), w), v.cortex * (1 - front) + v.cartilage * front)
    _paint(hu, sl, _occ(np.maximum(rib + 1.5, theta - 0.75), w), v.bone)
    # sternum
    ssl, (sz, sy, sx) = g.box((p.hlo[0] - 20, -p.b, -40), (p.hhi[0] + 80, 0, 40))
    if ssl is not None:
        st = _ell((sy + p.b * wob[..., :1, :1][0:1] * 0 + p.b - p.fat - p.wall * 0.6, sx), (6, 16))
        _paint(hu, ssl, _occ(st, w), v.cortex)
        _paint(hu, ssl, _occ(st + 1.5, w), v.bone)
    return hu, inside


def _tube(hu, g, pts, r, value, halo, halo_value):
    """Paint a tube of radius ``r`` mm around polyline ``pts`` (n, 3), with a halo ring first."""
    for rr, val in ((r + halo, halo_value), (r, value)) if halo else ((r, value),):
        for a, b in zip(pts[:-1], pts[1:]):
            sl, (z, y, x) = g.box(np.minimum(a, b) - rr - 2, np.maximum(a, b) + rr + 2)
            if sl is None:
                continue
            ab = b - a
            t = np.clip(((z - a[0]) * ab[0] + (y - a[1]) * ab[1] + (x - a[2]) * ab[2]) / (ab @ ab), 0, 1)
            d = np.sqrt((z - a[0] - t * ab[0]) ** 2 + (y - a[1] - t * ab[1]) ** 2 + (x - a[2] - t * ab[2]) ** 2)
            _paint(hu, sl, _occ(d - rr, g.w), val)


def _scan(p, rng, v, z_planes, size, fov, centre, dz):
    """Render slices centred at ``z_planes`` (mm), thickness ``dz``, in-plane ``size`` over ``fov``
    mm about ``centre`` (y, x): returns HU (Z, H, W) with partial volume, PSF and noise, and mask."""
    h, wd = size
    dxy = fov / max(h, wd)
    y = centre[0] + (np.arange(h) - (h - 1) / 2) * dxy
    x = centre[1] + (np.arange(wd) - (wd - 1) / 2) * dxy
    n = 1 if dz <= 1.5 else 3 if dz <= 4 else 5  # planes per slice (odd: the middle one is the centre)
    offs = dz * ((np.arange(n) + 0.5) / n - 0.5)
    vol, mask, cache = np.empty((len(z_planes), h, wd), np.float32), np.empty((len(z_planes), h, wd), np.uint8), {}
    step = max(1, 24 // n)
    for i in range(0, len(z_planes), step):
        zs = (z_planes[i:i + step, None] + offs).ravel()
        hu, inside = _render(p, v, _Grid(zs, y, x, dxy), cache)
        vol[i:i + step] = hu.reshape(-1, n, h, wd).mean(1)
        mask[i:i + step] = inside.reshape(-1, n, h, wd)[:, n // 2]
    psf, sd, corr = rng.uniform(0.3, 0.8) / dxy, np.exp(rng.uniform(np.log(5), np.log(40))), rng.uniform(0.4, 1.0)
    vol = ndimage.gaussian_filter(vol, (0, psf, psf))
    noise = ndimage.gaussian_filter(rng.standard_normal(vol.shape, np.float32), (0, corr, corr))
    vol += noise * (sd / noise.std())
    if rng.random() < 0.3:  # outside the reconstruction circle
        yy, xx = np.mgrid[:h, :wd]
        vol[:, (yy - (h - 1) / 2) ** 2 + (xx - (wd - 1) / 2) ** 2 > (max(h, wd) / 2) ** 2] = -1024
    return np.clip(np.round(vol), -1024, 3071), mask, sd


def _geometry(p, rng, width):
    """In-plane field of view (mm) and centre (y, x) mm: a whole-chest view or a cardiac zoom."""
    if rng.random() < 0.25:
        return rng.uniform(180, 280), (p.hc[1] + rng.normal(0, 10), p.hc[2] + rng.normal(0, 10))
    fov = rng.uniform(max(300, 2 * p.a + 20), 480) * width
    return fov, (rng.normal(5, 10), rng.normal(0, 10))


def generate_ct(seed: int, shape=(64, 256, 256), spacing=None, contrast=None):
    """One synthetic chest CT volume.

    Args:
        seed: all randomness comes from ``np.random.default_rng(seed)``; the same seed and
            arguments give the same volume. The anatomy does not depend on ``shape``, ``spacing``
            or ``contrast``: they change only how that patient is scanned.
        shape: (Z, Y, X) voxels. Z may be None: then as many slices as the drawn extent needs.
        spacing: (z, y, x) mm, or None to draw it: in-plane field of view 300-480 mm (whole
            chest) or 180-280 mm (cardiac zoom, 25 %), slice spacing = thickness 1-5 mm, raised
            where needed so that Z slices cover the whole heart plus at least 5 mm each side.
        contrast: True (contrast-enhanced), False, or None to draw it (60 % contrast).

    Returns:
        volume: float32 (Z, Y, X), HU (-1024 .. 3071, integer-valued).
        mask: uint8 (Z, Y, X), 1 where a voxel centre lies inside the heart.
        info: dict with ``spacing`` (z, y, x) mm, ``origin`` (z, y, x) mm of voxel (0, 0, 0) in
            patient coordinates, ``fov_mm``, ``contrast``, ``noise_sd`` (HU), ``blood_hu`` (left
            heart) and ``heart_ml`` (mask voxels times voxel volume).
    """
    rng = np.random.default_rng(seed)
    r_anat, r_scan = rng.spawn(2)
    p = _patient(r_anat)
    draw_contrast, cz = r_scan.random() < 0.6, r_scan.uniform(1, 5)
    contrast = draw_contrast if contrast is None else bool(contrast)
    v = _values(r_scan, contrast)
    Z, H, W = shape
    fov, centre = _geometry(p, r_scan, 1.0)
    heart = p.hhi[0] - p.hlo[0] + 10
    if spacing is not None:
        dz, fov = float(spacing[0]), float(spacing[2]) * max(H, W)
        Z = Z or int(np.ceil(r_scan.uniform(heart + 10, 350) / dz))
    elif Z is None:
        dz = cz
        Z = int(np.ceil(r_scan.uniform(heart + 10, 350) / dz))
    else:
        dz = max(cz, heart / Z)
    lo, hi = sorted((p.hhi[0] + 5 - Z * dz, p.hlo[0] - 5))
    z0 = r_scan.uniform(lo, hi)
    z_planes = z0 + (np.arange(Z) + 0.5) * dz
    vol, mask, sd = _scan(p, r_scan, v, z_planes, (H, W), fov, centre, dz)
    dxy = fov / max(H, W)
    origin = (z_planes[0], centre[0] - (H - 1) / 2 * dxy, centre[1] - (W - 1) / 2 * dxy)
    info = dict(spacing=(dz, dxy, dxy), origin=tuple(float(o) for o in origin), fov_mm=(H * dxy, W * dxy),
                contrast=contrast, noise_sd=float(sd), blood_hu=float(v.blood_l),
                heart_ml=float(mask.sum()) * dz * dxy * dxy / 1000.0)
    return vol, mask, info


def generate_ct_slice(seed: int, size=(256, 256), contrast=None):
    """One axial slice for 2D training: a random height from 60 mm below the heart to 60 mm
    above it (about half the slices show no heart), thickness 0.6-5 mm, field of view and
    contrast drawn as in :func:`generate_ct`.

    Returns:
        slice: float32 (H, W), HU. mask: uint8 (H, W), heart. info: dict (``z_mm``, ``spacing``
            (thickness, pixel, pixel) mm, ``contrast``, ``noise_sd``).
    """
    rng = np.random.default_rng(seed)
    r_anat, r_scan = rng.spawn(2)
    p = _patient(r_anat)
    draw_contrast, dz = r_scan.random() < 0.6, r_scan.uniform(0.6, 5)
    contrast = draw_contrast if contrast is None else bool(contrast)
    v = _values(r_scan, contrast)
    fov, centre = _geometry(p, r_scan, 1.0)
    z = r_scan.uniform(p.hlo[0] - 60, p.hhi[0] + 60)
    vol, mask, sd = _scan(p, r_scan, v, np.array([z]), size, fov, centre, dz)
    dxy = fov / max(size)
    return vol[0], mask[0], dict(z_mm=float(z), spacing=(dz, dxy, dxy), contrast=contrast, noise_sd=float(sd))
