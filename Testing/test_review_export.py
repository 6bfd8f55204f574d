"""Review states in the scene, and reviewed frames -> training folder -> scene, on real MRML.

Edits are made the way Segment Editor's effects make them (``SetBinaryLabelmapToSegment`` on
one frame's extent), the scene is saved and reloaded with real storage nodes, and the exported
folder is read back with the one reader, ``Training.trainingfolder.read_training_folder``.
"""
import contextlib
import threading

import numpy as np
import pytest

from conftest import import_slicer  # noqa: E402

slicer = import_slicer()
import vtk  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

from CardioSegLib import reviewstates  # noqa: E402
from CardioSegLib.geometry import frame_at_ras, frame_center_ras, frame_count  # noqa: E402
from CardioSegLib.reviewstates import (  # noqa: E402
    EXCLUDED,
    REVIEWED,
    UNREVIEWED,
    count,
    next_unreviewed,
    review_states,
    set_review_state,
)
from Training.tasks import get_task  # noqa: E402

CATHETER = list(get_task("catheter").classes)
# spacing (0.3, 0.4, 1.0) mm, in-plane rotation by 90 degrees, K axis flipped, an offset origin
IJK_TO_RAS = np.array([[0.0, -0.4, 0.0, 10.0],
                       [0.3, 0.0, 0.0, -5.0],
                       [0.0, 0.0, -1.0, 3.0],
                       [0.0, 0.0, 0.0, 1.0]])
# the same grid in SimpleITK's LPS convention, worked out by hand: x and y negated
LPS_SPACING = (0.3, 0.4, 1.0)
LPS_DIRECTION = (0.0, 1.0, 0.0,
                 -1.0, 0.0, 0.0,
                 0.0, 0.0, -1.0)


def lps_origin(k):
    return (-10.0, 5.0, 3.0 - k)


T, H, W = 5, 12, 16


def _run(name="run"):
    """int16 frames with values far outside 0..255 (an 8-bit squash would show)."""
    rng = np.random.default_rng(0)
    frames = rng.integers(-1000, 3000, (T, H, W)).astype(np.int16)
    return slicer.util.addVolumeFromArray(frames, IJK_TO_RAS, name=name), frames


def _model_labels():
    lab = np.zeros((T, H, W), np.uint8)
    for k in range(T):
        lab[k, 2 + k:5 + k, 1:12] = 1
    return lab


def _segmentation(volume, labels):
    from CardioSegLib.scene import write_segmentation

    seg = write_segmentation(labels, volume, CATHETER)
    seg.SetAttribute("CardioSeg.ModelVersion", "1.2.3")
    seg.SetAttribute("CardioSeg.Task", "catheter")
    return seg


def _segment_arrays(seg, volume):
    from CardioSegLib.scene import labels_from_segmentation

    return labels_from_segmentation(seg, volume, CATHETER)


def _frame_image(volume, k, mask):
    image = slicer.vtkOrientedImageData()
    image.SetExtent(0, W - 1, 0, H - 1, k, k)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = mask.astype(np.uint8).ravel()
    m = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(m)
    image.SetImageToWorldMatrix(m)
    return image


def _edit_frame(seg, volume, k, mask):
    """Make frame k of the Catheter segment equal ``mask`` (H, W) as Segment Editor's Erase and
    Paint effects do: merge-min (erase) then merge-max (paint), limited to frame k's extent."""
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    sid = seg.GetSegmentation().GetSegmentIdBySegmentName("Catheter")
    for mode in (logic.MODE_MERGE_MIN, logic.MODE_MERGE_MAX):
        image = _frame_image(volume, k, mask)
        assert logic.SetBinaryLabelmapToSegment(image, seg, sid, mode, image.GetExtent())


def _edited_run(scene):
    """A run segmented by 'the model', frames 1 and 3 then corrected by hand."""
    volume, frames = _run()
    model = _model_labels()
    seg = _segmentation(volume, model)
    edited = model.copy()
    edited[1] = 0
    edited[1, 0:H, 7] = 1  # the model missed the wire: redrawn
    edited[3, 5:8, 1:6] = 0  # a false detection erased
    for k in (1, 3):
        _edit_frame(seg, volume, k, edited[k])
    truth = _segment_arrays(seg, volume)
    np.testing.assert_array_equal(truth, edited)  # the edit really happened, and only there
    return volume, frames, seg, edited


