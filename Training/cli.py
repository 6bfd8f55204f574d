"""The ``cardioseg`` command line (also ``python -m Training``)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _at_least(low: int):
    """argparse type: an integer >= ``low`` (an option the library does not check itself)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} must be >= {low}")
        return value

    return parse


def _non_negative_number(text):
    """argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not (0 <= value < float("inf")):
        raise argparse.ArgumentTypeError(f"{text} must be a number >= 0")
    return value


def _positive_number(text):
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return value


def _progress_bar(total, unit="frame"):
    from tqdm import tqdm

    bar = tqdm(total=total, unit=unit, file=sys.stderr, disable=None)

    def update(done, _total):
        bar.update(done - bar.n)

    return bar, update


def cmd_segment(a):
    import SimpleITK as sitk

    from .errors import InputError
    from .imagefiles import check_components, label_file_kind, read_frames, write_labelmap, write_segmentation
    from .outputfiles import output_file
    from .predictor import Predictor
    from .tasks import get_task
    from .usermodels import resolve_model

    task = get_task(a.task)
    output_file(a.output, "output", inputs=[a.input, a.model])  # before anything is read or computed
    if a.uncertainty:
        output_file(a.uncertainty, "--uncertainty", inputs=[a.input, a.model, a.output])
    kind = label_file_kind(a.output)
    model = resolve_model(a.model) if a.model else task.bundled_model
    if not a.model and not Path(model).is_file():
        raise InputError(f"task '{a.task}' has no bundled model in this installation ({model} is missing); "
                         "pass --model FILE")
    predictor = Predictor(model, task=a.task, device=a.device, batch=a.batch,
                          threshold=a.threshold, keep_largest=a.keep_largest, adapt_bn=a.adapt_bn)
    image = read_frames(a.input)  # 3D frames as slices; vector-valued (T, H, W, 3) for colour
    check_components(image, task.in_channels, task.name, Path(a.input).name)
    frames = sitk.GetArrayViewFromImage(image)  # a view: the frames are held once
    bar, update = _progress_bar(frames.shape[0])
    try:
        labels = predictor.predict(frames, progress=update, direction=image.GetDirection())
    finally:
        bar.close()
    classes = predictor.spec.classes
    if kind == "segmentation":
        write_segmentation(a.output, labels, image, classes)
    else:
        write_labelmap(a.output, labels, image)
    s = predictor.stats
    print(f"{a.output}: {s['frames']} frames, {int((labels > 0).sum())} voxels labelled, "
          f"{s['frames_per_second']:.1f} frames/s")
    if a.uncertainty:
        _write_uncertainty(a.uncertainty, s.get("uncertainty"), labels)
    if kind == "labelmap":
        print("label values: " + ", ".join(f"{k} {c['name']}" for k, c in enumerate(classes, 1)))
    if "message" in s:
        print(s["message"])
    if task.measure:
        for line in task.measure_lines(task.measure(labels, image.GetSpacing()[::-1], classes)):
            print(line)


def cmd_adapt_bench(a):
    from .adaptbench import adapt_bench, print_table, write
    from .outputfiles import output_file

    out = output_file(a.out or f"out/adapt-bench-{a.task}.json", "--out")
    r = adapt_bench(a.task, a.kind, ks=a.ks, configs=a.settings, orders=a.orders, test_runs=a.test_runs,
                    model=a.model, repeats=a.repeats)
    print_table(r)
    json_path, png = write(r, out)
    print(f"wrote {json_path} and {png}")


def _write_uncertainty(path, values, labels) -> None:
    """``frame,uncertainty,rank,labelled_pixels``, one row per frame (rank 1: review first)."""
    import csv

    from .errors import InputError

    if values is None:
        raise InputError("--uncertainty: the volume's frames are not axial slices, so there is no one "
                         "uncertainty per frame; the segmentation was written")
    order = sorted(range(len(values)), key=lambda k: (-values[k], k))
    rank = {k: r for r, k in enumerate(order, 1)}
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["frame", "uncertainty", "rank", "labelled_pixels"])
        for k, v in enumerate(values):
            w.writerow([k, f"{v:.5f}", rank[k], int((labels[k] > 0).sum())])
    print(f"{path}: uncertainty of each frame (review the highest first: frame {order[0]})")


def cmd_synth(a):
    import SimpleITK as sitk

    from .errors import InputError
    from .outputfiles import output_file
    from .tasks import get_task

    task = get_task(a.task)
    if a.kind not in task.kinds:
        raise InputError(f"task '{a.task}' has no generated kind '{a.kind}'; known: {', '.join(task.kinds) or 'none'}")
    output_file(a.output, "output")
    if a.mask:
        output_file(a.mask, "--mask", inputs=[a.output])
    frames, masks, info = task.generator_module().sample_run(a.seed, a.frames, (a.size, a.size), a.kind)
    img = sitk.GetImageFromArray(frames, isVector=task.in_channels > 1)  # frames as slices
    img.SetSpacing(tuple(reversed(info.get("spacing", (1.0, a.spacing, a.spacing)))))
    sitk.WriteImage(img, str(a.output), useCompression=True)
    if a.mask:
        m = sitk.GetImageFromArray(masks)
        m.CopyInformation(img)
        sitk.WriteImage(m, str(a.mask), useCompression=True)
    print(f"{a.output}: {len(frames)} frames {a.size}x{a.size}, seed {a.seed}, kind {a.kind}")


def cmd_score(a):
    from .scoring import score_synthetic
    from .tasks import get_task

    task = get_task(a.task)
    if a.suite == "stress":
        return _score_stress(a, task)
    bar, update = _progress_bar(a.runs, unit="run")
    try:
        r = score_synthetic(a.model or task.bundled_model, a.task, a.runs, a.frames, a.size,
                            a.seed, a.precision, a.device, progress=update, kind=a.kind, adapt_bn=a.adapt_bn)
    finally:
        bar.close()
    print(json.dumps(r))
    print(f"{task.score_line(r)} (seeds {r['seeds'][0]}..{r['seeds'][1]}, never used in training); {r['precision']}")


def _score_stress(a, task):
    """``score --suite stress``: Dice per stress kind, the worst kind and the mean."""
    from .scoring import score_stress, stress_lines

    kinds = [a.kind] if a.kind != "standard" else None
    n_kinds = len(kinds or task.stress_module().KINDS)
    bar, update = _progress_bar(a.runs * n_kinds, unit="run")
    try:
        r = score_stress(a.model or task.bundled_model, a.task, a.runs, a.frames, a.size, a.seed, a.precision,
                         a.device, progress=update, kinds=kinds, adapt_bn=a.adapt_bn)
    finally:
        bar.close()
    print(json.dumps(r))
    print(f"{task.name} stress suite (images unlike the training generator's; seeds {r['seeds'][0]}..{r['seeds'][1]}, "
          f"{r['runs']} runs of {r['frames']} frames per kind); {r['precision']}")
    print("\n".join(stress_lines(r)))


def cmd_train_synthetic(a):
    from .synthetic_train import recipe_for, train

    recipe = recipe_for(a.task, architecture=a.arch, size=a.size, init=a.init_encoder, kind=a.kind, mode=a.mode,
                        from_model=a.from_model)
    train(task=a.task, steps=a.steps, batch=a.batch, lr=a.lr, ckpt_dir=a.ckpt, out=a.out, threads=a.threads,
          recipe=recipe, device=a.device, workers=a.workers, version=a.version, from_model=a.from_model,
          val_frames=a.val_frames, keep=a.keep)


def cmd_train(a):
    from .augment import default_augment
    from .train import TrainConfig, train

    cfg = TrainConfig(data=a.data, task=a.task, init=a.init, architecture=a.arch, epochs=a.epochs, batch=a.batch, lr=a.lr,
                      encoder_lr=a.encoder_lr, optimizer=a.optimizer, scheduler=a.scheduler, patience=a.patience,
                      val_fraction=a.val_fraction, seed=a.seed, augment=None if a.no_augment else default_augment(),
                      out=a.out, ckpt=a.ckpt, device=a.device, checkpoint_every=a.checkpoint_every,
                      batchnorm=a.batchnorm)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    r = train(cfg, log=lambda m: print(m, file=sys.stderr))
    print(r["out"])


def cmd_evaluate(a):
    from .train import check_csv_path, evaluate, format_tables, write_csv

    if a.csv:
        check_csv_path(a.csv, a.data, a.model)  # before the work: never over the folder or a file not ours

    bar, update = _progress_bar(None, unit="case")
    try:
        rows, summary, names = evaluate(a.model, a.data, device=a.device, progress=update)
    finally:
        bar.close()
    print(format_tables(rows, summary, names))
    if a.csv:
        write_csv(a.csv, rows, summary, names)
        print(f"wrote {a.csv}")


def cmd_card(a):
    from .modelfile import read_spec
    from .scoring import score_synthetic
    from .tasks import get_task

    spec = read_spec(a.model)
    task = get_task(spec.task)
    held_out = []
    for kind in task.card_kinds:
        bar, update = _progress_bar(a.runs, unit="run")
        try:
            r = score_synthetic(a.model, spec.task, a.runs, a.frames, a.size, progress=update, kind=kind)
        finally:
            bar.close()
        command = (f"`cardioseg score --task {spec.task} --runs {r['runs']} --frames {r['frames']}"
                   + (f" --kind {kind}" if kind != "standard" else "") + "`")
        held_out.append(f"- Held-out: {task.score_line(r)}, seeds {r['seeds'][0]}..{r['seeds'][1]} ({command})")
    held_out += _card_stress(a, task)
    card = Path(a.model).with_suffix(".md")
    t = spec.training
    lines = [
        f"# {Path(a.model).name}", "",
        f"- Task: {spec.task}; classes: {', '.join(c['name'] for c in spec.classes)}; version {spec.version}",
        f"- Architecture: {spec.architecture} {json.dumps(spec.architecture_args)}, {spec.in_channels} input channel(s), "
        f"{'tiles of' if spec.tile_mode else 'input'} "
        f"{spec.preprocessing['size'][0]}x{spec.preprocessing['size'][1]}"
        f"{' at the image resolution' if spec.tile_mode else ''}, "
        f"intensity {json.dumps(spec.preprocessing['intensity'])}; weights stored as fp16",
        f"- Data: {t.get('data')}",
        f"- Training: {t.get('steps')} steps of batch {t.get('batch')} ({t.get('steps', 0) * t.get('batch', 0)} images), "
        f"{t.get('optimizer')}, loss {t.get('loss')}, {t.get('precision')}; best validation step {t.get('best_step')}"
        + ("; weights of the last step" if t.get("weights") == "last step" else ""),
        *([f"- Trained on: {t['device']}, torch {t.get('torch')}"] if t.get("device") else []),
        *([f"- Initialisation: {t['initialisation']}"] if t.get("initialisation") else []),
        *([_continued_line(t["continued_from"])] if t.get("continued_from") else []),
        *([f"- Real images: {t['real_images']}"] if t.get("real_images") else []),
        f"- Validation Dice (seeds from 900,000,000, {spec.metrics.get('validation_frames')} frames): "
        f"{spec.metrics.get('validation_dice')}",
        *held_out,
        f"- Limits: trained on synthetic {task.generated}"
        + (" and unlabelled real backgrounds with synthetic devices" if t.get("real_images") else " only")
        + "; not validated on patient images; not for clinical use.",
        "",
    ]
    card.write_text("\n".join(lines))
    print(f"wrote {card}")


def _continued_line(before: dict) -> str:
    """The card's line for the run a model continued from (``train-synthetic --from-model``)."""
    t = before.get("training") or {}
    return (f"- Continued from: {before['model']} version {before['version']}, trained for {t.get('steps')} steps of "
            f"batch {t.get('batch')} on {t.get('data')}")


