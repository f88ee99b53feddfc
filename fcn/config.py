"""The typed configuration: every key, its type, its default and what it means.

The defaults are the mini-batch FCN-32s recipe of the document this project
started from (batches of 20 at 500x500 with +-32 px shift and flips, normalised
loss, SGD lr 3.2e-3 momentum 0.9 weight decay 2e-4, 30 epochs, SBD train ->
seg11valid), the first stage of FCN-32s -> 16s -> 8s; the paper's own recipes
are in predefined_configs/.

A run's configuration is the schema below, merged with one or more YAML files
(``config.yml`` or ``predefined_configs/*.yml``, which hold only differences
from these defaults) and then with ``key=value`` overrides from the command
line. It is validated once, made read-only, and never changed afterwards.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

ARCHS = ("fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce")
BACKBONES = (
    "vgg16",
    "vgg16_bn",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "mobilenet_v3_large",
)
VGG_BACKBONES = ("vgg16", "vgg16_bn")
DATASETS = (
    "voc",
    "sbd",
    "voc_aug",
    "folder",
    "cityscapes",
    "ade20k",
    "coco",
    "pascal_context",
    "nyud",
    "siftflow",
)
"""data.<split>.name choices; any other name with a colon is a Dataset class by import path
('package.module:Class', fcn/data/external.py)."""
PAPER_DATASET_CLASSES = {"pascal_context": 60, "nyud": 40, "siftflow": 33}
"""The classes of the paper's other datasets (fcn/data/paper.py names them)."""
LAYER_INPUT_DATASETS = ("nyud", "siftflow")
"""Readers that give the authors' data-layer input (float, mean subtracted): normalization=caffe."""
MODALITY_CHANNELS = {"color": 3, "depth": 1, "hha": 3}
"""NYUDv2's inputs (nyud_layers.py tops) and their channels: colour (BGR), log-depth, HHA."""
FAST_PATHS = ("none", "auto", "winograd", "int8")  # eval.fast_path: fcn/fastpath.py
ENGINES = ("torch", "onnxruntime", "openvino")  # eval.engine: fcn/engines.py
VOID = 255
"""The default of data.ignore_index (VOC's void border). Code takes the configured value as an
argument; this constant is only the default of those arguments (also as fcn.data.VOID)."""
LOSS_NAMES = ("ce", "dice", "focal", "lovasz", "ohem")  # loss.terms[i].name: fcn/losses.py
CLASS_WEIGHTINGS = ("inverse_frequency", "median_frequency")  # loss.class_weights as a string


class ConfigError(ValueError):
    """A configuration problem, with a one-line message naming the key and its source."""


@dataclass
class ModelConfig:
    arch: str = "fcn32s"
    """Which FCN: fcn32s, fcn16s, fcn8s or fcn8s_atonce (the paper's four)."""
    backbone: str = "vgg16"
    """torchvision backbone: vgg16 (the paper), vgg16_bn, resnet18/34/50/101, mobilenet_v3_large; or
    any timm model as 'timm:<name>' (e.g. timm:convnext_tiny, timm:tf_efficientnetv2_s.in21k_ft_in1k):
    its features at strides 8, 16 and 32, found from timm's feature_info (geometry 'same' only)."""
    num_classes: int = 21
    """Number of classes including background (21 for PASCAL VOC)."""
    pretrained: str = "true"
    """Backbone init: 'false' (random), 'true' (ImageNet weights: torchvision's, or timm's for a timm
    backbone, downloaded when not cached) or a path to a local file: torchvision's state dict for
    that backbone, or a timm state dict (.safetensors or .pth, e.g. timm's model.safetensors)."""
    head: str = "score"
    """What scores each stride's features: 'score' (the paper's 1x1 score_fr/score_pool4/score_pool3)
    or 'fcn' (torchvision's FCNHead on each: 3x3 conv to in_channels/4, BatchNorm, ReLU,
    Dropout(0.1), 1x1 conv to num_classes)."""
    geometry: str = "paper"
    """'paper': conv1_1 padded by 100, unpadded fc6 and the reference crops (VGG only);
    'same': no padding of 100, padded fc6, fusion aligned without magic offsets."""
    upsampling: str = "transposed"
    """'transposed' (the paper: deconvolution with bilinear init), 'bilinear' (interpolation),
    or 'nearest_conv' (nearest upsampling followed by a 1x1 convolution)."""
    learnable_upsampling: bool = False
    """Train the bilinear-initialised deconvolutions; the reference freezes them (lr_mult 0)."""
    fusion: str = "skip"
    """'skip': the paper's sequential skip fusion; 'full': stride-32/16/8 scores each brought to
    the input size and combined with learned weights."""
    dropout: str = "element"
    """Dropout on the stride-32 features: after fc6 and fc7 for VGG (the reference's drop6/drop7),
    one added after the last stage for the other backbones (timm's too): 'element' (the
    reference's Caffe Dropout) or 'channel' (Dropout2d)."""
    dropout_p: float = 0.5
    """Probability of that dropout (the reference: 0.5; 0 = off). The 'fcn' head's own Dropout(0.1)
    is separate."""
    late_fusion: List[str] = field(default_factory=list)
    """Late fusion (nyud-fcn32s-color-hha): one VGG16 trunk and score_fr per modality, e.g. [color,
    hha], taking the input's channels in that order (color 3, depth 1, hha 3; in_channels is their
    sum); score_fused = the mean of the trunks' score_fr (Eltwise SUM, coeff 0.5 each), then one
    upscore. fcn32s only (the one net the authors published the prototxt of); [] = one trunk."""
    geometric_classes: int = 0
    """SIFT Flow's second head (siftflow-fcn*s): this many geometric classes (3: sky, horizontal,
    vertical) scored by their own score_fr_geo / skip path on the same trunk; the logits are the
    semantic classes then these, along the channels; the loss is the sum of both heads' (summed)
    cross-entropies. 0 = one head."""
    init_from: str = ""
    """Staged training: a checkpoint (e.g. a trained FCN-32s) whose matching tensors initialise
    this model, as the paper initialises FCN-16s from FCN-32s and FCN-8s from FCN-16s."""
    in_channels: int = 3
    """Channels of the input images (3: RGB; e.g. 4 for RGB-D, 1 for grey, N for multispectral
    TIFF/.npy). Pretrained first convolutions are adapted to it by timm's rule (RGB filters repeated
    over the channels and scaled by 3/in_channels; one channel gets their sum); docs/nchannel.md."""


