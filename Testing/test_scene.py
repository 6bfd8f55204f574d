"""CardioSegLib on real MRML (slicer-core): frames out of volumes and sequences, labels into
segmentation nodes with names, colours, terminology and geometry, and back; segment_node end
to end with a tiny model."""
import threading

import numpy as np
import pytest

from conftest import import_slicer  # noqa: E402

slicer = import_slicer()
import vtk  # noqa: E402

from CardioSegLib.scene import (  # noqa: E402
    frames_from_node,
    labels_from_segmentation,
    write_segmentation,
    write_segmentation_sequence,
)
from CardioSegLib.segment import segment_node  # noqa: E402
from Training.modelfile import ModelFileError  # noqa: E402
from Training.errors import Cancelled, InputError  # noqa: E402
from Training.tasks import get_task  # noqa: E402

CATHETER = list(get_task("catheter").classes)
THREE = [
    {"name": "LV", "color": [1.0, 0.0, 0.0], "terminology": "ctx~cat(a^1^x)~type(a^2^lv)~^^~ana~^^~^^"},
    {"name": "Myo", "color": [0.0, 0.5, 1.0], "terminology": "ctx~cat(a^1^x)~type(a^3^myo)~^^~ana~^^~^^"},
    {"name": "LA", "color": [0.2, 0.9, 0.2], "terminology": "ctx~cat(a^1^x)~type(a^4^la)~^^~ana~^^~^^"},
]
# spacing (0.3, 0.4, 1.0) mm, in-plane rotation by 90 degrees, K axis flipped, an offset origin
IJK_TO_RAS = np.array([[0.0, -0.4, 0.0, 10.0],
                       [0.3, 0.0, 0.0, -5.0],
                       [0.0, 0.0, -1.0, 3.0],
                       [0.0, 0.0, 0.0, 1.0]])


def _nodes(scene, cls):
    return [scene.GetNthNodeByClass(i, cls) for i in range(scene.GetNumberOfNodesByClass(cls))]


def _matrix(node):
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m)


def _volume(frames, name="run"):
    return slicer.util.addVolumeFromArray(frames, IJK_TO_RAS, name=name)


def _labels(shape=(4, 20, 30)):
    lab = np.zeros(shape, np.uint8)
    lab[0, 2:6, 3:25] = 1
    lab[1, 10:18, 0:4] = 2
    lab[-1, 0:20, 29] = 1  # touches the border of the grid
    return lab  # class 3 ("LA") has no voxels


def _frame_volume(array2d, origin=(1.0, 2.0, 3.0)):
    """A single-slice 2D volume (not added to the scene), as a sequence item."""
    node = slicer.vtkMRMLScalarVolumeNode()
    node.SetSpacing(0.3, 0.4, 1.0)
    node.SetOrigin(*origin)
    slicer.util.updateVolumeFromArray(node, array2d[None])
    return node


def _sequence(scene, frames, name="cine"):
    seq = scene.AddNewNodeByClass("vtkMRMLSequenceNode", name)
    seq.SetIndexName("time")
    seq.SetIndexUnit("s")
    for t, f in enumerate(frames):
        seq.SetDataNodeAtValue(_frame_volume(f, origin=(1.0, 2.0 + t, 3.0)), f"{t * 0.04:.2f}")
    return seq


def _ramp(t=4, h=64, w=64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((t, h, w)) * 100 + np.arange(w)).astype(np.float32)


