"""`cardioseg adapt-bench`: fine-tunes on K frames of a shifted stress kind really happen, are
scored on other frames, and the table, JSON and learning curve are written."""
import json

import numpy as np
import pytest

from Training.adaptbench import POOL_SEED, TEST_SEED, adapt_bench, fine_tune, frames_of, print_table, write
from Training.cli import main


def test_pool_and_test_frames_never_share_a_run():
    pool = frames_of("echo", "poor-window", 4, POOL_SEED, per_run=1)
    test = frames_of("echo", "poor-window", 2, TEST_SEED)
    assert len(pool) == len(test) == 4
    assert not {s for *_, s in pool} & {s for *_, s in test}
    assert all(label.any() for _, label, _ in pool)
    ct = frames_of("heart-ct", "non-contrast", 1, POOL_SEED)
    assert len(ct) == 2 and all(label.any() for _, label, _ in ct)  # slices through the heart


def test_adapt_bench_fine_tunes_per_k_and_order_and_writes_its_curve(tiny_model, tmp_path, capsys):
    lines = []
    config = "lr 1e-3 cosine 640 samples"  # epochs for a fixed number of samples: here 4
    r = adapt_bench("catheter", ks=(2, 3), configs=(config,),
                    orders=("sequential", "uncertainty"), test_runs=1, model=tiny_model, log=lines.append,
                    overrides={"samples": 4})
    assert r["kind"] == "confusers" and r["test_frames"] == 2 and r["pool_frames"] == 6
    assert {(row["config"], row["order"], row["k"]) for row in r["rows"]} == {
        (config, o, k) for o in ("sequential", "uncertainty") for k in (2, 3)}
    assert r["settings"][config]["samples"] == 4
    assert all(0 <= row["dice"] <= 1 and row["seconds"] > 0 for row in r["rows"])
    assert 0 <= r["bundled"] <= 1 and "bundled model" in lines[0]
    print_table(r)
    assert "K=2" in capsys.readouterr().out
    json_path, png = write(r, tmp_path / "bench.json")
    assert json.loads(json_path.read_text())["rows"] == r["rows"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fine_tune_starts_from_the_model_it_is_given(tiny_model, tmp_path):
    from Training.modelfile import load_model

    frames = frames_of("catheter", "confusers", 3, POOL_SEED, per_run=1)
    out, seconds = fine_tune("catheter", frames, {"epochs": 1}, tmp_path, model=tiny_model)
    _, spec = load_model(out, task="catheter")
    assert spec.architecture == "unet-efficientnet-b2" and spec.preprocessing["size"] == [64, 64]  # the tiny one
    assert seconds > 0


def test_repeats_fine_tune_each_cell_on_other_pools_and_report_the_spread(tiny_model, capsys):
    config = "lr 1e-3 cosine 640 samples"
    r = adapt_bench("catheter", ks=(2,), configs=(config,), test_runs=1, model=tiny_model, log=lambda m: None,
                    overrides={"samples": 2}, repeats=2)
    (row,) = r["rows"]
    assert r["repeats"] == 2 and len(row["dice_runs"]) == 2
    assert row["dice"] == pytest.approx(np.mean(row["dice_runs"]))
    assert row["dice_sd"] == pytest.approx(np.std(row["dice_runs"], ddof=1))
    print_table(r)
    assert "+-" in capsys.readouterr().out
    pools = [frames_of("catheter", "confusers", 2, POOL_SEED + k * 1_000_000, per_run=1) for k in (0, 1)]
    assert not {s for *_, s in pools[0]} & {s for *_, s in pools[1]}  # other frames reviewed
    with pytest.raises(Exception, match="--repeats"):
        adapt_bench("catheter", ks=(2,), configs=(config,), test_runs=1, model=tiny_model, repeats=0)


@pytest.mark.parametrize("args, message", [
    (["--task", "echo", "--kind", "nonsense"], "no stress kind 'nonsense'"),
    (["--settings", "fastest"], "choose from"),
    (["--ks", "1,5"], "must be >= 2"),
    (["--repeats", "0"], "0 must be >= 1"),
])
def test_bad_options_are_one_line_errors(args, message, capsys, tmp_path):
    with pytest.raises(SystemExit) if message != "no stress kind 'nonsense'" else _nothing():
        code = main(["adapt-bench", *args, "--out", str(tmp_path / "b.json")])
        assert code == 2
    assert message in capsys.readouterr().err


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