@dataclass
class DatasetConfig:
    name: str = "voc"
    """'voc' (PASCAL VOC 2012), 'sbd' (benchmark_RELEASE), 'voc_aug' (VOC 2012 train + SBD
    train/val minus VOC 2012 val; 10,582 images), 'folder' (any dataset in VOC layout),
    'cityscapes' (leftImg8bit/ + gtFine/ labelIds; needs data.label_map), 'ade20k'
    (ADEChallengeData2016), 'coco' (a COCO-format segmentation JSON: annotations and images below;
    root and split unused), the paper's other datasets in the layouts of the authors' data layers
    (fcn/data/paper.py): 'pascal_context' (59 classes + background), 'nyud' (NYUDv2, 40 classes) or
    'siftflow' (33 semantic classes; masks carry the 3 geometric classes too), or your own Dataset
    class by import path: 'package.module:Class'."""
    root: str = "data"
    """Directory holding VOCdevkit/ and/or benchmark_RELEASE/ (voc, sbd, voc_aug), or the
    dataset's own root for 'folder' (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/),
    'cityscapes' (leftImg8bit/, gtFine/), 'ade20k' (ADEChallengeData2016: images/, annotations/),
    pascal_context (VOC2010/ and pascal-context/), nyud and siftflow (see docs/paper_datasets.md)."""
    split: str = "train"
    """Split name: voc: train, val, trainval, seg11valid; sbd: train, val; voc_aug: train;
    folder: any ImageSets/Segmentation/<split>.txt; cityscapes: train, val, test; ade20k:
    training, validation; pascal_context: train, val; nyud: train, val, test, trainval; siftflow:
    trainval, test. A Dataset class by import path gets it only through its args."""
    modalities: List[str] = field(default_factory=lambda: ["color"])
    """nyud: the inputs stacked along the channels, in order: color (3, BGR minus the mean), depth
    (1, log depth minus the mean), hha (3): [color, depth] is the early-fusion 4-channel input,
    [color, hha] the late-fusion pair. Other datasets: [color] only."""
    args: Any = field(default_factory=dict)
    """Keyword arguments of the constructor of a Dataset class named by import path
    (name: 'my_package.my_module:MyDataset'), e.g. {root: /data/x, split: train}; must stay empty
    for the built-in names. See docs/datasets.md for what the class returns."""
    annotations: str = ""
    """name 'coco': the COCO-format JSON (polygons or RLE; CVAT, Label Studio, Roboflow and labelme
    export it). Its masks are cached in .fcn_coco_cache/ beside it (docs/coco.md)."""
    images: str = ""
    """name 'coco': the directory holding the JSON's images (file_name relative to it)."""


@dataclass
class TransformConfig:
    preset: str = "standard"
    """Training transforms: 'paper' (native size, normalisation only, as the reference trained)
    or 'standard' (random scale, pad, crop, flip, colour jitter). Evaluation always uses 'eval'
    (native resolution, masks never resized)."""
    normalization: str = "auto"
    """'auto': data.transforms.mean/std when set; else a timm backbone's own (its pretrained_cfg,
    written into the run's config as mean/std, so evaluation and export use the same input); else
    torchvision's. 'torchvision' (RGB, ImageNet mean/std) or 'caffe' (BGR, 0-255, minus the
    reference's mean), the latter for weights converted from the authors' Caffe models."""
    mean: List[float] = field(default_factory=list)
    """With normalization 'auto': the mean of each channel (model.in_channels values) of pixels in
    [0, 1] (input = (x - mean) / std; 8-bit pixels are x/255, 16-bit x/65535, float as stored);
    empty = the backbone's (see normalization), extended past three channels by 0.5."""
    std: List[float] = field(default_factory=list)
    """With normalization 'auto': the standard deviation of each channel that goes with mean
    (empty: the backbone's, extended past three channels by 0.25)."""
    crop_size: int = 500
    """Side of the square training crop of the 'standard' preset (the paper's images are <=500)."""
    scale_min: float = 1.0
    """Smallest random rescale factor of the 'standard' preset."""
    scale_max: float = 1.0
    """Largest random rescale factor of the 'standard' preset."""
    max_shift: int = 32
    """'standard' preset: extra random translation in pixels (image 0, mask data.ignore_index fill)."""
    hflip: bool = True
    """'standard' preset: random horizontal flip with probability 0.5."""
    color_jitter: float = 0.0
    """'standard' preset: strength of brightness/contrast/saturation jitter (0 = off). It treats
    channels 0-2 as R, G, B and leaves any further channel untouched (needs model.in_channels >= 3;
    leave it 0 when the first three channels are not RGB)."""


@dataclass
class MixingConfig:
    cutmix_p: float = 0.0
    """Probability that a batch gets CutMix (a box from another image pasted with its mask)."""
    mixup_p: float = 0.0
    """Probability that a batch gets MixUp (images blended; the loss mixes both targets)."""
    mosaic_p: float = 0.0
    """Probability that a batch gets Mosaic (four images tiled, masks tiled alike)."""
    alpha: float = 1.0
    """Beta(alpha, alpha) parameter for the CutMix box area and the MixUp weight."""


@dataclass
class DataConfig:
    train: DatasetConfig = field(default_factory=lambda: DatasetConfig("sbd", "data", "train"))
    """Training set (the paper: SBD train, 8,498 images)."""
    val: DatasetConfig = field(default_factory=lambda: DatasetConfig("voc", "data", "seg11valid"))
    """Validation set (the paper: seg11valid, 736 images)."""
    classes: List[str] = field(default_factory=list)
    """Class names, index order; empty means the dataset's own (PASCAL VOC's 21). Required for
    'folder' datasets."""
    palette: List[List[int]] = field(default_factory=list)
    """RGB colour per class, index order; empty means the PASCAL VOC palette. A 'folder' dataset
    whose masks are RGB colour images is converted through it."""
    coco_unlisted: str = "error"
    """'coco' datasets: an annotation whose category is not in data.classes is an error naming it
    ('error'), has its pixels ignored (data.ignore_index: 'ignore') or is dropped ('background')."""
    coco_overlap: str = "ignore"
    """'coco' datasets: 'ignore' (torchvision's rule): iscrowd regions and pixels where instances of
    different classes overlap get data.ignore_index; 'last': the later annotation in the file wins."""
    transforms: TransformConfig = field(default_factory=TransformConfig)
    mixing: MixingConfig = field(default_factory=MixingConfig)
    batch_size: int = 20
    """Training images per step per process (under torchrun, per process)."""
    val_batch_size: int = 1
    """Evaluation batch size; >1 pads images to the batch's largest (metrics ignore the padding,
    but the receptive field sees it: predictions near the bottom/right edges of smaller images may
    differ slightly from batch 1)."""
    pad_collate: bool = False
    """Pad variable-size images in a batch (image 0, mask data.ignore_index); required with the 'paper'
    preset and batch_size > 1."""
    num_workers: int = 4
    """Data-loader worker processes per training process."""
    label_map: Any = field(default_factory=dict)
    """Raw mask id -> class index, as a mapping (e.g. Cityscapes' labelIds -> train ids {7: 0, 8: 1,
    ...}); ids it does not list become data.ignore_index (fcn.data.check names them). Raw ids may be
    0..65535 (8- or 16-bit PNG masks); class indices lie in 0..num_classes-1 or equal
    data.ignore_index. Applied to every dataset kind's masks, train and val alike. Empty = masks hold
    class indices already. Files merge it key by key."""
    reduce_zero_label: bool = False
    """mmsegmentation's rule for masks whose 0 means 'unlabelled' (ADE20K): raw 0 -> ignored, raw k
    -> k - 1 (raw 255 stays ignored). Not together with data.label_map (write the map on raw ids)."""
    display_channels: List[int] = field(default_factory=list)
    """The image channels that pictures show (grids, TensorBoard, overlays, predict.py): three
    indices shown as R, G, B, or one shown as grey; empty = the first three (one channel: grey)."""
    ignore_index: int = VOID
    """The mask label that is ignored (255: VOC's void border): by the loss, the metrics, the
    dataset's label check, the padding fill of transforms, pad_collate and Mosaic, and the pictures.
    Labels must lie in 0..num_classes-1 or equal it. It may be inside 0..num_classes-1 (e.g. 0 with
    classes 1..N and num_classes N+1): that class slot is then never trained nor scored (its IU is
    nan, left out of the mean, unless the model predicts it), and padding is labelled with it too."""


