"""The suite of issue 13: trains and evaluates hfr-edge's CURRENT defaults on every set (bottle, ELPV,
the texture suite, MNIST / Fashion-MNIST classes 0-2; suite_data.py) and prints ONE table with the
peers' latest rows from benchmarks/results/suite.json beside it (benchmarks/peers.py), a suite mean
per method and the seed spread per set. The check for any change of defaults.

    python benchmarks/suite.py [--sets bottle,elpv,...] [--seeds 0,1] [--epochs N] [--tag T]
        [--set-option key=value ...] [--oneclass-preset oneclass|defaults] [--report-only]
        [--presets paper,surface,stats:local] [--fusion NAME:key=value;...] [--no-peer-latency]

- MVTec-layout sets and ELPV: ModelConfig() and TrainConfig() defaults (image size: the set's, 256).
- One-class sets: the settings of benchmarks/oneclass.py (ONECLASS below: 64 px, score mean,
  bottleneck 16, level weights 0,0,1, decoder widths 128,64,32, 8 epochs); `--oneclass-preset
  defaults` uses the plain defaults there too (with score mean, as `hfr-edge train` picks for them).
- `--set-option key=value` (repeatable) sets a ModelConfig or TrainConfig field for every set,
  e.g. `--set-option tap16=early --set-option level_weights=0,1,1`; use with --tag.
- Latency: each trained model is exported (hfr_edge.export, batch 1, fp32) and timed with ONNX
  Runtime (no spinning) interleaved with the peers' ONNX files of the same set, if peers.py left
  them; those p50s go into the row (`peer_p50_ms`) and the table's "p50 now" column.
- `--presets paper,surface`: ONE decoder per set and seed (the defaults' and --set-option's), scored
  under each preset's fusion (statistics or none; a preset's decoder fields are not applied here):
  the comparison of the fusions without training noise. `stats:KIND` is that statistics kind alone
  (refitted on the training images). `--fusion NAME:stats=local;level_weights=0,0.5,1` (repeatable)
  scores the same decoder under any POST_TRAINING fields as method hfr-edge-NAME.
Rows: `method` = hfr-edge (or hfr-edge-TAG, hfr-edge-PRESET[-TAG]), with `at_threshold` (what the model's own
threshold flags: anomalous and good images, out of how many), merged into suite.json by
set/method/seed.
"""

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import SUITE_JSON, merge_suite, p50_ms, read_suite, table
from peers import onnx_path
from suite_data import SETS, SIZE_MVTEC, SIZE_ONECLASS, check_names, load_set, score

from hfr_edge.config import OPTIONAL_TRIPLES, OPTIONAL_WEIGHTS, ModelConfig, TrainConfig  # noqa: E402
from hfr_edge.train import ONE_CLASS_MEMORY  # noqa: E402

ONECLASS = {"model": {"image_size": 64, "score": "mean", "bottleneck": 16, "level_weights": (0.0, 0.0, 1.0),
                      "stats_level_weights": None, "aligned_level_weights": None, "decoder_widths": (128, 64, 32)},
            "train": {"epochs": 8}}
PEERS = ("padim", "patchcore")
METRICS = ("image_auroc", "pixel_auroc", "aupro")
COLS = [("set", "set", None), ("method", "method", None), ("seeds", "seeds", None),
        ("image_auroc", "image AUROC", "{:.4f}"), ("image_auroc_spread", "+-", "{:.4f}"),
        ("pixel_auroc", "pixel AUROC", "{:.4f}"), ("pixel_auroc_spread", "+-", "{:.4f}"),
        ("aupro", "AUPRO", "{:.4f}"), ("aupro_spread", "+-", "{:.4f}"),
        ("train_s", "train s", "{:.0f}"), ("p50_ms", "p50 ms", "{:.1f}"), ("p50_now", "p50 now", "{:.1f}")]


