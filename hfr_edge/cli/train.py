"""`hfr-edge train DATA`: fit the decoder on normal images and write a checkpoint."""

from __future__ import annotations

from typing import Optional

import typer
from typing_extensions import Annotated

from ..config import NO_ALIGNMENT_CHOICE, PRESET_HELP, SCORES, ModelConfig, TrainConfig, preset_fields
from .options import FORMAT_HELP, NORMAL_CLASS_HELP, TEST_HELP


def train_command(
    data: Annotated[str, typer.Argument(help="Dataset folder (MVTec AD layout, image folder, MNIST/Fashion-MNIST IDX, CIFAR-10)")],
    output: Annotated[str, typer.Option("-o", "--output", help="Checkpoint to write")] = "ckpt.pt",
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "auto",
    normal_class: Annotated[Optional[str], typer.Option("--normal-class", help=NORMAL_CLASS_HELP)] = None,
    test: Annotated[Optional[str], typer.Option("--test", help=TEST_HELP)] = None,
    backbone: Annotated[str, typer.Option(help="Frozen encoder: efficientnet_lite0 | resnet18 | wide_resnet50_2")] = ModelConfig.backbone,
    weights: Annotated[Optional[str], typer.Option(help="torchvision-format ImageNet weights (.pth) for the ResNets")] = None,
    image_size: Annotated[int, typer.Option(help="Square input size, a multiple of 32")] = ModelConfig.image_size,
    score: Annotated[str, typer.Option(help="Image score from the map: auto (mean for the one-class formats mnist, "
                                            "fashion-mnist, cifar10; otherwise top, or the preset's) | max | top "
                                            "(the mean of the map's highest 1 % of pixels) | mean")] = "auto",
    level_weights: Annotated[Optional[str], typer.Option(help="Weights of the stride 4, 8, 16 levels in the map, "
                                                               "e.g. 0.25,1,1 (a level of weight 0 leaves the graph); default: the preset's, "
                                                               "else the product's")] = None,
    decoder_widths: Annotated[Optional[str], typer.Option(help="Decoder channels at strides 16, 8, 4, e.g. "
                                                                "256,128,64 (default: the preset's, else the product's, 128,64,32)")] = None,
    decoder: Annotated[Optional[str], typer.Option(help="The decoder's 3x3 convolutions: dense | separable "
                                                        "(depthwise + pointwise, --preset light); default: the "
                                                        "preset's, else the product's")] = None,
    bottleneck: Annotated[int, typer.Option(help="Squeeze the deepest features to this many channels before the "
                                                 "decoder (0: none)")] = ModelConfig.bottleneck,
    up_kernel: Annotated[Optional[int], typer.Option(help="Kernel of the decoder's x2 transposed convolutions: 4 "
                                                          "(overlapping) or 2; default: the preset's, else the "
                                                          "product's")] = None,
    tap16: Annotated[str, typer.Option(help="Stride-16 level where the backbone has two stages there "
                                            "(efficientnet_lite0): early (stage 4, 80 ch) | late (stage 5, 112 ch)")] = ModelConfig.tap16,
    preset: Annotated[Optional[str], typer.Option(help="Named settings: " + PRESET_HELP + "; options given "
                                                        "beside it win")] = None,
    stats: Annotated[Optional[str], typer.Option(help="Normal-feature statistics fused with the residual: none (the "
                                                      "paper's HFR-AE) | shared (one mean for all positions) | "
                                                      "position (a mean per position) | local (a mean and a covariance per position, "
                                                      "for aligned parts); default: the preset's, else the product's")] = None,
    stats_weight: Annotated[Optional[float], typer.Option(help="Weight of the statistics' term against the residual's "
                                                               "(both 1 on held-out normals)")] = None,
    stats_level_weights: Annotated[Optional[str], typer.Option(help="Weights of the statistics' term at strides 4, 8, 16 "
                                                                     "(default: --level-weights where given, else the "
                                                                     "preset's, else the product's: 0,0.5,1, or 0,1,1 "
                                                                     "where the training images are aligned, 1,0,0 "
                                                                     "where they show one part at one place); a level "
                                                                     "with residual weight 0 and a statistics weight keeps its "
                                                                     "distance without its decoder stage")] = None,
    stats_pool: Annotated[Optional[str], typer.Option(help="Per level (strides 4, 8, 16), average the statistics' "
                                                           "features over k x k neighbours first (1: none, 3, 5), "
                                                           "e.g. 3,3,1; default: the preset's, else the product's")] = None,
    stats_tile: Annotated[Optional[str], typer.Option(help="Per level (strides 4, 8, 16), the t x t positions that "
                                                           "share one covariance of the local statistics (1: one per "
                                                           "position, 2, 4), e.g. 2,1,1; default: the preset's, else "
                                                           "the product's")] = None,
    stats_dims: Annotated[Optional[str], typer.Option(help="Per level (strides 4, 8, 16), the statistics read the "
                                                           "features' k leading principal directions (0: all "
                                                           "channels), e.g. 12,0,0; default: the preset's, else the "
                                                           "product's")] = None,
    stats_components: Annotated[Optional[str], typer.Option(help="Gaussians per level, each fitted on one group of "
                                                                 "the training images (k-means), the nearest one scoring: "
                                                                 "auto (1, 2 or 3, whichever gives the held-out normals the "
                                                                 "highest likelihood) or a count; default: the preset's, "
                                                                 "else the product's")] = None,
    memory: Annotated[str, typer.Option(help="Keep the training images' features for the image score: auto (the "
                                        "one-class formats: 0.5,0.75), none, or the weights of the nearest position "
                                        "and of the nearest images, e.g. 0.5,0.5")] = "auto",
    epochs: Annotated[int, typer.Option(help="Passes over the training images")] = TrainConfig.epochs,
    batch_size: Annotated[int, typer.Option(help="Images per decoder step")] = TrainConfig.batch_size,
    lr: Annotated[float, typer.Option(help="Adam learning rate")] = TrainConfig.lr,
    seed: Annotated[int, typer.Option(help="Seeds the held-out split, the decoder's initial weights and the batch order")] = TrainConfig.seed,
    holdout: Annotated[float, typer.Option(help="Share of good images held out for the normalisation statistics")] = TrainConfig.holdout,
    device: Annotated[str, typer.Option(help="PyTorch device: auto | cpu | cuda")] = TrainConfig.device,
    roi: Annotated[Optional[str], typer.Option(help="Region of interest x,y,w,h in pixels of the images; stored in the "
                                                    "checkpoint, so eval, calibrate and run crop the same")] = None,
    aspect: Annotated[str, typer.Option(help="A region that is not square becomes the model input by: squash "
                                             "(stretched, every pixel row and column kept; measured best on parts and "
                                             "textures) | letterbox (scaled to fit on grey bars: the shape kept, at "
                                             "fewer pixels)")] = "squash",
    tiles: Annotated[str, typer.Option(help="Cut the region into RxC overlapping tiles, each a model input, for small "
                                            "defects on large frames, e.g. 2x2; the frame's score is its largest tile score")] = "1x1",
    overlap: Annotated[float, typer.Option(help="Share of a tile it shares with its neighbour (--tiles)")] = 0.25,
) -> None:
    """Train the HFR-AE decoder on normal images and write a checkpoint."""
    from ..base.view import View, parse_roi, parse_tiles
    from ..train import parse_components, parse_memory, parse_triple, train_checkpoint

    weights3 = None if level_weights is None else parse_triple(level_weights, "--level-weights", float)
    stats3 = None if stats_level_weights is None else parse_triple(stats_level_weights, "--stats-level-weights", float)
    widths = None if decoder_widths is None else parse_triple(decoder_widths, "--decoder-widths", int)
    pool3 = None if stats_pool is None else parse_triple(stats_pool, "--stats-pool", int)
    tile3 = None if stats_tile is None else parse_triple(stats_tile, "--stats-tile", int)
    dims3 = None if stats_dims is None else parse_triple(stats_dims, "--stats-dims", int)
    comps = None if stats_components is None else parse_components(stats_components)
    weights2 = parse_memory(memory)
    if weights3 is not None and stats3 is None:  # one weight per level for both terms, as asked
        stats3 = weights3
    # weights given: no choice by alignment
    aligned = {} if stats3 is None else NO_ALIGNMENT_CHOICE
    if tile3 is not None:  # tiles given: the same on every kind of surface
        aligned = {**aligned, "texture_stats_tile": None}
    if widths is not None:  # widths given: the same decoder on every kind of surface
        aligned = {**aligned, "part_decoder_widths": None}
    chosen = {k: v for k, v in (("stats", stats), ("stats_weight", stats_weight), ("decoder", decoder),
                                ("up_kernel", up_kernel), ("level_weights", weights3),
                                ("stats_level_weights", stats3), ("decoder_widths", widths),
                                ("stats_pool", pool3), ("stats_tile", tile3), ("stats_dims", dims3),
                                ("stats_components", comps))
              if v is not None}
    mcfg = ModelConfig(**{**preset_fields(preset), "backbone": backbone, "image_size": image_size,
                          "bottleneck": bottleneck,
                          "tap16": tap16, **({"score": score} if score in SCORES else {}), **chosen, **aligned,
                          **(weights2 or {})})
    tcfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, holdout=holdout, device=device)
    view = View(roi=parse_roi(roi), aspect=aspect, tiles=parse_tiles(tiles), overlap=overlap)
    train_checkpoint(data, output, mcfg, tcfg, score=score, fmt=fmt, normal_class=normal_class, test=test,
                     weights=weights, view=view, memory="auto" if weights2 is None else "given")
