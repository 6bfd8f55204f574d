"""Synthetic 2D+t apical echocardiography (2- and 4-chamber views) with CAMUS-style labels.

Anatomy is analytic, in millimetres, in a frame attached to the left ventricle (LV): ``a`` runs
along the long axis from the epicardial apex (``a = 0``, near the transducer) to the mitral plane,
``b`` across it (positive towards the lateral wall). The LV cavity is a half egg cut by the mitral
plane, the myocardium a band of varying thickness around it, open at the base (a horseshoe), the
left atrium (LA) an ellipse below the mitral plane. The 4-chamber view adds the right ventricle
and atrium beside them (blood pools labelled background). Over the cycle the cavity shortens and
narrows, the wall thickens (band area conserved), the mitral plane moves towards the fixed apex
and the LA fills during systole.

The image is formed along the beams, in polar (beam, depth) coordinates: reflectivity of each
tissue times complex Gaussian scatterers that move with the tissue (partly renewed each frame,
mostly in blood), a point-spread function (Gaussian, along depth and across beams), specular
reflection at boundaries facing the beam, attenuation accumulated along the beam, electronic
noise, imperfect time-gain compensation, log compression to a random gain and dynamic range, and
finally scan conversion to the Cartesian fan. Outside the fan the image is 0.

Kinds (``KINDS``; ``generate_clip(..., kind=...)``, ``training_frames``, ``sample_run``, ``score_cases``):

    standard    version 1's clips (the above; unchanged, bit for bit): sector 60-90 deg aimed to hold
                the heart, depth 97-115 % of where the LA ends (the LA at the bottom edge), fan
                stretched to fill the image.
    randomised  the same patient, view and motion for a seed (its extra draws come after the
                standard patient, view and timing; the speckle realisation differs), with what real
                acquisitions vary drawn per clip:
                - sector 40-110 deg wherever the heart is (narrow ones cut the walls); the probe
                  3-20 mm further back in 30 %;
                - depth 80-280 mm independent of the LA: its lower end at 85-100 % of the depth
                  (40 %), at 50-85 % (45 %), or the depth ends inside the LA, 15-60 % of its length
                  cut off (15 %); a 2CH pool beside the LA (unlabelled) added in half of those without;
                - image grid: near-square pixels (column/row 0.86-1.25) with the fan as large as fits
                  times 0.65-1.0 (in 40 %), or stretched to fill the image (30 %); the apex 0-8 % of
                  the height down (50 %), its column +-4 % off centre;
                - frequency 1.5-4.5 MHz (1.4-2.8 beyond 180 mm), attenuation x0.7-1.3, speckle size
                  (PSF) 0.8-3.5 beams by 0.6-1.4 x 3/MHz samples, K-distributed (sparse) scatterers
                  in 30 %; specular strength 0.2-3;
                - tissue levels: myocardium -26..-10 dB, blood 16-36 dB under it, tissue outside the
                  heart 3-16 dB under it, pericardium 0-14 dB over it, texture 2-10 dB, haze in blood
                  x1-3 (40 %); myocardium 0-10 dB darker where it runs along the beams;
                - TGC leaving -3..+22 dB of the attenuation over the depth, sliders -10..+10 dB at 6
                  depths (x0.2-1), half to all of the excess gain over blood taken back, lateral gain
                  -6..+6 dB at 5 angles (50 %);
                - gain set on the first frame: the myocardium at 0.6-1.0 of a 30-75 dB dynamic range
                  (no more than 3 % of the sector over 1.15), or over-gained at 1.05-1.35 (10 %); grey
                  map gamma 0.6-1.5, and a random monotone curve through 6 knots (50 %);
                - electronic noise 0-25 dB under the blood's speckle at the LV; near-field clutter
                  -45..-10 dB decaying over 5-40 mm (50 %);
                - wall dropouts: 1-3 blobs (6-16 mm, 50-95 % of the signal lost) on the wall (60 %),
                  besides the standard one; rib shadows: 1-2 (40-95 % lost from 5-35 mm) (30 %);
                - after the display: frame persistence 10-60 % (40 %), a 3 px median (25 %), blur
                  0.3-1.5 px (40 %), burnt-in unlabelled overlays (50 %: ECG trace, corner text,
                  depth ruler, focus marker), rendered at 30-65 % of the size and scaled back
                  (30 %), JPEG quality 5-60 (35 %).
                Labels are the same anatomy sampled on the same (randomised) pixel grid as the image.

Frames are ``float32`` display grey 0..255, labels ``uint8`` (0 background, 1 LV endocardium =
LV cavity, 2 myocardium, 3 left atrium); both shaped ``(frames, height, width)``. The fan apex
(transducer) is at the top centre (randomised: ``info["apex_px"]``); rows go with depth.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage

from .seeds import HELD_OUT_SEED_BASE  # noqa: F401  (seeds at or above it are never trained on)

VIEWS = ("2CH", "4CH")
CLASSES = ("background", "LV endocardium", "myocardium", "left atrium")
# tissue codes of the internal map; codes 1..3 are the label classes
_BG, _LV, _MYO, _LA, _POOL, _WALL, _PERI = range(7)
KINDS = ("standard", "randomised")


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _contraction(phase, t_es):
    """LV contraction 0 (end-diastole, phase 0) .. 1 (end-systole, phase ``t_es``) over cycles.

    Systole is a half cosine; diastole is rapid filling (E wave), diastasis and the atrial kick (A
    wave). The minimum at phase 0 and maximum at ``t_es`` are unique within a cycle.
    """
    p = np.mod(phase, 1.0)
    systole = 0.5 - 0.5 * np.cos(np.pi * np.clip(p / t_es, 0, 1))
    diastole = 1 - 0.72 * _smoothstep((p - t_es) / 0.18) - 0.28 * _smoothstep((p - 0.8) / 0.2)
    return np.where(p < t_es, systole, diastole)


def _valve_open(phase, t_es):
    """Mitral valve opening 0 (closed) .. 1 (open): opens after isovolumic relaxation, closes at ED."""
    p = np.mod(phase, 1.0)
    return _smoothstep((p - t_es - 0.03) / 0.05) * (1 - _smoothstep((p - 0.94) / 0.05))


def _setup(rng, size, view):
    """Draw one patient, view and scanner setting. Lengths in mm, angles in radians."""
    if view is None:
        view = VIEWS[rng.integers(2)]
    if view not in VIEWS:
        raise ValueError(f"unknown view '{view}'; known: {', '.join(VIEWS)}")
    four = view == "4CH"
    P = dict(view=view, mirror=bool(rng.random() < 0.1), size=size)
    L = rng.uniform(62, 92)  # ED apex-to-mitral-plane length of the cavity
    P.update(kb=rng.uniform(0.3, 0.5), W0=rng.uniform(18, 26), T0=rng.uniform(7, 10.5),
             p=rng.uniform(1.6, 2.3), fs=rng.uniform(0.22, 0.45), ls=rng.uniform(0.1, 0.2))
    P["A0"] = L / (1 + P["kb"])
    P["harm"] = rng.uniform(-0.13, 0.13, (2, 2))  # thickness harmonics (cos, sin) x (k=1, 2)
    P["apex_thin"] = rng.uniform(0.0, 0.35)
    P["peri_arc"] = (rng.uniform(0.2, 1.8), np.cos(rng.uniform(0.5, 1.6)))  # bright: centre, cos(half-width)
    wb = P["W0"] * np.sqrt(1 - P["kb"] ** 2)  # ED cavity half-width at the mitral plane
    P.update(kla=rng.uniform(0.55, 0.75), Ala=rng.uniform(17, 27), la_grow=rng.uniform(0.15, 0.4),
             bla=rng.uniform(-4, 4) + (3 if four else 0))
    P["Wla"] = wb * rng.uniform(0.85, 1.1) / np.sqrt(1 - P["kla"] ** 2)
    if four:
        P.update(Arv=rng.uniform(0.45, 0.65) * L, Wrv=rng.uniform(16, 24), rv_off=rng.uniform(0.2, 0.5),
                 dtv=rng.uniform(3, 9), rv_t=rng.uniform(2.5, 4.5), Ara=rng.uniform(18, 26),
                 Wra=rng.uniform(16, 23), kra=rng.uniform(0.5, 0.7))
    elif rng.random() < 0.5:  # a partial pool beside the LA (descending aorta, appendage, sinus)
        P["pool"] = (rng.uniform(-1.2, 1.2), rng.uniform(5, 11))
    tau = np.deg2rad(rng.uniform(-4, 16) if four else rng.uniform(-12, 12))
    P.update(u=(np.sin(tau), np.cos(tau)), v=(np.cos(tau), -np.sin(tau)),
             ox=rng.uniform(-2, 14) if four else rng.uniform(-8, 8), oy=rng.uniform(12, 28))
    # aim the sector: the ED epicardium and the LA sides inside, the LV a bit to the side in 4CH
    ac, t, Te = P["A0"] + P["T0"], np.linspace(0.1, np.pi / 2, 8), 1.3 * P["T0"]
    ab = ac + P["kb"] * P["A0"]
    pa = np.tile(np.r_[ac - (P["A0"] + Te) * np.cos(t), ab, ab + P["kla"] * P["Ala"]], 2)
    pb = np.r_[(P["W0"] + Te) * np.sin(t), wb + Te, P["Wla"]]
    pb = np.r_[pb, -pb] + np.tile(np.r_[np.zeros(9), P["bla"]], 2)
    target, margin = (rng.uniform(0.05, 0.2) if four else 0.0), np.deg2rad(rng.uniform(1, 5))

    def angles():  # of the points seen from the transducer, radians from the sector's axis
        return np.arctan2(P["ox"] + pa * P["u"][0] + pb * P["v"][0], P["oy"] + pa * P["u"][1] + pb * P["v"][1])

    for _ in range(30):
        for _ in range(3):
            ang = angles()
            P["ox"] -= 0.8 * np.tan(0.5 * (ang.min() + ang.max()) - target) * (P["oy"] + ac)
        need = np.abs(angles()).max() + margin
        if need < np.deg2rad(45):
            break
        P["oy"] += 2.0  # too wide near the transducer: step back
    P["half"] = float(np.clip(max(np.deg2rad(rng.uniform(30, 45)), need), 0, np.deg2rad(45)))
    bottom = P["oy"] + (L + P["T0"]) * np.cos(tau) + P["Ala"] * (1 + P["kla"])
    P["depth"] = float(np.clip(bottom * rng.uniform(0.97, 1.15), 110, 200))
    # scanner and image formation
    f_mhz = rng.uniform(1.7, 3.5)
    P.update(alpha=f_mhz * 0.0115 * rng.uniform(0.8, 1.2), tgc_frac=rng.uniform(0.6, 0.95),
             tgc_bumps=rng.uniform(-4, 4, 6), noise_db=rng.uniform(-80, -62),
             psf=(rng.uniform(1.2, 2.4), rng.uniform(0.9, 1.8)), spec=rng.uniform(0.4, 2.0),
             dr=rng.uniform(42, 62), gain=rng.uniform(-6, 4), gamma=rng.uniform(0.8, 1.25),
             db=np.array([rng.uniform(-30, -20), rng.uniform(-50, -38), rng.uniform(-22, -14),
                          rng.uniform(-50, -38), rng.uniform(-50, -38), rng.uniform(-26, -17),
                          rng.uniform(-10, -2)]), leaf_db=rng.uniform(0, 8), edge_db=rng.uniform(0, 15),
             tex_db=rng.uniform(3, 8), clutter_db=rng.uniform(-40, -18), clutter_mm=rng.uniform(6, 25))
    P["dropout"] = (rng.choice([-1, 1]), rng.uniform(0.6, 1.4)) if rng.random() < 0.4 else None
    P["shadow"] = (rng.uniform(-0.8, 0.8), rng.uniform(0.04, 0.12), rng.uniform(0.3, 0.8)) \
        if rng.random() < 0.25 else None
    return P


def _state(P, c):
    """LV cavity semi-axes A (towards apex), W, mean wall thickness T, centre a_c and mitral plane
    a_b (mm along the axis) at contraction c. Band area ~ (A+T)(W+T) - AW is conserved."""
    A, W = P["A0"] * (1 - P["ls"] * c), P["W0"] * (1 - P["fs"] * c)
    m = (P["A0"] + P["T0"]) * (P["W0"] + P["T0"]) - P["A0"] * P["W0"]
    T = 0.5 * (np.sqrt((A + W) ** 2 + 4 * m) - (A + W))
    ac = T * _thick(P, 0.0) + A  # the epicardial apex stays at a = 0
    return A, W, T, ac, ac + P["kb"] * A


def _thick(P, th):
    """Relative wall thickness at angle ``th`` around the cavity centre (0 towards the apex)."""
    (c1, c2), (s1, s2) = P["harm"]
    h = 1 + c1 * np.cos(th) + c2 * np.cos(2 * th) + s1 * np.sin(th) + s2 * np.sin(2 * th)
    return h * (1 - P["apex_thin"] * np.exp(-((th / 0.5) ** 2)))


def _ell(a, b, ca, cb, A, B):
    return ((a - ca) / A) ** 2 + ((b - cb) / B) ** 2


def _anatomy(P, c, x, y, valve=None):
    """Tissue codes at world points ``x`` (lateral, mm) and ``y`` (depth, mm) at contraction c.

    With ``valve`` (mitral opening 0..1) also returns a leaflet mask and the points' material
    positions (x, y) at end-diastole, where their scatterers come from.
    """
    xs = -x if P["mirror"] else x
    dx, dy = xs - P["ox"], y - P["oy"]
    a, b = dx * P["u"][0] + dy * P["u"][1], dx * P["v"][0] + dy * P["v"][1]
    A, W, T, ac, ab = _state(P, c)
    da = a - ac
    th = np.arctan2(b, -da)
    Th = T * _thick(P, th)
    pe = np.where(da < 0, P["p"], 2.0)

    def shell(d):  # implicit function of the epicardium grown by d mm
        return np.abs(da / (A + Th + d)) ** pe + (b / (W + Th + d)) ** 2

    base, epi = a <= ab, shell(0) <= 1
    tis = np.zeros(x.shape, np.uint8)
    g = 1 + P["la_grow"] * c
    Ala, Wla = P["Ala"] * g, P["Wla"] * np.sqrt(g)
    la_c = ab + P["kla"] * Ala
    f_la_wall = _ell(a, b, la_c, P["bla"], Ala + 2.5, Wla + 2.5)
    tis[(f_la_wall <= 1) & ~base] = _WALL
    tis[(shell(2.0) <= 1) & (a <= ab + 3) & (np.cos(th - P["peri_arc"][0]) > P["peri_arc"][1])] = _PERI
    if P["view"] == "4CH":
        atv, s = ab - P["dtv"], 1 - 0.2 * c
        Arv, Wrv = P["Arv"] * s, P["Wrv"] * s
        arc, brc = atv - 0.3 * Arv, -(W + T + Wrv * P["rv_off"])
        free = shell(1.5) > 1
        tis[(_ell(a, b, arc, brc, Arv + P["rv_t"], Wrv + P["rv_t"]) <= 1) & (a <= atv + 2) & free] = _WALL
        tis[(_ell(a, b, arc, brc, Arv, Wrv) <= 1) & (a <= atv) & free] = _POOL
        Ara, Wra = P["Ara"] * g, P["Wra"] * np.sqrt(g)
        f_ra = _ell(a, b, atv + P["kra"] * Ara, brc - 2, Ara, Wra)
        tis[(f_ra <= 1.15) & (a > atv - 1) & (f_la_wall > 1) & ~epi] = _WALL
        tis[(f_ra <= 1) & (a > atv) & (f_la_wall > 1.1) & ~epi] = _POOL
    elif "pool" in P:
        ang, r = P["pool"]
        pa, pb = la_c + 1.15 * Ala * np.cos(ang), P["bla"] + 1.15 * Wla * np.sin(ang)
        tis[(_ell(a, b, pa, pb, r, r) <= 1) & (f_la_wall > 1)] = _POOL
    tis[epi & base] = _MYO
    tis[(np.abs(da / A) ** pe + (b / W) ** 2 <= 1) & base] = _LV
    tis[(_ell(a, b, la_c, P["bla"], Ala, Wla) <= 1) & ~base] = _LA
    if valve is None:
        return tis
    # mitral leaflets from the annulus: closed (bulging slightly into the LA) .. open (to the apex)
    psi = np.deg2rad(-10 + 95 * valve)
    wb = W * np.sqrt(1 - P["kb"] ** 2)
    leaf = np.zeros(x.shape, bool)
    for side, length in ((-1, 1.12 * wb), (1, 0.92 * wb)):
        p0 = np.array([ab, side * wb])
        d = np.array([-np.sin(psi), -side * np.cos(psi)])
        t = np.clip((a - p0[0]) * d[0] + (b - p0[1]) * d[1], 0, length)
        leaf |= np.hypot(a - p0[0] - t * d[0], b - p0[1] - t * d[1]) < 0.7
    # material position: scale the LV and its wall towards the end-diastolic shape, fading outside
    A0, W0, T0, ac0, _ = _state(P, 0.0)
    Th0 = T0 * _thick(P, th)
    w = np.exp(-4 * np.clip(np.sqrt(shell(0)) - 1, 0, None))
    a0 = a + w * (ac0 - ac + da * ((A0 + Th0) / (A + Th) - 1))
    b0 = b + w * b * ((W0 + Th0) / (W + Th) - 1)
    x0 = P["ox"] + a0 * P["u"][0] + b0 * P["v"][0]
    y0 = P["oy"] + a0 * P["u"][1] + b0 * P["v"][1]
    return tis, leaf, (-x0 if P["mirror"] else x0), y0


class _Scanner:
    """Polar beam grid, per-clip random fields, and the scan conversion to the image grid."""

    def __init__(self, P, rng):
        self.P = P
        H, Wd = P["size"]
        self.nb, self.ns = max(64, Wd // 2), int(1.25 * H)
        self.phi = np.linspace(-P["half"], P["half"], self.nb)[:, None]  # (beams, 1)
        self.r = np.linspace(0, P["depth"], self.ns)[None, :]  # (1, samples) mm
        self.x, self.y = self.r * np.sin(self.phi), self.r * np.cos(self.phi)
        shape = (self.nb, self.ns)
        self.scat = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
        self.tex = ndimage.gaussian_filter(rng.standard_normal(shape), (2.0, 4.0))
        self.tex /= self.tex.std() + 1e-6
        smooth = ndimage.gaussian_filter(rng.standard_normal((2, *shape)), (0, 4.0, 12.0))
        smooth /= smooth.std(axis=(1, 2), keepdims=True) + 1e-6
        # tissue outside the heart: patchy, darker towards the sector edges (lung); haze in blood
        self.bg_db = 0.75 * P["tex_db"] * smooth[0] - P["edge_db"] * (np.abs(self.phi) / P["half"]) ** 4
        self.haze_db = 3.0 * smooth[1]
        r = self.r[0]
        bumps = np.interp(r, np.linspace(0, P["depth"], 6), P["tgc_bumps"])
        self.tgc = np.exp(P["tgc_frac"] * P["alpha"] * r + bumps / 20 * np.log(10))[None, :]
        # image grid: fan apex at the top centre; anisotropic pixels so the fan fills the image
        self.dy = P["depth"] / (H - 1) * rng.uniform(1.0, 1.06)
        self.dx = 2 * P["depth"] * np.sin(P["half"]) / (Wd - 1) * rng.uniform(1.0, 1.08)
        X = (np.arange(Wd) - (Wd - 1) / 2) * self.dx
        Y = np.arange(H) * self.dy
        self.X, self.Y = np.meshgrid(X, Y)
        rr, pp = np.hypot(self.X, self.Y), np.arctan2(self.X, self.Y)
        self.fan = (rr <= P["depth"]) & (np.abs(pp) <= P["half"])
        self.coords = np.stack([(pp + P["half"]) / (2 * P["half"]) * (self.nb - 1), rr / P["depth"] * (self.ns - 1)])
        gain = np.ones(shape)
        if P["dropout"] is not None:  # weak lateral (or anterior) wall: a blob of lost signal
            side, depth_scale = P["dropout"]
            A, W, T, ac, _ = _state(P, 0.0)
            xw = P["ox"] + ac * P["u"][0] + side * (W + T) * P["v"][0]
            yw = P["oy"] + ac * P["u"][1] + side * (W + T) * P["v"][1]
            xw = -xw if P["mirror"] else xw
            bi = (np.arctan2(xw, yw) + P["half"]) / (2 * P["half"]) * (self.nb - 1)
            si = np.hypot(xw, yw) * depth_scale / P["depth"] * (self.ns - 1)
            ib, isa = np.arange(self.nb)[:, None], np.arange(self.ns)[None, :]
            blob = np.exp(-(((ib - bi) / 5) ** 2 + ((isa - si) / 25) ** 2))
            gain *= 1 - 0.85 * blob
        if P["shadow"] is not None:  # rib or lung shadow: beams losing signal below some depth
            centre, width, strength = P["shadow"]
            band = np.exp(-(((self.phi / P["half"] - centre) / width) ** 2))
            gain *= 1 - strength * band * _smoothstep((self.r - 15) / 10)
        self.gain = gain

    def _extra_db(self, tis):
        """Reflectivity added to the tissue's (dB on the beam grid); none in standard clips."""
        return None

    def _gain(self, env_db, tis):
        """The display's gain (dB): the top of the dynamic range."""
        return self.P["gain"]

    def frame(self, c, valve, rng):
        """Display grey (H, W) float32 and labels (H, W) uint8 at contraction c, valve opening."""
        P = self.P
        tis, leaf, x0, y0 = _anatomy(P, c, self.x, self.y, valve)
        blood = np.isin(tis, (_LV, _LA, _POOL))
        # scatterers follow the tissue (looked up at the end-diastolic position), renewed in blood
        bi = np.rint((np.arctan2(x0, y0) + P["half"]) / (2 * P["half"]) * (self.nb - 1)).astype(int)
        si = np.rint(np.hypot(x0, y0) / P["depth"] * (self.ns - 1)).astype(int)
        bi, si = np.clip(bi, 0, self.nb - 1), np.clip(si, 0, self.ns - 1)
        fresh = rng.standard_normal((4, *tis.shape)).astype(np.float32)  # new scatterers, noise
        beta = np.where(blood, 0.85, 0.3)
        scat = np.sqrt(1 - beta**2) * self.scat[bi, si] + beta * (fresh[0] + 1j * fresh[1])
        # reflectivity in dB: tissue class level + texture (myocardial texture moves with the tissue)
        tex = np.where(blood, self.haze_db, self.tex[bi, si] * P["tex_db"] / 2)
        ref_db = P["db"][tis] + np.where(tis == _BG, self.bg_db, tex)
        extra = self._extra_db(tis)
        if extra is not None:
            ref_db = ref_db + extra
        ref_db = np.where(leaf, np.maximum(ref_db, P["db"][_MYO] + P["leaf_db"]), ref_db)
        ref_db = np.maximum(ref_db, P["clutter_db"] - 20 * np.log10(np.e) * self.r / P["clutter_mm"])
        amp = 10 ** (ref_db / 20)
        spec = P["spec"] * np.abs(np.gradient(ndimage.gaussian_filter1d(amp, 1.0, axis=1), axis=1))
        field = amp * scat + spec * (0.6 + 0.4 * np.abs(scat))
        field = ndimage.gaussian_filter(field.real, P["psf"]) + 1j * ndimage.gaussian_filter(field.imag, P["psf"])
        alpha = np.where(blood, 0.2, 1.0) * P["alpha"]  # Np/mm, round trip; blood attenuates less
        atten = np.exp(-np.cumsum(alpha, axis=1) * (P["depth"] / (self.ns - 1))) * self.gain
        noise = 10 ** (P["noise_db"] / 20) * (fresh[2] + 1j * fresh[3])
        env = np.abs(field * atten + noise) * self.tgc
        env_db = 20 * np.log10(env + 1e-12)
        disp = np.clip((env_db - self._gain(env_db, tis) + P["dr"]) / P["dr"], 0, 1) ** P["gamma"]
        img = ndimage.map_coordinates(disp.astype(np.float32), self.coords, order=1, mode="nearest")
        img = np.where(self.fan, img * 255.0, 0.0).astype(np.float32)
        lab = _anatomy(P, c, self.X, self.Y)
        lab = np.where(self.fan & (lab <= _LA), lab, 0).astype(np.uint8)
        return img, lab


