"""The Logic of CatheterSeg and HeartSeg (CardioSegLib.catheterlogic, CardioSegLib.heartlogic on
CardioSegLib.logic) on real MRML (slicer-core) with tiny untrained model files: Segment on a
volume and on a sequence chosen through its browser's proxy volume, a cancelled run that
leaves the scene as it was, review marks, export of the reviewed frames into a training folder
and loading a case back, model files, HeartSeg's task detection and measurements; and that
importing the Logic (what Slicer does when it loads the modules) needs neither torch nor the
model code."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import _tiny_model, import_slicer  # noqa: E402

slicer = import_slicer()

from CardioSegLib.catheterlogic import CatheterSegmentationLogic  # noqa: E402
from CardioSegLib.export import TASK_ATTRIBUTE  # noqa: E402
from CardioSegLib.heartlogic import AUTO, HeartSegmentationLogic  # noqa: E402
from CardioSegLib.reviewstates import (  # noqa: E402
    EXCLUDED,
    REVIEWED,
    UNREVIEWED,
    next_to_review,
    next_unreviewed,
    review_states,
    set_review_state,
    uncertainties,
)
from CardioSegLib.scene import labels_from_segmentation, write_segmentation  # noqa: E402
from CardioSegLib.sequencebrowser import browser_of_proxy, review_nodes, show_item  # noqa: E402
from Training.errors import Cancelled, InputError  # noqa: E402
from Training.tasks import get_task  # noqa: E402
from Training.trainingfolder import read_training_folder  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CATHETER = list(get_task("catheter").classes)
INSTRUMENT = list(get_task("instruments").classes)
T, H, W = 6, 48, 64
# spacing (0.3, 0.4, 1.5) mm, i and j swapped and negated, an offset origin: a frame read with
# the wrong axes or origin cannot match
IJK_TO_RAS = np.array([[0.0, -0.4, 0.0, 10.0],
                       [-0.3, 0.0, 0.0, -5.0],
                       [0.0, 0.0, 1.5, 3.0],
                       [0.0, 0.0, 0.0, 1.0]])


def _nodes(scene, cls):
    return [scene.GetNthNodeByClass(i, cls) for i in range(scene.GetNumberOfNodesByClass(cls))]


def _grey_run(name="run", t=T):
    """uint8 grey frames (T, H, W) with a bright wire moving down, in the IJK_TO_RAS grid."""
    rng = np.random.default_rng(1)
    frames = rng.integers(40, 120, (t, H, W)).astype(np.uint8)
    for k in range(t):
        frames[k, 10 + 3 * k:13 + 3 * k, 5:55] = 230
    return slicer.util.addVolumeFromArray(frames, IJK_TO_RAS, name=name), frames


def _wire_labels(t=T):
    labels = np.zeros((t, H, W), np.uint8)
    for k in range(t):
        labels[k, 10 + 3 * k:13 + 3 * k, 5:55] = 1
    return labels


def _colour_sequence(scene, t=4, name="endoscopy"):
    """(frames, sequence, browser, proxy): RGB frames as a sequence of single-slice vector volumes
    (item k at frame k of the IJK_TO_RAS grid), a browser of it and the volume it shows them in."""
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (t, H, W, 3)).astype(np.uint8)
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", name)
    sequence.SetIndexName("time")
    sequence.SetIndexUnit("s")
    for k, frame in enumerate(frames):
        item = slicer.vtkMRMLVectorVolumeNode()
        matrix = IJK_TO_RAS.copy()
        matrix[:3, 3] = (IJK_TO_RAS @ [0, 0, k, 1])[:3]
        item.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(matrix))
        slicer.util.updateVolumeFromArray(item, frame[None])
        sequence.SetDataNodeAtValue(item, f"{0.04 * k:.2f}")
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", f"{name} browser")
    browser.AddSynchronizedSequenceNode(sequence)
    return frames, sequence, browser, browser.GetProxyNode(sequence)


# --- importing the Logic ---


def _module_level_cardioseg_imports():
    """The CardioSegLib and Training modules the Slicer module files import when Slicer loads them."""
    import ast

    names = set()
    files = [REPO / "CatheterSeg" / "CatheterSeg.py", REPO / "HeartSeg" / "HeartSeg.py",
             *sorted((REPO / "CardioSegUI").glob("*.py"))]
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:  # module level only: a function's imports run when it is called
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
    return sorted(n for n in names if n.split(".")[0] in ("CardioSegLib", "Training"))


def test_the_logic_imports_without_torch_or_the_model_code():
    """What Slicer imports when it loads the modules (the Logic and the CardioSegLib functions the
    widgets call) imports in a Python where torch, MONAI, segmentation-models-pytorch,
    safetensors and scipy cannot be imported (they are installed on the first Segment), and
    brings in neither Training.predictor nor Training.modelfile."""
    modules = _module_level_cardioseg_imports()
    assert {"CardioSegLib.catheterlogic", "CardioSegLib.heartlogic", "CardioSegLib.reviewstates",
            "CardioSegLib.sequencebrowser", "CardioSegLib.geometry"} <= set(modules)
    script = (
        "import sys\n"
        "for name in ('torch', 'torchvision', 'monai', 'segmentation_models_pytorch', 'timm', 'safetensors',"
        " 'scipy'):\n"
        "    sys.modules[name] = None  # import fails, as before the dependencies are installed\n"
        f"import importlib\nfor name in {modules!r}:\n    importlib.import_module(name)\n"
        "loaded = sorted(m for m in ('Training.predictor', 'Training.modelfile', 'Training.architectures')"
        " if m in sys.modules)\n"
        "assert not loaded, loaded\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


# --- CatheterSeg: Segment on a volume ---


def test_segment_a_volume_then_again_into_the_same_node(mrml_scene, tiny_model):
    logic = CatheterSegmentationLogic()
    volume, _frames = _grey_run()
    calls = []
    seg, stats = logic.process(volume, None, modelPath=str(tiny_model), batch=4,
                               progress=lambda done, total, *a: calls.append((done, total)))
    assert seg.IsA("vtkMRMLSegmentationNode")
    assert (stats["frames"], stats["task"]) == (T, "catheter") and stats["frames_per_second"] > 0
    assert calls == [(4, T), (T, T)]
    assert seg.GetAttribute(TASK_ATTRIBUTE) == "catheter" and logic.segmentationTask(seg) == "catheter"
    segments = seg.GetSegmentation()
    assert [segments.GetNthSegment(i).GetName() for i in range(segments.GetNumberOfSegments())] == ["Catheter"]
    assert labels_from_segmentation(seg, volume, CATHETER).shape == (T, H, W)

    # review marks, then Segment again into the same node: no new node, the marks cleared
    set_review_state(seg, 1, REVIEWED, volume)
    count = mrml_scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    again, _stats = logic.process(volume, seg, modelPath=str(tiny_model), threshold=0.3)
    assert again.GetID() == seg.GetID()
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == count
    assert logic.reviewSummary(seg, volume) == {REVIEWED: 0, EXCLUDED: 0, UNREVIEWED: T, "total": T}
    # each frame's uncertainty is stored with the marks, and the review goes to the least certain
    values = uncertainties(seg, volume)
    assert len(values) == T and all(v is not None and 0 <= v <= 1 for v in values)
    assert values == pytest.approx(_stats["uncertainty"], abs=1e-4)
    assert next_to_review(seg, volume) == int(np.argmax(values))


def test_wrong_kind_of_input_or_task_is_refused_before_any_model_loads(mrml_scene, tmp_path):
    logic = CatheterSegmentationLogic()
    volume, _frames = _grey_run("grey")
    missing = tmp_path / "no-such-model.safetensors"
    assert logic.inputProblem(volume, "catheter") == "" and logic.inputProblem(None, "instruments") == ""
    assert "is grey" in logic.inputProblem(volume, "instruments")
    with pytest.raises(InputError, match="'grey' is grey"):
        logic.process(volume, None, task="instruments", modelPath=str(missing))
    with pytest.raises(ValueError, match="unknown task 'echo'"):
        logic.process(volume, None, task="echo", modelPath=str(missing))
    with pytest.raises(ValueError, match="no input volume"):
        logic.process(None, None, modelPath=str(missing))
    assert _nodes(mrml_scene, "vtkMRMLSegmentationNode") == []


# --- cancel mid-run ---


def test_cancel_after_the_first_batch_leaves_the_scene_unchanged(mrml_scene, tiny_model):
    """cancel() turns true after the first batch: Cancelled, no node added, and a given
    segmentation keeps its labels and its review marks."""
    logic = CatheterSegmentationLogic()
    volume, _frames = _grey_run()
    labels = _wire_labels()
    seg = write_segmentation(labels, volume, CATHETER)
    set_review_state(seg, 2, REVIEWED, volume)
    before = {cls: mrml_scene.GetNumberOfNodesByClass(cls)
              for cls in ("vtkMRMLSegmentationNode", "vtkMRMLScalarVolumeNode", "vtkMRMLSequenceNode")}
    batches = []

    with pytest.raises(Cancelled):
        logic.process(volume, seg, modelPath=str(tiny_model), batch=2,
                      progress=lambda done, total, *a: batches.append(done), cancel=lambda: bool(batches))
    assert batches == [2]  # stopped before the second batch
    assert before == {cls: mrml_scene.GetNumberOfNodesByClass(cls) for cls in before}
    np.testing.assert_array_equal(labels_from_segmentation(seg, volume, CATHETER), labels)
    assert review_states(seg, volume)[2] == REVIEWED

    with pytest.raises(Cancelled):  # a new result is not half made either
        logic.process(volume, None, modelPath=str(tiny_model), batch=2,
                      progress=lambda done, total, *a: batches.append(done), cancel=lambda: len(batches) > 1)
    assert before == {cls: mrml_scene.GetNumberOfNodesByClass(cls) for cls in before}


# --- a video in a sequence browser ---


def test_segment_a_sequence_chosen_through_its_proxy_volume(mrml_scene, tiny_instruments_model):
    logic = CatheterSegmentationLogic()
    frames, sequence, browser, proxy = _colour_sequence(mrml_scene)
    assert logic.inputProblem(proxy, "instruments") == ""
    assert "colour" in logic.inputProblem(proxy, "catheter")  # the sequence's items, not the proxy alone
    calls = []
    result, stats = logic.process(proxy, None, task="instruments", modelPath=str(tiny_instruments_model),
                                  progress=lambda done, total, *a: calls.append((done, total)))
    assert result.IsA("vtkMRMLSequenceNode") and result.GetNumberOfDataNodes() == 4
    assert (stats["frames"], stats["task"], calls[-1]) == (4, "instruments", (4, 4))
    assert browser.IsSynchronizedSequenceNode(result)
    assert [result.GetNthIndexValue(k) for k in range(4)] == [sequence.GetNthIndexValue(k) for k in range(4)]

    # the panel shows and edits the proxy segmentation; review and export work on the sequences
    shown = logic.shownSegmentation(result)
    assert shown.IsA("vtkMRMLSegmentationNode") and browser_of_proxy(shown).GetID() == browser.GetID()
    items, states = review_nodes(proxy, shown)
    assert (items.GetID(), states.GetID()) == (sequence.GetID(), result.GetID())
    assert logic.shownSegmentation(None) is None and logic.shownSegmentation(shown) is shown

    # Segment again with the proxy segmentation selected: the same sequence, marks cleared
    set_review_state(states, 1, REVIEWED, items)
    sequences = mrml_scene.GetNumberOfNodesByClass("vtkMRMLSequenceNode")
    again, _stats = logic.process(proxy, shown, task="instruments", modelPath=str(tiny_instruments_model))
    assert again.GetID() == result.GetID()
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLSequenceNode") == sequences
    assert logic.reviewSummary(states, items)[REVIEWED] == 0
    assert uncertainties(states, items) == pytest.approx(_stats["uncertainty"], abs=1e-4)  # item order


def test_reviewed_sequence_frames_export_from_the_item_shown(mrml_scene, tiny_instruments_model, tmp_path):
    logic = CatheterSegmentationLogic()
    frames, sequence, browser, proxy = _colour_sequence(mrml_scene, name="video")
    result, _stats = logic.process(proxy, None, task="instruments", modelPath=str(tiny_instruments_model))
    shown = logic.shownSegmentation(result)
    items, states = review_nodes(proxy, shown)
    assert show_item(proxy, 2)
    truth = np.zeros((1, H, W), np.uint8)
    truth[0, 20:26, 8:50] = 1
    write_segmentation(truth, proxy, INSTRUMENT, shown)  # an edit on screen, as Segment Editor makes it
    set_review_state(states, 2, REVIEWED, items)

    ids = logic.exportReviewedFrames(states, items, tmp_path / "tf")  # the segmentation's task
    folder = read_training_folder(tmp_path / "tf")
    (case,) = folder.cases
    assert (folder.task, case.frame_index, case.source, [case.case_id]) == ("instruments", 2, "video", ids)
    image, label, _geometry = folder.load(case.case_id)
    np.testing.assert_array_equal(image, frames[2])
    np.testing.assert_array_equal(label, truth[0])


# --- review marks, export, loading a case back ---


def test_review_marks_summary_and_next_unreviewed(mrml_scene):
    logic = CatheterSegmentationLogic()
    volume, _frames = _grey_run()
    seg = write_segmentation(_wire_labels(), volume, CATHETER)
    assert logic.reviewSummary(seg, volume) == {REVIEWED: 0, EXCLUDED: 0, UNREVIEWED: T, "total": T}
    set_review_state(seg, 0, REVIEWED, volume)
    set_review_state(seg, 2, REVIEWED, volume)
    set_review_state(seg, 3, EXCLUDED, volume)
    assert logic.reviewSummary(seg, volume) == {REVIEWED: 2, EXCLUDED: 1, UNREVIEWED: 3, "total": T}
    assert next_unreviewed(seg, volume, after=0) == 1
    assert next_unreviewed(seg, volume, after=2) == 4
    set_review_state(seg, 2, UNREVIEWED, volume)
    assert review_states(seg, volume)[:4] == [REVIEWED, UNREVIEWED, UNREVIEWED, EXCLUDED]


def test_export_reviewed_frames_and_load_a_case_back(mrml_scene, tmp_path):
    logic = CatheterSegmentationLogic()
    volume, frames = _grey_run("fluoro")
    labels = _wire_labels()
    seg = write_segmentation(labels, volume, CATHETER)
    seg.SetAttribute("CardioSeg.ModelVersion", "9.9.9")
    for k in (1, 4):
        set_review_state(seg, k, REVIEWED, volume)
    set_review_state(seg, 5, EXCLUDED, volume)
    folder = tmp_path / "training"

    calls = []
    ids = logic.exportReviewedFrames(seg, volume, folder, progress=lambda done, total, *a: calls.append(done))
    assert len(ids) == 2 and calls[-1] == 2
    assert sorted(logic.trainingFolderCases(folder)) == sorted(ids)
    training = read_training_folder(folder)
    assert training.task == "catheter"  # no segmentation task attribute: the module's default task
    cases = {case.frame_index: case for case in training.cases}
    assert sorted(cases) == [1, 4] and {c.model_version for c in cases.values()} == {"9.9.9"}
    for k in (1, 4):
        image, label, _geometry = training.load(cases[k].case_id)
        np.testing.assert_array_equal(image, frames[k])
        np.testing.assert_array_equal(label, labels[k])
    # exporting again replaces the cases instead of adding any
    assert sorted(logic.exportReviewedFrames(seg, volume, folder)) == sorted(ids)
    assert len(read_training_folder(folder).cases) == 2

    loadedVolume, loadedSeg = logic.loadCase(folder, cases[4].case_id)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(loadedVolume)[0], frames[4])
    np.testing.assert_array_equal(labels_from_segmentation(loadedSeg, loadedVolume, CATHETER)[0], labels[4])
    assert logic.segmentationTask(loadedSeg) == "catheter"
    # HeartSeg does not run the folder's task and has no default task: the case keeps the folder's
    _volume, other = HeartSegmentationLogic().loadCase(folder, cases[4].case_id)
    assert other.GetAttribute(TASK_ATTRIBUTE) == "catheter" and HeartSegmentationLogic.segmentationTask(other) is None


def test_nothing_reviewed_is_refused_and_nothing_written(mrml_scene, tmp_path):
    logic = CatheterSegmentationLogic()
    volume, _frames = _grey_run()
    seg = write_segmentation(_wire_labels(), volume, CATHETER)
    with pytest.raises(ValueError):
        logic.exportReviewedFrames(seg, volume, tmp_path / "tf")
    assert not (tmp_path / "tf" / "dataset.json").exists()


def test_frame_shown_by_a_slice_view(mrml_scene):
    """The red view's slice node on a frame of the volume: the frame index; turned away: None."""
    logic = CatheterSegmentationLogic()
    volume = slicer.util.addVolumeFromArray(np.zeros((T, H, W), np.uint8), name="axial")  # IJK = RAS
    sliceNode = slicer.vtkMRMLSliceNode()
    mrml_scene.AddNode(sliceNode)
    matrix = sliceNode.GetSliceToRAS()
    matrix.Identity()
    matrix.SetElement(2, 3, 3.0)
    assert logic.sliceShowsFrames(sliceNode, volume)
    assert logic.frameShownBySlice(sliceNode, volume) == 3
    matrix.DeepCopy((0, 0, 1, 0,  1, 0, 0, 0,  0, 1, 0, 3.0,  0, 0, 0, 1))  # sagittal
    assert not logic.sliceShowsFrames(sliceNode, volume)
    assert logic.frameShownBySlice(sliceNode, volume) is None


