"""A repeatable sweep of bad inputs and faults against ``cardioseg``, as a careless or hostile
user would try them (issue 13): each case runs the command line in this process, in a sandbox of
``inputs/`` (what the user gave), ``work/`` (the one folder outputs may go to) and ``victim/``
(files a tampered folder points at). After every case:

- no traceback: an expected error is one ``cardioseg: error:`` line (or argparse's usage error),
  exit code 2; a case that should work exits 0;
- the inputs are unchanged, byte for byte;
- nothing outside ``work/`` was created, changed or deleted, and no temporary file is left.

The summary line ("N tried, 0 tracebacks, ...") is printed at the end of ``make test``.
"""
import contextlib
import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import SWEEP_SUMMARY, _tiny_model
from Training.cli import main
from Training.trainingfolder import Frame, export_frames

OK, ERROR = 0, 2


def _frames(n=3, h=64, w=64, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(1000, 60, (n, h, w))
    a[:, h // 3:h // 3 + 3, 4:w - 4] += 700
    return a.astype(np.uint16)


def _write(array, path, vector=False, spacing=None):
    img = sitk.GetImageFromArray(array, isVector=vector)
    if spacing:
        img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path), useCompression=True)
    return path


def _tampered_model(src: Path, dst: Path, edit) -> Path:
    """A copy of the model file ``src`` whose spec went through ``edit(spec) -> spec``, with the
    checksum recomputed as the writer computes it, so that only the spec is wrong."""
    from Training import modelfile

    with safe_open(str(src), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = dict(f.metadata())
    meta[modelfile.META_KEY] = json.dumps(edit(json.loads(meta[modelfile.META_KEY])))
    meta["sha256"] = modelfile._digest(tensors, meta[modelfile.META_KEY])
    save_file(tensors, str(dst), metadata=meta)
    return dst


def _truncate(path: Path, keep: float = 0.3) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:max(1, int(len(data) * keep))])