def _card_stress(a, task) -> list[str]:
    """The model card's stress-suite lines (none for a task without a suite, or --stress-runs 0)."""
    from .scoring import score_stress, stress_lines

    if not task.stress or not a.stress_runs:
        return []
    frames = min(a.frames, 4)
    bar, update = _progress_bar(a.stress_runs * len(task.stress_module().KINDS), unit="run")
    try:
        r = score_stress(a.model, task.name, a.stress_runs, frames, a.size, progress=update)
    finally:
        bar.close()
    command = f"`cardioseg score --task {task.name} --suite stress --runs {a.stress_runs} --frames {frames}`"
    return [f"- Stress suite (images unlike the training generator's, never trained on; {command}):",
            *stress_lines(r)]


def _parse_frames(text: str, n: int) -> list:
    """'0,3,5' or '2-6,9' -> sorted unique frame indices, each in 0..n-1."""
    from .errors import InputError

    out = set()
    for part in (x.strip() for x in text.split(",")):
        if not part:
            continue
        try:
            if "-" in part[1:]:
                a, b = part.split("-", 1)
                ks = range(int(a), int(b) + 1)
            else:
                ks = [int(part)]
        except ValueError:
            raise InputError(f"--frames: '{part}' is not a frame number or range like 2-6") from None
        for k in ks:
            if not 0 <= k < n:
                raise InputError(f"--frames: frame {k} does not exist; the image has {n} frame(s), 0..{n - 1}")
            out.add(k)
    if not out:
        raise InputError("--frames lists no frame")
    return sorted(out)


