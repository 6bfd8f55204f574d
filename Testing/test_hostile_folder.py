"""Hostile training folders and input files (issue 13): a case ID that would name files outside
the folder (``../../victim/lab``) is refused before anything is written, and a truncated or
corrupt image file (which SimpleITK reads as zeros) is refused with the case or file named."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from Training import folderlayout
from Training import trainingfolder as tf
from Training.cli import main
from Training.filecheck import IncompleteFileError, check_complete
from Training.trainingfolder import TrainingFolderError, read_training_folder

HOSTILE = "../../victim/lab"


@pytest.fixture
def run_files(tmp_path):
    """A 3-frame uint16 run (NRRD) and its labelmap. Noise, so that the exported files are tens
    of KB: cut in half, a file still has its header, and SimpleITK reads it without an error."""
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 4000, (3, 192, 192)).astype(np.uint16)
    labels = (rng.random(frames.shape) < 0.3).astype(np.uint8)
    paths = []
    for name, a in (("run.nrrd", frames), ("run-labels.nrrd", labels)):
        img = sitk.GetImageFromArray(a)
        img.SetSpacing((0.3, 0.3, 2.0))
        sitk.WriteImage(img, str(tmp_path / name))
        paths.append(tmp_path / name)
    return paths


def export(run_files, out, frames) -> int:
    image, labels = run_files
    return main(["export", "--image", str(image), "--labels", str(labels), "--frames", frames, "--out", str(out)])


def tree(root) -> dict:
    """{relative path: bytes, or None for a folder} of everything under ``root`` but lock files."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): None if p.is_dir() else p.read_bytes()
            for p in sorted(root.rglob("*")) if p.name != ".cardioseg.lock"}