def test_labels_round_trip_with_names_colours_terminology_and_geometry(mrml_scene):
    vol = _volume(np.random.default_rng(0).random((4, 20, 30)).astype(np.float32))
    lab = _labels()
    seg = write_segmentation(lab, vol, THREE, name="result")

    assert seg.GetName() == "result"
    segmentation = seg.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 3  # the empty class still has a segment
    for c in THREE:
        s = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(c["name"]))
        assert s is not None, c["name"]
        np.testing.assert_allclose(s.GetColor(), c["color"], atol=1e-6)
        tag = vtk.reference("")
        assert s.GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), tag) and str(tag) == c["terminology"]
        assert s.GetTerminology() == c["terminology"]
    # reference geometry: the volume's grid, referenced by node
    geometry = segmentation.GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    numbers = [float(x) for x in geometry.strip(";").split(";")]
    np.testing.assert_allclose(np.array(numbers[:16]).reshape(4, 4), IJK_TO_RAS)
    assert numbers[16:] == [0, 29, 0, 19, 0, 3]
    assert seg.GetNodeReferenceID(seg.GetReferenceImageGeometryReferenceRole()) == vol.GetID()

    back = labels_from_segmentation(seg, vol, THREE)
    assert back.dtype == np.uint8 and back.shape == lab.shape
    np.testing.assert_array_equal(back, lab)
    # class order, not segment order, decides the values
    swapped = labels_from_segmentation(seg, vol, [THREE[1], THREE[0]])
    np.testing.assert_array_equal(swapped, np.choose(lab, [0, 2, 1, 0]).astype(np.uint8))
    # no temporary nodes are left: one volume, one segmentation, no labelmaps or colour tables
    assert len(_nodes(mrml_scene, "vtkMRMLScalarVolumeNode")) == 1
    assert _nodes(mrml_scene, "vtkMRMLLabelMapVolumeNode") == []
    assert _nodes(mrml_scene, "vtkMRMLColorTableNode") == []
    assert _nodes(mrml_scene, "vtkMRMLLabelMapVolumeDisplayNode") == []


def test_rerun_replaces_segments_and_adds_no_nodes(mrml_scene):
    vol = _volume(np.random.default_rng(1).random((4, 20, 30)).astype(np.float32))
    first = _labels()
    seg = write_segmentation(np.minimum(first, 1), vol, CATHETER)
    n_nodes = mrml_scene.GetNumberOfNodes()
    second = np.zeros_like(first)
    second[2, 5:9, 5:9] = 1
    again = write_segmentation(second, vol, CATHETER, seg)

    assert again is seg
    assert seg.GetSegmentation().GetNumberOfSegments() == 1
    assert seg.GetSegmentation().GetNthSegment(0).GetName() == "Catheter"
    assert len(_nodes(mrml_scene, "vtkMRMLSegmentationNode")) == 1
    assert _nodes(mrml_scene, "vtkMRMLLabelMapVolumeNode") == []
    assert mrml_scene.GetNumberOfNodes() == n_nodes
    np.testing.assert_array_equal(labels_from_segmentation(seg, vol, CATHETER), second)


def test_labels_that_do_not_fit_are_refused(mrml_scene):
    vol = _volume(np.zeros((4, 20, 30), np.float32))
    with pytest.raises(ValueError, match=r"shape \(4, 30, 20\)"):
        write_segmentation(np.zeros((4, 30, 20), np.uint8), vol, CATHETER)
    with pytest.raises(ValueError, match="label value 2 but only 1 classes"):
        write_segmentation(np.full((4, 20, 30), 2, np.uint8), vol, CATHETER)
    assert _nodes(mrml_scene, "vtkMRMLSegmentationNode") == []


def test_saved_segmentation_reads_back_the_same(mrml_scene, tmp_path):
    vol = _volume(np.random.default_rng(2).random((4, 20, 30)).astype(np.float32))
    lab = _labels()
    seg = write_segmentation(lab, vol, THREE)
    path = tmp_path / "result.seg.nrrd"
    writer = slicer.vtkMRMLSegmentationStorageNode()
    writer.SetFileName(str(path))
    assert writer.WriteData(seg)

    loaded = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "loaded")
    reader = slicer.vtkMRMLSegmentationStorageNode()
    reader.SetFileName(str(path))
    assert reader.ReadData(loaded)
    np.testing.assert_array_equal(labels_from_segmentation(loaded, vol, THREE), lab)
    s = loaded.GetSegmentation().GetSegment(loaded.GetSegmentation().GetSegmentIdBySegmentName("Myo"))
    assert s.GetTerminology() == THREE[1]["terminology"]
    np.testing.assert_allclose(s.GetColor(), THREE[1]["color"], atol=1e-6)


def test_frames_from_scalar_volume_is_a_view_with_the_node_as_reference(mrml_scene):
    frames = _ramp(3, 20, 30)
    vol = _volume(frames)
    got, ref = frames_from_node(vol)
    assert ref is vol
    assert got.shape == (3, 20, 30)
    np.testing.assert_array_equal(got, frames)
    assert np.shares_memory(got, slicer.util.arrayFromVolume(vol))


