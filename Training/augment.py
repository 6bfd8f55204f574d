"""Training augmentation with MONAI dictionary transforms.

Samples are ``{"image": (C, H, W) float32 normalised to [0, 1], "label": (1, H, W) float32
integer labels}``. Intensity transforms touch the image only; spatial transforms move image
(bilinear) and label (nearest) together. ``DEFAULT_AUGMENT`` lists every transform with its
probability and range; pass a modified copy to ``build_augment`` to change or drop one
(set it to ``None``), or no augmentation at all with ``--no-augment``.

Colour transforms (``hue``, ``saturation``, ``value``, ``rgb_shift``, ``channel_shuffle``) act
on 3-channel (RGB) images only and leave 1-channel (grey) images untouched, deciding per sample,
so one config serves every task. They run after the other transforms, so grey samples get the
same augmentation with or without them. Ranges given as one number ``v`` mean ``[-v, v]``; a
pair ``[lo, hi]`` is taken as is.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import convert_to_dst_type, convert_to_tensor
from torchvision.transforms.v2 import functional as F

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
    # colour, RGB images only (no-ops on grey):
    "hue": {"prob": 0.3, "shift": 0.05},                     # hue rotation, fraction of the hue circle
    "saturation": {"prob": 0.3, "factors": 0.3},             # saturation * (1 + f)
    "value": {"prob": 0.3, "factors": 0.2},                  # HSV value (brightness) * (1 + f)
    "rgb_shift": {"prob": 0.2, "offsets": 0.05},             # independent offset per channel, normalised units
    "channel_shuffle": {"prob": 0.1},                        # random permutation of R, G, B
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
    # colour last: Compose seeds its transforms in order, so the ones above keep their random streams
    for kind, amount in (("hue", "shift"), ("saturation", "factors"), ("value", "factors"),
                         ("rgb_shift", "offsets"), ("channel_shuffle", None)):
        if c.get(kind):
            steps.append(RandColord("image", kind, c[kind][amount] if amount else 0.0, prob=c[kind]["prob"]))
    if not steps:
        return None
    steps.append(T.Lambdad("image", _clip01))  # noise and shifts keep the [0, 1] range of normalised frames
    compose = T.Compose(steps)
    compose.set_random_state(seed=seed)
    return compose


def _range(v) -> tuple[float, float]:
    return (-float(v), float(v)) if np.isscalar(v) else (float(v[0]), float(v[1]))


class RandColord(RandomizableTransform, MapTransform):
    """One random colour change (``kind``: hue, saturation, value, rgb_shift, channel_shuffle) of
    (3, H, W) images in [0, 1]; other channel counts pass unchanged. ``amount`` is the range of the
    hue shift, of the factor f (multiplier 1 + f), or of the per-channel offsets. Random numbers come
    from ``self.R`` only, so ``set_random_state`` makes it reproducible."""

    KINDS = ("hue", "saturation", "value", "rgb_shift", "channel_shuffle")

    def __init__(self, keys, kind: str, amount=0.0, prob: float = 0.1, allow_missing_keys: bool = False):
        if kind not in self.KINDS:
            raise ValueError(f"unknown colour transform {kind!r}; one of {self.KINDS}")
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.kind, self.range = kind, _range(amount)
        if kind == "hue" and not -0.5 <= self.range[0] <= self.range[1] <= 0.5:
            raise ValueError(f"hue shift must lie within [-0.5, 0.5], got {amount}")

    def randomize(self, data=None) -> None:
        super().randomize(None)
        if self.kind == "channel_shuffle":
            self._param = self.R.permutation(3)
        else:
            self._param = self.R.uniform(*self.range, size=3 if self.kind == "rgb_shift" else None)

    def __call__(self, data):
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            img = d[key]
            if img.shape[0] != 3:
                continue
            x, p = convert_to_tensor(img, track_meta=False).clamp(0, 1), self._param
            if self.kind == "hue":
                x = F.adjust_hue_image(x, float(p))
            elif self.kind == "saturation":
                x = F.adjust_saturation_image(x, max(0.0, 1.0 + float(p)))
            elif self.kind == "value":  # V = max(R, G, B), so scaling V scales all channels
                x = F.adjust_brightness_image(x, max(0.0, 1.0 + float(p)))
            elif self.kind == "rgb_shift":
                x = x + torch.as_tensor(p, dtype=x.dtype, device=x.device)[:, None, None]
            else:
                x = x[torch.as_tensor(p)]
            d[key] = convert_to_dst_type(x, img)[0]
        return d


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
