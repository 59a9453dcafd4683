"""Speed of every graph on both CPU runtimes, in ONE interleaved run (issue 16):

graphs   encoder-only (the frozen encoder and its pre-processing, exported alone), whole fp32,
         fp16, int8 (TensorRT Q/DQ, `calibrate`), int8 cpu (`calibrate --target cpu`), and the
         `--preset light` graph at the same size (untrained weights: its cost only)
runtimes ONNX Runtime CPU (the product's runner: one intra-op thread per physical core, set
         explicitly; without thread spinning) and OpenVINO (the product's runner: one latency request
         for an image, a batch split over its throughput streams); plus ORT's own default threading
         (pinned) and both runtimes on one thread, batch 1
figures  p50, p99, images/s at batch 1 and 8, GFLOP per image (counted from the graph), GFLOP/s;
         ratios: whole / encoder (ORT fp32, batch 1), int8 cpu on OpenVINO / fp32 on ORT (default
         threads and one thread each), batch 8 / batch 1; with --accuracy, pixel AUROC of both int8 graphs against fp32 on bottle's test set.

Every cell takes turns of --slot seconds, --rounds times (runtime.bench.interleaved): this VM's
speed drifts by tens of percent and other jobs share its CPUs, so ratios hold, absolute ms do not.

    python benchmarks/speed.py --ckpt /tmp/speed_bottle.pt [--rounds 12] [--slot 0.3] [--no-accuracy] [--refit]
                               [--beside previous=/tmp/previous_default.pt]
"""

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from common import DATASETS, need, table, write_json

ap = argparse.ArgumentParser()
ap.add_argument("--ckpt", help="checkpoint (default: train one on bottle with the defaults first; the int8 "
                "graphs' accuracy needs a trained model: a 5-epoch one lost 0.0017 pixel AUROC where an 8-epoch "
                "one lost 0.009)")
ap.add_argument("--rounds", type=int, default=12)
ap.add_argument("--slot", type=float, default=0.3, help="seconds per cell per round")
ap.add_argument("--no-accuracy", dest="accuracy", action="store_false", help="skip the int8 graphs' bottle eval")
ap.add_argument("--work", help="folder for the graphs (default: a temporary one)")
ap.add_argument("--no-light", dest="light", action="store_false",
                help="skip the `--preset light` graph (untrained weights: its cost, not its accuracy)")
ap.add_argument("--beside", action="append", default=[], metavar="NAME=CKPT",
                help="another checkpoint's fp32 graph timed beside (e.g. the previous default), repeatable")
ap.add_argument("--name", default="speed.json", help="results file in benchmarks/results/")
ap.add_argument("--refit", action="store_true", help="also the cpu int8 graph of `calibrate --refit CKPT` (every "
                "layer int8, the statistics refitted on it: what `--refit auto` gives a part's graph), timed on "
                "OpenVINO beside the others; the int8cpu graph keeps the early layers float (`--refit none`)")
ap.add_argument("--peers", default=str(Path(__file__).resolve().parent / "results" / "peers_onnx"),
                help="folder of benchmarks/peers.py's ONNX exports: bottle-padim-s0.onnx and "
                     "bottle-patchcore-s0.onnx are timed beside (batch 1; skipped where absent)")
args = ap.parse_args()
bottle = need(DATASETS / "mvtec_ad" / "bottle", "MVTec AD bottle")
BESIDE = dict(b.split("=", 1) for b in args.beside if "=" in b)
if len(BESIDE) != len(args.beside) or any(not Path(v).is_file() or k in ("encoder", "fp32", "fp16", "light", "int8",
                                                                          "int8cpu", "padim", "patchcore")
                                          for k, v in BESIDE.items()):
    sys.exit(f"--beside {' '.join(args.beside)}: give NAME=CHECKPOINT with an existing checkpoint and a new name")

from hfr_edge.export.flops import count_gflop  # noqa: E402
from hfr_edge.runtime.bench import interleaved  # noqa: E402
from hfr_edge.runtime.onnxrt import OrtRunner, physical_cores  # noqa: E402
from hfr_edge.runtime.openvino import OvRunner, ov_core, ov_module  # noqa: E402

