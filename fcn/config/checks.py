"""Validation: validate(cfg, source), one check per section of the config, each naming the key.

validate() runs the section checks in a fixed order: model, the paper's options, each dataset,
labels, input (transforms and channels), batches, loss, optimizer and schedule, training, eval. The
first impossible key raises a one-line ConfigError naming the key and the file or command line it
came from. The order decides which of two wrong keys is reported (tests and users see that one),
so a check moved between sections changes behaviour; add a new check at the end of its section.
"""

from __future__ import annotations

import difflib
from typing import Any, Sequence
from urllib.parse import urlsplit

from omegaconf import DictConfig, OmegaConf

from fcn.config.formats import FORMAT_KEYS, LENIENT_KEYS, OPTIONAL_KEYS, format_keys
from fcn.config.schema import (
    ARCHS,
    BACKBONES,
    CLASS_WEIGHTINGS,
    DATASETS,
    ENGINES,
    FAST_PATHS,
    LOSS_NAMES,
    MODALITY_CHANNELS,
    MULTICLASS_METRICS,
    SIGMOID_LOSSES,
    SIGMOID_METRICS,
    SIGMOID_TASKS,
    SOFTMAX_LOSSES,
    TASKS,
    TORCHVISION_FCN_OPTIONS,
    TRACKERS,
    UNET_UNUSED_OPTIONS,
    VGG_BACKBONES,
    VOID,
    ConfigError,
    is_import_path,
    is_timm,
    label_map_dict,
    memory_limit_gb,
    own_class_count,
    own_class_counts,
)


def validate(cfg: DictConfig, source: str) -> None:
    """Raise ConfigError naming the first key whose value is impossible, alone or with others."""
    _validate_model(cfg, source)
    _validate_paper_options(cfg, source)
    for split in ("train", "val"):
        _validate_dataset(source, f"data.{split}", cfg.data[split], cfg.data)
    _validate_labels(cfg, source)
    _validate_val_fraction(cfg.data, source)
    _validate_input(cfg, source)
    _validate_batches(cfg, source)
    _validate_loss(cfg.loss, cfg.model.num_classes, source, cfg.data.task)
    _validate_optimizer(cfg, source)
    _validate_training(cfg, source)
    _validate_eval(cfg, source)
    _validate_logging(cfg, source)


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


def _validate_val_fraction(d: DictConfig, source: str) -> None:
    """Raise ConfigError for a data.val_fraction outside [0, 1), or one set while data.val names
    another source than data.train (the held-out items are data.train's: the two must be one export)."""
    share = float(d.val_fraction)
    if not 0.0 <= share < 1.0:
        raise ConfigError(
            f"{source}: data.val_fraction={d.val_fraction} must be 0 (off) or a share below 1 of data.train held out"
        )
    if share == 0:
        return
    if is_import_path(d.train.name):
        raise ConfigError(
            f"{source}: data.val_fraction holds items out by their names; data.train.name='{d.train.name}' "
            "(a Dataset class) names none: give data.val a split of its own and data.val_fraction=0"
        )
    train, val = OmegaConf.to_container(d.train), OmegaConf.to_container(d.val)
    differ = next((k for k in train if train[k] != val.get(k)), None)
    if differ is not None:
        raise ConfigError(
            f"{source}: data.val_fraction={share} holds out items of data.train, but data.val.{differ}="
            f"{val.get(differ)!r} differs from data.train.{differ}={train[differ]!r}: give data.val the "
            "same keys (YAML: train: &export {...}, val: *export, split included) or data.val_fraction=0"
        )