def edit_json(folder, fn):
    path = Path(folder) / "dataset.json"
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def rename_case(folder, old, new, paths=None):
    """Rename case ``old`` to ``new`` in dataset.json's case list and in the manifest; ``paths``
    (images, label) replaces its file paths too."""
    def fn(doc):
        entry = doc["dataset"].pop(old)
        if paths:
            entry = {"images": paths[0], "label": paths[1]}
        doc["dataset"][new] = entry
        doc["cardioseg"]["cases"][new] = doc["cardioseg"]["cases"].pop(old)
    edit_json(folder, fn)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("cardioseg: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------------------- case IDs (point 2)


@pytest.mark.parametrize("rename_paths", [False, True], ids=["ids only", "ids and paths"])
def test_export_refuses_a_case_id_that_leaves_the_folder(run_files, tmp_path, capsys, rename_paths):
    """A case renamed to ../../victim/lab in dataset.json and the manifest: a later export used
    to move that case's files onto ../../victim/lab_0000.nii.gz and ../../victim/lab.nii.gz,
    outside the folder. Now it stops before writing anything, anywhere."""
    folder = tmp_path / "data" / "tf"
    assert export(run_files, folder, "0,1") == 0
    victim = folder.parent / "victim"  # imagesTr/../../victim = the folder's parent's victim/
    victim.mkdir()
    for name in ("lab_0000.nii.gz", "lab.nii.gz"):
        (victim / name).write_bytes(b"the user's own file")
    paths = ([f"imagesTr/{HOSTILE}_0000.nii.gz"], f"labelsTr/{HOSTILE}.nii.gz") if rename_paths else None
    rename_case(folder, "run_f0000", HOSTILE, paths)
    before = tree(tmp_path)
    capsys.readouterr()

    code = export(run_files, folder, "2")
    after = tree(tmp_path)
    outside = lambda t: {k: v for k, v in t.items() if not k.startswith("data/tf")}  # noqa: E731
    assert outside(after) == outside(before)  # nothing outside the folder was created or changed
    assert after == before  # nor in it
    assert code == 2
    err = one_error_line(capsys)
    assert str(folder) in err and HOSTILE in err
    assert ("not a plain file name" in err) or (rename_paths and "outside the folder" in err)
    with pytest.raises(TrainingFolderError, match="not a plain file name|outside the folder"):
        tf.export_frames(folder, "catheter", [])
    assert tree(tmp_path) == before


@pytest.mark.parametrize("bad", [HOSTILE, "..", ".hidden", "a/b", "a\\b", "a..b", "", "a b", "c:x"])
def test_the_reader_refuses_case_ids_that_are_not_plain_names(run_files, tmp_path, bad):
    folder = tmp_path / "tf"
    assert export(run_files, folder, "0") == 0
    rename_case(folder, "run_f0000", bad)
    with pytest.raises(TrainingFolderError, match="not a plain file name") as e:
        read_training_folder(folder, verify_pixels=False)
    assert repr(bad) in str(e.value)
    edit_json(folder, lambda d: d["dataset"].update({"run_f0000": d["dataset"].pop(bad)}))  # the manifest only
    with pytest.raises(TrainingFolderError, match="not a plain file name"):
        read_training_folder(folder, verify_pixels=False)


def test_the_reader_refuses_a_case_id_from_a_scanned_folder(run_files, tmp_path):
    """Without the 'dataset' key the case IDs come from the file names of imagesTr."""
    folder = tmp_path / "tf"
    assert export(run_files, folder, "0") == 0
    edit_json(folder, lambda d: (d.pop("dataset"), d.pop("cardioseg")))
    for d, name in (("imagesTr", "run_f0000_0000.nii.gz"), ("labelsTr", "run_f0000.nii.gz")):
        os.rename(folder / d / name, folder / d / name.replace("run_f0000", "run f0000"))
    with pytest.raises(TrainingFolderError, match=r"case ID 'run f0000' is not a plain file name"):
        read_training_folder(folder)


def test_nnunet_style_case_ids_with_dots_and_dashes_are_read(run_files, tmp_path):
    folder = tmp_path / "tf"
    assert export(run_files, folder, "0") == 0
    rename_case(folder, "run_f0000", "BraTS-GLI-00000.000")
    assert [c.case_id for c in read_training_folder(folder).cases] == ["BraTS-GLI-00000.000"]


def test_the_writer_refuses_a_case_id_that_is_not_a_plain_name():
    """Defence in depth: the writer names no file after an ID the reader would refuse."""
    for name in (lambda cid: folderlayout.image_name(cid, 0), folderlayout.label_name):
        with pytest.raises(TrainingFolderError, match="not a plain file name"):
            name(HOSTILE)
    assert folderlayout.image_name("run_f0000", 1) == "imagesTr/run_f0000_0001.nii.gz"


def test_evaluate_and_train_refuse_a_case_id_that_leaves_the_folder(run_files, tmp_path, capsys, tiny_model):
    folder = tmp_path / "tf"
    assert export(run_files, folder, "0,1,2") == 0
    rename_case(folder, "run_f0001", HOSTILE)
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tiny_model), "--data", str(folder)]) == 2
    assert HOSTILE in one_error_line(capsys)
    out = tmp_path / "model.safetensors"
    assert main(["train", "--data", str(folder), "--init", str(tiny_model), "--epochs", "1", "--out", str(out),
                 "--ckpt", str(tmp_path / "ckpt")]) == 2
    assert HOSTILE in one_error_line(capsys)
    assert not out.exists()


# ----------------------------------------------------------------------------- damaged files (point 4)


def truncate(path, keep=0.5):
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])


def break_crc(path):
    """Flip a byte of the gzip CRC (bytes -8..-5). SimpleITK reads such a file, wrongly or
    right, or fails with 'Unable to determine ImageIO reader', depending on its size."""
    data = bytearray(Path(path).read_bytes())
    data[-8] ^= 0xFF
    Path(path).write_bytes(bytes(data))


