"""The training folder (Training.trainingfolder) and `cardioseg export`: nnU-Net v2 layout and
manifest, voxel-exact round trip with geometry, idempotent and atomic export, kill -9 and crash
at every step, full disk and unwritable folder, integrity checks, paths outside the folder."""
import errno
import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from Training import folderwriter
from Training import trainingfolder as tf
from Training.cli import main
from Training.imagefiles import write_segmentation
from Training.errors import Cancelled
from Training.tasks import get_task
from Training.trainingfolder import Frame, TrainingFolderError, case_id, export_frames, read_training_folder

ROOT = Path(__file__).resolve().parent.parent
DIRECTION = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # rotated in plane
SPACING = (0.3, 0.25, 2.0)
CLASSES = list(get_task("catheter").classes)


def make_frame(k, source="run01", seed=0, dtype=np.uint16, shape=(20, 24), version="v1"):
    """Frame k of a made-up run: random pixels of ``dtype``, a bar label, real 3D geometry."""
    rng = np.random.default_rng(seed * 1000 + k)
    if np.dtype(dtype).kind == "f":
        image = rng.normal(100.0, 30.0, shape).astype(dtype)
    else:
        image = rng.integers(0, 4000 if np.dtype(dtype).itemsize > 1 else 255, shape).astype(dtype)
    label = np.zeros(shape, np.uint8)
    top = 2 + (k + seed) % 5
    label[top:top + 7, 3:15] = 1
    origin = (-30.123456, 12.5, 7.0 + SPACING[2] * k)
    return Frame(image=image, label=label, origin=origin, spacing=SPACING, direction=DIRECTION,
                 source=source, frame_index=k, model_version=version)