def _validate_model(cfg: DictConfig, source: str) -> None:
    """Raise ConfigError for a model key outside its choices or a model that cannot be built; also
    for data.ignore_index, which bounds model.num_classes."""
    m, d = cfg.model, cfg.data
    _choice(source, "model.arch", m.arch, ARCHS)
    if not is_timm(m.backbone):  # any timm name passes here; timm itself checks it at build time
        _choice(source, "model.backbone", m.backbone, BACKBONES + ("timm:<name>",))
    _choice(source, "model.head", m.head, ("score", "fcn"))
    _choice(source, "model.geometry", m.geometry, ("paper", "same"))
    _choice(source, "model.upsampling", m.upsampling, ("transposed", "bilinear", "nearest_conv"))
    _choice(source, "model.fusion", m.fusion, ("skip", "full"))
    _choice(source, "model.dropout", m.dropout, ("element", "channel"))
    _validate_torchvision_fcn(m, source)
    _choice(source, "data.task", d.task, TASKS)
    if d.task == "binary" and m.num_classes != 1:
        raise ConfigError(
            f"{source}: model.num_classes={m.num_classes} but data.task=binary has one sigmoid logit: "
            "set model.num_classes=1 (or leave it 0) and data.classes to the foreground's one name"
        )
    if d.task == "multiclass" and m.num_classes < 2 and m.num_classes != 0:  # 0: reported by _validate_labels
        hint = "; for one class against the rest set data.task=binary" if m.num_classes == 1 else ""
        raise ConfigError(f"{source}: model.num_classes={m.num_classes} must be at least 2{hint}")
    if d.task == "multilabel" and not d.classes:
        raise ConfigError(
            f"{source}: data.task=multilabel needs data.classes: the names of the classes (the mask "
            "folders <masks>/<class name>/), one sigmoid logit each"
        )
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
    if m.arch == "fcn4s" and m.fusion != "skip":
        raise ConfigError(
            f"{source}: model.arch=fcn4s is skip fusion down to stride 4; set model.fusion=skip"
        )
    if m.arch == "unet" and m.geometry != "same":
        raise ConfigError(f"{source}: model.arch=unet (U-Net's decoder) needs model.geometry=same")
    unused = [k for k, v in UNET_UNUSED_OPTIONS.items() if m.arch == "unet" and m[k] != v]
    if unused:
        raise ConfigError(
            f"{source}: model.arch=unet is U-Net's decoder, which has no {', '.join('model.' + k for k in unused)}: "
            f"leave {'them' if len(unused) > 1 else 'it'} unset ("
            + " ".join(f"model.{k}={str(UNET_UNUSED_OPTIONS[k]).lower()}" for k in unused)
            + ")"
        )
    pretrained = str(m.pretrained)
    if pretrained.lower() not in ("true", "false") and not pretrained:
        raise ConfigError(f"{source}: model.pretrained must be true, false or a file path")