# --- the "randomised" kind: what real acquisitions vary (drawn after the standard clip's patient,
# view and timing, so a seed keeps its anatomy and motion) ---

_FONT = {  # 3x5 digits and a few capitals for burnt-in text (rows top to bottom)
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001010010010",
    "8": "111101111101111", "9": "111101111001111", "H": "101101111101101", "z": "000111010100111",
    "M": "101111111101101", "C": "111100100100111", "G": "111100101101111", "A": "010101111101101",
    "P": "111101111100100", "R": "110101110101101", "L": "100100100100111", "%": "101001010100101",
    ".": "000000000000010", ":": "000010000010000", " ": "000000000000000", "-": "000000111000000",
}


def _random_look(rng, P):
    """Draw the randomised scanner, window and display of one clip; updates ``P`` in place and
    returns the other settings (used by ``_RandomScanner`` and ``_finish``)."""
    H, Wd = P["size"]
    if rng.random() < 0.3:  # the probe further back (the heart smaller and higher up)
        P["oy"] += rng.uniform(3, 20)
    if P["view"] == "2CH" and "pool" not in P and rng.random() < 0.5:
        P["pool"] = (rng.uniform(-1.2, 1.2), rng.uniform(5, 11))  # an unlabelled pool beside the LA
    P["half"] = float(np.deg2rad(rng.uniform(20, 55)))  # sector 40-110 degrees, wherever the heart is
    L = P["A0"] * (1 + P["kb"])
    bottom = P["oy"] + (L + P["T0"]) * P["u"][1] + P["Ala"] * (1 + P["kla"])  # about where the LA ends
    u = rng.random()
    if u < 0.15:  # the depth ends inside the LA (15-60 % of its length cut off)
        depth = bottom - rng.uniform(0.15, 0.6) * 2 * P["Ala"]
    else:  # the LA ends near the bottom (40 %) or anywhere up to half-way down
        depth = bottom / (rng.uniform(0.85, 1.0) if u < 0.55 else rng.uniform(0.5, 0.85))
    P["depth"] = float(np.clip(depth, 80, 280))
    f_mhz = rng.uniform(1.5, 4.5) if P["depth"] < 180 else rng.uniform(1.4, 2.8)
    myo = rng.uniform(-26, -10)
    blood = myo - rng.uniform(16, 36)
    alpha = f_mhz * 0.0115 * rng.uniform(0.7, 1.3)  # Np/mm round trip
    residual_db = rng.uniform(-3, 22)  # attenuation the TGC leaves over the whole depth (+: darker deep)
    dr = rng.uniform(30, 75)
    P.update(alpha=alpha, tgc_frac=1 - residual_db / 8.686 / (alpha * P["depth"]),
             tgc_bumps=rng.uniform(-10, 10, 6) * rng.uniform(0.2, 1.0),
             psf=(rng.uniform(0.8, 3.5), rng.uniform(0.6, 1.4) * 3.0 / f_mhz), spec=rng.uniform(0.2, 3.0),
             dr=dr, gain=None, gamma=rng.uniform(0.6, 1.5),
             db=np.array([myo - rng.uniform(3, 16), blood, myo, blood + rng.uniform(-4, 4),
                          blood + rng.uniform(-4, 6), myo - rng.uniform(-4, 8), myo + rng.uniform(0, 14)]),
             leaf_db=rng.uniform(-4, 10), edge_db=rng.uniform(0, 20), tex_db=rng.uniform(2, 10),
             clutter_db=rng.uniform(-45, -10) if rng.random() < 0.5 else -80.0, clutter_mm=rng.uniform(5, 40))
    # electronic noise from 25 dB under to as strong as the blood's speckle (after the PSF and the
    # attenuation down to the LV's centre)
    r_lv = P["oy"] + P["A0"] + P["T0"]
    P["noise_db"] = (blood - 10 * np.log10(4 * np.pi * P["psf"][0] * P["psf"][1]) - 8.686 * alpha * r_lv
                     + rng.uniform(-25, 0))
    over_gain = rng.random() < 0.1  # the myocardium saturates, the cavity fills with grey
    look = dict(
        over_gain=over_gain, wall=rng.uniform(1.05, 1.35) if over_gain else rng.uniform(0.6, 1.0),
        lateral_db=rng.uniform(-6, 6, 5) if rng.random() < 0.5 else np.zeros(5),
        blobs=[(rng.uniform(-1.7, 1.7), rng.uniform(0.5, 0.95), rng.uniform(6, 16))
               for _ in range(rng.integers(1, 4) if rng.random() < 0.6 else 0)],
        ribs=[(rng.uniform(-1, 1), rng.uniform(0.04, 0.15), rng.uniform(0.4, 0.95), rng.uniform(5, 35))
              for _ in range(rng.integers(1, 3) if rng.random() < 0.3 else 0)],
        tgc_blood=rng.uniform(0.5, 1.0), along_db=rng.uniform(0, 10),
        haze=rng.uniform(1, 3) if rng.random() < 0.4 else 1.0,
        sparse=rng.uniform(0.3, 2.0) if rng.random() < 0.3 else None,
        fill=rng.uniform(0.65, 1.0) if rng.random() < 0.4 else 1.0,
        aspect=float(np.exp(rng.uniform(-0.15, 0.22))),
        stretch=rng.random() < 0.3, top=rng.uniform(0, 0.08) * H if rng.random() < 0.5 else 0.0,
        shift=rng.uniform(-0.04, 0.04) * Wd,
        grey=np.r_[0, np.cumsum(rng.dirichlet(np.full(5, 2.0)))] if rng.random() < 0.5 else None,
        persist=rng.uniform(0.1, 0.6) if rng.random() < 0.4 else 0.0,
        median=rng.random() < 0.25, blur=rng.uniform(0.3, 1.5) if rng.random() < 0.4 else 0.0,
        overlays=rng.random() < 0.5, low_res=rng.uniform(0.3, 0.65) if rng.random() < 0.3 else None,
        jpeg=int(rng.integers(5, 61)) if rng.random() < 0.35 else None,
    )
    return look