def snapshot(folder) -> dict:
    """{relative path: bytes} of every file of the folder but the lock file."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".cardioseg.lock"}


def without_times(doc: dict) -> dict:
    doc = json.loads(json.dumps(doc))
    for entry in doc["cardioseg"]["cases"].values():
        entry.pop("time")
    return doc


def assert_case_is(folder: tf.TrainingFolder, frame: Frame):
    image, label, geometry = folder.load(case_id(frame.source, frame.frame_index))
    assert image.dtype == frame.image.dtype and np.array_equal(image, frame.image)
    assert label.dtype == np.uint8 and np.array_equal(label, frame.label)
    assert geometry == {"origin": tuple(frame.origin), "spacing": tuple(frame.spacing),
                        "direction": tuple(frame.direction)}


# ----------------------------------------------------------------------------- round trip


def test_export_reads_back_voxel_for_voxel_with_geometry(tmp_path):
    frames = [make_frame(k) for k in range(3)] + [
        make_frame(5, source="float run", dtype=np.float32, version=""),
        make_frame(2, source="ct", dtype=np.int16)]
    ids = export_frames(tmp_path / "tf", "catheter", frames)
    assert ids == ["run01_f0000", "run01_f0001", "run01_f0002", case_id("float run", 5), "ct_f0002"]
    assert re.fullmatch(r"float_run-[0-9a-f]{6}_f0005", ids[3])

    folder = read_training_folder(tmp_path / "tf")
    assert [c.case_id for c in folder.cases] == sorted(ids) and folder.unreferenced == []
    for frame in frames:
        assert_case_is(folder, frame)
        case = folder.case(case_id(frame.source, frame.frame_index))
        assert (case.source, case.frame_index, case.model_version) == (frame.source, frame.frame_index,
                                                                       frame.model_version)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", case.time)
        # the files themselves carry the frame's real 3D geometry (stored as float32)
        for path in case.image_paths + [case.label_path]:
            img = sitk.ReadImage(str(path))
            assert img.GetSize() == (24, 20, 1)
            assert np.allclose(img.GetOrigin(), frame.origin, atol=1e-4)
            assert np.allclose(img.GetSpacing(), frame.spacing, atol=1e-6)
            assert np.allclose(img.GetDirection(), frame.direction, atol=1e-6)
    # nnU-Net v2 layout and dataset.json
    files = set(snapshot(tmp_path / "tf"))
    assert files == ({"dataset.json"} | {f"imagesTr/{i}_0000.nii.gz" for i in ids}
                     | {f"labelsTr/{i}.nii.gz" for i in ids})
    doc = json.loads((tmp_path / "tf" / "dataset.json").read_text())
    assert doc["channel_names"] == {"0": "fluoroscopy"}
    assert doc["labels"] == {"background": 0, "Catheter": 1}
    assert doc["numTraining"] == 5 and doc["file_ending"] == ".nii.gz"
    assert doc["dataset"]["run01_f0001"] == {"images": ["imagesTr/run01_f0001_0000.nii.gz"],
                                             "label": "labelsTr/run01_f0001.nii.gz"}
    assert doc["cardioseg"]["task"] == "catheter" and set(doc["cardioseg"]["cases"]) == set(ids)


def test_folder_scan_finds_the_same_cases_as_dataset_json(tmp_path):
    """Tools that scan imagesTr/labelsTr the way nnU-Net does without the "dataset" key (older
    nnU-Net, MONAI) see exactly the listed cases; and our reader reads such a folder too."""
    frames = [make_frame(k) for k in range(3)] + [make_frame(1, source="other")]
    export_frames(tmp_path, "catheter", frames)
    doc = json.loads((tmp_path / "dataset.json").read_text())
    scanned = {re.fullmatch(r"(.+)_(\d{4})\.nii\.gz", p.name).group(1)
               for p in (tmp_path / "imagesTr").glob("*.nii.gz")}
    assert scanned == set(doc["dataset"]) and len(scanned) == doc["numTraining"]
    assert all((tmp_path / "labelsTr" / f"{i}.nii.gz").is_file() for i in scanned)
    plain = {k: doc[k] for k in ("channel_names", "labels", "numTraining", "file_ending")}
    (tmp_path / "dataset.json").write_text(json.dumps(plain))
    folder = read_training_folder(tmp_path)
    assert [c.case_id for c in folder.cases] == sorted(scanned) and folder.task is None
    image, label, _ = folder.load("other_f0001")
    assert np.array_equal(image, frames[3].image) and np.array_equal(label, frames[3].label)


def test_case_ids_are_deterministic_and_safe():
    assert case_id("run01", 7) == "run01_f0007"
    assert case_id("run01", 12345) == "run01_f12345"
    a, b = case_id("run 01.nrrd", 3), case_id("run_01_nrrd", 3)
    assert a == case_id("run 01.nrrd", 3) and a != b
    for name in ("run 01.nrrd", "../../etc", "Röntgen/LAO 30°", "", "x" * 200):
        assert re.fullmatch(r"[A-Za-z0-9_-]+_f\d{4,}", case_id(name, 1)), name
    with pytest.raises(ValueError):
        case_id("run01", -1)


# ----------------------------------------------------------------------------- idempotence


def test_exporting_twice_gives_the_same_folder(tmp_path):
    frames = [make_frame(k) for k in range(3)]
    first = export_frames(tmp_path, "catheter", frames)
    before = snapshot(tmp_path)
    time.sleep(1.1)  # a rewritten manifest would get a new time
    assert export_frames(tmp_path, "catheter", frames) == first
    assert snapshot(tmp_path) == before


def test_reexport_replaces_the_case_and_leaves_other_sources_alone(tmp_path):
    export_frames(tmp_path, "catheter", [make_frame(0), make_frame(1), make_frame(0, source="other")])
    before = snapshot(tmp_path)
    doc_before = json.loads(before["dataset.json"])
    changed = make_frame(1, seed=9, version="v2")  # another image: replaced only when asked
    assert export_frames(tmp_path, "catheter", [changed], replace_images=True) == ["run01_f0001"]
    after = snapshot(tmp_path)
    assert set(after) == set(before)  # replaced, nothing added
    for unchanged in ("imagesTr/run01_f0000_0000.nii.gz", "labelsTr/run01_f0000.nii.gz",
                      "imagesTr/other_f0000_0000.nii.gz", "labelsTr/other_f0000.nii.gz"):
        assert after[unchanged] == before[unchanged]
    doc = json.loads(after["dataset.json"])
    assert doc["numTraining"] == 3
    for cid in ("run01_f0000", "other_f0000"):
        assert doc["cardioseg"]["cases"][cid] == doc_before["cardioseg"]["cases"][cid]
    folder = read_training_folder(tmp_path)
    assert_case_is(folder, changed)
    assert folder.case("run01_f0001").model_version == "v2"


def test_corrected_label_replaces_the_case_but_another_image_of_the_same_name_is_refused(tmp_path):
    first = [make_frame(0), make_frame(1)]
    export_frames(tmp_path, "catheter", first)
    corrected = make_frame(1, version="v2")
    corrected.label = np.roll(corrected.label, 3, axis=1)  # the same image, its label edited
    assert export_frames(tmp_path, "catheter", [corrected]) == ["run01_f0001"]
    assert_case_is(read_training_folder(tmp_path), corrected)
    before = snapshot(tmp_path)
    other_video = [make_frame(2, seed=5), make_frame(0, seed=5)]  # 'run01' again, other pixels
    with pytest.raises(TrainingFolderError, match=r"case run01_f0000 .* holds another image for frame 0 of "
                                                  r"'run01' .*--replace"):
        export_frames(tmp_path, "catheter", other_video)
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if "run01_f0002" not in k and k != "dataset.json"} == \
        {k: v for k, v in before.items() if k != "dataset.json"}  # the frame before the clash was added
    folder = read_training_folder(tmp_path)
    assert_case_is(folder, first[0])
    assert_case_is(folder, corrected)
    assert_case_is(folder, other_video[0])  # run01_f0002, new


# ----------------------------------------------------------------------------- crash safety


class Kill(BaseException):
    """Stands for a kill -9: not an Exception, so no cleanup handler runs."""


def _crashing(monkeypatch, at: int):
    """Count the export's file system steps and raise Kill at step ``at`` (0: never).
    File writes are left half written when the kill hits them. Returns the counter."""
    count = [0]

    def step():
        count[0] += 1
        return count[0] == at

    def wrap(fn):
        def wrapped(*args, **kwargs):
            if step():
                raise Kill()
            return fn(*args, **kwargs)
        return wrapped

    real_image, real_bytes = folderwriter._write_image, folderwriter._write_bytes

    def write_image(image, path):
        real_image(image, path)
        if step():
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
            raise Kill()

    def write_bytes(path, data):
        if step():
            Path(path).write_bytes(data[: len(data) // 2])
            raise Kill()
        real_bytes(path, data)

    monkeypatch.setattr(folderwriter, "_write_image", write_image)
    monkeypatch.setattr(folderwriter, "_write_bytes", write_bytes)
    for name in ("replace", "link", "unlink"):
        monkeypatch.setattr(os, name, wrap(getattr(os, name)))
    monkeypatch.setattr(shutil, "copyfile", wrap(shutil.copyfile))
    return count


def test_a_crash_at_any_step_keeps_every_case_whole(tmp_path, monkeypatch):
    """Kill the export at each of its file system steps in turn: the folder is always valid,
    each case is its old or its new version (never a mix), other cases are untouched, and the
    next export completes it to exactly the folder an uninterrupted export gives."""
    monkeypatch.setattr(folderwriter, "COMMIT_SECONDS", 0.0)  # commit after every case: the most steps
    old = [make_frame(0), make_frame(1), make_frame(0, source="other")]
    new = [make_frame(1, seed=2), make_frame(2, seed=2)]  # replaces run01_f0001, adds run01_f0002
    base = tmp_path / "base"
    export_frames(base, "catheter", old)
    reference = tmp_path / "reference"
    shutil.copytree(base, reference)
    export_frames(reference, "catheter", new, replace_images=True)
    ref_files = snapshot(reference)
    ref_doc = without_times(json.loads(ref_files.pop("dataset.json")))
    counted = shutil.copytree(base, tmp_path / "count")
    with monkeypatch.context() as m:
        count = _crashing(m, at=0)
        export_frames(counted, "catheter", new, replace_images=True)
    steps = count[0]
    assert steps > 20
    base_files = snapshot(base)
    for at in range(1, steps + 1):
        work = shutil.copytree(base, tmp_path / f"crash{at}")
        with monkeypatch.context() as m:
            _crashing(m, at)
            with pytest.raises(Kill):
                export_frames(work, "catheter", new, replace_images=True)
        folder = read_training_folder(work)  # valid after the crash
        files = snapshot(work)
        for kept in ("imagesTr/other_f0000_0000.nii.gz", "labelsTr/other_f0000.nii.gz",
                     "imagesTr/run01_f0000_0000.nii.gz", "labelsTr/run01_f0000.nii.gz"):
            assert files[kept] == base_files[kept], (at, kept)
        ids = {c.case_id for c in folder.cases}
        assert {"other_f0000", "run01_f0000", "run01_f0001"} <= ids, at
        try:
            assert_case_is(folder, new[0])
        except AssertionError:
            assert_case_is(folder, old[1])
        if "run01_f0002" in ids:
            assert_case_is(folder, new[1])
        # the next export finishes the job and removes the leftovers
        export_frames(work, "catheter", new, replace_images=True)
        files = snapshot(work)
        assert without_times(json.loads(files.pop("dataset.json"))) == ref_doc, at
        assert files == ref_files, at
        assert read_training_folder(work).unreferenced == []


def _script(body: str) -> str:
    """A Python script with this module's make_frame, without importing this module (and torch)."""
    head = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import numpy as np
        from Training.trainingfolder import Frame
        SPACING, DIRECTION = {SPACING!r}, {DIRECTION!r}
    """)
    return head + inspect.getsource(make_frame) + textwrap.dedent(body)


KILL_SCRIPT = _script("""
    from Training import folderwriter
    folderwriter.COMMIT_SECONDS = 0.0
    print("start", flush=True)
    folderwriter.export_frames(sys.argv[1], "catheter",
                               (make_frame(k, source="run", shape=(96, 96)) for k in range({n})))