def test_segment_editor_node_is_one_per_module(mrml_scene):
    node = CatheterSegmentationLogic.getSegmentEditorNode()
    assert node.IsA("vtkMRMLSegmentEditorNode") and node.GetSingletonTag() == "CatheterSeg"
    assert CatheterSegmentationLogic.getSegmentEditorNode().GetID() == node.GetID()
    assert HeartSegmentationLogic.getSegmentEditorNode().GetID() != node.GetID()


# --- model files ---


def test_model_files_are_checked_and_installed_for_the_modules_tasks(tiny_model, tiny_instruments_model, tmp_path):
    catheter, heart = CatheterSegmentationLogic(), HeartSegmentationLogic()
    assert catheter.checkModelFile(tiny_model).task == "catheter"
    assert catheter.checkModelFile(tiny_instruments_model, task="instruments").task == "instruments"
    with pytest.raises(ValueError):
        catheter.checkModelFile(tiny_instruments_model)  # the default task is catheter
    stored = catheter.storeUserModel(tiny_model, tmp_path / "models")
    assert [m.path for m in catheter.userModels(tmp_path / "models")] == [stored]
    assert catheter.userModels(tmp_path / "models", task="instruments") == []
    # HeartSeg has no default task: a model file says its own, which must be one of HeartSeg's
    with pytest.raises(ValueError, match="is a model for task 'catheter'; HeartSeg runs heart-ct, echo"):
        heart.storeUserModel(tiny_model, tmp_path / "heart-models")
    with pytest.raises(ValueError, match="choose a task"):
        heart.taskName()
    assert catheter.bundledModelPath().name == "catheter_unet_lite0.safetensors"
    assert heart.bundledModelPath("echo") == Path(get_task("echo").bundled_model)


