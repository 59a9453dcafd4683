"""The precision variants of an fp32 graph, each made by its own stage: fp16 by export's conversion;
int8 by calib (the Q/DQ graph) and then compare (fp32 vs int8 on held-out frames, and on a labelled
dataset if given). The one helper `calibrate`, `build --fp16/--int8` and `demo` go through."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, TextIO

from .base import console
from .base.errors import HfrError
from .base.fsio import write_json_atomic
from .base.view import view_for, view_inputs
from .calib.defaults import DEFAULT_METHOD


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
                    eval_test: Optional[str] = None, roi: Optional[str] = None) -> Path:
    """Make `<stem>.int8.onnx` (+ JSON) from frames of `images` and, with `report`, `<stem>.int8.calib.json`:
    fp32 vs int8 on the frames held out of calibration (none when `eval_data` is given), and with
    `eval_data` on its test set (`eval_test`: the test folder of a folder dataset). Returns the int8 graph's path."""
    from .calib.calibrate import calibrate, check_source, holdout_split  # noqa: PLC0415 - onnx
    from .calib.frames import collect_frames  # noqa: PLC0415
    from .compare import compare_frames, compare_on_dataset, print_comparison, report_path  # noqa: PLC0415

    if eval_test and not eval_data:
        raise HfrError(f"--test {eval_test} applies to --eval DATA (a folder of good images); add --eval")
    src, out, meta = check_source(onnx_path, out_path, method)  # before reading any frame
    frames, _ = collect_frames(images, n, warn=lambda m: console.warn(m, log))
    cal, hold = holdout_split(len(frames), keep_out=not eval_data)
    out = calibrate(src, [frames[i] for i in cal], out, method, source=str(images), log=log, roi=roi)
    if report:
        rep = {"model": str(src), "int8": str(out), "method": method, "calibration_frames": len(cal)}
        if hold:
            view = view_for(meta.extra.get("view"), roi, str(src))
            rep["holdout"] = compare_frames(str(src), str(out), view_inputs([frames[i] for i in hold], view, meta.image_size))
        if eval_data:
            rep["eval"] = compare_on_dataset(str(src), str(out), eval_data, eval_format, eval_normal_class, eval_test,
                                             roi=roi)
        rpath = report_path(out)
        write_json_atomic(rpath, rep)
        print_comparison(rep, log)
        console.say(f"wrote {rpath}", log)
    return out