def _validate_torchvision_fcn(m: DictConfig, source: str) -> None:
    """Raise ConfigError for model.aux_weight, and for model.arch=torchvision_fcn with keys that say
    something else than what it builds."""
    if m.aux_weight < 0:
        raise ConfigError(f"{source}: model.aux_weight={m.aux_weight} must be >= 0")
    if m.arch != "torchvision_fcn":
        if m.aux_weight:
            raise ConfigError(
                f"{source}: model.aux_weight is torchvision_fcn's auxiliary head; set model.aux_weight=0 "
                f"for model.arch={m.arch}"
            )
        return
    if m.backbone not in ("resnet50", "resnet101"):
        raise ConfigError(
            f"{source}: model.arch=torchvision_fcn needs model.backbone=resnet50 or resnet101, not {m.backbone}"
        )
    wrong = [f"model.{k}={str(v).lower()}" for k, v in TORCHVISION_FCN_OPTIONS.items() if m[k] != v]
    if wrong:
        raise ConfigError(
            f"{source}: model.arch=torchvision_fcn has no options beyond its backbone and aux_weight: set "
            f"{' '.join(wrong)} (predefined_configs/torchvision_fcn_resnet50.yml sets them)"
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
    if g and m.arch == "fcn4s":
        raise ConfigError(
            f"{source}: model.geometric_classes is siftflow-fcn*s's head (fcn32s, fcn16s, fcn8s), not model.arch=fcn4s's"
        )
    for key in ("train", "val"):
        ds = d[key]
        rules = format_keys(ds.name)
        mods = list(ds.modalities)
        for i, name in enumerate(mods):
            _choice(source, f"data.{key}.modalities[{i}]", name, tuple(MODALITY_CHANNELS))
        if not rules.modalities and mods != ["color"]:
            stacking = ", ".join(n for n, k in FORMAT_KEYS.items() if k.modalities)
            raise ConfigError(
                f"{source}: data.{key}.modalities={mods} is for {stacking}; {ds.name} has [color]"
            )
        if rules.modalities:
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
        elif m.in_channels != 3 and rules.rgb_only:
            raise ConfigError(
                f"{source}: model.in_channels={m.in_channels} but data.{key}.name={ds.name} gives RGB images"
            )
        if rules.geometric != bool(g):
            raise ConfigError(
                f"{source}: data.{key}.name={ds.name} with model.geometric_classes={g}: SIFT Flow's masks hold the "
                "geometric labels too, so siftflow and a geometric head (3) go together"
            )
        if rules.layer_input and d.transforms.normalization != "caffe":
            raise ConfigError(
                f"{source}: data.{key}.name={ds.name} reads the authors' data-layer input (BGR/log-depth/HHA minus "
                "their means): set data.transforms.normalization=caffe"
            )
    layer_input = any(format_keys(d[k].name).layer_input for k in ("train", "val"))
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


def _names_its_labels(ds: DictConfig, d: DictConfig) -> bool:
    """Return whether a split whose format reads raw ids (needs_label_map) names its own: its export
    has a class file (FormatKeys.export_classes: a Cityscapes-like export's label_colors.txt), or,
    where the export cannot be read here, data.classes holds what training wrote from one."""
    read = format_keys(ds.name).export_classes
    if read is None:
        return False
    try:
        return read(ds) is not None
    except (OSError, ValueError):  # a run's config away from its data: resolve_classes wrote them
        return bool(len(d.classes))


def _validate_dataset(source: str, key: str, ds: DictConfig, d: DictConfig) -> None:
    """Raise ConfigError for a dataset name that is neither built in nor an import path, args
    given to a built-in reader, or a key its format's rules (fcn/config/formats.py) refuse: a label
    map or data.classes it needs, a key it needs unset (COCO's annotations and images, pairs'
    images and masks), a key of another format given to it, a mask_suffix that is not a bare suffix."""
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
    rules = format_keys(ds.name)
    if rules.needs_label_map and not len(d.label_map) and not _names_its_labels(ds, d):
        raise ConfigError(f"{source}: {key}.name='{ds.name}' {rules.needs_label_map}")
    if rules.needs_classes and not d.classes:
        raise ConfigError(
            f"{source}: {key}.name='{ds.name}' needs data.classes (the class names in index order)"
        )
    for part, what in rules.needs.items():
        if not ds[part]:
            raise ConfigError(
                f"{source}: {key}.name='{ds.name}' needs {key}.{part}" + (f": {what}" if what else "")
            )
    for part in OPTIONAL_KEYS:
        if ds[part] and part not in LENIENT_KEYS and not rules.takes(part):
            names = [f"'{n}'" for n, k in FORMAT_KEYS.items() if k.takes(part)]
            owners = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 2 else names)
            raise ConfigError(f"{source}: {key}.{part} is for name {owners}, not '{ds.name}'")
    suffix = str(ds.mask_suffix)
    if "/" in suffix or "\\" in suffix or suffix.lower().endswith(".png"):
        raise ConfigError(
            f"{source}: {key}.mask_suffix='{suffix}' must be what the mask's name adds to the image's stem "
            "before .png (e.g. '_mask' for abc_mask.png): no directory, no .png"
        )


def _validate_labels(cfg: DictConfig, source: str) -> None:
    """Raise ConfigError for the keys that turn masks into class indices (COCO's options, the label
    map, data.classes, data.palette) where they disagree with model.num_classes or the datasets."""
    m, d = cfg.model, cfg.data
    _choice(source, "data.coco_unlisted", d.coco_unlisted, ("error", "ignore", "background"))
    _choice(source, "data.coco_overlap", d.coco_overlap, ("ignore", "last", "multilabel"))
    names = list(dict.fromkeys(str(d[k].name) for k in ("train", "val")))
    for name in names:  # a format's own rule on data.* keys (COCO's overlap with the task)
        check = format_keys(name).check_data
        error = check(d) if check is not None else ""
        if error:
            raise ConfigError(f"{source}: {error}")
    for name in names:
        if (len(d.label_map) or d.reduce_zero_label) and format_keys(name).no_label_map:
            raise ConfigError(
                f"{source}: data.label_map and data.reduce_zero_label do not apply to '{name}' datasets "
                f"{format_keys(name).no_label_map}"
            )
    _validate_task_labels(cfg, source)
    own = own_class_counts(d) if d.task == "multiclass" else set()
    if not d.classes and len(own) > 1:
        raise ConfigError(
            f"{source}: data.train.name={d.train.name} and data.val.name={d.val.name} have different classes"
        )
    if m.num_classes == 0:  # still 0 after loading (fcn.config.loading): nothing to infer it from
        for key in ("train", "val"):  # an export's class file that could not be read says why
            read = format_keys(d[key].name).export_classes
            try:
                read is None or read(d[key])
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"{source}: data.{key}: {exc}; set data.classes (the class names in index order) "
                    "to read it without its class file"
                ) from None
        raise ConfigError(
            f"{source}: model.num_classes cannot be inferred: set data.classes (the class names in index "
            "order) or model.num_classes"
        )
    _validate_label_map(source, d, 2 if d.task == "binary" else m.num_classes)
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
    if not d.classes and own and m.num_classes != next(iter(own)):
        n = next(iter(own))
        what = (
            "PASCAL VOC"
            if n == 21
            else next(ds.name for ds in (d.val, d.train) if own_class_count(ds) is not None)
        )
        raise ConfigError(
            f"{source}: model.num_classes={m.num_classes} but {what} has {n} classes; "
            "set data.classes for another label set"
        )