def _nodes(scene, cls):
    return [scene.GetNthNodeByClass(i, cls) for i in range(scene.GetNumberOfNodesByClass(cls))]


@contextlib.contextmanager
def _reloaded(mrml):
    """The saved scene ``mrml`` read back as slicer.mrmlScene: (segmentation, volume)."""
    loaded = slicer.vtkMRMLScene()
    loaded.SetURL(str(mrml))
    previous = slicer.mrmlScene
    slicer.mrmlScene = loaded
    try:
        assert loaded.Connect()
        (seg,) = _nodes(loaded, "vtkMRMLSegmentationNode")
        (volume,) = _nodes(loaded, "vtkMRMLScalarVolumeNode")
        yield seg, volume
    finally:
        slicer.mrmlScene = previous
        loaded.Clear(1)


# --- review state ---


def test_review_states_set_get_next_and_count(mrml_scene):
    volume, _ = _run()
    seg = _segmentation(volume, _model_labels())
    n = frame_count(volume)
    assert n == T
    assert review_states(seg, n) == [UNREVIEWED] * T  # nothing is marked by itself
    assert seg.GetAttribute(reviewstates.ATTRIBUTE) is None
    assert next_unreviewed(seg, n) == 0
    assert count(seg, n, REVIEWED) == 0 and count(seg, n, UNREVIEWED) == T

    set_review_state(seg, 1, REVIEWED, n)
    set_review_state(seg, 3, EXCLUDED, n)
    set_review_state(seg, 0, REVIEWED, n)
    assert review_states(seg, n) == [REVIEWED, REVIEWED, UNREVIEWED, EXCLUDED, UNREVIEWED]
    assert seg.GetAttribute(reviewstates.ATTRIBUTE) == "RR-X"  # compact: one character per frame
    assert count(seg, n, REVIEWED) == 2 and count(seg, n, EXCLUDED) == 1 and count(seg, n, UNREVIEWED) == 2
    assert reviewstates.frames_in_state(seg, n, REVIEWED) == [0, 1]

    assert next_unreviewed(seg, n) == 2
    assert next_unreviewed(seg, n, after=2) == 4
    assert next_unreviewed(seg, n, after=4) == 2  # wraps around
    assert next_unreviewed(seg, n, after=3) == 4
    set_review_state(seg, 2, REVIEWED, n)
    assert next_unreviewed(seg, n, after=3) == 4
    assert next_unreviewed(seg, n, after=4) == 4  # the current frame is last in line
    set_review_state(seg, 4, EXCLUDED, n)
    assert next_unreviewed(seg, n) is None and next_unreviewed(seg, n, after=2) is None

    # back to unreviewed, and a setting that changes nothing does not modify the node
    set_review_state(seg, 3, UNREVIEWED, n)
    assert review_states(seg, n)[3] == UNREVIEWED
    mtime = seg.GetMTime()
    set_review_state(seg, 3, UNREVIEWED, n)
    assert seg.GetMTime() == mtime

    reviewstates.clear_review_states(seg)
    assert review_states(seg, n) == [UNREVIEWED] * T and seg.GetAttribute(reviewstates.ATTRIBUTE) is None


def test_bad_states_and_frames_are_refused(mrml_scene):
    volume, _ = _run()
    seg = _segmentation(volume, _model_labels())
    with pytest.raises(ValueError, match="unknown review state 'done'"):
        set_review_state(seg, 0, "done")
    with pytest.raises(IndexError, match="frame 5 is out of range of 5 frames"):
        set_review_state(seg, 5, REVIEWED, volume)
    with pytest.raises(IndexError, match="frame 5 is out of range of 5 frames"):
        set_review_state(seg, 5, REVIEWED, T)
    with pytest.raises(IndexError, match="frame -1"):
        set_review_state(seg, -1, REVIEWED)
    with pytest.raises(ValueError, match="unknown review state"):
        count(seg, T, "maybe")
    assert seg.GetAttribute(reviewstates.ATTRIBUTE) is None
    # a hand-edited attribute: unknown characters read as unreviewed, extra frames are ignored
    seg.SetAttribute(reviewstates.ATTRIBUTE, "R?XRRRRRR")
    assert review_states(seg, 3) == [REVIEWED, UNREVIEWED, EXCLUDED]
    assert next_unreviewed(seg, 0) is None


