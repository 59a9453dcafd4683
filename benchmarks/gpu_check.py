"""Steps of gpu_check.sh, one per call (each writes WORK/<step>.json; `report` merges them).

    python benchmarks/gpu_check.py probe   WORK   # TensorRT, CUDA binding, GPU, ONNX Runtime providers, torch
    python benchmarks/gpu_check.py data    WORK   # a small synthetic MVTec-layout dataset
    python benchmarks/gpu_check.py torch   WORK   # PyTorch CUDA fp32/fp16 latency of the default model
    python benchmarks/gpu_check.py ort     WORK   # ONNX Runtime's CUDA / TensorRT providers on model.onnx vs CPU
    python benchmarks/gpu_check.py compare WORK   # each engine vs ONNX Runtime on the CPU, same frames
    python benchmarks/gpu_check.py inspect WORK   # each engine's layer precisions (TensorRT's engine inspector)
    python benchmarks/gpu_check.py bench   WORK   # each engine at batch 1 and 8
    python benchmarks/gpu_check.py report  WORK OUT_DIR  # gpu_check.json, and a table (or one line)
"""

from __future__ import annotations

import collections
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ENGINES = {"fp32": "fp32.engine", "fp16": "fp16.engine", "int8": "int8.engine"}
# engine -> the graphs it is compared with on the CPU: its own source graph first
REFERENCES = {"fp32": ("model.onnx",), "fp16": ("model.onnx", "model.fp16.onnx"), "int8": ("model.int8.onnx", "model.onnx")}


def _save(work: Path, step: str, obj) -> int:
    (work / f"{step}.json").write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    return 0


def probe(work: Path) -> int:
    from hfr_edge.runtime.cuda import binding_available
    from hfr_edge.runtime.trtinfo import describe_missing, gpu_info, trt_version

    res = {"tensorrt": trt_version(), "cuda_binding": binding_available(), "gpu": gpu_info(),
           "missing": describe_missing()}
    try:
        import onnxruntime as ort

        res["onnxruntime"] = {"version": ort.__version__, "providers": ort.get_available_providers()}
    except ImportError:
        res["onnxruntime"] = None
    try:
        import torch

        res["torch"] = {"version": torch.__version__, "cuda": torch.cuda.is_available()}
    except ImportError:
        res["torch"] = None
    gpu_providers = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
    res["ort_gpu"] = bool(gpu_providers & set((res["onnxruntime"] or {}).get("providers", [])))
    res["torch_cuda"] = bool((res["torch"] or {}).get("cuda"))
    res["can_build"] = bool(res["tensorrt"] and res["gpu"] and res["cuda_binding"] and res["torch"])
    return _save(work, "probe", res)


def data(work: Path) -> int:
    from hfr_edge.synthetic import make_dataset

    make_dataset(work / "parts", size=256, n_train=48, n_good_test=8, n_per_defect=4)
    return 0


def torch_latency(work: Path) -> int:
    import torch

    res = {"torch": torch.__version__, "cuda": torch.version.cuda}
    if not torch.cuda.is_available():
        res["error"] = "torch.cuda.is_available() is False"
        return _save(work, "torch", res)
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
    res.update(device=torch.cuda.get_device_name(0), image_size=cfg.image_size, runs={})
    for precision in ("fp32", "fp16"):
        for batch in (1, 8):
            x = torch.rand(batch, 3, cfg.image_size, cfg.image_size, device="cuda")
            times = []
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=precision == "fp16"):
                for i in range(60):  # 10 warm-up runs, then 50 timed
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    model(x)
                    torch.cuda.synchronize()
                    if i >= 10:
                        times.append((time.perf_counter() - t0) * 1e3)
            res["runs"][f"{precision}_b{batch}"] = {"median_ms": round(statistics.median(times), 3)}
    return _save(work, "torch", res)


def _frames(work: Path, size: int) -> np.ndarray:
    from hfr_edge.base.images import preprocess, read_image

    paths = sorted((work / "parts" / "test").glob("*/*.png"))
    return preprocess([read_image(p) for p in paths], size)


def _predict(path: Path, x: np.ndarray, provider: str = "cpu", batch: int = 8):
    from hfr_edge.runtime.runner import open_runner

    maps, scores = [], []
    with open_runner(str(path), provider=provider) as r:
        backend = r.backend
        for i in range(0, len(x), batch):
            out = r.infer({"image": np.ascontiguousarray(x[i:i + batch])})
            maps.append(out["anomaly_map"])
            scores.append(out["score"])
    return np.concatenate(maps), np.concatenate(scores), backend


