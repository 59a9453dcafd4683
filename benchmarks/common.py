"""Shared by the benchmark scripts: where the data is, the machine, a table printer, JSON out."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

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
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime as ort

    d = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "onnxruntime": ort.__version__}
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