def _save_scene(scene, folder, nodes):
    """Save as the app's "Save scene" does: each storable node's data file, then the .mrml."""
    for node, name in nodes:
        node.AddDefaultStorageNode()
        node.GetStorageNode().SetFileName(str(folder / name))
        assert node.GetStorageNode().WriteData(node)
    mrml = folder / "scene.mrml"
    scene.SetURL(str(mrml))
    assert scene.Commit()
    return mrml


def test_review_states_survive_saving_and_reloading_the_scene(mrml_scene, tmp_path):
    volume, frames = _run()
    seg = _segmentation(volume, _model_labels())
    set_review_state(seg, 1, REVIEWED, volume)
    set_review_state(seg, 2, EXCLUDED, volume)
    set_review_state(seg, 4, REVIEWED, volume)
    assert review_states(seg, volume) == [UNREVIEWED, REVIEWED, EXCLUDED, UNREVIEWED, REVIEWED]
    labels = _segment_arrays(seg, volume)
    mrml = _save_scene(mrml_scene, tmp_path, ((volume, "run.nrrd"), (seg, "run.seg.nrrd")))
    assert "CardioSeg.ReviewStates:-RX-R" in mrml.read_text()

    with _reloaded(mrml) as (seg2, volume2):
        assert seg2.GetAttribute("CardioSeg.ModelVersion") == "1.2.3"
        # Slicer's reader gives the left-handed run back with its frames in reverse order
        # (K axis flipped to +S); the states follow the frames, not the indices
        images = slicer.util.arrayFromVolume(volume2)
        np.testing.assert_array_equal(images, frames[::-1])
        states = review_states(seg2, volume2)
        assert states == [REVIEWED, UNREVIEWED, EXCLUDED, REVIEWED, UNREVIEWED]
        for j, state in enumerate(states):
            k = T - 1 - j  # the same frame in the saved run
            assert state == review_states(seg, volume)[k]
            np.testing.assert_array_equal(images[j], frames[k])
        np.testing.assert_array_equal(_segment_arrays(seg2, volume2), labels[::-1])
        assert next_unreviewed(seg2, volume2) == 1
        assert count(seg2, volume2, REVIEWED) == 2
        # marking on the reloaded scene re-bases the stored states on its frame order
        set_review_state(seg2, 1, REVIEWED, volume2)
        assert review_states(seg2, volume2) == [REVIEWED, REVIEWED, EXCLUDED, REVIEWED, UNREVIEWED]
        assert seg2.GetAttribute(reviewstates.ATTRIBUTE) == "RRXR-"
        # a parent transform does not move frames relative to their states
        transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
        shift = vtk.vtkMatrix4x4()
        shift.SetElement(2, 3, 2.5)
        transform.SetMatrixTransformToParent(shift)
        volume2.SetAndObserveTransformNodeID(transform.GetID())
        assert review_states(seg2, volume2) == [REVIEWED, REVIEWED, EXCLUDED, REVIEWED, UNREVIEWED]


def test_review_order_goes_to_the_least_certain_unreviewed_frame(mrml_scene):
    volume, _ = _run()
    seg = _segmentation(volume, _model_labels())
    # no uncertainty stored (an older scene): the order is the frames' order
    assert reviewstates.next_to_review(seg, volume) == 0
    reviewstates.set_uncertainty(seg, [0.1, 0.7, 0.05, 0.9, 0.3], volume)
    assert reviewstates.uncertainties(seg, volume) == pytest.approx([0.1, 0.7, 0.05, 0.9, 0.3])
    assert reviewstates.next_to_review(seg, volume) == 3
    assert reviewstates.next_to_review(seg, volume, order="sequential") == 0
    set_review_state(seg, 3, REVIEWED, volume)
    assert reviewstates.next_to_review(seg, volume) == 1
    set_review_state(seg, 1, EXCLUDED, volume)
    assert reviewstates.next_to_review(seg, volume) == 4
    assert reviewstates.next_to_review(seg, volume, after=4) == 0  # the current frame comes last
    for k in (0, 2):
        set_review_state(seg, k, REVIEWED, volume)
    assert reviewstates.next_to_review(seg, volume, after=4) == 4
    set_review_state(seg, 4, REVIEWED, volume)
    assert reviewstates.next_to_review(seg, volume) is None
    with pytest.raises(ValueError, match="review order"):
        reviewstates.next_to_review(seg, volume, order="random")
    with pytest.raises(ValueError, match="4 uncertainties for 5 frames"):
        reviewstates.set_uncertainty(seg, [0.1] * 4, volume)
    reviewstates.clear_review_states(seg)  # a new run: neither marks nor uncertainty are left
    assert reviewstates.uncertainties(seg, volume) == [None] * T


