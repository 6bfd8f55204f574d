"""``make demo``: segment a generated fluoroscopy run, chest CT and echo clip through the same
MRML code the modules use.

Writes each input (NRRD), its segmentation (.seg.nrrd, written by Slicer's storage node) and
overlays (GIF, PNG), the echo LV area curve (PNG), and prints one summary line per task: Dice
against the generator's truth, speed, and the heart volume (CT) or the ED/ES frames (echo).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def overlay(frames: np.ndarray, labels: np.ndarray, colors, window=None) -> np.ndarray:
    """(T,H,W) frames and labels -> (T,H,W,3) uint8 with label k blended in ``colors[k-1]`` (0..1).
    ``window``: (low, high) grey values, default the 0.5 and 99.5 percentiles."""
    lo, hi = window or np.percentile(frames, (0.5, 99.5))
    grey = (np.clip((frames - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, -1)
    for k, color in enumerate(colors, start=1):
        c = (np.array(color) * 255).astype(np.uint8)
        on = labels == k
        rgb[on] = (0.45 * rgb[on] + 0.55 * c).astype(np.uint8)
    return rgb


def _read_volume(scene, path, name, node_class="vtkMRMLScalarVolumeNode"):
    import slicer

    volume = scene.AddNewNodeByClass(node_class, name)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(volume):
        sys.exit(f"demo: could not read {path}")
    return volume


def _write_segmentation(seg, path):
    import slicer

    writer = slicer.vtkMRMLSegmentationStorageNode()
    writer.SetFileName(str(path))
    if not writer.WriteData(seg):
        sys.exit(f"demo: could not write {path}")


def _segment(volume, task, total):
    from tqdm import tqdm

    from Training.tasks import get_task

    from .segment import segment_node

    bar = tqdm(total=total, unit="frame", desc=f"Segment ({task})", file=sys.stderr)
    try:
        return segment_node(volume, get_task(task).bundled_model, task=task,
                            progress=lambda done, total: bar.update(done - bar.n))
    finally:
        bar.close()


def _segment_sample(scene, out: Path, name: str, voxels, spacing_zyx, task: str, origin_zyx=(0.0, 0.0, 0.0)):
    """Write voxels (Z, Y, X), or RGB (Z, Y, X, 3), as ``<name>.nrrd``, read them into the scene as
    Slicer would (a vector volume for RGB), segment them with the task's bundled model and write
    ``<name>.seg.nrrd``.
    Returns (volume node, segmentation node, stats, labels (Z, Y, X))."""
    import SimpleITK as sitk

    from Training.tasks import get_task

    from .scene import labels_from_segmentation

    path = out / f"{name}.nrrd"
    colour = voxels.ndim == 4
    img = sitk.GetImageFromArray(voxels, isVector=colour)
    img.SetSpacing(tuple(float(v) for v in spacing_zyx[::-1]))
    img.SetOrigin(tuple(float(v) for v in origin_zyx[::-1]))
    sitk.WriteImage(img, str(path), useCompression=True)
    volume = _read_volume(scene, path, name, "vtkMRMLVectorVolumeNode" if colour else "vtkMRMLScalarVolumeNode")
    seg, stats = _segment(volume, task, len(voxels))
    _write_segmentation(seg, out / f"{name}.seg.nrrd")
    return volume, seg, stats, labels_from_segmentation(seg, volume, get_task(task).classes)


def demo_heart_ct(scene, out: Path) -> str:
    """A generated chest CT (never trained on): heart Dice, volume in mL against the truth."""
    from Training import ct
    from Training.metrics import case_metrics
    from Training.tasks import get_task

    from .measurements import structure_volumes_ml

    vol, mask, info = ct.generate_ct(ct.HELD_OUT_SEED_BASE + 2, shape=(None, 256, 256))
    volume, seg, stats, labels = _segment_sample(scene, out, "sample_ct", vol.astype(np.int16), info["spacing"],
                                                 "heart-ct", info["origin"])
    classes = get_task("heart-ct").classes
    dice = case_metrics(labels, mask, ["Heart"])["Heart"]["dice"]
    ml = structure_volumes_ml(seg, volume, classes)["Heart"]
    picks = np.linspace(*np.flatnonzero(mask.any((1, 2)))[[0, -1]], 4).astype(int)
    rgb = overlay(vol[picks], labels[picks], [c["color"] for c in classes], window=(-200, 400))
    Image.fromarray(np.concatenate(list(rgb), 1)).save(out / "ct_overlay.png")
    return (f"demo heart-ct: {len(vol)} slices {vol.shape[2]}x{vol.shape[1]}, Dice {dice:.3f}, heart {ml:.0f} mL "
            f"(truth {info['heart_ml']:.0f} mL), {stats['seconds']:.1f} s; wrote sample_ct.seg.nrrd, ct_overlay.png")


def demo_echo(scene, out: Path) -> str:
    """A generated apical echo clip: per-class Dice, the LV area curve and ED/ES."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from Training import echo
    from Training.metrics import case_metrics
    from Training.tasks import get_task

    from .measurements import lv_area_curve

    frames, truth, info = echo.generate_clip(echo.HELD_OUT_SEED_BASE + 2, n_frames=24)
    volume, seg, stats, labels = _segment_sample(scene, out, "sample_echo", frames.astype(np.uint8),
                                                 (1.0, *info["pixel_spacing_mm"]), "echo")
    classes = get_task("echo").classes
    m = case_metrics(labels, truth, [c["name"] for c in classes])
    curve = lv_area_curve(seg, volume, classes)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(curve["area_mm2"], "o-", color=classes[0]["color"], label="LV area")
    for key, text in (("ed_frame", "ED"), ("es_frame", "ES")):
        if curve[key] is not None:
            ax.annotate(text, (curve[key], curve["area_mm2"][curve[key]]), textcoords="offset points", xytext=(0, 6))
    ax.set_xlabel("frame")
    ax.set_ylabel("LV area (mm2)")
    fig.tight_layout()
    fig.savefig(out / "echo_lv_area.png", dpi=100)
    plt.close(fig)
    rgb = overlay(frames, labels, [c["color"] for c in classes], window=(0, 255))
    Image.fromarray(rgb[0]).save(out / "echo_overlay.gif", save_all=True,
                                 append_images=[Image.fromarray(f) for f in rgb[1:]], duration=80, loop=0)
    dice = ", ".join(f"{n} {v['dice']:.3f}" for n, v in m.items())
    phases = curve["message"] or f"ED frame {curve['ed_frame']}, ES frame {curve['es_frame']}"
    return (f"demo echo: {len(frames)} frames, Dice {dice}; {phases}; "
            f"{stats['frames_per_second']:.1f} frames/s; wrote sample_echo.seg.nrrd, "
            "echo_overlay.gif, echo_lv_area.png")


