"""`cardioseg segment --task heart-ct|echo` and `cardioseg score` for HeartSeg's tasks, with the
bundled models: files in and out, measurements printed, and one clear line for bad input."""
import numpy as np
import pytest
import SimpleITK as sitk

from Training import ct, echo
from Training.cli import main
from Training.metrics import case_metrics
from Training.echo import is_ed, is_es


@pytest.fixture(scope="module")
def ct_file(tmp_path_factory):
    """A generated chest CT written in a non-LPS voxel order (k runs superior->inferior)."""
    vol, mask, info = ct.generate_ct(ct.HELD_OUT_SEED_BASE + 21, shape=(36, 160, 160))
    img = sitk.GetImageFromArray(np.ascontiguousarray(vol[::-1]).astype(np.int16))
    dz, dy, dx = info["spacing"]
    img.SetSpacing((dx, dy, dz))
    img.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, -1))
    path = tmp_path_factory.mktemp("ct") / "chest.nii.gz"
    sitk.WriteImage(img, str(path))
    return path, mask[::-1], info


def test_ct_segment_writes_the_heart_in_the_input_geometry_and_its_volume(ct_file, tmp_path, capsys):
    path, mask, info = ct_file
    out = tmp_path / "chest.seg.nrrd"
    assert main(["segment", "--task", "heart-ct", str(path), str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    seg = sitk.ReadImage(str(out))
    assert seg.GetDirection() == sitk.ReadImage(str(path)).GetDirection()
    assert seg.GetMetaData("Segment0_Name") == "Heart"
    labels = sitk.GetArrayFromImage(seg)
    assert case_metrics(labels, mask, ["Heart"])["Heart"]["dice"] >= 0.85
    ml = float(next(line for line in lines if line.startswith("Heart volume:")).split()[2])
    assert ml == pytest.approx(info["heart_ml"], rel=0.15)


def test_echo_segment_prints_the_lv_area_curve_and_ed_es(tmp_path, capsys):
    frames, truth, info = echo.generate_clip(echo.HELD_OUT_SEED_BASE + 22, n_frames=12)
    img = sitk.GetImageFromArray(frames.astype(np.uint8))
    img.SetSpacing((info["pixel_spacing_mm"][1], info["pixel_spacing_mm"][0], 1.0))
    path, out = tmp_path / "clip.nrrd", tmp_path / "clip.seg.nrrd"
    sitk.WriteImage(img, str(path))
    assert main(["segment", "--task", "echo", str(path), str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    seg = sitk.ReadImage(str(out))
    assert [seg.GetMetaData(f"Segment{i}_Name") for i in range(3)] == ["LV endocardium", "Myocardium", "Left atrium"]
    areas = next(line for line in lines if line.startswith("LV area per frame")).split(":")[1].split()
    assert len(areas) == 12
    ed, es = (int(w.rstrip(",")) for w in next(line for line in lines if line.startswith("end-diastolic")).split()[2::3])
    assert is_ed(info["contraction"], ed) and is_es(info["contraction"], es), (ed, es, info["contraction"])


@pytest.mark.parametrize("task, case, message", [
    ("echo", "ct", "like a CT in Hounsfield units"),
    ("heart-ct", "2d", "single 2D image"),
    ("heart-ct", "echo", "not a CT in Hounsfield units"),
])
def test_bad_input_for_each_heart_task_is_one_clear_line(ct_file, tmp_path, capsys, task, case, message):
    if case == "ct":
        path = ct_file[0]
    elif case == "2d":
        path = tmp_path / "slice.nrrd"
        sitk.WriteImage(sitk.ReadImage(str(ct_file[0]))[:, :, 10], str(path))
    else:
        path = tmp_path / "clip.nrrd"
        sitk.WriteImage(sitk.GetImageFromArray(echo.generate_clip(1, n_frames=3, size=(96, 96))[0].astype(np.uint8)),
                        str(path))
    out = tmp_path / "out.seg.nrrd"
    assert main(["segment", "--task", task, str(path), str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("cardioseg: error:") and message in err[-1], err
    assert not out.exists()


def test_ct_without_a_heart_is_an_empty_result_with_a_message(tmp_path, capsys):
    rng = np.random.default_rng(1)
    phantom = (rng.normal(-1000, 15, (10, 96, 96))).astype(np.int16)
    phantom[:, 80:88] = 150
    path, out = tmp_path / "phantom.nrrd", tmp_path / "phantom.seg.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(phantom), str(path))
    assert main(["segment", "--task", "heart-ct", str(path), str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "no Heart found in the input; the segmentation is empty" in stdout
    assert "Heart volume: 0.0 mL" in stdout
    assert not sitk.GetArrayFromImage(sitk.ReadImage(str(out))).any()


def test_score_reports_each_task(capsys):
    assert main(["score", "--task", "echo", "--runs", "1", "--frames", "4"]) == 0
    text = capsys.readouterr().out
    assert "LV endocardium" in text and "Left atrium" in text and "ED frame right in" in text
    assert main(["score", "--task", "heart-ct", "--runs", "1", "--size", "128"]) == 0
    assert "mean volume Dice" in capsys.readouterr().out


def test_original_unet_trains_by_name_for_a_heart_task(tmp_path, capsys):
    from Training.modelfile import read_spec
    from Training.predictor import Predictor

    out = tmp_path / "heart_original.safetensors"
    assert main(["train-synthetic", "--task", "heart-ct", "--arch", "unet-original", "--size", "64", "--steps", "2",
                 "--batch", "2", "--ckpt", str(tmp_path / "ckpt"), "--out", str(out)]) == 0
    spec = read_spec(out)
    assert spec.architecture == "unet-original" and spec.preprocessing["size"] == [64, 64]
    assert spec.preprocessing["orientation"] == "LPS"
    widths = [m.out_channels for m in Predictor(out).model.modules() if hasattr(m, "out_channels")]
    assert max(widths) == 1024 and 64 in widths


def test_exported_ct_slices_train_and_evaluate_in_the_model_orientation(tmp_path, capsys):
    """Slices of a CT stored with rows and columns swapped are exported as they are; training and
    evaluation turn them to the model's LPS orientation, as the predictor does for volumes."""
    from Training.modelfile import read_spec
    from Training.tasks import get_task
    from Training.train import _model_orientation, evaluate
    from Training.trainingfolder import read_training_folder

    vol, mask, info = ct.generate_ct(ct.HELD_OUT_SEED_BASE + 23, shape=(30, 128, 128))
    dz, dy, dx = info["spacing"]
    img = sitk.GetImageFromArray(np.ascontiguousarray(vol.transpose(0, 2, 1)).astype(np.int16))
    img.SetSpacing((dy, dx, dz))
    img.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, 1))  # i runs posterior, j runs left
    lab = sitk.GetImageFromArray(np.ascontiguousarray(mask.transpose(0, 2, 1)))
    lab.CopyInformation(img)
    sitk.WriteImage(img, str(tmp_path / "ct.nrrd"))
    sitk.WriteImage(lab, str(tmp_path / "mask.nrrd"))
    heart = [k for k in range(len(mask)) if mask[k].any()]
    picks = ",".join(str(k) for k in heart[len(heart) // 4::len(heart) // 4][:3])
    data = tmp_path / "folder"
    assert main(["export", "--task", "heart-ct", "--image", str(tmp_path / "ct.nrrd"), "--labels",
                 str(tmp_path / "mask.nrrd"), "--frames", picks, "--out", str(data)]) == 0
    folder = read_training_folder(data)
    spec = read_spec(get_task("heart-ct").bundled_model)
    for case in folder.cases:
        image, label, geometry = folder.load(case.case_id)
        assert not np.array_equal(image, vol[case.frame_index])  # stored transposed
        oriented, oriented_label = _model_orientation(image, label, geometry, spec, case.case_id)
        np.testing.assert_array_equal(oriented, vol[case.frame_index])
        np.testing.assert_array_equal(oriented_label, mask[case.frame_index])
    rows, summary, names = evaluate(get_task("heart-ct").bundled_model, data)
    assert len(rows) == 3 and summary["Heart"]["dice"] >= 0.85, summary