# --- HeartSeg: task detection, Segment with AUTO, measurements ---


def _ct_volume(name="chest CT", slices=6, spacing=(2.5, 0.8, 0.7)):
    """A CT in Hounsfield units (air around a soft-tissue body); arrays (Z, Y, X)."""
    rng = np.random.default_rng(3)
    voxels = np.full((slices, H, W), -1000.0, np.float32) + rng.normal(0, 10, (slices, H, W)).astype(np.float32)
    voxels[:, 8:40, 8:56] = 40.0
    dz, dy, dx = spacing
    return slicer.util.addVolumeFromArray(voxels, np.diag([-dx, -dy, dz, 1.0]), name=name)


def _echo_volume(name="echo clip", frames=8):
    rng = np.random.default_rng(4)
    clip = rng.integers(0, 200, (frames, H, W)).astype(np.uint8)
    return slicer.util.addVolumeFromArray(clip, np.diag([-0.3, -0.3, 1.0, 1.0]), name=name)


@pytest.fixture(scope="module")
def tiny_echo_model(tmp_path_factory):
    return _tiny_model(tmp_path_factory.mktemp("model") / "echo.safetensors", "echo", "unet-resnet18",
                       {"method": "window", "lower": 0, "upper": 255})


def test_heartseg_detects_the_task_from_the_volume(mrml_scene):
    logic = HeartSegmentationLogic()
    ct, echo = _ct_volume(), _echo_volume()
    task, reason = logic.resolveTask(AUTO, ct)
    assert task == "heart-ct" and "Hounsfield" in reason
    task, reason = logic.resolveTask(AUTO, echo)
    assert task == "echo" and "ultrasound" in reason
    assert logic.resolveTask(None, echo)[0] == "echo"
    assert logic.resolveTask(AUTO, echo, modality="CT") == ("heart-ct", "DICOM modality CT")
    assert logic.resolveTask("echo", ct) == ("echo", "chosen")  # a chosen task is not second-guessed here
    with pytest.raises(ValueError, match="unknown task 'catheter'"):
        logic.resolveTask("catheter", ct)
    with pytest.raises(ValueError, match="no input volume"):
        logic.resolveTask(AUTO, None)
    odd = slicer.util.addVolumeFromArray(np.full((4, 8, 8), 5000.0, np.float32), name="odd")
    with pytest.raises(InputError, match="neither CT"):
        logic.resolveTask(AUTO, odd)


