"""The real chest radiographs CardioSeg carries (``Training/realimages/xray``, NIH ChestX-ray14;
origin, licence and attribution in ``Training/realimages/SOURCES.md``), and how they are split.

They are unlabelled. Those that show a device (pacemaker, leads, tubes, ports, electrodes) are
never used; the device-free ones are split once, by name, into backgrounds that training may use
and held-out images that only the stress suite sees (composited devices and device-free negatives).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

FOLDER = Path(__file__).resolve().parent / "realimages" / "xray"

ATTRIBUTION = (
    "Chest radiographs from the NIH ChestX-ray14 dataset (https://nihcc.app.box.com/v/ChestXray-NIHCC), "
    "provided by the NIH Clinical Center. Wang X, Peng Y, Lu L, Lu Z, Bagheri M, Summers RM. ChestX-ray8: "
    "Hospital-scale Chest X-ray Database and Benchmarks on Weakly-Supervised Classification and Localization "
    "of Common Thorax Diseases. IEEE CVPR 2017, pp. 3462-3471."
)

# Images with a visible foreign body (SOURCES.md's list, plus two doubtful ones seen on the contact sheet).
WITH_DEVICES = frozenset({
    "nih_00000075_000", "nih_00006338_000", "nih_00012350_000", "nih_00007352_000", "nih_00018999_000",
    "nih_00009745_000", "nih_00011254_000", "nih_00017611_000", "nih_00001511_000", "nih_00028744_000",
})


def _device_free() -> list[str]:
    return sorted(p.stem for p in FOLDER.glob("nih_*.png") if p.stem not in WITH_DEVICES)


def held_out() -> list[str]:
    """Device-free radiographs no training may use (every third by name): the stress suite's."""
    return _device_free()[::3]


def backgrounds() -> list[str]:
    """Device-free radiographs that training may use as backgrounds."""
    kept = set(held_out())
    return [n for n in _device_free() if n not in kept]


@lru_cache(maxsize=64)
def load(name: str) -> np.ndarray:
    """The radiograph ``name`` as float32 (H, W) in 0..1, as displayed: bright = attenuating."""
    import SimpleITK as sitk

    a = sitk.GetArrayFromImage(sitk.ReadImage(str(FOLDER / f"{name}.png"))).astype(np.float32)
    a = a[..., 0] if a.ndim == 3 else a
    a.setflags(write=False)
    return a / 255.0