def _source_name(path) -> str:
    name = Path(path).name
    for ending in (".seg.nrrd", ".nii.gz"):
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return Path(name).stem if Path(path).suffix else name


def _frame_records(image, labels, frames, source, model_version=""):
    """Export records (trainingfolder.Frame) of ``frames`` of a read image (frames as slices) and its labels."""
    import SimpleITK as sitk

    from .trainingfolder import Frame

    voxels = sitk.GetArrayViewFromImage(image)
    for k in frames:
        yield Frame(image=voxels[k], label=labels[k], origin=image.TransformIndexToPhysicalPoint((0, 0, k)),
                    spacing=image.GetSpacing(), direction=image.GetDirection(), source=source, frame_index=k,
                    model_version=model_version)


def cmd_export(a):
    import SimpleITK as sitk

    from .errors import InputError
    from .imagefiles import check_components, read_frames
    from .tasks import get_task
    from .trainingfolder import export_frames, labels_from_file, read_training_folder

    task = get_task(a.task)
    image = read_frames(a.image)  # the reader of `segment`: image file, PNG/JPEG folder or video
    check_components(image, task.in_channels, task.name, Path(a.image).name)
    labels, notes = labels_from_file(a.labels, image, list(task.classes))
    for note in notes:
        print(f"cardioseg: {Path(a.labels).name}: {note}", file=sys.stderr)
    voxels = sitk.GetArrayViewFromImage(image)  # (K, H, W) or (K, H, W, C)
    if a.frames:
        frames = _parse_frames(a.frames, voxels.shape[0])
    else:
        frames = [k for k in range(voxels.shape[0]) if labels[k].any()]
        if not frames:
            raise InputError(f"no frame of {Path(a.labels).name} has a label; "
                             "pass --frames to export unlabelled frames")
    source = a.source or _source_name(a.image)

    bar, update = _progress_bar(len(frames))
    try:
        ids = export_frames(a.out, task.name, _frame_records(image, labels, frames, source, a.model_version),
                            progress=update, replace_images=a.replace)
    finally:
        bar.close()
    total = len(read_training_folder(a.out, verify_pixels=False).cases)
    print(f"{a.out}: exported {len(ids)} frame(s) of '{source}' ({ids[0]}..{ids[-1]}); "
          f"the folder holds {total} case(s)")