def _validate_task_labels(cfg: DictConfig, source: str) -> None:
    """Raise ConfigError for the keys a sigmoid task (data.task binary or multilabel) cannot take."""
    m, d = cfg.model, cfg.data
    if d.task not in SIGMOID_TASKS:
        return
    if d.task == "binary" and len(d.classes) > 1:
        raise ConfigError(
            f"{source}: data.classes={list(d.classes)} but data.task=binary segments one class: name only "
            "the foreground (e.g. [defect]); for several classes use data.task=multilabel or multiclass"
        )
    if m.geometric_classes:
        raise ConfigError(
            f"{source}: model.geometric_classes is SIFT Flow's second softmax head; data.task={d.task} "
            "takes none (set it to 0)"
        )
    for ds_key in ("train", "val"):
        name = d[ds_key].name
        if d.task not in format_keys(name).tasks:
            raise ConfigError(
                f"{source}: data.{ds_key}.name={name} has multiclass masks; data.task={d.task} reads "
                f"{_sigmoid_readers()}"
            )
    if d.task == "multilabel" and (len(d.label_map) or d.reduce_zero_label):
        raise ConfigError(
            f"{source}: data.label_map and data.reduce_zero_label translate class ids; data.task=multilabel "
            "masks are one 0/1 mask per class: remove them"
        )


def _sigmoid_readers() -> str:
    """Return the formats a sigmoid task reads, in words: "'folder' or 'pairs' datasets, your own
    class by import path, or (multilabel) 'coco'"."""
    both = [f"'{n}'" for n, k in FORMAT_KEYS.items() if set(SIGMOID_TASKS) <= set(k.tasks)]
    multilabel = [
        f"'{n}'" for n, k in FORMAT_KEYS.items() if "multilabel" in k.tasks and "binary" not in k.tasks
    ]
    words = f"{' or '.join(both)} datasets, your own class by import path"
    return f"{words}, or (multilabel) {' or '.join(multilabel)}" if multilabel else words


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


def _validate_input(cfg: DictConfig, source: str) -> None:
    """Raise ConfigError for data.transforms and the channel keys it works with (model.in_channels,
    mean/std, data.display_channels) that do not fit together."""
    m, d = cfg.model, cfg.data
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
    layer_input = all(format_keys(d[k].name).layer_input for k in ("train", "val"))
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


def _validate_batches(cfg: DictConfig, source: str) -> None:
    """Raise ConfigError for batch keys (sizes, workers, pad_collate, data.mixing) that cannot make a
    batch."""
    d = cfg.data
    tr = d.transforms
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


