"""Network architectures by name. A model file names one of these and its keyword arguments."""
from __future__ import annotations

from typing import Callable

import torch

ARCHITECTURES: dict[str, Callable[..., torch.nn.Module]] = {}


def register(name: str):
    def wrap(fn):
        ARCHITECTURES[name] = fn
        return fn

    return wrap


@register("unet-efficientnet-b2")
def unet_efficientnet_b2(in_channels: int, classes: int, decoder_channels=(128, 64, 32, 16, 16)):
    """SMP U-Net, EfficientNet-B2 encoder, random init (no downloads). (B,C,H,W) -> (B,K,H,W) logits."""
    import segmentation_models_pytorch as smp

    return smp.Unet(
        encoder_name="efficientnet-b2",
        encoder_weights=None,
        in_channels=in_channels,
        classes=classes,
        decoder_channels=tuple(decoder_channels),
    )


def build(name: str, **kwargs) -> torch.nn.Module:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture '{name}'; known: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[name](**kwargs)