@dataclass
class LossTerm:
    name: str = "ce"
    """ce, dice, focal, lovasz or ohem (fcn/losses.py)."""
    weight: float = 1.0
    """The term's factor in the sum."""


@dataclass
class LossConfig:
    terms: List[LossTerm] = field(default_factory=lambda: [LossTerm("ce", 1.0)])
    """The loss: the sum of weight * term. 'ce' (cross-entropy, the paper's), 'focal' (Lin et al.
    2017), 'ohem' (cross-entropy of the hardest pixels), 'dice' (soft Dice), 'lovasz' (Lovasz-softmax,
    Berman et al. 2018). ce and focal are sums over labelled pixels, normalised as loss.normalize
    says over the whole step's batch (all micro-batches and processes); dice, lovasz and ohem are
    means per micro-batch, averaged over the step's micro-batches and processes. E.g.
    [{name: ce, weight: 1.0}, {name: dice, weight: 0.5}]."""
    normalize: bool = True
    """Average the ce/focal terms over labelled pixels; false sums them, as the reference did
    (loss_param { normalize: false }) with its tiny learning rates."""
    class_weights: Any = field(default_factory=list)
    """Per-class weights: [] (uniform), a list of num_classes floats, 'inverse_frequency' (w_c =
    total / (present * count_c): pixel-weighted mean 1) or 'median_frequency' (Eigen & Fergus: w_c =
    median(freq) / freq_c over present classes); both from data.train's pixel counts, cached in
    <root>/.fcn_class_counts_<split>_<checksum>.json. ce/focal/ohem weight each pixel by its class's
    weight; dice/lovasz take the weighted mean over classes."""
    label_smoothing: float = 0.0
    """Label smoothing of the 'ce' term (0 = none; PyTorch's cross_entropy definition)."""
    focal_gamma: float = 2.0
    """The focusing parameter gamma of the 'focal' term (Lin et al.: 2; 0 gives cross-entropy)."""
    ohem_keep: float = 0.25
    """Pixels the 'ohem' term keeps per micro-batch, the highest cross-entropy first: a fraction of
    the labelled pixels when <= 1 (rounded up), else a count of pixels."""


@dataclass
class OptimizerConfig:
    name: str = "sgd"
    """'sgd' (with momentum, as the paper) or 'adamw'."""
    lr: float = 3.2e-3
    """Base learning rate (of weights; biases get lr * bias_lr_mult)."""
    momentum: float = 0.9
    """SGD momentum (the paper: 0.99 with batch 1; 0.9 is common with mini-batches)."""
    weight_decay: float = 2e-4
    """Weight decay of weights (the paper: 5e-4)."""
    bias_lr_mult: float = 2.0
    """Learning-rate multiplier of biases (the reference: lr_mult 2)."""
    bias_weight_decay: bool = False
    """Decay biases too; the reference does not (decay_mult 0)."""
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""


@dataclass
class ScheduleConfig:
    name: str = "fixed"
    """'fixed' (the paper's lr_policy), 'poly' or 'cosine'; stepped every iteration."""
    power: float = 0.9
    """Exponent of the 'poly' schedule."""
    min_lr: float = 0.0
    """Floor of the 'poly' and 'cosine' schedules."""
    warmup_iters: int = 0
    """Linear warm-up iterations (0 = none)."""
    warmup_factor: float = 0.001
    """Learning-rate factor at the first warm-up iteration."""


@dataclass
class TrainingConfig:
    run_dir: str = "runs/train"
    """Directory of this run: config, checkpoints/, TensorBoard events, PNGs, metrics.jsonl."""
    epochs: int = 30
    """Epochs to train; ignored when iters > 0."""
    iters: int = 0
    """Iterations (optimizer steps) to train; 0 means train by epochs."""
    accumulate: int = 1
    """Batches accumulated per optimizer step (the paper's batch of 20 = 20 batches of 1)."""
    clip_grad_norm: float = 0.0
    """Clip the gradient norm to this value (0 = off)."""
    amp: str = "none"
    """Mixed precision: 'none', 'bf16' (autocast; works on the CPU), 'fp16' (CUDA, scaler) or
    'auto' (bf16 where it is native: a CUDA device that supports it, or a CPU with AVX-512 BF16 or
    AMX; else none: on AVX2-only CPUs bf16 is 10-50x slower than fp32)."""
    channels_last: str = "auto"
    """Channels-last memory format for the model and inputs: 'true', 'false' or 'auto' (on with CUDA
    and amp bf16/fp16, where tensor cores read NHWC; off otherwise)."""
    compile: bool = False
    """Compile the model with torch.compile."""
    ema_decay: float = 0.0
    """Decay of an exponential moving average of the weights, evaluated alongside (0 = off)."""
    eval_every: int = 0
    """Evaluate (and save last.pt/best.pt) every N iterations; 0 = at the end of each epoch."""
    checkpoint_every: int = 0
    """Also save last.pt every N iterations between evaluations (0 = only at evaluations). The
    preemption trade-off: a SIGTERM or SIGUSR1 saves last.pt at the end of the current iteration,
    but a SIGKILL, a crash or a lost node loses every iteration since the last save; each save costs
    a checkpoint write (model + optimizer state) on rank 0 while the others wait (docs/preempt.md)."""
    log_every: int = 20
    """Write training scalars to TensorBoard every N iterations."""
    vis_images: int = 4
    """Validation images in the fixed prediction grid (PNG and TensorBoard); 0 = none."""
    seed: int = 0
    """Seed for Python, NumPy, torch and every data-loader worker."""
    deterministic: bool = False
    """Use deterministic algorithms only (slower; needed for bitwise-exact resume)."""
    resume: str = ""
    """'' (start fresh), 'auto' (run_dir's checkpoints/last.pt if present) or a checkpoint path."""
    device: str = "auto"
    """'auto' (CUDA if available, else CPU), 'cpu', 'cuda' or 'cuda:N'."""
    sync_bn: bool = False
    """Under torchrun, convert BatchNorm layers to SyncBatchNorm."""
    dist_timeout: int = 1800
    """Under torchrun, seconds a collective (or joining the process group) waits for the other
    processes before the run fails with exit 1 (a hung or unreachable peer); a peer that exits is
    noticed at once. Longer than the slowest evaluation and checkpoint write on rank 0, which the
    others wait for."""
    early_stop_patience: int = 0
    """Stop after this many evaluations in a row without a better mean IU (the EMA's with
    ema_decay > 0); best.pt keeps the best weights, last.pt the count (a resumed run goes on
    counting). 0 = off."""