def test_uncertainty_follows_its_frames_through_saving_and_reloading(mrml_scene, tmp_path):
    volume, frames = _run()
    seg = _segmentation(volume, _model_labels())
    values = [0.1, 0.7, 0.05, 0.9, 0.3]
    reviewstates.set_uncertainty(seg, values, volume)
    set_review_state(seg, 3, REVIEWED, volume)
    mrml = _save_scene(mrml_scene, tmp_path, ((volume, "run.nrrd"), (seg, "run.seg.nrrd")))
    with _reloaded(mrml) as (seg2, volume2):
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume2), frames[::-1])  # frames reversed
        assert reviewstates.uncertainties(seg2, volume2) == pytest.approx(values[::-1])
        assert reviewstates.next_to_review(seg2, volume2) == T - 1 - 1  # saved frame 1 (0.7): frame 3 now
        # marking re-bases the states on the new frame order; the uncertainty moves with them
        set_review_state(seg2, 0, EXCLUDED, volume2)
        assert reviewstates.uncertainties(seg2, volume2) == pytest.approx(values[::-1])
        assert review_states(seg2, volume2) == [EXCLUDED, REVIEWED, UNREVIEWED, UNREVIEWED, UNREVIEWED]


def test_review_states_survive_a_scene_xml_round_trip(mrml_scene):
    volume, _ = _run()
    seg = _segmentation(volume, _model_labels())
    set_review_state(seg, 2, REVIEWED, volume)
    mrml_scene.SetSaveToXMLString(1)
    assert mrml_scene.Commit()
    xml = mrml_scene.GetSceneXMLString()
    other = slicer.vtkMRMLScene()
    other.SetLoadFromXMLString(1)
    other.SetSceneXMLString(xml)
    assert other.Import()
    (copy,) = _nodes(other, "vtkMRMLSegmentationNode")
    assert review_states(copy, T) == [UNREVIEWED, UNREVIEWED, REVIEWED, UNREVIEWED, UNREVIEWED]
    other.Clear(1)


def test_frame_navigation_positions(mrml_scene):
    volume, _ = _run()
    for k in range(T):
        ras = frame_center_ras(volume, k)
        expected = IJK_TO_RAS @ np.array([(W - 1) / 2, (H - 1) / 2, k, 1.0])
        np.testing.assert_allclose(ras, expected[:3])
        assert frame_at_ras(volume, ras) == k
        assert frame_at_ras(volume, np.array(ras) + [0.0, 0.0, -0.4]) == k  # within half a frame
    assert frame_at_ras(volume, (0.0, 0.0, 3.0 + 1.0)) is None  # before frame 0 (K axis flipped)
    assert frame_at_ras(volume, (0.0, 0.0, 3.0 - T)) is None

    # a linear parent transform moves the frames in world space
    transform = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 100.0)
    transform.SetMatrixTransformToParent(shift)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    np.testing.assert_allclose(frame_center_ras(volume, 2), (IJK_TO_RAS @ [7.5, 5.5, 2, 1])[:3] + [100, 0, 0])
    assert frame_at_ras(volume, frame_center_ras(volume, 2)) == 2

    # a non-linear one is refused with a clear message
    grid = mrml_scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
    volume.SetAndObserveTransformNodeID(grid.GetID())
    with pytest.raises(ValueError, match="non-linear transform 'warp'.*harden"):
        frame_center_ras(volume, 0)


