"""How an X-ray frame looks once detected and displayed, randomised per training run, and real
radiographs as backgrounds: the domain randomisation of the catheter generator (``Training.fluoro``).

Drawn once per run (``random_look``), over these ranges:

    response        log (shown value ~ attenuation) 45 %, linear (shown value ~ counts) 55 %
    polarity        attenuating bright 40 %, attenuating dark 60 %
    window          lower percentile 0-4, upper 96-100; gamma 0.5-2.0
    bit depth       8-bit 35 %, 12-bit 40 %, 16-bit 25 %; 55-100 % of the range used
    JPEG            25 % of runs, quality 30-90 (8-bit, then scaled back to the bit depth)
    resolution      30 % of runs detected at 1/1.3 to 1/2.5 of the size and interpolated back
    shutters        30 %: straight bands at 1-3 borders, 2-30 % of the value range
    round field     15 %: an image intensifier's circular edge, black outside
    burnt-in marks  35 %: 1-4 groups of 3x5-pixel glyphs (scaled), white or black

Real backgrounds (``real_background``): a crop (25-100 % of the side, random left-right flip) of
one of ``Training.realxray.backgrounds()`` (never the held-out ones), its displayed value v taken
as log attenuation: attenuation = k v with k 2-4, so devices composite by Beer-Lambert.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage


def random_look(rng) -> dict:
    """The display of one run (see the module docstring for the ranges)."""
    return {
        "log": rng.random() < 0.45,
        "bright": rng.random() < 0.4,
        "window": (rng.uniform(0, 4), rng.uniform(96, 100)),
        "gamma": float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))),
        "bits": int(rng.choice([8, 12, 16], p=[0.35, 0.4, 0.25])),
        "gain": rng.uniform(0.55, 1.0),
        "jpeg": int(rng.uniform(30, 90)) if rng.random() < 0.25 else 0,
        "lowres": rng.uniform(1.3, 2.5) if rng.random() < 0.3 else 1.0,
        "shutters": [b for b in range(4) if rng.random() < 0.45] if rng.random() < 0.3 else [],
        "shutter_level": rng.uniform(0.02, 0.3),
        "shutter_width": rng.uniform(0.03, 0.15, 4),
        "round": rng.random() < 0.15,
        "marks": int(rng.integers(1, 5)) if rng.random() < 0.35 else 0,
        "marks_seed": int(rng.integers(2**31)),
    }


def display(counts: np.ndarray, look: dict) -> np.ndarray:
    """Detected counts (H, W, relative to the dose) -> shown values (float32, 0 .. 2^bits - 1)."""
    h, w = counts.shape
    c = np.maximum(counts, 1e-4)
    if look["lowres"] > 1:
        small = ndimage.zoom(c, 1 / look["lowres"], order=1)
        c = np.maximum(ndimage.zoom(small, (h / small.shape[0], w / small.shape[1]), order=1), 1e-4)
    v = -np.log(c) if look["log"] else c  # log: attenuating bright; linear: attenuating dark
    lo, hi = np.percentile(v, look["window"])
    v = np.clip((v - lo) / (hi - lo + 1e-6), 0, 1) ** look["gamma"]
    if look["log"] != look["bright"]:
        v = 1 - v
    v = _marks(v, look, np.random.default_rng(look["marks_seed"]))
    top = 2 ** look["bits"] - 1
    if look["jpeg"]:
        v = _jpeg(v, look["jpeg"])
    return np.round(v * look["gain"] * top).astype(np.float32)


def _marks(v, look, rng):
    """Shutters, a round field edge and burnt-in glyphs, in the displayed image (values 0..1)."""
    h, w = v.shape
    for b in look["shutters"]:
        m = int(look["shutter_width"][b] * (h if b < 2 else w))
        region = [np.s_[:m, :], np.s_[h - m:, :], np.s_[:, :m], np.s_[:, w - m:]][b]
        v[region] = look["shutter_level"]
    if look["round"]:
        yy, xx = np.mgrid[:h, :w]
        v[((yy - h / 2) / (0.56 * h)) ** 2 + ((xx - w / 2) / (0.56 * w)) ** 2 > 1] = 0.0
    cell = max(1, round(max(h, w) / 200))
    for _ in range(look["marks"]):
        y, x = int(rng.uniform(0.02, 0.92) * h), int(rng.uniform(0.02, 0.8) * w)
        value = float(rng.random() < 0.8)
        for g in range(int(rng.integers(1, 7))):
            glyph = np.kron(rng.random((5, 3)) < 0.55, np.ones((cell, cell), bool))
            gy, gx = y, x + g * 4 * cell
            region = v[gy:gy + glyph.shape[0], gx:gx + glyph.shape[1]]
            region[glyph[: region.shape[0], : region.shape[1]]] = value
    return v


def _jpeg(v: np.ndarray, quality: int) -> np.ndarray:
    """v (0..1) through an 8-bit JPEG of ``quality`` and back."""
    import torch
    from torchvision.io import decode_jpeg, encode_jpeg

    img = torch.from_numpy(np.round(v * 255).astype(np.uint8))[None]
    return decode_jpeg(encode_jpeg(img, quality=quality))[0].numpy().astype(np.float32) / 255.0


@lru_cache(maxsize=64)
def _half(name: str) -> np.ndarray:
    """Radiograph ``name`` at half its size (at most 512 px, antialiased): backgrounds are made at 256."""
    from .realxray import load

    image = load(name)
    if max(image.shape) <= 512:
        return image
    return ndimage.zoom(ndimage.gaussian_filter(image, 1.0), 0.5, order=1)


def real_background(rng, size) -> np.ndarray:
    """Attenuation (H, W) of a crop of a real radiograph that training may use (module docstring)."""
    from .realxray import backgrounds

    names = backgrounds()
    v = _half(names[int(rng.integers(len(names)))])
    side = int(rng.uniform(0.25, 1.0) * min(v.shape))
    y0, x0 = (int(rng.integers(0, n - side + 1)) for n in v.shape)
    crop = v[y0:y0 + side, x0:x0 + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    zoom = (size[0] / side, size[1] / side)
    if min(zoom) < 1:
        crop = ndimage.gaussian_filter(crop, 0.5 / min(zoom))
    crop = ndimage.zoom(crop, zoom, order=1)[: size[0], : size[1]]
    crop = np.pad(crop, [(0, size[0] - crop.shape[0]), (0, size[1] - crop.shape[1])], mode="edge")
    return (rng.uniform(2.0, 4.0) * crop).astype(np.float32)
