"""Shared fixtures: a tiny (untrained) model file and a real MRML scene from slicer-core."""
import os

import pytest

from Training.modelfile import ModelSpec, save_model
from Training.tasks import get_task


SKIP_MRML = "CARDIOSEG_SKIP_MRML"
SWEEP_SUMMARY = pytest.StashKey[str]()  # the hostile-input sweep's summary line (test_hostile_inputs.py)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    line = config.stash.get(SWEEP_SUMMARY, None)
    if line:
        terminalreporter.write_line(line)


def import_slicer():
    """The ``slicer`` package of slicer-core, for the MRML tests. If it does not import, that is
    an error (``make test`` fails), never a silent skip; only a user who sets
    CARDIOSEG_SKIP_MRML=1 skips these tests, on purpose."""
    if os.environ.get(SKIP_MRML) == "1":
        pytest.skip(f"{SKIP_MRML}=1: MRML tests skipped on request", allow_module_level=True)
    import slicer

    return slicer


def _tiny_model(path, task, architecture, intensity):
    """A tiny untrained model file of ``task``: 64x64 input, 16-channel decoder."""
    spec = ModelSpec(
        task=task,
        architecture=architecture,
        architecture_args={"decoder_channels": [16, 16, 16, 16, 16]},
        in_channels=get_task(task).in_channels,
        classes=list(get_task(task).classes),
        preprocessing={"size": [64, 64], "intensity": intensity, "threshold": 0.5},
    )
    return save_model(path, spec.build(), spec)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Path of a tiny untrained catheter model (64x64 input, 16-channel decoder)."""
    return _tiny_model(tmp_path_factory.mktemp("model") / "tiny.safetensors", "catheter", "unet-efficientnet-b2",
                       {"method": "percentile", "lower": 0.5, "upper": 99.5})


@pytest.fixture(scope="session")
def tiny_instruments_model(tmp_path_factory):
    """Path of a tiny untrained instruments model: 3 input channels, 64x64, RGB window 0-255.
    The weights are seeded, so its (arbitrary) output is the same on every run."""
    import torch

    torch.manual_seed(0)
    return _tiny_model(tmp_path_factory.mktemp("model") / "instruments.safetensors", "instruments", "unet-resnet18",
                       {"method": "window", "lower": 0, "upper": 255})


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


def score_stress_output(capsys, task, model, *extra):
    """Run ``cardioseg score --suite stress`` (1 run, 1 frame, 64 px) and check what it prints:
    the JSON first (every kind of the task's suite, the mean and the worst over the kinds with
    something to find, a share of labelled pixels for the others), then one line per kind and
    the mean. Returns (the JSON, the text)."""
    import json

    import numpy as np

    from Training.cli import main

    suite = get_task(task).stress_module()
    assert main(["score", "--task", task, "--model", str(model), "--suite", "stress", "--runs", "1", "--frames", "1",
                 "--size", "64", *extra]) == 0
    out = capsys.readouterr().out.splitlines()
    r = json.loads(out[0])
    assert list(r["kinds"]) == list(suite.KINDS)
    negative = getattr(suite, "NEGATIVE_KINDS", ())
    found = {k: v["dice"] for k, v in r["kinds"].items() if k not in negative}
    assert all(0 <= d <= 1 for d in found.values())
    assert r["worst"] == min(found.values()) and r["worst_kind"] == min(found, key=found.get)
    assert abs(r["mean"] - np.mean(list(found.values()))) < 1e-9
    for kind in negative:
        assert 0 <= r["kinds"][kind]["labelled_fraction"] <= 1
    text = "\n".join(out[1:])
    for kind in suite.KINDS:
        assert kind in text
    assert "stress mean Dice" in text and (not negative or "% of pixels labelled" in text)
    return r, text
