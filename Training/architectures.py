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


# ImageNet's per-channel mean and standard deviation, on RGB in [0, 1]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNetInput(torch.nn.Module):
    """A network whose encoder expects ImageNet input: frames preprocessed to [0, 1] as for every
    model (``Training.preprocess``) go in, ``(x - mean) / std`` per RGB channel goes to ``net``.

    Grey frames (1 channel) are repeated to three channels, which the broadcast against the
    (1, 3, 1, 1) mean does by itself. Repeating rather than summing the stem's RGB kernels into one
    grey kernel: the pretrained stem then sees exactly what it saw on ImageNet, borders included
    (folding the mean into the kernel is exact only away from the zero padding); one network and
    one weights file serve grey and RGB tasks; and the cost, a 3x3 stride-2 stem on 3 channels
    instead of 1, is lost in the rest of the network. Normalising inside the model keeps the
    model file's preprocessing the same as every other model's, for training and prediction.
    The mean and std are not weights: non-persistent buffers, so model files hold ``net.*`` only.
    """

    def __init__(self, net: torch.nn.Module, in_channels: int, pretrained: str):
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 (grey) or 3 (RGB), got {in_channels}")
        self.net, self.in_channels, self.pretrained = net, in_channels, pretrained
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def encoder(self) -> torch.nn.Module:
        return self.net.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channel(s), got {x.shape[1]}")
        return self.net((x - self.mean) / self.std)


@register("unet-efficientnet-lite0")
def unet_efficientnet_lite0(in_channels: int, classes: int, **kwargs):
    """SMP U-Net on timm's EfficientNet-Lite0 encoder (``tu-efficientnet_lite0``), ImageNet input
    normalisation inside (``ImageNetInput``); random init here, ImageNet encoder weights with
    ``Training.pretrained.load_imagenet_encoder`` (no downloads). H, W multiples of 32."""
    import segmentation_models_pytorch as smp

    if "decoder_channels" in kwargs:  # a list when it comes from a model file's JSON
        kwargs["decoder_channels"] = tuple(kwargs["decoder_channels"])
    net = smp.Unet(encoder_name="tu-efficientnet_lite0", encoder_weights=None, in_channels=3, classes=classes, **kwargs)
    return ImageNetInput(net, in_channels, pretrained="efficientnet-lite0")


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