def parse_options(items) -> tuple:
    """key=value pairs -> (ModelConfig kwargs, TrainConfig kwargs), typed by the field's default."""
    from hfr_edge.train import parse_triple

    model_f = {f.name: f for f in dataclasses.fields(ModelConfig)}
    train_f = {f.name: f for f in dataclasses.fields(TrainConfig)}
    m, t = {}, {}
    for item in items:
        key, sep, text = item.partition("=")
        target = m if key in model_f else t if key in train_f else None
        if not sep or target is None:
            raise SystemExit(f"--set-option {item!r}: give key=value with a ModelConfig or TrainConfig field: "
                             f"{', '.join(sorted(model_f) + sorted(train_f))}")
        default = (model_f.get(key) or train_f[key]).default
        if key in OPTIONAL_TRIPLES:  # None or a triple
            target[key] = None if text.lower() == "none" else parse_triple(
                text, f"--set-option {key}", int if key.endswith("_tile") else float)
        elif isinstance(default, tuple):
            target[key] = parse_triple(text, f"--set-option {key}", type(default[0]))
        elif isinstance(default, bool):
            target[key] = text.lower() in ("1", "true", "yes")
        else:
            try:
                target[key] = type(default)(text)
            except ValueError:
                raise SystemExit(f"--set-option {item!r}: {key} takes a {type(default).__name__}") from None
    return m, t


def configs(kind: str, args, mopt: dict, topt: dict):
    """(ModelConfig, TrainConfig kwargs less the seed) for a kind of set: the defaults at the set's
    resolution, oneclass.py's settings on the one-class sets, then --epochs and --set-option."""
    m, t = {"image_size": SIZE_ONECLASS if kind == "oneclass" else SIZE_MVTEC}, {}
    if kind == "oneclass":  # as `train` takes a one-class format: the map's mean, a memory of the images
        m.update(score="mean", **ONE_CLASS_MEMORY)
        if args.oneclass_preset == "oneclass":
            m.update(ONECLASS["model"])
            t.update(ONECLASS["train"])
    if args.epochs:
        t["epochs"] = args.epochs
    return ModelConfig(**{**m, **mopt}), {**t, **topt}


# fields that change the map, never the decoder's training (the loss weighs every level alike)
POST_TRAINING = {"stats", "stats_weight", "level_weights", "stats_level_weights", "stats_pool", "stats_tile",
                 "stats_components", "sigma", "level_sigmas", "score", "aligned_level_weights",
                 "part_level_weights", "part_residual_weights", "texture_stats_tile", "stats_dims",
                 "memory_weight", "image_memory_weight", "memory_images", "image_memory_metric"}


def parse_fusions(items) -> dict:
    """--fusion NAME:key=value;key=value (POST_TRAINING fields) -> {NAME: ModelConfig kwargs}."""
    out = {}
    for item in items:
        name, _, spec = item.partition(":")
        fields, _ = parse_options([kv for kv in spec.split(";") if kv])
        if not name or not fields or set(fields) - POST_TRAINING:
            raise SystemExit(f"--fusion {item!r}: give NAME:key=value;key=value with fields of "
                             f"{', '.join(sorted(POST_TRAINING))}")
        out[name] = fields
    return out


def variants(presets, mcfg: ModelConfig, tag: str, fusions=None, oneclass: bool = False) -> dict:
    """method name -> ModelConfig, one per preset (`--presets`), or the defaults alone. A preset here is
    its fusion only (its POST_TRAINING fields; the decoder is the run's: the defaults and --set-option),
    so ONE decoder is trained and scored under each (another kind of statistics is refitted on the
    same training images): their differences are the fusion's, never training noise."""
    from hfr_edge.config import preset_fields

    suffix = f"-{tag}" if tag else ""
    if not presets and not fusions:
        return {f"hfr-edge{suffix}": mcfg}
    # the one-class sets keep their recipe's level weights and score under a fusion or a preset: without
    # that, `--presets surface` scored them under the defect sets' statistics weights (mnist-1 0.9992 ->
    # 0.9983) in rows named as the default's
    def keep(fields):
        return {k: v for k, v in fields.items() if k in POST_TRAINING
                and not (oneclass and k in ("level_weights", "score", *OPTIONAL_WEIGHTS))}

    out = {}
    for name, fields in (fusions or {}).items():
        out[f"hfr-edge-{name}{suffix}"] = dataclasses.replace(mcfg, **keep(fields))
    for p in presets:  # a preset's name, or "stats:KIND" (that statistics kind alone: a fusion to try)
        fields = {"stats": p.split(":", 1)[1]} if p.startswith("stats:") else preset_fields(p)
        out[f"hfr-edge-{p.replace(':', '-')}{suffix}"] = dataclasses.replace(mcfg, **keep(fields))
    return out


