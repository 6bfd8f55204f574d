"""`cardioseg segment`: output geometry on real MRML, and clear errors on bad input."""
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from Training import fluoro
from Training.cli import main
from Training.errors import InputError
from Training.modelfile import load_model, save_model


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    """A generated run as uint16 NRRD with non-trivial geometry, and its mask."""
    d = tmp_path_factory.mktemp("run")
    frames, masks = fluoro.generate_run(fluoro.HELD_OUT_SEED_BASE + 42, n_frames=3, size=(200, 240))
    img = sitk.GetImageFromArray(frames.round().astype(np.uint16))
    img.SetSpacing((0.3, 0.25, 2.0))
    img.SetOrigin((-30.0, 12.5, 7.0))
    img.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))  # rotated in plane
    path = d / "run.nrrd"
    sitk.WriteImage(img, str(path))
    return path, masks


def _load_into_scene(volume_path, seg_path):
    import slicer

    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    vsn = slicer.vtkMRMLVolumeArchetypeStorageNode()
    vsn.SetFileName(str(volume_path))
    assert vsn.ReadData(volume)
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    ssn = slicer.vtkMRMLSegmentationStorageNode()
    ssn.SetFileName(str(seg_path))
    assert ssn.ReadData(seg)
    return scene, volume, seg


def test_segment_output_opens_in_slicer_over_the_input(run_file, tmp_path):
    import slicer
    import vtk

    volume_path, masks = run_file
    out = tmp_path / "run.seg.nrrd"
    r = subprocess.run([sys.executable, "-m", "Training", "segment", "--task", "catheter", str(volume_path), str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "3 frames" in r.stdout
    scene, volume, seg = _load_into_scene(volume_path, out)
    segmentation = seg.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 1
    segment = segmentation.GetNthSegment(0)
    assert segment.GetName() == "Catheter"
    assert np.allclose(segment.GetColor(), (1.0, 0.85, 0.1), atol=1e-3)
    tag = vtk.mutable("")
    assert segment.GetTag("TerminologyEntry", tag) and "SCT^19923001^Catheter" in str(tag)
    # export the segment onto the input volume's voxel grid and compare with the true mask
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segmentation.GetNthSegmentID(0))
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(seg, ids, labelmap, volume)
    labels = slicer.util.arrayFromVolume(labelmap)
    assert labels.shape == masks.shape
    a, b = labels > 0, masks > 0
    assert 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()) > 0.8
    # and it is exactly the file's label array, voxel for voxel
    assert np.array_equal(labels, sitk.GetArrayFromImage(sitk.ReadImage(str(out))))
    m1, m2 = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(m1)
    labelmap.GetIJKToRASMatrix(m2)
    assert np.allclose(slicer.util.arrayFromVTKMatrix(m1), slicer.util.arrayFromVTKMatrix(m2))


def _write(path, array, vector=False):
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=vector), str(path))
    return path


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, tiny_model):
    d = tmp_path_factory.mktemp("bad")
    ramp = np.arange(32 * 32, dtype=np.float32).reshape(32, 32)
    other_task = d / "heart.safetensors"
    model, spec = load_model(tiny_model)
    spec.task = "heart-ct"
    save_model(other_task, model, spec)
    truncated = d / "truncated.safetensors"
    truncated.write_bytes(tiny_model.read_bytes()[:5000])
    nan = ramp.copy()
    nan[3, 3] = np.nan
    (d / "empty.nrrd").write_bytes(b"")
    return {
        "4d": (_write(d / "4d.nrrd", np.tile(ramp, (2, 2, 1, 1))), None, "4D"),
        "rgb": (_write(d / "rgb.png", np.dstack([ramp.astype(np.uint8)] * 3), vector=True), None, "colour"),
        "empty": (d / "empty.nrrd", None, "cannot read empty.nrrd"),
        "nan": (_write(d / "nan.nrrd", np.stack([nan, ramp])), None, "NaN"),
        "constant": (_write(d / "constant.nrrd", np.full((2, 32, 32), 5, np.int16)), None, "constant"),
        "other-task model": (_write(d / "ok.nrrd", np.stack([ramp, ramp])), other_task, "model for task 'heart-ct'"),
        "truncated model": (d / "ok.nrrd", truncated, "truncated or corrupt"),
        "missing input": (d / "missing.nrrd", None, "not found"),
    }