@dataclass
class EvalConfig:
    flip: bool = False
    """Test-time augmentation: average with the horizontally flipped prediction."""
    scales: List[float] = field(default_factory=lambda: [1.0])
    """Test-time scales; softmax probabilities are averaged at the native size."""
    amp: str = "none"
    """Mixed precision at evaluation/prediction: 'none' or 'bf16' or 'fp16'."""
    channels_last: bool = False
    """Channels-last memory format at evaluation/prediction."""
    engine: str = "torch"
    """evaluate.py/predict.py: what runs the model: 'torch' (PyTorch, any device), 'onnxruntime' or
    'openvino' (the checkpoint exported once to ONNX, cached beside it, run by that runtime on the
    CPU; same pre/post-processing, TTA and sliding windows). See fcn/engines.py."""
    fast_path: str = "none"
    """evaluate.py/predict.py on the CPU: 'none' (fp32); 'auto' (chosen by the CPU and the installed
    engines, logged, exact paths only with eval.engine=torch: ONNX Runtime or OpenVINO fp32 where
    installed, else winograd; bf16 autocast + channels-last where bf16 is native (AVX-512 BF16,
    AMX); fcn.prediction.resolve_fast_path); 'winograd' (3x3 convs by NNPACK's Winograd: fp32's
    results, faster); 'int8' (quantized after training, calibrated on eval.calibration_images:
    close to fp32, faster still; never chosen by auto; with eval.engine=onnxruntime/openvino that
    runtime's static int8). See fcn/fastpath.py, fcn/engines.py; bench/fast_paths.py and
    bench/engines.py measure them."""
    calibration_images: int = 8
    """Images (the first of the data being evaluated or predicted; no labels) that calibrate int8."""
    use_ema: bool = True
    """Evaluate the EMA weights when the checkpoint has them."""
    mode: str = "whole"
    """'whole' (the image in one forward, as the paper) or 'slide' (tile x tile windows every stride
    pixels, their logits averaged: memory bounded by the tile; fcn/sliding.py). Also used by the
    evaluation during training."""
    tile: int = 512
    """eval.mode=slide: side of the square window in pixels (clamped to the image); a tile at least
    as large as the image gives exactly the 'whole' result."""
    stride: int = 341
    """eval.mode=slide: pixels between window starts (at most tile); 341 of 512 overlaps a third."""
    window_batch: int = 4
    """eval.mode=slide: windows per forward pass (times the images of a batch)."""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _one_line(exc: OmegaConfBaseException) -> str:
    """Return OmegaConf's message without its multi-line 'full_key/object_type' trailer; for an
    unknown key, with the nearest key of its section suggested."""
    msg = (getattr(exc, "msg", None) or str(exc)).splitlines()[0].strip()
    if isinstance(exc, ConfigKeyError):
        # The interpreter's own "Did you mean" (Python 3.10/3.11 only) is replaced by ours, computed
        # from the schema, so the message is the same on every Python.
        msg = msg.split(" Did you mean", 1)[0]
        section = getattr(exc, "object_type", None)
        if dataclasses.is_dataclass(section) and getattr(exc, "key", None) is not None:
            names = [f.name for f in dataclasses.fields(section)]
            near = difflib.get_close_matches(str(exc.key), names, n=1)
            if near:
                msg = f"{msg.rstrip('.')}. Did you mean: '{near[0]}'?"
    return msg


def _merge(base: DictConfig, other: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"{source}: key '{key}': {_one_line(exc)}") from None
    except TypeError:  # OmegaConf's "Cannot merge incompatible container types" names no key
        key, want = _container_mismatch(base, other)
        raise ConfigError(f"{source}: key '{key}' must be a {want}, as in the schema") from None


def _container_mismatch(base: Any, other: Any, prefix: str = "") -> tuple[str, str]:
    """Return (key, 'mapping' or 'list') of the first value of `other` whose kind differs from base's."""
    if OmegaConf.is_dict(base) and OmegaConf.is_dict(other):
        for key in other:
            if key in base:
                found = _container_mismatch(base._get_node(key), other._get_node(key), f"{prefix}{key}.")
                if found[0] != "?":
                    return found
    elif OmegaConf.is_dict(base) != OmegaConf.is_dict(other) and OmegaConf.is_config(other):
        return prefix.rstrip("."), "mapping" if OmegaConf.is_dict(base) else "list"
    return "?", "value of another kind"


