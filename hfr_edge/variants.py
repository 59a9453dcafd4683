"""The precision variants of an fp32 graph, each made by its own stage: fp16 by export's conversion;
int8 by calib (the Q/DQ graph) and then compare (fp32 vs int8 on held-out frames, and on a labelled
dataset if given). The one helper `calibrate`, `build --fp16/--int8` and `demo` go through."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, TextIO

from .base import console
from .base.artifact import load_meta
from .base.errors import HfrError
from .base.fsio import write_json_atomic
from .base.view import view_for, view_inputs
from .calib.defaults import DEFAULT_METHOD, DEFAULT_TARGET


def make_fp16(onnx_path, out_path=None, log: Optional[TextIO] = None) -> Path:
    """model.onnx -> model.fp16.onnx (+ JSON), what `export --precision fp16` writes."""
    from .export.fp16 import convert_fp16  # noqa: PLC0415 - onnx only when converting

    src = Path(onnx_path)
    out = Path(out_path) if out_path else src.with_name(f"{src.stem}.fp16.onnx")
    console.say(f"converting {src} to fp16: {out}", log)
    return Path(convert_fp16(src, out))


def calibrate_model(onnx_path, images: str, out_path=None, n: int = 200, method: str = DEFAULT_METHOD,
                    eval_data: Optional[str] = None, report: bool = True, log: Optional[TextIO] = None,
                    eval_format: str = "auto", eval_normal_class: Optional[str] = None,
                    eval_test: Optional[str] = None, target: str = DEFAULT_TARGET, speed: bool = True,
                    roi: Optional[str] = None, refit: Optional[str] = "auto") -> Path:
    """Make `<stem>.int8.onnx` (`target` cpu: `<stem>.int8cpu.onnx`) (+ JSON) from frames of `images`
    and, with `report`, `<stem>.int8[cpu].calib.json`: fp32 vs int8 on the frames held out of
    calibration (none when `eval_data` is given), with `eval_data` on its test set (`eval_test`: the
    test folder of a folder dataset), and for the cpu target (with `speed`, where OpenVINO is
    installed) its speed against the fp32 graph on ONNX Runtime. Frames are cut as the graph's view
    says (`roi` replacing its ROI). `refit`: the checkpoint the graph was exported from (every encoder
    layer int8 and the statistics refitted on the int8 graph's features, refit_calibrate), "auto"
    (that checkpoint where auto_refit finds it right to) or None / "none". Returns the int8 graph's path."""
    from .calib.calibrate import calibrate, check_source, holdout_split  # noqa: PLC0415 - onnx
    from .calib.frames import collect_frames  # noqa: PLC0415
    from .compare import (compare_frames, compare_on_dataset, int8_provider, print_comparison,  # noqa: PLC0415
                          report_path, speed_vs_fp32)

    if eval_test and not eval_data:
        raise HfrError(f"--test {eval_test} applies to --eval DATA (a folder of good images); add --eval")
    src, out, meta = check_source(onnx_path, out_path, method, target)  # before reading any frame
    why_not, auto = None, refit == "auto"
    if auto:
        refit, why_not = auto_refit(src, meta, str(images), target)
        if refit:
            console.say(f"--refit auto: {refit}, the checkpoint this part's graph was exported from, trained on these "
                        f"images (--refit none keeps the encoder's early layers float)", log)
    elif refit == "none":
        refit, why_not = None, "--refit none"
    frames, _ = collect_frames(images, n, warn=lambda m: console.warn(m, log))
    cal, hold = holdout_split(len(frames), keep_out=not eval_data)
    if refit:
        try:
            out = refit_calibrate(src, meta, [frames[i] for i in cal], out, method, target, refit, str(images), roi,
                                  log, fit_frames=frames)
        except HfrError as exc:
            if not auto:  # asked for by name: its failure is the answer
                raise
            console.warn(f"--refit auto: {exc}", log)
            refit, why_not = None, "the refit could not run"
    if not refit:
        out = calibrate(src, [frames[i] for i in cal], out, method, source=str(images), log=log, target=target,
                        roi=roi)
        if why_not and _reads_stride4(meta):
            console.say(f"note: this map's statistics read the stride-4 level (one part at one place), so the encoder's "
                        f"early layers stayed float ({why_not}); --refit CKPT (the checkpoint this graph came from, "
                        f"with --images its training images) quantizes them too at fp32's accuracy, about 10 % faster",
                        log)
    if report:
        provider8 = int8_provider(target)
        if target == "cpu" and provider8 != "openvino":
            console.warn("openvino is not installed: the cpu int8 graph is judged on ONNX Runtime and its speed "
                         "not measured (pip install openvino)", log)
        rep = {"model": str(src), "int8": str(out), "method": method, "target": target,
               "calibration_frames": len(cal), "int8_provider": provider8,
               "early_layers": "int8, statistics refitted on them" if refit else "float",
               **({"refit": {"checkpoint": str(refit), "frames": len(frames),
                             "stats_components": load_meta(out).model.get("stats_components")}} if refit else {})}
        if hold:
            view = view_for(meta.extra.get("view"), roi, str(src))
            rep["holdout"] = compare_frames(str(src), str(out), view_inputs([frames[i] for i in hold], view, meta.image_size),
                                            provider8)
        if eval_data:
            rep["eval"] = compare_on_dataset(str(src), str(out), eval_data, eval_format, eval_normal_class, eval_test,
                                             provider8, roi=roi)
        if speed and provider8 == "openvino":
            rep["speed"] = speed_vs_fp32(str(src), str(out), meta.image_size)
        rpath = report_path(out)
        write_json_atomic(rpath, rep)
        print_comparison(rep, log)
        console.say(f"wrote {rpath}", log)
    return out


def _reads_stride4(meta) -> bool:
    """The graph's map takes feature statistics at stride 4: a part's map, whose whitening magnifies
    the int8 rounding of the encoder's early layers (refit_calibrate)."""
    from .config import ModelConfig  # noqa: PLC0415

    cfg = ModelConfig.from_dict(meta.model)
    return cfg.stats != "none" and cfg.stats_weights[0] > 0


def _exported_from(ck: dict, meta) -> bool:
    """The graph (its metadata `meta`) was exported from the checkpoint `ck`: the same model config
    and normalisation. Raises KeyError / TypeError / ValueError on a malformed checkpoint."""
    from .config import ModelConfig, NormStats  # noqa: PLC0415

    return (ModelConfig.from_dict(ck["config"]).to_dict() == meta.model
            and NormStats.from_dict(ck["norm"]).to_dict() == meta.norm)


def _training_folder(ck: dict) -> Optional[Path]:
    """The folder the checkpoint was trained on, resolved, where that path still is a folder here."""
    trained_on = ck.get("train", {}).get("data")
    return Path(trained_on).resolve() if trained_on and Path(trained_on).is_dir() else None


def _is_training_folder(images: str, root: Path) -> bool:
    """`images` names the training folder `root` (the dataset, its train/ or train/good/)."""
    return Path(images).resolve() in (root, root / "train", root / "train" / "good")


def auto_refit(src: Path, meta, images: str, target: str):
    """`--refit auto`: (the checkpoint to refit with, None) where the refit is what a user wants, else
    (None, why not). It is for the cpu target and a part's map (statistics at stride 4), whose early
    layers it quantizes at fp32's accuracy (bottle: 1.9x -> 2.05x ONNX Runtime fp32,
    docs/benchmarks.md, Speed); on a texture it trades image AUROC for speed, and on TensorRT its gain is not measured
    here, so both keep the early layers float unless asked. The checkpoint is the one the graph's
    metadata names (source.checkpoint), beside the graph or in the working directory, with the
    graph's model and normalisation, and `images` its training images (the refit scales the
    statistics on them); torch must be importable to read it."""
    import importlib.util  # noqa: PLC0415

    if not _reads_stride4(meta):
        return None, "not a part's graph"
    if target != "cpu":
        return None, f"--refit auto refits for --target cpu; on {target} give --refit CKPT"
    name = (meta.extra.get("source") or {}).get("checkpoint")
    found = [p for p in dict.fromkeys((src.parent / name, Path(name))) if p.is_file()] if name else []
    if not found:
        return None, f"its checkpoint {name or '(not named in the graph metadata)'} is not beside the graph"
    if importlib.util.find_spec("torch") is None:
        return None, "torch is not installed to read its checkpoint"
    from .checkpoint import load_checkpoint  # noqa: PLC0415

    try:
        ck = load_checkpoint(found[0])
        same = _exported_from(ck, meta)
    except (HfrError, KeyError, TypeError, ValueError):
        return None, f"{found[0]} could not be read as its checkpoint"
    if not same:
        return None, f"{found[0]} is not the checkpoint it was exported from"
    root = _training_folder(ck)
    if root is None or not _is_training_folder(images, root):
        return None, f"--images {images} are not what {found[0]} was trained on ({ck['train'].get('data') or 'unknown'})"
    return str(found[0]), None


# the Gaussians per level of a cpu graph's refitted statistics where its map reads the stride-4 level (a
# part): that level's whitening (9.4 MB per Gaussian at 256 px in all 24 channels, 2.4 MB in the 12 of the
# default `stats_dims`, under which auto takes one already) is the int8 graph's one float product,
# memory-bound at batch 1. Bottle (seeds 0 / 3 / 4): int8 pixel AUROC / AUPRO 0.9925 / 0.9707 with one or
# with the checkpoint's three (fp32: one costs 0.0001-0.0005 AUPRO, so the fp32 graph keeps them); OpenVINO
# against ONNX Runtime fp32 at batch 1 1.62-2.02x -> 2.37x on a CPU without AMX (docs/benchmarks.md, Speed)
CPU_STRIDE4_COMPONENTS = 1


def refit_calibrate(src: Path, meta, frames, out: Path, method: str, target: str, ckpt: str, source: str,
                    roi: Optional[str] = None, log: Optional[TextIO] = None, fit_frames=None) -> Path:
    """The int8 graph with every encoder layer int8: the statistics read features whose int8 rounding
    their whitening would magnify (a part's map loses 0.02 pixel AUROC with the early layers int8),
    so they are fitted again on the features the int8 graph computes for the calibration frames (the
    training images: each level's distance keeps the mean it had on them, train.refit_statistics), the
    checkpoint `ckpt` (the one `src` was exported from) exported again with them and quantized with the
    same frames, whose encoder ranges do not change. `fit_frames` (default `frames`): the frames the
    statistics are fitted on, all of the training images read, those held out to compare too (the
    trained statistics saw them as well). For the cpu target a map that reads stride 4 takes
    CPU_STRIDE4_COMPONENTS Gaussians per level. Bottle: the cpu graph 2.0-2.4x ONNX Runtime fp32
    (1.6-1.9x with the early layers float), int8 against fp32 within 0.0005 (docs/benchmarks.md, Speed)."""
    import contextlib  # noqa: PLC0415
    import io  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    import onnx  # noqa: PLC0415

    from .calib.calibrate import calibrate  # noqa: PLC0415
    from .calib.qdq import stats_inputs  # noqa: PLC0415
    from .checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint  # noqa: PLC0415
    from .compare import int8_provider  # noqa: PLC0415
    from .config import NormStats  # noqa: PLC0415
    from .export.onnx_export import export_onnx  # noqa: PLC0415
    from .train import refit_statistics  # noqa: PLC0415

    ck = load_checkpoint(ckpt)
    model = model_from_checkpoint(ck, ckpt)
    if not _exported_from(ck, meta):
        raise HfrError(f"--refit {ckpt}: not the checkpoint {src} was exported from (its model or normalisation "
                       f"differs); give that checkpoint, or calibrate without --refit")
    if model.gauss is None:
        raise HfrError(f"--refit {ckpt}: its map has no feature statistics to refit (stats none); "
                       f"calibrate without --refit")
    root = _training_folder(ck)
    if root is not None and not _is_training_folder(source, root):  # where that path still means something here
        console.warn(f"--refit: {source} is not what {ckpt} was trained on ({ck['train']['data']}): the statistics are "
                     f"refitted and scaled on these frames as on training images; give --images the "
                     f"training images", log)
    x = view_inputs(list(frames if fit_frames is None else fit_frames), view_for(meta.extra.get("view"), roi, str(src)),
                    meta.image_size)
    console.say(f"refitting the statistics on the int8 graph's features of {len(x)} frames (--refit {ckpt})", log)
    components = CPU_STRIDE4_COMPONENTS if target == "cpu" and model.gauss.used[0] else None
    if components is not None and components != model.gauss.components:
        console.say(f"the cpu graph's statistics take {components} Gaussian(s) per level where {ckpt} has "
                    f"{model.gauss.components}: the int8 graph reads {components}/{model.gauss.components} of the "
                    f"stride-4 whitening matrices per frame (bottle: the int8 accuracy of {model.gauss.components})", log)
    if not model.gauss.used[0]:
        console.say("note: these statistics read strides 8 and 16 only (a texture or an aligned surface), where the "
                    "early layers' rounding costs little: --refit buys about 10 % of speed there for up to 0.012 image "
                    "AUROC (docs/benchmarks.md, Speed: the twelfth session)", log)
    fp32 = onnx.load(str(src), load_external_data=False)
    names, opset = stats_inputs(fp32), max(o.version for o in fp32.opset_import if o.domain in ("", "ai.onnx"))
    quiet = io.StringIO()  # the passes through temporary files say nothing of them
    with tempfile.TemporaryDirectory(prefix="hfr-refit-") as td, contextlib.redirect_stdout(quiet):
        first = calibrate(src, frames, Path(td) / "all.onnx", method, source=source, target=target, roi=roi,
                          early_float=False, log=quiet)
        tapped = onnx.load(str(first))
        tapped.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
        onnx.save(tapped, str(Path(td) / "tapped.onnx"))
        sides = {meta.image_size // s: lvl for lvl, s in enumerate((4, 8, 16))}
        levels = [None, None, None]
        for v in graph_values(Path(td) / "tapped.onnx", x, names, int8_provider(target)):
            if v.ndim == 4 and v.shape[-1] in sides:
                levels[sides[v.shape[-1]]] = v
        if any(u and f is None for f, u in zip(levels, model.gauss.used)):
            raise HfrError(f"{src}: the statistics' input features were not found in the graph ({', '.join(names)}); "
                           f"calibrate without --refit, and report this bug", 1)
        refit_statistics(model, levels, x, components=components)
        again = save_checkpoint(Path(td) / Path(ckpt).name, model, NormStats.from_dict(ck["norm"]), ck["train"])
        fp = export_onnx(str(again), str(Path(td) / "refit.onnx"), opset=opset, batch=meta.extra.get("batch", "dynamic"))
        out = calibrate(fp, frames, out, method, source=source, target=target, roi=roi, early_float=False, log=quiet)
    console.say(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB): every layer int8, statistics refitted", log)
    return out


def graph_values(path: Path, x, names, provider: str) -> list:
    """The values of the tensors `names` for images x (N, 3, S, S) in the graph at `path`, run on
    OpenVINO (`provider` "openvino") or ONNX Runtime's CPU provider; a fixed batch is filled up."""
    import numpy as np  # noqa: PLC0415

    from .base.contract import INPUT_NAME  # noqa: PLC0415
    from .base.images import fill_batch  # noqa: PLC0415

    if provider == "openvino":
        from .runtime.openvino import ov_core  # noqa: PLC0415 - the process's one Core (see there)

        core = ov_core()
        net = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        outs = [next(o for o in net.outputs if n in o.get_names()) for n in names]
        fixed = net.input(0).get_partial_shape()[0]
        b = fixed.get_length() if fixed.is_static else 8
        run = lambda chunk: [net(chunk)[o] for o in outs]  # noqa: E731
    else:
        import onnxruntime as ort  # noqa: PLC0415

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        dim = sess.get_inputs()[0].shape[0]
        b = dim if isinstance(dim, int) else 8
        run = lambda chunk: sess.run(names, {INPUT_NAME: chunk})  # noqa: E731
    got = []
    for i in range(0, len(x), b):
        chunk = x[i:i + b]
        got.append([v[:len(chunk)] for v in run(fill_batch(chunk, b))])
    return [np.concatenate([g[k] for g in got]) for k in range(len(names))]