def test_frames_from_vector_volume_keep_components(mrml_scene):
    rgb = np.random.default_rng(3).integers(0, 255, (2, 20, 30, 3)).astype(np.uint8)
    vol = slicer.util.addVolumeFromArray(rgb, nodeClassName="vtkMRMLVectorVolumeNode")
    got, ref = frames_from_node(vol)
    assert ref is vol and got.shape == (2, 20, 30, 3)
    np.testing.assert_array_equal(got, rgb)


def test_frames_from_sequence_and_browser_are_stacked_in_order(mrml_scene):
    frames = _ramp(3, 20, 30)
    seq = _sequence(mrml_scene, frames)
    got, ref = frames_from_node(seq)
    np.testing.assert_array_equal(got, frames)
    assert ref.IsA("vtkMRMLScalarVolumeNode") and ref.GetOrigin() == (1.0, 2.0, 3.0)

    browser = mrml_scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode")
    browser.SetAndObserveMasterSequenceNodeID(seq.GetID())
    np.testing.assert_array_equal(frames_from_node(browser)[0], frames)


def test_sequence_with_mismatched_or_3d_frames_names_the_frame(mrml_scene):
    seq = _sequence(mrml_scene, _ramp(3, 20, 30))
    seq.SetDataNodeAtValue(_frame_volume(_ramp(1, 20, 31)[0]), "0.12")
    with pytest.raises(InputError, match="frame 3 is 31x20.*frame 0 is 30x20"):
        frames_from_node(seq)
    seq3d = mrml_scene.AddNewNodeByClass("vtkMRMLSequenceNode")
    seq3d.SetDataNodeAtValue(_frame_volume(_ramp(1, 20, 30)[0]), "0")
    thick = slicer.vtkMRMLScalarVolumeNode()
    slicer.util.updateVolumeFromArray(thick, _ramp(2, 20, 30))
    seq3d.SetDataNodeAtValue(thick, "1")
    with pytest.raises(InputError, match="frame 1 has 2 slices"):
        frames_from_node(seq3d)
    with pytest.raises(InputError, match="no frames"):
        frames_from_node(mrml_scene.AddNewNodeByClass("vtkMRMLSequenceNode", "empty"))


def test_other_nodes_are_refused_by_class(mrml_scene):
    model = mrml_scene.AddNewNodeByClass("vtkMRMLModelNode")
    with pytest.raises(TypeError, match="vtkMRMLModelNode"):
        frames_from_node(model)
    with pytest.raises(TypeError, match="None"):
        frames_from_node(None)