def test_heartseg_segments_with_the_detected_task(mrml_scene, tiny_echo_model):
    logic = HeartSegmentationLogic()
    echo = _echo_volume()
    seg, stats = logic.process(echo, None, modelPath=str(tiny_echo_model))  # task AUTO
    assert (stats["task"], stats["frames"]) == ("echo", 8) and "ultrasound" in stats["task_reason"]
    assert seg.GetSegmentation().GetNumberOfSegments() == 3
    assert logic.segmentationTask(seg) == "echo"
    # the echo model refuses a CT given as echo, before the scene is touched
    ct = _ct_volume()
    with pytest.raises(ValueError, match="CT|Hounsfield"):
        logic.process(ct, None, task="echo", modelPath=str(tiny_echo_model))
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 1


def test_heartseg_measures_heart_volume_in_ml_on_ct(mrml_scene):
    logic = HeartSegmentationLogic()
    ct = _ct_volume(spacing=(2.5, 0.8, 0.7))
    labels = np.zeros((6, H, W), np.uint8)
    labels[1:5, 10:30, 12:42] = 1  # 4 x 20 x 30 voxels of 2.5 x 0.8 x 0.7 mm
    seg = write_segmentation(labels, ct, list(get_task("heart-ct").classes))
    m = logic.measure(seg, ct, "heart-ct")
    assert m["task"] == "heart-ct" and list(m["volumes_ml"]) == ["Heart"]
    assert m["volumes_ml"]["Heart"] == pytest.approx(4 * 20 * 30 * 2.5 * 0.8 * 0.7 / 1000.0, rel=1e-4)


