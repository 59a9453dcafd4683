"""Configuration: frozen dataclasses whose fields map one to one onto CLI options and are
stored in every artifact, so a later stage never asks for what an earlier one knew."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Optional, Tuple

from .base.errors import HfrError

CKPT_FORMAT = "hfr-edge-checkpoint"
CKPT_VERSION = 1
BACKBONES = ("efficientnet_lite0", "resnet18", "wide_resnet50_2")
SCORES = ("max", "top", "mean")
TAPS16 = ("early", "late")
MEMORY_METRICS = ("cosine", "euclidean")


# values of fields added later, as every artifact written before them was built
LEGACY_MODEL_FIELDS = {"decoder_convs": 2, "bottleneck": 0, "score": "max", "up_kernel": 2, "tap16": "late",
                       "stats": "none", "stats_weight": 1.0, "decoder": "dense", "level_weights": (1.0, 1.0, 1.0),
                       "stats_level_weights": None, "stats_pool": (1, 1, 1), "stats_tile": (1, 1, 1),
                       "stats_components": 1, "aligned_level_weights": None, "part_level_weights": None,
                       "part_residual_weights": None, "level_sigmas": None, "texture_stats_tile": None,
                       "stats_dims": (0, 0, 0), "part_decoder_widths": None,
                       "memory_weight": 0.0, "image_memory_weight": 0.0, "memory_images": 0,
                       "image_memory_metric": "euclidean"}
# ModelConfig's level-weight triples that may be None: field -> (its name in messages, an example)
OPTIONAL_WEIGHTS = {"stats_level_weights": ("--stats-level-weights", "0.25,0.5,1"),
                    "aligned_level_weights": ("aligned level weights", "0,1,1"),
                    "part_level_weights": ("part level weights", "1,0,0"),
                    "part_residual_weights": ("part residual weights", "0,2,1")}
# the fields by which training chooses the levels from its images' alignment; all None: no choice (weights
# given on the command line, the one-class protocol)
NO_ALIGNMENT_CHOICE = {"aligned_level_weights": None, "part_level_weights": None, "part_residual_weights": None,
                       "texture_stats_tile": None, "part_decoder_widths": None}
# every triple a config always has (a list in to_dict, a tuple in from_dict)
TRIPLES = ("decoder_widths", "level_weights", "stats_pool", "stats_tile", "stats_dims")
# every triple a config may leave None (a list in to_dict, a tuple in from_dict, "none" on suite.py's options)
OPTIONAL_TRIPLES = (*OPTIONAL_WEIGHTS, "level_sigmas", "texture_stats_tile", "part_decoder_widths")
DECODERS = ("dense", "separable")
STATS = ("none", "shared", "position", "local")


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "efficientnet_lite0"  # frozen ImageNet encoder (see backbones.py)
    image_size: int = 256  # square input side in pixels; a multiple of 32
    # decoder channels at strides 16, 8, 4. Under the default fusion the statistics carry much of the
    # evidence, and the paper's widths (256, 128, 64; `--preset paper`) buy nothing on the suite (2 seeds,
    # every set within its seed spread) for 3.2x the decoder's cost: the whole graph at 1.46x the encoder
    # alone instead of 2.0x (ONNX Runtime fp32, batch 1; docs/benchmarks.md)
    decoder_widths: Tuple[int, int, int] = (128, 64, 32)
    # the decoder's 3x3 convolutions: "dense" (the paper's) or "separable" (depthwise + pointwise;
    # `--preset light`: 2 per stage, kernel-2 up-convolutions). On the suite (2 seeds, `position` fusion)
    # separable held bottle, brick and ELPV but lost on gravel (image AUROC -0.04, AUPRO -0.027) and grass
    # (AUPRO -0.021); under `local` (seed 0) gravel AUPRO -0.014, grass -0.007; and the narrow dense
    # decoder (128, 64, 32) is cheaper still (1.32 against 1.39 GFLOP), so the default stays dense (docs/benchmarks.md)
    decoder: str = "dense"
    # 3x3 convolutions per decoder stage after its upsampling. Dense, bottle, 20 epochs, pixel AUROC /
    # AUPRO: 0: 0.981 / 0.935, 1: 0.986 / 0.952, 2: 0.984 / 0.949 (and twice the decoder's compute).
    # Separable: 1 lost 0.002 pixel AUROC / 0.005 AUPRO on bottle against 2
    decoder_convs: int = 1
    # channels of a 1x1 squeeze of the deepest features before the decoder (0: none): less room to
    # reconstruct what is not normal. Bottle (1 conv): none 0.986 / 0.952, 64: 0.987 / 0.955, 16: 0.985 / 0.943;
    # one-class Fashion-MNIST prefers 16 (benchmarks/oneclass.py)
    bottleneck: int = 64
    # kernel of the decoder's x2 transposed convolutions: 4 (overlapping) or 2. Dense decoder, bottle, 20
    # epochs: 2: 0.987 / 0.955, 4: 0.989 / 0.962; bilinear x2 + 3x3 conv instead: 0.983 / 0.943. The
    # separable decoder takes 2 (the 3x3 depthwise after it overlaps the blocks; ONNX Runtime's
    # ConvTranspose runs at a fraction of its Conv speed, so kernel 4 would cost 4x there)
    up_kernel: int = 4
    # the stride-16 level where the backbone has two stages at that stride (EfficientNet-Lite0: "early" =
    # stage 4's output, 80 channels; "late" = stage 5's, 112); ResNets have one (layer3). Early localises
    # bottle's defects better (30 epochs, 2 seeds: pixel AUROC 0.9899 -> 0.9912, AUPRO 0.964 -> 0.968) but
    # detects worse where the whole image decides: ELPV 0.806 -> 0.780, Fashion-MNIST's hard classes
    # 0.901 -> 0.890. The default keeps "late"; docs/benchmarks.md.
    tap16: str = "late"
    sigma: float = 4.0  # Gaussian smoothing of the anomaly map, in pixels, where level_sigmas is None
    # the smoothing per level (strides 4, 8, 16); None: `sigma` at every level. Each level is upsampled
    # and blurred by one constant matrix per side, so a width per level costs nothing in the graph. The
    # stride-4 level (in the default map only on one part at one place) keeps its detail with 2 px:
    # bottle pixel AUROC / AUPRO 0.9913 / 0.9638 -> 0.9918 / 0.9676 (2 seeds, spread 0.0008), shifted by
    # up to +-4 / 8 px AUPRO +0.003 / +0.002; 1 px gains 0.0007 more unshifted and loses image AUROC
    # shifted. At strides 8 and 16 another width moved the textures by < 0.003 either way (docs/benchmarks.md)
    level_sigmas: Optional[Tuple[float, float, float]] = (2.0, 4.0, 4.0)
    # weight of each level (strides 4, 8, 16) in the map; a level of weight 0 leaves the exported graph
    # with its decoder stage, residual and statistics. The stride-4 level of EfficientNet-Lite0 is
    # low-level texture the decoder cannot predict from stride 32: under the residual alone (`--preset
    # paper`) bottle's pixel AUROC / AUPRO are 0.982 / 0.937 at (1, 1, 1), 0.985 / 0.946 at (0.25, 1, 1).
    # With per-position statistics (`local`) the coarser levels carry the evidence: (0, 0.5, 1) wins the
    # suite (docs/benchmarks.md; ELPV 0.850 -> 0.858 image AUROC against 0.25, 1, 1) and leaves out
    # the decoder's most expensive stage (ELPV's graph: p50 31 ms instead of 50 in the same run). The
    # stride-8 residual then adds nothing its statistics do not carry: (0, 0, 1) with the statistics at
    # (0, 0.5, 1) holds the suite (2 seeds; ELPV +0.0025, brick +0.003 pixel AUROC, bottle -0.0025
    # AUPRO, the rest within seed spread) and leaves out the decoder's stride-8 stage too: the whole
    # graph at 1.34x the encoder alone instead of 1.61x (ONNX Runtime fp32, batch 1, benchmarks/speed.py)
    level_weights: Tuple[float, float, float] = (0.0, 0.0, 1.0)
    # how the map becomes the image score: "top" (the mean of the map's highest 1 % of pixels: a local
    # defect; against the map's maximum, "max", it wins the suite's image AUROC: gravel +0.018, ELPV
    # +0.002, brick +0.002, grass +0.007, bottle 1.0 either way, same decoders, 2 seeds) or "mean"
    # (the whole image is of another kind: the one-class protocol on MNIST/Fashion-MNIST/CIFAR-10,
    # where the mean beat the max, see benchmarks/oneclass.py)
    score: str = "top"
    # the normal features' statistics fused with the residual (one Gaussian per level, fitted after
    # training): "none" (the paper's HFR-AE: the reconstruction residual alone; `--preset paper`),
    # "shared" (one mean and covariance for all positions), "position" (a mean per position, one
    # covariance) or "local" (a mean and a covariance per position, as PaDiM's; the default, `--preset
    # surface`): it wins the suite (docs/benchmarks.md; ELPV 0.817 -> 0.858 against "position"),
    # and its int8 graphs keep their accuracy with the encoder's early layers in float.
    stats: str = "local"
    # weight of the statistics' term against the residual's (both scaled to 1 on normals); under "local"
    # and level weights 0, 0.5, 1, weight 2 against 1 on the suite (2 seeds): ELPV +0.002, brick AUPRO
    # +0.007, gravel AUPRO +0.010, grass image AUROC -0.007, bottle AUPRO -0.002 (most within seed spread)
    stats_weight: float = 2.0
    # the statistics' own level weights (None: `level_weights`, one weight per level for both terms). A
    # level with a statistics weight and a residual weight of 0 keeps its distance and leaves its decoder
    # stage out of the graph: the stride-4 level's statistics cost a few MFLOP, its decoder stage 0.7
    # GFLOP. The default weighs the stride-8 statistics 0.5 without their residual; at 0.75 / 1 bottle
    # gains (pixel AUROC 0.9864 / 0.9871) and gravel loses (image AUROC -0.015 / -0.023)
    stats_level_weights: Optional[Tuple[float, float, float]] = (0.0, 0.5, 1.0)
    # the statistics' level weights that replace `stats_level_weights` where the training images are
    # ALIGNED: the same part at the same place, told from the training features alone (at stride 8,
    # pooled 3x3 (train.ALIGN_POOL, whatever `stats_pool`), away from the grid's border and from what no image shows, the
    # variance of the per-position means across positions is at least train.ALIGNED_RATIO (0.1) x the
    # variance of the images around them; measured: bottle 12, ELPV solar cells 0.31, the brick / grass
    # / gravel textures 0.010-0.013, at 256 px; letterboxed textures 0.011-0.017). There the stride-8 statistics weighed as the stride-16 ones trace the outlines (bottle
    # pixel AUROC 0.9854 -> 0.9871, AUPRO 0.9385 -> 0.9444; ELPV +0.0004), where on a texture they
    # cost (brick pixel AUROC -0.005, gravel image AUROC -0.013). Training records the ratio and the
    # choice; None: `stats_level_weights` always
    aligned_level_weights: Optional[Tuple[float, float, float]] = (0.0, 1.0, 1.0)
    # the statistics' level weights where the training images show ONE PART AT ONE PLACE: alignment at
    # least train.PART_RATIO (3; bottle 12.4, ELPV 0.31). There the finest level's per-position
    # statistics alone (pooled 3x3, `stats_pool`) trace the part (bottle pixel AUROC 0.9871 -> 0.991),
    # where every weight at strides 8 / 16 beside it costs; on ELPV's cells (aligned, not a part) the
    # stride-4 statistics cost image AUROC (0.887 -> 0.792). A part shifted by up to +-8 px at 256 px
    # still gains, by +-16 px (alignment 2.2) it loses: docs/benchmarks.md. None: aligned images
    # take `aligned_level_weights` however aligned (with `aligned_level_weights` None, no choice at all)
    part_level_weights: Optional[Tuple[float, float, float]] = (1.0, 0.0, 0.0)
    # the residual's level weights that replace `level_weights` on ONE PART AT ONE PLACE (with
    # `part_level_weights`): the stride-8 residual at the statistics' weight beside the stride-16 one.
    # The stride-4 statistics say what is normal at each pixel of the part's outline; the stride-8
    # residual sees what the decoder cannot rebuild there, and the two add: bottle pixel AUROC / AUPRO
    # 0.9917 / 0.9676 -> 0.9926 / 0.9709 (2 seeds), shifted by up to +-8 px 0.9900 / 0.9646 -> 0.9907 /
    # 0.9667 and image AUROC 0.9972 -> 1.0. It brings the decoder's stride-8 stage into the graph (+0.19
    # GFLOP: the whole graph 1.69x the encoder alone instead of 1.45x on ONNX Runtime fp32; 0.44x PaDiM's
    # latency). docs/benchmarks.md. None: `level_weights` whatever the alignment
    part_residual_weights: Optional[Tuple[float, float, float]] = (0.0, 2.0, 1.0)
    # per level (strides 4, 8, 16), the statistics' features averaged over a k x k neighbourhood first (1:
    # none; PatchCore's "locally aware" patch features take 3). At stride 8 (1, 3, 1) it wins the suite
    # (2 seeds): brick +0.019 image / +0.008 pixel AUROC, grass +0.012 image AUROC, ELPV +0.007, bottle
    # +0.002 pixel AUROC, the rest within seed spread; at stride 16 too (3, 3) it blurs the map (bottle
    # AUPRO -0.029, gravel -0.034). At stride 4 (used by a part only) 3 keeps a part that shifts by a
    # few pixels: bottle shifted +-8 px, pixel AUROC 0.9901 pooled, 0.9870 not. docs/benchmarks.md
    stats_pool: Tuple[int, int, int] = (3, 3, 1)
    # per level, "local" statistics: the t x t positions that share one covariance (each keeps its own
    # mean; 1: a covariance per position, as PaDiM's). A CPU lever for a part's map, whose stride-4
    # product read 28 MB of whitening matrices per frame with three Gaussians of all 24 channels (2.4 MB
    # since `stats_dims` projects them, and auto then takes one): at 2,1,1 the whole graph
    # is 1.65x the encoder alone instead of 1.80x (ONNX Runtime fp32, batch 1), at 4,1,1 1.59x; bottle
    # pixel AUROC / AUPRO (3 seeds) 0.9926 / 0.9711 -> 0.9925 / 0.9709 and 0.9924 / 0.9702, shifted by up
    # to +-8 px unchanged at 2. Not the default: it keeps bottle's AUPRO at 0.971 (docs/benchmarks.md, "Speed")
    stats_tile: Tuple[int, int, int] = (1, 1, 1)
    # the `stats_tile` that replaces it where the training images read as a TEXTURE (alignment below
    # train.ALIGNED_RATIO; aligned images and parts keep `stats_tile`). On the textures 2 x 2 positions
    # sharing one covariance at strides 8 and 16 gain on the same decoders (3 seeds, image / pixel AUROC /
    # AUPRO: brick +0.0013 / +0.0003 / +0.0010, gravel +0.0024 / +0.0001 / +0.0025, grass +0.0031 / +0.0001
    # / +0.0011; brick and gravel on every seed, each inside its set's seed spread) and the graph reads a
    # quarter of the whitening matrices; on ELPV's aligned cells they cost 0.0062 image AUROC, on a part
    # AUPRO (docs/benchmarks.md). None: `stats_tile` whatever the alignment
    texture_stats_tile: Optional[Tuple[int, int, int]] = (1, 2, 2)
    # Gaussians per level (each fitted on one group of the training images, k-means on their deepest
    # features); the distance is the nearest one's at each position. 0 = auto: 1, 2 or 3, whichever
    # gives the held-out normals the highest likelihood; training records the count it chose. Auto takes
    # 2 on ELPV (mono- and polycrystalline cells are not one Gaussian: 0.865 -> 0.882 image AUROC), 3 on
    # the one-class sets and 1 on bottle and the textures, where 2 would lose (grass AUPRO -0.022)
    stats_components: int = 0
    # per level, the statistics read a level's features projected on their k leading principal directions
    # (fitted on the training images' features with the statistics; 0: all channels). At stride 4 (a
    # part's map; 24 channels) 12 gain on bottle on every seed (AUPRO 0.9711 -> 0.9734, 5 seeds, against
    # a spread of 0.0008): with a few hundred images the per-position covariances of the last dozen
    # directions, a few percent of the variance, are noise the whitening magnifies; the held-out normals
    # then take one Gaussian instead of two or three, and the whitening matrices the graph reads per frame fall
    # from 28 MB to 2.4 MB (docs/benchmarks.md). Levels 8 and 16: docs/benchmarks.md, "Sixteenth session"
    stats_dims: Tuple[int, int, int] = (12, 0, 0)
    # the `decoder_widths` that replace them where the training images show ONE PART AT ONE PLACE (with
    # `part_level_weights`; the decoder is built once the encoder's features have told the kind, before
    # it trains, as `--decoder-widths` would build it). There the stride-4 statistics carry the map and
    # the decoder's residual adds at strides 8 and 16: 64 / 48 / 32 keep bottle's AUPRO within its seed
    # spread (5 seeds, 0.9734 -> 0.9730, spread 0.0009) and take a part's graph from about 1.55x to about
    # 1.4x its encoder alone (ONNX Runtime fp32, batch 1); on the textures the narrow decoder costs
    # beyond their spreads, so they keep `decoder_widths` (docs/benchmarks.md, Speed, "Sixteenth session"). None:
    # `decoder_widths` whatever the alignment
    part_decoder_widths: Optional[Tuple[int, int, int]] = (64, 48, 32)
    # the training images' own features kept as a memory beside the statistics (as PatchCore keeps
    # patches, and SPADE whole images), for the image score only: `memory_weight` weighs each stride-16
    # position's distance to the nearest training image's feature at that position (the largest over
    # the positions), `image_memory_weight` the mean distance of the image's deepest features (pooled
    # to 2 x 2) to those of its 3 nearest training images; each standardised on the held-out normals
    # and scaled to the map's score there. A Gaussian averages a rare normal shape away where a memory
    # finds its like: a "1" written with a foot and a flag (mnist-1's costliest normals). 0 leaves a
    # term out of the graph. The one-class formats take 0.5 / 0.75 with the cosine image memory
    # (train.ONE_CLASS_MEMORY; the six one-class sets, 2 seeds, same decoders, against the nineteenth
    # session's 0.25 / 0.25 euclidean: mnist-1 0.9994 / 0.9995 -> 0.9996 / 0.9996, ahead of PatchCore
    # on 3 of 3 seeds; fashion-mnist-0 / -2 +0.005 / +0.002; fashion-mnist-1 -0.0002, still above no
    # memory; docs/benchmarks.md, "Twentieth session"); defects keep 0 / 0
    memory_weight: float = 0.0
    image_memory_weight: float = 0.0
    # training images the memory holds (recorded by training: all of them, or as many as
    # train.MEMORY_BYTES allow at this input size, evenly spaced)
    memory_images: int = 0
    # how the image memory compares images: "cosine" (each image's pooled deepest features scaled to
    # unit length first, so a thicker stroke or a brighter garment is not a distance of its own) or
    # "euclidean" (the nineteenth session's, as its checkpoints recorded it). At 0.25 / 0.25, same
    # decoders, 2 seeds: fashion-mnist-0 +0.0035, fashion-mnist-2 +0.001, mnist-2 +0.0013 against
    # euclidean, and it lets the weights rise without costing the garments (docs/benchmarks.md,
    # "Twentieth session")
    image_memory_metric: str = "cosine"

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise HfrError(f"unknown backbone {self.backbone!r}; choose one of: {', '.join(BACKBONES)}")
        if self.image_size < 32 or self.image_size % 32:
            raise HfrError(f"--image-size {self.image_size} must be a multiple of 32 and at least 32")
        if len(self.decoder_widths) != 3 or min(self.decoder_widths) < 1:
            raise HfrError(f"--decoder-widths {','.join(map(str, self.decoder_widths))} must be three positive integers")
        if self.bottleneck < 0:
            raise HfrError(f"--bottleneck {self.bottleneck} must be 0 (none) or a channel count")
        if self.tap16 not in TAPS16:
            raise HfrError(f"--tap16 {self.tap16!r} must be one of: {', '.join(TAPS16)}")
        if self.decoder not in DECODERS:
            raise HfrError(f"--decoder {self.decoder!r} must be one of: {', '.join(DECODERS)}")
        if self.up_kernel not in (2, 4):
            raise HfrError(f"--up-kernel {self.up_kernel} must be 2 or 4")
        if not 0 <= self.decoder_convs <= 8:
            raise HfrError(f"decoder convs {self.decoder_convs} must be between 0 and 8")
        if self.sigma <= 0:
            raise HfrError(f"sigma {self.sigma} must be positive")
        if self.level_sigmas is not None and (len(self.level_sigmas) != 3 or not min(self.level_sigmas) > 0):
            raise HfrError(f"level sigmas {','.join(map(str, self.level_sigmas))} must be three widths > 0 "
                           "(strides 4, 8, 16; e.g. 2,4,4)")
        if self.stats not in STATS:
            raise HfrError(f"--stats {self.stats!r} must be one of: {', '.join(STATS)}")
        if not self.stats_weight >= 0:
            raise HfrError(f"--stats-weight {self.stats_weight} must be >= 0")
        if self.score not in SCORES:
            raise HfrError(f"--score {self.score!r} must be one of: {', '.join(SCORES)}")
        if len(self.level_weights) != 3 or min(self.level_weights) < 0 or not max(self.level_weights) > 0:
            raise HfrError(f"--level-weights {','.join(map(str, self.level_weights))} must be three weights >= 0, "
                           "at least one positive (e.g. 0.25,1,1)")
        for name, (label, example) in OPTIONAL_WEIGHTS.items():
            w = getattr(self, name)
            if w is not None and (len(w) != 3 or min(w) < 0):
                raise HfrError(f"{label} {','.join(map(str, w))} must be three weights >= 0 (e.g. {example})")
        if len(self.stats_pool) != 3 or not set(self.stats_pool) <= {1, 3, 5}:
            raise HfrError(f"--stats-pool {','.join(map(str, self.stats_pool))} must be three of 1 (none), 3, 5 "
                           "(strides 4, 8, 16; e.g. 1,1,3)")
        if not self._tiles_fit(self.stats_tile):
            raise HfrError(f"--stats-tile {','.join(map(str, self.stats_tile))} must be three of 1 (a covariance "
                           f"per position), 2, 4, each dividing its level's grid at --image-size {self.image_size} "
                           "(strides 4, 8, 16; e.g. 2,1,1)")
        if self.texture_stats_tile is not None and not self._tiles_fit(self.texture_stats_tile):
            raise HfrError(f"texture stats tile {','.join(map(str, self.texture_stats_tile))} must be three of 1, 2, "
                           f"4, each dividing its level's grid at --image-size {self.image_size} (e.g. 1,2,2)")
        if self.part_decoder_widths is not None and (len(self.part_decoder_widths) != 3
                                                     or min(self.part_decoder_widths) < 1):
            raise HfrError(f"part decoder widths {','.join(map(str, self.part_decoder_widths))} must be three "
                           "positive integers (e.g. 64,48,32)")
        if len(self.stats_dims) != 3 or min(self.stats_dims) < 0:
            raise HfrError(f"--stats-dims {','.join(map(str, self.stats_dims))} must be three channel counts >= 0 "
                           "(strides 4, 8, 16; 0: all channels; e.g. 12,0,0)")
        if not 0 <= self.stats_components <= 8:
            raise HfrError(f"--stats-components {self.stats_components} must be auto (0) or between 1 and 8")

        if not (self.memory_weight >= 0 and self.image_memory_weight >= 0):
            raise HfrError(f"memory weights {self.memory_weight:g}, {self.image_memory_weight:g} must be >= 0 "
                           "(0 leaves a term out; e.g. 0.5,0.5)")
        if self.image_memory_metric not in MEMORY_METRICS:
            raise HfrError(f"image memory metric {self.image_memory_metric!r}: choose one of {', '.join(MEMORY_METRICS)}")
        if self.memory_images < 0:
            raise HfrError(f"memory_images {self.memory_images} must be >= 0 (the training images the memory "
                           "holds, recorded by training); retrain the checkpoint")

    def _tiles_fit(self, tile) -> bool:
        """Three statistics tiles of 1, 2 or 4, each dividing its level's grid (strides 4, 8, 16)."""
        return len(tile) == 3 and set(tile) <= {1, 2, 4} and not any(
            (self.image_size // s) % t for s, t in zip((4, 8, 16), tile))

    @property
    def uses_memory(self) -> bool:
        return (self.memory_weight > 0 or self.image_memory_weight > 0) and self.memory_images > 0

    @property
    def stats_weights(self) -> Tuple[float, ...]:
        """Per level, the weight of its statistics in the map: `stats_level_weights`, else `level_weights`."""
        return tuple(self.stats_level_weights or self.level_weights)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in (*TRIPLES, *OPTIONAL_TRIPLES):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        # a field missing from an older artifact had the value it was built with, not today's default
        kw = {**LEGACY_MODEL_FIELDS, **{k: v for k, v in d.items() if k in known}}
        for k in (*TRIPLES, *OPTIONAL_TRIPLES):
            if kw.get(k) is not None:
                kw[k] = tuple(kw[k])
        return cls(**kw)


# named settings (`train --preset NAME`): the fields each sets over ModelConfig's defaults
PRESETS = {
    # the defaults: per-position feature statistics at strides 8 and 16 (at stride 4 alone on a placed
    # part, with the stride-8 residual) plus the stride-16 residual; wins the suite (textured, grayscale
    # and aligned surfaces above all; docs/benchmarks.md)
    "surface": {"stats": "local", "stats_weight": 2.0, "level_weights": (0.0, 0.0, 1.0),
                "stats_level_weights": (0.0, 0.5, 1.0), "aligned_level_weights": (0.0, 1.0, 1.0),
                "part_level_weights": (1.0, 0.0, 0.0), "part_residual_weights": (0.0, 2.0, 1.0),
                "decoder": "dense", "decoder_convs": 1, "up_kernel": 4,
                "decoder_widths": (128, 64, 32), "stats_pool": (3, 3, 1), "stats_tile": (1, 1, 1),
                "texture_stats_tile": (1, 2, 2), "stats_components": 0, "level_sigmas": (2.0, 4.0, 4.0),
                "stats_dims": (12, 0, 0), "part_decoder_widths": (64, 48, 32)},
    # HFR-AE as published: the reconstruction residual alone, all three levels (to reproduce the paper;
    # on bottle the default is now ahead of it: docs/benchmarks.md)
    "paper": {"stats": "none", "score": "max", "level_weights": (0.25, 1.0, 1.0), "stats_level_weights": None,
              "aligned_level_weights": None, "part_level_weights": None, "part_residual_weights": None,
              "texture_stats_tile": None, "decoder": "dense", "decoder_convs": 1,
              "up_kernel": 4, "decoder_widths": (256, 128, 64), "level_sigmas": None, "part_decoder_widths": None},
    # the separable decoder under the previous default fusion (per-position mean, one covariance per
    # level, all three levels), as measured on the suite: for CPUs; loses on fine textures (gravel)
    "light": {"stats": "position", "stats_weight": 1.0, "level_weights": (0.25, 1.0, 1.0),
              "stats_level_weights": None, "aligned_level_weights": None, "part_level_weights": None,
              "part_residual_weights": None, "texture_stats_tile": None, "part_decoder_widths": None,
              "decoder": "separable", "decoder_convs": 2,
              "up_kernel": 2,
              "decoder_widths": (256, 128, 64),
              "stats_pool": (1, 1, 1), "stats_tile": (1, 1, 1), "stats_components": 1, "level_sigmas": None},
}
PRESET_HELP = ("surface (the default: per-position feature statistics at strides 8 and 16, at stride 4 on one "
               "part at one place (with the stride-8 residual), + the stride-16 residual, a narrow decoder, as "
               "many Gaussians as the normals' kinds) | paper (the published HFR-AE: residual only, the "
               "paper-sized decoder: to reproduce the paper) | light (a separable decoder with a mean per position; weaker on fine textures)")


def preset_fields(name: Optional[str]) -> dict:
    if name is None:
        return {}
    if name not in PRESETS:
        raise HfrError(f"--preset {name!r} must be one of: {', '.join(PRESETS)}")
    return dict(PRESETS[name])


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30  # passes over the training images (bottle: 60 epochs with a cosine schedule gained < 0.001)
    batch_size: int = 16  # images per decoder step
    lr: float = 0.005  # Adam learning rate
    betas: Tuple[float, float] = (0.5, 0.999)  # Adam betas (Reverse Distillation's)
    schedule: str = "constant"  # learning-rate schedule: constant | cosine (decays to 0 over the epochs)
    seed: int = 0  # seeds the split, the decoder's initial weights and the batch order
    holdout: float = 0.1  # share of good images held out for the normalisation statistics
    device: str = "auto"  # auto | cpu | cuda

    def __post_init__(self):
        if self.epochs < 1:
            raise HfrError(f"--epochs {self.epochs} must be at least 1")
        if self.batch_size < 1:
            raise HfrError(f"--batch-size {self.batch_size} must be at least 1")
        if not self.lr > 0:
            raise HfrError(f"--lr {self.lr} must be positive")
        if not 0 <= self.holdout < 0.9:
            raise HfrError(f"--holdout {self.holdout} must be in [0, 0.9)")
        if self.schedule not in ("constant", "cosine"):
            raise HfrError(f"--schedule {self.schedule!r} must be constant or cosine")
        if self.device not in ("auto", "cpu", "cuda"):
            raise HfrError(f"--device {self.device!r} must be auto, cpu or cuda")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d


@dataclass(frozen=True)
class NormStats:
    """Maps raw anomaly values to normalised ones: 0.5 at the threshold, 0 at `low`.

    normalised = 0.5 * (raw - low) / (threshold - low). Affine, so rankings (AUROC) are
    exactly those of the raw values; not clipped, so a value far beyond the threshold stays
    distinguishable (displays clip to [0, 1]). Held-out normal images fall in about [0, 0.5].
    """

    threshold: float  # raw image score at the decision boundary (mean + 3 std of held-out normals)
    low: float  # raw value mapped to 0: the smallest anomaly-map value on held-out normals
    # raw map value at the pixel decision boundary (same rule on the held-out maps' maxima); None:
    # equal to `threshold` (the image score is the map's max)
    map_threshold: Optional[float] = None
    score_mean: float = 0.0  # held-out normal image scores, for the record
    score_std: float = 0.0
    score_max: float = 0.0
    n_images: int = 0

    def __post_init__(self):
        for thr in (self.threshold, self.map_threshold):
            if thr is not None and not thr > self.low:
                raise HfrError(f"normalisation statistics are invalid: threshold {thr} must exceed low {self.low}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "NormStats":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def scale(self) -> float:
        return 0.5 / (self.threshold - self.low)

    @property
    def map_scale(self) -> float:
        thr = self.threshold if self.map_threshold is None else self.map_threshold
        return 0.5 / (thr - self.low)
