"""The whole retraining loop on the command line, with the real bundled model: generated runs of a
harder kind (guidewires thinner than the bundled model ever saw) -> `cardioseg export` ->
`cardioseg train` (fine-tune the bundled model, a few epochs) -> `cardioseg segment --model`.
On held-out runs of that kind, the new model must segment better than the bundled one."""
import numpy as np
import SimpleITK as sitk

from Training.cli import main
from Training.fluoro import HELD_OUT_SEED_BASE
from Training.modelfile import read_spec
from Training.tasks import get_task

TRAIN_SEEDS = range(3_000_000, 3_000_008)  # 8 runs: 6 train, 2 validate
HELD_OUT_SEEDS = range(HELD_OUT_SEED_BASE + 500, HELD_OUT_SEED_BASE + 508)


def synth(path, seed):
    assert main(["synth", str(path), "--mask", str(path.with_name(path.stem + "-mask.nrrd")), "--seed", str(seed),
                 "--frames", "4", "--kind", "thin-wire"]) == 0
    return path, path.with_name(path.stem + "-mask.nrrd")


def pooled_dice(model, runs, tmp_path):
    inter = total = 0
    for image, mask in runs:
        out = tmp_path / f"{image.stem}-{model.stem if model else 'bundled'}.seg.nrrd"
        assert main(["segment", str(image), str(out), *(["--model", str(model)] if model else [])]) == 0
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(out))) > 0
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(mask))) > 0
        inter += (pred & truth).sum()
        total += pred.sum() + truth.sum()
    return 2 * inter / total


def test_fine_tuning_on_exported_thin_wire_runs_beats_the_bundled_model(tmp_path, capsys):
    data = tmp_path / "data"
    for seed in TRAIN_SEEDS:
        image, mask = synth(tmp_path / f"train{seed}.nrrd", seed)
        assert main(["export", "--image", str(image), "--labels", str(mask), "--out", str(data),
                     "--source", f"run{seed}"]) == 0
    new = tmp_path / "thin-wire.safetensors"
    assert main(["train", "--data", str(data), "--epochs", "8", "--batch", "4", "--lr", "3e-4",
                 "--val-fraction", "0.25", "--out", str(new), "--ckpt", str(tmp_path / "ckpt")]) == 0
    spec = read_spec(new)
    assert spec.version.startswith(read_spec(get_task("catheter").bundled_model).version + "+ft.")
    assert spec.training["train_cases"] == 24 and spec.training["validation_cases"] == 8
    held_out = [synth(tmp_path / f"test{seed}.nrrd", seed) for seed in HELD_OUT_SEEDS]
    before, after = pooled_dice(None, held_out, tmp_path), pooled_dice(new, held_out, tmp_path)
    print(f"held-out thin-wire Dice: bundled {before:.4f}, fine-tuned {after:.4f}")
    assert after > before + 0.04, (before, after)