def test_frame_geometry_in_lps_matches_simpleitk_reading_the_saved_volume(mrml_scene, tmp_path):
    import SimpleITK as sitk

    from CardioSegLib.geometry import frame_geometry_lps, ijk_to_ras_from_lps

    volume, _ = _run()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(tmp_path / "run.nrrd"))
    assert storage.WriteData(volume)
    image = sitk.ReadImage(str(tmp_path / "run.nrrd"))
    for k in range(T):
        origin, spacing, direction = frame_geometry_lps(volume, k)
        np.testing.assert_allclose(origin, lps_origin(k), atol=1e-9)
        np.testing.assert_allclose(spacing, LPS_SPACING, atol=1e-9)
        np.testing.assert_allclose(direction, LPS_DIRECTION, atol=1e-9)
        # and as SimpleITK itself reads the file Slicer wrote
        np.testing.assert_allclose(origin, image.TransformIndexToPhysicalPoint((0, 0, k)), atol=1e-6)
        np.testing.assert_allclose(spacing, image.GetSpacing(), atol=1e-6)
        np.testing.assert_allclose(direction, image.GetDirection(), atol=1e-6)
        # and back to RAS
        m = ijk_to_ras_from_lps(origin, spacing, direction)
        np.testing.assert_allclose(m[:3, :3], IJK_TO_RAS[:3, :3], atol=1e-9)
        np.testing.assert_allclose(m[:3, 3], (IJK_TO_RAS @ [0, 0, k, 1])[:3], atol=1e-9)


# --- export and read back (Training.trainingfolder) ---


def _folder_snapshot(folder):
    """Every file under folder (relative path -> bytes), leaving out the manifest's times."""
    import json

    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.suffix == ".json":
                data = json.dumps(_drop_times(json.loads(data)), sort_keys=True).encode()
            out[p.relative_to(folder).as_posix()] = data
    return out


def _drop_times(x):
    if isinstance(x, dict):
        return {k: _drop_times(v) for k, v in x.items() if k not in ("time", "exported", "updated")}
    if isinstance(x, list):
        return [_drop_times(v) for v in x]
    return x


def test_export_of_edited_frames_reads_back_voxel_for_voxel_with_geometry(mrml_scene, tmp_path):
    from CardioSegLib.export import export_reviewed_frames
    from Training.trainingfolder import case_id, read_training_folder

    volume, frames, seg, edited = _edited_run(mrml_scene)
    # the user marks the two corrected frames and one the model got right; excludes one
    for k in (1, 3, 4):
        set_review_state(seg, k, REVIEWED, volume)
    set_review_state(seg, 0, EXCLUDED, volume)
    n_nodes = mrml_scene.GetNumberOfNodes()
    calls = []
    folder = tmp_path / "Dataset001_Catheter"
    written = export_reviewed_frames(seg, volume, folder, "catheter",
                                     progress=lambda done, total, *a: calls.append((done, total)))

    assert sorted(written) == sorted(case_id("run", k) for k in (1, 3, 4))
    assert calls and calls[-1][0] == calls[-1][1] == 3
    assert mrml_scene.GetNumberOfNodes() == n_nodes  # no temporary nodes left behind
    assert review_states(seg, T) == [EXCLUDED, REVIEWED, UNREVIEWED, REVIEWED, REVIEWED]  # unchanged

    tf = read_training_folder(folder)
    assert tf.dataset["numTraining"] == 3
    cases = {c.case_id: c for c in tf.cases}
    assert set(cases) == set(written)
    segment_arrays = _segment_arrays(seg, volume)
    for k in (1, 3, 4):
        c = cases[case_id("run", k)]
        assert c.source == "run" and c.frame_index == k and c.model_version == "1.2.3"
        image, label, geometry = tf.load(c.case_id)
        assert image.dtype == np.int16 and image.shape == (H, W)  # original values, no squash or resize
        np.testing.assert_array_equal(image, frames[k])
        assert label.shape == (H, W)
        np.testing.assert_array_equal(label, segment_arrays[k])  # the edited segment, voxel for voxel
        np.testing.assert_array_equal(label, edited[k])
        for g in (geometry, c.geometry):
            np.testing.assert_allclose(g["origin"], lps_origin(k), atol=1e-6)
            np.testing.assert_allclose(g["spacing"], LPS_SPACING, atol=1e-6)
            np.testing.assert_allclose(g["direction"], LPS_DIRECTION, atol=1e-6)


