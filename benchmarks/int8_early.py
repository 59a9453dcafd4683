"""What int8 costs on bottle with and without the encoder's early layers in float (calib/qdq.py
`early_layers`): one trained decoder, scored as `--preset paper` and as the defaults (`surface`), calibrated
for both targets (TensorRT's symmetric Q/DQ graph, judged on ONNX Runtime's CPU provider; the CPU
target's, judged on OpenVINO) on 100 training frames, evaluated on the whole test set against its
own fp32 graph. Writes benchmarks/results/int8_early.json.

    python benchmarks/int8_early.py [--epochs 30] [--ckpt surface.pt] [--work DIR] [--set-option k=v ...]

--ckpt: a bottle checkpoint of the default decoder, scored under the defaults' fusion (refitted if it was
trained under another) and under `--preset paper`'s (same decoder, no statistics).
"""

import argparse
import contextlib
import dataclasses
import io
import json
import sys
import tempfile
import time
from pathlib import Path

from common import DATASETS, need, table, write_json
from suite import POST_TRAINING, parse_options, refit_fusion

ap = argparse.ArgumentParser()
ap.add_argument("--epochs", type=int, default=30)
ap.add_argument("--ckpt", help="a bottle checkpoint of the default decoder (default: train one)")
ap.add_argument("--work", help="folder for the checkpoints and graphs (default: a temporary one)")
ap.add_argument("--set-option", action="append", default=[], metavar="KEY=VALUE", help="ModelConfig fields")
ap.add_argument("--name", default="int8_early.json", help="results file in benchmarks/results/")
ap.add_argument("--arms", default="all int8,early float,all int8 + refit",
                help="which encoder placements to calibrate")
args = ap.parse_args()
bottle = need(DATASETS / "mvtec_ad" / "bottle", "MVTec AD bottle")

from hfr_edge.calib import qdq  # noqa: E402
from hfr_edge.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint  # noqa: E402
from hfr_edge.compare import report_path  # noqa: E402
from hfr_edge.config import ModelConfig, NormStats, TrainConfig, preset_fields  # noqa: E402
from hfr_edge.export.onnx_export import export_onnx  # noqa: E402
from hfr_edge.train import fit  # noqa: E402
from hfr_edge.variants import calibrate_model  # noqa: E402
from suite_data import load_set  # noqa: E402


def checkpoints(work: Path) -> dict:
    """{preset: checkpoint}: the surface model and its paper twin (one decoder)."""
    d = load_set("bottle", 0)
    if args.ckpt:
        ck = load_checkpoint(args.ckpt)
        model, stats, summary = model_from_checkpoint(ck, args.ckpt), NormStats.from_dict(ck["norm"]), ck["train"]
        surface = dataclasses.replace(model.cfg, **{k: getattr(ModelConfig(), k) for k in POST_TRAINING})
        if model.cfg != surface:  # trained under another fusion: the same decoder under the defaults' fusion
            model, stats = refit_fusion(model, surface, d)
    else:
        mopt, _ = parse_options(args.set_option)
        t0 = time.time()
        model, stats, summary = fit(d.x_train, d.x_hold, ModelConfig(**mopt),
                                    TrainConfig(epochs=args.epochs, seed=0), progress=False)
        print(f"trained in {time.time() - t0:.0f} s", file=sys.stderr)
    paper, pstats = refit_fusion(model, dataclasses.replace(model.cfg, **{k: v for k, v in preset_fields("paper").items()
                                                                          if k in POST_TRAINING}), d)
    return {"surface": save_checkpoint(work / "surface.pt", model, stats, summary),
            "paper": save_checkpoint(work / "paper.pt", paper, pstats, summary)}


def stats_taps(graph: str) -> list:
    """{level: tensor name}: the encoder features the statistics read, found in the exported graph as
    the tensors that enter its /amap/gauss nodes from outside them; the level from the grid's side."""
    import onnx

    m = onnx.load(graph, load_external_data=False)
    made = {o: n.name for n in m.graph.node for o in n.output}
    names = [i for n in m.graph.node if n.name.startswith("/amap/gauss") for i in n.input
             if i in made and not made[i].startswith("/amap/gauss")]
    return sorted(set(names))