""")


def test_kill_9_in_the_middle_of_an_export_leaves_a_valid_folder(tmp_path):
    n = 40
    script = tmp_path / "export.py"
    script.write_text(KILL_SCRIPT.replace("{n}", str(n)))
    base = tmp_path / "base"
    kept = [make_frame(0, source="keep"), make_frame(1, source="keep")]
    export_frames(base, "catheter", kept)
    base_files = snapshot(base)
    expected = [make_frame(k, source="run", shape=(96, 96)) for k in range(n)]
    killed = 0
    # kill once this many files (temporary or final) have appeared in imagesTr, or after this
    # many seconds: the first mostly hits a commit half done, the others any step
    triggers = [("files", 1), ("files", 5), ("files", 17), ("seconds", 0.1), ("seconds", 0.25), ("seconds", 0.5)]
    for i, (kind, value) in enumerate(triggers):
        work = shutil.copytree(base, tmp_path / f"kill{i}")
        proc = subprocess.Popen([sys.executable, str(script), str(work)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=str(tmp_path))
        assert proc.stdout.readline().strip() == b"start", proc.stderr.read()
        deadline = time.monotonic() + (value if kind == "seconds" else 60)
        while proc.poll() is None and time.monotonic() < deadline:
            if kind == "files" and sum(1 for _ in (work / "imagesTr").iterdir()) >= len(kept) + value:
                break
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed += proc.returncode == -signal.SIGKILL
        folder = read_training_folder(work)
        files = snapshot(work)
        for name, data in base_files.items():
            if name != "dataset.json":
                assert files[name] == data
        run_cases = [c for c in folder.cases if c.source == "run"]
        assert folder.dataset["numTraining"] == len(folder.cases) == len(kept) + len(run_cases)
        for c in run_cases:
            assert_case_is(folder, expected[c.frame_index])
        for frame in kept:
            assert_case_is(folder, frame)
    assert killed >= 3  # most runs were killed mid-export, not after it
    # the next export completes the folder and removes the leftovers
    export_frames(work, "catheter", expected)
    folder = read_training_folder(work)
    assert len(folder.cases) == len(kept) + n and folder.unreferenced == []
    assert not [p for p in work.rglob(".cardioseg-*")]


def test_cancel_and_failing_frames_keep_the_cases_written_before(tmp_path):
    stop = threading.Event()
    seen = []

    def progress(done, total):
        seen.append((done, total))
        if done == 2:
            stop.set()

    frames = [make_frame(k) for k in range(5)]
    with pytest.raises(Cancelled):
        export_frames(tmp_path, "catheter", frames, progress=progress, cancel=stop)
    assert seen == [(1, 5), (2, 5)]
    assert [c.case_id for c in read_training_folder(tmp_path).cases] == ["run01_f0000", "run01_f0001"]

    def failing():
        yield make_frame(0, source="gen")
        raise RuntimeError("the scene went away")

    with pytest.raises(RuntimeError, match="scene went away"):
        export_frames(tmp_path, "catheter", failing())
    assert {c.case_id for c in read_training_folder(tmp_path).cases} == {"run01_f0000", "run01_f0001", "gen_f0000"}


# ----------------------------------------------------------------------------- unwritable / full


def test_unwritable_folder_gives_a_clear_error(tmp_path):
    (tmp_path / "file.txt").write_text("a regular file")
    out = tmp_path / "file.txt" / "training"
    with pytest.raises(TrainingFolderError, match=r"cannot write training folder .*training: Not a directory"):
        export_frames(out, "catheter", [make_frame(0)])


@pytest.mark.parametrize("fail", ["image", "json"])
@pytest.mark.parametrize("error", [(errno.ENOSPC, "No space left on device"), (errno.EACCES, "Permission denied")])
def test_full_or_read_only_disk_loses_nothing(tmp_path, monkeypatch, fail, error):
    export_frames(tmp_path, "catheter", [make_frame(0), make_frame(0, source="other")])
    before = snapshot(tmp_path)
    calls = [0]
    real = folderwriter._write_image if fail == "image" else folderwriter._write_bytes

    def failing(*args):
        calls[0] += 1
        if calls[0] >= 3:  # image: the second new case; json: every commit of this export
            raise OSError(error[0], error[1], str(args[-1] if fail == "image" else args[0]))
        return real(*args)

    if fail == "json":
        calls[0] = 2
    monkeypatch.setattr(folderwriter, "_write_image" if fail == "image" else "_write_bytes", failing)
    new = [make_frame(0, seed=5), make_frame(1), make_frame(2)]
    with pytest.raises(TrainingFolderError, match=f"cannot write training folder {re.escape(str(tmp_path))}: "
                                                  f"{error[1]}") as e:
        export_frames(tmp_path, "catheter", new, replace_images=True)
    if error[0] == errno.ENOSPC:
        assert "disk is full" in str(e.value)
    monkeypatch.undo()
    folder = read_training_folder(tmp_path)
    after = snapshot(tmp_path)
    assert after["imagesTr/other_f0000_0000.nii.gz"] == before["imagesTr/other_f0000_0000.nii.gz"]
    assert not [p for p in tmp_path.rglob(".cardioseg-*")]  # no temporary file left behind
    if fail == "json":
        assert after == before  # nothing could be committed: the folder is exactly as it was
    else:
        # the case finished before the disk filled up is kept; nothing is half written
        assert [c.case_id for c in folder.cases] == ["other_f0000", "run01_f0000"]
        assert_case_is(folder, new[0])
        assert folder.unreferenced == []


EFBIG_SCRIPT = _script("""
    import resource, signal
    from Training.trainingfolder import export_frames, TrainingFolderError
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000))  # no file may grow past 6 kB
    try:
        export_frames(sys.argv[1], "catheter", [make_frame(k, source="big", shape=(96, 96)) for k in range(3)])
    except TrainingFolderError as e:
        print(e)
        sys.exit(3)