def test_heartseg_measures_the_lv_area_curve_and_ed_es_on_echo(mrml_scene):
    logic = HeartSegmentationLogic()
    echo = _echo_volume(frames=8)
    classes = list(get_task("echo").classes)
    labels = np.zeros((8, H, W), np.uint8)
    sides = [20, 18, 14, 10, 8, 12, 16, 19]  # the LV shrinks to frame 4 and fills again
    for k, side in enumerate(sides):
        labels[k, 5:5 + side, 5:5 + side] = 1
        labels[k, 40:44, 5:30] = 2  # myocardium, the same in every frame
    seg = write_segmentation(labels, echo, classes)
    m = logic.measure(seg, echo, "echo")
    assert m["task"] == "echo"
    np.testing.assert_allclose(m["area_mm2"], [s * s * 0.09 for s in sides], rtol=1e-5)
    assert (m["ed_frame"], m["es_frame"], m["message"]) == (0, 4, "")

    still = write_segmentation(np.repeat(labels[:1], 8, axis=0), echo, classes)
    m = logic.measure(still, echo, "echo")
    assert m["ed_frame"] is None and m["es_frame"] is None and "same in every frame" in m["message"]
    with pytest.raises(ValueError, match="unknown task 'instruments'"):
        logic.measure(seg, echo, "instruments")


