"""Where a library function replaced a hand-written one (issue 14), the result is what it was:
the .seg.nrrd written with slicerio opens in MRML with names, colours, terminology and geometry;
the predictor's AsDiscrete labels and the kept hand-written keep-largest match the old code and
MONAI's transform; the CT window (ScaleIntensityRange) gives the old values; one cancel helper;
one Dice."""
import multiprocessing
import threading

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import import_slicer
from Training.cancel import is_cancelled, raise_if_cancelled
from Training.errors import Cancelled
from Training.imagefiles import write_segmentation
from Training.metrics import dice
from Training.predictor import Predictor, _connected_keep_largest
from Training.preprocess import normalize_intensity
from Training.tasks import get_task


def _reference(shape=(3, 30, 40)):
    ref = sitk.Image(shape[2], shape[1], shape[0], sitk.sitkFloat32)
    ref.SetSpacing((0.3, 0.4, 2.0))
    ref.SetOrigin((10.0, -20.0, 30.0))
    ref.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))  # rotated in-plane
    return ref


def test_written_segmentation_opens_in_mrml_with_names_colours_terminology_and_geometry(tmp_path, mrml_scene):
    slicer = import_slicer()
    import vtk

    ref = _reference()
    labels = np.zeros((3, 30, 40), np.uint8)
    labels[0, 5:9, 7:20] = 1
    labels[1, 10:20, 10:30] = 2
    labels[2, 1:4, 1:5] = 3
    classes = list(get_task("echo").classes)
    path = write_segmentation(tmp_path / "echo.seg.nrrd", labels, ref, classes)
    assert not list(tmp_path.glob(".*"))  # no temporary file left
    seg = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(seg)
    segmentation = seg.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == len(classes)
    reference = slicer.vtkMRMLScalarVolumeNode()
    mrml_scene.AddNode(reference)
    d = np.asarray(ref.GetDirection()).reshape(3, 3) @ np.diag(ref.GetSpacing())
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ d
    ijk_to_ras[:3, 3] = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(ref.GetOrigin())
    reference.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras))
    image = vtk.vtkImageData()
    image.SetDimensions(40, 30, 3)
    image.AllocateScalars(vtk.VTK_FLOAT, 1)
    reference.SetAndObserveImageData(image)
    for k, c in enumerate(classes, start=1):
        segment = segmentation.GetNthSegment(k - 1)
        assert segment.GetName() == c["name"]
        assert np.allclose(segment.GetColor(), c["color"], atol=1e-4)
        tag = vtk.mutable("")
        assert segment.GetTag("TerminologyEntry", tag) and str(tag) == c["terminology"]
        labelmap = mrml_scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segmentation.GetNthSegmentID(k - 1))
        assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(seg, ids, labelmap, reference)
        assert np.array_equal(slicer.util.arrayFromVolume(labelmap) > 0, labels == k), c["name"]


def test_written_segmentation_reads_back_with_simpleitk_in_the_reference_geometry(tmp_path):
    ref = _reference()
    labels = np.random.default_rng(0).integers(0, 2, (3, 30, 40)).astype(np.uint8)
    path = write_segmentation(tmp_path / "c.seg.nrrd", labels, ref, list(get_task("catheter").classes))
    back = sitk.ReadImage(str(path))
    assert np.array_equal(sitk.GetArrayFromImage(back), labels)
    assert np.allclose(back.GetSpacing(), ref.GetSpacing()) and np.allclose(back.GetOrigin(), ref.GetOrigin())
    assert np.allclose(back.GetDirection(), ref.GetDirection())
    assert back.GetMetaData("Segment0_Name") == "Catheter" and back.GetMetaData("Segment0_LabelValue") == "1"


def test_a_class_without_a_terminology_is_written_without_one(tmp_path):
    """A registered task may leave the terminology empty (or partial): the file is still written."""
    classes = [{"name": "Bars", "color": [1.0, 0.0, 0.0], "terminology": ""},
               {"name": "Dots", "color": [0.0, 1.0, 0.0], "terminology": "only~two"}]
    labels = np.zeros((3, 30, 40), np.uint8)
    labels[:, 2:5, 2:9] = 1
    labels[:, 20:25, 20:30] = 2
    path = write_segmentation(tmp_path / "toy.seg.nrrd", labels, _reference(), classes)
    back = sitk.ReadImage(str(path))
    assert np.array_equal(sitk.GetArrayFromImage(back), labels)
    assert back.GetMetaData("Segment1_Name") == "Dots"
    assert not back.HasMetaDataKey("Segment0_Tags") or "TerminologyEntry" not in back.GetMetaData("Segment0_Tags")


