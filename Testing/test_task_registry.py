"""One record per task: a fifth task is one record plus its generator module, and the whole
command line (synth, segment, export, train, score) works on it with nothing else changed."""
import sys
import types

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import _tiny_model
from Training import tasks
from Training.cli import main

KINDS = ("standard", "faint")


def _run(seed, n_frames, size, kind="standard"):
    """Noise with a bright horizontal bar per frame (the 'stripe'); fainter for kind 'faint'."""
    rng = np.random.default_rng(seed)
    frames = rng.normal(1000, 50, (n_frames, *size))
    masks = np.zeros((n_frames, *size), np.uint8)
    for t in range(n_frames):
        row = int(rng.integers(4, size[0] - 8))
        masks[t, row:row + 4, 4:-4] = 1
    frames[masks > 0] += 400 if kind == "standard" else 150
    return frames.astype(np.float32), masks


def _generator_module():
    """The toy generator, as a module (a real task's lives in Training/)."""
    m = types.ModuleType("stripes_generator")
    m.KINDS = KINDS

    def training_frames(seeds, size):
        frames, masks = zip(*(_run(int(s), 1, size) for s in seeds))
        return np.concatenate(frames), np.concatenate(masks)

    def sample_run(seed, n_frames, size, kind="standard"):
        frames, masks = _run(seed, n_frames, size, kind)
        return frames.round().astype(np.uint16), masks, {}

    def score_cases(p, seed, runs, frames, size, kind="standard"):
        for r in range(runs):
            x, y = _run(seed + r, frames, (size, size), kind)
            yield p.predict(x), y, {}

    m.training_frames, m.sample_run, m.score_cases = training_frames, sample_run, score_cases
    return m


@pytest.fixture
def stripes(tmp_path, monkeypatch, request):
    """Register the toy task 'stripes' (record + generator) for one test."""
    monkeypatch.setitem(sys.modules, "stripes_generator", _generator_module())
    record = tasks.Task(
        name="stripes", in_channels=1, channel_names=("X-ray",),
        classes=({"name": "Stripe", "color": [0.9, 0.2, 0.2],
                  "terminology": tasks.terminology("SCT^260787004^Physical object", "SCT^19923001^Catheter")},),
        bundled_model=tmp_path / "bundled" / "stripes.safetensors",
        description="bright horizontal stripes in noise", generator="stripes_generator", generated="stripes",
        recipe=tasks.Recipe("unet-efficientnet-b2", {"decoder_channels": [16, 16, 16, 16, 16]},
                            {"size": [64, 64], "intensity": {"method": "percentile", "lower": 0.5, "upper": 99.5}}))
    tasks.register_task(record)
    request.addfinalizer(lambda: tasks.TASKS.pop("stripes"))  # the registration ends with the test
    record.bundled_model.parent.mkdir()
    _tiny_model(record.bundled_model, "stripes", "unet-efficientnet-b2",
                {"method": "percentile", "lower": 0.5, "upper": 99.5})
    return record


def test_a_registered_toy_task_runs_through_the_whole_command_line(stripes, tmp_path, capsys):
    runs = []
    for k, seed in enumerate((11, 12, 13)):
        image, mask = tmp_path / f"run{k}.nrrd", tmp_path / f"run{k}-mask.nrrd"
        assert main(["synth", "--task", "stripes", str(image), "--mask", str(mask), "--seed", str(seed),
                     "--frames", "3", "--size", "64"]) == 0
        runs.append((image, mask))
    assert sitk.ReadImage(str(runs[0][0])).GetSize() == (64, 64, 3)

    out = tmp_path / "run0.seg.nrrd"
    assert main(["segment", "--task", "stripes", str(runs[0][0]), str(out)]) == 0  # its bundled model
    assert sitk.ReadImage(str(out)).GetMetaData("Segment0_Name") == "Stripe"

    data = tmp_path / "data"
    for image, mask in runs:
        assert main(["export", "--task", "stripes", "--image", str(image), "--labels", str(mask),
                     "--out", str(data)]) == 0
    assert '"task": "stripes"' in (data / "dataset.json").read_text()

    model = tmp_path / "stripes-ft.safetensors"
    assert main(["train", "--task", "stripes", "--data", str(data), "--epochs", "1", "--batch", "4",
                 "--ckpt", str(tmp_path / "ck"), "--out", str(model)]) == 0
    capsys.readouterr()
    assert main(["score", "--task", "stripes", "--model", str(model), "--runs", "2", "--frames", "2",
                 "--size", "64", "--kind", "faint"]) == 0
    out_text = capsys.readouterr().out
    assert "of kind faint" in out_text and "Dice" in out_text
    assert main(["score", "--task", "stripes", "--runs", "1", "--kind", "smoke"]) == 2


def test_register_refuses_a_second_record_of_one_name():
    with pytest.raises(ValueError, match="registered already"):
        tasks.register_task(tasks.TASKS["catheter"])


def test_every_bundled_task_record_is_complete():
    """Each record names a generator with the four functions, a recipe, and its kinds."""
    for t in tasks.TASKS.values():
        m = t.generator_module()
        assert t.kinds[0] == "standard", t.name
        for name in ("training_frames", "sample_run", "score_cases"):
            assert callable(getattr(m, name)), (t.name, name)
        assert t.recipe is not None and t.generated and t.frame_words
        assert (t.measure is None) == (t.measure_lines is None), t.name