def _rename_case(folder: Path, new: str, paths_too: bool) -> None:
    """Rename the first case of a training folder in dataset.json and its manifest."""
    p = folder / "dataset.json"
    doc = json.loads(p.read_text())
    old = sorted(doc["dataset"])[0]
    entry = doc["dataset"].pop(old)
    if paths_too:
        entry = {"images": [f"imagesTr/{new}_0000.nii.gz"], "label": f"labelsTr/{new}.nii.gz"}
    doc["dataset"][new] = entry
    doc["cardioseg"]["cases"][new] = doc["cardioseg"]["cases"].pop(old)
    p.write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("sweep")
    inp, work, victim = root / "inputs", root / "work", root / "victim"
    for d in (inp, work, victim):
        d.mkdir()
    (victim / "lab_0000.nii.gz").write_bytes(b"victim's own file")
    (victim / "lab.nii.gz").write_bytes(b"victim's own label")
    model = inp / "catheter.safetensors"
    shutil.copy(tiny_model, model)
    _tiny_model(inp / "echo.safetensors", "echo", "unet-resnet18", {"method": "window", "lower": 0, "upper": 255})
    run = _write(_frames(), inp / "run.nrrd", spacing=(0.3, 0.3, 1.0))
    labels = (_frames() > 1400).astype(np.uint8)
    _write(labels, inp / "run_labels.nrrd", spacing=(0.3, 0.3, 1.0))
    _write(labels[:, :32], inp / "other_grid_labels.nrrd")
    _write(np.zeros((2, 3, 32, 32), np.uint16), inp / "4d.nrrd")
    _write(np.full((3, 64, 64), 7, np.uint16), inp / "constant.nrrd")
    nan = _frames().astype(np.float32)
    nan[0, 5, 5] = np.nan
    _write(nan, inp / "nan.nrrd")
    _write(_frames(1, 8, 8), inp / "tiny.nrrd")
    _write(_frames(1, 16, 2048), inp / "strip.nrrd")
    _write(np.dstack([_frames(1)[0] // 8] * 3).astype(np.uint8), inp / "colour.png", vector=True)
    (inp / "empty.nrrd").write_bytes(b"")
    (inp / "text.nrrd").write_text("not an image at all\n")
    (inp / "no_frames").mkdir()
    (inp / "no_frames" / "readme.txt").write_text("nothing here")
    (inp / "notes.csv").write_text("my,own,table\n")
    (inp / "notamodel.safetensors").write_text("not a model")
    shutil.copy(run, inp / "truncated.nrrd")
    _truncate(inp / "truncated.nrrd", 0.5)
    nii = _write(_frames(1, 256, 256, seed=4)[0], inp / "frame.nii.gz")
    shutil.copy(nii, inp / "truncated.nii.gz")
    _truncate(inp / "truncated.nii.gz", 0.3)
    shutil.copy(model, inp / "truncated.safetensors")
    _truncate(inp / "truncated.safetensors", 0.5)

    # model files with a bad spec (checksum recomputed, so only the spec is wrong)
    def drop(key):
        return lambda s: {k: v for k, v in s.items() if k != key}

    def setting(path, value):
        def edit(s):
            s = json.loads(json.dumps(s))
            d = s
            for k in path[:-1]:
                d = d[k]
            d[path[-1]] = value
            return s
        return edit

    bad_models = {
        "no_classes_field": drop("classes"),
        "no_preprocessing": drop("preprocessing"),
        "bogus_args": setting(["architecture_args"], {"bogus": 1}),
        "args_string": setting(["architecture_args"], "big"),
        "size_zero": setting(["preprocessing", "size"], [0, 0]),
        "empty_classes": setting(["classes"], []),
        "unknown_arch": setting(["architecture"], "resnet-9000"),
        "bad_intensity": setting(["preprocessing", "intensity"], {"method": "magic"}),
        "echo_label": setting(["task"], "echo"),
        "list_spec": lambda s: [s],
    }
    for name, edit in bad_models.items():
        _tampered_model(model, inp / f"{name}.safetensors", edit)

    def tf(name):
        folder = inp / name
        frames = []
        for s, src in enumerate(["runA", "runB", "runC"]):
            a = _frames(2, seed=s)
            frames += [Frame(image=a[k], label=(a[k] > 1400).astype(np.uint8), origin=(0.0, 0.0, float(k)),
                             spacing=(0.3, 0.3, 1.0), direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), source=src,
                             frame_index=k) for k in range(2)]
        export_frames(folder, "catheter", frames)
        return folder

    tf("tf")
    _rename_case(tf("tf_escape"), "../../victim/lab", paths_too=False)
    _rename_case(tf("tf_escape_paths"), "../../victim/lab", paths_too=True)
    _truncate(next((tf("tf_cut_image") / "imagesTr").glob("*.nii.gz")), 0.3)
    _truncate(next((tf("tf_cut_label") / "labelsTr").glob("*.nii.gz")), 0.3)
    (work / "models").mkdir()
    (work / "a_file").write_text("a file, not a folder")
    return root


def _cases(root: Path) -> list:
    """(name, argv, expected exit code, extra environment)."""
    i, w = root / "inputs", root / "work"
    m, echo = str(i / "catheter.safetensors"), str(i / "echo.safetensors")
    run, tf = str(i / "run.nrrd"), str(i / "tf")
    seg = ["segment", "--model", m]
    readonly = Path("/sys/kernel") if os.geteuid() == 0 else None
    cases = [
        ("segment works", seg + [run, str(w / "a.seg.nrrd")], OK),
        ("segment into missing folders", seg + [run, str(w / "new" / "b.seg.nrrd")], OK),
        ("segment to NIfTI labelmap", seg + [run, str(w / "c.nii.gz")], OK),
        ("segment output is the input", seg + [run, run], ERROR),
        ("segment output is the model", seg + [run, m], ERROR),
        ("segment output is a folder", seg + [run, str(w)], ERROR),
        ("segment output below a file", seg + [run, str(w / "a_file" / "x.seg.nrrd")], ERROR),
        ("segment output .png", seg + [run, str(w / "x.png")], ERROR),
        ("segment output without extension", seg + [run, str(w / "x")], ERROR),
        ("segment missing input", seg + [str(i / "missing.nrrd"), str(w / "x.seg.nrrd")], ERROR),
        ("segment empty file", seg + [str(i / "empty.nrrd"), str(w / "x.seg.nrrd")], ERROR),
        ("segment text as nrrd", seg + [str(i / "text.nrrd"), str(w / "x.seg.nrrd")], ERROR),
        ("segment truncated nrrd", seg + [str(i / "truncated.nrrd"), str(w / "x.seg.nrrd")], ERROR),
        ("segment truncated nii.gz", seg + [str(i / "truncated.nii.gz"), str(w / "x.seg.nrrd")], ERROR),
        ("segment 4D", seg + [str(i / "4d.nrrd"), str(w / "x.seg.nrrd")], ERROR),
        ("segment constant", seg + [str(i / "constant.nrrd"), str(w / "x.seg.nrrd")], ERROR),
        ("segment NaN", seg + [str(i / "nan.nrrd"), str(w / "x.seg.nrrd")], ERROR),
        ("segment 8x8", seg + [str(i / "tiny.nrrd"), str(w / "x.seg.nrrd")], ERROR),
        ("segment 2048x16 strip", seg + [str(i / "strip.nrrd"), str(w / "x.seg.nrrd")], ERROR),
        ("segment colour into catheter", seg + [str(i / "colour.png"), str(w / "x.seg.nrrd")], ERROR),
        ("segment grey into instruments", ["segment", "--task", "instruments", run, str(w / "x.seg.nrrd")], ERROR),
        ("segment folder without frames", seg + [str(i / "no_frames"), str(w / "x.seg.nrrd")], ERROR),
        ("segment threshold 2", seg + [run, str(w / "x.seg.nrrd"), "--threshold", "2"], ERROR),
        ("segment threshold nan", seg + [run, str(w / "x.seg.nrrd"), "--threshold", "nan"], ERROR),
        ("segment threshold -0.1", seg + [run, str(w / "x.seg.nrrd"), "--threshold", "-0.1"], ERROR),
        ("segment keep-largest -3", seg + [run, str(w / "x.seg.nrrd"), "--keep-largest", "-3"], ERROR),
        ("segment batch 0", seg + [run, str(w / "x.seg.nrrd"), "--batch", "0"], ERROR),
        ("segment threshold for echo", ["segment", "--task", "echo", "--model", echo, run, str(w / "x.seg.nrrd"),
                                        "--threshold", "0.4"], ERROR),
        ("segment unknown task", ["segment", "--task", "bogus", run, str(w / "x.seg.nrrd")], ERROR),
        ("segment cuda without GPU", seg + [run, str(w / "x.seg.nrrd"), "--device", "cuda"],
         ERROR if not _has_cuda() else OK),
        ("segment missing model", ["segment", "--model", str(i / "nope.safetensors"), run, str(w / "x.seg.nrrd")],
         ERROR),
        ("segment text as model", ["segment", "--model", str(i / "notamodel.safetensors"), run,
                                   str(w / "x.seg.nrrd")], ERROR),
        ("segment truncated model", ["segment", "--model", str(i / "truncated.safetensors"), run,
                                     str(w / "x.seg.nrrd")], ERROR),
        ("segment echo model for catheter", ["segment", "--model", echo, run, str(w / "x.seg.nrrd")], ERROR),
        ("segment catheter weights labelled echo", ["segment", "--task", "echo", "--model",
                                                    str(i / "echo_label.safetensors"), run, str(w / "x.seg.nrrd")],
         ERROR),
    ]
    for bad in ("no_classes_field", "no_preprocessing", "bogus_args", "args_string", "size_zero", "empty_classes",
                "unknown_arch", "bad_intensity", "list_spec"):
        path = str(i / f"{bad}.safetensors")
        cases += [
            (f"segment model {bad}", ["segment", "--model", path, run, str(w / "x.seg.nrrd")], ERROR),
            (f"train --init model {bad}", ["train", "--data", tf, "--init", path, "--ckpt", str(w / "ck_bad"),
                                           "--out", str(w / "bad.safetensors")], ERROR),
            (f"install-model {bad}", ["install-model", path], ERROR),
        ]
    if readonly is not None or os.geteuid() != 0:
        ro = readonly or (i / "readonly")
        cases += [
            ("segment into read-only folder", seg + [run, str(ro / "x.seg.nrrd")], ERROR),
            ("train --out read-only", ["train", "--data", tf, "--init", m, "--ckpt", str(w / "ck_ro"),
                                       "--out", str(ro / "m.safetensors")], ERROR),
            ("train --ckpt read-only", ["train", "--data", tf, "--init", m, "--ckpt", str(ro / "ck"),
                                        "--out", str(w / "m.safetensors")], ERROR),
            ("evaluate --csv read-only", ["evaluate", "--model", m, "--data", tf, "--csv", str(ro / "r.csv")], ERROR),
            ("install-model into read-only folder", ["install-model", m], ERROR, {"CARDIOSEG_MODELS_DIR": str(ro)}),
        ]
    ex = ["export", "--task", "catheter", "--image", run, "--labels", str(i / "run_labels.nrrd")]
    cases += [
        ("export works", ex + ["--out", str(w / "tf_new")], OK),
        ("export labels on another grid", ["export", "--image", run, "--labels", str(i / "other_grid_labels.nrrd"),
                                           "--out", str(w / "tf_x")], ERROR),
        ("export --frames 99", ex + ["--frames", "99", "--out", str(w / "tf_x")], ERROR),
        ("export --frames abc", ex + ["--frames", "abc", "--out", str(w / "tf_x")], ERROR),
        ("export --out is a file", ex + ["--out", str(w / "a_file")], ERROR),
        ("export into a foreign non-empty folder", ex + ["--out", str(i / "no_frames")], ERROR),
        ("export into a folder with a case named ../../victim/lab", ex + ["--out", str(i / "tf_escape")], ERROR),
        ("export into a folder whose paths lead out too", ex + ["--out", str(i / "tf_escape_paths")], ERROR),
        ("evaluate works", ["evaluate", "--model", m, "--data", tf, "--csv", str(w / "report.csv")], OK),
        ("evaluate --csv over dataset.json", ["evaluate", "--model", m, "--data", tf,
                                              "--csv", str(i / "tf" / "dataset.json")], ERROR),
        ("evaluate --csv over a file not ours", ["evaluate", "--model", m, "--data", tf,
                                                 "--csv", str(i / "notes.csv")], ERROR),
        ("evaluate --csv over the model", ["evaluate", "--model", m, "--data", tf, "--csv", m], ERROR),
        ("evaluate a folder with an escaping case", ["evaluate", "--model", m, "--data", str(i / "tf_escape")], ERROR),
        ("evaluate a truncated image", ["evaluate", "--model", m, "--data", str(i / "tf_cut_image")], ERROR),
        ("evaluate a truncated label", ["evaluate", "--model", m, "--data", str(i / "tf_cut_label")], ERROR),
        ("evaluate an echo model on catheter cases", ["evaluate", "--model", echo, "--data", tf], ERROR),
        ("evaluate a missing folder", ["evaluate", "--model", m, "--data", str(i / "missing")], ERROR),
    ]
    tr = ["train", "--data", tf, "--init", m, "--ckpt", str(w / "ck"), "--out", str(w / "m.safetensors")]
    cases += [(f"train {' '.join(o)}", tr + o, ERROR) for o in (
        ["--epochs", "0"], ["--epochs", "-1"], ["--batch", "0"], ["--lr", "-1"], ["--lr", "nan"],
        ["--val-fraction", "1.5"], ["--patience", "0"], ["--checkpoint-every", "-2"], ["--threads", "0"])]
    cases += [
        ("train works", tr + ["--epochs", "1"], OK),
        ("train --out is the init model", ["train", "--data", tf, "--init", m, "--ckpt", str(w / "ck2"),
                                           "--out", m], ERROR),
        ("train --out is a folder", ["train", "--data", tf, "--init", m, "--ckpt", str(w / "ck2"), "--out", str(w)],
         ERROR),
        ("train on an escaping folder", ["train", "--data", str(i / "tf_escape"), "--init", m,
                                         "--ckpt", str(w / "ck3"), "--out", str(w / "m3.safetensors")], ERROR),
        ("train on a truncated label", ["train", "--data", str(i / "tf_cut_label"), "--init", m,
                                        "--ckpt", str(w / "ck4"), "--out", str(w / "m4.safetensors")], ERROR),
        ("train --init missing", ["train", "--data", tf, "--init", str(i / "nope.safetensors"),
                                  "--ckpt", str(w / "ck5"), "--out", str(w / "m5.safetensors")], ERROR),
        ("install-model works", ["install-model", m], OK, {"CARDIOSEG_MODELS_DIR": str(w / "models")}),
        ("install-model a text file", ["install-model", str(i / "notamodel.safetensors")], ERROR),
        ("install-model truncated", ["install-model", str(i / "truncated.safetensors")], ERROR),
        ("install-model into a file", ["install-model", m], ERROR, {"CARDIOSEG_MODELS_DIR": str(w / "a_file")}),
        ("install-model below a file", ["install-model", m], ERROR,
         {"CARDIOSEG_MODELS_DIR": str(w / "a_file" / "sub")}),
        ("models --task bogus", ["models", "--task", "bogus"], ERROR),
        ("synth --frames 0", ["synth", str(w / "s.nrrd"), "--frames", "0"], ERROR),
        ("synth --size 5", ["synth", str(w / "s.nrrd"), "--size", "5"], ERROR),
        ("synth --spacing -1", ["synth", str(w / "s.nrrd"), "--spacing", "-1"], ERROR),
        ("synth into a folder", ["synth", str(w)], ERROR),
        ("score --runs 0", ["score", "--runs", "0"], ERROR),
        ("score --task bogus", ["score", "--task", "bogus", "--runs", "1"], ERROR),
        ("no command", [], ERROR),
        ("unknown command", ["frobnicate"], ERROR),
    ]
    return cases


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _state(root: Path) -> dict:
    """path -> sha256 of every file under root except work/ (and the folder list)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if rel.parts[0] == "work":
            continue
        out[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def _run(argv, env):
    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as e:  # argparse's usage errors
                code = e.code
            except BaseException as e:  # noqa: BLE001 - an escaped exception is a traceback
                code = f"escaped {type(e).__name__}: {e}"
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return code, out.getvalue(), err.getvalue()


def test_hostile_input_sweep(sandbox, request, monkeypatch):
    root = sandbox
    monkeypatch.setenv("CARDIOSEG_MODELS_DIR", str(root / "work" / "models"))
    monkeypatch.setenv("HOME", str(root / "work" / "home"))  # default checkpoint folders stay in work/
    if os.geteuid() != 0:
        (root / "inputs" / "readonly").mkdir(exist_ok=True)
        (root / "inputs" / "readonly").chmod(0o555)
    cases = _cases(root)
    before = _state(root)
    problems, tracebacks, outside, inputs_changed = [], 0, set(), set()
    for case in cases:
        name, argv, expected = case[:3]
        env = case[3] if len(case) > 3 else {}
        code, out, err = _run(argv, env)
        if "Traceback" in err or code == 3 or not isinstance(code, int):
            tracebacks += 1
            problems.append(f"{name}: traceback ({code}): {err[-400:]}")
        elif code != expected:
            problems.append(f"{name}: exit {code}, expected {expected}: {err.strip()[-300:]}")
        elif code == ERROR:
            lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("usage:")
                     and not ln.startswith("  ") and "%|" not in ln]
            if not lines or "error:" not in lines[-1]:
                problems.append(f"{name}: no error line: {err!r}")
        after = _state(root)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        if changed:
            inputs_changed.update(k for k in changed if k.startswith("inputs"))
            outside.update(k for k in changed if not k.startswith("inputs"))
            problems.append(f"{name}: touched outside work/ or changed an input: {changed[:5]}")
            before = after
        leftovers = [str(p) for p in (root / "work").rglob("*")
                     if ".tmp" in p.name or p.name.startswith(".cardioseg-probe")]
        if leftovers:
            problems.append(f"{name}: left temporary files {leftovers[:3]}")
            for p in leftovers:
                Path(p).unlink()
    summary = (f"hostile-input sweep: {len(cases)} tried, {tracebacks} tracebacks, {len(outside)} files outside the "
               f"folder touched, inputs {'unchanged' if not inputs_changed else 'CHANGED'}")
    request.config.stash[SWEEP_SUMMARY] = summary
    assert not problems, summary + "\n" + "\n".join(problems)
    assert len(cases) >= 100
