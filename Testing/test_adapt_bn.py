"""Test-time BatchNorm adaptation (`--adapt-bn`): statistics re-estimated on the input, from the
model file's each time, in resize and tile mode, on the command line and in the module Logic."""
import numpy as np
import pytest
import torch

from conftest import import_slicer
from Training.cli import main
from Training.fluoro import generate_run
from Training.modelfile import ModelSpec, save_model
from Training.predictor import Predictor
from Training.trainer import batchnorm_layers


@pytest.fixture(scope="module")
def frames():
    x, _ = generate_run(5, 4, (64, 64))
    return x


def _first_bn_mean(p):
    return batchnorm_layers(p.model)[0].running_mean.clone()


def test_statistics_follow_the_input_and_start_from_the_model_file_each_time(tiny_model, frames):
    plain = Predictor(tiny_model, precision="fp32")
    adapted = Predictor(tiny_model, precision="fp32", adapt_bn=True)
    stored = _first_bn_mean(plain)
    adapted.predict(frames)
    after_frames = _first_bn_mean(adapted)
    assert not torch.allclose(after_frames, stored)  # the statistics now describe this input
    assert adapted.stats["adapt_seconds"] > 0
    other = frames.max() - frames  # the other display polarity
    adapted.predict(other)
    fresh = Predictor(tiny_model, precision="fp32", adapt_bn=True)
    fresh.predict(other)
    assert torch.allclose(_first_bn_mean(adapted), _first_bn_mean(fresh))  # not a mix of the two inputs
    assert np.array_equal(adapted.predict(frames), Predictor(tiny_model, precision="fp32", adapt_bn=True).predict(frames))
    assert torch.allclose(_first_bn_mean(plain), stored)  # without the option nothing changes


def test_tile_mode_adapts_on_whole_tiles(tmp_path, frames):
    spec = ModelSpec(task="catheter", architecture="unet-efficientnet-b2",
                     architecture_args={"decoder_channels": [16, 16, 16, 16, 16]}, in_channels=1,
                     classes=[{"name": "Catheter", "color": [1, 1, 0], "terminology": ""}],
                     preprocessing={"size": [32, 32], "intensity": {"method": "percentile", "lower": 0.5, "upper": 99.5},
                                    "mode": "tile"})
    model = save_model(tmp_path / "tile.safetensors", spec.build(), spec)
    big = np.tile(frames, (1, 3, 3))[:, :150, :170]  # not a multiple of the tile
    small = frames[:, :20, :24]  # smaller than one tile
    for x in (big, small):
        p = Predictor(model, precision="fp32", adapt_bn=True)
        assert p.predict(x).shape == x.shape


def test_segment_adapt_bn_on_the_command_line(tiny_model, tmp_path, frames):
    import SimpleITK as sitk

    image = tmp_path / "run.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(frames), str(image))
    out = tmp_path / "out.seg.nrrd"
    assert main(["segment", str(image), str(out), "--model", str(tiny_model), "--adapt-bn"]) == 0
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(out))).shape == frames.shape


def test_the_logic_segments_with_adaptation(tiny_model, frames, mrml_scene):
    slicer = import_slicer()
    from CardioSegLib.catheterlogic import CatheterSegmentationLogic

    volume = slicer.util.addVolumeFromArray(frames, name="run")
    logic = CatheterSegmentationLogic()
    adapted, stats = logic.process(volume, modelPath=str(tiny_model), adaptBn=True)
    assert stats["adapt_seconds"] > 0 and adapted.GetSegmentation().GetNumberOfSegments() == 1