def cmd_adapt(a):
    """Export the reviewed frames, fine-tune on them, segment the other frames: one command."""
    import SimpleITK as sitk

    from .errors import InputError
    from .imagefiles import check_components, label_file_kind, read_frames, write_labelmap, write_segmentation
    from .outputfiles import output_file, output_folder
    from .predictor import Predictor
    from .tasks import get_task
    from .train import TrainConfig, train
    from .trainingfolder import export_frames, labels_from_file
    from .usermodels import check_model, resolve_model

    task = get_task(a.task)
    out = output_file(a.output, "output", inputs=[a.image, a.labels, a.model])
    kind = label_file_kind(out)
    work = Path(a.work).expanduser() if a.work else out.parent / f"{out.name.split('.')[0]}-adapt"
    start = resolve_model(a.model) if a.model else task.bundled_model
    check_model(start, task=task.name)  # a bad model file is refused before anything is written
    image = read_frames(a.image)
    check_components(image, task.in_channels, task.name, Path(a.image).name)
    labels, notes = labels_from_file(a.labels, image, list(task.classes))
    for note in notes:
        print(f"cardioseg: {Path(a.labels).name}: {note}", file=sys.stderr)
    voxels = sitk.GetArrayViewFromImage(image)
    reviewed = _parse_frames(a.frames, voxels.shape[0])
    output_folder(work, "--work")  # created once the inputs have been read
    rest = [k for k in range(voxels.shape[0]) if k not in reviewed]
    source = _source_name(a.image)
    # one folder per image, frames and settings: a rerun resumes it, another choice never mixes with it
    import hashlib

    key = json.dumps([str(Path(a.image).resolve()), str(Path(a.labels).resolve()), reviewed, str(start), a.epochs,
                      a.lr, a.batchnorm] + ([] if a.encoder_lr is None else [a.encoder_lr]))
    work = work / f"{source}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    export_frames(work / "data", task.name, _frame_records(image, labels, reviewed, source), replace_images=True)
    print(f"{work / 'data'}: {len(reviewed)} reviewed frame(s) of '{source}'; fine-tuning {Path(start).name}")
    cfg = TrainConfig(data=str(work / "data"), task=task.name, init=str(start), epochs=a.epochs, lr=a.lr,
                      encoder_lr=a.encoder_lr, batchnorm=a.batchnorm, val_fraction=0.0, out=str(work / "model.safetensors"),
                      ckpt=str(work / "ckpt"), device=a.device)
    r = train(cfg, log=print)
    result = labels.copy()  # reviewed frames keep the user's labels, voxel for voxel
    if rest:
        p = Predictor(r["out"], task=task.name, device=a.device)
        bar, update = _progress_bar(len(rest))
        try:
            result[rest] = p.predict(voxels[rest], progress=update, direction=image.GetDirection())
        finally:
            bar.close()
    if kind == "segmentation":
        write_segmentation(out, result, image, list(task.classes))
    else:
        write_labelmap(out, result, image)
    print(f"{out}: {len(reviewed)} reviewed frame(s) kept, {len(rest)} segmented with the adapted model "
          f"{r['out']}; install it with: cardioseg install-model {r['out']} --task {task.name}")