def int8_features(q: Path, target: str, x, names) -> list:
    """The int8 graph's own values of `names` for images x (N, 3, S, S), on the target's runtime."""
    import numpy as np
    import onnx

    m = onnx.load(str(q))
    m.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    tapped = q.with_name(q.stem + ".taps.onnx")
    onnx.save(m, str(tapped))
    if target == "cpu":
        import openvino as ov

        core = ov.Core()
        net = core.compile_model(core.read_model(str(tapped)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        outs = [next(o for o in net.outputs if n in o.get_names()) for n in names]
        run = lambda b: [net(b)[o] for o in outs]  # noqa: E731
    else:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(tapped), providers=["CPUExecutionProvider"])
        run = lambda b: sess.run(names, {sess.get_inputs()[0].name: b})  # noqa: E731
    got = [run(x[i:i + 8]) for i in range(0, len(x), 8)]
    return [np.concatenate([g[k] for g in got]) for k in range(len(names))]


def refit_on_int8(ck: Path, fp32: str, q: Path, target: str, work: Path) -> Path:
    """The checkpoint with its Gaussians fitted on the int8 graph's features of the training images
    (the image groups kept from the float stride-16 level, as training made them) and each level's
    distance scaled to 1 on the reference normals as the int8 graph computes them."""
    import torch

    from hfr_edge.train import _encode_all, reference_images

    d = load_set("bottle", 0)
    ckd = load_checkpoint(ck)
    model, stats = model_from_checkpoint(ckd, str(ck)), NormStats.from_dict(ckd["norm"])
    floats = _encode_all(model, d.x_train, torch.device("cpu"))[0]
    names = stats_taps(fp32)
    side = {f.shape[-1]: lvl for lvl, f in enumerate(floats)}
    ref = reference_images(d.x_train, d.x_hold)
    tr, rf = int8_features(q, target, d.x_train, names), int8_features(q, target, ref, names)
    levels, refs = list(floats), [None, None, None]
    for a, b in zip(tr, rf):
        levels[side[a.shape[-1]]], refs[side[a.shape[-1]]] = torch.from_numpy(a), torch.from_numpy(b)
    g = model.gauss
    g.fit(levels)  # the groups from levels[-1]: the float stride-16 features unless the statistics read them
    with torch.inference_mode():
        for lvl, dist in enumerate(g([r if u else None for r, u in zip(refs, g.used)])):
            if dist is not None:
                g.level_scale[1, lvl] = 1.0 / dist.mean().clamp_min(1e-12)
    return save_checkpoint(work / f"{ck.stem}-refit.pt", model, stats, ckd["train"])


def run(work: Path) -> list:
    rows, keep = [], qdq.early_layers
    if all(a.endswith("refit") for a in args.arms.split(",")):
        raise SystemExit("--arms: the refit arm's drops are against the original fp32 graph; add 'early float'")
    for preset, ck in checkpoints(work).items():
        with contextlib.redirect_stdout(io.StringIO()):
            fp32 = export_onnx(str(ck), str(work / f"{preset}.onnx"))
        for target in ("tensorrt", "cpu"):
            base = None  # the original fp32 graph's metrics, from the first arm without refit
            for arm in sorted(args.arms.split(","), key=lambda a: a.endswith("refit")):
                refit = arm.endswith("refit")
                if refit and preset == "paper":
                    continue  # no statistics to refit
                qdq.early_layers = keep if arm == "early float" else (lambda model: [])
                tag = arm.split()[0] + ("-refit" if refit else "")
                out = work / f"{preset}-{tag}.{'int8' if target == 'tensorrt' else 'int8cpu'}.onnx"
                src = fp32
                if refit:  # quantize all, refit on that graph's features, export and quantize again
                    with contextlib.redirect_stdout(io.StringIO()):
                        q = calibrate_model(fp32, str(bottle / "train" / "good"), str(out), n=100, target=target,
                                            report=False)
                        src = export_onnx(str(refit_on_int8(ck, fp32, q, target, work)), str(work / f"{preset}-refit.onnx"))
                with contextlib.redirect_stdout(io.StringIO()):
                    q = calibrate_model(src, str(bottle / "train" / "good"), str(out), n=100, target=target,
                                        speed=target == "cpu", eval_data=str(bottle))
                r = json.loads(report_path(q).read_text())
                e = r["eval"]
                f32 = base or e["fp32"]  # the refit arm's own fp32 twin is another model: drops against the original
                base = f32
                rows.append({"preset": preset, "target": target, "early_layers": arm, "runtime": e["int8_provider"],
                             "fp32_pixel_auroc": f32["pixel_auroc"], "fp32_aupro": f32["aupro"],
                             "int8_pixel_auroc": e["int8"]["pixel_auroc"], "int8_aupro": e["int8"]["aupro"],
                             "image_auroc_drop": f32["image_auroc"] - e["int8"]["image_auroc"],
                             "pixel_auroc_drop": f32["pixel_auroc"] - e["int8"]["pixel_auroc"],
                             "aupro_drop": f32["aupro"] - e["int8"]["aupro"],
                             "map_rel_error": None if refit else e["agreement"]["map_mean_rel_error"],
                             "speed_x": r.get("speed", {}).get("speedup")})
                print(rows[-1], file=sys.stderr, flush=True)
    qdq.early_layers = keep
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="hfr-int8-") as td:
        work = Path(args.work or td)
        work.mkdir(parents=True, exist_ok=True)
        rows = run(work)
    cols = [(k, k.replace("_", " "), f) for k, f in (("preset", None), ("target", None), ("early_layers", None),
                                                        ("runtime", None), ("fp32_pixel_auroc", "{:.4f}"),
                                                        ("image_auroc_drop", "{:.4f}"), ("pixel_auroc_drop", "{:.4f}"),
                                                        ("aupro_drop", "{:.4f}"), ("map_rel_error", "{:.3f}"),
                                                        ("speed_x", "{:.2f}"))]
    print(table(rows, cols))
    write_json(args.name, {"epochs": None if args.ckpt else args.epochs, "ckpt": args.ckpt,
                                   "set_options": args.set_option, "rows": rows})


if __name__ == "__main__":
    main()
