"""The schema: every key of the configuration, its type, its default and what it means.

The defaults are the mini-batch FCN-32s recipe of the document this project
started from (batches of 20 at 500x500 with +-32 px shift and flips, normalised
loss, SGD lr 3.2e-3 momentum 0.9 weight decay 2e-4, 30 epochs, SBD train ->
seg11valid), the first stage of FCN-32s -> 16s -> 8s; the paper's own recipes
are in predefined_configs/.

Each field's docstring, right under it, is its documentation: config.yml is
generated from them (fcn/config/documented.py). Also here: the names the keys
choose from (ARCHS, DATASETS, ...), ConfigError, and the readers of values whose
meaning is more than their type (is_timm, is_import_path, label_map_dict,
pretrained_choice).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import DictConfig, OmegaConf

from fcn.config.formats import FORMAT_KEYS, format_keys

PAPER_ARCHS = ("fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce")
"""The paper's four nets (the authors' Caffe weights fit these)."""
ARCHS = (*PAPER_ARCHS, "fcn4s", "unet", "torchvision_fcn")
TORCHVISION_FCN_OPTIONS = {
    "geometry": "same",
    "upsampling": "bilinear",
    "head": "fcn",
    "fusion": "skip",
    "learnable_upsampling": False,
    "dropout_p": 0.0,
}
"""model.arch=torchvision_fcn: the only values of these keys that say what it builds (fcn/models/torchvision_fcn.py)."""
UNET_UNUSED_OPTIONS = {
    "upsampling": "transposed",
    "learnable_upsampling": False,
    "fusion": "skip",
    "head": "score",
    "geometric_classes": 0,
}
"""model.arch=unet: the FCN decoders' keys it has no use for, at their defaults, the only values it takes."""
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
DATASETS = tuple(FORMAT_KEYS)
"""data.<split>.name choices (fcn/config/formats.py: FORMAT_KEYS, one line per format); any other name
with a colon is a Dataset class by import path ('package.module:Class', fcn/data/external.py)."""
PAPER_DATASET_CLASSES = {
    name: keys.own_classes for name, keys in FORMAT_KEYS.items() if keys.own_classes not in (None, 21)
}
"""The classes of the paper's other datasets (fcn/data/paper.py names them): the formats that name
classes of their own other than PASCAL VOC's 21."""
LAYER_INPUT_DATASETS = tuple(name for name, keys in FORMAT_KEYS.items() if keys.layer_input)
"""Readers that give the authors' data-layer input (float, mean subtracted): normalization=caffe."""
MODALITY_CHANNELS = {"color": 3, "depth": 1, "hha": 3}
"""NYUDv2's inputs (nyud_layers.py tops) and their channels: colour (BGR), log-depth, HHA."""
FAST_PATHS = ("none", "auto", "winograd", "int8")  # eval.fast_path: fcn/inference/fastpath.py
ENGINES = ("torch", "onnxruntime", "openvino")  # eval.engine: fcn/inference/engines.py
VOID = 255
"""The default of data.ignore_index (VOC's void border). Code takes the configured value as an
argument; this constant is only the default of those arguments (also as fcn.data.VOID)."""
LOSS_NAMES = ("ce", "dice", "focal", "lovasz", "ohem", "bce")  # loss.terms[i].name: fcn/training/losses.py
SOFTMAX_LOSSES = ("ce", "ohem")
"""Terms defined on a softmax over exclusive classes only: not for a sigmoid task."""
SIGMOID_LOSSES = ("bce",)
"""Terms defined on one sigmoid per class only: not for the multiclass task."""
TASKS = ("multiclass", "binary", "multilabel")  # data.task
SIGMOID_TASKS = ("binary", "multilabel")
"""Tasks whose model gives one sigmoid logit per class (fcn/core/tasks.py)."""
COMPARED_METRICS = ("mean_dice", "mean_fscore", "mean_precision", "mean_recall")
"""The metrics users compare (mmseg's mDice, mFscore, ...), every task's: fcn/core/scoring.py."""
MULTICLASS_METRICS = (
    "mean_iu",
    "pixel_acc",
    "mean_acc",
    "fwavacc",
    *COMPARED_METRICS,
)  # eval.metric, multiclass
SIGMOID_METRICS = ("mean_iu", *COMPARED_METRICS, "pixel_acc")  # eval.metric, sigmoid tasks
CLASS_WEIGHTINGS = ("inverse_frequency", "median_frequency")  # loss.class_weights as a string
TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}  # logging.trackers: pip name
EVAL_METRICS = {
    "mean_iu": "mean_iou",
    "pixel_acc": "pixel_acc",
    "mean_acc": "mean_acc",
    "fwavacc": "fwavacc",
    "mean_dice": "mean_dice",
    "mean_fscore": "mean_fscore",
    "mean_precision": "mean_precision",
    "mean_recall": "mean_recall",
}
"""eval.metric's choices (MULTICLASS_METRICS, SIGMOID_METRICS) -> the key of an evaluation's record
(metrics.jsonl) that holds it."""