def _agree(m, s, ref_m, ref_s) -> dict:
    return {"max_map_diff": float(np.abs(m - ref_m).max()), "max_score_diff": float(np.abs(s - ref_s).max()),
            "nonfinite": int((~np.isfinite(m)).sum() + (~np.isfinite(s)).sum()),
            "verdict_flips": int(((s >= 0.5) != (ref_s >= 0.5)).sum()), "frames": int(len(s))}


def ort_providers(work: Path) -> int:
    import onnxruntime as ort

    from hfr_edge.base.artifact import load_meta

    res = {"version": ort.__version__, "providers": ort.get_available_providers(), "runs": {}}
    graph = work / "model.onnx"
    if not graph.is_file():
        res["error"] = "no model.onnx (the model step failed)"
        return _save(work, "ort", res)
    x = _frames(work, load_meta(graph).image_size)
    ref_m, ref_s, _ = _predict(graph, x)
    for provider, graphs in (("cuda", ("model.onnx", "model.fp16.onnx")),
                             ("tensorrt", ("model.onnx", "model.fp16.onnx", "model.int8.onnx"))):
        if {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}[provider] not in res["providers"]:
            continue
        for name in graphs:
            if not (work / name).is_file():
                continue
            key = f"{provider}:{name}"
            try:
                t0 = time.perf_counter()
                m, s, backend = _predict(work / name, x, provider)
                res["runs"][key] = {"backend": backend, "first_run_s": round(time.perf_counter() - t0, 2),
                                    "vs_cpu_fp32": _agree(m, s, ref_m, ref_s)}
            except Exception as exc:  # noqa: BLE001 - a failing provider is a finding, not the end of the check
                res["runs"][key] = {"error": f"{type(exc).__name__}: {exc}"}
    return _save(work, "ort", res)


def compare(work: Path) -> int:
    from hfr_edge.base.artifact import load_meta

    res = {}
    x = _frames(work, load_meta(work / "model.onnx").image_size)
    cpu = {g: _predict(work / g, x)[:2] for g in {g for refs in REFERENCES.values() for g in refs}
           if (work / g).is_file()}
    for precision, engine in ENGINES.items():
        if not (work / engine).is_file():
            res[precision] = {"error": f"{engine} was not built (see build.log)"}
            continue
        try:
            m, s, backend = _predict(work / engine, x)
        except Exception as exc:  # noqa: BLE001
            res[precision] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        res[precision] = {"backend": backend, **{f"vs_{g}": _agree(m, s, *cpu[g]) for g in REFERENCES[precision] if g in cpu}}
    return _save(work, "compare", res)


