"""The echo task's stress suite: apical 2/4-chamber clips made unlike the training generator, never trained on.

Written apart from ``Training.echo`` (its own anatomy, beam physics, speckle and display) so that a
model that learnt the generator's look, not the heart, fails here. All lengths in mm.

Anatomy, in a frame attached to the left ventricle (``s`` along the long axis from the endocardial
apex towards the mitral plane, ``b`` across it, positive towards the lateral wall): a bullet-shaped
cavity (a rounded, slightly pointed apical cap then a body that narrows a little towards the mitral
annulus), length 68-90, half-width 18-25 at end-diastole; the myocardium is every point within a
thickness of 8-11 (end-diastole, +-7 % around the wall, the apex up to 15 % thinner; it thickens as
the cavity shrinks) of the cavity, measured by a distance transform, cut flat at the mitral plane;
two papillary muscles and a trabeculated layer (2-5 deep, patchy echoes, from the apex over 50-90
% of the length) inside the cavity, both labelled cavity; the left atrium an ellipse below the
mitral plane (tilted +-15 deg, 34-52 long) with pulmonary veins, an appendage (2-chamber), the
coronary sinus and the descending aorta beside it, all unlabelled blood; in 4-chamber views the
right ventricle and atrium beside them behind the septum, the interatrial septum between the atria;
the pericardium a bright band outside the wall; mitral leaflets that open in diastole. Over the
clip (1-1.6 cycles) the cavity shortens by 10-18 % and narrows by 25-38 %, the wall thickens, the
mitral plane moves towards the fixed apex and the LA grows in systole.

Image formation, along 96-256 beams of a sector: a real radio-frequency scatterer field (Gaussian,
or sparse: a few scatterers per resolution cell) times the tissue's reflectivity, with attenuation
(0.8-1.2 dB/cm/MHz round trip, a third of it in blood) and rib shadows; a Gaussian-modulated pulse
(centre 2-3 MHz, 50-80 % bandwidth) by filtering in the frequency domain and demodulation to the
envelope; a lateral beam that is focused (aperture 14-20, focus at 45-75 % of the depth), wide in
the near field (two-way: a fixed transmit focus, dynamic receive focus at F-number >= 2) and with
side lobes (-40..-32 dB) that smear bright walls into the cavity;
myocardial backscatter that depends on the angle between beam and wall (walls along the beams are
5-11 dB darker), specular endocardial edges, near-field clutter; receiver noise, time-gain
compensation, log compression (dynamic range 45-60 dB, the wall at 55-70 % of it), a grey map, scan conversion to square
pixels of a fan anywhere from filling the image to 2/3 of it (columns 0.95-1.2 times as wide).

Kinds (each one way real acquisitions differ; everything else as in ``renderer``):

    renderer        the independent renderer: sector 60-80 deg, depth to just below the LA (115-190)
    narrow-sector   sector 36-54 deg: the LV wall and the atria cut by the sector's edges
    wide-sector     sector 95-110 deg: a small heart in a wide fan
    shallow         depth ends 25-50 % down the LA (the rest of the LA out of view), 3-4 MHz
    deep            depth 215-260 mm (a small heart in the top half), 1.6-2.2 MHz
    bright-gain     overall gain +12..+20 dB: the wall saturates, the cavity fills with grey
    dark-gain       overall gain -20..-12 dB
    uneven-tgc      time-gain sliders -12..+12 dB at 8 depths and lateral gain -6..+6 dB at 5 angles
    foreshortened   a short round LV (length 46-60, half-width 22-28, round apex) seen from 10-25 mm
                    further away
    off-axis        the long axis tilted 18-32 deg either way, mirrored views in 30 %
    dropout         1-3 wall arcs of 30-60 deg with 18-30 dB less signal, the lateral wall
                    10-20 dB weaker where it runs along the beams
    poor-window     heavy near-field clutter (-14..-8 dB, 30-60 mm deep), haze in the blood
                    (-24..-18 dB), 1-2 rib shadows (60-95 % of the signal lost)
    jpeg            the ``renderer`` frames JPEG-compressed at quality 5-30
    coarse-speckle  1.4-1.9 MHz, 40-50 % bandwidth, sparse scatterers (0.05-0.15 per RF sample: a few
                    per resolution cell, K-distributed speckle), an aperture of 11-14 mm (a wider beam)
                    and stronger side lobes (-30..-25 dB)
    smoothed        the machine's speckle reduction (median 3-5 px, blur 0.8-1.5 px) and frame
                    persistence (30-60 % of the previous frame)
    overlays        burnt-in, unlabelled: ECG trace, text, depth ruler, focus marker, fan outline,
                    grey bar, probe mark
    low-res         rendered at 30-50 % of the size and scaled up (as EchoNet-style 112 px clips)

Frames ``float32`` (T, H, W) display grey 0..255 (integers; 0 outside the fan except overlays),
labels ``uint8`` (0 background, 1 LV cavity (papillary muscles included), 2 LV myocardium, 3 left
atrium), inside the fan only. Everything comes from one seed (held-out seeds in scoring); the
anatomy and the scanner are drawn the same way for every kind, so ``jpeg``, ``smoothed``,
``overlays`` and ``low-res`` degrade exactly the ``renderer`` clip of the same seed.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

KINDS = ("renderer", "narrow-sector", "wide-sector", "shallow", "deep", "bright-gain", "dark-gain", "uneven-tgc",
         "foreshortened", "off-axis", "dropout", "poor-window", "jpeg", "coarse-speckle", "smoothed", "overlays",
         "low-res")

# tissue codes of the anatomy grid; 1..3 are the label classes, _PAP is labelled cavity
_BG, _LV, _MYO, _LA, _POOL, _WALL, _PERI, _PAP, _CHEST, _TRAB = range(10)  # _PAP, _TRAB: labelled cavity
_GRID = 0.5  # mm per cell of the anatomy grid
_C = 1.54  # speed of sound, mm/us


def _ramp(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


# --- anatomy --------------------------------------------------------------------------------------

def _bullet(t, length, width, cap, p, taper):
    """Half-width of a bullet at ``t`` mm from its tip (0 outside 0..length): a rounded cap of
    ``cap`` of the length (exponent ``p``: < 2 pointed), then a body narrowing by ``taper``."""
    tc = cap * length
    u = np.clip((tc - t) / tc, 0, 1)
    w_cap = width * np.clip(1 - u**p, 0, 1) ** (1 / p)
    body = np.clip((t - tc) / max(length - tc, 1e-3), 0, 1)
    w = np.where(t < tc, w_cap, width * (1 - taper * body**2))
    return np.where((t >= 0) & (t <= length), w, 0.0)


class _Heart:
    """One patient's heart placed in the sector: LV frame, structures, per-frame tissue grid."""

    def __init__(self, rng, krng, kind):
        U = rng.uniform
        self.view = "4CH" if rng.random() < 0.5 else "2CH"
        self.mirror = bool(rng.random() < 0.1)
        self.L0, self.W0 = U(68, 90), U(18, 25)
        self.cap, self.p, self.taper = U(0.45, 0.65), U(1.5, 2.0), U(0.08, 0.2)
        self.T0, self.tv, self.apex_thin = U(8, 11), rng.uniform(-0.07, 0.07, 3), U(0.0, 0.15)
        self.ls, self.fs = U(0.1, 0.18), U(0.25, 0.38)
        self.la_len, self.la_k, self.la_grow = U(34, 52), U(0.55, 0.75), U(0.15, 0.35)
        self.la_off, self.la_tilt, self.la_wfac = U(-4, 4), np.deg2rad(U(-15, 15)), U(0.95, 1.15)
        self.rv = dict(apex=U(0.3, 0.45), w=U(13, 19), wall=U(3, 5), tv=U(3, 9), off=U(0.7, 0.9),
                       ra_len=U(30, 45), ra_w=U(14, 20), ra_k=U(0.5, 0.7))
        self.pap = [(U(0.5, 0.7), side, U(5, 8), U(2.5, 4)) for side in (-1, 1)]
        self.aorta = (U(0.6, 0.95), U(8, 12), U(3, 8), 1 if self.view == "4CH" else rng.choice([-1, 1]))
        self.veins = [(U(0.3, 0.9) * rng.choice([-1, 1]), U(10, 20), U(3, 5)) for _ in range(rng.integers(0, 3))]
        self.laa = (rng.choice([-1, 1]), U(3, 8), U(6, 10)) if self.view == "2CH" and rng.random() < 0.6 else None
        self.sinus = (U(2, 5), U(3, 5)) if rng.random() < 0.5 else None
        self.leaflets = (U(1.0, 1.2), U(0.6, 0.8))  # septal/anterior and lateral/posterior, times annulus half-width
        self.peri = U(1.5, 3.0)
        self.trab = (U(2, 5), U(0.5, 0.9))  # depth of the trabeculated layer, extent from the apex (of the length)
        self.chest = U(8, 20)
        tilt = np.deg2rad(U(-10, 10))
        apex = self.chest + U(2, 6) + self.T0
        if kind == "foreshortened":
            self.L0, self.W0 = krng.uniform(46, 60), krng.uniform(22, 28)
            self.cap, self.p = krng.uniform(0.8, 1.0), krng.uniform(2.0, 2.6)
            apex += krng.uniform(10, 25)
        if kind == "off-axis":
            tilt = np.deg2rad(krng.uniform(18, 32) * krng.choice([-1, 1]))
            self.mirror = bool(krng.random() < 0.3)
        self.u = np.array([np.sin(tilt), np.cos(tilt)])  # (x, z) of +s
        self.v = np.array([np.cos(tilt), -np.sin(tilt)])  # (x, z) of +b
        self.apex = np.array([0.0, apex])
        # aim: the heart's angular extent centred in the sector
        pts = self._key_points()
        target = np.deg2rad(U(-3, 3))
        for _ in range(4):
            xz = self._world(*pts)
            ang = np.arctan2(xz[0], xz[1])
            self.apex[0] -= np.tan(0.5 * (ang.min() + ang.max()) - target) * xz[1].mean()
        xz = self._world(*pts)
        self.bottom = float(xz[1].max())
        self.mitral_depth = float(self._world(np.array([self.L0, self.L0]), np.array([-self.W0, self.W0]))[1].max())
        self.extent = np.abs(np.arctan2(xz[0], xz[1])).max()
        # the anatomy grid: the heart's box plus a margin
        lo, hi = xz.min(1) - 25, xz.max(1) + 25
        lo[1] = max(lo[1], 0.0)
        self.x0, self.z0 = lo
        nx, nz = (np.ceil((hi - lo) / _GRID)).astype(int) + 1
        gx, gz = np.meshgrid(self.x0 + _GRID * np.arange(nx), self.z0 + _GRID * np.arange(nz))
        self.s, self.b = self._local(gx, gz)

    def _world(self, s, b):
        return self.apex[:, None] + self.u[:, None] * s[None] + self.v[:, None] * b[None]

    def _local(self, x, z):
        dx, dz = x - self.apex[0], z - self.apex[1]
        s, b = dx * self.u[0] + dz * self.u[1], dx * self.v[0] + dz * self.v[1]
        return s.astype(np.float32), b.astype(np.float32)

    def _key_points(self):
        t = np.linspace(0, self.L0, 12)
        w = _bullet(t, self.L0, self.W0, self.cap, self.p, self.taper) + self.T0
        s = [t, t, [-self.T0]]
        b = [w, -w, [0.0]]
        wl = self.W0 * self.la_wfac
        s += [[self.L0 + self.la_len * 1.1] * 3]
        b += [[self.la_off - wl, self.la_off, self.la_off + wl]]
        if self.view == "4CH":
            r = self.rv
            brv = -(self.W0 + self.T0 + r["w"] * r["off"])
            s += [[self.L0 * 0.6, self.L0 + r["ra_len"]]]
            b += [[brv - r["w"] - r["wall"], brv]]
        return np.concatenate([np.ravel(a) for a in s]), np.concatenate([np.ravel(a) for a in b])

    def tissue(self, c, valve):
        """Tissue codes, distance to the LV cavity (mm), its gradient (z, x) and leaflets on the grid."""
        s, b = self.s, self.b
        L, W = self.L0 * (1 - self.ls * c), self.W0 * (1 - self.fs * c)
        T = self.T0 * (self.L0 + self.W0) / (L + W)
        s0 = (T - self.T0) * (1 - self.apex_thin)
        smv = s0 + L
        w = _bullet(s - s0, L, W, self.cap, self.p, self.taper)
        cav = np.abs(b) <= w
        pap = np.zeros(s.shape, bool)
        for frac, side, ra, rb in self.pap:
            sp = s0 + frac * L
            wp = float(_bullet(np.array(frac * L), L, W, self.cap, self.p, self.taper))
            bp = side * (wp - 0.6 * rb)
            pap |= ((s - sp) / ra) ** 2 + ((b - bp) / rb) ** 2 <= 1
        pap &= cav
        code = np.full(s.shape, _BG, np.uint8)
        dist = ndimage.distance_transform_edt(~cav, sampling=_GRID).astype(np.float32)
        th = np.arctan2(b, -(s - (s0 + 0.5 * L)))
        Tl = T * (1 + self.tv[0] * np.cos(th) + self.tv[1] * np.sin(th) + self.tv[2] * np.cos(2 * th))
        Tl = Tl * (1 - self.apex_thin * np.exp(-((th / 0.6) ** 2)))
        myo = ~cav & (dist <= Tl) & (s <= smv)
        outside_lv = ~cav & ~myo
        # left atrium and its neighbours
        g = 1 + self.la_grow * c
        wmv = float(_bullet(np.array(L), L, W, self.cap, self.p, self.taper))
        A = self.la_len / (1 + self.la_k) * g
        Wl = wmv * self.la_wfac / np.sqrt(1 - self.la_k**2) * np.sqrt(g)
        ct, st = np.cos(self.la_tilt), np.sin(self.la_tilt)
        ds = s - smv
        sl, bl = ds * ct + b * st, -ds * st + b * ct
        f_la = ((sl - self.la_k * A) / A) ** 2 + ((bl - self.la_off) / Wl) ** 2
        f_wall = ((sl - self.la_k * A) / (A + 2.5)) ** 2 + ((bl - self.la_off) / (Wl + 2.5)) ** 2
        below = s > smv
        la = (f_la <= 1) & below
        la_wall = (f_wall <= 1) & (s > smv - 1) & ~la & outside_lv
        code[la_wall] = _WALL
        pool = np.zeros(s.shape, bool)
        frac, r_ao, gap, side = self.aorta
        ca = (smv + frac * self.la_len, self.la_off + side * (Wl + r_ao + gap))
        d_ao = np.hypot(s - ca[0], b - ca[1])
        code[(d_ao <= r_ao + 2) & (code == _BG)] = _WALL
        pool |= d_ao <= r_ao
        for ang, length, r in self.veins:  # from the LA roof outwards
            p0 = np.array([self.la_k * A + A * np.cos(ang), self.la_off + Wl * np.sin(ang)])
            d = np.array([np.cos(ang), np.sin(ang)])
            t = np.clip((sl - p0[0]) * d[0] + (bl - p0[1]) * d[1], -r, length)
            pool |= np.hypot(sl - p0[0] - t * d[0], bl - p0[1] - t * d[1]) <= r
        if self.laa is not None:
            side, ds0, db0 = self.laa
            pool |= (((s - smv - ds0) / 8) ** 2 + ((b - side * (wmv + db0)) / 5) ** 2 <= 1)
        if self.sinus is not None:
            ds0, r = self.sinus
            pool |= np.hypot(s - smv - ds0, b - (wmv + 0.6 * T)) <= r
        if self.view == "4CH":
            rv = self.rv
            k = 1 - 0.2 * c
            brv = -(W + T + rv["w"] * k * rv["off"])
            srv0, stv = s0 + rv["apex"] * self.L0, smv - rv["tv"]
            wrv = _bullet(s - srv0, stv - srv0, rv["w"] * k, 0.6, 2.0, 0.1)
            wrv_out = _bullet(s - srv0 + rv["wall"], stv - srv0 + rv["wall"], rv["w"] * k + rv["wall"], 0.6, 2.0, 0.1)
            rv_blood = (np.abs(b - brv) <= wrv) & (dist > Tl + 0.3) & outside_lv
            rv_wall = (np.abs(b - brv) <= wrv_out) & ~rv_blood & outside_lv & (s <= stv)
            code[rv_wall] = _WALL
            pool |= rv_blood
            Ara, Wra = rv["ra_len"] / (1 + rv["ra_k"]) * g, rv["w"] * 0.9 * np.sqrt(g)
            f_ra = ((s - stv - rv["ra_k"] * Ara) / Ara) ** 2 + ((b - brv + 1.5) / Wra) ** 2
            ra = (f_ra <= 1) & (s > stv) & (f_wall > 1) & outside_lv
            code[(f_ra <= 1.2) & (s > stv - 1) & outside_lv & ~ra & (code == _BG)] = _WALL
            pool |= ra
        code[pool & outside_lv & ~la] = _POOL
        peri = (dist > Tl + 0.3) & (dist <= Tl + 0.3 + self.peri) & (s <= smv + 4) & (code == _BG)
        code[peri] = _PERI
        code[la] = _LA
        code[myo] = _MYO
        code[cav] = _LV
        trab = cav & (ndimage.distance_transform_edt(cav, sampling=_GRID) < self.trab[0]) & (s < s0 + self.trab[1] * L)
        code[trab] = _TRAB
        code[pap] = _PAP
        # mitral leaflets from the annulus: closed (a little into the LA) .. open (towards the apex)
        psi = np.deg2rad(-10 + 90 * valve)
        leaf = np.zeros(s.shape, bool)
        for side, length in ((-1, self.leaflets[0] * wmv), (1, self.leaflets[1] * wmv)):
            d = np.array([-np.sin(psi), -side * np.cos(psi)])
            t = np.clip((s - smv) * d[0] + (b - side * wmv) * d[1], 0, length)
            leaf |= np.hypot(s - smv - t * d[0], b - side * wmv - t * d[1]) < 0.6
        gz, gx = np.gradient(dist, _GRID)
        return dict(code=code, dist=dist, gz=gz.astype(np.float32), gx=gx.astype(np.float32), leaf=leaf,
                    th=th.astype(np.float32), lateral=(b > 0), Tl=Tl.astype(np.float32))

    def lookup(self, fields, x, z):
        """Nearest grid values at world points; outside the grid the background (code 0)."""
        if self.mirror:
            x = -x
        i = np.rint((z - self.z0) / _GRID).astype(np.int64)
        j = np.rint((x - self.x0) / _GRID).astype(np.int64)
        h, w = fields["code"].shape
        inside = (i >= 0) & (i < h) & (j >= 0) & (j < w)
        i, j = np.clip(i, 0, h - 1), np.clip(j, 0, w - 1)
        out = {}
        for k, a in fields.items():
            v = a[i, j]
            out[k] = np.where(inside, v, np.zeros((), a.dtype))
        if "dist" in out:
            out["dist"] = np.where(inside, out["dist"], 99.0)
            out["Tl"] = np.where(inside, out["Tl"], 10.0)
        return out


