"""Training augmentation with MONAI dictionary transforms.

Samples are ``{"image": (C, H, W) float32 normalised to [0, 1], "label": (1, H, W) float32
integer labels}``. Intensity transforms touch the image only; spatial transforms move image
(bilinear) and label (nearest) together. ``DEFAULT_AUGMENT`` lists every transform with its
probability and range; pass a modified copy to ``build_augment`` to change or drop one
(set it to ``None``), or no augmentation at all with ``--no-augment``.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch

DEFAULT_AUGMENT = {
    "scale_intensity": {"prob": 0.3, "factors": 0.2},        # brightness/contrast: x * (1 + f), f in +-0.2
    "shift_intensity": {"prob": 0.3, "offsets": 0.1},        # brightness: x + o
    "gamma": {"prob": 0.3, "gamma": [0.7, 1.5]},             # RandAdjustContrast
    "histogram_shift": {"prob": 0.2, "num_control_points": [5, 10]},  # equalisation-like contrast
    "noise": {"prob": 0.2, "std": 0.03},                     # Gaussian noise, in normalised units
    "flip": {"prob": 0.5},                                   # each image axis
    "rotate90": {"prob": 0.5},
    "rotate": {"prob": 0.3, "degrees": 15.0},
    "elastic": {"prob": 0.2, "spacing": [16, 16], "magnitude": [0.5, 1.5]},
}


def default_augment() -> dict:
    return copy.deepcopy(DEFAULT_AUGMENT)


def build_augment(config: dict | None, seed: int = 0):
    """A MONAI ``Compose`` of the transforms named in ``config`` (None: no augmentation -> None)."""
    if not config:
        return None
    from monai import transforms as T

    keys, c = ["image", "label"], config
    steps = []
    if c.get("scale_intensity"):
        steps.append(T.RandScaleIntensityd("image", factors=c["scale_intensity"]["factors"], prob=c["scale_intensity"]["prob"]))
    if c.get("shift_intensity"):
        steps.append(T.RandShiftIntensityd("image", offsets=c["shift_intensity"]["offsets"], prob=c["shift_intensity"]["prob"]))
    if c.get("gamma"):
        steps.append(T.RandAdjustContrastd("image", gamma=tuple(c["gamma"]["gamma"]), prob=c["gamma"]["prob"]))
    if c.get("histogram_shift"):
        steps.append(T.RandHistogramShiftd("image", num_control_points=tuple(c["histogram_shift"]["num_control_points"]),
                                           prob=c["histogram_shift"]["prob"]))
    if c.get("noise"):
        steps.append(T.RandGaussianNoised("image", std=c["noise"]["std"], prob=c["noise"]["prob"]))
    if c.get("flip"):
        steps += [T.RandFlipd(keys, prob=c["flip"]["prob"], spatial_axis=a) for a in (0, 1)]
    if c.get("rotate90"):
        steps.append(T.RandRotate90d(keys, prob=c["rotate90"]["prob"], max_k=3))
    if c.get("rotate"):
        r = math.radians(c["rotate"]["degrees"])
        steps.append(T.RandRotated(keys, range_x=r, prob=c["rotate"]["prob"], mode=("bilinear", "nearest"),
                                   padding_mode="border", keep_size=True))
    if c.get("elastic"):
        e = c["elastic"]
        steps.append(T.Rand2DElasticd(keys, spacing=tuple(e["spacing"]), magnitude_range=tuple(e["magnitude"]),
                                      prob=e["prob"], mode=("bilinear", "nearest"), padding_mode="border"))
    if not steps:
        return None
    steps.append(T.Lambdad("image", _clip01))  # noise and shifts keep the [0, 1] range of normalised frames
    compose = T.Compose(steps)
    compose.set_random_state(seed=seed)
    return compose


def _clip01(x):
    return x.clamp(0, 1) if isinstance(x, torch.Tensor) else np.clip(x, 0, 1)


def apply(augment, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment one sample: image (C, H, W), label (1, H, W) -> same shapes, plain tensors."""
    if augment is None:
        return image, label
    out = augment({"image": image, "label": label})
    x, y = out["image"], out["label"]
    x = x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)
    y = y.as_tensor() if hasattr(y, "as_tensor") else torch.as_tensor(y)
    return x.float().contiguous(), y.round().float().contiguous()
