"""The user models folder: install, list, use by name, and refusal of bad files and the bundled folder."""
import ast
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from safetensors.torch import save_file

from Training.cli import main
from Training.modelfile import ModelFileError, load_model, save_model
from Training.tasks import get_task
from Training.usermodels import install_model, list_models, resolve_model, user_models_dir

REPO = Path(__file__).resolve().parent.parent
BUNDLED_DIR = Path(get_task("catheter").bundled_model).parent


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    """An empty user models folder (never the real one), and a working directory without model files."""
    folder = tmp_path / "user-models"
    monkeypatch.setenv("CARDIOSEG_MODELS_DIR", str(folder))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return folder


def _variant(tiny_model, folder, name="tiny.safetensors", **changes):
    """A copy of the tiny model with spec fields changed, saved as folder/name."""
    model, spec = load_model(tiny_model)
    for k, v in changes.items():
        setattr(spec, k, v)
    folder.mkdir(parents=True, exist_ok=True)
    return save_model(folder / name, model, spec)


def _model_files(folder):
    return sorted(p.name for p in Path(folder).iterdir()) if Path(folder).is_dir() else []


def test_folder_comes_from_the_environment_or_the_platform(monkeypatch, tmp_path):
    monkeypatch.setenv("CARDIOSEG_MODELS_DIR", str(tmp_path / "m"))
    assert user_models_dir() == tmp_path / "m"
    monkeypatch.delenv("CARDIOSEG_MODELS_DIR")
    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert user_models_dir() == tmp_path / "data" / "cardioseg" / "models"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert user_models_dir() == Path.home() / ".local" / "share" / "cardioseg" / "models"
    monkeypatch.setattr("sys.platform", "darwin")
    assert user_models_dir() == Path.home() / "Library" / "Application Support" / "cardioseg" / "models"
    monkeypatch.setattr("sys.platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert user_models_dir() == tmp_path / "local" / "cardioseg" / "models"


def test_install_then_list(models_dir, tiny_model, tmp_path):
    assert list_models() == [] and not models_dir.exists()  # listing creates nothing
    dest = install_model(tiny_model, task="catheter")
    assert dest == models_dir / "tiny.safetensors"
    assert dest.read_bytes() == tiny_model.read_bytes()
    newer = install_model(_variant(tiny_model, tmp_path / "v2", "newer.safetensors", version="2.0.0",
                                   metrics={"validation_dice": 0.91}))
    os.utime(dest, (1_000_000, 1_000_000))
    (models_dir / "broken.safetensors").write_bytes(b"not a model")
    os.utime(models_dir / "broken.safetensors", (2_000_000, 2_000_000))
    models = list_models(task="catheter")
    assert [m.path.name for m in models] == [newer.name, "broken.safetensors", "tiny.safetensors"]
    assert models[0].spec.version == "2.0.0" and models[0].spec.metrics["validation_dice"] == 0.91
    assert models[1].broken and "not a readable model file" in models[1].error
    assert not models[2].broken and models[2].spec.task == "catheter"
    # another task's filter keeps only the broken file (its task is unknown)
    assert [m.path.name for m in list_models(task="heart-ct")] == ["broken.safetensors"]
    assert _model_files(models_dir) == sorted([newer.name, "broken.safetensors", "tiny.safetensors"])


def test_same_bytes_twice_is_one_file_and_a_different_file_is_kept_beside(models_dir, tiny_model, tmp_path):
    first = install_model(tiny_model)
    assert install_model(tiny_model) == first
    assert install_model(first) == first  # a file already in the folder
    other = _variant(tiny_model, tmp_path / "other", version="1.2.3")  # also named tiny.safetensors
    second = install_model(other)
    assert second == models_dir / "tiny-2.safetensors"
    assert first.read_bytes() == tiny_model.read_bytes()  # not overwritten
    assert second.read_bytes() == other.read_bytes()
    assert install_model(other) == second
    assert _model_files(models_dir) == ["tiny-2.safetensors", "tiny.safetensors"]


def _image(tmp_path):
    out = tmp_path / "run.nrrd"
    ramp = np.arange(2 * 40 * 48, dtype=np.float32).reshape(2, 40, 48)
    sitk.WriteImage(sitk.GetImageFromArray(ramp), str(out))
    return out


def test_cli_installs_lists_and_segments_with_a_bare_name(models_dir, tiny_model, tmp_path, capsys):
    assert main(["install-model", str(tiny_model), "--task", "catheter"]) == 0
    out = capsys.readouterr().out
    assert str(models_dir / "tiny.safetensors") in out and "version 0.0.0" in out
    assert main(["models", "--task", "catheter"]) == 0
    out = capsys.readouterr().out
    assert str(models_dir) in out and "tiny.safetensors  version 0.0.0  task catheter" in out

    image = _image(tmp_path)
    for name in ("tiny.safetensors", "tiny"):
        assert resolve_model(name) == models_dir / "tiny.safetensors"
        seg = tmp_path / f"{name}.seg.nrrd"
        assert main(["segment", str(image), str(seg), "--model", name]) == 0, capsys.readouterr().err
        assert sitk.ReadImage(str(seg)).GetSize() == (48, 40, 2)
    # the bare name really reads the installed file: damage it and segment fails naming it
    installed = models_dir / "tiny.safetensors"
    data = bytearray(installed.read_bytes())
    data[-100] ^= 0xFF
    installed.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["segment", str(image), str(tmp_path / "x.seg.nrrd"), "--model", "tiny.safetensors"]) == 2
    assert "tiny.safetensors failed its checksum" in capsys.readouterr().err
    assert main(["segment", str(image), str(tmp_path / "y.seg.nrrd"), "--model", "missing"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("cardioseg: error:") and "nor an installed model" in err[-1]


@pytest.fixture
def bad_models(tmp_path, tiny_model):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "corrupt.safetensors").write_bytes(os.urandom(3000))
    save_file({"w": torch.zeros(4)}, str(d / "plain.safetensors"))
    altered = bytearray(tiny_model.read_bytes())
    altered[-100] ^= 0xFF
    (d / "altered.safetensors").write_bytes(bytes(altered))
    _variant(tiny_model, d, "heart.safetensors", task="heart-ct")
    _variant(tiny_model, d, "knee.safetensors", task="knee-mri")
    return d


@pytest.mark.parametrize("name, message", [
    ("corrupt.safetensors", "corrupt.safetensors is not a readable model file"),
    ("plain.safetensors", "plain.safetensors is a safetensors file but not a CardioSeg model"),
    ("altered.safetensors", "altered.safetensors failed its checksum"),
    ("heart.safetensors", "heart.safetensors is a model for task 'heart-ct', not 'catheter'"),
])
def test_bad_files_are_refused_with_one_clear_line(models_dir, bad_models, name, message, capsys):
    with pytest.raises(ModelFileError, match=message):
        install_model(bad_models / name, task="catheter")
    assert main(["install-model", str(bad_models / name)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert err[-1].startswith("cardioseg: error:") and message in err[-1], err
    assert sum(line.startswith("cardioseg:") for line in err) == 1
    assert captured.out == ""
    assert _model_files(models_dir) == []


def test_model_for_an_unknown_task_is_refused_without_a_task(models_dir, bad_models):
    with pytest.raises(ModelFileError, match="unknown task 'knee-mri'"):
        install_model(bad_models / "knee.safetensors")


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def bundled_before():
    """Digests of the bundled folder; anything a failing test adds there is removed afterwards."""
    before = _digests(BUNDLED_DIR)
    yield before
    for p in set(_digests(BUNDLED_DIR)) - set(before):
        (BUNDLED_DIR / p).unlink()
    shutil.rmtree(BUNDLED_DIR / "user", ignore_errors=True)


@pytest.mark.parametrize("where", ["bundled folder", "inside it"])
def test_bundled_folder_is_never_written(monkeypatch, tiny_model, tmp_path, capsys, where, bundled_before):
    before = bundled_before
    assert get_task("catheter").bundled_model.name in before
    target = BUNDLED_DIR if where == "bundled folder" else BUNDLED_DIR / "user"
    monkeypatch.setenv("CARDIOSEG_MODELS_DIR", str(target))
    # a valid catheter model carrying the bundled model's file name
    same_name = _variant(tiny_model, tmp_path, get_task("catheter").bundled_model.name)
    with pytest.raises(ValueError, match="bundled models are never replaced"):
        install_model(same_name)
    assert main(["install-model", str(same_name)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("cardioseg: error:") and "bundled" in err[-1]
    assert _digests(BUNDLED_DIR) == before
    assert not (BUNDLED_DIR / "user").exists()


def test_module_uses_the_one_folder_definition():
    """The modules' shared code (CardioSegUI) finds the user models folder through Training.usermodels."""
    funcs = {}
    for path in (REPO / "CardioSegUI").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        funcs.update({f.name: ast.unparse(f) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)})
    assert "from Training.usermodels import user_models_dir" in funcs["userModelsDir"]
    assert "slicer.app" not in funcs["userModelsDir"]
    # Installing and listing through the Logic is tested on behaviour in test_module_logic.py.