# --- scanner ----------------------------------------------------------------------------------------

def _scanner(rng, krng, kind, heart, size):
    """Sector, depth, beam, pulse, gains and display of one clip."""
    U = rng.uniform
    S = dict(half=np.deg2rad(U(30, 40)), f=U(2.0, 3.0), bw=U(0.5, 0.8), aperture=U(14, 20), focus=U(0.45, 0.75),
             side_db=U(-40, -32), density=1.0, atten=U(0.8, 1.2), noise_db=U(-70, -58), gain=U(-3, 3),
             dr=U(45, 60), offset=U(0.3, 0.45), gamma=U(0.8, 1.4), scurve=U(0.0, 0.6), tgc_frac=U(0.75, 0.95),
             sliders=rng.uniform(-3, 3, 8), lateral=np.zeros(5), fill=U(0.88, 1.0), aspect=U(0.95, 1.2),
             top=U(0.0, 0.06), centre=U(-0.02, 0.02), depth_factor=U(1.02, 1.12))
    S["levels"] = dict(blood=U(-38, -30), pap=U(-18, -10), leaf=U(-2, 4), peri=U(6, 12), wall=U(-6, -1),
                       bg=U(-24, -10), bg_tex=U(3, 6), trab=U(-22, -14), chest=U(-10, -3), aniso=U(5, 11), spec=U(3, 7),
                       myo_tex=U(2.5, 5), clutter=U(-30, -22), clutter_mm=U(10, 25), haze=-99.0)
    S["shadows"], S["drops"], S["lateral_drop"] = [], [], 0.0
    S["depth"] = float(np.clip(heart.bottom * S["depth_factor"], 115, 190))
    if kind == "narrow-sector":
        S["half"] = np.deg2rad(krng.uniform(18, 27))
    elif kind == "wide-sector":
        S["half"] = np.deg2rad(krng.uniform(47.5, 55))
    elif kind == "shallow":
        S["depth"] = heart.mitral_depth + krng.uniform(0.25, 0.5) * heart.la_len
        S["f"] = krng.uniform(3.0, 4.0)
    elif kind == "deep":
        S["depth"], S["f"] = krng.uniform(215, 260), krng.uniform(1.6, 2.2)
    elif kind == "bright-gain":
        S["gain"] = krng.uniform(12, 20)
    elif kind == "dark-gain":
        S["gain"] = krng.uniform(-20, -12)
    elif kind == "uneven-tgc":
        S["sliders"], S["lateral"] = krng.uniform(-12, 12, 8), krng.uniform(-6, 6, 5)
    elif kind == "dropout":
        S["drops"] = [(krng.uniform(-np.pi, np.pi), np.deg2rad(krng.uniform(15, 30)), krng.uniform(18, 30))
                      for _ in range(krng.integers(1, 4))]
        S["lateral_drop"] = krng.uniform(10, 20)
    elif kind == "poor-window":
        S["levels"].update(clutter=krng.uniform(-14, -8), clutter_mm=krng.uniform(30, 60), haze=krng.uniform(-24, -18))
        S["shadows"] = [(krng.uniform(-0.8, 0.8), krng.uniform(0.06, 0.14), krng.uniform(0.6, 0.95))
                        for _ in range(krng.integers(1, 3))]
    elif kind == "coarse-speckle":
        S.update(f=krng.uniform(1.4, 1.9), bw=krng.uniform(0.4, 0.5), density=krng.uniform(0.05, 0.15),
                 side_db=krng.uniform(-30, -25), aperture=krng.uniform(11, 14))
    if heart.extent + np.deg2rad(2) > S["half"] and kind not in ("narrow-sector", "off-axis"):
        S["half"] = min(heart.extent + np.deg2rad(2), np.deg2rad(55 if kind == "wide-sector" else 45))
    # pixel grid: square pixels (columns ``aspect`` times wider) with the fan inside the image
    H, W = size
    D, h = S["depth"], S["half"]
    top = S["top"] * H
    sp = max(D / (H - 1 - top), 2 * D * np.sin(h) / ((W - 1) * S["aspect"])) / S["fill"]
    S["dz"], S["dx"] = sp, sp * S["aspect"]
    X = (np.arange(W) - (W - 1) / 2 * (1 + S["centre"])) * S["dx"]
    Z = (np.arange(H) - top) * S["dz"]
    S["X"], S["Z"] = np.meshgrid(X, Z)
    return S