def _validate_loss(loss: DictConfig, n: int, source: str, task: str = "multiclass") -> None:
    """Raise ConfigError for an unknown loss term, a bad weight or bad class weights, or a term
    that does not fit data.task (a softmax loss with one sigmoid per class, or the reverse)."""
    if len(loss.terms) == 0:
        raise ConfigError(
            f"{source}: loss.terms is empty; give at least one term, e.g. [{{name: ce, weight: 1.0}}]"
        )
    for i, term in enumerate(loss.terms):
        _choice(source, f"loss.terms[{i}].name", term.name, LOSS_NAMES)
        _positive(source, f"loss.terms[{i}].weight", term.weight, allow_zero=True)
        if task in SIGMOID_TASKS and term.name in SOFTMAX_LOSSES:
            raise ConfigError(
                f"{source}: loss.terms[{i}].name={term.name} is a softmax loss but data.task={task} gives one "
                "sigmoid per class; use bce, dice, focal or lovasz (e.g. loss.terms=[{name: bce, weight: 1.0}])"
            )
        if task not in SIGMOID_TASKS and term.name in SIGMOID_LOSSES:
            raise ConfigError(
                f"{source}: loss.terms[{i}].name={term.name} is a sigmoid loss but data.task={task} is a "
                "softmax over classes; use ce, or set data.task=binary or multilabel"
            )
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
        if task in SIGMOID_TASKS and weights != "inverse_frequency":
            raise ConfigError(
                f"{source}: loss.class_weights={weights} but data.task={task} weights positives (bce's "
                "pos_weight): give a list of one number per class or inverse_frequency (each class's "
                "pixels without it / with it in data.train)"
            )
        return
    if not OmegaConf.is_list(weights) and not isinstance(weights, (list, tuple)):
        raise ConfigError(
            f"{source}: loss.class_weights={weights!r} must be a list of floats, inverse_frequency or median_frequency"
        )
    if any(isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0 for w in weights):
        raise ConfigError(f"{source}: loss.class_weights={list(weights)} must hold numbers >= 0")
    if len(weights) and len(weights) != n:
        raise ConfigError(f"{source}: loss.class_weights has {len(weights)} values but model.num_classes={n}")


def _validate_optimizer(cfg: DictConfig, source: str) -> None:
    """Raise ConfigError for an optimizer or learning-rate schedule key outside its range."""
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


def _validate_training(cfg: DictConfig, source: str) -> None:
    """Raise ConfigError for a training key outside its range or choices."""
    t = cfg.training
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
    if not (t.device in ("auto", "cpu", "cuda", "mps") or t.device.startswith("cuda:")):
        raise ConfigError(f"{source}: training.device='{t.device}' must be auto, cpu, cuda, cuda:N or mps")
    if t.overwrite and t.resume:
        raise ConfigError(
            f"{source}: training.overwrite=true replaces the run in training.run_dir and "
            f"training.resume='{t.resume}' continues one; set only one of them"
        )


def _validate_eval(cfg: DictConfig, source: str) -> None:
    """Raise ConfigError for an eval key outside its choices or an engine, fast path, precision and
    window combination that cannot run."""
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
    if not 0.0 < e.threshold < 1.0:
        raise ConfigError(f"{source}: eval.threshold={e.threshold} must be a probability in (0, 1)")
    if not e.fscore_beta > 0:
        raise ConfigError(
            f"{source}: eval.fscore_beta={e.fscore_beta} must be positive (1: F1, the Dice score)"
        )
    task = cfg.data.task
    _choice(source, "eval.metric", e.metric, SIGMOID_METRICS if task in SIGMOID_TASKS else MULTICLASS_METRICS)
    _choice(source, "eval.mode", e.mode, ("whole", "slide"))
    _positive(source, "eval.tile", e.tile)
    _positive(source, "eval.stride", e.stride)
    _positive(source, "eval.window_batch", e.window_batch)
    try:
        memory_limit_gb(e.max_memory)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if e.stride > e.tile:
        raise ConfigError(
            f"{source}: eval.stride={e.stride} is larger than eval.tile={e.tile}: pixels between windows "
            "would get no prediction"
        )


def _validate_logging(cfg: DictConfig, source: str) -> None:
    """Raise ConfigError for a tracker outside the choices or named twice, or an MLflow URI with
    credentials in it (they would be written into config.yml, every checkpoint, the trackers'
    parameters and a Hub folder: MLflow reads them from the environment instead)."""
    try:
        netloc = urlsplit(str(cfg.logging.mlflow_uri)).netloc
    except ValueError as exc:
        raise ConfigError(f"{source}: logging.mlflow_uri is not a URI ({exc})") from None
    if "@" in netloc:
        raise ConfigError(
            f"{source}: logging.mlflow_uri holds a user name or password ('user:password@host'); it would be "
            "written into the run's config, checkpoints and trackers: give the URI without them and set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in the "
            "environment, as MLflow documents"
        )
    trackers = list(cfg.logging.trackers)
    for name in trackers:
        _choice(source, "logging.trackers", name, tuple(TRACKERS))
    if len(set(trackers)) < len(trackers):
        raise ConfigError(f"{source}: logging.trackers={trackers} names a tracker twice")
