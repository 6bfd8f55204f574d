"""The instruments stress suite (RGB endoscopy unlike the generator's, never trained on) and
`cardioseg score --task instruments --suite stress`."""
import ast
import json

import numpy as np
import pytest

from Training.cli import main
from Training.stress_instruments import KINDS, NEGATIVE_KINDS, stress_run
from Training.tasks import get_task


@pytest.mark.parametrize("kind", KINDS)
def test_every_stress_kind_is_reproducible_rgb_8bit_with_masks_where_instruments_are(kind):
    frames, masks = stress_run(7, 2, (96, 112), kind)
    again, again_masks = stress_run(7, 2, (96, 112), kind)
    assert np.array_equal(frames, again) and np.array_equal(masks, again_masks)
    assert frames.shape == (2, 96, 112, 3) and frames.dtype == np.float32
    assert masks.shape == (2, 96, 112) and masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 1}
    assert np.isfinite(frames).all() and frames.min() >= 0 and frames.max() <= 255
    assert np.array_equal(frames, np.round(frames))  # 8-bit video
    get_task("instruments").check_input(frames)
    if kind in NEGATIVE_KINDS:
        assert not masks.any()
    else:
        assert all(0 < m.mean() < 0.6 for m in masks)
    other, _ = stress_run(8, 2, (96, 112), kind)
    assert not np.array_equal(frames, other)


def test_instruments_move_across_frames():
    moved = 0
    for seed in range(3):
        _, masks = stress_run(seed, 3, (96, 96), "laparoscopy")
        moved += not np.array_equal(masks[0], masks[2])
    assert moved == 3


def test_the_suite_is_registered_and_written_apart_from_the_generator():
    from pathlib import Path

    import Training.stress_instruments as suite

    assert get_task("instruments").stress_module() is suite
    imported = set()
    for node in ast.walk(ast.parse(Path(suite.__file__).read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported |= {node.module or ""} | {a.name for a in node.names}
    assert not any("endoscopy" in name or "generated" in name for name in imported)  # nothing of the generator
    for kind in KINDS:
        assert kind in suite.__doc__


def test_score_stress_prints_every_kind_and_the_mean(tiny_instruments_model, capsys):
    assert main(["score", "--task", "instruments", "--model", str(tiny_instruments_model), "--suite", "stress",
                 "--runs", "1", "--frames", "1", "--size", "64"]) == 0
    out = capsys.readouterr().out.splitlines()
    r = json.loads(out[0])
    assert list(r["kinds"]) == list(KINDS)
    found = {k: v["dice"] for k, v in r["kinds"].items() if k not in NEGATIVE_KINDS}
    assert abs(r["mean"] - np.mean(list(found.values()))) < 1e-9
    assert r["worst"] == min(found.values()) and r["worst_kind"] == min(found, key=found.get)
    assert 0 <= r["kinds"]["no-instrument"]["labelled_fraction"] <= 1
    text = "\n".join(out[1:])
    for kind in KINDS:
        assert kind in text
    assert "stress mean Dice" in text and "% of pixels labelled" in text
