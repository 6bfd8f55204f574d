"""`cardioseg segment --task instruments`: colour input from RGB NRRD/MHA volumes, folders of
PNG/JPEG frames and MP4/AVI videos (one reader, ``read_frames``), the .seg.nrrd in the input's
geometry, and one clear line with exit code 2 for every input the task cannot use."""
import struct
import subprocess
import sys

import av
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from Training.cli import main
from Training.imagefiles import _FrameStack, natural_key, read_frames
from Training.tasks import get_task
from Training.trainingfolder import read_training_folder

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@pytest.fixture(scope="module")
def instrument_model(tiny_instruments_model):
    return tiny_instruments_model


def _video_frames(n, h=48, w=64):
    """Smooth colour frames (a lossy codec keeps them close): a gradient and a moving bright bar,
    each frame with its own mean, so a frame out of place shows."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        r = 40 + 150 * xx / w
        g = 30 + 120 * yy / h
        b = np.full_like(xx, 20 + 200 * t / max(1, n - 1))
        bar = np.abs(xx - (8 + 3 * t) % w) < 5
        frame = np.stack([r, g, b], -1)
        frame[bar] = (230, 230, 230)
        out[t] = frame.round().astype(np.uint8)
    return out


def _random_frames(n, h=40, w=56, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _png_folder(folder, frames, name="frame{}.png"):
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / name.format(i))
    return folder


def _write_video(path, frames, codec, pix_fmt, rate=10):
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        s.bit_rate = 8_000_000
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _geometry(img):
    return img.GetOrigin(), img.GetSpacing(), img.GetDirection()


def test_png_folder_is_read_pixel_for_pixel_in_natural_name_order(tmp_path):
    frames = _random_frames(12)  # frame0..frame11: plain name order would put frame10 before frame2
    folder = _png_folder(tmp_path / "png", frames)
    (folder / "notes.txt").write_text("not a frame")
    img = read_frames(folder)
    assert img.GetSize() == (56, 40, 12) and img.GetNumberOfComponentsPerPixel() == 3
    assert _geometry(img) == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), IDENTITY)
    got = sitk.GetArrayViewFromImage(img)
    assert got.dtype == np.uint8 and np.array_equal(got, frames)


def test_natural_sort_puts_frame2_before_frame10():
    names = ["frame10.png", "frame2.png", "Frame1.png", "frame002b.png", "clip_3_frame_1.jpg", "clip_12_frame_0.jpg"]
    assert sorted(names, key=natural_key) == ["clip_3_frame_1.jpg", "clip_12_frame_0.jpg", "Frame1.png",
                                              "frame2.png", "frame002b.png", "frame10.png"]


def test_jpeg_folder_and_opaque_rgba_png_folder(tmp_path):
    frames = _video_frames(5)
    jpg = tmp_path / "jpg"
    jpg.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(jpg / f"img{i}.jpg", quality=95)
    got = sitk.GetArrayFromImage(read_frames(jpg)).astype(int)
    assert got.shape == frames.shape
    assert np.abs(got - frames).mean() < 3  # JPEG is lossy
    # an opaque alpha channel is dropped: the frames come back as RGB, exactly
    rgba = np.concatenate([frames, np.full(frames.shape[:3] + (1,), 255, np.uint8)], -1)
    got = sitk.GetArrayFromImage(read_frames(_png_folder(tmp_path / "rgba", rgba)))
    assert np.array_equal(got, frames)
    # so is a single opaque RGBA PNG file
    Image.fromarray(rgba[0]).save(tmp_path / "one.png")
    one = read_frames(tmp_path / "one.png")
    assert one.GetSize() == (64, 48, 1) and np.array_equal(sitk.GetArrayFromImage(one)[0], frames[0])


def test_palette_png_folders_are_grey_or_colour_as_their_palette(tmp_path):
    grey = np.arange(2 * 24 * 32).reshape(2, 24, 32).astype(np.uint8)
    folder = tmp_path / "grey"
    folder.mkdir()
    for i, g in enumerate(grey):
        Image.fromarray(g).convert("P").save(folder / f"f{i}.png")  # a grey palette
    got = read_frames(folder)
    assert got.GetNumberOfComponentsPerPixel() == 1 and np.array_equal(sitk.GetArrayFromImage(got), grey)
    colour = _random_frames(1, 24, 32)[0]
    (tmp_path / "colour").mkdir()
    Image.fromarray(colour).quantize(64).save(tmp_path / "colour" / "f0.png")
    assert read_frames(tmp_path / "colour").GetNumberOfComponentsPerPixel() == 3


def test_16_bit_colour_png_keeps_its_values_in_a_folder_as_in_a_file(tmp_path, capsys):
    deep = np.random.default_rng(4).integers(0, 65536, (24, 32, 3)).astype(np.uint16)
    (tmp_path / "deep").mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(deep, isVector=True), str(tmp_path / "deep" / "f0.png"))
    assert np.array_equal(sitk.GetArrayFromImage(read_frames(tmp_path / "deep"))[0], deep)
    assert main(["segment", "--task", "instruments", str(tmp_path / "deep"), str(tmp_path / "x.seg.nrrd")]) == 2
    assert "expects 8-bit RGB video frames (0-255)" in capsys.readouterr().err


def test_mp4_is_decoded_to_rgb_frames(tmp_path):
    frames = _video_frames(40)
    img = read_frames(_write_video(tmp_path / "clip.mp4", frames, "mpeg4", "yuv420p"))
    got = sitk.GetArrayViewFromImage(img)
    assert got.shape == frames.shape and got.dtype == np.uint8  # frame count and size exact
    assert _geometry(img) == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), IDENTITY)
    err = np.abs(got.astype(int) - frames).mean(axis=(1, 2, 3))
    assert err.max() < 6, err  # yuv420p is lossy, but every frame is close to its own original
    nearest = [int(np.argmin(np.abs(g.astype(int) - frames).mean(axis=(1, 2, 3)))) for g in got]
    assert nearest == list(range(len(frames)))  # and in order: each is nearest to its own original


@pytest.mark.parametrize("colorspace, color_range", [(1, 1), (1, 2), (5, 1)])  # BT.709 TV / full, BT.601 TV
def test_tagged_colour_matrix_and_range_are_decoded_to_the_right_rgb(tmp_path, colorspace, color_range):
    colours = np.array([[200, 40, 40], [40, 180, 60], [50, 60, 200], [230, 200, 170]], np.uint8)
    frames = np.repeat(np.repeat(colours[:, None, None], 32, 1), 32, 2)
    path = tmp_path / "tagged.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10, options={"crf": "0"})
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        s.codec_context.colorspace, s.codec_context.color_range = colorspace, color_range
        for f in frames:
            yuv = av.VideoFrame.from_ndarray(f, format="rgb24").reformat(
                format="yuv420p", dst_colorspace="itu709" if colorspace == 1 else "itu601",
                dst_color_range="JPEG" if color_range == 2 else "MPEG")
            yuv.colorspace, yuv.color_range = colorspace, color_range
            for p in s.encode(yuv):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    got = sitk.GetArrayFromImage(read_frames(path))[:, 16, 16].astype(int)
    assert np.abs(got - colours).max() <= 4, got  # the other matrix or range is off by 10-35


def test_inputs_larger_than_the_memory_available_are_refused_before_reading(tmp_path, monkeypatch, capsys):
    import Training.imagefiles as imagefiles

    frames = _video_frames(20)  # 20 x 48 x 64 x 3 bytes = 180 KiB
    video = _write_video(tmp_path / "clip.mp4", frames, "libx264", "yuv420p")
    volume = tmp_path / "clip.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(frames, isVector=True), str(volume))
    folder = _png_folder(tmp_path / "frames", frames)
    monkeypatch.setattr(imagefiles, "_memory_available", lambda: 300 * 1024)  # half of it: 150 KiB
    for path, what in ((video, "clip.mp4 (20 frames of 64x48 pixels)"), (volume, "clip.nrrd"), (folder, "frames")):
        assert main(["segment", "--task", "instruments", str(path), str(tmp_path / "x.seg.nrrd")]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"cardioseg: error: {what} takes 0.2 MiB once read, more than half the memory available "
                       "now (0.3 MiB); segment fewer frames at a time, or free memory"), err
    monkeypatch.setattr(imagefiles, "_memory_available", lambda: 400 * 1024)
    assert read_frames(video).GetSize() == (64, 48, 20) and read_frames(folder).GetSize() == (64, 48, 20)
    monkeypatch.undo()
    assert imagefiles._memory_available() > 2**20  # this machine's real figure is read


@pytest.mark.parametrize("width, height, matrix", [(1280, 720, "itu709"), (640, 480, "itu601")])
def test_untagged_video_is_decoded_as_players_do_bt709_above_sd(tmp_path, width, height, matrix):
    colours = np.array([[200, 40, 40], [40, 180, 60], [50, 60, 200]], np.uint8)
    path = tmp_path / "untagged.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10, options={"crf": "0", "preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        for rgb in colours:
            flat = np.broadcast_to(rgb, (height, width, 3)).copy()
            yuv = av.VideoFrame.from_ndarray(flat, format="rgb24").reformat(format="yuv420p", dst_colorspace=matrix)
            for p in s.encode(yuv):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    got = sitk.GetArrayFromImage(read_frames(path))[:, height // 2, width // 2].astype(int)
    assert np.abs(got - colours).max() <= 4, got  # the other matrix is off by 10-23


def test_avi_mjpeg_is_decoded(tmp_path):
    frames = _video_frames(9)
    got = sitk.GetArrayFromImage(read_frames(_write_video(tmp_path / "clip.avi", frames, "mjpeg", "yuvj420p")))
    assert got.shape == frames.shape
    assert np.abs(got.astype(int) - frames).mean() < 6


def test_frame_stack_grows_past_and_crops_below_the_announced_count():
    frames = _random_frames(70, 20, 24, seed=3)
    for capacity in (1, 33, 70, 200):
        stack = _FrameStack(capacity, frames[0], "clip")
        for f in frames:
            stack.add(f)
        img = stack.finish()
        assert img.GetSize() == (24, 20, 70)
        assert np.array_equal(sitk.GetArrayViewFromImage(img), frames), capacity


@pytest.mark.parametrize("ext", ["nrrd", "mha"])
def test_rgb_volume_keeps_pixels_and_geometry(tmp_path, ext):
    frames = _random_frames(3, seed=7)
    img = sitk.GetImageFromArray(frames, isVector=True)
    img.SetSpacing((0.5, 0.4, 2.0))
    img.SetOrigin((-3.0, 4.0, 5.0))
    img.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(img, str(tmp_path / f"v.{ext}"))
    back = read_frames(tmp_path / f"v.{ext}")
    assert back.GetNumberOfComponentsPerPixel() == 3
    assert np.array_equal(sitk.GetArrayViewFromImage(back), frames)
    assert np.allclose(np.concatenate([np.ravel(g) for g in _geometry(back)]),
                       np.concatenate([np.ravel(g) for g in _geometry(img)]))


def _check_instrument_seg(path, size, geometry):
    seg = sitk.ReadImage(str(path))
    assert seg.GetSize() == size and seg.GetNumberOfComponentsPerPixel() == 1
    assert np.allclose(np.concatenate([np.ravel(g) for g in _geometry(seg)]),
                       np.concatenate([np.ravel(g) for g in geometry]))
    assert seg.GetMetaData("Segment0_Name") == "Instrument"
    assert seg.GetMetaData("Segment0_LabelValue") == "1"
    assert "Surgical instrument" in seg.GetMetaData("Segment0_Tags")
    assert not seg.HasMetaDataKey("Segment1_Name")
    assert set(np.unique(sitk.GetArrayViewFromImage(seg))) <= {0, 1}
    return seg


def test_segment_png_folder_end_to_end_then_export_reads_the_same_frames(tmp_path, instrument_model, capsys):
    frames = _random_frames(11, 40, 56, seed=11)
    folder = _png_folder(tmp_path / "frames", frames)
    out = tmp_path / "frames.seg.nrrd"
    assert main(["segment", "--task", "instruments", str(folder), str(out), "--model", str(instrument_model)]) == 0
    assert "11 frames" in capsys.readouterr().out
    _check_instrument_seg(out, (56, 40, 11), ((0, 0, 0), (1, 1, 1), IDENTITY))
    # export reads the folder with the same reader: frames 2 and 10 come back pixel for pixel
    lab = tmp_path / "labels.seg.nrrd"
    labels = np.zeros((11, 40, 56), np.uint8)
    labels[:, 10:20, 5:30] = 1
    ref = read_frames(folder)
    from Training.imagefiles import write_segmentation

    write_segmentation(lab, labels, ref, list(get_task("instruments").classes))
    data = tmp_path / "training"
    assert main(["export", "--task", "instruments", "--image", str(folder), "--labels", str(lab),
                 "--frames", "2,10", "--out", str(data)]) == 0
    tf = read_training_folder(data)
    assert len(tf) == 2
    loaded = [tf.load(c.case_id)[0] for c in tf.cases]
    assert all(a.shape == (40, 56, 3) for a in loaded)
    assert {a.tobytes() for a in loaded} == {frames[2].tobytes(), frames[10].tobytes()}


def test_two_frame_folders_of_the_same_name_never_overwrite_each_other(tmp_path, capsys):
    from Training.imagefiles import write_segmentation

    data, classes = tmp_path / "training", list(get_task("instruments").classes)
    labels = np.zeros((3, 40, 56), np.uint8)
    labels[:, 10:20, 5:30] = 1
    videos = {}
    for patient, seed in (("patientA", 1), ("patientB", 2)):
        videos[patient] = _random_frames(3, seed=seed)
        folder = _png_folder(tmp_path / patient / "frames", videos[patient])
        write_segmentation(tmp_path / patient / "labels.seg.nrrd", labels, read_frames(folder), classes)

    def export(patient, *extra):
        return main(["export", "--task", "instruments", "--image", str(tmp_path / patient / "frames"),
                     "--labels", str(tmp_path / patient / "labels.seg.nrrd"), "--out", str(data), *extra])

    assert export("patientA") == 0
    capsys.readouterr()
    assert export("patientB") == 2  # both are the source 'frames'
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "case frames_f0000" in err and "another image" in err, err
    tf = read_training_folder(data)
    assert [tf.load(c.case_id)[0].tobytes() for c in tf.cases] == [f.tobytes() for f in videos["patientA"]]
    assert export("patientB", "--source", "patientB") == 0
    assert len(read_training_folder(data)) == 6
    assert export("patientB", "--replace") == 0
    tf = read_training_folder(data)
    assert tf.load("frames_f0001")[0].tobytes() == videos["patientB"][1].tobytes() and len(tf) == 6


def test_segment_mp4_end_to_end_through_the_console_entry(tmp_path, instrument_model):
    video = _write_video(tmp_path / "clip.mp4", _video_frames(20), "libx264", "yuv420p")
    out = tmp_path / "clip.seg.nrrd"
    r = subprocess.run([sys.executable, "-m", "Training", "segment", "--task", "instruments", str(video), str(out),
                        "--model", str(instrument_model)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "20 frames" in r.stdout
    _check_instrument_seg(out, (64, 48, 20), ((0, 0, 0), (1, 1, 1), IDENTITY))


def test_segment_rgb_mha_keeps_its_geometry(tmp_path, instrument_model):
    img = sitk.GetImageFromArray(_video_frames(4), isVector=True)
    img.SetSpacing((0.5, 0.4, 2.0))
    img.SetOrigin((-3.0, 4.0, 5.0))
    img.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(img, str(tmp_path / "v.mha"))
    out = tmp_path / "v.seg.nrrd"
    assert main(["segment", "--task", "instruments", str(tmp_path / "v.mha"), str(out),
                 "--model", str(instrument_model)]) == 0
    _check_instrument_seg(out, (64, 48, 4), _geometry(img))


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    frames = _random_frames(3, seed=5)
    grey = frames[..., 0]
    sitk.WriteImage(sitk.GetImageFromArray(grey), str(d / "grey.nrrd"))
    _png_folder(d / "grey_pngs", grey)
    (d / "empty").mkdir()
    (d / "no_frames").mkdir()
    (d / "no_frames" / "readme.txt").write_text("x")
    mixed = _png_folder(d / "mixed_sizes", frames)
    Image.fromarray(_random_frames(1, 44, 56)[0]).save(mixed / "frame3.png")
    mixed_kind = _png_folder(d / "mixed_kind", frames)
    Image.fromarray(grey[0]).save(mixed_kind / "frame3.png")
    rgba = np.concatenate([frames, np.full(frames.shape[:3] + (1,), 255, np.uint8)], -1)
    rgba[1, 5, 5, 3] = 128
    _png_folder(d / "transparent", rgba)
    (d / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    good = _write_video(d / "good.mp4", _video_frames(6), "mpeg4", "yuv420p")
    (d / "truncated.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (d / "frames.xyz").write_bytes(b"whatever")
    (d / "garbage.nrrd").write_bytes(b"whatever")
    (_png_folder(d / "corrupt_frame", frames) / "frame1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    # the same MP4 with a 90-degree display matrix in its track header (as phones write)
    src = _write_video(d / "upright.mp4", _video_frames(4), "mpeg4", "yuv420p").read_bytes()
    matrix = src.find(b"tkhd") + 44
    rotated = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    (d / "rotated.mp4").write_bytes(src[:matrix] + rotated + src[matrix + 36:])
    sitk.WriteImage(sitk.GetImageFromArray(frames.astype(np.float32) / 255, isVector=True), str(d / "unit.nrrd"))
    return d


@pytest.mark.parametrize("case, message", [
    ("grey.nrrd", "grey.nrrd is grey (one component per pixel); the instruments task expects colour (RGB)"),
    ("grey_pngs", "grey_pngs is grey (one component per pixel); the instruments task expects colour (RGB)"),
    ("empty", "is empty; expected PNG or JPEG frames or one DICOM series"),
    ("no_frames", "holds no PNG or JPEG frames and no DICOM series"),
    ("mixed_sizes", "frame3.png is 56x44 pixels but frame0.png is 56x40; the frames of mixed_sizes must all "
                    "have the same size"),
    ("mixed_kind", "frame3.png is grey but frame0.png is colour"),
    ("transparent", "frame1.png has transparent pixels (1 with alpha below 255)"),
    ("corrupt.mp4", "cannot read corrupt.mp4: not a video FFmpeg can open"),
    ("truncated.mp4", "cannot read truncated.mp4"),
    ("frames.xyz", "cannot read frames.xyz: unknown file type '.xyz'"),
    ("garbage.nrrd", "cannot read garbage.nrrd: not a valid .nrrd image"),
    ("corrupt_frame", "cannot read frame frame1.png:"),
    ("missing.mp4", "input not found"),
    ("rotated.mp4", "rotated.mp4 asks players to rotate it by"),
    ("unit.nrrd", "colour scaled to 0-1; the instruments task expects 8-bit RGB values 0-255"),
])
def test_bad_instrument_input_gives_one_clear_line_and_exit_2(bad_inputs, case, message, tmp_path, capfd,
                                                              instrument_model):
    out = tmp_path / "out.seg.nrrd"
    code = main(["segment", "--task", "instruments", str(bad_inputs / case), str(out),
                 "--model", str(instrument_model)])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("cardioseg: error:") and message in err[0], err
    assert not out.exists()


def test_colour_input_to_a_grey_task_is_refused_not_averaged(tmp_path, capsys, tiny_model):
    folder = _png_folder(tmp_path / "rgb_frames", _random_frames(2))
    video = _write_video(tmp_path / "clip.avi", _video_frames(3), "mjpeg", "yuvj420p")
    for path in (folder, video):
        out = tmp_path / "out.seg.nrrd"
        assert main(["segment", "--task", "catheter", str(path), str(out), "--model", str(tiny_model)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"cardioseg: error: {path.name} is colour (3 components per pixel); the catheter task "
                       "expects grey frames with one component per pixel: convert it to grey first"]
        assert not out.exists()


def test_grey_png_folder_still_works_for_a_grey_task(tmp_path, tiny_model):
    grey = (np.random.default_rng(2).random((3, 40, 48)) * 65535).astype(np.uint16)
    folder = tmp_path / "grey"
    folder.mkdir()
    for i, f in enumerate(grey):
        Image.fromarray(f).save(folder / f"f{i}.png")
    img = read_frames(folder)
    assert img.GetNumberOfComponentsPerPixel() == 1 and np.array_equal(sitk.GetArrayViewFromImage(img), grey)
    out = tmp_path / "grey.seg.nrrd"
    assert main(["segment", "--task", "catheter", str(folder), str(out), "--model", str(tiny_model)]) == 0
    assert sitk.ReadImage(str(out)).GetSize() == (48, 40, 3)


def test_score_reports_iou_pixel_accuracy_and_empty_videos(instrument_model, capsys):
    assert main(["score", "--task", "instruments", "--model", str(instrument_model), "--runs", "2", "--frames", "2",
                 "--size", "64", "--kind", "smoke"]) in (0, None)
    lines = capsys.readouterr().out.strip().splitlines()
    r = __import__("json").loads(lines[0])
    assert r["kind"] == "smoke" and 0 <= r["iou"] <= r["dice"] <= 1 and 0 <= r["accuracy"] <= 1
    from Training import endoscopy

    empty = sum(not endoscopy.generate_video(endoscopy.HELD_OUT_SEED_BASE + i, 2, (64, 64), "smoke")[1].any()
                for i in range(2))
    assert r["empty_runs"] == empty  # videos with nothing to find are counted apart, not as Dice 0 or 1
    assert "pixel accuracy" in lines[1] and "flattered by the background" in lines[1]


def test_score_refuses_a_kind_the_task_does_not_have(capfd):
    code = main(["score", "--task", "heart-ct", "--kind", "smoke", "--runs", "1"])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and "task 'heart-ct' has no generated kind 'smoke'" in err[-1]