def cmd_install_model(a):
    from .modelfile import read_spec
    from .usermodels import install_model

    dest = install_model(a.file, task=a.task)
    spec = read_spec(dest)
    print(f"installed {dest} (version {spec.version}, task {spec.task})")


def cmd_models(a):
    from .usermodels import list_models, user_models_dir

    models = list_models(task=a.task)
    broken = sum(m.broken for m in models)
    print(f"{user_models_dir()}: {len(models) - broken} model(s)" + (f" for task '{a.task}'" if a.task else "")
          + (f", {broken} broken file(s)" if broken else ""))
    for m in models:
        if m.broken:
            print(f"  {m.path.name}  BROKEN: {m.error}")
            continue
        dice = m.spec.metrics.get("validation_dice")
        print(f"  {m.path.name}  version {m.spec.version}  task {m.spec.task}"
              + (f"  validation Dice {dice:.4f}" if isinstance(dice, (int, float)) else ""))


KIND_HELP = ("the kind of generated run: standard, randomised (every task: what real acquisitions vary, drawn "
             "per run; ranges in the generator's docstring), or a harder kind of the task: thin-wire (catheter: "
             "guidewires thinner than the v1 model saw), smoke (instruments: heavy surgical smoke)")


def build_parser():
    """The ``cardioseg`` argument parser: one subcommand each, its options, defaults and help."""
    p = argparse.ArgumentParser(prog="cardioseg", description="CardioSeg: segment interventional devices and the heart.")
    sub = p.add_subparsers(dest="command", required=True)
    _add_segment(sub)
    _add_adapt_bench(sub)
    _add_synth(sub)
    _add_score(sub)
    _add_train_synthetic(sub)
    _add_train(sub)
    _add_evaluate(sub)
    _add_card(sub)
    _add_export(sub)
    _add_adapt(sub)
    _add_model_commands(sub)
    return p


def _add_segment(sub):
    """``segment``: a Slicer .seg.nrrd from an image file, folder or video."""
    s = sub.add_parser("segment", help="segment an image file into a Slicer .seg.nrrd")
    s.add_argument("input", help="NRRD, NIfTI, MHA, PNG, JPEG, DICOM file or DICOM folder (2D, or 3D with frames "
                                 "as slices); a folder of PNG/JPEG frames (natural name order: frame2 before "
                                 "frame10); or a video (MP4, AVI). The instruments task needs colour (RGB) input, "
                                 "the other tasks grey")
    s.add_argument("output", help="output .seg.nrrd")
    s.add_argument("--task", default="catheter")
    s.add_argument("--model", help="model file, or the name of an installed model "
                                    "(default: the task's bundled model)")
    s.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    s.add_argument("--batch", type=int, default=8)
    s.add_argument("--threshold", type=float)
    s.add_argument("--keep-largest", type=int, default=0, help="keep the N largest connected components per frame")
    s.add_argument("--adapt-bn", action="store_true", help="test-time adaptation: re-estimate the model's "
                   "BatchNorm statistics on this input before segmenting it (for images unlike the training images)")
    s.add_argument("--uncertainty", metavar="FILE.csv", help="write each frame's uncertainty (0 to 1: doubt over "
                   "what is labelled) and its review rank to this CSV file")
    s.set_defaults(func=cmd_segment)


