"""Shared by the benchmark scripts: where the data is, the machine, a table printer, JSON out."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("HFR_EDGE_DATASETS", REPO.parent / "shared" / "datasets"))
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO))


def need(path: Path, what: str) -> Path:
    if not path.exists():
        print(f"skipped: {what} not found at {path} (set HFR_EDGE_DATASETS)", file=sys.stderr)
        sys.exit(0)
    return path


def machine() -> dict:
    import onnxruntime as ort

    from hfr_edge.doctor import cpuinfo

    cpu, flags = cpuinfo()
    isa = sorted({"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"} & flags)  # int8 speed depends on these
    d = {"cpu": cpu or "", "isa": isa, "cores": os.cpu_count(), "python": platform.python_version(),
         "onnxruntime": ort.__version__}
    try:
        import torch

        d["torch"] = torch.__version__
    except ImportError:
        pass
    return d


def table(rows, cols) -> str:
    """rows: list of dicts; cols: list of (key, header, format)."""
    cells = [[h for _, h, _ in cols]]
    for r in rows:
        cells.append([("-" if r.get(k) is None else (f.format(r[k]) if f else str(r[k]))) for k, _, f in cols])
    w = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = ["  ".join(c[i].rjust(w[i]) if i else c[i].ljust(w[i]) for i in range(len(cols))) for c in cells]
    lines.insert(1, "  ".join("-" * x for x in w))
    return "\n".join(lines)


def write_json(name: str, obj) -> Path:
    from hfr_edge.base.fsio import write_json_atomic

    RESULTS.mkdir(parents=True, exist_ok=True)
    p = RESULTS / name
    write_json_atomic(p, {"machine": machine(), **obj})
    print(f"wrote {p}", file=sys.stderr)
    return p


def ort_session(path):
    """An ONNX Runtime CPU session as the suite measures every method: all graph optimisations,
    default threads, no spinning (spinning threads would steal the shared cores). `path`: an ONNX
    file, or a serialized model (bytes)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(path if isinstance(path, bytes) else str(path), so, providers=["CPUExecutionProvider"])


def p50_ms(paths: dict, rounds: int = 20, per_round: int = 5, warmup: int = 3) -> dict:
    """Median latency (ms) of batch-1 inference for each ONNX file in {name: path}, the files
    interleaved round by round so the VM's drifting clock hits them alike."""
    import numpy as np

    sessions, inputs, times = {}, {}, {}
    for k, p in paths.items():
        s = ort_session(p)
        i = s.get_inputs()[0]
        shape = [1 if not isinstance(d, int) else d for d in i.shape]
        inputs[k] = {i.name: np.random.default_rng(0).random(shape, np.float32)}
        sessions[k], times[k] = s, []
        for _ in range(warmup):
            s.run(None, inputs[k])
    for _ in range(rounds):
        for k, s in sessions.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                s.run(None, inputs[k])
                times[k].append(1000 * (time.perf_counter() - t0))
    return {k: float(np.median(v)) for k, v in times.items()}


SUITE_JSON = RESULTS / "suite.json"
SUITE_KEYS = ("set", "method", "seed", "image_auroc", "pixel_auroc", "aupro", "train_s", "p50_ms")


def read_suite(path: Path = SUITE_JSON, whole: bool = False):
    """The rows of a suite JSON file (or the whole object); [] / {} when there is none."""
    import json

    obj = json.loads(Path(path).read_text()) if Path(path).is_file() else {}
    return obj if whole else obj.get("rows", [])


def merge_suite(rows: list, extra: Optional[dict] = None, path: Path = SUITE_JSON) -> Path:
    """Add rows to the suite JSON (benchmarks/results/suite.json), replacing those of the same set,
    method and seed; other top-level entries (each script's settings) are kept unless `extra`
    replaces them."""
    from hfr_edge.base.fsio import write_json_atomic

    key = lambda r: (r["set"], r["method"], r["seed"])  # noqa: E731
    new = {key(r) for r in rows}
    old = read_suite(path, whole=True)
    kept = [r for r in old.get("rows", []) if key(r) not in new]
    keep = {k: v for k, v in old.items() if k not in ("machine", "rows")}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(path), {"machine": machine(), **keep, **(extra or {}), "rows": sorted(kept + rows, key=key)})
    print(f"wrote {path}", file=sys.stderr)
    return Path(path)


def synthetic_model(work: Path, name: str, size: int, epochs: int, **model_fields) -> Path:
    """A model trained `epochs` on a small synthetic dataset at `size` px and exported (cached in
    `work` as NAME.onnx): a real graph's cost for the serving, soak and multi-camera benchmarks."""
    out = work / f"{name}.onnx"
    if out.is_file():
        return out
    from hfr_edge.checkpoint import save_checkpoint
    from hfr_edge.config import ModelConfig, TrainConfig
    from hfr_edge.data import load_items, open_dataset
    from hfr_edge.export.onnx_export import export_onnx
    from hfr_edge.synthetic import make_dataset
    from hfr_edge.train import fit

    root = make_dataset(work / f"parts{size}", size=size, n_train=12, n_good_test=2, n_per_defect=1)
    x, _, _, _ = load_items(open_dataset(str(root)).train, size)
    model, stats, summary = fit(x[:10], x[10:], ModelConfig(image_size=size, **model_fields),
                                TrainConfig(epochs=epochs, batch_size=4), progress=False)
    save_checkpoint(work / f"{name}.pt", model, stats, summary)
    return export_onnx(str(work / f"{name}.pt"), str(out))