BATCHES = (1, 8)
RUNTIME_KEYS = {"onnxruntime": "ort", "openvino": "openvino"}  # runtime -> its name in the ratios' keys


def export_encoder(ckpt: Path, out: Path) -> Path:
    """The frozen encoder alone with its pre-processing: image -> the three taps and the deepest level."""
    import onnx
    import onnxslim
    import torch

    from hfr_edge.checkpoint import load_checkpoint, model_from_checkpoint

    model = model_from_checkpoint(load_checkpoint(ckpt), str(ckpt)).eval()

    class Encoder(torch.nn.Module):
        def forward(self, image):
            taps, deep = model.encode(image)
            return (*taps, deep)

    size = model.cfg.image_size
    names = ["tap4", "tap8", "tap16", "deep"]
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(Encoder(), (torch.rand(1, 3, size, size),), buf, dynamo=False, opset_version=17,
                          input_names=["image"], output_names=names,
                          dynamic_axes={n: {0: "N"} for n in ["image"] + names})
    onnx.save(onnxslim.slim(onnx.load_from_string(buf.getvalue())), str(out))
    return out


def light_checkpoint(ckpt: Path, work: Path) -> Path:
    """`--preset light` at the checkpoint's size with untrained decoder weights: the same graph's cost."""
    from hfr_edge.checkpoint import load_checkpoint, save_checkpoint
    from hfr_edge.config import ModelConfig, NormStats, preset_fields
    from hfr_edge.model import HFRAE

    cfg = ModelConfig.from_dict({**load_checkpoint(ckpt)["config"], **preset_fields("light")})
    return save_checkpoint(work / "light.pt", HFRAE(cfg).eval(), NormStats(threshold=1.0, low=0.0), {})


def make_graphs(ckpt: Path, work: Path) -> dict:
    from hfr_edge.compare import report_path
    from hfr_edge.export.onnx_export import export_onnx
    from hfr_edge.variants import calibrate_model, make_fp16

    fp32 = work / "model.onnx"
    graphs = {"encoder": export_encoder(ckpt, work / "encoder.onnx")}
    with contextlib.redirect_stdout(io.StringIO()):
        graphs["fp32"] = Path(export_onnx(str(ckpt), str(fp32)))
        graphs["fp16"] = make_fp16(fp32, work / "model.fp16.onnx")
        if args.light:
            graphs["light"] = Path(export_onnx(str(light_checkpoint(ckpt, work)), str(work / "light.onnx")))
        for name, other in BESIDE.items():
            graphs[name] = Path(export_onnx(other, str(work / f"{name}.onnx")))
    evals = {}
    for name, target in (("int8", "tensorrt"), ("int8cpu", "cpu"), *((("int8cpu_refit", "cpu"),) if args.refit else ())):
        refit = name.endswith("refit")
        graphs[name] = calibrate_model(fp32, str(bottle / "train" / "good"),
                                       work / "model.refit.int8cpu.onnx" if refit else None, n=200 if refit else 100,
                                       target=target, speed=False, eval_data=str(bottle) if args.accuracy else None,
                                       refit=str(ckpt) if refit else "none")  # int8cpu: the early layers float
        if args.accuracy:
            evals[name] = json.loads(report_path(graphs[name]).read_text())["eval"]
    return graphs, evals