def refit_fusion(trained, cfg: ModelConfig, d, fitted=None):
    """(model, NormStats): the same trained decoder (and Gaussian) under another fusion `cfg` (its
    POST_TRAINING fields), normalised on the set's reference normals as training would. Another kind
    of statistics is fitted on the training images as `fit` does; `fitted` ({kind: Gaussian}, one per
    set and seed) keeps each kind's fit for the next fusion that uses it."""
    import copy

    import torch

    from hfr_edge.model import stats_levels
    from hfr_edge.train import (_encode_all, fit_memory, fit_statistics, reference_images, reference_stats,
                                resolve_alignment)

    model = copy.deepcopy(trained)
    cfg = dataclasses.replace(cfg, decoder_widths=trained.cfg.decoder_widths)  # the decoder training built
    kind = (trained.cfg.stats, trained.cfg.stats_pool, trained.cfg.stats_components, trained.cfg.stats_tile,
            trained.cfg.stats_dims)
    model.cfg = cfg
    ref, cpu = reference_images(d.x_train, d.x_hold), torch.device("cpu")
    fitted = {} if fitted is None else fitted
    coded = []  # the training images' (levels, deepest), encoded once by the first step that needs them

    def encoded():
        if not coded:
            coded.extend(_encode_all(model, d.x_train, cpu))
        return coded

    if cfg.stats != "none" and cfg.aligned_level_weights is not None:  # as `fit` chooses, on the training images
        resolve_alignment(model, encoded()[0], d.x_train)
    need = stats_levels(model.cfg)  # the levels this fusion weighs (the trained Gaussian may lack some)
    want = (cfg.stats, cfg.stats_pool, cfg.stats_components, model.cfg.stats_tile, cfg.stats_dims,
            tuple(need))  # tiles as chosen
    same = want[:5] == kind and trained.gauss is not None and all(u or not n for u, n in zip(trained.gauss.used, need))
    if cfg.stats == "none":
        model.gauss = None
    elif not same and want in fitted:
        model.gauss, model.cfg = copy.deepcopy(fitted[want][0]), dataclasses.replace(
            model.cfg, stats_components=fitted[want][1])
    elif not same:  # (auto components resolve into model.cfg)
        fit_statistics(model, encoded()[0], ref, cpu, held_out=len(d.x_hold) > 0)
        fitted[want] = (copy.deepcopy(model.gauss), model.cfg.stats_components)
    model.memory = None  # this fusion's own (its weights scale on the map it adds to)
    if cfg.memory_weight or cfg.image_memory_weight:
        fit_memory(model, *encoded(), ref, cpu, held_out=len(d.x_hold) > 0)
    return model, reference_stats(model, model.cfg, ref, cpu)