def _blobs(seed=0, shape=(4, 96, 96)):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), (0, 3, 3))
    return np.digitize(noise, np.quantile(noise, [0.7, 0.85, 0.95])).astype(np.uint8)


@pytest.mark.parametrize("keep", [1, 2, 5])
def test_keep_largest_keeps_the_components_monai_keeps(keep):
    from monai.transforms import KeepLargestConnectedComponent

    labels = _blobs()
    ours = labels.copy()
    for i in range(len(ours)):
        for k in np.unique(ours[i])[1:]:
            ours[i][(ours[i] == k) & ~_connected_keep_largest(ours[i] == k, keep)] = 0
    monai = KeepLargestConnectedComponent(num_components=keep, independent=True, is_onehot=False)
    theirs = np.stack([np.asarray(monai(torch.from_numpy(f[None].copy())))[0] for f in labels])
    # the same components; where several of equal size compete for the last place, either may stay
    for f in range(len(labels)):
        for k in (1, 2, 3):
            assert (ours[f] == k).sum() == (theirs[f] == k).sum(), (f, k)
    if keep <= 2:
        assert np.array_equal(ours, theirs)
    assert not np.array_equal(ours, labels)  # components were removed


def _old_labels(logits, threshold, size):
    """The predictor's label step before AsDiscrete."""
    import torch.nn.functional as F

    if logits.shape[1] == 1:
        thr = float(np.log(threshold / (1 - threshold)))
        up = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return (up[:, 0] > thr).to(torch.uint8).numpy()
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False).argmax(1).to(torch.uint8).numpy()


@pytest.mark.parametrize("task_model", ["tiny_model", "tiny_instruments_model"])
@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_predictor_labels_are_the_old_labels(request, task_model, threshold):
    p = Predictor(request.getfixturevalue(task_model), threshold=threshold)
    torch.manual_seed(0)
    logits = torch.randn(3, 1, 64, 64)
    thr = float(np.log(threshold / (1 - threshold)))
    logits[0, 0, :8, :8] = float(np.float32(thr))  # exactly at the threshold: background, as before
    assert np.array_equal(p._labels(logits, (64, 64)), _old_labels(logits, threshold, (64, 64)))
    assert np.array_equal(p._labels(logits, (80, 70)), _old_labels(logits, threshold, (80, 70)))
    assert not p._labels(logits, (64, 64))[0, :8, :8].any()


def test_predictor_argmax_labels_are_the_old_labels(tmp_path):
    from conftest import _tiny_model

    model = _tiny_model(tmp_path / "echo.safetensors", "echo", "unet-resnet18",
                        {"method": "percentile", "lower": 0.5, "upper": 99.5})
    p = Predictor(model)
    logits = torch.randn(3, 4, 64, 64, generator=torch.Generator().manual_seed(1))
    assert np.array_equal(p._labels(logits, (90, 64)), _old_labels(logits, 0.5, (90, 64)))


def test_window_normalisation_is_the_old_formula():
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.int16, np.uint8):
        x = torch.from_numpy(rng.normal(100, 600, (4, 1, 64, 48)).clip(-3000, 3000).astype(dtype))
        for lo, hi in ((-100.0, 300.0), (0.0, 255.0)):
            got = normalize_intensity(x, {"method": "window", "lower": lo, "upper": hi})
            assert type(got) is torch.Tensor and got.dtype == torch.float32 and got.shape == x.shape
            assert torch.allclose(got, ((x.float() - lo) / (hi - lo)).clamp(0, 1), rtol=0, atol=1e-6)


class _FlagLike:
    def __init__(self, value):
        self.value = value

    def is_set(self):
        return self.value


def test_one_cancel_helper_for_events_callables_and_none():
    event = threading.Event()
    assert not is_cancelled(None) and not is_cancelled(event) and not is_cancelled(lambda: False)
    event.set()
    assert is_cancelled(event) and is_cancelled(lambda: True) and is_cancelled(_FlagLike(True))
    mp_event = multiprocessing.get_context("spawn").Event()  # not a threading.Event, has is_set
    assert not is_cancelled(mp_event)
    mp_event.set()
    assert is_cancelled(mp_event)
    raise_if_cancelled(None, "never")
    with pytest.raises(Cancelled, match="stopped after 3"):
        raise_if_cancelled(event, lambda: "stopped after 3")


def test_one_dice_is_the_old_formula():
    rng = np.random.default_rng(5)
    for _ in range(20):
        a, b = rng.random((2, 40, 40)) > rng.random(2)[:, None, None]
        old = 1.0 if a.sum() + b.sum() == 0 else 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())
        assert dice(a, b) == old
    assert dice(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0
    assert dice(np.array([0, 3, 3]), np.array([0, 1, 0])) == pytest.approx(2 / 3)
