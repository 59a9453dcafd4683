"""Does batching pay, as a user measures it (issue 16: `bench --batch 8` images/s >= 1.3x batch 1's)?

Each graph is timed by `hfr-edge bench MODEL [--provider P] --batch B --json`, the command itself in
its own process, batch 1 and batch 8 alternating for --pairs pairs (this VM's speed drifts between
minutes, so each ratio is taken within its pair and the table shows their range):

    model.onnx             fp32, `--provider auto` (ONNX Runtime on a CPU) and `--provider openvino`
    model.int8.onnx        the TensorRT Q/DQ graph (`calibrate`), auto: OpenVINO on a GPU-less machine
    model.int8cpu.onnx     the CPU's int8 graph (`calibrate --target cpu --refit auto`), auto: OpenVINO

plus one row that is not a product path, the ceiling of any runner arrangement for the fp32 graph
on ONNX Runtime: batch 8 as two single-thread sessions running 4 images each on their own core,
against the product's session (one intra-op thread per core, spinning) on one image, in turns.

    python benchmarks/batching.py --ckpt bottle.pt [--pairs 4] [--work DIR]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from common import DATASETS, need, table, write_json

ap = argparse.ArgumentParser()
ap.add_argument("--ckpt", required=True, help="a trained checkpoint (e.g. `hfr-edge train bottle --seed 2`)")
ap.add_argument("--pairs", type=int, default=4, help="batch 1 / batch 8 pairs per graph")
ap.add_argument("--iters", type=int, default=100, help="timed inferences per bench call")
ap.add_argument("--work", help="folder for the graphs (default: a temporary one; kept graphs are reused)")
ap.add_argument("--name", default="batching.json", help="results file in benchmarks/results/")
args = ap.parse_args()
bottle = need(DATASETS / "mvtec_ad" / "bottle", "MVTec AD bottle")
HFR = [sys.executable, "-m", "hfr_edge"]


def make_graphs(ckpt: Path, work: Path) -> dict:
    from hfr_edge.export.onnx_export import export_onnx
    from hfr_edge.variants import calibrate_model

    fp32 = work / "model.onnx"
    if not fp32.is_file():
        export_onnx(str(ckpt), str(fp32))
    graphs = {"fp32": fp32}
    for name, target in (("int8", "tensorrt"), ("int8cpu", "cpu")):
        out = work / f"model.{name}.onnx"
        if not out.is_file():
            calibrate_model(fp32, str(bottle / "train" / "good"), out, n=100, target=target, speed=False,
                            refit=str(ckpt))  # as `--refit auto` picks for a part's graph
        graphs[name] = out
    return graphs


def bench(path: Path, provider: str, batch: int, out: Path) -> dict:
    cmd = [*HFR, "bench", str(path), "--provider", provider, "--batch", str(batch), "--iters", str(args.iters),
           "--warmup", "10", "--json", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def streams_ceiling(path: Path, rounds: int = 6, slot_s: float = 1.0) -> dict:
    """images/s of the fp32 graph on ONNX Runtime: the product's session at batch 1 against batch 8
    split over one single-thread session per core (no product path runs this: the most any
    arrangement of threads gets from a batch on these cores), in turns of slot_s."""
    import onnxruntime as ort

    from hfr_edge.runtime.onnxrt import physical_cores

    def session(threads: int):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    cores = physical_cores()
    whole, single = session(cores), session(1)
    x = np.random.default_rng(0).random((8, 3, *whole.get_inputs()[0].shape[2:]), dtype=np.float32)
    pool = ThreadPoolExecutor(cores)
    steps = {"batch1": (lambda: whole.run(None, {"image": x[:1]}), 1),
             "streams8": (lambda: list(pool.map(lambda c: single.run(None, {"image": c}), np.array_split(x, cores))), 8)}
    rate = {k: [] for k in steps}
    for _ in range(rounds):
        for k, (step, n) in steps.items():
            step()
            done, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < slot_s:
                step()
                done += n
            rate[k].append(done / (time.perf_counter() - t0))
    pool.shutdown()
    b1, b8 = (float(np.median(rate[k])) for k in steps)
    return {"b1_fps": b1, "b8_fps": b8, "ratio": b8 / b1, "cores": cores}


def main() -> None:
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="hfr_batching_"))
    work.mkdir(parents=True, exist_ok=True)
    graphs = make_graphs(Path(args.ckpt), work)
    cells = [("fp32", "auto"), ("fp32", "openvino"), ("int8", "auto"), ("int8cpu", "auto")]
    rows = []
    for graph, provider in cells:
        pairs = []
        for i in range(args.pairs):
            r1, r8 = (bench(graphs[graph], provider, b, work / f"{graph}-{provider}-b{b}-{i}.json") for b in (1, 8))
            pairs.append({"b1_fps": r1["throughput_fps"], "b8_fps": r8["throughput_fps"], "b1_p50_ms": r1["p50_ms"],
                          "ratio": r8["throughput_fps"] / r1["throughput_fps"], "backend": r8["backend"]})
        ratios = [p["ratio"] for p in pairs]
        rows.append({"graph": graphs[graph].name, "provider": provider, "backend": pairs[0]["backend"],
                     "b1_fps": float(np.median([p["b1_fps"] for p in pairs])),
                     "b8_fps": float(np.median([p["b8_fps"] for p in pairs])), "ratio_median": float(np.median(ratios)),
                     "ratio_min": min(ratios), "ratio_max": max(ratios), "pairs": pairs})
        print(f"{graphs[graph].name} --provider {provider}: batch 8 / batch 1 {min(ratios):.2f}-{max(ratios):.2f}",
              file=sys.stderr)
    ceiling = streams_ceiling(graphs["fp32"])
    rows.append({"graph": "model.onnx", "provider": f"cpu, {ceiling['cores']} single-thread streams (not a product path)",
                 "backend": "onnxruntime/CPUExecutionProvider", "b1_fps": ceiling["b1_fps"], "b8_fps": ceiling["b8_fps"],
                 "ratio_median": ceiling["ratio"], "ratio_min": ceiling["ratio"], "ratio_max": ceiling["ratio"]})
    for r in rows:
        r["span"] = f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f}"
        r["met"] = "yes" if r["ratio_min"] >= 1.3 else ("no" if r["ratio_max"] < 1.3 else "in part")
    print(table(rows, [("graph", "graph", None), ("provider", "--provider", None), ("backend", "backend", None),
                       ("b1_fps", "b1 img/s", "{:.1f}"), ("b8_fps", "b8 img/s", "{:.1f}"),
                       ("ratio_median", "b8/b1", "{:.2f}"), ("span", "pairs", None), ("met", ">= 1.3", None)]))
    write_json(args.name, {"command": "hfr-edge bench MODEL --provider P --batch 1|8 --iters "
                                      f"{args.iters} --warmup 10, alternating, {args.pairs} pairs",
                           "ckpt": Path(args.ckpt).name, "rows": rows})


if __name__ == "__main__":
    main()
