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
                    roi: Optional[str] = None) -> Path:
    """Make `<stem>.int8.onnx` (`target` cpu: `<stem>.int8cpu.onnx`) (+ JSON) from frames of `images`
    and, with `report`, `<stem>.int8[cpu].calib.json`: fp32 vs int8 on the frames held out of
    calibration (none when `eval_data` is given), with `eval_data` on its test set (`eval_test`: the
    test folder of a folder dataset), and for the cpu target (with `speed`, where OpenVINO is
    installed) its speed against the fp32 graph on ONNX Runtime. Frames are cut as the graph's view
    says (`roi` replacing its ROI). Returns the int8 graph's path."""
    from .calib.calibrate import calibrate, check_source, holdout_split  # noqa: PLC0415 - onnx
    from .calib.frames import collect_frames  # noqa: PLC0415
    from .compare import (compare_frames, compare_on_dataset, int8_provider, print_comparison,  # noqa: PLC0415
                          report_path, speed_vs_fp32)

    if eval_test and not eval_data:
        raise HfrError(f"--test {eval_test} applies to --eval DATA (a folder of good images); add --eval")
    src, out, meta = check_source(onnx_path, out_path, method, target)  # before reading any frame
    frames, _ = collect_frames(images, n, warn=lambda m: console.warn(m, log))
    cal, hold = holdout_split(len(frames), keep_out=not eval_data)
    out = calibrate(src, [frames[i] for i in cal], out, method, source=str(images), log=log, target=target, roi=roi)
    if report:
        provider8 = int8_provider(target)
        if target == "cpu" and provider8 != "openvino":
            console.warn("openvino is not installed: the cpu int8 graph is judged on ONNX Runtime and its speed "
                         "not measured (pip install openvino)", log)
        rep = {"model": str(src), "int8": str(out), "method": method, "target": target,
               "calibration_frames": len(cal), "int8_provider": provider8}
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