""")


def test_a_real_failed_write_is_caught(tmp_path):
    """SimpleITK reports no error when a write fails half way (it leaves a truncated file that
    even reads back): the export must notice by reading the file back."""
    export_frames(tmp_path / "tf", "catheter", [make_frame(0)])
    before = snapshot(tmp_path / "tf")
    script = tmp_path / "efbig.py"
    script.write_text(EFBIG_SCRIPT)
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "tf")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, r.stderr
    assert "cannot write training folder" in r.stdout and "did not read back" in r.stdout
    assert snapshot(tmp_path / "tf") == before
    assert_case_is(read_training_folder(tmp_path / "tf"), make_frame(0))


# ----------------------------------------------------------------------------- refusals


def test_refuses_a_folder_of_another_task_or_tool(tmp_path):
    other = tmp_path / "heart"
    export_frames(other, "catheter", [make_frame(0)])
    doc = json.loads((other / "dataset.json").read_text())
    doc["labels"] = {"background": 0, "Heart": 1}
    (other / "dataset.json").write_text(json.dumps(doc))
    before = snapshot(other)
    with pytest.raises(TrainingFolderError, match=r"labels \{'background': 0, 'Heart': 1\}"):
        export_frames(other, "catheter", [make_frame(1)])
    assert snapshot(other) == before

    foreign = tmp_path / "nnunet"
    foreign.mkdir()
    (foreign / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "Catheter": 1}, "numTraining": 0,
        "file_ending": ".nii.gz", "dataset": {}}))
    with pytest.raises(TrainingFolderError, match="CardioSeg did not write"):
        export_frames(foreign, "catheter", [make_frame(0)])

    busy = tmp_path / "documents"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(TrainingFolderError, match="not empty"):
        export_frames(busy, "catheter", [make_frame(0)])
    assert sorted(p.name for p in busy.iterdir() if not p.name.startswith(".")) == ["notes.txt"]

    bad = make_frame(0)
    bad.label[0, 0] = 2
    with pytest.raises(TrainingFolderError, match=r"label values 0\.\.2 are outside 0\.\.1"):
        export_frames(tmp_path / "new", "catheter", [bad])
    # NIfTI readers turn NaN into 0, so a NaN frame is refused rather than silently changed
    nan = make_frame(0, dtype=np.float32)
    nan.image[1, 1] = np.nan
    with pytest.raises(TrainingFolderError, match="NaN or infinite"):
        export_frames(tmp_path / "new", "catheter", [nan])
    assert read_training_folder(tmp_path / "new").cases == []


def _edit_json(folder, edit):
    doc = json.loads((folder / "dataset.json").read_text())
    edit(doc)
    (folder / "dataset.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("where", ["absolute", "dotdot", "nested dotdot", "variable", "symlink", "linked folder"])
def test_paths_outside_the_folder_are_refused(tmp_path, where):
    folder = tmp_path / "tf"
    export_frames(folder, "catheter", [make_frame(0)])
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(folder / "labelsTr" / "run01_f0000.nii.gz", outside / "run01_f0000.nii.gz")
    label = {"absolute": str(outside / "run01_f0000.nii.gz"), "dotdot": "../outside/run01_f0000.nii.gz",
             "nested dotdot": "labelsTr/../../outside/run01_f0000.nii.gz",
             "variable": "$TMPDIR/run01_f0000.nii.gz", "symlink": "labelsTr/link.nii.gz",
             "linked folder": "labelsTr/run01_f0000.nii.gz"}[where]
    if where == "symlink":
        (folder / "labelsTr" / "link.nii.gz").symlink_to(outside / "run01_f0000.nii.gz")
    if where == "linked folder":
        shutil.rmtree(folder / "labelsTr")
        (folder / "labelsTr").symlink_to(outside)
    _edit_json(folder, lambda d: d["dataset"]["run01_f0000"].update(label=label))
    before = snapshot(folder)
    with pytest.raises(TrainingFolderError, match=r"(outside the folder|absolute|variable)") as e:
        read_training_folder(folder)
    assert label in str(e.value)
    with pytest.raises(TrainingFolderError, match="outside the folder|absolute|variable"):
        export_frames(folder, "catheter", [make_frame(1)])  # the writer refuses it too
    assert snapshot(folder) == before


def _rewrite(path, array=None, **geometry):
    """Rewrite an image file with another array and/or geometry (origin=, spacing=, direction=)."""
    img = sitk.ReadImage(str(path))
    new = sitk.GetImageFromArray(sitk.GetArrayFromImage(img) if array is None else array)
    new.SetOrigin(img.GetOrigin())
    new.SetSpacing(img.GetSpacing())
    new.SetDirection(img.GetDirection())
    for key, value in geometry.items():
        getattr(new, f"Set{key.capitalize()}")(value)
    sitk.WriteImage(new, str(path))


@pytest.mark.parametrize("damage, message", [
    ("label value", r"value\(s\) \[3\] that are not labels"),
    ("label spacing", "geometry .* differs"),
    ("label size", "has size"),
    ("missing label", "file 'labelsTr/run01_f0000.nii.gz' is missing"),
    ("numTraining", "numTraining 5 but lists 1"),
    ("labels", "consecutive integers"),
    ("file_ending key", "required key.*file_ending"),
    ("manifest geometry", "geometry in the manifest differs"),
    ("manifest case", "manifest and the case list"),
    ("three channels", r"1 image file\(s\) but channel_names lists 3"),
])
def test_the_reader_checks_integrity_like_nnunet(tmp_path, damage, message):
    export_frames(tmp_path, "catheter", [make_frame(0)])
    label = tmp_path / "labelsTr" / "run01_f0000.nii.gz"
    if damage == "label value":
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(label)))
        a[0, 0, 0] = 3
        _rewrite(label, a)
    elif damage == "label spacing":
        _rewrite(label, spacing=(0.5, 0.25, 2.0))
    elif damage == "label size":
        _rewrite(label, np.zeros((1, 20, 23), np.uint8))
    elif damage == "missing label":
        label.unlink()
    elif damage == "numTraining":
        _edit_json(tmp_path, lambda d: d.update(numTraining=5))
    elif damage == "labels":
        _edit_json(tmp_path, lambda d: d.update(labels={"background": 0, "Catheter": 2}))
    elif damage == "file_ending key":
        _edit_json(tmp_path, lambda d: d.pop("file_ending"))
    elif damage == "manifest geometry":
        _edit_json(tmp_path, lambda d: d["cardioseg"]["cases"]["run01_f0000"]["geometry"]["origin"].__setitem__(0, 1.0))
    elif damage == "manifest case":
        _edit_json(tmp_path, lambda d: d["cardioseg"]["cases"].update(ghost_f0000={}))
    elif damage == "three channels":
        _edit_json(tmp_path, lambda d: d.update(channel_names={"0": "R", "1": "G", "2": "B"}))
    with pytest.raises(TrainingFolderError, match=message):
        read_training_folder(tmp_path)


# ----------------------------------------------------------------------------- cardioseg export


@pytest.fixture
def run_with_labels(tmp_path):
    """A 4-frame uint16 run with rotated geometry (NRRD) and its labels, frames 1 and 3 labelled."""
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 4000, (4, 20, 24)).astype(np.uint16)
    labels = np.zeros((4, 20, 24), np.uint8)
    labels[1, 4:9, 2:20] = 1
    labels[3, 10:15, 5:9] = 1
    img = sitk.GetImageFromArray(frames)
    img.SetSpacing(SPACING)
    img.SetOrigin((-30.0, 12.5, 7.0))
    img.SetDirection(DIRECTION)
    path = tmp_path / "run07.nrrd"
    sitk.WriteImage(img, str(path))
    return path, img, frames, labels


def _labelmap(path, labels, reference, **geometry):
    lab = sitk.GetImageFromArray(labels)
    lab.CopyInformation(reference)
    for key, value in geometry.items():
        getattr(lab, f"Set{key.capitalize()}")(value)
    sitk.WriteImage(lab, str(path))
    return path


def _check_exported(out, img, frames, labels, ks, source="run07"):
    folder = read_training_folder(out)
    assert [c.case_id for c in folder.cases] == [f"{source}_f{k:04d}" for k in ks]
    for k in ks:
        image, label, geometry = folder.load(f"{source}_f{k:04d}")
        assert image.dtype == np.uint16 and np.array_equal(image, frames[k]) and np.array_equal(label, labels[k])
        assert np.allclose(geometry["origin"], img.TransformIndexToPhysicalPoint((0, 0, k)))
        assert np.allclose(geometry["spacing"], SPACING) and np.allclose(geometry["direction"], DIRECTION)


def test_cli_export_of_a_labelmap_volume(run_with_labels, tmp_path, capsys):
    path, img, frames, labels = run_with_labels
    lab = _labelmap(tmp_path / "labels.nrrd", labels, img)
    out = tmp_path / "tf"
    assert main(["export", "--task", "catheter", "--image", str(path), "--labels", str(lab), "--out", str(out)]) == 0
    assert "exported 2 frame(s)" in capsys.readouterr().out
    _check_exported(out, img, frames, labels, [1, 3])
    assert main(["export", "--image", str(path), "--labels", str(lab), "--frames", "0,1", "--out", str(out)]) == 0
    _check_exported(out, img, frames, labels, [0, 1, 3])


def test_cli_export_of_a_seg_nrrd(run_with_labels, tmp_path):
    path, img, frames, labels = run_with_labels
    seg = write_segmentation(tmp_path / "run07.seg.nrrd", labels, img, CLASSES)
    out = tmp_path / "tf"
    assert main(["export", "--task", "catheter", "--image", str(path), "--labels", str(seg), "--out", str(out)]) == 0
    _check_exported(out, img, frames, labels, [1, 3])


def test_cli_export_of_a_cropped_multilayer_seg_nrrd(run_with_labels, tmp_path, capsys):
    """Slicer writes overlapping segments as layers (vector components) and may crop the file
    to the segments' extent: segments map to classes by name, the block goes back in place."""
    path, img, frames, labels = run_with_labels
    other = np.zeros_like(labels)
    other[1, 5:12, 8:12] = 1  # overlaps the catheter on layer 1
    block = (slice(0, 4), slice(2, 17), slice(1, 21))  # K, J, I
    layers = np.stack([labels[block], other[block]], axis=-1)
    seg = sitk.GetImageFromArray(layers, isVector=True)
    seg.SetSpacing(SPACING)
    seg.SetDirection(DIRECTION)
    seg.SetOrigin(img.TransformIndexToPhysicalPoint((1, 2, 0)))
    for i, (name, layer) in enumerate([("Guidewire", 1), ("Catheter", 0)]):
        seg.SetMetaData(f"Segment{i}_ID", f"S{i}")
        seg.SetMetaData(f"Segment{i}_Name", name)
        seg.SetMetaData(f"Segment{i}_LabelValue", "1")
        seg.SetMetaData(f"Segment{i}_Layer", str(layer))
    sitk.WriteImage(seg, str(tmp_path / "layers.seg.nrrd"))
    out = tmp_path / "tf"
    assert main(["export", "--image", str(path), "--labels", str(tmp_path / "layers.seg.nrrd"), "--out", str(out)]) == 0
    assert "ignored segment(s) that are not classes of this task: Guidewire" in capsys.readouterr().err
    _check_exported(out, img, frames, labels, [1, 3])