def run_one(name: str, seed: int, args, mopt, topt, presets) -> list:
    """Train one decoder on a set, score it under every variant; one row per variant."""
    import torch

    from hfr_edge.checkpoint import save_checkpoint
    from hfr_edge.export.onnx_export import export_onnx
    from hfr_edge.base.contract import THRESHOLD
    from hfr_edge.metrics import flagged
    from hfr_edge.model import DeployModel
    from hfr_edge.train import fit

    oneclass = name.startswith(("mnist-", "fashion-mnist-"))
    mcfg, tkw = configs("oneclass" if oneclass else "image", args, mopt, topt)
    cfgs = variants(presets, mcfg, args.tag, parse_fusions(args.fusion), oneclass=oneclass)
    trained_cfg = next((c for c in cfgs.values() if c.stats != "none"), next(iter(cfgs.values())))
    d = load_set(name, seed, size=mcfg.image_size, textures=args.textures)
    tcfg = TrainConfig(**{**tkw, "seed": seed})
    kept = Path(args.models) / f"{name}-{args.tag or 'defaults'}-s{seed}.pt" if args.models else None
    if kept is not None and kept.is_file():  # the decoder trained by an earlier run, scored under new fusions
        from hfr_edge.checkpoint import load_checkpoint, model_from_checkpoint
        from hfr_edge.config import NormStats

        ckpt = load_checkpoint(kept)
        trained, trained_stats = model_from_checkpoint(ckpt, str(kept)), NormStats.from_dict(ckpt["norm"])
        summary = ckpt["train"]
        train_s = summary.get("train_s", 0.0)
        def decoder_fields(c, widths=None):  # widths: the decoder's as training chose them for the kind
            d = {k: v for k, v in c.to_dict().items() if k not in POST_TRAINING and k != "part_decoder_widths"}
            return d if widths is None else {**d, "decoder_widths": list(widths)}

        part = trained_cfg.part_decoder_widths
        if decoder_fields(trained.cfg) not in (decoder_fields(trained_cfg),
                                               part and decoder_fields(trained_cfg, part)):
            raise SystemExit(f"{kept}: trained with another decoder than this run's; give another --tag or --models")
        trained_cfg = trained.cfg  # another statistics kind or fusion is refitted below
    else:
        t0 = time.time()
        trained, trained_stats, summary = fit(d.x_train, d.x_hold, trained_cfg, tcfg, progress=False)
        train_s = summary["train_s"] = time.time() - t0
        if kept is not None:
            kept.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(kept, trained, trained_stats, summary)
    rows, fitted = [], {}
    for method, c in cfgs.items():
        model, stats = (trained, trained_stats) if c == trained_cfg else refit_fusion(trained, c, d, fitted)
        module = DeployModel(model, stats).eval()
        scores, maps = [], []
        with torch.inference_mode():
            for i in range(0, len(d.x_test), 32):
                m, s = module(torch.from_numpy(d.x_test[i:i + 32]))
                scores.append(s.numpy())
                if d.masks is not None:
                    maps.append(m.numpy()[:, 0])
        scores = np.concatenate(scores)
        row = {"set": name, "method": method, "seed": seed,
               **score(d, scores, np.concatenate(maps) if maps else None), "train_s": train_s,
               "at_threshold": flagged(d.labels, scores, THRESHOLD)}  # the model's own threshold (normalised 0.5)
        with tempfile.TemporaryDirectory(prefix="hfr-suite-") as tmp:
            ckpt = save_checkpoint(Path(tmp) / "ckpt.pt", model, stats, summary)
            onnx_file = export_onnx(str(ckpt), str(Path(tmp) / "model.onnx"), batch=1)
            files = {method: onnx_file}
            if not args.no_peer_latency:
                files.update({p: onnx_path(name, p, 0) for p in PEERS if onnx_path(name, p, 0).is_file()})
            lat = p50_ms(files)
        row["p50_ms"] = lat.pop(method)
        row.update(peer_p50_ms=lat, final_loss=summary["final_loss"], epochs=tcfg.epochs,
                   image_size=c.image_size, model=model.cfg.to_dict())
        rows.append(row)
    return rows


def mean(v):
    v = [x for x in v if x is not None]
    return float(np.mean(v)) if v else None


def markdown(lines) -> str:
    """The report as a Markdown table for the README: mean (± seed spread) per metric."""
    def cell(line, k):
        v, sp = line.get(k), line.get(k + "_spread")
        return "–" if v is None else f"{v:.4f}" + (f" ± {sp:.4f}" if sp is not None else "")

    out = ["| set | method | seeds | image AUROC | pixel AUROC | AUPRO | train s |", "| --- " * 7 + "|"]
    for line in lines:
        bold = "**" if line["method"].startswith("hfr-edge") and "mean" in line["set"] else ""
        out.append(f"| {line['set']} | {bold}{line['method']}{bold} | {line.get('seeds', '')} | "
                   + " | ".join(cell(line, k) for k in METRICS)
                   + f" | {'' if line.get('train_s') is None else round(line['train_s'])} |")
    return "\n".join(out)