@pytest.mark.parametrize("case", ["4d", "rgb", "empty", "nan", "constant", "other-task model", "truncated model", "missing input"])
def test_bad_input_gives_one_clear_line_and_nonzero_exit(bad_inputs, case, tmp_path, capsys, tiny_model):
    image, model, message = bad_inputs[case]
    out = tmp_path / "out.seg.nrrd"
    code = main(["segment", str(image), str(out), "--model", str(model or tiny_model)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("cardioseg: error:") and message in err[-1], err
    assert not out.exists()


def test_dicom_series_folder_is_read_as_frames(tmp_path, tiny_model):
    from Training.imagefiles import read_image

    frames = (np.random.default_rng(5).random((3, 40, 48)) * 4000).astype(np.uint16)
    vol = sitk.GetImageFromArray(frames)
    vol.SetSpacing((0.3, 0.3, 1.0))
    folder = tmp_path / "dicom"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for i in range(3):
        s = vol[:, :, i]
        for tag, value in {"0020|000d": "1.2.826.0.1.3680043.2.1125.1", "0020|000e": "1.2.826.0.1.3680043.2.1125.2",
                           "0008|0060": "XA", "0020|0013": str(i + 1), "0020|0037": "1\\0\\0\\0\\1\\0",
                           "0020|0032": "\\".join(map(str, vol.TransformIndexToPhysicalPoint((0, 0, i))))}.items():
            s.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"frame{i}.dcm"))
        writer.Execute(s)
    image = read_image(folder)
    assert image.GetSize() == (48, 40, 3)
    assert np.array_equal(sitk.GetArrayFromImage(image), frames)
    out = tmp_path / "dicom.seg.nrrd"
    assert main(["segment", str(folder), str(out), "--model", str(tiny_model)]) == 0
    assert sitk.ReadImage(str(out)).GetSize() == (48, 40, 3)
    import Training.imagefiles as imagefiles  # a series too large for memory is refused before it is read

    with pytest.MonkeyPatch.context() as m:
        m.setattr(imagefiles, "_memory_available", lambda: 2 * frames.nbytes - 2)
        with pytest.raises(InputError, match=r"^DICOM series in dicom takes 0\.0 MiB once read, more than half"):
            read_image(folder)
        m.setattr(imagefiles, "_memory_available", lambda: 2 * frames.nbytes)
        assert read_image(folder).GetSize() == (48, 40, 3)


def test_segment_writes_each_frames_uncertainty_and_review_rank(run_file, tmp_path, capsys):
    import csv

    volume_path, masks = run_file
    out, table = tmp_path / "run.seg.nrrd", tmp_path / "uncertainty.csv"
    assert main(["segment", "--task", "catheter", str(volume_path), str(out), "--uncertainty", str(table)]) == 0
    rows = list(csv.DictReader(table.open()))
    assert [int(r["frame"]) for r in rows] == [0, 1, 2]
    values = [float(r["uncertainty"]) for r in rows]
    assert all(0 <= v <= 1 for v in values)
    ranks = [int(r["rank"]) for r in rows]
    assert sorted(ranks) == [1, 2, 3] and ranks[int(np.argmax(values))] == 1
    assert sum(int(r["labelled_pixels"]) for r in rows) > 0
    assert f"frame {int(np.argmax(values))}" in capsys.readouterr().out
    # never over the input, and the output is checked before any work
    assert main(["segment", "--task", "catheter", str(volume_path), str(tmp_path / "b.seg.nrrd"),
                 "--uncertainty", str(volume_path)]) != 0
    assert "--uncertainty" in capsys.readouterr().err
    assert not (tmp_path / "b.seg.nrrd").exists()


def test_adapt_fine_tunes_on_the_reviewed_frames_and_segments_the_others(tmp_path, tiny_model, capsys):
    """Export, fine-tune and segment in one command: the reviewed frames keep the user's labels
    exactly, the others are the adapted model's, and everything is written where it was asked."""
    from Training.imagefiles import label_file_kind  # noqa: F401 (the writer the command uses)
    from Training.predictor import Predictor
    from Training.stress_catheter import stress_run

    frames, masks = stress_run(fluoro.HELD_OUT_SEED_BASE + 77, 6, (64, 64), "confusers")
    img = sitk.GetImageFromArray(frames.round().astype(np.uint16))
    img.SetSpacing((0.3, 0.3, 1.0))
    image, labels = tmp_path / "in" / "run.nrrd", tmp_path / "in" / "run.labels.nrrd"
    image.parent.mkdir()
    sitk.WriteImage(img, str(image))
    lab = sitk.GetImageFromArray(masks)
    lab.CopyInformation(img)
    sitk.WriteImage(lab, str(labels))
    before = {p: p.read_bytes() for p in image.parent.iterdir()}
    out = tmp_path / "out" / "run.seg.nrrd"
    args = ["adapt", str(out), "--task", "catheter", "--image", str(image), "--labels", str(labels),
            "--frames", "0-2", "--model", str(tiny_model), "--epochs", "2"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "3 reviewed frame(s) kept, 3 segmented with the adapted model" in printed
    (model,) = (tmp_path / "out").glob("run-adapt/*/model.safetensors")
    result = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    result = result if result.ndim == 3 else result[..., 0]
    np.testing.assert_array_equal(result[:3], masks[:3])  # reviewed frames untouched
    expected = Predictor(model, task="catheter").predict(frames[3:].round().astype(np.uint16))
    np.testing.assert_array_equal(result[3:], expected)
    assert {p: p.read_bytes() for p in image.parent.iterdir()} == before  # inputs unchanged, nothing added
    _, spec = load_model(model)
    assert spec.training["cases"] == 3 and spec.training["epochs_run"] == 2
    # a frame that does not exist is one clear line, before any training
    assert main([*args[:-6], "--frames", "9", "--model", str(tiny_model)]) == 2
    assert "frame 9 does not exist" in capsys.readouterr().err