def test_exporting_twice_gives_the_same_folder(mrml_scene, tmp_path):
    from CardioSegLib.export import export_reviewed_frames
    from Training.trainingfolder import case_id, read_training_folder

    volume, _, seg, _ = _edited_run(mrml_scene)
    set_review_state(seg, 1, REVIEWED, volume)
    set_review_state(seg, 3, REVIEWED, volume)
    folder = tmp_path / "out"
    first = export_reviewed_frames(seg, volume, folder, "catheter")
    snapshot = _folder_snapshot(folder)
    second = export_reviewed_frames(seg, volume, folder, "catheter")
    assert sorted(second) == sorted(first)
    assert _folder_snapshot(folder) == snapshot  # same files, same bytes: no duplicates
    assert len(read_training_folder(folder).cases) == 2
    assert len(list((folder / "labelsTr").iterdir())) == 2

    # another frame marked later adds its case; a frame edited again replaces its case
    set_review_state(seg, 2, REVIEWED, volume)
    fixed = np.zeros((H, W), np.uint8)
    fixed[4, :] = 1
    _edit_frame(seg, volume, 1, fixed)
    export_reviewed_frames(seg, volume, folder, "catheter")
    tf = read_training_folder(folder)
    assert len(tf.cases) == 3 and tf.dataset["numTraining"] == 3
    np.testing.assert_array_equal(tf.load(case_id("run", 1))[1], fixed)


def test_another_volume_of_the_same_name_is_replaced_only_on_request(mrml_scene, tmp_path):
    from CardioSegLib.export import export_reviewed_frames
    from Training.trainingfolder import CaseImageConflict, case_id, read_training_folder

    volume, frames, seg, _ = _edited_run(mrml_scene)
    set_review_state(seg, 1, REVIEWED, volume)
    folder = tmp_path / "out"
    export_reviewed_frames(seg, volume, folder, "catheter")
    other = slicer.util.addVolumeFromArray(frames[::-1].copy(), IJK_TO_RAS, name="run")  # same name
    other_seg = _segmentation(other, _model_labels())
    set_review_state(other_seg, 1, REVIEWED, other)
    before = _folder_snapshot(folder)
    with pytest.raises(CaseImageConflict, match="case run_f0001 .* holds another image"):
        export_reviewed_frames(other_seg, other, folder, "catheter")
    assert _folder_snapshot(folder) == before
    export_reviewed_frames(other_seg, other, folder, "catheter", replace_images=True)
    np.testing.assert_array_equal(read_training_folder(folder).load(case_id("run", 1))[0], frames[3])


def test_export_refuses_nothing_reviewed_and_non_linear_transforms_before_writing(mrml_scene, tmp_path):
    from CardioSegLib.export import export_reviewed_frames

    volume, _, seg, _ = _edited_run(mrml_scene)
    folder = tmp_path / "never"
    with pytest.raises(ValueError, match="no frame .* is marked reviewed"):
        export_reviewed_frames(seg, volume, folder, "catheter")
    set_review_state(seg, 1, REVIEWED, volume)
    set_review_state(seg, 1, EXCLUDED, volume)  # excluded frames are not exported either
    with pytest.raises(ValueError, match="marked reviewed"):
        export_reviewed_frames(seg, volume, folder, "catheter")
    set_review_state(seg, 1, REVIEWED, volume)
    grid = mrml_scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
    volume.SetAndObserveTransformNodeID(grid.GetID())
    with pytest.raises(ValueError, match="non-linear transform 'warp'"):
        export_reviewed_frames(seg, volume, folder, "catheter")
    assert not folder.exists()


def test_export_under_a_linear_transform_uses_world_geometry(mrml_scene, tmp_path):
    from CardioSegLib.export import export_reviewed_frames
    from Training.trainingfolder import read_training_folder

    volume, frames, seg, edited = _edited_run(mrml_scene)
    transform = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 100.0)  # 100 mm to the right = -100 in LPS x
    transform.SetMatrixTransformToParent(shift)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    seg.SetAndObserveTransformNodeID(transform.GetID())  # as write_segmentation sets it up
    set_review_state(seg, 3, REVIEWED, volume)
    (cid,) = export_reviewed_frames(seg, volume, tmp_path / "out", "catheter")
    image, label, geometry = read_training_folder(tmp_path / "out").load(cid)
    np.testing.assert_array_equal(label, edited[3])
    np.testing.assert_array_equal(image, frames[3])
    np.testing.assert_allclose(geometry["origin"], np.add(lps_origin(3), (-100.0, 0.0, 0.0)), atol=1e-6)
    np.testing.assert_allclose(geometry["direction"], LPS_DIRECTION, atol=1e-6)