class _RandomScanner(_Scanner):
    """The standard beam grid with the randomised look: image grid (pixel size and aspect, fan
    position), lateral gain, wall dropouts, rib shadows, speckle statistics, haze in the blood and
    myocardium darker where the wall runs along the beams."""

    def __init__(self, P, rng, look):
        super().__init__(P, rng)
        self.look = look
        H, Wd = P["size"]
        d, h = P["depth"], P["half"]
        self.step = (2 * h / (self.nb - 1), d / (self.ns - 1))  # radians per beam, mm per sample
        fan_w, t0 = 2 * d * np.sin(h), look["top"]
        if look["stretch"]:  # the fan stretched to fill the image (like the standard clips)
            self.dy = d / (H - 1 - t0) / look["fill"]
            self.dx = fan_w / (Wd - 1) / look["fill"]
        else:  # near-square pixels; the fan as large as fits, times fill
            self.dy = max(d / (H - 1 - t0), fan_w / (look["aspect"] * (Wd - 1))) / look["fill"]
            self.dx = look["aspect"] * self.dy
        self.apex = (t0, (Wd - 1) / 2 + look["shift"])
        X = (np.arange(Wd) - self.apex[1]) * self.dx
        Y = (np.arange(H) - t0) * self.dy
        self.X, self.Y = np.meshgrid(X, Y)
        rr, pp = np.hypot(self.X, self.Y), np.arctan2(self.X, self.Y)
        self.fan = (rr <= d) & (np.abs(pp) <= h)
        self.coords = np.stack([(pp + h) / (2 * h) * (self.nb - 1), rr / d * (self.ns - 1)])
        # gains on the beam grid: across the sector, dropouts at the wall, rib shadows
        gain_db = np.interp(self.phi[:, 0], np.linspace(-h, h, 5), look["lateral_db"])[:, None]
        self.gain = self.gain * 10 ** (gain_db / 20)
        A, W, T, ac, _ = _state(P, 0.0)
        for th, strength, width in look["blobs"]:
            a, b = ac - (A + T) * np.cos(th), (W + T) * np.sin(th)
            xw = P["ox"] + a * P["u"][0] + b * P["v"][0]
            yw = P["oy"] + a * P["u"][1] + b * P["v"][1]
            xw = -xw if P["mirror"] else xw
            blob = np.exp(-((self.x - xw) ** 2 + (self.y - yw) ** 2) / width**2)
            self.gain = self.gain * (1 - strength * blob)
        for centre, width, strength, start in look["ribs"]:
            band = np.exp(-(((self.phi / h - centre) / width) ** 2))
            self.gain = self.gain * (1 - strength * band * _smoothstep((self.r - start) / 10))
        if look["sparse"] is not None:  # few scatterers per resolution cell: K-distributed speckle
            k = look["sparse"]
            self.scat = (self.scat * np.sqrt(rng.gamma(k, 1 / k, self.scat.shape))).astype(np.complex64)
        self.haze_db = self.haze_db * look["haze"]
        # the sonographer's TGC also takes back part of what blood (attenuating less) leaves over
        blood = np.isin(_anatomy(P, 0.0, self.x, self.y), (_LV, _LA, _POOL))
        path = np.cumsum(blood, axis=1).mean(axis=0) * self.step[1]  # mm of blood along a mean beam
        self.tgc = self.tgc * np.exp(-look["tgc_blood"] * 0.8 * P["alpha"] * path)[None, :]

    def _gain(self, env_db, tis):
        """Set once per clip, from the first frame, as a sonographer would: the myocardium's median
        at ``wall`` of the dynamic range, and (unless the clip is over-gained) no more than 3 % of
        the sector above 1.15 of it."""
        if self.P["gain"] is None:
            myo, dr = env_db[tis == _MYO], self.P["dr"]
            level = np.median(myo) if myo.size else np.percentile(env_db, 90)
            gain = level + dr * (1 - self.look["wall"])
            if not self.look["over_gain"]:
                gain = max(gain, np.percentile(env_db[:, self.ns // 20:], 97) - 0.15 * dr)
            self.P["gain"] = float(gain)
        return self.P["gain"]

    def _extra_db(self, tis):
        """Myocardium darker where it runs along the beams (weak backscatter there)."""
        if self.look["along_db"] <= 0:
            return None
        wall = ndimage.gaussian_filter(np.isin(tis, (_MYO, _WALL)).astype(np.float32), (3, 6))
        g_beam = np.gradient(wall, axis=0) / (self.r * self.step[0] + 1.0)
        g_depth = np.gradient(wall, axis=1) / self.step[1]
        along = g_beam**2 / (g_beam**2 + g_depth**2 + 1e-9)
        return np.where(tis == _MYO, -self.look["along_db"] * along, 0.0)


def _text(img, rng, row, col, value, scale):
    """Burn a short random line of 3x5 characters into ``img`` (H, W) at (row, col)."""
    chars = "".join(rng.choice(list(_FONT), rng.integers(3, 9)))
    for k, ch in enumerate(chars):
        g = np.array([int(v) for v in _FONT[ch]], bool).reshape(5, 3)
        g = np.kron(g, np.ones((scale, scale), bool))
        r, c = row, col + k * 4 * scale
        sub = img[r:r + g.shape[0], c:c + g.shape[1]]
        sub[g[:sub.shape[0], :sub.shape[1]]] = value


def _overlays(rng, size, scanner):
    """Unlabelled burnt-in graphics of one clip: (mask of drawn pixels, grey values), drawn once."""
    H, Wd = size
    img = np.full(size, -1.0, np.float32)
    scale = max(1, round(min(H, Wd) / 200))
    if rng.random() < 0.7:  # ECG trace along the bottom
        beats = rng.uniform(1.0, 3.0)
        t = np.arange(Wd) / Wd * beats % 1.0
        ecg = (np.exp(-((t - 0.2) / 0.025) ** 2) * 0.15 + np.exp(-((t - 0.35) / 0.008) ** 2)
               - 0.25 * np.exp(-((t - 0.38) / 0.01) ** 2) + 0.3 * np.exp(-((t - 0.6) / 0.05) ** 2))
        base, amp = rng.uniform(0.85, 0.97) * H, rng.uniform(0.04, 0.1) * H
        y = np.clip(np.rint(base - amp * ecg), 0, H - 1).astype(int)
        value = rng.uniform(140, 255)
        for c in range(Wd):
            lo, hi = sorted((y[c], y[max(c - 1, 0)]))
            img[lo:hi + scale, c] = value
    if rng.random() < 0.8:  # text in the corners
        for _ in range(rng.integers(1, 5)):
            row = int(rng.choice([rng.uniform(0.01, 0.15), rng.uniform(0.8, 0.93)]) * H)
            col = int(rng.choice([rng.uniform(0.01, 0.08), rng.uniform(0.68, 0.8)]) * Wd)
            _text(img, rng, row, col, rng.uniform(150, 255), scale)
    if rng.random() < 0.7:  # depth ruler: a tick every cm, longer every 5 cm
        col = int(rng.choice([rng.uniform(0.02, 0.08), rng.uniform(0.9, 0.97)]) * Wd)
        value = rng.uniform(120, 255)
        for k in range(0, 40):
            row = int(round(scanner.apex[0] + 10 * k / scanner.dy))
            if row >= H:
                break
            n = (3 if k % 5 else 6) * scale
            img[row:row + scale, col:col + n] = value
    if rng.random() < 0.3:  # focus marker: a small triangle beside the fan
        row, col = int(rng.uniform(0.3, 0.7) * H), int(rng.uniform(0.85, 0.95) * Wd)
        for k in range(4 * scale):
            img[row - k // 2:row + k // 2 + 1, min(col + k, Wd - 1)] = 200
    return img >= 0, img


def _finish(frames, look, scanner, rng):
    """The machine's and the export's processing of a randomised clip (in place, then returned):
    persistence, speckle reduction, grey map, burnt-in overlays, lower resolution, JPEG."""
    size = frames.shape[1:]
    for t in range(1, len(frames)):  # frame persistence
        frames[t] = (1 - look["persist"]) * frames[t] + look["persist"] * frames[t - 1]
    for t in range(len(frames)):
        if look["median"]:
            frames[t] = ndimage.median_filter(frames[t], 3)
        if look["blur"]:
            frames[t] = ndimage.gaussian_filter(frames[t], look["blur"])
    if look["grey"] is not None:  # a monotone grey map through 6 knots (0 stays 0)
        frames[:] = 255 * np.interp(frames / 255, np.linspace(0, 1, 6), look["grey"])
    if look["overlays"]:
        mask, values = _overlays(rng, size, scanner)
        frames[:, mask] = values[mask]
    if look["low_res"] is not None or look["jpeg"] is not None:
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.clip(frames, 0, 255))[:, None]
        if look["low_res"] is not None:  # area-averaged down, bilinear up: the same pixel centres
            small = tuple(max(8, round(s * look["low_res"])) for s in size)
            x = F.interpolate(F.interpolate(x, size=small, mode="area"), size=size, mode="bilinear",
                              align_corners=False)
        if look["jpeg"] is not None:
            from torchvision.io import decode_jpeg, encode_jpeg

            u8 = x.round().clamp(0, 255).to(torch.uint8)
            with warnings.catch_warnings():  # torchvision 0.29 deprecates its image codecs
                warnings.simplefilter("ignore", DeprecationWarning)
                x = torch.stack([decode_jpeg(encode_jpeg(f, quality=look["jpeg"])) for f in u8]).float()
        frames[:] = x[:, 0].numpy()
    return np.clip(frames, 0, 255, out=frames)


def generate_clip(seed: int, n_frames: int = 20, size: tuple[int, int] = (256, 256), view: str | None = None,
                  kind: str = "standard"):
    """One apical echo clip covering about 1-2 cardiac cycles.

    Args:
        seed: all randomness comes from this; the same seed gives the same clip.
        n_frames: number of frames (T).
        size: (height, width) in pixels.
        view: "2CH", "4CH", or None for a random one.
        kind: "standard" (version 1's clips) or "randomised": the same patient, view and motion for
            a seed, with the randomised acquisition and display of the module docstring.

    Returns:
        frames: float32 (T, H, W), display grey 0..255 (0 outside the fan).
        labels: uint8 (T, H, W), 0 background, 1 LV cavity, 2 myocardium, 3 left atrium.
        info: dict with view, ed_frame / es_frame (indices of the least / most contracted frame of
            the motion model: largest / smallest LV), lv_area_px (T,) int, contraction (T,) 0..1,
            phase (T,) in cycles since ED, frame_rate_hz, heart_rate_bpm, pixel_spacing_mm (row,
            column), depth_mm, sector_deg, mirrored, apex_px (row, column of the fan apex), kind,
            look (the randomised settings of ``_random_look``; None for standard clips).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown echo kind '{kind}'; known: {', '.join(KINDS)}")
    rng = np.random.default_rng(seed)
    size = tuple(int(s) for s in size)
    P = _setup(rng, size, view)
    hr = rng.uniform(55, 110)
    t_es = rng.uniform(0.3, 0.4)
    cycles = rng.uniform(1.1, 1.9) if n_frames > 1 else 0.0
    fps = n_frames * hr / 60 / cycles if cycles else rng.uniform(25, 60)
    phase = rng.uniform(0, 1) + np.arange(n_frames) * hr / 60 / fps
    contraction = _contraction(phase, t_es)
    look = _random_look(rng, P) if kind == "randomised" else None  # after the standard draws
    scanner = _Scanner(P, rng) if look is None else _RandomScanner(P, rng, look)
    frames = np.empty((n_frames, *size), np.float32)
    labels = np.empty((n_frames, *size), np.uint8)
    for t in range(n_frames):
        frames[t], labels[t] = scanner.frame(contraction[t], _valve_open(phase[t], t_es), rng)
    if look is not None:
        frames = _finish(frames, look, scanner, rng)
    info = dict(
        view=P["view"], ed_frame=int(np.argmin(contraction)), es_frame=int(np.argmax(contraction)),
        lv_area_px=(labels == 1).sum(axis=(1, 2)), contraction=contraction, phase=phase,
        frame_rate_hz=float(fps), heart_rate_bpm=float(hr), pixel_spacing_mm=(scanner.dy, scanner.dx),
        depth_mm=P["depth"], sector_deg=float(np.rad2deg(2 * P["half"])), mirrored=P["mirror"],
        apex_px=getattr(scanner, "apex", (0.0, (size[1] - 1) / 2)), kind=kind, look=look,
    )
    return frames, labels, info


def generate_frame(seed: int, size: tuple[int, int] = (256, 256), view: str | None = None,
                   kind: str = "standard"):
    """One frame at a random cardiac phase: (float32 (H, W) grey 0..255, uint8 (H, W) labels)."""
    frames, labels, _ = generate_clip(seed, n_frames=1, size=size, view=view, kind=kind)
    return frames[0], labels[0]


# --- the echo task's use of this generator (Training.tasks: training, synth, score) ---

def training_frames(seeds, size, kind="standard"):
    """One frame of ``kind`` at a random phase per seed: grey float32 (B, H, W) 0..255, labels uint8."""
    frames, labels = zip(*(generate_frame(int(s), size=size, kind=kind) for s in seeds))
    return np.stack(frames), np.stack(labels)


def sample_run(seed, n_frames, size, kind="standard"):
    """What ``cardioseg synth`` writes: a clip uint8 (T, H, W), labels, info with ``spacing``."""
    frames, labels, info = generate_clip(seed, n_frames=n_frames, size=size, kind=kind)
    return frames.round().astype(np.uint8), labels, {"spacing": (1.0, *info["pixel_spacing_mm"])}


def is_ed(contraction, frame, tolerance=0.15) -> bool:
    """Whether ``frame`` is end-diastolic in the generator's motion model (contraction 0 relaxed,
    1 fully contracted): within ``tolerance`` of the clip's least contracted frame. A clip of one
    to two cycles can have two ED (or ES) frames of nearly the same LV area, so "the" index of the
    truth is not the test."""
    c = np.asarray(contraction)
    return bool(c[frame] <= c.min() + tolerance)


def is_es(contraction, frame, tolerance=0.15) -> bool:
    c = np.asarray(contraction)
    return bool(c[frame] >= c.max() - tolerance)


def score_cases(p, seed, runs, frames, size, kind="standard"):
    """(prediction, truth, extra) of generated clips; extra says whether ED and ES, found from
    the predicted LV area, are right."""
    from .measure import area_per_frame_mm2, ed_es_frames

    for r in range(runs):
        x, y, info = generate_clip(seed + r, n_frames=frames, size=(size, size), kind=kind)
        pred = p.predict(x)
        extra = {"view": info["view"], "ed_ok": False, "es_ok": False}
        try:
            ed, es = ed_es_frames(area_per_frame_mm2(pred, info["pixel_spacing_mm"]))
            extra.update(ed_ok=is_ed(info["contraction"], ed), es_ok=is_es(info["contraction"], es))
        except ValueError:
            pass
        yield pred, y, extra
