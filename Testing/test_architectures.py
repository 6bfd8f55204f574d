"""Every named architecture builds offline and maps (B,C,H,W) to (B,K,H,W) logits."""
import pytest
import torch

from Training.architectures import ARCHITECTURES, build
from Training.modelfile import ModelSpec, load_model, save_model


def test_the_seed_architectures_are_available_by_name():
    for name in ("unet-efficientnet-b2", "unet-resnet18", "unet-resnet34", "deeplabv3-resnet50",
                 "deeplabv3-resnet101", "unet-original", "monai-basicunet"):
        assert name in ARCHITECTURES


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_builds_without_downloads_and_keeps_the_frame_size(name):
    model = build(name, in_channels=3, classes=4).eval()
    with torch.inference_mode():
        y = model(torch.rand(1, 3, 64, 64))
    assert y.shape == (1, 4, 64, 64)


def test_original_unet_has_64_to_1024_filters():
    convs = [m for m in build("unet-original", in_channels=1, classes=1).modules() if isinstance(m, torch.nn.Conv2d)]
    widths = {m.out_channels for m in convs}
    assert {64, 128, 256, 512, 1024} <= widths and max(widths) == 1024


def test_unknown_architecture_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown architecture 'vnet'.*unet-original"):
        build("vnet", in_channels=1, classes=1)


def test_model_file_round_trip_for_another_architecture(tmp_path):
    spec = ModelSpec(task="catheter", architecture="unet-resnet18", architecture_args={}, in_channels=1,
                     classes=[{"name": "Catheter", "color": [1, 1, 0], "terminology": ""}],
                     preprocessing={"size": [64, 64], "intensity": {"method": "percentile", "lower": 0.5, "upper": 99.5}})
    model = spec.build().eval()
    path = save_model(tmp_path / "r18.safetensors", model, spec, dtype=torch.float32)
    loaded, loaded_spec = load_model(path, task="catheter")
    x = torch.rand(2, 1, 64, 64)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))
    assert loaded_spec.architecture == "unet-resnet18"