def test_segmentation_sequence_has_one_item_per_frame_in_its_geometry(mrml_scene):
    seq = _sequence(mrml_scene, _ramp(3, 20, 30))
    browser = mrml_scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode")
    browser.SetAndObserveMasterSequenceNodeID(seq.GetID())
    lab = _labels((3, 20, 30))
    out = write_segmentation_sequence(lab, browser, THREE)

    assert out.GetNumberOfDataNodes() == 3 and browser.IsSynchronizedSequenceNode(out)
    assert out.GetIndexName() == "time" and out.GetIndexUnit() == "s"
    for t in range(3):
        item, frame = out.GetNthDataNode(t), seq.GetNthDataNode(t)
        assert out.GetNthIndexValue(t) == seq.GetNthIndexValue(t)
        assert item.GetSegmentation().GetNumberOfSegments() == 3
        np.testing.assert_array_equal(labels_from_segmentation(item, frame, THREE), lab[t:t + 1])
        geometry = item.GetSegmentation().GetConversionParameter(
            slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
        assert [float(x) for x in geometry.split(";")[3:12:4]] == [1.0, 2.0 + t, 3.0]  # origin
    # the browser shows it through a proxy segmentation node; a re-run overwrites the sequence
    proxy = browser.GetProxyNode(out)
    assert proxy is not None and proxy.IsA("vtkMRMLSegmentationNode")
    browser.SetSelectedItemNumber(1)
    np.testing.assert_array_equal(labels_from_segmentation(proxy, seq.GetNthDataNode(1), THREE), lab[1:2])
    browser.SetSelectedItemNumber(0)
    n_nodes = mrml_scene.GetNumberOfNodes()
    again = write_segmentation_sequence(np.zeros_like(lab), browser, THREE, proxy)
    assert again is out and out.GetNumberOfDataNodes() == 3
    assert mrml_scene.GetNumberOfNodes() == n_nodes
    assert not labels_from_segmentation(out.GetNthDataNode(0), seq.GetNthDataNode(0), THREE).any()
    assert not labels_from_segmentation(proxy, seq.GetNthDataNode(0), THREE).any()  # proxy followed
    # a shorter input sequence leaves no stale items behind
    seq.RemoveDataNodeAtValue(seq.GetNthIndexValue(2))
    write_segmentation_sequence(lab[:2], browser, THREE, out)
    assert out.GetNumberOfDataNodes() == 2


def test_segment_node_end_to_end(mrml_scene, tiny_model):
    vol = _volume(_ramp())
    calls = []
    seg, stats = segment_node(vol, tiny_model, "catheter", batch=2,
                              progress=lambda done, total: calls.append((done, total)))
    assert calls == [(2, 4), (4, 4)]
    assert stats["frames"] == 4
    segmentation = seg.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 1
    catheter = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("Catheter"))
    assert catheter is not None and catheter.GetTerminology() == CATHETER[0]["terminology"]
    assert seg.GetAttribute("CardioSeg.Task") == "catheter"
    assert seg.GetAttribute("CardioSeg.ModelVersion") == "0.0.0"
    labels = labels_from_segmentation(seg, vol, CATHETER)
    assert labels.shape == (4, 64, 64) and set(np.unique(labels)) <= {0, 1}

    again, _ = segment_node(vol, tiny_model, "catheter", segmentation_node=seg)
    assert again is seg and len(_nodes(mrml_scene, "vtkMRMLSegmentationNode")) == 1
    np.testing.assert_array_equal(labels_from_segmentation(seg, vol, CATHETER), labels)


def test_segment_node_on_a_sequence(mrml_scene, tiny_model):
    seq = _sequence(mrml_scene, _ramp(3))
    out, stats = segment_node(seq, tiny_model, "catheter")
    assert out.IsA("vtkMRMLSequenceNode") and out.GetNumberOfDataNodes() == 3 and stats["frames"] == 3
    assert out.GetAttribute("CardioSeg.Task") == "catheter"
    assert out.GetNthDataNode(2).GetSegmentation().GetNthSegment(0).GetName() == "Catheter"


def test_cancel_leaves_the_given_segmentation_unchanged(mrml_scene, tiny_model):
    vol = _volume(_ramp())
    lab = np.zeros((4, 64, 64), np.uint8)
    lab[1, 10:20, 10:40] = 1
    seg = write_segmentation(lab, vol, CATHETER)
    mtime = seg.GetMTime()
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        segment_node(vol, tiny_model, "catheter", segmentation_node=seg, cancel=stop)
    assert seg.GetMTime() == mtime
    assert seg.GetAttribute("CardioSeg.Task") is None
    np.testing.assert_array_equal(labels_from_segmentation(seg, vol, CATHETER), lab)


@pytest.mark.parametrize("kind, message", [("constant", "constant"), ("nan", "NaN")])
def test_bad_volume_raises_input_error(mrml_scene, tiny_model, kind, message):
    frames = np.full((4, 64, 64), 7.0, np.float32)
    if kind == "nan":
        frames = _ramp()
        frames[2, 5, 5] = np.nan
    vol = _volume(frames)
    with pytest.raises(InputError, match=message):
        segment_node(vol, tiny_model, "catheter")
    assert _nodes(mrml_scene, "vtkMRMLSegmentationNode") == []


def test_missing_model_file_propagates(mrml_scene, tmp_path):
    vol = _volume(_ramp())
    with pytest.raises(ModelFileError, match="not found"):
        segment_node(vol, tmp_path / "missing.safetensors", "catheter")
    assert _nodes(mrml_scene, "vtkMRMLSegmentationNode") == []
