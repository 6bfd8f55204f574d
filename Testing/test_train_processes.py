"""Training across processes: a run killed with SIGKILL in the middle of an epoch resumes and ends
exactly like an uninterrupted run, and `torchrun --nproc_per_node 2` trains with DDP on gloo."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from test_train import bar_frame, weights
from Training.cli import main
from Training.modelfile import load_model
from Training.trainingfolder import export_frames

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tp") / "data"
    export_frames(folder, "catheter", [bar_frame(src, k, s) for s, src in enumerate(["r1", "r2", "r3"])
                                       for k in range(4)])
    return folder


def train_args(data, model, ckpt, out, epochs=3):
    return ["train", "--data", str(data), "--init", str(model), "--epochs", str(epochs), "--batch", "1",
            "--lr", "1e-3", "--seed", "5", "--val-fraction", "0.34", "--scheduler", "cosine",
            "--checkpoint-every", "1", "--ckpt", str(ckpt), "--out", str(out)]


def position(ckpt):
    """(finished epochs, batches done in the next) of a checkpoint, or None before the first."""
    try:
        with safe_open(str(ckpt / "last.safetensors"), framework="pt") as f:
            import json

            s = json.loads(f.metadata()["state"])
        return s["epoch"], s["batch"]
    except (FileNotFoundError, OSError, KeyError):
        return None


def test_kill_9_mid_epoch_resumes_and_ends_like_an_uninterrupted_run(data, tiny_model, tmp_path, capsys):
    ckpt, out = tmp_path / "ckpt", tmp_path / "resumed.safetensors"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "Training", *train_args(data, tiny_model, ckpt, out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at = None
    try:
        deadline = time.time() + 300  # generous: a loaded machine starts torch slowly
        while time.time() < deadline and proc.poll() is None:
            p = position(ckpt)
            if p and p[0] >= 1 and p[1] > 0:  # inside epoch 2 or later: freeze, look again, then kill
                proc.send_signal(signal.SIGSTOP)
                p = position(ckpt)
                if p and p[1] > 0:  # None: the checkpoint was being replaced
                    proc.kill()
                    killed_at = p
                    break
                proc.send_signal(signal.SIGCONT)
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert killed_at is not None, "the run ended before it could be killed mid-epoch"
    assert not out.exists()

    assert main(train_args(data, tiny_model, ckpt, out)) == 0
    err = capsys.readouterr().err
    assert f"epoch {killed_at[0] + 1}, after batch {killed_at[1]}" in err
    rows = list(csv.DictReader(open(ckpt / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ev = EventAccumulator(str(ckpt / "tensorboard"))
    ev.Reload()
    assert [e.step for e in ev.Scalars("loss/train")] == [1, 2, 3]

    full = tmp_path / "full.safetensors"
    assert main(train_args(data, tiny_model, tmp_path / "ckpt-full", full)) == 0
    wa, wb = weights(full), weights(out)
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "the resumed run differs from the uninterrupted one"
    assert load_model(out)[1].training["epochs_run"] == 3


def test_torchrun_two_processes_on_gloo(data, tiny_model, tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    out = tmp_path / "ddp.safetensors"
    args = train_args(data, tiny_model, tmp_path / "ckpt", out, epochs=2)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "Training", *args],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "distributed: 2 processes" in r.stderr
    assert r.stderr.count("epoch 2/2:") == 1  # process 0 alone logs
    _, spec = load_model(out, task="catheter")
    assert spec.training["processes"] == 2 and spec.training["epochs_run"] == 2
    assert [h["epoch"] for h in spec.training["history"]] == [1, 2]