def _dice(a, b):
    return 2 * np.logical_and(a > 0, b > 0).sum() / max((a > 0).sum() + (b > 0).sum(), 1)


def test_adapt_to_reviewed_frames_in_a_background_process(mrml_scene, tiny_model, tmp_path):
    """Reviewed frames train the model in another process; it is installed and segments the other
    frames, whose Dice rises, while reviewed and excluded frames keep their labels and marks."""
    import time

    from CardioSegLib.adapt import start_adaptation

    logic = CatheterSegmentationLogic()
    volume, _frames = _grey_run("adaptrun", t=8)
    truth = np.zeros((8, H, W), np.uint8)
    for k in range(8):
        truth[k, 10 + 3 * k:13 + 3 * k, 5:55] = 1
    seg, _stats = logic.process(volume, None, modelPath=str(tiny_model))
    before = labels_from_segmentation(seg, volume, CATHETER)
    with pytest.raises(ValueError, match="no frame is marked reviewed"):
        logic.startAdaptation(seg, volume, workFolder=tmp_path / "work", modelPath=str(tiny_model))
    # the user corrects frames 0-3 and reviews them, and excludes frame 7
    corrected = before.copy()
    corrected[:4] = truth[:4]
    write_segmentation(corrected, volume, CATHETER, seg)
    for k in range(4):
        set_review_state(seg, k, REVIEWED, volume)
    set_review_state(seg, 7, EXCLUDED, volume)
    job = start_adaptation(seg, volume, "catheter", tiny_model, tmp_path / "work", epochs=60, lr=3e-3)
    seen, t0 = [], time.time()
    while True:  # the scene stays usable meanwhile: the training runs in its own process
        done, total, finished = job.poll()
        seen.append(done)
        if finished:
            break
        assert time.time() - t0 < 300, "the fine-tune did not end"
        time.sleep(0.5)
    assert job.succeeded, job.error
    assert total == 60 and seen[-1] == 60 and seen == sorted(seen)
    installed, stats = logic.finishAdaptation(job, seg, volume, modelsFolder=tmp_path / "models")
    assert installed.parent == tmp_path / "models" and installed.is_file()
    assert stats["frames"] == 3 and stats["reviewed"] == 5
    after = labels_from_segmentation(seg, volume, CATHETER)
    np.testing.assert_array_equal(after[:4], truth[:4])  # reviewed: the user's labels
    np.testing.assert_array_equal(after[7], before[7])  # excluded: untouched
    assert review_states(seg, volume) == [REVIEWED] * 4 + [UNREVIEWED] * 3 + [EXCLUDED]
    assert np.mean([_dice(after[k], truth[k]) for k in (4, 5, 6)]) > np.mean(
        [_dice(before[k], truth[k]) for k in (4, 5, 6)]) + 0.2
    assert all(v is not None for v in uncertainties(seg, volume))
    assert "+ft." in seg.GetAttribute("CardioSeg.ModelVersion")


