"""HeartSeg's tasks on real MRML (slicer-core) with the bundled models: CT heart slice by slice
in any volume orientation with its volume in mL, echo in 4 classes with the LV area curve and
ED/ES, task detection, and the bad inputs of each task."""
import numpy as np
import pytest

from conftest import import_slicer  # noqa: E402

slicer = import_slicer()

from CardioSegLib.measurements import lv_area_curve, show_area_curve, structure_volumes_ml  # noqa: E402
from CardioSegLib.scene import labels_from_segmentation  # noqa: E402
from CardioSegLib.segment import detect_task, segment_node  # noqa: E402
from Training import ct, echo  # noqa: E402
from Training.errors import InputError  # noqa: E402
from Training.metrics import case_metrics
from Training.echo import is_ed, is_es  # noqa: E402
from Training.tasks import get_task  # noqa: E402

CT_MODEL = get_task("heart-ct").bundled_model
ECHO_MODEL = get_task("echo").bundled_model
HEART = list(get_task("heart-ct").classes)
ECHO = list(get_task("echo").classes)


def _nodes(scene, cls):
    return [scene.GetNthNodeByClass(i, cls) for i in range(scene.GetNumberOfNodesByClass(cls))]


@pytest.fixture(scope="module")
def chest():
    return ct.generate_ct(ct.HELD_OUT_SEED_BASE + 11, shape=(40, 160, 160))


def _ct_volume(vol, spacing, name="chest CT"):
    """The generator's axes are (S, P, L): IJK to RAS directions diag(-1, -1, 1)."""
    dz, dy, dx = spacing
    ijk_to_ras = np.diag([-dx, -dy, dz, 1.0])
    return slicer.util.addVolumeFromArray(vol, ijk_to_ras, name=name)


