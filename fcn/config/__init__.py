"""The typed configuration: every key, its type, its default and what it means.

A run's configuration is the schema (schema.py: dataclasses with a docstring under every field),
merged with one or more YAML files (``config.yml`` or ``predefined_configs/*.yml``, which hold only
differences from these defaults) and then with ``key=value`` overrides from the command line
(loading.py). It is validated once (checks.py: one check per section), made read-only, and never
changed afterwards. ``python -m fcn.config > config.yml`` writes the documented defaults
(documented.py). Import the names from here: ``from fcn.config import load_config``.
"""

from fcn.config.checks import validate
from fcn.config.documented import documented_yaml
from fcn.config.loading import config_from_dict, load_config, read_text, to_dict, to_yaml, with_overrides
from fcn.config.schema import (
    ARCHS,
    BACKBONES,
    CLASS_WEIGHTINGS,
    DATASETS,
    ENGINES,
    FAST_PATHS,
    LAYER_INPUT_DATASETS,
    LOSS_NAMES,
    MODALITY_CHANNELS,
    PAPER_DATASET_CLASSES,
    VGG_BACKBONES,
    VOID,
    Config,
    ConfigError,
    DataConfig,
    DatasetConfig,
    EvalConfig,
    LossConfig,
    LossTerm,
    MixingConfig,
    ModelConfig,
    OptimizerConfig,
    ScheduleConfig,
    TrainingConfig,
    TransformConfig,
    is_import_path,
    is_timm,
    label_map_dict,
    memory_limit_gb,
    num_classes,
    pretrained_choice,
)

__all__ = [
    "ARCHS",
    "BACKBONES",
    "CLASS_WEIGHTINGS",
    "DATASETS",
    "ENGINES",
    "FAST_PATHS",
    "LAYER_INPUT_DATASETS",
    "LOSS_NAMES",
    "MODALITY_CHANNELS",
    "PAPER_DATASET_CLASSES",
    "VGG_BACKBONES",
    "VOID",
    "Config",
    "ConfigError",
    "DataConfig",
    "DatasetConfig",
    "EvalConfig",
    "LossConfig",
    "LossTerm",
    "MixingConfig",
    "ModelConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "TrainingConfig",
    "TransformConfig",
    "config_from_dict",
    "documented_yaml",
    "is_import_path",
    "is_timm",
    "label_map_dict",
    "memory_limit_gb",
    "load_config",
    "num_classes",
    "pretrained_choice",
    "read_text",
    "to_dict",
    "to_yaml",
    "validate",
    "with_overrides",
]