def test_cli_export_errors(run_with_labels, tmp_path, capsys):
    path, img, frames, labels = run_with_labels
    out = tmp_path / "tf"
    shifted = _labelmap(tmp_path / "shifted.nrrd", labels, img, spacing=(0.4, 0.25, 2.0))
    assert main(["export", "--image", str(path), "--labels", str(shifted), "--out", str(out)]) == 2
    assert "spacing" in capsys.readouterr().err
    offgrid = _labelmap(tmp_path / "offgrid.nrrd", labels, img, origin=(-29.9, 12.5, 7.0))
    assert main(["export", "--image", str(path), "--labels", str(offgrid), "--out", str(out)]) == 2
    assert "not on the image's voxel grid" in capsys.readouterr().err
    wrong = write_segmentation(tmp_path / "wrong.seg.nrrd", labels, img, [dict(CLASSES[0], name="Heart")])
    assert main(["export", "--image", str(path), "--labels", str(wrong), "--out", str(out)]) == 2
    assert "no segment of wrong.seg.nrrd (Heart) is named like a class" in capsys.readouterr().err
    lab = _labelmap(tmp_path / "labels.nrrd", labels, img)
    assert main(["export", "--image", str(path), "--labels", str(lab), "--frames", "2,9", "--out", str(out)]) == 2
    assert "frame 9 does not exist" in capsys.readouterr().err
    empty = _labelmap(tmp_path / "empty.nrrd", np.zeros_like(labels), img)
    assert main(["export", "--image", str(path), "--labels", str(empty), "--out", str(out)]) == 2
    assert "no frame of empty.nrrd has a label" in capsys.readouterr().err
    assert not out.exists()  # nothing was written by the failed commands