def demo_instruments(scene, out: Path) -> str:
    """A generated colour endoscopy video (never trained on), read as an RGB vector volume:
    instrument Dice and IoU against the generator's masks."""
    from Training import endoscopy
    from Training.metrics import case_metrics
    from Training.tasks import get_task

    frames, truth = endoscopy.generate_video(endoscopy.HELD_OUT_SEED_BASE + 1, n_frames=16, size=(256, 256))
    video = frames.round().astype(np.uint8)
    _volume, _seg, stats, labels = _segment_sample(scene, out, "sample_video", video, (1.0, 1.0, 1.0), "instruments")
    m = case_metrics(labels, truth, ["Instrument"])["Instrument"]
    color = (np.array(get_task("instruments").classes[0]["color"]) * 255).astype(np.uint8)
    rgb = video.copy()
    rgb[labels > 0] = (0.45 * rgb[labels > 0] + 0.55 * color).astype(np.uint8)
    Image.fromarray(rgb[0]).save(out / "video_overlay.gif", save_all=True,
                                 append_images=[Image.fromarray(f) for f in rgb[1:]], duration=80, loop=0)
    return (f"demo instruments: {len(video)} colour frames 256x256, Dice {m['dice']:.3f}, IoU {m['iou']:.3f}; "
            f"{stats['frames_per_second']:.1f} frames/s; wrote sample_video.seg.nrrd, video_overlay.gif")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="out/demo")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--model", help="model file (default: bundled)")
    a = ap.parse_args(argv)

    import SimpleITK as sitk
    import slicer
    from tqdm import tqdm

    from Training import fluoro
    from Training.metrics import dice
    from Training.tasks import get_task

    from .scene import labels_from_segmentation
    from .segment import segment_node

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    seed = fluoro.HELD_OUT_SEED_BASE + 1
    frames, masks = fluoro.generate_run(seed, n_frames=a.frames, size=(a.size, a.size))
    run_path = out / "sample_run.nrrd"
    img = sitk.GetImageFromArray(frames.round().astype(np.uint16))
    img.SetSpacing((0.3, 0.3, 1.0))
    sitk.WriteImage(img, str(run_path), useCompression=True)

    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "sample_run")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(run_path))
    if not storage.ReadData(volume):
        sys.exit(f"demo: could not read {run_path}")

    task = get_task("catheter")
    model = a.model or task.bundled_model
    bar = tqdm(total=a.frames, unit="frame", desc="Segment", file=sys.stderr)
    seg, stats = segment_node(volume, model, task="catheter",
                              progress=lambda done, total: bar.update(done - bar.n))
    bar.close()
    seg_path = out / "sample_run.seg.nrrd"
    writer = slicer.vtkMRMLSegmentationStorageNode()
    writer.SetFileName(str(seg_path))
    if not writer.WriteData(seg):
        sys.exit(f"demo: could not write {seg_path}")

    labels = labels_from_segmentation(seg, volume, task.classes)
    score = dice(labels > 0, masks > 0)
    rgb = overlay(frames, labels, [task.classes[0]["color"]])
    gif = out / "overlay.gif"
    Image.fromarray(rgb[0]).save(gif, save_all=True, append_images=[Image.fromarray(f) for f in rgb[1:]],
                                 duration=100, loop=0)
    picks = np.linspace(0, a.frames - 1, 4).astype(int)
    Image.fromarray(np.concatenate(list(rgb[picks]), 1)).save(out / "overlay.png")
    print(f"demo: {stats['frames']} frames {a.size}x{a.size}, Dice {score:.3f} against the generator's mask, "
          f"{stats['frames_per_second']:.1f} frames/s; wrote {seg_path}, {gif}, {out / 'overlay.png'}")
    print(demo_heart_ct(scene, out), flush=True)
    print(demo_echo(scene, out), flush=True)
    print(demo_instruments(scene, out))


if __name__ == "__main__":
    main()