def raw_step(path: Path, runtime: str, x: np.ndarray):
    """The encoder graph is not the product's contract, so no Runner: the same session settings, bare
    (OpenVINO: its latency plan, one request, at batch 8 too)."""
    if runtime == "onnxruntime":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.intra_op_num_threads = physical_cores()  # as OrtRunner sets it
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        return lambda: sess.run(None, {"image": x}), "onnxruntime/CPUExecutionProvider"
    ov = ov_module()
    core = ov_core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU",
                                  {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
    req = compiled.create_infer_request()
    return lambda: req.infer({0: x}, share_inputs=True), f"openvino {ov.get_version().split('-')[0]}/CPU (one request)"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="hfr-speed-") as td:
        work = Path(args.work or td)
        work.mkdir(parents=True, exist_ok=True)
        ckpt = Path(args.ckpt) if args.ckpt else None
        if ckpt is None:
            ckpt = work / "bottle.pt"
            subprocess.run([sys.executable, "-m", "hfr_edge", "train", str(bottle), "-o", str(ckpt)], check=True)
        graphs, evals = make_graphs(ckpt, work)
        import onnx

        gflop = {k: count_gflop(onnx.load(str(p))) for k, p in graphs.items()}
        size = 256
        xs = {b: np.random.default_rng(0).random((b, 3, size, size), dtype=np.float32) for b in BATCHES}
        steps, cells, runners = {}, {}, []
        for gname, path in graphs.items():
            for runtime in ("onnxruntime", "openvino"):
                if gname == "int8cpu_refit" and runtime == "onnxruntime":
                    continue  # a graph for OpenVINO, as the cpu graph is judged
                if gname == "encoder":
                    for b in BATCHES:
                        step, backend = raw_step(path, runtime, xs[b])
                        steps[(gname, runtime, b)] = step
                        cells[(gname, runtime, b)] = backend
                    continue
                r = (OrtRunner(path, provider="cpu", spinning=False) if runtime == "onnxruntime" else OvRunner(path))
                runners.append(r.activate())
                for b in BATCHES:
                    steps[(gname, runtime, b)] = (lambda r=r, x=xs[b]: r.infer({"image": x}))
                    cells[(gname, runtime, b)] = r.backend
        # the levers: ONNX Runtime's own default threading (0 = one thread per physical core, each
        # pinned to a core; the product sets the count explicitly), and one thread each, which a
        # busy CPU cannot skew by how it shares cores among multi-threaded processes
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        pinned = ort.InferenceSession(str(graphs["fp32"]), so, providers=["CPUExecutionProvider"])
        for b in BATCHES:
            steps[("fp32", "onnxruntime threads=0", b)] = (lambda x=xs[b]: pinned.run(None, {"image": x}))
            cells[("fp32", "onnxruntime threads=0", b)] = "onnxruntime/CPU, ORT's default threads (pinned)"
        for gname, r in (("fp32", OrtRunner(graphs["fp32"], provider="cpu", spinning=False, threads=1)),
                         ("int8cpu", OvRunner(graphs["int8cpu"], threads=1))):
            runners.append(r.activate())
            rt = ("onnxruntime" if isinstance(r, OrtRunner) else "openvino") + " 1 thread"
            steps[(gname, rt, 1)] = (lambda r=r, x=xs[1]: r.infer({"image": x}))
            cells[(gname, rt, 1)] = r.backend + " (1 thread)"
        # the peers: anomalib's PaDiM and PatchCore exports on the same backbone and size (batch 1)
        for peer in ("padim", "patchcore"):
            path = Path(args.peers) / f"bottle-{peer}-s0.onnx"
            if path.is_file():
                graphs[peer] = path
                gflop[peer] = count_gflop(onnx.load(str(path)))
                for runtime in ("onnxruntime", "openvino"):
                    steps[(peer, runtime, 1)], cells[(peer, runtime, 1)] = raw_step(path, runtime, xs[1])
        print(f"timing {len(steps)} cells, {args.rounds} rounds of {args.slot} s each ...", file=sys.stderr)
        lat = interleaved(steps, rounds=args.rounds, slot_s=args.slot)
        for r in runners:
            r.close()

    rows = []
    for (gname, runtime, b), ms in lat.items():
        a = np.asarray(ms)
        p50 = float(np.median(a))
        ips = b * 1000.0 / p50
        rows.append({"graph": gname, "runtime": runtime, "backend": cells[(gname, runtime, b)], "batch": b,
                     "n": len(a), "p50_ms": p50, "p99_ms": float(np.percentile(a, 99)), "images_per_s": ips,
                     "gflop_per_image": gflop[gname], "gflops": gflop[gname] * ips})
    by = {(r["graph"], r["runtime"], r["batch"]): r for r in rows}
    ips = lambda g, rt, b=1: by[(g, rt, b)]["images_per_s"]  # noqa: E731
    ratios = {
        **{f"{name}_over_encoder_{short}_fp32_b1": by[(g, rt, 1)]["p50_ms"] / by[("encoder", rt, 1)]["p50_ms"]
           for g, name in (("fp32", "whole"), ("light", "light"), *((b, b) for b in BESIDE))
           for rt, short in RUNTIME_KEYS.items()
           if (g, rt, 1) in by},
        "int8cpu_openvino_over_fp32_ort_b1": ips("int8cpu", "openvino") / ips("fp32", "onnxruntime"),
        "int8cpu_openvino_over_fp32_ort_b8": ips("int8cpu", "openvino", 8) / ips("fp32", "onnxruntime", 8),
        **({"int8cpu_refit_openvino_over_fp32_ort_b1": ips("int8cpu_refit", "openvino") / ips("fp32", "onnxruntime"),
            "int8cpu_refit_openvino_over_fp32_ort_b8": ips("int8cpu_refit", "openvino", 8) / ips("fp32", "onnxruntime", 8)}
           if ("int8cpu_refit", "openvino", 1) in by else {}),
        "int8_trt_openvino_over_fp32_ort_b1": ips("int8", "openvino") / ips("fp32", "onnxruntime"),
        "fp32_openvino_over_fp32_ort_b1": ips("fp32", "openvino") / ips("fp32", "onnxruntime"),
        "int8cpu_openvino_over_fp32_ort_1thread_b1": ips("int8cpu", "openvino 1 thread") / ips("fp32", "onnxruntime 1 thread"),
        "ort_fp32_explicit_threads_over_default_pinned_b1": ips("fp32", "onnxruntime") / ips("fp32", "onnxruntime threads=0"),
        "batch8_over_batch1": {f"{g} {rt}": ips(g, rt, 8) / ips(g, rt, 1) for (g, rt, b) in by if b == 8},
    }
    for peer in ("padim", "patchcore"):  # the speed goal: hfr-edge's whole graph <= 0.5x PaDiM's latency
        for rt in ("onnxruntime", "openvino"):
            if (peer, rt, 1) in by:
                for g in ("fp32", "light", "int8cpu", *BESIDE):
                    if (g, rt, 1) in by:
                        ratios[f"{g}_over_{peer}_{rt}_b1"] = by[(g, rt, 1)]["p50_ms"] / by[(peer, rt, 1)]["p50_ms"]
    for r in rows:
        r["batch8_over_batch1"] = ratios["batch8_over_batch1"].get(f"{r['graph']} {r['runtime']}")
    cols = [("graph", "graph", None), ("runtime", "runtime", None), ("batch", "batch", None), ("n", "n", None),
            ("p50_ms", "p50 ms", "{:.1f}"), ("p99_ms", "p99 ms", "{:.1f}"), ("images_per_s", "img/s", "{:.1f}"),
            ("batch8_over_batch1", "b8/b1", "{:.2f}"), ("gflop_per_image", "GFLOP/img", "{:.3f}"),
            ("gflops", "GFLOP/s", "{:.1f}")]
    print(table(sorted(rows, key=lambda r: (r["graph"], r["runtime"], r["batch"])), cols))
    for k, v in ratios.items():
        if not isinstance(v, dict):
            print(f"{k}: {v:.2f}")
    acc = {}
    for name, e in evals.items():
        acc[name] = {"fp32_pixel_auroc": e["fp32"]["pixel_auroc"], "int8_pixel_auroc": e["int8"]["pixel_auroc"],
                     "pixel_auroc_drop": e["pixel_auroc_drop"], "image_auroc_drop": e["image_auroc_drop"],
                     "int8_provider": e.get("int8_provider")}
        print(f"{name}: pixel AUROC {e['fp32']['pixel_auroc']:.4f} -> {e['int8']['pixel_auroc']:.4f} "
              f"(drop {e['pixel_auroc_drop']:.4f}, on {e.get('int8_provider')})")
    load = [round(v, 2) for v in os.getloadavg()]
    write_json(args.name, {"checkpoint": str(ckpt), "rounds": args.rounds, "slot_s": args.slot,
                              "load_average_at_end": load, "rows": rows, "ratios": ratios, "accuracy": acc,
                              "openvino": ov_module().get_version()})


if __name__ == "__main__":
    main()