class ConfigError(ValueError):
    """A configuration problem, with a one-line message naming the key and its source."""


@dataclass
class ModelConfig:
    arch: str = "fcn32s"
    """Which FCN: fcn32s, fcn16s, fcn8s or fcn8s_atonce (the paper's four); fcn4s (FCN-8s fused once
    more, with the stride-4 features: score_pool2 on VGG16's pool2, ResNet's layer1, ...; scores every
    4 px place the edges of thin structures, a few pixels wide, that stride 8 blurs; fusion=skip
    only, docs/models.md); unet (not an FCN: U-Net's decoder on the same backbones, as
    segmentation_models_pytorch's Unet: from the stride-32 features, five blocks that each upsample
    2x, concatenate the backbone's features of that stride and refine them with two 3x3 conv + BN +
    ReLU, 256/128/64/32/16 channels, then a 1x1 score at stride 1; any backbone, geometry=same only;
    upsampling, learnable_upsampling, fusion and head are FCN-decoder keys it refuses other values
    of; docs/models.md); or torchvision_fcn:
    torchvision's fcn_resnet50/101 (backbone resnet50 or resnet101, dilated to output stride 8,
    FCNHead on layer4, bilinear upsampling; its state dicts load as they are), which takes
    geometry=same, upsampling=bilinear, head=fcn, dropout_p=0 (predefined_configs/torchvision_fcn_resnet50.yml)."""
    backbone: str = "vgg16"
    """torchvision backbone: vgg16 (the paper), vgg16_bn, resnet18/34/50/101, mobilenet_v3_large; or
    any timm model as 'timm:<name>' (e.g. timm:convnext_tiny, timm:tf_efficientnetv2_s.in21k_ft_in1k):
    its features at strides 8, 16 and 32, found from timm's feature_info (geometry 'same' only)."""
    num_classes: int = 0
    """Number of classes including background (data.task=multiclass), or of sigmoid logits: 1 for
    data.task=binary, one per class (no background) for multilabel. 0 (the default): the number of
    data.classes when they are set (binary: 1), else the datasets' own (21 for PASCAL VOC, 60 for
    PASCAL-Context, ...); the run's config.yml and checkpoints hold the number it stood for."""
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
    aux_weight: float = 0.0
    """torchvision_fcn only: the loss weight of its auxiliary FCNHead on layer3 (torchvision's
    reference trains it with 0.5: loss(out) + 0.5 * loss(aux)); 0 = no auxiliary head. The head
    is used in training only; predictions come from the main head."""
    init_from: str = ""
    """Staged training: a checkpoint (e.g. a trained FCN-32s) whose matching tensors initialise
    this model, as the paper initialises FCN-16s from FCN-32s and FCN-8s from FCN-16s; or
    'pretrained:<name>', published weights by name (python -m fcn.pretrained lists them; downloaded
    into torch hub's cache on first use), e.g. pretrained:torchvision-fcn-resnet50 to fine-tune."""
    in_channels: int = 3
    """Channels of the input images (3: RGB; e.g. 4 for RGB-D, 1 for grey, N for multispectral
    TIFF/.npy). Pretrained first convolutions are adapted to it by timm's rule (RGB filters repeated
    over the channels and scaled by 3/in_channels; one channel gets their sum); docs/nchannel.md."""


