"""``make bench``: catheter-path speed and memory, HeartSeg speed (CT seconds per volume, echo
frames/s), instrument frames/s on colour video at 256x256 and 512x512, and training speed, every variant as a ratio to eager fp32 in the same run; and the
label-efficiency section (``cardioseg adapt-bench`` at K=25 with the defaults, per task: Dice
beside the bundled model's and the fine-tune's wall time). Prints a table and writes JSON.

Network only: normalised 256x256 frames, batch 8 unless named. End to end: ``Predictor.predict``
on raw detector frames (resize, normalise, network, resize back, threshold). Each section prints
when it ends and rewrites the JSON; torch.compile and ONNX Runtime run last (``--no-compiled``
skips them).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import fluoro
from .predictor import Predictor
from .tasks import get_task
from .trainer import bf16_is_fast

# The fast path is what Segment ("auto") runs: bf16 channels_last where bf16 is fast, else fp32
# channels_last. bf16 rows are timed only where bf16 is fast: elsewhere it is emulated, many
# times slower than fp32.
BF16 = bf16_is_fast("cpu")
FAST = "bf16" if BF16 else "fp32-cl"
TIMED = ("fp32", FAST)
BF16_SKIPPED = ("bf16 rows skipped: this CPU has no bf16 instructions (AVX512-BF16, AMX); "
                "the fast path (Segment's default) is fp32 channels_last")


def _rate(fn, n_items, min_seconds=3.0, warmup=1):
    for _ in range(warmup):
        fn()
    count, t0 = 0, time.perf_counter()
    while True:
        fn()
        count += 1
        dt = time.perf_counter() - t0
        if dt >= min_seconds and count >= 2:
            return n_items * count / dt


def _frames(n, size, seed=fluoro.HELD_OUT_SEED_BASE + 500):
    out, masks = [], []
    while sum(len(f) for f in out) < n:
        f, m = fluoro.generate_run(seed + len(out), n_frames=8, size=(size, size))
        out.append(f)
        masks.append(m)
    return np.concatenate(out)[:n], np.concatenate(masks)[:n]


def _network_setup(model_path):
    from .preprocess import normalize_intensity

    p = Predictor(model_path, precision="fp32")
    frames, _ = _frames(16, 256)
    x = normalize_intensity(torch.from_numpy(frames)[:, None], p.spec.preprocessing["intensity"])
    return p.model, x


def _run(m, xb, bf16=False):
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        m(xb)


def network_variants(model_path, seconds):
    """Frames/s of the network alone: eager fp32, channels_last, bf16 autocast, batch sizes."""
    model, x = _network_setup(model_path)
    rows = {"eager fp32": _rate(lambda: _run(model, x[:8]), 8, seconds)}
    from .architectures import build

    # the v1 catheter network (EfficientNet-B2 encoder), random weights: its speed only
    b2 = build("unet-efficientnet-b2", in_channels=1, classes=1, decoder_channels=[128, 64, 32, 16, 16]).eval()
    rows["unet-efficientnet-b2 (v1's network), eager fp32"] = _rate(lambda: _run(b2, x[:8]), 8, seconds)
    cl = model.to(memory_format=torch.channels_last)
    xc = x.to(memory_format=torch.channels_last)
    rows["channels_last fp32"] = _rate(lambda: _run(cl, xc[:8]), 8, seconds)
    if not BF16:
        return rows
    rows["channels_last bf16 autocast"] = _rate(lambda: _run(cl, xc[:8], True), 8, seconds)
    rows["channels_last bf16 autocast, batch 1"] = _rate(lambda: _run(cl, xc[:1], True), 1, seconds)
    rows["channels_last bf16 autocast, batch 16"] = _rate(lambda: _run(cl, xc[:16], True), 16, seconds)
    return rows


def compiled_variants(model_path, seconds):
    """torch.compile and ONNX Runtime. Run last: compiling changes process-wide state that
    speeds up later eager runs, which would flatter every ratio measured after it."""
    model, x = _network_setup(model_path)
    rows = {}
    try:
        cl = model.to(memory_format=torch.channels_last)
        xc = x.to(memory_format=torch.channels_last)
        compiled = torch.compile(cl)
        t0 = time.perf_counter()
        _run(compiled, xc[:8], BF16)
        compile_s = time.perf_counter() - t0
        rows[f"torch.compile, {_variant(FAST)} (compile {compile_s:.0f} s)"] = _rate(
            lambda: _run(compiled, xc[:8], BF16), 8, seconds)
    except Exception as e:  # report, don't hide
        rows[f"torch.compile, {_variant(FAST)}: failed ({type(e).__name__})"] = float("nan")
    try:
        import onnxruntime as ort

        onnx_path = Path(os.environ.get("TMPDIR", "/tmp")) / "cardioseg_bench.onnx"
        model.to(memory_format=torch.contiguous_format)
        torch.onnx.export(model, x[:8], str(onnx_path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "b"}, "y": {0: "b"}}, dynamo=False)
        so = ort.SessionOptions()
        so.intra_op_num_threads = torch.get_num_threads()
        sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        xn = x[:8].numpy()
        rows["ONNX Runtime fp32"] = _rate(lambda: sess.run(None, {"x": xn}), 8, seconds)
    except Exception as e:
        rows[f"ONNX Runtime fp32: failed ({type(e).__name__}: {str(e)[:60]})"] = float("nan")
    return rows


def end_to_end(model_path, seconds):
    """Frames/s of Predictor.predict and its share of time outside the network."""
    rows = {}
    for size in (256, 512):
        frames, _ = _frames(32, size)
        for precision in TIMED:
            p = Predictor(model_path, precision=precision, batch=8)
            fps = _rate(lambda: p.predict(frames), len(frames), seconds)
            outside = 1.0 - p.stats["network_seconds"] / p.stats["seconds"]
            rows[f"{size}x{size} {_variant(precision)}"] = (fps, outside)
    return rows


def uncertainty_cost(model_path, seconds) -> dict:
    """What the per-frame uncertainty adds to Segment: ``frame_uncertainty`` on a batch of 8
    256x256 logits against ``Predictor.predict`` of the same 8 frames (the fast path)."""
    from .predictor import frame_uncertainty

    frames, _ = _frames(8, 256)
    p = Predictor(model_path, batch=8)
    predict_fps = _rate(lambda: p.predict(frames), 8, seconds)
    logits = p.logits(p._network_input(frames))
    uncertainty_fps = _rate(lambda: frame_uncertainty(logits), 8, seconds)
    return {"predict_frames_per_second": predict_fps, "uncertainty_frames_per_second": uncertainty_fps,
            "share_of_predict": predict_fps / uncertainty_fps, "precision": p.precision}


def training(model_path, seconds, n_frames=234, epochs=50, run_epochs=1):
    """Training speed: images/s of fine-tuning steps (batch 8, 256x256, Adam, Dice + BCE), fp32
    and bf16 autocast; and ``run_epochs`` real epochs of ``cardioseg train`` with its defaults
    (early stopping off) on an exported folder of ``n_frames`` generated frames; with fewer than
    ``epochs``, the time of ``epochs`` is projected from the mean epoch."""
    import tempfile

    from monai.losses import DiceCELoss

    from .modelfile import load_model, read_spec
    from .preprocess import normalize_intensity
    from .train import TrainConfig, train
    from .trainingfolder import Frame, export_frames

    model, spec = load_model(model_path, task="catheter")
    frames, masks = _frames(8, 256)
    x = normalize_intensity(torch.from_numpy(frames)[:, None], spec.preprocessing["intensity"])
    y = torch.from_numpy(masks)[:, None].float()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    loss_fn = DiceCELoss(sigmoid=True, batch=True)

    def step(bf16):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rows = {"train step fp32": _rate(lambda: step(False), 8, seconds)}
    if BF16:
        rows["train step bf16 autocast"] = _rate(lambda: step(True), 8, seconds)
    model.to(memory_format=torch.channels_last)  # as cardioseg train runs it
    x = x.to(memory_format=torch.channels_last)
    rows["train step channels_last fp32"] = _rate(lambda: step(False), 8, seconds)
    if BF16:
        rows["train step channels_last bf16 autocast"] = _rate(lambda: step(True), 8, seconds)
    with tempfile.TemporaryDirectory() as tmp:
        runs = [fluoro.generate_run(fluoro.HELD_OUT_SEED_BASE + 2000 + r, n_frames=8, size=(256, 256))
                for r in range((n_frames + 7) // 8)]
        cases = [Frame(image=f[k].round().astype(np.uint16), label=m[k], origin=(0.0, 0.0, float(k)),
                       spacing=(0.3, 0.3, 1.0), direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), source=f"run{r}",
                       frame_index=k) for r, (f, m) in enumerate(runs) for k in range(8)][:n_frames]
        export_frames(Path(tmp) / "data", "catheter", cases)
        cfg = TrainConfig(data=str(Path(tmp) / "data"), epochs=run_epochs, patience=run_epochs + 1,
                          out=str(Path(tmp) / "m.safetensors"), ckpt=str(Path(tmp) / "ckpt"))
        t0 = time.perf_counter()
        r = train(cfg, log=lambda m: None, progress=False)
        wall = time.perf_counter() - t0
        out_spec = read_spec(r["out"])
        t = out_spec.training
    epoch_s = float(np.mean([h["seconds"] for h in t["history"]]))
    total = wall if run_epochs >= epochs else wall + (epochs - run_epochs) * epoch_s
    return rows, {"frames": n_frames, "train_frames": t["train_cases"], "validation_frames": t["validation_cases"],
                  "epoch_seconds": epoch_s, "run_epochs": run_epochs, "run_seconds": wall, "epochs": epochs,
                  "seconds": total, "measured": run_epochs >= epochs,
                  "best_validation_dice": out_spec.metrics.get("validation_dice")}


def heart(seconds, ct_shape=(200, 512, 512), clip_frames=32):
    """HeartSeg: seconds per CT volume and echo frames/s, end to end, eager fp32 against the fast
    path (bf16 or fp32 channels_last); and the network alone for the echo architectures (random weights)."""
    from . import ct, echo
    from .architectures import build
    from .metrics import case_metrics

    rows, agree = {}, {}
    vol, _mask, _info = ct.generate_ct(fluoro.HELD_OUT_SEED_BASE + 700, shape=ct_shape)
    labels = {}
    for precision in TIMED:
        p = Predictor(get_task("heart-ct").bundled_model, precision=precision, batch=16)
        t0 = time.perf_counter()
        labels[precision] = p.predict(vol, direction=np.eye(3))
        rows[f"CT {'x'.join(map(str, ct_shape[::-1]))}, {_variant(precision)}"] = (time.perf_counter() - t0, "s/volume")
    agree["heart-ct"] = case_metrics(labels[FAST], labels["fp32"], ["Heart"])["Heart"]["dice"]
    del vol, labels
    frames, _labels, _ = echo.generate_clip(fluoro.HELD_OUT_SEED_BASE + 701, n_frames=clip_frames)
    out = {}
    for precision in TIMED:
        p = Predictor(get_task("echo").bundled_model, precision=precision, batch=8)
        rows[f"echo 256x256, {_variant(precision)}"] = (_rate(lambda: out.__setitem__(precision, p.predict(frames)),
                                                             clip_frames, seconds), "frames/s")
    names = [c["name"] for c in get_task("echo").classes]
    agree["echo"] = float(np.mean([m["dice"] for m in case_metrics(out[FAST], out["fp32"], names).values()]))
    size = tuple(p.spec.preprocessing["size"])
    x = torch.rand(8, 1, *size)
    for arch in ("unet-resnet18", "deeplabv3-resnet50"):
        net = build(arch, in_channels=1, classes=4).eval()
        rows[f"echo network {arch}, {size[0]}x{size[1]}, eager fp32"] = (_rate(lambda: _run(net, x), 8, seconds), "frames/s")
        cl = net.to(memory_format=torch.channels_last)
        xc = x.to(memory_format=torch.channels_last)
        rows[f"echo network {arch}, {size[0]}x{size[1]}, {_variant(FAST)}"] = (
            _rate(lambda: _run(cl, xc, BF16), 8, seconds), "frames/s")
    return rows, agree


def instruments(seconds, n_frames=16):
    """Instruments: colour endoscopy frames/s end to end at 256x256 and 512x512 input, eager fp32
    against the fast path, with the bundled model (its network runs at its own size)."""
    from . import endoscopy
    from .metrics import case_metrics

    rows, agree = {}, {}
    for size in (256, 512):
        frames, _ = endoscopy.generate_video(fluoro.HELD_OUT_SEED_BASE + 800, n_frames=n_frames, size=(size, size))
        out = {}
        for precision in TIMED:
            p = Predictor(get_task("instruments").bundled_model, precision=precision, batch=8)
            rows[f"instruments {size}x{size} RGB, {_variant(precision)}"] = (
                _rate(lambda: out.__setitem__(precision, p.predict(frames)), n_frames, seconds), "frames/s")
        agree[f"instruments {size}"] = case_metrics(out[FAST], out["fp32"], ["Instrument"])["Instrument"]["dice"]
    return rows, agree


def _variant(precision):
    return {"fp32": "eager fp32", "fp32-cl": "fp32 channels_last", "bf16": "bf16 channels_last"}[precision]


def dice_agreement(model_path, runs):
    from .scoring import score_synthetic

    return {prec: score_synthetic(model_path, runs=runs, frames=8, precision=prec)["dice"] for prec in TIMED}


def print_catheter(net, e2e, dice, dice_runs) -> None:
    """The catheter tables: network variants, end to end, eager fp32 against the fast path Dice."""
    ref = net["eager fp32"]
    print("\nNetwork only, 256x256 frames (the bundled catheter network)")
    print(f"{'variant':58s} {'frames/s':>9s} {'x eager fp32':>13s}")
    for k, v in net.items():
        print(f"{k:58s} {v:9.1f} {v / ref:13.2f}")
    e_ref = {s: e2e[f"{s}x{s} eager fp32"][0] for s in (256, 512)}
    print("\nEnd to end (Predictor.predict: resize, normalise, network, resize back, threshold)")
    print(f"{'input':58s} {'frames/s':>9s} {'x eager fp32':>13s} {'outside net':>12s}")
    for k, (fps, outside) in e2e.items():
        print(f"{k:58s} {fps:9.1f} {fps / e_ref[int(k.split('x')[0])]:13.2f} {outside:11.1%}")
    print(f"\nDice on {dice_runs} held-out generated runs: {_agreement(dice)}")


def candidate_rows(candidate, e2e, seconds, dice_runs) -> dict:
    """End-to-end frames/s of a candidate catheter model beside the bundled one's rows ``e2e``
    (same run, same frames), and its eager fp32 and fast-path Dice on held-out generated runs."""
    rows = end_to_end(candidate, seconds)
    return {"end_to_end": {k: {"frames_per_second": fps, "x_bundled": fps / e2e[k][0]} for k, (fps, _) in rows.items()},
            "dice": dice_agreement(candidate, dice_runs), "model": Path(candidate).name}


def print_candidate(c, path) -> None:
    print(f"\nCandidate {Path(path).name} against the bundled catheter model, end to end, same run")
    print(f"{'input':58s} {'frames/s':>9s} {'x bundled':>13s}")
    for k, v in c["end_to_end"].items():
        print(f"{k:58s} {v['frames_per_second']:9.1f} {v['x_bundled']:13.2f}")
    print(f"Candidate Dice on held-out generated runs: {_agreement(c['dice'])}")


def _agreement(dice) -> str:
    return (f"eager fp32 {dice['fp32']:.4f}, {_variant(FAST)} (the fast path) {dice[FAST]:.4f} "
            f"(difference {abs(dice['fp32'] - dice[FAST]):.4f}, limit 0.01)")


def _status_mb(field):
    """VmRSS (now) or VmHWM (peak) of this process in MB. VmHWM belongs to the address space,
    so unlike ru_maxrss it does not inherit the parent's peak across fork and exec."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(model_path, frames_n, size):
    """Run in a subprocess: peak RSS of segmenting a frames_n x size x size float32 run."""
    p = Predictor(model_path)
    sample, _ = _frames(8, size)
    p.predict(sample)  # warm the allocator and kernels
    base = _status_mb("VmRSS")
    run = np.tile(sample, (frames_n // 8 + 1, 1, 1))[:frames_n]
    input_mb = run.nbytes / 2**20
    p.predict(run)
    peak = _status_mb("VmHWM")
    print(json.dumps({"input_mb": input_mb, "peak_above_baseline_mb": peak - base,
                      "model_file_mb": Path(model_path).stat().st_size / 2**20, "baseline_mb": base}))


def adaptation(tasks, k=25, settings="defaults") -> dict:
    """``Training.adaptbench.adapt_bench`` at one K with one setting, per task: {task: {kind,
    bundled, dice, seconds}}; the fine-tune's wall time is the number a user waits for."""
    from .adaptbench import adapt_bench

    out = {}
    for task in tasks:
        r = adapt_bench(task, ks=(k,), configs=(settings,), log=lambda m: print(m, flush=True))
        row = r["rows"][0]
        out[task] = {"kind": r["kind"], "k": k, "settings": settings, "bundled": r["bundled"], "dice": row["dice"],
                     "seconds": row["seconds"]}
    return out


def print_adaptation(rows) -> None:
    print("\nFine-tuning on reviewed frames of a shifted kind (cardioseg adapt-bench, defaults)")
    print(f"{'task, stress kind':34s} {'K':>3s} {'bundled':>8s} {'fine-tuned':>11s} {'fine-tune s':>12s}")
    for task, r in rows.items():
        print(f"{task + ', ' + r['kind']:34s} {r['k']:3d} {r['bundled']:8.3f} {r['dice']:11.3f} {r['seconds']:12.0f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=str(get_task("catheter").bundled_model))
    ap.add_argument("--out", default="out/bench.json")
    ap.add_argument("--seconds", type=float, default=4.0, help="minimum timing window per variant")
    ap.add_argument("--dice-runs", type=int, default=6)
    ap.add_argument("--no-heart", dest="heart", action="store_false", help="skip the HeartSeg section (~2 min)")
    ap.add_argument("--no-instruments", dest="instruments", action="store_false",
                    help="skip the instruments section (~1 min)")
    ap.add_argument("--no-training", dest="training", action="store_false", help="skip the training section (~3 min)")
    ap.add_argument("--no-compiled", dest="compiled", action="store_false",
                    help="skip torch.compile and ONNX Runtime (~3 min on 2 cores)")
    ap.add_argument("--fine-tune-epochs", type=int, default=1,
                    help="epochs of the 234-frame fine-tune to run for real (50: measure the whole fine-tune, "
                         "about an hour on 2 cores; fewer: project 50 from their mean)")
    ap.add_argument("--adapt-tasks", default="catheter,echo,heart-ct,instruments",
                    help="tasks of the label-efficiency section, comma-separated ('' skips it; ~3 min a task)")
    ap.add_argument("--candidate", help="another catheter model file to time and check beside --model in the same "
                                        "run (end to end, and eager fp32 against the fast path Dice)")
    ap.add_argument("--memory-child", nargs=2, type=int, metavar=("FRAMES", "SIZE"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.memory_child:
        return memory_child(a.model, *a.memory_child)

    print(f"CardioSeg bench: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)
    if not BF16:
        print(BF16_SKIPPED, flush=True)
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(), "model": Path(a.model).name,
              "fast_path": _variant(FAST), "bf16": "timed" if BF16 else BF16_SKIPPED}

    def save(**section):
        """Add a finished section and rewrite the JSON, so a bench cut short keeps its numbers."""
        result.update(section)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=2, default=float))
        sys.stdout.flush()

    net = network_variants(a.model, a.seconds)
    e2e = end_to_end(a.model, a.seconds)
    dice = dice_agreement(a.model, a.dice_runs)
    print_catheter(net, e2e, dice, a.dice_runs)
    save(network_frames_per_second=dict(net), dice=dice,
         end_to_end={k: {"frames_per_second": v[0], "outside_network_fraction": v[1]} for k, v in e2e.items()})
    uncertainty = uncertainty_cost(a.model, a.seconds)
    print(f"Per-frame uncertainty (review order): {uncertainty['uncertainty_frames_per_second']:.0f} frames/s on the "
          f"logits, {100 * uncertainty['share_of_predict']:.1f} % of Segment's time at 256x256 "
          f"({uncertainty['predict_frames_per_second']:.1f} frames/s end to end, {uncertainty['precision']})")
    save(uncertainty_cost=uncertainty)
    if a.candidate:
        candidate = candidate_rows(a.candidate, e2e, a.seconds, a.dice_runs)
        print_candidate(candidate, a.candidate)
        save(candidate=candidate)
    task_rows, task_agree = heart(a.seconds) if a.heart else ({}, {})
    if a.instruments:
        inst_rows, inst_agree = instruments(a.seconds)
        task_rows.update(inst_rows)
        task_agree.update(inst_agree)
    if task_rows:
        print_tasks(task_rows, task_agree)
        save(tasks={k: {"value": v, "unit": u} for k, (v, u) in task_rows.items()}, tasks_fast_path_agreement_dice=task_agree)
    if a.training:
        train_rows, epoch = training(a.model, a.seconds, run_epochs=a.fine_tune_epochs)
        print_training(train_rows, epoch)
        save(training_images_per_second=train_rows, fine_tune_epoch=epoch)
    if a.adapt_tasks:
        adapt = adaptation([t for t in a.adapt_tasks.split(",") if t])
        print_adaptation(adapt)
        save(adaptation=adapt)
    mem_out = subprocess.run([sys.executable, "-m", "Training.bench", "--model", a.model, "--memory-child", "300", "512"],
                             capture_output=True, text=True, check=True).stdout
    mem = json.loads(mem_out.strip().splitlines()[-1])
    limit = 1.5 * mem["input_mb"] + mem["model_file_mb"]
    print(f"\nPeak memory, 300x512x512 float32 run ({mem['input_mb']:.0f} MB): {mem['peak_above_baseline_mb']:.0f} MB "
          f"above the loaded-libraries baseline ({mem['baseline_mb']:.0f} MB); limit 1.5 x input + model = {limit:.0f} MB")
    save(memory={**mem, "limit_mb": limit})
    if a.compiled:  # last: compiling changes process-wide state that would flatter every timing after it
        compiled = compiled_variants(a.model, a.seconds)
        print("\nCompiled network, 256x256 frames (the bundled catheter network)")
        print(f"{'variant':58s} {'frames/s':>9s} {'x eager fp32':>13s}")
        for k, v in compiled.items():
            print(f"{k:58s} {v:9.1f} {v / net['eager fp32']:13.2f}")
        save(network_frames_per_second={**net, **compiled})
    print(f"\nwrote {a.out}")


def print_tasks(task_rows, task_agree) -> None:
    print("\nHeartSeg and instruments, end to end (Predictor.predict) with the bundled models; echo networks alone")
    print(f"{'input':58s} {'value':>9s} {'unit':>9s} {'x eager fp32':>13s}")
    for k, (v, unit) in task_rows.items():
        ref = task_rows[k.replace(_variant(FAST), _variant("fp32"))][0]
        ratio = ref / v if unit == "s/volume" else v / ref
        print(f"{k:58s} {v:9.2f} {unit:>9s} {ratio:13.2f}")
    print(f"Agreement of {_variant(FAST)} with eager fp32 (Dice of one against the other): "
          + ", ".join(f"{k} {v:.4f}" for k, v in task_agree.items()))


def print_training(train_rows, epoch) -> None:
    t_ref = train_rows["train step fp32"]
    print("\nTraining (fine-tuning the catheter U-Net, batch 8, 256x256, Adam, Dice + BCE)")
    print(f"{'variant':58s} {'images/s':>9s} {'x fp32':>13s}")
    for k, v in train_rows.items():
        print(f"{k:58s} {v:9.2f} {v / t_ref:13.2f}")
    print(f"cardioseg train, defaults, {epoch['frames']} frames ({epoch['train_frames']} train, "
          f"{epoch['validation_frames']} validation): {epoch['run_epochs']} epoch(s) run in "
          f"{epoch['run_seconds']:.0f} s, {epoch['epoch_seconds']:.0f} s per epoch; {epoch['epochs']} epochs, "
          f"no early stop: {epoch['seconds'] / 60:.0f} min {'measured' if epoch['measured'] else 'projected'}; "
          f"best validation Dice {epoch['best_validation_dice']:.4f}")


if __name__ == "__main__":
    main()