def read_text(path: str | os.PathLike) -> str:
    """Return a text file's contents decoded as UTF-8 (a byte-order mark is allowed); ValueError
    naming the file and the first undecodable byte otherwise."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        utf16 = " (it looks like UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise ValueError(
            f"{path}: not UTF-8 text{utf16}: byte 0x{data[exc.start]:02x} at offset {exc.start} cannot be "
            "decoded; save the file as UTF-8"
        ) from None


def _read_yaml(path: str) -> DictConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path}: config file not found (give an existing YAML file to --config)")
    try:
        data = yaml.safe_load(read_text(p))
    except ValueError as exc:  # not UTF-8
        raise ConfigError(str(exc)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, not {type(data).__name__}")
    return OmegaConf.create(data)


def _schema_field(key: str) -> tuple[Any, Any]:
    """Return (declared type, default value) of a dotted key in the schema (e.g. (str, '') for
    model.init_from), or (None, None) for a key the schema does not have (the merge reports it)."""
    section: Any = Config
    kind = default = None
    for part in key.split("."):
        if not dataclasses.is_dataclass(section):
            return None, None
        fields = {f.name: f for f in dataclasses.fields(section)}
        if part not in fields:
            return None, None
        f = fields[part]
        kind = section = typing.get_type_hints(section)[part]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return kind, default


def _empty_value(key: str, item: str) -> str:
    """Return what an empty override (``key=``) means for key: '' for a string key, [] for a list and
    {} for a mapping (also an untyped key whose default is one); a ConfigError saying what to write
    for a key of another type."""
    kind, default = _schema_field(key)
    if kind is None or kind is str:  # an unknown key: the merge names it
        return "''"
    if typing.get_origin(kind) is list or isinstance(default, list):
        return "[]"
    if typing.get_origin(kind) is dict or isinstance(default, dict):
        return "{}"
    what = "a value" if kind is Any else f"a value of type {getattr(kind, '__name__', kind)}"
    raise ConfigError(f"command line: '{item}': key '{key}' needs {what} (nothing after '=')")


def _parse_override(item: str) -> DictConfig:
    if "=" not in item:
        raise ConfigError(f"command line: '{item}' is not a key=value override (e.g. training.epochs=3)")
    key, value = item.split("=", 1)
    if not key:
        raise ConfigError(f"command line: '{item}' has no key before '='")
    if not value.strip():
        # 'model.init_from=' is the natural way to clear a key on a command line; OmegaConf would read
        # it as null, which a str field refuses. Empty means '' for a string key and [] for a list.
        value = _empty_value(key, item)
    if value.lstrip().startswith(("[", "{")):
        # YAML reads '{name:ce}' as one key 'name:ce'; a space after a flow mapping's ':' lets the
        # shell-friendly loss.terms=[{name:ce,weight:1.0}] mean what it says.
        value = re.sub(r"([{,]\s*[A-Za-z_]\w*):(?=\S)", r"\1: ", value)
    try:
        return OmegaConf.from_dotlist([f"{key}={value}"])
    except OmegaConfBaseException as exc:
        raise ConfigError(f"command line: '{item}': {_one_line(exc)}") from None


def load_config(paths: Sequence[str] = (), overrides: Sequence[str] = ()) -> DictConfig:
    """Return the validated, read-only config: schema defaults <- each file in turn <- overrides."""
    cfg = OmegaConf.structured(Config)
    for path in paths:
        cfg = _merge(cfg, _read_yaml(path), path)
    for item in overrides:
        cfg = _merge(cfg, _parse_override(item), f"command line '{item}'")
    source = ", ".join(list(paths) + (["command line"] if overrides else [])) or "defaults"
    validate(cfg, source)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def config_from_dict(
    data: dict, source: str = "checkpoint", paths: Sequence[str] = (), overrides: Sequence[str] = ()
) -> DictConfig:
    """Return the validated, read-only config rebuilt from a plain dict (e.g. a checkpoint's),
    then merged with the given files and key=value overrides."""
    cfg = _merge(OmegaConf.structured(Config), OmegaConf.create(data), source)
    for path in paths:
        cfg = _merge(cfg, _read_yaml(path), path)
    for item in overrides:
        cfg = _merge(cfg, _parse_override(item), f"command line '{item}'")
    validate(cfg, ", ".join([source, *paths] + (["command line"] if overrides else [])))
    OmegaConf.set_readonly(cfg, True)
    return cfg


def with_overrides(cfg: DictConfig, overrides: Sequence[str], source: str = "program") -> DictConfig:
    """Return a new validated, read-only config: cfg with key=value overrides (cfg is unchanged)."""
    return config_from_dict(to_dict(cfg), source, overrides=overrides)


def to_dict(cfg: DictConfig) -> dict:
    """Return the config as plain Python containers (for checkpoints and JSON)."""
    return OmegaConf.to_container(cfg, resolve=True)


def to_yaml(cfg: DictConfig) -> str:
    """Return the config as YAML text (written into every run directory)."""
    return OmegaConf.to_yaml(cfg)


def _choice(source: str, key: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        near = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise ConfigError(f"{source}: {key}='{value}' is not one of {', '.join(allowed)}{hint}")


def _positive(source: str, key: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{source}: {key}={value} must be {bound}")


def _probability(source: str, key: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{source}: {key}={value} must be between 0 and 1")


def num_classes(cfg: DictConfig) -> int:
    """Return the number of classes the run predicts (model.num_classes)."""
    return int(cfg.model.num_classes)


def validate(cfg: DictConfig, source: str) -> None:
    """Raise ConfigError naming the first key whose value is impossible, alone or with others."""
    m, d, t = cfg.model, cfg.data, cfg.training
    _choice(source, "model.arch", m.arch, ARCHS)
    if not is_timm(m.backbone):  # any timm name passes here; timm itself checks it at build time
        _choice(source, "model.backbone", m.backbone, BACKBONES + ("timm:<name>",))
    _choice(source, "model.head", m.head, ("score", "fcn"))
    _choice(source, "model.geometry", m.geometry, ("paper", "same"))
    _choice(source, "model.upsampling", m.upsampling, ("transposed", "bilinear", "nearest_conv"))
    _choice(source, "model.fusion", m.fusion, ("skip", "full"))
    _choice(source, "model.dropout", m.dropout, ("element", "channel"))
    if m.num_classes < 2:
        raise ConfigError(f"{source}: model.num_classes={m.num_classes} must be at least 2")
    if not 0 <= d.ignore_index <= 255:
        raise ConfigError(f"{source}: data.ignore_index={d.ignore_index} must be in 0..255 (masks are 8-bit)")
    if m.num_classes > 256 or (m.num_classes > VOID and d.ignore_index == VOID):
        raise ConfigError(
            f"{source}: model.num_classes={m.num_classes} must be at most {VOID} ({VOID} marks void: data.ignore_index)"
        )
    if not 0.0 <= m.dropout_p < 1.0:
        raise ConfigError(f"{source}: model.dropout_p={m.dropout_p} must be in [0, 1)")
    if m.geometry == "paper" and m.backbone not in VGG_BACKBONES:
        raise ConfigError(
            f"{source}: model.geometry='paper' needs a VGG backbone (its offsets are VGG16's); "
            f"use model.geometry=same with model.backbone={m.backbone}"
        )
    if m.arch == "fcn8s_atonce" and m.fusion != "skip":
        raise ConfigError(
            f"{source}: model.arch=fcn8s_atonce is the paper's skip fusion; set model.fusion=skip"
        )
    pretrained = str(m.pretrained)
    if pretrained.lower() not in ("true", "false") and not pretrained:
        raise ConfigError(f"{source}: model.pretrained must be true, false or a file path")

    _validate_paper_options(cfg, source)
    for split_key in ("train", "val"):
        ds = d[split_key]
        _validate_dataset(source, f"data.{split_key}", ds, d)
        if ds.name == "folder" and not d.classes:
            raise ConfigError(
                f"{source}: data.{split_key}.name='folder' needs data.classes (the class names in index order)"
            )
        for key in ("annotations", "images") if ds.name == "coco" else ():
            if not ds[key]:
                raise ConfigError(f"{source}: data.{split_key}.name='coco' needs data.{split_key}.{key}")
    _choice(source, "data.coco_unlisted", d.coco_unlisted, ("error", "ignore", "background"))
    _choice(source, "data.coco_overlap", d.coco_overlap, ("ignore", "last"))
    if (len(d.label_map) or d.reduce_zero_label) and "coco" in (d.train.name, d.val.name):
        raise ConfigError(
            f"{source}: data.label_map and data.reduce_zero_label do not apply to 'coco' datasets (their "
            "categories map to data.classes by name); remove them or use data.coco_unlisted"
        )
    _validate_label_map(source, d, m.num_classes)
    if d.classes and len(d.classes) != m.num_classes:
        raise ConfigError(
            f"{source}: data.classes has {len(d.classes)} names but model.num_classes={m.num_classes}"
        )
    if d.palette:
        if len(d.palette) < m.num_classes:
            raise ConfigError(
                f"{source}: data.palette has {len(d.palette)} colours but model.num_classes={m.num_classes}"
            )
        for i, colour in enumerate(d.palette):
            if len(colour) != 3 or not all(0 <= int(c) <= 255 for c in colour):
                raise ConfigError(
                    f"{source}: data.palette[{i}]={list(colour)} must be three values in 0..255"
                )
    own = {PAPER_DATASET_CLASSES.get(ds.name, 21) for ds in (d.train, d.val) if ds.name != "folder"}
    if not d.classes and len(own) > 1:
        raise ConfigError(
            f"{source}: data.train.name={d.train.name} and data.val.name={d.val.name} have different classes"
        )
    if not d.classes and own and m.num_classes != next(iter(own)):
        n = next(iter(own))
        what = "PASCAL VOC" if n == 21 else next(ds.name for ds in (d.val, d.train) if ds.name != "folder")
        raise ConfigError(
            f"{source}: model.num_classes={m.num_classes} but {what} has {n} classes; "
            "set data.classes for another label set"
        )

    tr = d.transforms
    _choice(source, "data.transforms.preset", tr.preset, ("paper", "standard"))
    _choice(source, "data.transforms.normalization", tr.normalization, ("auto", "torchvision", "caffe"))
    channels = m.in_channels
    if not 1 <= channels <= 64:
        raise ConfigError(f"{source}: model.in_channels={channels} must be in 1..64")
    if tr.mean or tr.std:
        if tr.normalization != "auto":
            raise ConfigError(
                f"{source}: data.transforms.mean/std apply with normalization=auto, not '{tr.normalization}'"
            )
        if len(tr.mean) != channels or len(tr.std) != channels or not all(v > 0 for v in tr.std):
            raise ConfigError(
                f"{source}: data.transforms.mean={list(tr.mean)} std={list(tr.std)} must be "
                f"model.in_channels={channels} values each (std > 0), or both empty"
            )
    layer_input = all(d[k].name in LAYER_INPUT_DATASETS for k in ("train", "val"))
    if channels != 3 and tr.normalization == "caffe" and not layer_input:
        raise ConfigError(
            f"{source}: data.transforms.normalization=caffe is for 3-channel BGR input (or the data-layer "
            f"input of nyud/siftflow), not model.in_channels={channels}; use auto (and data.transforms.mean/std)"
        )
    if channels < 3 and tr.color_jitter > 0:
        raise ConfigError(
            f"{source}: data.transforms.color_jitter={tr.color_jitter} needs RGB channels 0-2, "
            f"but model.in_channels={channels}; set it to 0"
        )
    shown = list(d.display_channels)
    if shown and (len(shown) not in (1, 3) or not all(0 <= int(c) < channels for c in shown)):
        raise ConfigError(
            f"{source}: data.display_channels={shown} must be one or three channel indices in "
            f"0..{channels - 1} (model.in_channels={channels})"
        )
    _positive(source, "data.transforms.crop_size", tr.crop_size)
    _positive(source, "data.transforms.scale_min", tr.scale_min)
    _positive(source, "data.transforms.max_shift", tr.max_shift, allow_zero=True)
    _positive(source, "data.transforms.color_jitter", tr.color_jitter, allow_zero=True)
    if tr.scale_max < tr.scale_min:
        raise ConfigError(
            f"{source}: data.transforms.scale_max={tr.scale_max} is below scale_min={tr.scale_min}"
        )
    for key in ("cutmix_p", "mixup_p", "mosaic_p"):
        _probability(source, f"data.mixing.{key}", d.mixing[key])
    _positive(source, "data.mixing.alpha", d.mixing.alpha)
    _positive(source, "data.batch_size", d.batch_size)
    _positive(source, "data.val_batch_size", d.val_batch_size)
    _positive(source, "data.num_workers", d.num_workers, allow_zero=True)
    if tr.preset == "paper" and d.batch_size > 1 and not d.pad_collate:
        raise ConfigError(
            f"{source}: data.batch_size={d.batch_size} with data.transforms.preset='paper' (native sizes) "
            "needs data.pad_collate=true, or use training.accumulate for the paper's batch of 20"
        )
    mixing_total = d.mixing.cutmix_p + d.mixing.mixup_p + d.mixing.mosaic_p
    if mixing_total > 1.0 + 1e-9:
        raise ConfigError(
            f"{source}: data.mixing probabilities sum to {mixing_total:g} (cutmix_p + mixup_p + mosaic_p); "
            "at most one mixing applies to a batch, so the sum must be at most 1"
        )
    mixing_on = mixing_total > 0
    if mixing_on and tr.preset == "paper" and not d.pad_collate:
        raise ConfigError(
            f"{source}: data.mixing needs images of one size: use data.transforms.preset=standard or data.pad_collate=true"
        )

    _validate_loss(cfg.loss, m.num_classes, source)

    o = cfg.optimizer
    _choice(source, "optimizer.name", o.name, ("sgd", "adamw"))
    _positive(source, "optimizer.lr", o.lr)
    _positive(source, "optimizer.weight_decay", o.weight_decay, allow_zero=True)
    _positive(source, "optimizer.bias_lr_mult", o.bias_lr_mult, allow_zero=True)
    if not 0.0 <= o.momentum < 1.0:
        raise ConfigError(f"{source}: optimizer.momentum={o.momentum} must be in [0, 1)")
    if len(o.betas) != 2 or not all(0.0 <= b < 1.0 for b in o.betas):
        raise ConfigError(f"{source}: optimizer.betas={list(o.betas)} must be two values in [0, 1)")

    s = cfg.schedule
    _choice(source, "schedule.name", s.name, ("fixed", "poly", "cosine"))
    _positive(source, "schedule.warmup_iters", s.warmup_iters, allow_zero=True)
    _probability(source, "schedule.warmup_factor", s.warmup_factor)
    if s.min_lr > o.lr:
        raise ConfigError(f"{source}: schedule.min_lr={s.min_lr} is above optimizer.lr={o.lr}")

    _choice(source, "training.amp", t.amp, ("none", "auto", "bf16", "fp16"))
    _choice(source, "training.channels_last", str(t.channels_last).lower(), ("auto", "true", "false"))
    _positive(source, "training.epochs", t.epochs, allow_zero=True)
    _positive(source, "training.iters", t.iters, allow_zero=True)
    if t.epochs == 0 and t.iters == 0:
        raise ConfigError(f"{source}: training.epochs and training.iters are both 0; set one of them")
    _positive(source, "training.accumulate", t.accumulate)
    _positive(source, "training.clip_grad_norm", t.clip_grad_norm, allow_zero=True)
    if not 0.0 <= t.ema_decay < 1.0:
        raise ConfigError(f"{source}: training.ema_decay={t.ema_decay} must be in [0, 1) (0 = off)")
    for key in ("eval_every", "checkpoint_every", "vis_images"):
        _positive(source, f"training.{key}", t[key], allow_zero=True)
    _positive(source, "training.log_every", t.log_every)
    _positive(source, "training.dist_timeout", t.dist_timeout)
    _positive(source, "training.early_stop_patience", t.early_stop_patience, allow_zero=True)
    if not (t.device in ("auto", "cpu", "cuda") or t.device.startswith("cuda:")):
        raise ConfigError(f"{source}: training.device='{t.device}' must be auto, cpu, cuda or cuda:N")

    e = cfg.eval
    _choice(source, "eval.amp", e.amp, ("none", "bf16", "fp16"))
    _choice(source, "eval.fast_path", e.fast_path, FAST_PATHS)
    _choice(source, "eval.engine", e.engine, ENGINES)
    if e.engine != "torch" and e.fast_path == "winograd":
        raise ConfigError(
            f"{source}: eval.fast_path=winograd is a PyTorch path; with eval.engine={e.engine} use none, "
            "auto or int8"
        )
    if e.engine != "torch" and (e.amp != "none" or e.channels_last):
        raise ConfigError(
            f"{source}: eval.engine={e.engine} runs the fp32 export; set eval.amp=none and "
            "eval.channels_last=false"
        )
    _positive(source, "eval.calibration_images", e.calibration_images)
    if e.fast_path != "none" and (e.amp != "none" or e.channels_last):
        raise ConfigError(
            f"{source}: eval.fast_path={e.fast_path} computes in its own precision and layout; "
            "set eval.amp=none and eval.channels_last=false"
        )
    if not e.scales or any(sc <= 0 for sc in e.scales):
        raise ConfigError(
            f"{source}: eval.scales={list(e.scales)} must be a non-empty list of positive factors"
        )
    _choice(source, "eval.mode", e.mode, ("whole", "slide"))
    _positive(source, "eval.tile", e.tile)
    _positive(source, "eval.stride", e.stride)
    _positive(source, "eval.window_batch", e.window_batch)
    if e.stride > e.tile:
        raise ConfigError(
            f"{source}: eval.stride={e.stride} is larger than eval.tile={e.tile}: pixels between windows "
            "would get no prediction"
        )


def _validate_paper_options(cfg: DictConfig, source: str) -> None:
    """Raise ConfigError for model.late_fusion / geometric_classes / in_channels and the data
    modalities of the paper's other datasets that do not fit together."""
    m, d = cfg.model, cfg.data
    fusion = list(m.late_fusion)
    for i, name in enumerate(fusion):
        _choice(source, f"model.late_fusion[{i}]", name, tuple(MODALITY_CHANNELS))
    if fusion:
        if len(fusion) < 2 or len(set(fusion)) != len(fusion):
            raise ConfigError(
                f"{source}: model.late_fusion={fusion} must name two or more different modalities"
            )
        if m.arch != "fcn32s" or m.backbone not in VGG_BACKBONES or m.fusion != "skip" or m.head != "score":
            raise ConfigError(
                f"{source}: model.late_fusion is nyud-fcn32s-color-hha: set model.arch=fcn32s, a VGG backbone, "
                "model.fusion=skip and model.head=score"
            )
        width = sum(MODALITY_CHANNELS[x] for x in fusion)
        if m.in_channels != width:
            raise ConfigError(
                f"{source}: model.late_fusion={fusion} takes {width} channels but model.in_channels={m.in_channels}"
            )
    g = m.geometric_classes
    if g != 0 and not 2 <= g <= 255:
        raise ConfigError(f"{source}: model.geometric_classes={g} must be 0 (off) or 2..255")
    if g and (m.fusion != "skip" or m.head != "score"):
        raise ConfigError(
            f"{source}: model.geometric_classes is siftflow-fcn*s's head: set model.fusion=skip and model.head=score"
        )
    for key in ("train", "val"):
        ds = d[key]
        mods = list(ds.modalities)
        for i, name in enumerate(mods):
            _choice(source, f"data.{key}.modalities[{i}]", name, tuple(MODALITY_CHANNELS))
        if ds.name != "nyud" and mods != ["color"]:
            raise ConfigError(f"{source}: data.{key}.modalities={mods} is for nyud; {ds.name} has [color]")
        if ds.name == "nyud":
            if not mods or len(set(mods)) != len(mods):
                raise ConfigError(
                    f"{source}: data.{key}.modalities={mods} must name one or more different modalities"
                )
            width = sum(MODALITY_CHANNELS[x] for x in mods)
            if width != m.in_channels:
                raise ConfigError(
                    f"{source}: data.{key}.modalities={mods} stack {width} channels but model.in_channels={m.in_channels}"
                )
            if fusion and mods != fusion:
                raise ConfigError(
                    f"{source}: data.{key}.modalities={mods} must be model.late_fusion={fusion} (its trunks' order)"
                )
        elif m.in_channels != 3 and ds.name in ("pascal_context", "siftflow"):
            raise ConfigError(
                f"{source}: model.in_channels={m.in_channels} but data.{key}.name={ds.name} gives RGB images"
            )
        if (ds.name == "siftflow") != bool(g):
            raise ConfigError(
                f"{source}: data.{key}.name={ds.name} with model.geometric_classes={g}: SIFT Flow's masks hold the "
                "geometric labels too, so siftflow and a geometric head (3) go together"
            )
        if ds.name in LAYER_INPUT_DATASETS and d.transforms.normalization != "caffe":
            raise ConfigError(
                f"{source}: data.{key}.name={ds.name} reads the authors' data-layer input (BGR/log-depth/HHA minus "
                "their means): set data.transforms.normalization=caffe"
            )
    layer_input = any(d[k].name in LAYER_INPUT_DATASETS for k in ("train", "val"))
    if layer_input and d.transforms.color_jitter > 0:
        raise ConfigError(
            f"{source}: data.transforms.color_jitter needs RGB images, not {d.train.name}'s inputs"
        )
    if g:
        mixing = d.mixing.cutmix_p + d.mixing.mixup_p + d.mixing.mosaic_p
        if mixing > 0 or cfg.loss.normalize or [t.name for t in cfg.loss.terms] != ["ce"]:
            raise ConfigError(
                f"{source}: model.geometric_classes takes the reference's loss (loss.terms=[ce], loss.normalize=false: "
                "two summed cross-entropies) and no data.mixing"
            )
        if isinstance(cfg.loss.class_weights, str) or len(cfg.loss.class_weights):
            raise ConfigError(
                f"{source}: loss.class_weights are per semantic class; not with model.geometric_classes"
            )


def is_import_path(name: str) -> bool:
    """Return whether a dataset name is a Dataset class by import path: 'package.module:Class'."""
    return re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", str(name)) is not None


def _validate_dataset(source: str, key: str, ds: DictConfig, d: DictConfig) -> None:
    """Raise ConfigError for a dataset name that is neither built in nor an import path, args
    given to a built-in reader, or Cityscapes without a label map."""
    if ":" in str(ds.name):
        if not is_import_path(ds.name):
            raise ConfigError(
                f"{source}: {key}.name='{ds.name}' is not an import path 'package.module:Class'"
            )
    else:
        _choice(source, f"{key}.name", ds.name, DATASETS)
    if not OmegaConf.is_dict(ds.args) and not isinstance(ds.args, dict):
        raise ConfigError(f"{source}: {key}.args must be a mapping of constructor arguments, got {ds.args!r}")
    if len(ds.args) and not is_import_path(ds.name):
        raise ConfigError(
            f"{source}: {key}.args is given but {key}.name='{ds.name}' is built in; args are for a "
            "Dataset class named by import path ('package.module:Class')"
        )
    if ds.name == "cityscapes" and not len(d.label_map):
        raise ConfigError(
            f"{source}: {key}.name='cityscapes' reads raw labelIds: set data.label_map (labelIds -> train ids; "
            "predefined_configs/cityscapes_fcn8s.yml holds the official 19-class map)"
        )


def label_map_dict(value: Any) -> dict[int, int]:
    """Return data.label_map as {raw id: class index}; ValueError when it is not a mapping of integers."""
    if not OmegaConf.is_dict(value) and not isinstance(value, dict):
        raise ValueError(f"data.label_map must be a mapping {{raw id: class index}}, got {value!r}")
    out = {}
    for raw, index in value.items():
        if (
            isinstance(raw, bool)
            or isinstance(index, bool)
            or not isinstance(raw, int)
            or not isinstance(index, int)
        ):
            raise ValueError(
                f"data.label_map entry {raw!r}: {index!r} must map an integer id to an integer class index"
            )
        out[raw] = index
    return out


def _validate_label_map(source: str, d: DictConfig, n: int) -> None:
    """Raise ConfigError for a label map entry outside 0..65535 -> 0..n-1 or ignore, or one combined
    with reduce_zero_label."""
    try:
        mapping = label_map_dict(d.label_map)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    for raw, index in mapping.items():
        if not 0 <= raw <= 65535:
            raise ConfigError(
                f"{source}: data.label_map id {raw} is outside 0..65535 (masks are 8- or 16-bit)"
            )
        if not (0 <= index < n or index == d.ignore_index):
            raise ConfigError(
                f"{source}: data.label_map maps {raw} to {index}, outside 0..{n - 1} (model.num_classes) "
                f"and {d.ignore_index} (data.ignore_index)"
            )
    if mapping and d.reduce_zero_label:
        raise ConfigError(
            f"{source}: data.label_map and data.reduce_zero_label are both set; give one (write the map on raw ids)"
        )


def is_timm(backbone: str) -> bool:
    """Return whether model.backbone names a timm model: 'timm:<name>' with a non-empty name."""
    return str(backbone).startswith("timm:") and len(str(backbone)) > len("timm:")


def _validate_loss(loss: DictConfig, n: int, source: str) -> None:
    """Raise ConfigError for an unknown loss term, a bad weight or bad class weights."""
    if len(loss.terms) == 0:
        raise ConfigError(
            f"{source}: loss.terms is empty; give at least one term, e.g. [{{name: ce, weight: 1.0}}]"
        )
    for i, term in enumerate(loss.terms):
        _choice(source, f"loss.terms[{i}].name", term.name, LOSS_NAMES)
        _positive(source, f"loss.terms[{i}].weight", term.weight, allow_zero=True)
    if not 0.0 <= loss.label_smoothing < 1.0:
        raise ConfigError(f"{source}: loss.label_smoothing={loss.label_smoothing} must be in [0, 1)")
    _positive(source, "loss.focal_gamma", loss.focal_gamma, allow_zero=True)
    keep = loss.ohem_keep
    if keep <= 0 or (keep > 1 and keep != int(keep)):
        raise ConfigError(
            f"{source}: loss.ohem_keep={keep} must be a fraction in (0, 1] or a whole number of pixels"
        )
    weights = loss.class_weights
    if isinstance(weights, str):
        _choice(source, "loss.class_weights", weights, CLASS_WEIGHTINGS)
        return
    if not OmegaConf.is_list(weights) and not isinstance(weights, (list, tuple)):
        raise ConfigError(
            f"{source}: loss.class_weights={weights!r} must be a list of floats, inverse_frequency or median_frequency"
        )
    if any(isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0 for w in weights):
        raise ConfigError(f"{source}: loss.class_weights={list(weights)} must hold numbers >= 0")
    if len(weights) and len(weights) != n:
        raise ConfigError(f"{source}: loss.class_weights has {len(weights)} values but model.num_classes={n}")


def pretrained_choice(value: str) -> bool | str:
    """Return False, True or a path for model.pretrained (YAML true/false arrive as strings)."""
    text = str(value)
    if text.lower() == "false":
        return False
    if text.lower() == "true":
        return True
    return os.path.expanduser(text)


def _field_docs() -> dict[str, dict[str, str]]:
    """Return {dataclass name: {field: docstring}} read from this module's source."""
    import ast
    import inspect
    import sys

    tree = ast.parse(inspect.getsource(sys.modules[__name__]))
    docs: dict[str, dict[str, str]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields = docs.setdefault(node.name, {})
        body = node.body
        for stmt, nxt in zip(body, body[1:] + [None]):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                fields[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def documented_yaml() -> str:
    """Return the default config as YAML with every key's doc as a comment (config.yml's source)."""
    import textwrap

    docs = _field_docs()
    defaults = to_dict(OmegaConf.structured(Config))
    lines: list[str] = []

    def emit(cls: type, values: dict, indent: int) -> None:
        pad = "  " * indent
        for f in dataclasses.fields(cls):
            value = values[f.name]
            doc = docs.get(cls.__name__, {}).get(f.name)
            if doc:
                for row in textwrap.wrap(doc, width=100 - len(pad) - 2):
                    lines.append(f"{pad}# {row}")
            sub = globals().get(str(f.type))  # annotations are strings (PEP 563)
            if dataclasses.is_dataclass(sub):
                lines.append(f"{pad}{f.name}:")
                emit(sub, value, indent + 1)
            else:
                dumped = yaml.safe_dump({f.name: value}, default_flow_style=True, width=1000).strip()
                lines.append(f"{pad}{dumped[1:-1] if dumped.startswith('{') else dumped}")

    header = (
        "# pytorch-fcn: the default configuration, every key with its meaning.\n"
        "# Edit it, or keep it and pass differences: python train.py key=value ...\n"
        "# Regenerate from the schema (fcn/config.py) with: python -m fcn.config > config.yml\n"
    )
    for f in dataclasses.fields(Config):
        lines.append(f"{f.name}:")
        emit(globals()[str(f.type)], defaults[f.name], 1)
        lines.append("")
    return header + "\n" + "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(documented_yaml(), end="")