@dataclass
class DatasetConfig:
    name: str = "voc"
    """'voc' (PASCAL VOC 2012), 'sbd' (benchmark_RELEASE), 'voc_aug' (VOC 2012 train + SBD
    train/val minus VOC 2012 val; 10,582 images), 'folder' (any dataset in VOC layout), 'pairs'
    (images and masks in two folders paired by file stem, as CVAT and Roboflow export masks: images,
    masks, ids and mask_suffix below; root and split unused), 'cityscapes' (leftImg8bit/ + gtFine/ labelIds, in city folders or not; needs data.label_map unless root holds an export's label_colors.txt), 'ade20k'
    (ADEChallengeData2016), 'coco' (a COCO-format segmentation JSON: annotations and images below;
    root and split unused), the paper's other datasets in the layouts of the authors' data layers
    (fcn/data/paper.py): 'pascal_context' (59 classes + background), 'nyud' (NYUDv2, 40 classes) or
    'siftflow' (33 semantic classes; masks carry the 3 geometric classes too), 'cvat_mask' (CVAT's
    "Segmentation mask 1.1" export: root; split a subset, 'default' or 'all'), 'cvat_xml' (CVAT for
    images 1.1 XML: annotations and images below), 'labelstudio' (Label Studio's JSON export:
    annotations and images below, masks for its brush-to-PNG export), 'labelme' (a root folder of
    labelme's JSON files), 'yolo' (an Ultralytics YOLO segmentation dataset: root holding data.yaml;
    split train, val or test), 'auto' (root's files say which of these it is, when the config
    loads: fcn/config/detect.py; the config then holds that name and its keys), or your own Dataset
    class by import path:
    'package.module:Class'."""
    root: str = "data"
    """Directory holding VOCdevkit/ and/or benchmark_RELEASE/ (voc, sbd, voc_aug), or the
    dataset's own root for 'folder' (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/),
    'cityscapes' (leftImg8bit/, gtFine/), 'ade20k' (ADEChallengeData2016: images/, annotations/),
    pascal_context (VOC2010/ and pascal-context/), nyud and siftflow (see docs/paper_datasets.md)."""
    split: str = "train"
    """Split name: voc: train, val, trainval, seg11valid; sbd: train, val; voc_aug: train;
    folder: any ImageSets/Segmentation/<split>.txt (pairs: unused, see ids); cityscapes: train, val, test; ade20k:
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
    export it). Its masks are cached in .fcn_coco_cache/ beside it (docs/coco.md). name 'cvat_xml':
    CVAT's annotations.xml (masks cached in .fcn_cvat_cache/ beside it). name 'labelstudio': Label
    Studio's JSON export (Export > JSON: its tasks, brush and polygon labels)."""
    images: str = ""
    """name 'coco': the directory holding the JSON's images (file_name relative to it; 'cvat_xml':
    each <image>'s name relative to it; 'labelstudio': its tasks' images, found by base name). name 'pairs':
    the directory of the images, <stem>.jpg (.jpeg, .png, .tif, .tiff, .npy; relative to the current
    directory, as root is)."""
    masks: str = ""
    """name 'pairs': the directory of the masks, <stem><mask_suffix>.png for the image <stem>.*
    (palette or grayscale class indices, 16-bit allowed, or RGB colours converted through
    data.palette); it may be the images directory when mask_suffix is set (Roboflow). name
    'coco_panoptic': its PNG folder when it is not the JSON's path less .json (the format's place).
    name 'labelstudio' (optional): the folder of its "Brush labels to PNG" export, read instead of the
    JSON's brush RLE (task-<id>-annotation-<id>-by-<user>-<tag>-<label>-<n>.png)."""
    ids: str = ""
    """name 'pairs': a file of the split's stems, one per line, each needing its image and mask (this
    path and masks' are relative to the current directory too);
    '' = every image that has a mask, sorted by stem (fcn.data.check names the images without a
    mask and the masks without an image; training warns of them in one line)."""
    mask_suffix: str = ""
    """name 'pairs': what a mask's name adds to its image's stem before .png: '' (abc.jpg <-> abc.png,
    CVAT) or e.g. '_mask' (Roboflow: abc.jpg <-> abc_mask.png)."""


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
    task: str = "multiclass"
    """'multiclass' (one softmax over exclusive classes, background included: the paper's), 'binary'
    (one sigmoid logit for one foreground class, data.classes: [<its name>]; masks {0, 255} or
    {0, 1}, 255 = foreground, not void) or 'multilabel' (one sigmoid logit per class of data.classes,
    no background class, classes may overlap; masks one binary PNG per class, <masks>/<class>/<id>.png,
    or a C x H x W .npy). A pixel is predicted as a class where its sigmoid exceeds eval.threshold
    (docs/one_class_or_overlapping.md)."""
    train: DatasetConfig = field(default_factory=lambda: DatasetConfig("sbd", "data", "train"))
    """Training set (the paper: SBD train, 8,498 images)."""
    val: DatasetConfig = field(default_factory=lambda: DatasetConfig("voc", "data", "seg11valid"))
    """Validation set (the paper: seg11valid, 736 images)."""
    val_fraction: float = 0.0
    """0 (off) or a share in (0, 1) of data.train's items held out for validation, for an export with
    one subset: data.val must then name the same source as data.train (every key equal; in YAML
    `train: &export {name: ..., split: train, ...}` and `val: *export`). An item goes to validation when sha256(its name), first
    8 bytes as an integer / 2**64, is below the share: the same items whatever their order, and an
    item keeps its side when others are added. Training then reads the other items; train.py and
    fcn.data.check say how many in their first lines."""
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
    different classes overlap get data.ignore_index; 'last': the later annotation in the file wins;
    'multilabel' (data.task=multilabel, and only it): one mask per class, overlapping instances of
    different classes kept on both."""
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
    """The mask label that is ignored (data.task=binary: 255 is the foreground, so a binary mask's
    void value is ignored only when set here to another value, e.g. 128) (255: VOC's void border): by the loss, the metrics, the
    dataset's label check, the padding fill of transforms, pad_collate and Mosaic, and the pictures.
    Labels must lie in 0..num_classes-1 or equal it. It may be inside 0..num_classes-1 (e.g. 0 with
    classes 1..N and num_classes N+1): that class slot is then never trained nor scored (its IU is
    nan, left out of the mean, unless the model predicts it), and padding is labelled with it too."""


@dataclass
class LossTerm:
    name: str = "ce"
    """ce, dice, focal, lovasz or ohem (fcn/training/losses.py); with data.task binary or multilabel:
    bce, dice, focal or lovasz on the sigmoids."""
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
    [{name: ce, weight: 1.0}, {name: dice, weight: 0.5}]. data.task binary or multilabel (one sigmoid
    per class): 'bce' (binary cross-entropy with logits, a pixel sum over labelled pixel-class pairs),
    'focal' (its sigmoid focal form), 'dice' (soft Dice of the sigmoids) and 'lovasz' (Lovasz hinge,
    Berman et al. 2018); ce and ohem are softmax losses and refused there (set
    loss.terms: [{name: bce, weight: 1.0}], as predefined_configs/binary.yml does)."""
    normalize: bool = True
    """Average the ce/focal terms over labelled pixels; false sums them, as the reference did
    (loss_param { normalize: false }) with its tiny learning rates."""
    class_weights: Any = field(default_factory=list)
    """Per-class weights: [] (uniform), a list of num_classes floats, 'inverse_frequency' (w_c =
    total / (present * count_c): pixel-weighted mean 1) or 'median_frequency' (Eigen & Fergus: w_c =
    median(freq) / freq_c over present classes); both from data.train's pixel counts, cached in
    <root>/.fcn_class_counts_<split>_<checksum>.json ('pairs': in its masks directory). ce/focal/ohem weight each pixel by its class's
    weight; dice/lovasz take the weighted mean over classes. data.task binary or multilabel: the
    pos_weight of bce and focal (the factor of each class's positive pixels): a list of
    num_classes floats, or 'inverse_frequency': per class, the data.train pixels labelled 0 on its
    mask / those labelled 1 (binary: background / foreground), counted and cached as above."""
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
    run_dir: str = ""
    """Directory of this run: config.yml, checkpoints/, TensorBoard events, PNGs, metrics.jsonl. '' =
    runs/<name of the last config file>, set when the config is loaded (--config
    predefined_configs/fcn32s.yml: runs/fcn32s; config.yml: runs/config; no file: runs/train), so
    each recipe has its own directory and the run's config.yml names the one it used. A directory
    that already holds a run is refused unless resume or overwrite says what to do with it."""
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
    """'' (start fresh: run_dir must not hold a run), 'auto' (run_dir's checkpoints/last.pt if
    present, else start fresh) or a checkpoint path."""
    overwrite: bool = False
    """Replace the run that run_dir holds: once the new run has been set up (config, data, model all
    checked), its config.yml, metrics.jsonl, TensorBoard events, vis/iter_*.png and checkpoints/
    last.pt and best.pt (with their ONNX exports) are deleted, and nothing else in the directory.
    Deleted, not moved aside: this key is the explicit request to discard them, and a copy would
    keep the old checkpoints' gigabytes in a directory nobody reads. false: train.py into a
    directory that holds a run, without resume, stops before any work (exit 2) and says how to
    continue it, start beside it or replace it."""
    device: str = "auto"
    """'auto' (CUDA if available, else Apple's MPS if available, else CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'."""
    sync_bn: bool = False
    """Under torchrun, convert BatchNorm layers to SyncBatchNorm."""
    dist_timeout: int = 1800
    """Under torchrun, seconds a collective (or joining the process group) waits for the other
    processes before the run fails with exit 1 (a hung or unreachable peer); a peer that exits is
    noticed at once. Longer than the slowest evaluation and checkpoint write on rank 0, which the
    others wait for."""
    early_stop_patience: int = 0
    """Stop after this many evaluations in a row without a better eval.metric (mean IU unless it
    names another; the EMA's with ema_decay > 0); best.pt keeps the best weights, last.pt the count (a resumed run goes on
    counting). 0 = off."""


@dataclass
class EvalConfig:
    threshold: float = 0.5
    """data.task binary or multilabel: a pixel is predicted as a class where that class's sigmoid
    probability is above this (evaluate.py, predict.py, the API, the metrics during training);
    evaluate.py --sweep-thresholds reports the best one per metric."""
    metric: str = "mean_iu"
    """The validation metric that chooses best.pt, counts for training.early_stop_patience and
    that tune.py maximises and prunes on (the EMA's with training.ema_decay > 0): 'mean_iu' (the
    default), 'pixel_acc', 'mean_acc', 'fwavacc' (the paper's four), 'mean_dice', 'mean_fscore'
    (at eval.fscore_beta), 'mean_precision' or 'mean_recall' (nan-means over classes:
    docs/evaluation.md); with a sigmoid task (data.task binary or multilabel) all but 'mean_acc'
    and 'fwavacc', at eval.threshold."""
    fscore_beta: float = 1.0
    """The beta of the F-score (mean_fscore, fscore) that evaluate.py, metrics.jsonl and
    eval.metric=mean_fscore report: (1 + beta^2) tp / ((1 + beta^2) tp + beta^2 fn + fp), recall
    weighted beta times as much as precision; 1 (the default) is F1, equal to Dice. Positive."""
    flip: bool = False
    """Test-time augmentation: average with the horizontally flipped prediction."""
    scales: List[float] = field(default_factory=lambda: [1.0])
    """Test-time scales; softmax (sigmoid for a binary or multilabel task) probabilities are
    averaged at the native size."""
    amp: str = "none"
    """Mixed precision at evaluation/prediction: 'none' or 'bf16' or 'fp16'."""
    channels_last: bool = False
    """Channels-last memory format at evaluation/prediction."""
    engine: str = "torch"
    """evaluate.py/predict.py: what runs the model: 'torch' (PyTorch, any device), 'onnxruntime' or
    'openvino' (the checkpoint exported once to ONNX, cached beside it, run by that runtime on the
    CPU; same pre/post-processing, TTA and sliding windows). See fcn/inference/engines.py."""
    fast_path: str = "none"
    """evaluate.py/predict.py on the CPU: 'none' (fp32); 'auto' (chosen by the CPU and the installed
    engines, logged, exact paths only with eval.engine=torch: ONNX Runtime or OpenVINO fp32 where
    installed, else winograd; bf16 autocast + channels-last where bf16 is native (AVX-512 BF16,
    AMX); fcn.inference.fastpath.resolve_fast_path); 'winograd' (3x3 convs by NNPACK's Winograd: fp32's
    results, faster); 'int8' (quantized after training, calibrated on eval.calibration_images:
    close to fp32, faster still; never chosen by auto; with eval.engine=onnxruntime/openvino that
    runtime's static int8). See fcn/inference/fastpath.py, fcn/inference/engines.py; bench/fast_paths.py and
    bench/engines.py measure them."""
    calibration_images: int = 8
    """Images (the first of the data being evaluated or predicted; no labels) that calibrate int8."""
    use_ema: bool = True
    """Evaluate the EMA weights when the checkpoint has them."""
    mode: str = "whole"
    """'whole' (the image in one forward, as the paper) or 'slide' (tile x tile windows every stride
    pixels, their logits averaged: memory bounded by the tile; fcn/core/sliding.py). Also used by the
    evaluation during training."""
    tile: int = 512
    """eval.mode=slide: side of the square window in pixels (clamped to the image); a tile at least
    as large as the image gives exactly the 'whole' result."""
    stride: int = 341
    """eval.mode=slide: pixels between window starts (at most tile); 341 of 512 overlaps a third."""
    window_batch: int = 4
    """eval.mode=slide: windows per forward pass (times the images of a batch)."""
    max_memory: str = "auto"
    """predict.py, the Python API and demo.py: the most memory, in GB, that segmenting one image may
    add (input, activations, score maps, labels), as estimated from the backbone and the image size
    (fcn/inference/budget.py): an image whose whole-image pass would need more is segmented in
    sliding windows (eval.tile, eval.stride; said in one line), one that needs more even window by
    window is an error naming this key. 'auto': 2 GB on the CPU (a 16 GB machine segments a
    24-megapixel photo with the paper's VGG16 FCN-8s in under 6 GB), the free memory of the GPU on
    CUDA; a number: that many GB (on CUDA at most the free memory); 'none': no limit (eval.mode as
    set). evaluate.py and training's evaluation follow eval.mode as set."""


@dataclass
class LoggingConfig:
    trackers: List[str] = field(default_factory=lambda: ["tensorboard"])
    """Where the run's metrics and pictures go besides metrics.jsonl and vis/: any of 'tensorboard'
    (events in run_dir), 'mlflow', 'wandb' (optional packages: pip install -r
    requirements.track.txt). Each gets the resolved config as flattened parameters, the training
    scalars and the evaluation's metrics with the iteration as step, and the fixed-batch and
    confusion pictures at each evaluation; only the primary process logs. A tracker that fails
    during the run is a warning line and training goes on (fcn/training/trackers.py)."""
    experiment: str = ""
    """MLflow experiment, made if missing ('' = $MLFLOW_EXPERIMENT_NAME, else pytorch-fcn)."""
    run_name: str = ""
    """Name of the run in MLflow and W&B ('' = the last part of training.run_dir)."""
    mlflow_uri: str = ""
    """MLflow tracking URI: a server (http://host:5000), a database (sqlite:///mlflow.db: a new
    experiment keeps its pictures in mlartifacts/ beside it) or '' ($MLFLOW_TRACKING_URI, else
    sqlite:///<training.run_dir's parent>/mlflow.db: every run under runs/ in one local store)."""
    wandb_project: str = ""
    """W&B project ('' = $WANDB_PROJECT, else W&B's default). WANDB_MODE=offline writes the run
    under run_dir/wandb/ for a later `wandb sync`."""
    wandb_entity: str = ""
    """W&B entity, a user or team ('' = $WANDB_ENTITY, else the account's default)."""
    log_checkpoints: bool = False
    """At the end of the run, upload checkpoints/best.pt to MLflow (artifact checkpoints/best.pt)
    and W&B (model artifact model-<run id>, alias best)."""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


def num_classes(cfg: DictConfig) -> int:
    """Return the number of classes the run predicts (model.num_classes)."""
    return int(cfg.model.num_classes)


def own_class_count(ds: DictConfig) -> Optional[int]:
    """Return the number of classes data.<split> `ds` names itself: its export's file's (a CVAT
    labelmap.txt: FormatKeys.export_classes), else its format's own_classes; None when it names none
    or its export cannot be read here (a run's config on another machine: nothing is inferred)."""
    keys = format_keys(ds.name)
    if keys.export_classes is not None:
        try:
            found = keys.export_classes(ds)
        except (OSError, ValueError):  # validate() says why when model.num_classes is then unknown
            return None
        if found is not None:
            return len(found.names)
    return keys.own_classes


def own_class_counts(data: DictConfig) -> set[int]:
    """Return the class counts of data.train's and data.val's own class lists: a paper dataset's
    (FormatKeys.own_classes: PASCAL VOC's 21 unless the format says), an export's labelmap's; one with
    none (folder: data.classes names them) adds nothing."""
    own = (own_class_count(ds) for ds in (data.train, data.val))
    return {n for n in own if n is not None}


def _own_class_count(ds: Any) -> Optional[int]:
    """Return how many classes a split's format names: its export's class file's count where it has
    one (FormatKeys.export_classes: Roboflow's _classes.csv), else FormatKeys.own_classes."""
    keys = format_keys(ds.name)
    names = keys.export_classes(ds)[0] if keys.export_classes is not None else []
    return len(names) if names else keys.own_classes


def memory_limit_gb(value: Any) -> float | str | None:
    """Return eval.max_memory as 'auto', None ('none': no limit) or a positive number of GB;
    ValueError for anything else."""
    text = str(value).strip().lower()
    if text in ("auto", "none"):
        return None if text == "none" else "auto"
    try:
        number = float(text)
    except ValueError:
        number = float("nan")
    if not number > 0 or number == float("inf"):
        raise ValueError(f"eval.max_memory={value!r} must be auto, none or a positive number of GB (e.g. 4)")
    return number


def is_import_path(name: str) -> bool:
    """Return whether a dataset name is a Dataset class by import path: 'package.module:Class'."""
    return re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", str(name)) is not None


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


def is_timm(backbone: str) -> bool:
    """Return whether model.backbone names a timm model: 'timm:<name>' with a non-empty name."""
    return str(backbone).startswith("timm:") and len(str(backbone)) > len("timm:")


def pretrained_choice(value: str) -> bool | str:
    """Return False, True or a path for model.pretrained (YAML true/false arrive as strings)."""
    text = str(value)
    if text.lower() == "false":
        return False
    if text.lower() == "true":
        return True
    return os.path.expanduser(text)
