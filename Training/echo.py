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

Frames are ``float32`` display grey 0..255, labels ``uint8`` (0 background, 1 LV endocardium =
LV cavity, 2 myocardium, 3 left atrium); both shaped ``(frames, height, width)``. The fan apex
(transducer) is at the top centre; rows go with depth.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .seeds import HELD_OUT_SEED_BASE  # noqa: F401  (seeds at or above it are never trained on)

VIEWS = ("2CH", "4CH")
CLASSES = ("background", "LV endocardium", "myocardium", "left atrium")
# tissue codes of the internal map; codes 1..3 are the label classes
_BG, _LV, _MYO, _LA, _POOL, _WALL, _PERI = range(7)


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
        disp = np.clip((20 * np.log10(env + 1e-12) - P["gain"] + P["dr"]) / P["dr"], 0, 1) ** P["gamma"]
        img = ndimage.map_coordinates(disp.astype(np.float32), self.coords, order=1, mode="nearest")
        img = np.where(self.fan, img * 255.0, 0.0).astype(np.float32)
        lab = _anatomy(P, c, self.X, self.Y)
        lab = np.where(self.fan & (lab <= _LA), lab, 0).astype(np.uint8)
        return img, lab


def generate_clip(seed: int, n_frames: int = 20, size: tuple[int, int] = (256, 256), view: str | None = None):
    """One apical echo clip covering about 1-2 cardiac cycles.

    Args:
        seed: all randomness comes from this; the same seed gives the same clip.
        n_frames: number of frames (T).
        size: (height, width) in pixels.
        view: "2CH", "4CH", or None for a random one.

    Returns:
        frames: float32 (T, H, W), display grey 0..255 (0 outside the fan).
        labels: uint8 (T, H, W), 0 background, 1 LV cavity, 2 myocardium, 3 left atrium.
        info: dict with view, ed_frame / es_frame (indices of the least / most contracted frame of
            the motion model: largest / smallest LV), lv_area_px (T,) int, contraction (T,) 0..1,
            phase (T,) in cycles since ED, frame_rate_hz, heart_rate_bpm, pixel_spacing_mm (row,
            column), depth_mm, sector_deg, mirrored.
    """
    rng = np.random.default_rng(seed)
    size = tuple(int(s) for s in size)
    P = _setup(rng, size, view)
    hr = rng.uniform(55, 110)
    t_es = rng.uniform(0.3, 0.4)
    cycles = rng.uniform(1.1, 1.9) if n_frames > 1 else 0.0
    fps = n_frames * hr / 60 / cycles if cycles else rng.uniform(25, 60)
    phase = rng.uniform(0, 1) + np.arange(n_frames) * hr / 60 / fps
    contraction = _contraction(phase, t_es)
    scanner = _Scanner(P, rng)
    frames = np.empty((n_frames, *size), np.float32)
    labels = np.empty((n_frames, *size), np.uint8)
    for t in range(n_frames):
        frames[t], labels[t] = scanner.frame(contraction[t], _valve_open(phase[t], t_es), rng)
    info = dict(
        view=P["view"], ed_frame=int(np.argmin(contraction)), es_frame=int(np.argmax(contraction)),
        lv_area_px=(labels == 1).sum(axis=(1, 2)), contraction=contraction, phase=phase,
        frame_rate_hz=float(fps), heart_rate_bpm=float(hr), pixel_spacing_mm=(scanner.dy, scanner.dx),
        depth_mm=P["depth"], sector_deg=float(np.rad2deg(2 * P["half"])), mirrored=P["mirror"],
    )
    return frames, labels, info


def generate_frame(seed: int, size: tuple[int, int] = (256, 256), view: str | None = None):
    """One frame at a random cardiac phase: (float32 (H, W) grey 0..255, uint8 (H, W) labels)."""
    frames, labels, _ = generate_clip(seed, n_frames=1, size=size, view=view)
    return frames[0], labels[0]


# --- the echo task's use of this generator (Training.tasks: training, synth, score) ---

KINDS = ("standard",)


def training_frames(seeds, size):
    """One frame at a random phase per seed: grey float32 (B, H, W) 0..255, labels uint8."""
    frames, labels = zip(*(generate_frame(int(s), size=size) for s in seeds))
    return np.stack(frames), np.stack(labels)


def sample_run(seed, n_frames, size, kind="standard"):
    """What ``cardioseg synth`` writes: a clip uint8 (T, H, W), labels, info with ``spacing``."""
    frames, labels, info = generate_clip(seed, n_frames=n_frames, size=size)
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
        x, y, info = generate_clip(seed + r, n_frames=frames, size=(size, size))
        pred = p.predict(x)
        extra = {"view": info["view"], "ed_ok": False, "es_ok": False}
        try:
            ed, es = ed_es_frames(area_per_frame_mm2(pred, info["pixel_spacing_mm"]))
            extra.update(ed_ok=is_ed(info["contraction"], ed), es_ok=is_es(info["contraction"], es))
        except ValueError:
            pass
        yield pred, y, extra
