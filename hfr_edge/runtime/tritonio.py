"""How an hfr-edge artifact looks on Triton Inference Server: tensor dims per sample, dtypes, and the
artifact's metadata as model-config parameters. Shared by `hfr-edge triton` (config.pbtxt),
`hfr-edge serve` (PyTriton) and the remote runner, which reads the metadata back from the server so
a client needs no local file. No tritonclient or pytriton import here.
"""

from __future__ import annotations

import json
from typing import Dict, List, Tuple

from ..base.artifact import ArtifactMeta
from ..base.contract import INPUT_NAME, OUTPUT_NAMES
from ..base.errors import HfrError

DEFAULT_MODEL_NAME = "hfr_edge"
META_PARAM = "hfr_edge_metadata"  # the whole artifact metadata, JSON text: what the remote runner reads
TRITON_DTYPE = "TYPE_FP32"  # every tensor of the contract is float32
WIRE_DTYPE = "FP32"  # the same type as the KServe v2 protocol names it


def tensor_dims(image_size: int) -> Tuple[Tuple[str, List[int]], List[Tuple[str, List[int]]]]:
    """(input, outputs) as (name, dims per sample). The batch dimension belongs to Triton
    (max_batch_size > 0); `score` is [N] in the graph, so per sample it is dims [1] reshaped to []."""
    s = image_size
    return (INPUT_NAME, [3, s, s]), [(OUTPUT_NAMES[0], [1, s, s]), (OUTPUT_NAMES[1], [1])]


def parameters(meta: ArtifactMeta) -> Dict[str, str]:
    """Model-config parameters (Triton takes string values only). The readable keys are for people
    and dashboards; META_PARAM carries everything, validated on the way back."""
    norm = meta.norm
    return {
        META_PARAM: json.dumps(meta.to_dict(), sort_keys=True, separators=(",", ":")),
        "image_size": str(meta.image_size),
        "precision": meta.precision,
        "threshold": "0.5",  # outputs are normalised: 0.5 is the decision threshold
        "input": f"{INPUT_NAME}: float32 NCHW, RGB in [0, 1], {meta.image_size}x{meta.image_size}",
        "norm_low": repr(float(norm["low"])),  # raw anomaly value mapped to 0
        "norm_threshold": repr(float(norm["threshold"])),  # raw image score mapped to 0.5
    }


def meta_from_parameters(params: Dict[str, str], where: str) -> ArtifactMeta:
    """The artifact metadata a server publishes for a model, validated as a local file's would be."""
    text = params.get(META_PARAM)
    if text is None:
        raise HfrError(f"{where}: the model's config has no '{META_PARAM}' parameter, so it is not an hfr-edge "
                       f"model; serve one with `hfr-edge serve MODEL` or write its repository with `hfr-edge triton`")
    try:
        d = json.loads(text)
    except ValueError:
        raise HfrError(f"{where}: the model's '{META_PARAM}' parameter is not valid JSON; rewrite the repository "
                       f"with `hfr-edge triton` or restart `hfr-edge serve`") from None
    return ArtifactMeta.from_dict(d, where)
