"""The instruments stress suite (RGB endoscopy unlike the generator's, never trained on) and
`cardioseg score --task instruments --suite stress`."""
import ast

import numpy as np
import pytest

from Training.stress_instruments import KINDS, NEGATIVE_KINDS, stress_run
from Training.tasks import get_task
from conftest import score_stress_output


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
    score_stress_output(capsys, "instruments", tiny_instruments_model)
