"""A checkpoint behind the runtime's Runner interface: `infer({"image": x})` -> {"anomaly_map",
"score"}, run eagerly in PyTorch through the export wrapper (DeployModel), so `eval`, `bench` and
`run` treat a ckpt.pt like any other artifact. It is the reference the graphs are compared with."""

from __future__ import annotations

from typing import Dict

import numpy as np
import torch

from .base.artifact import ArtifactMeta
from .base.contract import MAP_NAME, SCORE_NAME
from .base.errors import HfrError
from .base.view import CARRIED_KEYS
from .checkpoint import deploy_model, load_checkpoint
from .runtime.runner import PROVIDER_CHOICES, Runner


def device_for(provider: str, name: str) -> str:
    """'cuda' for auto/cuda where PyTorch sees a GPU, else 'cpu'; HfrError for what cannot apply."""
    if provider not in PROVIDER_CHOICES:
        raise HfrError(f"--provider {provider!r} must be one of: {', '.join(PROVIDER_CHOICES)}")
    if provider in ("tensorrt", "openvino"):
        raise HfrError(f"--provider {provider} does not apply to a checkpoint; export {name} first "
                       f"(`hfr-edge export`) and give the .onnx graph")
    if provider == "cuda" and not torch.cuda.is_available():
        raise HfrError("--provider cuda: this PyTorch sees no CUDA device; use --provider cpu")
    return "cuda" if provider in ("auto", "cuda") and torch.cuda.is_available() else "cpu"


class TorchRunner(Runner):
    def __init__(self, path, provider: str = "auto"):
        ckpt = load_checkpoint(path)
        self._module, cfg, stats = deploy_model(ckpt, str(path))
        meta = ArtifactMeta(kind="checkpoint", precision="fp32", image_size=cfg.image_size, model=cfg.to_dict(),
                            norm=stats.to_dict(), extra={k: ckpt[k] for k in CARRIED_KEYS if k in ckpt})
        super().__init__(path, meta)
        self.device = device_for(provider, self.path.name)

    def _activate(self) -> None:
        self._module = self._module.to(self.device).eval()
        self.backend = f"pytorch {torch.__version__} eager ({self.device})"

    def _infer(self, x: np.ndarray) -> Dict[str, np.ndarray]:
        with torch.inference_mode():
            amap, score = self._module(torch.from_numpy(x).to(self.device))
        return {MAP_NAME: amap.cpu().numpy(), SCORE_NAME: score.cpu().numpy()}  # .cpu() waits for the GPU

    def _deactivate(self) -> None:
        self._module = self._module.cpu()  # frees GPU memory; activate() moves it back