def test_adapt_a_video_in_a_sequence_browser(mrml_scene, tiny_model, tmp_path):
    """A video chosen through its browser's proxy volume, as the panel passes it: the reviewed items
    train the model, the other items are re-segmented in the segmentation sequence, which the
    browser keeps playing; reviewed and excluded items keep their labels and marks."""
    from CardioSegLib.adapt import start_adaptation
    from CardioSegLib.scene import write_segmentation_sequence

    logic = CatheterSegmentationLogic()
    t = 8
    _volume, frames = _grey_run("adaptvideo frames", t=t)
    sequence = mrml_scene.AddNewNodeByClass("vtkMRMLSequenceNode", "adaptvideo")
    for k in range(t):
        item = slicer.vtkMRMLScalarVolumeNode()
        item.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(IJK_TO_RAS))
        slicer.util.updateVolumeFromArray(item, frames[k:k + 1])
        sequence.SetDataNodeAtValue(item, str(k))
    browser = mrml_scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", "adaptvideo browser")
    browser.AddSynchronizedSequenceNode(sequence)
    proxy = browser.GetProxyNode(sequence)
    truth = _wire_labels(t)
    result, _stats = logic.process(proxy, None, modelPath=str(tiny_model))
    shown = logic.shownSegmentation(result)

    def item_labels():
        return np.concatenate([labels_from_segmentation(result.GetNthDataNode(k), sequence.GetNthDataNode(k), CATHETER)
                               for k in range(t)])

    before = item_labels()
    corrected = before.copy()
    corrected[:4] = truth[:4]
    write_segmentation_sequence(corrected, sequence, CATHETER, result, browser=browser)
    for k in range(4):
        set_review_state(result, k, REVIEWED, sequence)
    set_review_state(result, 7, EXCLUDED, sequence)
    job = start_adaptation(shown, proxy, "catheter", tiny_model, tmp_path / "work", epochs=60, lr=3e-3)
    assert job.wait(600) == 0 and job.succeeded, job.error
    assert len(read_training_folder(job.work / "data").cases) == 4  # the reviewed items, nothing else
    installed, stats = logic.finishAdaptation(job, shown, proxy, modelsFolder=tmp_path / "models")
    assert installed.is_file() and (stats["frames"], stats["reviewed"]) == (3, 5)
    after = item_labels()
    np.testing.assert_array_equal(after[:4], truth[:4])
    np.testing.assert_array_equal(after[7], before[7])
    assert review_states(result, sequence) == [REVIEWED] * 4 + [UNREVIEWED] * 3 + [EXCLUDED]
    assert np.mean([_dice(after[k], truth[k]) for k in (4, 5, 6)]) > np.mean(
        [_dice(before[k], truth[k]) for k in (4, 5, 6)]) + 0.2
    assert result.GetNumberOfDataNodes() == t and browser.IsSynchronizedSequenceNode(result)
    assert all(v is not None for v in uncertainties(result, sequence))
    assert "+ft." in result.GetAttribute("CardioSeg.ModelVersion")
    with pytest.raises(ValueError, match="not the segmentation sequence"):  # a proxy with a plain segmentation
        start_adaptation(write_segmentation(truth[:1], proxy, CATHETER), proxy, "catheter", tiny_model, tmp_path / "w2")


def test_a_cancelled_adaptation_changes_nothing(mrml_scene, tiny_model, tmp_path):
    from CardioSegLib.adapt import start_adaptation

    logic = CatheterSegmentationLogic()
    volume, _frames = _grey_run("cancelrun", t=4)
    seg, _stats = logic.process(volume, None, modelPath=str(tiny_model))
    set_review_state(seg, 0, REVIEWED, volume)
    set_review_state(seg, 1, REVIEWED, volume)
    labels = labels_from_segmentation(seg, volume, CATHETER)
    job = start_adaptation(seg, volume, "catheter", tiny_model, tmp_path / "work", epochs=200)
    job.cancel()
    assert job.poll()[2] and not job.succeeded
    with pytest.raises(ValueError, match="did not finish"):
        logic.finishAdaptation(job, seg, volume, modelsFolder=tmp_path / "models")
    np.testing.assert_array_equal(labels_from_segmentation(seg, volume, CATHETER), labels)
    assert not (tmp_path / "models").exists()