def _add_adapt_bench(sub):
    """``adapt-bench``: Dice after fine-tuning on K corrected frames of a shifted kind."""
    from .adaptbench import CONFIGS, KS, ORDERS

    def names(known):
        def parse(text):
            items = [t.strip() for t in text.split(",") if t.strip()]
            bad = [t for t in items if t not in known]
            if bad or not items:
                raise argparse.ArgumentTypeError(f"'{text}': choose from {', '.join(known)} (comma-separated)")
            return items
        return parse

    def ks(text):
        try:
            values = [int(t) for t in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of integers") from None
        if min(values) < 2:
            raise argparse.ArgumentTypeError(f"'{text}': every K must be >= 2")
        return values

    s = sub.add_parser("adapt-bench", help="label efficiency: fine-tune the bundled model on K frames of a shifted "
                                           "stress kind and score other frames of that kind")
    s.add_argument("--task", default="catheter")
    s.add_argument("--kind", help="the stress kind (default: the task's shifted kind, Training.adaptbench.SHIFTED)")
    s.add_argument("--model", help="model to start from (default: the bundled model)")
    s.add_argument("--ks", type=ks, default=list(KS), help="frames reviewed, comma-separated (default 5,10,25,50)")
    s.add_argument("--settings", type=names(list(CONFIGS)), default=["defaults", "previous defaults"],
                   help="fine-tuning settings compared, comma-separated: " + ", ".join(CONFIGS))
    s.add_argument("--orders", type=names(list(ORDERS)), default=["sequential"],
                   help="review orders, comma-separated: sequential, uncertainty")
    s.add_argument("--test-runs", type=_at_least(1), default=12, help="test runs (2 frames each)")
    s.add_argument("--repeats", type=_at_least(1), default=1,
                   help="fine-tunes per cell, each on its own pool of frames and seed: the mean and spread (default 1)")
    s.add_argument("--out", help="JSON file (and a .png beside it; default out/adapt-bench-TASK.json)")
    s.set_defaults(func=cmd_adapt_bench)


def _add_synth(sub):
    """``synth``: write a generated run of a task and its mask."""
    s = sub.add_parser("synth", help="write a generated run of a task (a fluoroscopy run, CT, echo clip or "
                                     "endoscopy video) and its mask")
    s.add_argument("output")
    s.add_argument("--task", default="catheter")
    s.add_argument("--mask")
    s.add_argument("--seed", type=int, default=1_000_000_001)
    s.add_argument("--frames", type=_at_least(1), default=16)
    s.add_argument("--size", type=_at_least(32), default=256)
    s.add_argument("--spacing", type=_positive_number, default=0.3,
                   help="pixel spacing in mm (where the generator does not set its own)")
    s.add_argument("--kind", default="standard", help=KIND_HELP)
    s.set_defaults(func=cmd_synth)


def _add_score(sub):
    """``score``: Dice on held-out generated runs."""
    s = sub.add_parser("score", help="Dice on generated runs never used in training")
    s.add_argument("--task", default="catheter")
    s.add_argument("--model")
    s.add_argument("--runs", type=_at_least(1), default=12)
    s.add_argument("--frames", type=_at_least(1), default=8)
    s.add_argument("--size", type=_at_least(32), default=256)
    s.add_argument("--seed", type=_at_least(0))
    s.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32-cl", "fp32"])
    s.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    s.add_argument("--kind", default="standard", help=KIND_HELP + "; with --suite stress, one stress kind (default all)")
    s.add_argument("--adapt-bn", action="store_true", help="re-estimate BatchNorm statistics on each run first")
    s.add_argument("--suite", default="held-out", choices=["held-out", "stress"],
                   help="held-out: runs of the task's own generator never trained on; stress: images made "
                        "unlike the generator's (other renderers, real images), per kind")
    s.set_defaults(func=cmd_score)


def _add_train_synthetic(sub):
    """``train-synthetic``: train a task's bundled model on its generator."""
    s = sub.add_parser("train-synthetic", help="train a task's bundled model on its generator (resumable)")
    s.add_argument("--task", default="catheter")
    s.add_argument("--steps", type=_at_least(1), default=3000)
    s.add_argument("--batch", type=_at_least(1), default=8)
    s.add_argument("--lr", type=_positive_number, default=1e-3)
    s.add_argument("--ckpt", default="~/.cache/cardioseg/train", help="checkpoint folder, outside the repository")
    s.add_argument("--out", required=True, help="model file to write")
    s.add_argument("--threads", type=_at_least(1))
    s.add_argument("--arch", help="architecture by name instead of the task recipe's (see Training/architectures.py)")
    s.add_argument("--size", type=_at_least(32), help="square training size in pixels instead of the recipe's")
    s.add_argument("--init-encoder", choices=["random", "imagenet"],
                   help="encoder weights to start from instead of the recipe's (random): imagenet needs "
                        "--arch unet-efficientnet-lite0 (weights converted at install time, nothing downloaded)")
    s.add_argument("--kind", help="the generator's kind of run to train on instead of the recipe's "
                                  "(catheter: randomised, the domain-randomised runs)")
    s.add_argument("--mode", choices=["resize", "tile"], help="how the model meets frames of another size "
                   "instead of the recipe's: resize them, or run tiles at native resolution")
    s.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    s.add_argument("--workers", type=_at_least(0), default=0, help="processes generating batches (use several on a GPU)")
    s.add_argument("--version", default="1.0.0", help="the model's version, written into the model file")
    s.add_argument("--val-frames", type=_at_least(1), default=24,
                   help="validation frames that choose the best step (default 24; more: a steadier choice, slower)")
    s.add_argument("--keep", choices=["best", "last"],
                   help="the weights written, instead of the recipe's: of the best validation step or of the last step")
    s.add_argument("--from-model", help="a model file of the task to go on training (its network, preprocessing and "
                                        "weights; a new schedule): e.g. the bundled model, over several sessions")
    s.set_defaults(func=cmd_train_synthetic)


def _add_train(sub):
    """``train``: train or fine-tune on a training folder."""
    s = sub.add_parser("train", help="train or fine-tune a task's model on a training folder (resumable)")
    s.add_argument("--data", required=True, help="training folder (cardioseg export)")
    s.add_argument("--task", default="catheter")
    s.add_argument("--init", default="bundled", help="'bundled' (fine-tune the bundled model, default), a model "
                                                     "file to fine-tune, 'scratch' (bundled architecture, random weights) "
                                                     "or 'imagenet' (unet-efficientnet-lite0 with ImageNet encoder weights)")
    s.add_argument("--arch", help="with --init scratch or imagenet: architecture by name (see Training/architectures.py), "
                                  "e.g. unet-resnet34, deeplabv3-resnet50, unet-original, monai-basicunet")
    s.add_argument("--epochs", type=int, default=50)
    s.add_argument("--batch", type=int, default=8)
    s.add_argument("--lr", type=float, default=1e-4)
    s.add_argument("--encoder-lr", type=float, metavar="LR",
                   help="the encoder's learning rate, when it should differ from --lr (0: the encoder stays as it is)")
    s.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    s.add_argument("--scheduler", default="plateau", choices=["plateau", "cosine"])
    s.add_argument("--patience", type=int, default=15, help="early stopping: epochs without a better validation Dice")
    s.add_argument("--val-fraction", type=float, default=0.2, help="fraction of sources (runs) held out for validation")
    s.add_argument("--no-augment", action="store_true", help="train without augmentation")
    s.add_argument("--batchnorm", default="auto", choices=["auto", "frozen", "update"],
                   help="BatchNorm statistics: frozen keeps the starting model's, update follows the training "
                        "frames; auto (default): frozen when fine-tuning, update with --init scratch")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="model file to write (default <data>/models/<task>-<UTC time>.safetensors)")
    s.add_argument("--ckpt", help="checkpoint folder; a run resumes from its last.safetensors "
                                  "(default ~/.cache/cardioseg/train-runs/<task>-<run fingerprint>)")
    s.add_argument("--checkpoint-every", type=int, default=20, metavar="N",
                   help="also checkpoint every N batches inside an epoch (0: at epoch ends only)")
    s.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    s.add_argument("--threads", type=_at_least(1))
    s.set_defaults(func=cmd_train)


