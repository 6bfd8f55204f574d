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


def _smp(kind: str, encoder: str):
    def builder(in_channels: int, classes: int, **kwargs):
        import segmentation_models_pytorch as smp

        return getattr(smp, kind)(encoder_name=encoder, encoder_weights=None, in_channels=in_channels,
                                  classes=classes, **kwargs)

    builder.__doc__ = f"SMP {kind}, {encoder} encoder, random init. (B,C,H,W) -> (B,K,H,W) logits; H, W multiples of 32."
    return builder


for _encoder in ("resnet18", "resnet34"):
    register(f"unet-{_encoder}")(_smp("Unet", _encoder))
for _encoder in ("resnet18", "resnet50", "resnet101"):
    register(f"deeplabv3-{_encoder}")(_smp("DeepLabV3", _encoder))


@register("monai-basicunet")
def monai_basicunet(in_channels: int, classes: int, features=(32, 32, 64, 128, 256, 32)):
    """MONAI BasicUNet (2D). (B,C,H,W) -> (B,K,H,W) logits; H, W multiples of 16."""
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=classes, features=tuple(features))


@register("unet-original")
def unet_original(in_channels: int, classes: int):
    """The original U-Net: two 3x3 convs per level, 64 to 1024 filters, max-pool down,
    transposed-conv up (MONAI BasicUNet with those widths). H, W multiples of 16."""
    return monai_basicunet(in_channels, classes, features=(64, 128, 256, 512, 1024, 64))


def build(name: str, **kwargs) -> torch.nn.Module:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture '{name}'; known: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[name](**kwargs)
