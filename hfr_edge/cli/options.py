"""What the commands share: one word per concept (MODEL, --json, -n/--frames, --images,
--fp16/--int8 = --precision), the help texts said once, and the old spellings kept working as
hidden aliases."""

from __future__ import annotations

import json
from typing import Optional, TypeVar

from ..base import console
from ..base.errors import HfrError
from ..base.fsio import write_json_atomic

T = TypeVar("T")

FORMAT_HELP = "Dataset format: auto | mvtec | folder | mnist | fashion-mnist | cifar10"
NORMAL_CLASS_HELP = "One-class formats (mnist, fashion-mnist, cifar10): the normal class, an index or a name"
TEST_HELP = "Folder format: the test folder, with good/ and one subfolder per defect type"
PROVIDER_HELP = ("ONNX Runtime provider (or OpenVINO) for a graph, PyTorch device for a checkpoint: "
                 "auto | tensorrt | cuda | cpu | openvino (auto: an int8 graph on OpenVINO where it is installed and "
                 "there is no GPU)")
JSON_HELP = "Also write the results as JSON to this file ('-': to stdout)"
FRAMES_HELP = "Calibration frames to use at most, sampled evenly"
IMAGES_HELP = "Calibration frames: a folder (recursive), a video file or a glob"
ROI_HELP = ("Region of interest x,y,w,h in pixels of the source frame (default: the model's own, from training; "
            "a camera that moved since)")
TILES_HELP = "Tiles RxC, e.g. 2x2 (default: the model's own, from training)"


def alias(value: T, old: Optional[T]) -> T:
    """The option's value, or what was given under its old (hidden) name."""
    return value if old is None else old


def precision(fp16: bool, int8: bool, given: Optional[str]) -> Optional[str]:
    """--fp16 / --int8 / --precision P as one value (None: none given); they must agree."""
    flags = [p for p, on in (("fp16", fp16), ("int8", int8)) if on]
    if len(flags) > 1:
        raise HfrError("--fp16 and --int8 are exclusive: choose one precision")
    if flags and given is not None and given != flags[0]:
        raise HfrError(f"--{flags[0]} and --precision {given} disagree: give one of them")
    return flags[0] if flags else given


def write_json(path: str, obj: dict, to_stdout: bool = False) -> None:
    """--json PATH: written atomically, then 'wrote PATH' (on stdout where the command's results go
    there); --json -: the JSON itself on stdout."""
    if path == "-":
        console.result(json.dumps(obj, indent=2, sort_keys=True))
        return
    write_json_atomic(path, obj)
    message = f"wrote {console.show(path)}"
    if to_stdout:
        console.result(message)
    else:
        console.say(message)
