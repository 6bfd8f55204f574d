"""Hostile model files and models folders through the command line (issue 13): every problem is one
`cardioseg: error:` line and exit status 2, never a traceback."""
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from safetensors import safe_open
from safetensors.torch import save_file

from Training.cli import main
from Training.errors import CardioSegError
from Training.modelfile import FORMAT_VERSION, META_KEY, ModelFileError, _digest, load_model, read_spec, save_model
from Training.tasks import get_task
from Training.trainingfolder import Frame, export_frames
from Training.usermodels import check_model, list_models


def _tampered(tiny_model, path, edit, version=1):
    """The tiny model's tensors under an edited spec (``edit(info)`` returns any JSON value),
    written as ``format_version`` ``version`` with a digest that matches, so only the spec is wrong.
    Version 1 (tensor-only digest, as the bundled models) is read forever, so it is the hostile case."""
    with safe_open(str(tiny_model), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        info = json.loads(f.metadata()[META_KEY])
    info["format_version"] = version
    spec_json = json.dumps(edit(info))
    digest = _digest(tensors) if version == 1 else _digest(tensors, spec_json)
    save_file(tensors, str(path), metadata={META_KEY: spec_json, "sha256": digest})
    return path


def _one_error_line(capsys, *expected):
    """The command's stderr holds one `cardioseg: error:` line with ``expected`` and no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("cardioseg: error:")]
    assert len(lines) == 1, err
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """Two 64x64 grey 8-bit frames: fits the catheter and the echo task."""
    path = tmp_path_factory.mktemp("img") / "frames.nrrd"
    frames = (np.arange(2 * 64 * 64) % 251).astype(np.uint8).reshape(2, 64, 64)
    sitk.WriteImage(sitk.GetImageFromArray(frames), str(path))
    return path


@pytest.fixture(scope="module")
def training_folder(tmp_path_factory):
    """A small catheter training folder: two sources, two labelled frames each."""
    folder = tmp_path_factory.mktemp("tf") / "data"
    frames = []
    for s, source in enumerate(["runA", "runB"]):
        for k in range(2):
            label = np.zeros((64, 64), np.uint8)
            label[10 + 8 * k + 3 * s:14 + 8 * k + 3 * s, 6:58] = 1
            img = np.random.default_rng(10 * s + k).normal(1000, 60, (64, 64)) + 700.0 * label
            frames.append(Frame(image=img.astype(np.uint16), label=label, origin=(0.0, 0.0, float(k)),
                                spacing=(0.3, 0.3, 1.0), direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0),
                                source=source, frame_index=k))
    export_frames(folder, "catheter", frames)
    return folder


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    folder = tmp_path / "user-models"
    monkeypatch.setenv("CARDIOSEG_MODELS_DIR", str(folder))
    return folder


def _drop(key):
    def edit(info):
        del info[key]
        return info
    return edit


def _set(key, value, sub=None):
    def edit(info):
        (info[sub] if sub else info)[key] = value
        return info
    return edit


# (case, spec edit, text the error line names)
BAD_SPECS = [
    ("missing classes", _drop("classes"), "classes is missing"),
    ("missing preprocessing", _drop("preprocessing"), "preprocessing is missing"),
    ("bogus architecture_args", _set("architecture_args", {"bogus": 1}), "architecture_args"),
    ("string architecture_args", _set("architecture_args", "unet"), "architecture_args must be an object"),
    ("size 0x0", _set("size", [0, 0], sub="preprocessing"), "preprocessing.size"),
    ("huge size", _set("size", [10 ** 6, 10 ** 6], sub="preprocessing"), "preprocessing.size"),
    ("spec is a list", lambda info: [info], "the spec is a JSON list"),
    ("empty class list", _set("classes", []), "classes must be a non-empty list"),
    ("class without colour", _set("classes", [{"name": "Catheter", "terminology": ""}]), "classes"),
    ("unknown task", _set("task", "knee-mri"), "unknown task 'knee-mri'"),
    ("unknown architecture", _set("architecture", "vnet"), "unknown architecture 'vnet'"),
    ("two in_channels", _set("in_channels", 2), "in_channels"),
    ("unknown intensity", _set("intensity", {"method": "zscore"}, sub="preprocessing"), "preprocessing.intensity"),
    ("string percentile", _set("intensity", {"method": "percentile", "lower": "0", "upper": 99},
                               sub="preprocessing"), "preprocessing.intensity"),
    ("threshold 2", _set("threshold", 2, sub="preprocessing"), "preprocessing.threshold"),
    ("orientation number", _set("orientation", 3, sub="preprocessing"), "preprocessing.orientation"),
    ("version number", _set("version", 5), "version"),
    ("training list", _set("training", []), "training"),
    ("metrics string", _set("metrics", "good"), "metrics"),
]


@pytest.mark.parametrize("case, edit, names", BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_invalid_spec_is_one_error_line_in_every_command(case, edit, names, tiny_model, tmp_path, image,
                                                        training_folder, models_dir, capsys):
    """Point 6: segment --model, train --init and install-model refuse the file naming the field."""
    bad = _tampered(tiny_model, tmp_path / "bad.safetensors", edit)
    expected = ("bad.safetensors", "not a valid CardioSeg model", names)
    assert main(["segment", str(image), str(tmp_path / "out.seg.nrrd"), "--model", str(bad)]) == 2
    _one_error_line(capsys, *expected)
    assert main(["train", "--data", str(training_folder), "--init", str(bad), "--epochs", "1",
                 "--out", str(tmp_path / "trained.safetensors"), "--ckpt", str(tmp_path / "ckpt")]) == 2
    _one_error_line(capsys, *expected)
    assert main(["install-model", str(bad)]) == 2
    _one_error_line(capsys, *expected)
    assert not (tmp_path / "out.seg.nrrd").exists() and not (tmp_path / "trained.safetensors").exists()
    assert not models_dir.exists() or not list(models_dir.glob("*.safetensors"))


def test_spec_is_checksummed_and_must_fit_the_task(tiny_model, tmp_path, image, models_dir, capsys):
    """Point 13: new files (format 2) checksum the spec too; a file's classes and input channels
    must be its task's; the bundled format-1 files (tensor-only digest) still load."""
    with safe_open(str(tiny_model), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    assert json.loads(meta[META_KEY])["format_version"] == 2
    # the spec edited after writing, the digest left as it was: refused
    edited = tmp_path / "edited.safetensors"
    save_file(tensors, str(edited), metadata={**meta, META_KEY: meta[META_KEY].replace('"0.0.0"', '"9.9.9"')})
    with pytest.raises(ModelFileError, match="checksum"):
        load_model(edited)
    assert main(["segment", str(image), str(tmp_path / "e.seg.nrrd"), "--model", str(edited)]) == 2
    _one_error_line(capsys, "edited.safetensors failed its checksum")

    # catheter weights whose spec says echo (digest recomputed): not a model for the echo task
    for version in (1, 2):
        fake = _tampered(tiny_model, tmp_path / f"fake-echo-{version}.safetensors", _set("task", "echo"), version)
        for task in ("echo", None):
            with pytest.raises(ModelFileError, match="classes are Catheter, the task's are LV endocardium"):
                check_model(fake, task=task)
        assert main(["segment", "--task", "echo", str(image), str(tmp_path / "fake.seg.nrrd"),
                     "--model", str(fake)]) == 2
        _one_error_line(capsys, fake.name, "not a valid model for task 'echo'", "Catheter")
        assert main(["install-model", "--task", "echo", str(fake)]) == 2
        _one_error_line(capsys, fake.name, "not a valid model for task 'echo'")
    assert not (tmp_path / "fake.seg.nrrd").exists()
    # renamed classes, or the wrong number of input channels, do not fit the task either
    renamed = _tampered(tiny_model, tmp_path / "renamed.safetensors",
                        _set("classes", [{**get_task("catheter").classes[0], "name": "Guidewire"}]))
    with pytest.raises(ModelFileError, match="classes are Guidewire"):
        load_model(renamed, task="catheter")
    rgb = _tampered(tiny_model, tmp_path / "rgb.safetensors", _set("in_channels", 3))
    with pytest.raises(ModelFileError, match="3 input channel"):
        check_model(rgb, task="catheter")

    for task in ("catheter", "heart-ct"):
        bundled = get_task(task).bundled_model
        with safe_open(str(bundled), framework="pt") as f:
            assert json.loads(f.metadata()[META_KEY])["format_version"] == FORMAT_VERSION
        assert check_model(bundled, task=task).task == task
    old = _tampered(tiny_model, tmp_path / "format-1.safetensors", lambda info: info, 1)  # format v1 is still read
    assert check_model(old, task="catheter").task == "catheter"


def test_unusable_models_folder_is_one_error_line(tiny_model, tmp_path, monkeypatch, capsys):
    """Point 9: install-model into a models folder that is a file, lies below a file, or cannot
    be written (/proc/self refuses new files even to root)."""
    plain = tmp_path / "a-file"
    plain.write_text("not a folder")
    targets = [plain, plain / "sub", Path("/proc/self")]
    if Path("/sys").is_dir():
        targets.append(Path("/sys/cardioseg-models"))  # sysfs: no new folders, even for root
    for target in targets:
        monkeypatch.setenv("CARDIOSEG_MODELS_DIR", str(target))
        assert main(["install-model", str(tiny_model)]) == 2, target
        _one_error_line(capsys, f"user models folder {target}", "CARDIOSEG_MODELS_DIR")
    assert plain.read_text() == "not a folder"


def test_models_for_an_unknown_task_is_an_error(models_dir, capsys):
    """Point 15a: `cardioseg models --task bogus` names the known tasks (it counted a broken file
    as a model for 'bogus')."""
    models_dir.mkdir()
    (models_dir / "broken.safetensors").write_bytes(b"not a model")
    with pytest.raises(CardioSegError, match="unknown task 'bogus'; known: catheter"):
        list_models(task="bogus")
    assert main(["models", "--task", "bogus"]) == 2
    _one_error_line(capsys, "unknown task 'bogus'", "heart-ct")
    assert [m.broken for m in list_models(task="catheter")] == [True]  # broken files are still listed


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_model_file_gets_the_umask_mode(tiny_model, tmp_path, umask, mode):
    """Point 15b: safetensors writes 0600; a model file gets 0666 less the umask, like any file."""
    model, spec = load_model(tiny_model)
    old = os.umask(umask)
    try:
        out = save_model(tmp_path / "m.safetensors", model, spec)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == mode
    assert read_spec(out).task == "catheter" and not list(tmp_path.glob("*.tmp"))
