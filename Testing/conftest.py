"""Shared fixtures: a tiny (untrained) model file and a real MRML scene from slicer-core."""
import pytest

from Training.modelfile import ModelSpec, save_model
from Training.tasks import get_task


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Path of a tiny untrained catheter model (64x64 input, 16-channel decoder)."""
    spec = ModelSpec(
        task="catheter",
        architecture="unet-efficientnet-b2",
        architecture_args={"decoder_channels": [16, 16, 16, 16, 16]},
        in_channels=1,
        classes=list(get_task("catheter").classes),
        preprocessing={"size": [64, 64], "intensity": {"method": "percentile", "lower": 0.5, "upper": 99.5},
                       "threshold": 0.5},
    )
    return save_model(tmp_path_factory.mktemp("model") / "tiny.safetensors", spec.build(), spec)


@pytest.fixture(scope="session")
def tiny_instruments_model(tmp_path_factory):
    """Path of a tiny untrained instruments model: 3 input channels, 64x64, RGB window 0-255.
    The weights are seeded, so its (arbitrary) output is the same on every run."""
    import torch

    torch.manual_seed(0)
    spec = ModelSpec(
        task="instruments",
        architecture="unet-resnet18",
        architecture_args={"decoder_channels": [16, 16, 16, 16, 16]},
        in_channels=3,
        classes=list(get_task("instruments").classes),
        preprocessing={"size": [64, 64], "intensity": {"method": "window", "lower": 0, "upper": 255},
                       "threshold": 0.5},
    )
    return save_model(tmp_path_factory.mktemp("model") / "instruments.safetensors", spec.build(), spec)


@pytest.fixture
def mrml_scene():
    """A fresh vtkMRMLScene set as ``slicer.mrmlScene``, set up as the app would have it:
    segmentation converter rules registered, and a sequences logic observing the scene (it
    registers the sequence browser node class and keeps proxy nodes up to date)."""
    import slicer

    from CardioSegLib.scene import register_converter_rules

    register_converter_rules()
    scene = slicer.vtkMRMLScene()
    sequences_logic = slicer.vtkSlicerSequencesLogic()
    sequences_logic.SetMRMLScene(scene)
    previous = getattr(slicer, "mrmlScene", None)
    slicer.mrmlScene = scene
    yield scene
    sequences_logic.SetMRMLScene(None)
    scene.Clear(1)
    slicer.mrmlScene = previous