def _gain_curve(values, positions, at):
    return np.interp(at, positions, values)


class _Renderer:
    def __init__(self, heart, S, size, rng):
        self.h, self.S = heart, S
        H, W = size
        D, half = S["depth"], S["half"]
        self.nb = int(np.clip(0.8 * W, 96, 256))
        self.phi = np.linspace(-half, half, self.nb)
        k0 = 2 * S["f"] / _C  # round-trip carrier, cycles per mm
        sk = S["bw"] * k0 / 2.355
        self.k0, self.sk = k0, sk
        dz = 1 / (2.2 * (k0 + 4 * sk))
        self.K = 4
        self.nc = int(np.ceil(D / dz / self.K))
        self.nrf = self.nc * self.K
        self.rc = (np.arange(self.nc) + 0.5) * D / self.nc  # coarse rows, mm
        k = np.arange(self.nrf // 2 + 1) / D  # rfft frequencies, cycles per mm
        self.band = np.nonzero(np.abs(k - k0) <= 4 * sk)[0]
        G = np.exp(-0.5 * ((k[self.band] - k0) / sk) ** 2)
        self.nout = int(max(len(self.band), 2 * H))
        self.G = G.astype(np.complex64)
        self.scale = self.nout / np.sqrt(self.nrf * np.sum(G**2))
        centre = int(np.argmin(np.abs(k[self.band] - k0)))
        self.slots = (np.arange(len(self.band)) - centre) % self.nout
        self.rout = (np.arange(self.nout) + 0.5) * D / self.nout
        # the lateral beam: sigma in beams per output row, main lobe and side lobes
        lam = _C / S["f"]
        focus = S["focus"] * D
        w0 = lam * focus / S["aperture"] / 2.355
        sig_tx = np.sqrt(w0**2 + (S["aperture"] / 2.355 * (1 - self.rout / focus)) ** 2)  # fixed transmit focus
        sig_rx = lam * np.maximum(2.0, self.rout / S["aperture"]) / 2.355  # dynamic receive focus, F-number >= 2
        sig_mm = 1 / np.sqrt(1 / sig_tx**2 + 1 / sig_rx**2)  # two-way
        dphi = 2 * half / (self.nb - 1)
        self.sig = np.clip(sig_mm / (np.maximum(self.rout, 1.0) * dphi), 0.5, 32)
        self.levels = 2.0 ** np.arange(-1, 6)  # 0.5 .. 32 beams
        self.side = 10 ** (S["side_db"] / 20)
        # the polar coarse grid in world coordinates
        self.px = self.rc[None, :] * np.sin(self.phi)[:, None]
        self.pz = self.rc[None, :] * np.cos(self.phi)[:, None]
        # fixed per clip: scatterers, sparse mask, texture fields, tissue outside the grid
        shape = (self.nb, self.nrf)
        self.scat0 = rng.standard_normal(shape).astype(np.float32)
        self.mask = None
        if S["density"] < 1:
            self.mask = (rng.random(shape) < S["density"]).astype(np.float32) / np.sqrt(S["density"])
        smooth = lambda s: ndimage.gaussian_filter(rng.standard_normal((self.nb, self.nc)), s)  # noqa: E731
        self.bg_tex = smooth((3, 20))
        self.bg_tex /= self.bg_tex.std() + 1e-6
        self.myo_tex = smooth((1.0, 4))
        self.myo_tex /= self.myo_tex.std() + 1e-6
        self.trab_tex = smooth((1.0, 3))
        self.trab_tex /= self.trab_tex.std() + 1e-6
        self.layers = rng.uniform(-4, 4, 6)
        # gains along depth and across beams
        att_db = S["atten"] * S["f"] / 10  # dB per mm, round trip, in tissue
        self.att_np = att_db / 8.686
        slider_db = _gain_curve(S["sliders"], np.linspace(0, D, 8), self.rout)
        self.tgc = 10 ** ((S["tgc_frac"] * att_db * self.rout + slider_db) / 20)
        self.lat = 10 ** (_gain_curve(S["lateral"], np.linspace(-half, half, 5), self.phi) / 20)
        shadow = np.ones((self.nb, self.nc))
        for centre, width, strength in S["shadows"]:
            band = np.exp(-(((self.phi / half - centre) / width) ** 2))[:, None]
            shadow *= 1 - strength * band * _ramp((self.rc[None, :] - heart.chest) / 8)
        self.shadow = shadow

    def _reflectivity(self, f):
        """Amplitude reflectivity (linear) and blood mask on the polar coarse grid."""
        S, L = self.S, self.S["levels"]
        g = self.h.lookup(f, self.px, self.pz)
        code = g["code"]
        db = np.full(code.shape, L["bg"], np.float32) + L["bg_tex"] * self.bg_tex
        # incidence: |cos| of the angle between the beam and the wall normal (from the distance field)
        bx, bz = np.sin(self.phi)[:, None] * (-1 if self.h.mirror else 1), np.cos(self.phi)[:, None]
        norm = np.hypot(g["gx"], g["gz"]) + 1e-6
        cosi = np.abs(g["gx"] * bx + g["gz"] * bz) / norm
        myo = code == _MYO
        db = np.where(myo, L["myo_tex"] * self.myo_tex - L["aniso"] * (1 - cosi)
                      + L["spec"] * cosi**2 * (g["dist"] <= 1.5), db)
        blood = np.isin(code, (_LV, _LA, _POOL))
        db = np.where(blood, L["blood"] + 1.5 * self.bg_tex, db)
        db = np.where(code == _PAP, L["pap"] + L["myo_tex"] * self.myo_tex, db)
        trab = (code == _TRAB) & (self.trab_tex > 0.2)  # patchy echoes of trabeculae along the endocardium
        db = np.where(trab, L["trab"] + 3 * self.trab_tex, np.where(code == _TRAB, L["blood"] + 1.5 * self.bg_tex, db))
        blood |= code == _TRAB
        db = np.where(code == _WALL, L["wall"] + L["myo_tex"] * self.myo_tex - 0.5 * L["aniso"] * (1 - cosi), db)
        db = np.where(code == _PERI, L["peri"] * (0.4 + 0.6 * cosi), db)
        db = np.where(g["leaf"] & blood, L["leaf"], db)
        chest = self.rc[None, :] < self.h.chest
        layers = np.interp(self.rc, np.linspace(0, self.h.chest, 6), self.layers)[None, :]
        db = np.where(chest, L["chest"] + layers + 2 * self.bg_tex, db)
        wall_like = np.isin(code, (_MYO, _PERI, _WALL))
        for centre, width, loss in S["drops"]:
            arc = np.abs(np.angle(np.exp(1j * (g["th"] - centre)))) < width
            db = np.where(arc & (wall_like | (g["dist"] < g["Tl"] + 6)) & ~blood, db - loss, db)
        if S["lateral_drop"]:
            lat = myo & g["lateral"] & (cosi < 0.5)
            db = np.where(lat, db - S["lateral_drop"] * (1 - 2 * cosi), db)
        beyond = np.clip(self.rc[None, :] - self.h.chest, 0, None)
        clutter = L["clutter"] - 8.686 * beyond / L["clutter_mm"] + 3 * self.bg_tex
        db = np.maximum(db, np.where(self.rc[None, :] >= self.h.chest, clutter, -99))
        db = np.where(blood, np.maximum(db, L["haze"] + 3 * self.myo_tex), db)
        return (10 ** (db / 20)) * self.shadow, blood

    def frame(self, c, valve, rng):
        """Display grey in polar (beams, display rows) coordinates, 0..1."""
        S = self.S
        f = self.h.tissue(c, valve)
        amp, blood = self._reflectivity(f)
        alpha = np.where(blood, 0.3, 1.0) * self.att_np
        att = np.exp(-np.cumsum(alpha, axis=1) * (S["depth"] / self.nc))
        amp = np.repeat((amp * att).astype(np.float32), self.K, axis=1)
        beta = np.repeat(np.where(blood, 0.9, 0.3).astype(np.float32), self.K, axis=1)
        scat = np.sqrt(1 - beta**2) * self.scat0 + beta * rng.standard_normal(self.scat0.shape).astype(np.float32)
        if self.mask is not None:
            scat = scat * self.mask
        spec = np.fft.rfft(amp * scat, axis=1)[:, self.band] * self.G
        base = np.zeros((self.nb, self.nout), np.complex64)
        base[:, self.slots] = spec
        y = np.fft.ifft(base, axis=1).astype(np.complex64) * self.scale
        # the lateral beam, depth-dependent: blend of Gaussian blurs (L2-normalised) + side lobes
        blurs = []
        for s in self.levels:
            k = ndimage.gaussian_filter1d(np.eye(1, 129, 64)[0], s)
            n = 1 / np.sqrt(np.sum(k**2))
            blurs.append((ndimage.gaussian_filter1d(y.real, s, axis=0, mode="constant")
                          + 1j * ndimage.gaussian_filter1d(y.imag, s, axis=0, mode="constant")) * n)

        stack = np.stack(blurs)
        cols = np.arange(self.nout)

        def blend(sig):
            pos = np.clip(np.log2(sig) + 1, 0, len(self.levels) - 1)
            lo = np.floor(pos).astype(int)
            hi = np.minimum(lo + 1, len(self.levels) - 1)
            w = (pos - lo)[None, :]
            return (1 - w) * stack[lo, :, cols].T + w * stack[hi, :, cols].T

        field = blend(self.sig) + self.side * blend(np.minimum(4 * self.sig, 32))
        noise = 10 ** (S["noise_db"] / 20) * (rng.standard_normal(field.shape) + 1j * rng.standard_normal(field.shape))
        env = np.abs(field + noise) * self.tgc[None, :] * self.lat[:, None]
        # decimate (power mean) to about 1.5 samples per image row, then log compression and grey map
        kd = max(1, self.nout // int(1.5 * S["X"].shape[0]))
        n = self.nout // kd
        power = (env[:, : n * kd] ** 2).reshape(self.nb, n, kd).mean(2)
        db = 10 * np.log10(power + 1e-20)
        top = S["offset"] * S["dr"] - S["gain"]  # more gain: everything brighter
        v = np.clip((db - top + S["dr"]) / S["dr"], 0, 1)
        v = (1 - S["scurve"]) * v ** S["gamma"] + S["scurve"] * _ramp(v)
        return v.astype(np.float32), f


def _scan_convert(polar, S):
    """Polar (beams, rows) -> the image grid; 0 outside the fan."""
    nb, n = polar.shape
    X, Z = S["X"], S["Z"]
    r, phi = np.hypot(X, Z), np.arctan2(X, Z)
    fan = (Z >= 0) & (r <= S["depth"]) & (np.abs(phi) <= S["half"])
    coords = np.stack([(phi + S["half"]) / (2 * S["half"]) * (nb - 1), r / S["depth"] * n - 0.5])
    img = ndimage.map_coordinates(polar, coords, order=1, mode="nearest")
    return np.where(fan, img, 0.0), fan


# --- after the scanner: speckle reduction, overlays, JPEG, low resolution -------------------------------

def _strokes(img, rng, y, x, n, gh, level):
    """``n`` glyph-like blocks of strokes at (y, x), glyph height ``gh`` px."""
    H, W = img.shape
    t = max(1, gh // 6)
    for g in range(n):
        gx = x + int(g * gh * 0.75)
        for _ in range(rng.integers(2, 5)):
            y0, x0 = y + rng.integers(0, gh - t + 1), gx + rng.integers(0, gh // 2 + 1)
            if rng.random() < 0.5:
                img[max(y0, 0):min(y0 + t, H), max(x0, 0):min(x0 + gh // 2, W)] = level
            else:
                img[max(y0, 0):min(y0 + gh // 2, H), max(x0, 0):min(x0 + t, W)] = level


def _overlays(rng, S):
    """Burnt-in marks of one clip: (ecg (W,) row offsets or None, list of (mask, level)) on the image grid."""
    H, W = S["X"].shape
    img = np.full((H, W), -1.0, np.float32)
    gh = max(4, int(H * 0.03))
    for corner in range(rng.integers(2, 5)):  # text blocks in the corners and along the top
        y = int(rng.choice([0.01, 0.05, 0.09, 0.75, 0.8]) * H)
        x = int(rng.choice([0.01, 0.02, 0.75, 0.8]) * W)
        _strokes(img, rng, y, x, int(rng.integers(3, 8)), gh, rng.uniform(150, 255))
    # depth ruler: dots every 10 mm beside the right fan edge, ticks every 50
    X, Z = S["X"], S["Z"]
    level = rng.uniform(120, 255)
    dxpix = 1 / S["dx"]
    for d in np.arange(10, S["depth"], 10):
        phi = S["half"] + 3 / max(d, 1) + 2 / (d * dxpix)
        x, z = d * np.sin(phi), d * np.cos(phi)
        i = int(round(z / S["dz"] + S["top"] * H))
        j = int(round(x / S["dx"] + (W - 1) / 2 * (1 + S["centre"])))
        r = 1 if int(d) % 50 else 2
        img[max(i - r + 1, 0):min(i + r, H), max(j - r + 1, 0):min(j + r + 2 * (r - 1), W)] = level
    fx = int(rng.integers(1, 3))  # focus marker: a small triangle at the focus depth on the left
    fz = int(round(S["focus"] * S["depth"] / S["dz"] + S["top"] * H))
    for k in range(max(2, gh // 2)):
        if 0 <= fz + k < H and 0 <= fz - k < H:
            img[fz - k:fz + k + 1, fx + k] = 200
    if rng.random() < 0.6:  # a grey bar
        x0 = int(rng.uniform(0.9, 0.95) * W)
        y0, y1 = int(0.2 * H), int(0.6 * H)
        img[y0:y1, x0:x0 + max(2, W // 40)] = np.linspace(255, 0, y1 - y0)[:, None]
    if rng.random() < 0.5:  # the fan outline
        r, phi = np.hypot(X, Z), np.arctan2(X, Z)
        edge = ((np.abs(np.abs(phi) - S["half"]) * r < 0.7 * S["dx"]) & (r <= S["depth"])) | \
               ((np.abs(r - S["depth"]) < 0.7 * S["dz"]) & (np.abs(phi) <= S["half"]))
        img[edge] = rng.uniform(40, 120)
    cx = int((W - 1) / 2 * (1 + S["centre"]) - rng.uniform(0.08, 0.15) * W)  # probe orientation mark
    img[max(int(S["top"] * H), 0):int(S["top"] * H) + gh, max(cx, 0):max(cx, 0) + gh // 2 + 1] = 255
    # the ECG trace along the bottom: P wave, QRS, T wave
    ph = np.mod(np.arange(W) / (rng.uniform(0.3, 0.6) * W) + rng.uniform(), 1.0)
    wave = 0.15 * np.exp(-(((ph - 0.15) / 0.04) ** 2)) + np.exp(-(((ph - 0.3) / 0.008) ** 2)) \
        - 0.25 * np.exp(-(((ph - 0.32) / 0.01) ** 2)) + 0.3 * np.exp(-(((ph - 0.55) / 0.06) ** 2))
    ecg = (rng.uniform(0.86, 0.95) * H - wave * rng.uniform(0.04, 0.08) * H, rng.uniform(150, 255))
    return img, ecg


def _draw(frame, marks, ecg, t, n_frames):
    out = np.where(marks >= 0, marks, frame)
    if ecg is not None:
        ys, level = ecg
        H, W = frame.shape
        for x in range(1, W):
            a, b = sorted((ys[x - 1], ys[x]))
            out[max(int(a), 0):min(int(b) + 1, H), x] = level
        cursor = int((t + 0.5) / n_frames * (W - 1))  # the frame marker
        out[int(0.82 * H):, cursor] = 255
    return out


def _jpeg(img, quality):
    import warnings

    import torch

    x = torch.from_numpy(np.clip(np.rint(img), 0, 255).astype(np.uint8)[None].copy())
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its image codecs (moving to TorchCodec)
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import decode_jpeg, encode_jpeg

        return decode_jpeg(encode_jpeg(x, quality=int(quality)))[0].numpy().astype(np.float32)


def _low_res(img, factor):
    H, W = img.shape
    h, w = max(int(H * factor), 16), max(int(W * factor), 16)
    blurred = ndimage.gaussian_filter(img, 0.45 / factor)
    down = np.mgrid[0:h, 0:w] * np.array([(H - 1) / (h - 1), (W - 1) / (w - 1)])[:, None, None]
    small = ndimage.map_coordinates(blurred, down, order=1)
    back = np.mgrid[0:H, 0:W] * np.array([(h - 1) / (H - 1), (w - 1) / (W - 1)])[:, None, None]
    return ndimage.map_coordinates(small, back, order=1)


# --- the clip ----------------------------------------------------------------------------------------

def _contraction(phase, t_es):
    """0 at end-diastole (phase 0) .. 1 at end-systole (phase ``t_es``) and back."""
    p = np.mod(phase, 1.0)
    return np.where(p < t_es, 0.5 - 0.5 * np.cos(np.pi * p / t_es), 0.5 + 0.5 * np.cos(np.pi * (p - t_es) / (1 - t_es)))


def stress_run(seed: int, n_frames: int = 4, size=(256, 256), kind: str = "renderer"):
    """One stress clip: frames float32 (T, H, W) grey 0..255, labels uint8 (T, H, W)."""
    if kind not in KINDS:
        raise ValueError(f"unknown stress kind '{kind}'; known: {', '.join(KINDS)}")
    size = tuple(int(s) for s in size)
    seed = int(seed)
    rng, scan_rng, noise_rng, post_rng = (np.random.default_rng([seed, k]) for k in range(4))
    krng = np.random.default_rng([seed, 4, KINDS.index(kind)])
    heart = _Heart(rng, krng, kind)
    S = _scanner(scan_rng, krng, kind, heart, size)
    r = _Renderer(heart, S, size, noise_rng)
    t_es = rng.uniform(0.3, 0.4)
    cycles = rng.uniform(1.0, 1.6) if n_frames > 1 else 0.0
    phase = rng.uniform() + np.arange(n_frames) * cycles / max(n_frames, 1)
    contraction = _contraction(phase, t_es)
    valve = ((np.mod(phase, 1) > t_es + 0.05) & (np.mod(phase, 1) < 0.95)).astype(float)
    smooth = dict(median=int(post_rng.integers(3, 6)), blur=post_rng.uniform(0.8, 1.5),
                  persist=post_rng.uniform(0.3, 0.6))
    marks, ecg = _overlays(post_rng, S)
    quality, factor = int(post_rng.integers(5, 31)), post_rng.uniform(0.3, 0.5)
    frames = np.empty((n_frames, *size), np.float32)
    labels = np.empty((n_frames, *size), np.uint8)
    previous = None
    for t in range(n_frames):
        polar, f = r.frame(contraction[t], valve[t], noise_rng)
        img, fan = _scan_convert(polar, S)
        img = img * 255.0
        if kind == "smoothed":
            img = ndimage.gaussian_filter(ndimage.median_filter(img, smooth["median"]), smooth["blur"])
            if previous is not None:
                img = (1 - smooth["persist"]) * img + smooth["persist"] * previous
            previous = img
            img = np.where(fan, img, 0.0)
        elif kind == "low-res":
            img = np.where(fan, _low_res(img, factor), 0.0)
        elif kind == "overlays":
            img = _draw(img, marks, ecg, t, n_frames)
        img = np.clip(np.rint(img), 0, 255)
        if kind == "jpeg":
            img = _jpeg(img, quality)
        frames[t] = img
        code = heart.lookup({"code": f["code"]}, S["X"], S["Z"])["code"]
        code = np.where((code == _PAP) | (code == _TRAB), _LV, code)
        labels[t] = np.where(fan & (code <= _LA), code, 0)
    return frames, labels


def score_cases(p, seed, runs, frames, size, kind):
    """(prediction, truth, {}) of ``runs`` stress clips of ``kind``; ``p`` a Predictor."""
    for r in range(runs):
        x, y = stress_run(seed + r, frames, (size, size), kind)
        yield p.predict(x), y, {}