def report(sets, rows, now: dict, md: bool = False) -> str:
    """One line per set and method (means over seeds; "+-": the seed spread, max - min), then the
    suite means (over the sets a method has rows for)."""
    lines, by_method = [], {}
    for name in sets:
        for method in sorted({r["method"] for r in rows if r["set"] == name}, key=lambda m: (m in PEERS, m)):
            rs = [r for r in rows if r["set"] == name and r["method"] == method]
            line = {"set": name, "method": method, "seeds": ",".join(str(r["seed"]) for r in rs)}
            for k in ("image_auroc", "pixel_auroc", "aupro", "train_s", "p50_ms"):
                line[k] = mean([r.get(k) for r in rs])
            for k in METRICS:  # the seed spread: max - min over the seeds
                v = [r[k] for r in rs if r.get(k) is not None]
                line[k + "_spread"] = max(v) - min(v) if len(v) > 1 else None
            line["p50_now"] = now.get((name, method))
            lines.append(line)
            by_method.setdefault(method, []).append(line)
    means = [{"set": f"suite mean ({len(ls)}/{len(sets)} sets)", "method": m,
              **{k: mean([x[k] for x in ls]) for k in ("image_auroc", "pixel_auroc", "aupro", "train_s", "p50_ms")}}
             for m, ls in by_method.items()]
    return markdown(lines + means) if md else table(lines + means, COLS)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--epochs", type=int, default=None, help="every set (default: the product's / oneclass.py's)")
    ap.add_argument("--tag", default="", help="method name hfr-edge-TAG, to compare a variant")
    ap.add_argument("--set-option", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--oneclass-preset", default="oneclass", choices=["oneclass", "defaults"])
    ap.add_argument("--textures", default=None, help="texture suite folder (default: textures.py's cache)")
    ap.add_argument("--presets", default="", help="score one trained decoder under each of these presets "
                    "(e.g. paper,surface) or statistics kinds (stats:local): methods hfr-edge-PRESET[-TAG]")
    ap.add_argument("--fusion", action="append", default=[], metavar="NAME:KEY=VALUE;KEY=VALUE",
                    help="score the trained decoder under this fusion too (" + ", ".join(sorted(POST_TRAINING))
                         + "; none for an optional triple; the one-class sets keep their level weights and "
                         "score): method hfr-edge-NAME[-TAG]")
    ap.add_argument("--models", default=None, metavar="DIR", help="keep each trained decoder here (SET-TAG-sSEED.pt) "
                    "and reuse it when it is there: new fusions without retraining")
    ap.add_argument("--no-peer-latency", action="store_true", help="time hfr-edge's graph alone (another job "
                    "shares the CPU: timings are not comparable then anyway)")
    ap.add_argument("--report-only", action="store_true", help="print the table of suite.json, train nothing")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown (the README's)")
    ap.add_argument("--json", default=str(SUITE_JSON), help="the rows' file (default: benchmarks/results/suite.json)")
    args = ap.parse_args()
    sets = check_names(args.sets.split(","))
    seeds = [int(s) for s in args.seeds.split(",")]
    mopt, topt = parse_options(args.set_option)
    from hfr_edge.base.errors import HfrError

    try:  # a bad value fails now, not after the first set
        ModelConfig(**mopt), TrainConfig(**topt)
    except HfrError as exc:
        raise SystemExit(f"--set-option: {exc}") from None
    presets = [p for p in args.presets.split(",") if p]
    now = {}
    if not args.report_only:
        for name in sets:
            rows = []
            for seed in seeds:
                t0 = time.time()
                new = run_one(name, seed, args, mopt, topt, presets)
                rows += new
                for r in new:
                    now[(name, r["method"])] = r["p50_ms"]
                    now.update({(name, p): v for p, v in r["peer_p50_ms"].items()})
                print(table(new, COLS[:2] + COLS[3:4] + COLS[5:6] + COLS[7:8] + COLS[9:11])
                      + f"\n({time.time() - t0:.0f} s with loading, scoring and export)", file=sys.stderr, flush=True)
            merge_suite(rows, {r["method"]: {"set_options": args.set_option, "epochs": args.epochs,
                                             "oneclass_preset": args.oneclass_preset, "model": r["model"]}
                               for r in rows}, args.json)
    rows = read_suite(args.json) + ([] if Path(args.json) == SUITE_JSON else read_suite())  # peers' rows too
    print(report(sets, [r for r in rows if r["seed"] in seeds], now, md=args.markdown))


if __name__ == "__main__":
    main()