DAMAGE = {"truncated": (truncate, "truncated"), "bad CRC": (break_crc, "corrupt")}


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("which", ["image", "label"])
def test_a_damaged_case_file_is_refused_with_the_case_named(run_files, tmp_path, capsys, tiny_model, which, damage):
    """SimpleITK reads a truncated .nii.gz as zeros, and does not check the CRC: training and
    evaluation went on with wrong pixels. Reading, evaluate and train now stop, naming the case."""
    folder = tmp_path / "tf"
    assert export(run_files, folder, "0,1,2") == 0
    path = folder / ("imagesTr/run_f0001_0000.nii.gz" if which == "image" else "labelsTr/run_f0001.nii.gz")
    damage_fn, word = DAMAGE[damage]
    damage_fn(path)
    if damage == "truncated":
        assert (sitk.GetArrayFromImage(sitk.ReadImage(str(path))) == 0).mean() > 0.4  # read as zeros, no error
    expected = rf"case run_f0001: cannot read {path.parent.name}/{path.name}: the file is {word}"
    with pytest.raises(TrainingFolderError, match=expected):
        read_training_folder(folder)
    if damage == "truncated":  # its header is intact: the export's reader (headers only) opens the folder
        fast = read_training_folder(folder, verify_pixels=False)
        fast.load("run_f0000")
        with pytest.raises(TrainingFolderError, match=expected):
            fast.load("run_f0001")
    capsys.readouterr()
    out = tmp_path / "model.safetensors"
    for argv in (["evaluate", "--model", str(tiny_model), "--data", str(folder)],
                 ["train", "--data", str(folder), "--init", str(tiny_model), "--epochs", "1", "--out", str(out),
                  "--ckpt", str(tmp_path / "ckpt")]):
        assert main(argv) == 2
        err = one_error_line(capsys)
        assert "case run_f0001" in err and f"the file is {word}" in err, err
    assert not out.exists()


def test_reexport_replaces_a_truncated_stored_case(run_files, tmp_path):
    """The export compares the frame with the stored case: a truncated stored file is rewritten
    (it used to read as another image, and the export stopped with 'holds another image')."""
    folder = tmp_path / "tf"
    assert export(run_files, folder, "0,1") == 0
    truncate(folder / "imagesTr/run_f0001_0000.nii.gz")
    assert export(run_files, folder, "1") == 0
    read_training_folder(folder)  # complete again


def _write_input(path, kind):
    a = np.random.default_rng(1).integers(0, 4000, (2, 128, 128)).astype(np.uint16)
    img = sitk.GetImageFromArray(a)
    sitk.WriteImage(img, str(path), useCompression=kind != "raw")


@pytest.mark.parametrize("name, damage, word", [
    ("run.nii.gz", truncate, "truncated"),
    ("run.nii.gz", break_crc, "corrupt"),
    ("run.nii", truncate, "truncated"),
    ("run.nrrd", truncate, "truncated"),
    ("run.nrrd", break_crc, "corrupt"),
])
def test_segment_refuses_a_damaged_input_file(tmp_path, capsys, tiny_model, name, damage, word):
    path = tmp_path / name
    _write_input(path, "raw" if name == "run.nii" else "gzip")
    damage(path)
    out = tmp_path / "out.seg.nrrd"
    assert main(["segment", str(path), str(out), "--model", str(tiny_model)]) == 2
    assert one_error_line(capsys).startswith(f"cardioseg: error: cannot read {name}: the file is {word}")
    assert not out.exists()


@pytest.mark.parametrize("name", ["f.nii.gz", "f.nii", "f.nrrd", "f.raw.nrrd", "f.nhdr", "f.mha", "f.png",
                                  "f.seg.nrrd"])
def test_complete_files_pass_the_check(tmp_path, name):
    a = np.random.default_rng(2).integers(0, 255, (2, 64, 64)).astype(np.uint8)
    img = sitk.GetImageFromArray(a[0] if name.endswith(".png") else a, isVector=False)
    if name.endswith(".seg.nrrd"):
        img = sitk.GetImageFromArray(np.stack([a, a], axis=-1), isVector=True)  # two layers
    sitk.WriteImage(img, str(tmp_path / name), useCompression=not name.endswith((".raw.nrrd", ".nii")))
    check_complete(tmp_path / name)
    if name == "f.nhdr":  # the data are in a detached file
        data = next(p for p in tmp_path.iterdir() if p.name.startswith("f.raw"))
        truncate(data)
        with pytest.raises(IncompleteFileError, match="cannot read f.nhdr: the file is truncated"):
            check_complete(tmp_path / name)