def _add_evaluate(sub):
    """``evaluate``: a model's metrics on a training folder."""
    s = sub.add_parser("evaluate", help="Dice, IoU and pixel accuracy of a model on a training folder")
    s.add_argument("--model", required=True)
    s.add_argument("--data", required=True, help="training folder")
    s.add_argument("--csv", help="write per-case and summary metrics to this CSV file")
    s.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    s.set_defaults(func=cmd_evaluate)


def _add_card(sub):
    """``card``: score a model and write its model card."""
    s = sub.add_parser("card", help="score a model on held-out generated runs and write its model card (.md)")
    s.add_argument("model")
    s.add_argument("--runs", type=_at_least(1), default=12)
    s.add_argument("--frames", type=_at_least(1), default=8)
    s.add_argument("--size", type=_at_least(32), default=256)
    s.add_argument("--stress-runs", type=_at_least(0), default=4,
                   help="runs per kind of the task's stress suite (0: leave it out)")
    s.set_defaults(func=cmd_card)


def _add_export(sub):
    """``export``: labelled frames into a training folder."""
    s = sub.add_parser("export", help="write labelled frames into a training folder (nnU-Net v2 raw layout)")
    s.add_argument("--task", default="catheter")
    s.add_argument("--image", required=True, help="NRRD, NIfTI, MHA, PNG, JPEG, DICOM file or folder, a folder of "
                                                  "PNG/JPEG frames (natural name order) or a video (MP4, AVI); "
                                                  "frames as slices, as for segment")
    s.add_argument("--labels", required=True,
                   help="a Slicer .seg.nrrd (segments matched to the task's classes by name) or a labelmap image, "
                        "in the image's geometry")
    s.add_argument("--frames", help="frames to export, e.g. 0,3,5 or 2-6 (default: every frame with a label)")
    s.add_argument("--out", required=True, help="training folder (created if needed)")
    s.add_argument("--source", help="source name for the case IDs (default: the image file name)")
    s.add_argument("--model-version", default="", help="version of the model that pre-labelled the frames")
    s.add_argument("--replace", action="store_true",
                   help="replace cases whose stored image differs from this export's (default: stop and say so)")
    s.set_defaults(func=cmd_export)