def inspect(work: Path) -> int:
    import tensorrt as trt

    res = {}
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    for precision, engine in ENGINES.items():
        if not (work / engine).is_file():
            continue
        eng = runtime.deserialize_cuda_engine((work / engine).read_bytes())
        info = json.loads(eng.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
        (work / f"{precision}.layers.json").write_text(json.dumps(info, indent=1))
        layers = [layer for layer in info.get("Layers", []) if isinstance(layer, dict)]
        kinds = collections.Counter()
        tail = collections.Counter()
        for layer in layers:
            types = {o.get("Format/Datatype", "?").split()[-1] for o in layer.get("Outputs", [])} or {"?"}
            kinds.update(types)
            if not str(layer.get("Name", "")).startswith("/model/"):
                tail.update(types)
        res[precision] = {"layers": len(layers), "output_types": dict(kinds), "tail_output_types": dict(tail)}
    return _save(work, "inspect", res)


def bench_engines(work: Path) -> int:
    from hfr_edge.runtime.bench import bench

    res = {}
    for precision, engine in ENGINES.items():
        for batch in (1, 8):
            if (work / engine).is_file():
                try:
                    b = bench(str(work / engine), batch=batch, iterations=100, warmup=10)
                    res[f"{precision}_b{batch}"] = {k: b[k] for k in ("p50_ms", "p90_ms", "throughput_fps", "h2d_ms",
                                                                      "compute_ms", "d2h_ms") if k in b}
                except Exception as exc:  # noqa: BLE001
                    res[f"{precision}_b{batch}"] = {"error": f"{type(exc).__name__}: {exc}"}
    return _save(work, "bench", res)


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def report(work: Path, out_dir: Path) -> int:
    steps = {}
    for line in (work / "steps.tsv").read_text().splitlines():
        name, seconds, rc = line.split("\t")
        steps[name] = {"seconds": float(seconds), "exit_code": int(rc)}
    res = {"steps": steps, **{k: _load(work / f"{k}.json") for k in
                              ("probe", "torch", "ort", "compare", "inspect", "bench")}}
    res["pytest_gpu"] = (work / "pytest.log").read_text().strip().splitlines()[-1:] if (work / "pytest.log").exists() else None
    out_dir.mkdir(parents=True, exist_ok=True)
    for layers in work.glob("*.layers.json"):
        (out_dir / layers.name).write_text(layers.read_text())
    out = out_dir / "gpu_check.json"
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
    tmp.replace(out)
    probe_ = res["probe"] or {}
    if not probe_.get("can_build"):
        print(f"gpu_check: could not build or compare TensorRT engines: {_why_not(probe_)}; measured instead: "
              f"{_measured(res)}; wrote {out}")
        return 0
    _print_tables(res)
    print(f"wrote {out}")
    return 0


def _why_not(p: dict) -> str:
    why = []
    if not p.get("gpu"):
        why.append("no NVIDIA GPU (no CUDA device via pycuda or cuda-python, no Jetson, no nvidia-smi)")
    if not p.get("tensorrt"):
        why.append("no TensorRT (the tensorrt module is not importable)")
    if not p.get("cuda_binding"):
        why.append("no CUDA binding (neither pycuda nor cuda-python)")
    return ", ".join(why) or "the probe step failed"


def _measured(res: dict) -> str:
    p = res["probe"] or {}
    o, t = p.get("onnxruntime") or {}, res["torch"] or {"torch": (p.get("torch") or {}).get("version")}
    parts = [f"onnxruntime {o.get('version')} providers {'+'.join(o.get('providers') or [])}"]
    runs = (res["ort"] or {}).get("runs") or {}
    parts.append(f"{len(runs)} ONNX Runtime GPU-provider runs" if runs else "no ONNX Runtime GPU provider")
    parts.append(f"PyTorch {t.get('torch')} CUDA runs {sorted(t['runs'])}" if t.get("runs") else
                 f"PyTorch {t.get('torch') or 'absent'} without CUDA")
    return ", ".join(parts)


def _print_tables(res: dict) -> None:
    p = res["probe"]
    print(f"TensorRT {p['tensorrt']} on {p['gpu'].get('name')} via {p['cuda_binding']}")
    print("\nstep            seconds  exit")
    for name, s in res["steps"].items():
        print(f"{name:<15} {s['seconds']:>7.1f}  {s['exit_code']}")
    print("\nengine  vs graph (CPU)       max|map|  max|score|  non-finite  flips")
    for precision, c in (res["compare"] or {}).items():
        if "error" in c:
            print(f"{precision:<7} {c['error']}")
        for key, a in c.items():
            if key.startswith("vs_"):
                print(f"{precision:<7} {key[3:]:<20} {a['max_map_diff']:>8.2e} {a['max_score_diff']:>10.2e} "
                      f"{a['nonfinite']:>10} {a['verdict_flips']:>6}")
    print("\nengine  layers  output types / fusion tail")
    for precision, i in (res["inspect"] or {}).items():
        print(f"{precision:<7} {i['layers']:>6}  {i['output_types']} / {i['tail_output_types']}")
    print("\nbench          p50 ms   images/s")
    for key, b in (res["bench"] or {}).items():
        print(f"{key:<12} {b.get('p50_ms', float('nan')):>8.3f} {b.get('throughput_fps', float('nan')):>10.1f}"
              if "error" not in b else f"{key:<12} {b['error']}")
    print(f"\npytest -m gpu: {' '.join(res['pytest_gpu'] or ['not run'])}")


STEPS = {"probe": probe, "data": data, "torch": torch_latency, "ort": ort_providers, "compare": compare,
         "inspect": inspect, "bench": bench_engines}


def main(argv) -> int:
    if len(argv) == 2 and argv[0] in STEPS:
        return STEPS[argv[0]](Path(argv[1]))
    if len(argv) == 3 and argv[0] == "report":
        return report(Path(argv[1]), Path(argv[2]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