def test_cancelled_export_leaves_a_valid_folder(mrml_scene, tmp_path):
    from CardioSegLib.export import export_reviewed_frames
    from Training.trainingfolder import read_training_folder

    volume, _, seg, _ = _edited_run(mrml_scene)
    set_review_state(seg, 1, REVIEWED, volume)
    folder = tmp_path / "out"
    export_reviewed_frames(seg, volume, folder, "catheter")
    for k in (2, 3, 4):
        set_review_state(seg, k, REVIEWED, volume)
    stop = threading.Event()
    stop.set()
    with pytest.raises(Exception) as info:
        export_reviewed_frames(seg, volume, folder, "catheter", cancel=stop)
    assert "cancel" in type(info.value).__name__.lower() or "cancel" in str(info.value).lower()
    assert len(read_training_folder(folder).cases) == 1  # the earlier case is still there


def test_load_case_brings_a_case_back_for_review(mrml_scene, tmp_path):
    from CardioSegLib.export import export_reviewed_frames, load_case
    from Training.trainingfolder import case_id, read_training_folder

    volume, frames, seg, edited = _edited_run(mrml_scene)
    set_review_state(seg, 3, REVIEWED, volume)
    folder = tmp_path / "out"
    (cid,) = export_reviewed_frames(seg, volume, folder, "catheter")
    assert cid == case_id("run", 3)

    loaded_volume, loaded_seg = load_case(folder, cid)
    assert loaded_volume.GetScene() is mrml_scene and loaded_seg.GetScene() is mrml_scene
    image = slicer.util.arrayFromVolume(loaded_volume)
    assert image.shape == (1, H, W) and image.dtype == np.int16
    np.testing.assert_array_equal(image[0], frames[3])
    from CardioSegLib.scene import labels_from_segmentation

    np.testing.assert_array_equal(labels_from_segmentation(loaded_seg, loaded_volume, CATHETER)[0], edited[3])
    catheter = loaded_seg.GetSegmentation().GetSegment(
        loaded_seg.GetSegmentation().GetSegmentIdBySegmentName("Catheter"))
    assert catheter is not None and catheter.GetTerminology() == CATHETER[0]["terminology"]
    # the loaded frame sits where frame 3 of the run was
    m = vtk.vtkMatrix4x4()
    loaded_volume.GetIJKToRASMatrix(m)
    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(m)[:3, :3], IJK_TO_RAS[:3, :3], atol=1e-6)
    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(m)[:3, 3], (IJK_TO_RAS @ [0, 0, 3, 1])[:3], atol=1e-6)
    assert loaded_seg.GetAttribute("CardioSeg.ModelVersion") == "1.2.3"
    assert review_states(loaded_seg, 1) == [UNREVIEWED]  # loading marks nothing

    # fixed again and re-exported: it replaces its own case, it does not add one
    fixed = np.zeros((H, W), np.uint8)
    fixed[:, 2] = 1
    _edit_frame(loaded_seg, loaded_volume, 0, fixed)
    set_review_state(loaded_seg, 0, REVIEWED, loaded_volume)
    assert export_reviewed_frames(loaded_seg, loaded_volume, folder, "catheter") == [cid]
    tf = read_training_folder(folder)
    assert [c.case_id for c in tf.cases] == [cid]
    image2, label2, geometry2 = tf.load(cid)
    np.testing.assert_array_equal(label2, fixed)
    np.testing.assert_array_equal(image2, frames[3])
    np.testing.assert_allclose(geometry2["origin"], lps_origin(3), atol=1e-6)
    np.testing.assert_allclose(geometry2["direction"], LPS_DIRECTION, atol=1e-6)

    with pytest.raises(KeyError, match="no case 'nope'"):
        load_case(folder, "nope")