# ----------------------------------------------------------------------------- nnU-Net itself


def test_nnunet_verify_dataset_integrity_accepts_the_folder(tmp_path, monkeypatch):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, str(tmp_path))
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity as verify

    folder = tmp_path / "Dataset901_Catheter"
    export_frames(folder, "catheter", [make_frame(k) for k in range(3)] + [make_frame(0, source="other")])
    verify(str(folder), 1)
    # a leftover of an interrupted export (a file dataset.json does not list) does not disturb it
    shutil.copy(folder / "imagesTr" / "run01_f0000_0000.nii.gz", folder / "imagesTr" / "run01_f0009_0000.nii.gz")
    verify(str(folder), 1)


def test_nnunet_verify_dataset_integrity_accepts_a_colour_folder(tmp_path, monkeypatch):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, str(tmp_path))
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity as verify

    frames = []
    for k in range(3):
        grey = make_frame(k)
        rgb = np.random.default_rng(k).integers(0, 256, grey.image.shape + (3,)).astype(np.uint8)
        frames.append(Frame(image=rgb, label=grey.label, origin=grey.origin, spacing=grey.spacing,
                            direction=grey.direction, source="video", frame_index=k))
    folder = tmp_path / "Dataset902_Instruments"
    export_frames(folder, "instruments", frames)
    assert sorted(p.name for p in (folder / "imagesTr").iterdir())[:3] == [
        "video_f0000_0000.nii.gz", "video_f0000_0001.nii.gz", "video_f0000_0002.nii.gz"]
    verify(str(folder), 1)  # three channels per case, declared R, G, B
    assert np.array_equal(read_training_folder(folder).load("video_f0002")[0], frames[2].image)


def test_one_export_at_a_time_and_hand_added_keys_are_kept(tmp_path):
    export_frames(tmp_path, "catheter", [make_frame(0)])
    _edit_json(tmp_path, lambda d: d.update(licence="CC-BY 4.0", name="Dataset901_Catheter"))
    from Training.outputfiles import folder_lock

    with folder_lock(tmp_path, "held by this test"):  # as if another export were running
        with pytest.raises(TrainingFolderError, match="another export into .* is running"):
            export_frames(tmp_path, "catheter", [make_frame(1)])
    export_frames(tmp_path, "catheter", [make_frame(1)])
    doc = json.loads((tmp_path / "dataset.json").read_text())
    assert doc["licence"] == "CC-BY 4.0" and doc["name"] == "Dataset901_Catheter" and doc["numTraining"] == 2
