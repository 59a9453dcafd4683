"""What int8 costs on bottle with and without the encoder's early layers in float (calib/qdq.py
`early_layers`): one trained decoder, scored as `--preset paper` and as the defaults (`surface`), calibrated
for both targets (TensorRT's symmetric Q/DQ graph, judged on ONNX Runtime's CPU provider; the CPU
target's, judged on OpenVINO) on 200 training frames (`--frames`), evaluated on the whole test set against its
own fp32 graph. Writes benchmarks/results/int8_early.json.

    python benchmarks/int8_early.py [--epochs 30] [--ckpt surface.pt] [--work DIR] [--set-option k=v ...]
                                    [--targets tensorrt,cpu] [--arms "all int8,early float,all int8 + refit"]

Arm `all int8 + refit keep`: the refit with the checkpoint's Gaussian count on the cpu target too
(variants.CPU_STRIDE4_COMPONENTS set aside), as before the fourteenth session.

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
ap.add_argument("--frames", type=int, default=200, help="calibration frames of bottle's training images (-n)")
ap.add_argument("--arms", default="all int8,early float,all int8 + refit",
                help="which encoder placements to calibrate; `all int8 + refit keep`: the refit with the "
                "checkpoint's Gaussian count on the cpu target too (before the fourteenth session's one)")
ap.add_argument("--targets", default="tensorrt,cpu", help="which calibration targets")
args = ap.parse_args()
bottle = need(DATASETS / "mvtec_ad" / "bottle", "MVTec AD bottle")

from hfr_edge.base.artifact import load_meta  # noqa: E402
from hfr_edge.calib import qdq  # noqa: E402
from hfr_edge.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint  # noqa: E402
from hfr_edge.compare import report_path  # noqa: E402
from hfr_edge.config import ModelConfig, NormStats, TrainConfig, preset_fields  # noqa: E402
from hfr_edge.export.onnx_export import export_onnx  # noqa: E402
from hfr_edge import variants  # noqa: E402
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


def run(work: Path) -> list:
    rows, keep, cpu_components = [], qdq.early_layers, variants.CPU_STRIDE4_COMPONENTS
    for preset, ck in checkpoints(work).items():
        with contextlib.redirect_stdout(io.StringIO()):
            fp32 = export_onnx(str(ck), str(work / f"{preset}.onnx"))
        for target in args.targets.split(","):
            for arm in args.arms.split(","):
                refit = "refit" in arm
                if refit and preset == "paper":
                    continue  # no statistics to refit
                qdq.early_layers = keep if arm == "early float" else (lambda model: [])
                variants.CPU_STRIDE4_COMPONENTS = None if arm.endswith("keep") else cpu_components
                tag = arm.split()[0] + ("-refit" if refit else "") + ("-keep" if arm.endswith("keep") else "")
                out = work / f"{preset}-{tag}.{'int8' if target == 'tensorrt' else 'int8cpu'}.onnx"
                with contextlib.redirect_stdout(io.StringIO()):  # the refit: `calibrate --refit CKPT`
                    q = calibrate_model(fp32, str(bottle / "train" / "good"), str(out), n=args.frames, target=target,
                                        speed=target == "cpu", eval_data=str(bottle), refit=str(ck) if refit else None)
                r = json.loads(report_path(q).read_text())
                e = r["eval"]
                f32 = e["fp32"]
                rows.append({"preset": preset, "target": target, "early_layers": arm, "runtime": e["int8_provider"],
                             "stats_components": load_meta(q).model["stats_components"],
                             "fp32_pixel_auroc": f32["pixel_auroc"], "fp32_aupro": f32["aupro"],
                             "int8_pixel_auroc": e["int8"]["pixel_auroc"], "int8_aupro": e["int8"]["aupro"],
                             "image_auroc_drop": f32["image_auroc"] - e["int8"]["image_auroc"],
                             "pixel_auroc_drop": f32["pixel_auroc"] - e["int8"]["pixel_auroc"],
                             "aupro_drop": f32["aupro"] - e["int8"]["aupro"],
                             "map_rel_error": e["agreement"]["map_mean_rel_error"],
                             "speed_x": r.get("speed", {}).get("speedup")})
                print(rows[-1], file=sys.stderr, flush=True)
    qdq.early_layers, variants.CPU_STRIDE4_COMPONENTS = keep, cpu_components
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="hfr-int8-") as td:
        work = Path(args.work or td)
        work.mkdir(parents=True, exist_ok=True)
        rows = run(work)
    cols = [(k, k.replace("_", " "), f) for k, f in (("preset", None), ("target", None), ("early_layers", None),
                                                        ("stats_components", None),
                                                        ("runtime", None), ("fp32_pixel_auroc", "{:.4f}"),
                                                        ("image_auroc_drop", "{:.4f}"), ("pixel_auroc_drop", "{:.4f}"),
                                                        ("aupro_drop", "{:.4f}"), ("map_rel_error", "{:.3f}"),
                                                        ("speed_x", "{:.2f}"))]
    print(table(rows, cols))
    write_json(args.name, {"epochs": None if args.ckpt else args.epochs, "ckpt": args.ckpt,
                                   "set_options": args.set_option, "rows": rows})


if __name__ == "__main__":
    main()
