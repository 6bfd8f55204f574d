"""The model file: round trip, and refusal of truncated, altered and wrong-task files."""
import json

import pytest
import torch
from safetensors.torch import save_file

from Training.modelfile import ModelFileError, load_model, read_spec, save_model
from Training.tasks import get_task


def test_round_trip_keeps_spec_and_weights(tiny_model):
    model, spec = load_model(tiny_model, task="catheter")
    assert spec.task == "catheter" and spec.classes[0]["name"] == "Catheter"
    again, _ = load_model(tiny_model)
    x = torch.rand(1, 1, 64, 64)
    with torch.inference_mode():
        assert torch.equal(model(x), again(x))


def test_truncated_file_is_refused(tiny_model, tmp_path):
    data = tiny_model.read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        load_model(bad)


def test_altered_weights_fail_checksum(tiny_model, tmp_path):
    data = bytearray(tiny_model.read_bytes())
    data[-100] ^= 0xFF  # flip bits in the last tensor's bytes, header intact
    bad = tmp_path / "altered.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum"):
        load_model(bad)


def test_model_for_another_task_is_refused(tiny_model):
    with pytest.raises(ModelFileError, match="model for task 'catheter', not 'heart-ct'"):
        load_model(tiny_model, task="heart-ct")


def test_plain_safetensors_and_garbage_are_refused(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ModelFileError, match="not a CardioSeg model"):
        read_spec(plain)
    pickle_like = tmp_path / "model.pt"
    pickle_like.write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
    with pytest.raises(ModelFileError, match="not a readable model file"):
        read_spec(pickle_like)
    with pytest.raises(ModelFileError, match="not found"):
        read_spec(tmp_path / "missing.safetensors")


def test_mismatched_weights_are_refused(tiny_model, tmp_path):
    model, spec = load_model(tiny_model)
    spec.architecture_args = {"decoder_channels": [32, 16, 16, 16, 16]}
    bad = tmp_path / "mismatch.safetensors"
    save_model(bad, model, spec)  # spec says a wider decoder than the weights hold
    with pytest.raises(ModelFileError, match="do not match architecture"):
        load_model(bad)


def test_bundled_model_carries_its_card():
    path = get_task("catheter").bundled_model
    spec = read_spec(path)
    assert spec.task == "catheter" and spec.architecture == get_task("catheter").recipe.architecture
    assert spec.in_channels == 1 and spec.preprocessing["size"] == [256, 256]
    assert spec.preprocessing["mode"] == "tile" and "ImageNet" in spec.training["initialisation"]
    assert spec.version and spec.training["steps"] > 0
    assert 0 < spec.metrics["validation_dice"] <= 1
    assert path.with_suffix(".md").is_file()
    assert path.stat().st_size < 25e6  # fp16 storage
    json.dumps(spec.classes)  # metadata is plain JSON