def _add_adapt(sub):
    """``adapt``: fine-tune on the reviewed frames of an image, segment its other frames."""
    from .tasks import ADAPT_SETTINGS

    s = sub.add_parser("adapt", help="fine-tune the model on the reviewed frames of an image and segment the "
                                     "others with it (export, train and segment in one command)")
    s.add_argument("output", help="output .seg.nrrd (or labelmap) for every frame: reviewed frames keep their labels")
    s.add_argument("--task", default="catheter")
    s.add_argument("--image", required=True, help="the image, as for segment")
    s.add_argument("--labels", required=True, help="its labels (a .seg.nrrd or labelmap in the image's geometry), "
                                                  "correct on the --frames")
    s.add_argument("--frames", required=True, help="the reviewed frames, e.g. 0,3,5 or 2-6")
    s.add_argument("--model", help="model to start from (file or installed name; default: the bundled model)")
    s.add_argument("--work", help="folder for the training folder, checkpoints and the adapted model "
                                  "(default: OUTPUT's folder / NAME-adapt)")
    s.add_argument("--epochs", type=_at_least(1), default=ADAPT_SETTINGS["epochs"])
    s.add_argument("--lr", type=_positive_number, default=ADAPT_SETTINGS["lr"])
    s.add_argument("--encoder-lr", type=_non_negative_number, default=ADAPT_SETTINGS["encoder_lr"], metavar="LR",
                   help="the encoder's learning rate (0: the encoder stays as it is)")
    s.add_argument("--batchnorm", default=ADAPT_SETTINGS["batchnorm"], choices=["auto", "frozen", "update"])
    s.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    s.set_defaults(func=cmd_adapt)


def _add_model_commands(sub):
    """``install-model`` and ``models``: the user models folder."""
    s = sub.add_parser("install-model", help="check a model file and copy it into the user models folder "
                                             "(never over the bundled model)")
    s.add_argument("file", help="CardioSeg .safetensors model file, e.g. from cardioseg train")
    s.add_argument("--task", default="catheter")
    s.set_defaults(func=cmd_install_model)
    s = sub.add_parser("models", help="list the models in the user models folder")
    s.add_argument("--task", help="only models for this task")
    s.set_defaults(func=cmd_models)


def main(argv=None):
    from .errors import Cancelled, CardioSegError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except CardioSegError as e:  # the user's input, files or options: one line
        print(f"cardioseg: error: {e}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        print("cardioseg: cancelled", file=sys.stderr)
        return 130
    except Exception:  # anything else is a bug in CardioSeg: show it whole
        import traceback

        traceback.print_exc()
        print("cardioseg: internal error: this is a bug in CardioSeg, not a problem with your input; please "
              "report it with the traceback above", file=sys.stderr)
        return 3
    return 0
