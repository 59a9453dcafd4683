"""Helper of gpu_check.sh (a GPU machine without TensorRT): one step per call.

    python benchmarks/gpu_check.py torch  OUT.json   # PyTorch CUDA fp32/fp16 latency, batch 1 and 8
    python benchmarks/gpu_check.py ort    OUT.json   # ONNX Runtime version and providers
    python benchmarks/gpu_check.py doctor OUT.json   # doctor's findings where typer (the CLI) is missing
    python benchmarks/gpu_check.py report WORKDIR OUT.json  # merge the steps, print the table
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path


def torch_latency(out: Path) -> int:
    import torch

    res = {"torch": torch.__version__, "cuda": torch.version.cuda}
    if not torch.cuda.is_available():
        res["error"] = "torch.cuda.is_available() is False"
        out.write_text(json.dumps(res, indent=2))
        return 1
    from hfr_edge.config import ModelConfig, NormStats
    from hfr_edge.base.errors import HfrError
    from hfr_edge.model import HFRAE, DeployModel

    cfg = ModelConfig()
    try:
        net, res["pretrained"] = HFRAE(cfg), True
    except HfrError as exc:  # weights package missing and not installable offline: latency is the same
        net, res["pretrained"] = HFRAE(cfg, pretrained=False), False
        res["pretrained_note"] = f"untrained encoder weights ({exc})"
    model = DeployModel(net, NormStats(threshold=1.0, low=0.0)).cuda().eval()
    res.update(device=torch.cuda.get_device_name(0), image_size=cfg.image_size, backbone=cfg.backbone, runs={})
    for precision in ("fp32", "fp16"):
        for batch in (1, 8):
            x = torch.rand(batch, 3, cfg.image_size, cfg.image_size, device="cuda")
            times = []
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=precision == "fp16"):
                for i in range(60):  # 10 warm-up runs, then 50 timed
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    amap, score = model(x)
                    torch.cuda.synchronize()
                    if i >= 10:
                        times.append((time.perf_counter() - t0) * 1e3)
            assert amap.shape == (batch, 1, cfg.image_size, cfg.image_size) and score.shape == (batch,)
            ms = statistics.median(times)
            res["runs"][f"{precision}_b{batch}"] = {"median_ms": round(ms, 3), "p90_ms": round(sorted(times)[44], 3),
                                                    "images_per_s": round(batch * 1e3 / ms, 1)}
    out.write_text(json.dumps(res, indent=2))
    return 0


def ort_info(out: Path) -> int:
    import onnxruntime as ort

    out.write_text(json.dumps({"version": ort.__version__, "providers": ort.get_available_providers(),
                               "device": ort.get_device()}, indent=2))
    return 0


def doctor_info(out: Path) -> int:
    import importlib.util
    import types

    if importlib.util.find_spec("typer") is None:  # the CLI's only use of it is option declarations
        stub = types.ModuleType("typer")
        stub.Option = stub.Argument = lambda *a, **k: None
        sys.modules["typer"] = stub
    from hfr_edge.doctor import collect, rows

    info = collect()
    for label, text in rows(info):
        print(f"{label:<14} {text}")
    out.write_text(json.dumps(info, indent=2, sort_keys=True))
    return 0


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"error": f"{path.name}: {exc}"}


def report(work: Path, out: Path) -> int:
    steps = {}
    for line in (work / "steps.tsv").read_text().splitlines():
        name, seconds, rc = line.split("\t")
        steps[name] = {"seconds": float(seconds), "exit_code": int(rc)}
    res = {"steps": steps, "nvidia_smi": (work / "nvidia_smi.txt").read_text().strip() if (work / "nvidia_smi.txt").exists() else None,
           "torch": _load(work / "torch.json"), "onnxruntime": _load(work / "ort.json"), "doctor": _load(work / "doctor.json")}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
    tmp.replace(out)

    print("\nstep           seconds  exit")
    for name, s in steps.items():
        print(f"{name:<14} {s['seconds']:>7.1f}  {s['exit_code']}")
    t = res["torch"]
    print(f"\nPyTorch {t.get('torch')} CUDA {t.get('cuda')} on {t.get('device', '?')}: {t.get('backbone', '')} "
          f"{t.get('image_size', '')}px, pretrained={t.get('pretrained')}")
    if t.get("pretrained_note"):
        print(f"  note: {t['pretrained_note']}")
    print("run        median ms   p90 ms   images/s")
    for name, r in (t.get("runs") or {}).items():
        print(f"{name:<10} {r['median_ms']:>9.2f} {r['p90_ms']:>8.2f} {r['images_per_s']:>10.1f}")
    if "error" in t:
        print(f"  torch step: {t['error']}")
    o = res["onnxruntime"]
    print(f"\nonnxruntime {o.get('version')}: {', '.join(o.get('providers') or [])} {o.get('error', '')}")
    print(f"wrote {out}")
    return 0


def main(argv) -> int:
    if len(argv) == 2 and argv[0] == "torch":
        return torch_latency(Path(argv[1]))
    if len(argv) == 2 and argv[0] == "ort":
        return ort_info(Path(argv[1]))
    if len(argv) == 2 and argv[0] == "doctor":
        return doctor_info(Path(argv[1]))
    if len(argv) == 3 and argv[0] == "report":
        return report(Path(argv[1]), Path(argv[2]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