def test_ct_heart_dice_and_volume_in_ml(mrml_scene, chest):
    vol, mask, info = chest
    node = _ct_volume(vol, info["spacing"])
    assert detect_task(node)[0] == "heart-ct"
    calls = []
    seg, stats = segment_node(node, CT_MODEL, "heart-ct", progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (40, 40) and "message" not in stats
    assert seg.GetSegmentation().GetNthSegment(0).GetName() == "Heart"
    labels = labels_from_segmentation(seg, node, HEART)
    dice = case_metrics(labels, mask, ["Heart"])["Heart"]["dice"]
    assert dice >= 0.85, dice
    ml = structure_volumes_ml(seg, node, HEART)["Heart"]
    assert ml == pytest.approx(info["heart_ml"], rel=0.15)
    assert ml == pytest.approx(float((labels == 1).sum()) * np.prod(info["spacing"]) / 1000, rel=1e-6)


@pytest.mark.parametrize("layout", ["k flipped", "i and j swapped"])
def test_ct_is_reoriented_so_any_voxel_order_gives_the_same_heart(mrml_scene, chest, layout):
    """The same patient stored in another voxel order (same world geometry) gets the same labels."""
    vol, mask, info = chest
    dz, dy, dx = info["spacing"]
    reference = _ct_volume(vol, info["spacing"], "reference")
    seg, _ = segment_node(reference, CT_MODEL, "heart-ct")
    expected = labels_from_segmentation(seg, reference, HEART)
    if layout == "k flipped":
        stored, ijk_to_ras = vol[::-1], np.diag([-dx, -dy, -dz, 1.0])
        back = lambda a: a[::-1]  # noqa: E731
    else:
        stored = vol.transpose(0, 2, 1)  # rows are now R->L, columns A->P
        ijk_to_ras = np.array([[0, -dx, 0, 0], [-dy, 0, 0, 0], [0, 0, dz, 0], [0, 0, 0, 1.0]])
        back = lambda a: a.transpose(0, 2, 1)  # noqa: E731
    node = slicer.util.addVolumeFromArray(np.ascontiguousarray(stored), ijk_to_ras, name=layout)
    seg2, _ = segment_node(node, CT_MODEL, "heart-ct")
    np.testing.assert_array_equal(back(labels_from_segmentation(seg2, node, HEART)), expected)


def test_echo_four_classes_area_curve_and_ed_es(mrml_scene):
    frames, truth, info = echo.generate_clip(echo.HELD_OUT_SEED_BASE + 5, n_frames=16, size=(256, 256))
    dy, dx = info["pixel_spacing_mm"]
    node = slicer.util.addVolumeFromArray(frames.astype(np.uint8), np.diag([dx, dy, 1.0, 1.0]), name="clip")
    assert detect_task(node)[0] == "echo"
    seg, stats = segment_node(node, ECHO_MODEL, "echo")
    assert [seg.GetSegmentation().GetNthSegment(i).GetName() for i in range(3)] == [c["name"] for c in ECHO]
    labels = labels_from_segmentation(seg, node, ECHO)
    m = case_metrics(labels, truth, [c["name"] for c in ECHO])
    assert m["LV endocardium"]["dice"] >= 0.85 and m["Myocardium"]["dice"] >= 0.75 and m["Left atrium"]["dice"] >= 0.75, m
    assert seg.GetSegmentation().GetNumberOfLayers() == 1  # one shared labelmap: segments never overlap

    curve = lv_area_curve(seg, node, ECHO)
    assert len(curve["area_mm2"]) == 16 and curve["message"] == ""
    assert curve["area_mm2"][0] == pytest.approx((labels[0] == 1).sum() * dx * dy)
    assert is_ed(info["contraction"], curve["ed_frame"]) and is_es(info["contraction"], curve["es_frame"])

    chart = show_area_curve(curve, "clip")
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    table = chart.GetNthPlotSeriesNode(0).GetTableNode().GetTable()
    assert table.GetNumberOfRows() == 16
    assert table.GetValueByName(3, "LV area (mm2)").ToDouble() == pytest.approx(curve["area_mm2"][3], rel=1e-5)
    marks = chart.GetNthPlotSeriesNode(1).GetTableNode().GetTable()
    assert [marks.GetValueByName(r, "Frame").ToInt() for r in range(2)] == [curve["ed_frame"], curve["es_frame"]]
    count = mrml_scene.GetNumberOfNodes()
    show_area_curve(curve, "clip")  # a rerun updates the same nodes
    assert mrml_scene.GetNumberOfNodes() == count


def test_ct_in_the_echo_task_is_refused(mrml_scene, chest):
    vol, _mask, info = chest
    node = _ct_volume(vol, info["spacing"])
    with pytest.raises(InputError, match="Hounsfield"):
        segment_node(node, ECHO_MODEL, "echo")
    assert _nodes(mrml_scene, "vtkMRMLSegmentationNode") == []


def test_2d_image_in_the_ct_task_is_refused(mrml_scene, chest):
    vol, _mask, info = chest
    node = _ct_volume(vol[20:21], info["spacing"])
    with pytest.raises(InputError, match="single 2D image"):
        segment_node(node, CT_MODEL, "heart-ct")
    assert _nodes(mrml_scene, "vtkMRMLSegmentationNode") == []


def test_echo_frames_in_the_ct_task_are_refused(mrml_scene):
    frames, _truth, _info = echo.generate_clip(echo.HELD_OUT_SEED_BASE + 5, n_frames=4, size=(128, 128))
    node = slicer.util.addVolumeFromArray(frames.astype(np.uint8), name="clip")
    with pytest.raises(InputError, match="not a CT in Hounsfield units"):
        segment_node(node, CT_MODEL, "heart-ct")


def test_ct_without_a_heart_gives_an_empty_result_and_a_message(mrml_scene):
    rng = np.random.default_rng(0)
    air_and_table = np.full((12, 128, 128), -1000.0, np.float32) + rng.normal(0, 20, (12, 128, 128)).astype(np.float32)
    air_and_table[:, 110:118, :] = 200.0  # the scanner table
    node = slicer.util.addVolumeFromArray(air_and_table, np.diag([-1.5, -1.5, 3.0, 1.0]), name="phantom")
    seg, stats = segment_node(node, CT_MODEL, "heart-ct")
    assert stats["message"] == "no Heart found in the input; the segmentation is empty"
    assert seg.GetSegmentation().GetNumberOfSegments() == 1
    assert not labels_from_segmentation(seg, node, HEART).any()
    assert structure_volumes_ml(seg, node, HEART) == {"Heart": 0.0}


def test_task_detection_reasons(mrml_scene):
    ct_node = slicer.util.addVolumeFromArray(np.full((3, 32, 32), -1000.0, np.float32) + np.arange(32), name="ct")
    us_node = slicer.util.addVolumeFromArray(np.arange(3 * 32 * 32, dtype=np.uint8).reshape(3, 32, 32), name="us")
    assert detect_task(ct_node) == ("heart-ct", "values from -1000 to -969: Hounsfield units with air, a CT")
    assert detect_task(us_node)[0] == "echo"
    assert detect_task(us_node, modality="CT") == ("heart-ct", "DICOM modality CT")
    high = slicer.util.addVolumeFromArray(np.arange(3 * 32 * 32, dtype=np.uint16).reshape(3, 32, 32) * 5, name="mr")
    with pytest.raises(InputError, match="neither CT"):
        detect_task(high)
