"""The config schema: every shipped config loads; bad keys, types and values are one-line errors."""

from pathlib import Path

import pytest
import yaml
from omegaconf.errors import ReadonlyConfigError

from fcn.config import (
    ARCHS,
    ConfigError,
    config_from_dict,
    documented_yaml,
    load_config,
    to_dict,
    to_yaml,
    with_overrides,
)

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(str(p.relative_to(REPO)) for p in (REPO / "predefined_configs").glob("*.yml"))


def test_defaults_load_and_are_read_only():
    cfg = load_config()
    assert cfg.model.arch == "fcn32s"
    with pytest.raises(ReadonlyConfigError):
        cfg.model.arch = "fcn8s"


@pytest.mark.parametrize("name", ["config.yml", *SHIPPED])
def test_every_shipped_config_loads(name):
    cfg = load_config([str(REPO / name)])
    assert cfg.model.arch in ARCHS


def test_config_yml_is_the_documented_schema():
    shipped = (REPO / "config.yml").read_text()
    assert shipped == documented_yaml(), "config.yml is stale: run python -m fcn.config > config.yml"


def _repeated_defaults(node: dict, base: dict, path: str = "") -> list[str]:
    found = []
    for key, value in node.items():
        if key not in base:  # a key of a free mapping (data.label_map): a difference by itself
            continue
        if isinstance(value, dict):
            found += _repeated_defaults(value, base[key], f"{path}{key}.")
        elif value == base[key]:
            found.append(f"{path}{key}")
    return found


@pytest.mark.parametrize("name", SHIPPED)
def test_predefined_configs_hold_only_differences(name):
    data = yaml.safe_load((REPO / name).read_text()) or {}  # minibatch_fcn32s.yml is the defaults
    assert _repeated_defaults(data, to_dict(load_config())) == []


def test_run_dir_defaults_to_runs_and_the_last_config_files_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("config.yml").write_text("")
    Path("a.yml").write_text("training:\n  iters: 3\n")
    Path("b.yaml").write_text("optimizer:\n  lr: 0.5\n")
    Path("mine.yml").write_text("training:\n  run_dir: elsewhere/x\n")
    assert load_config(["config.yml"]).training.run_dir == "runs/config"  # plain python train.py
    assert load_config(["a.yml"]).training.run_dir == "runs/a"
    assert load_config(["a.yml", "b.yaml"]).training.run_dir == "runs/b"
    assert load_config(["mine.yml", "b.yaml"]).training.run_dir == "elsewhere/x"  # set: kept
    assert load_config(["a.yml"], ["training.run_dir=out/r"]).training.run_dir == "out/r"
    assert load_config(["mine.yml"], ["training.run_dir="]).training.run_dir == "runs/mine"  # cleared
    assert load_config().training.run_dir == "runs/train"  # no file to name it by
    fcn32s = load_config([str(REPO / "predefined_configs/fcn32s.yml")])
    assert fcn32s.training.run_dir == "runs/fcn32s"
    assert "run_dir: runs/a\n" in to_yaml(load_config(["a.yml"]))  # what the run's config.yml says


def test_each_staged_recipe_starts_from_where_its_previous_stage_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # run directories are relative to where train.py runs
    staged = 0
    for name in SHIPPED:
        init_from = load_config([str(REPO / name)]).model.init_from
        if init_from.startswith("runs/"):
            previous = init_from.split("/")[1]
            assert (REPO / "predefined_configs" / f"{previous}.yml").is_file(), name
            ran = load_config([str(REPO / "predefined_configs" / f"{previous}.yml")]).training.run_dir
            assert init_from == f"{ran}/checkpoints/best.pt", name
            staged += 1
    assert staged >= 8


def test_overwrite_and_resume_together_are_refused():
    with pytest.raises(ConfigError, match="training.overwrite=true .* training.resume='auto'.*only one"):
        load_config(overrides=["training.overwrite=true", "training.resume=auto"])


def test_overrides_and_files_merge_in_order(tmp_path):
    extra = tmp_path / "extra.yml"
    extra.write_text("optimizer:\n  lr: 0.5\n")
    cfg = load_config([str(REPO / "predefined_configs/fcn8s.yml"), str(extra)], ["training.iters=7"])
    assert (cfg.model.arch, cfg.optimizer.lr, cfg.training.iters) == ("fcn8s", 0.5, 7)


def test_round_trip_through_a_checkpoint_dict():
    cfg = load_config(overrides=["model.arch=fcn16s"])
    again = config_from_dict(to_dict(cfg), overrides=["training.iters=3"])
    assert again.model.arch == "fcn16s" and again.training.iters == 3
    assert with_overrides(cfg, ["model.pretrained=false"]).model.pretrained.lower() == "false"
    assert cfg.model.pretrained == "true"  # the original is unchanged


def _error(tmp_path, text=None, overrides=()):
    paths = []
    if text is not None:
        path = tmp_path / "bad.yml"
        path.write_text(text)
        paths.append(str(path))
    with pytest.raises(ConfigError) as exc:
        load_config(paths, overrides)
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_unknown_key_names_key_file_and_suggests(tmp_path):
    message = _error(tmp_path, "optimizer:\n  lrr: 0.1\n")
    assert "bad.yml" in message and "optimizer.lrr" in message and "'lr'" in message


def test_wrong_type_names_key(tmp_path):
    message = _error(tmp_path, "training:\n  epochs: many\n")
    assert "training.epochs" in message and "many" in message


def test_bad_choice_suggests_nearest():
    message = _error(None, overrides=["model.arch=fcn8"])
    assert "model.arch" in message and "fcn8s" in message


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["data.batch_size=2", "data.transforms.preset=paper"], "data.batch_size"),
        (["model.backbone=resnet18"], "model.geometry"),
        (["data.train.name=folder"], "data.classes"),
        (["model.num_classes=5"], "model.num_classes"),
        (["training.epochs=0"], "training.iters"),
        (["data.mixing.cutmix_p=1.5"], "data.mixing.cutmix_p"),
        (["data.mixing.cutmix_p=0.6", "data.mixing.mixup_p=0.6"], "cutmix_p + mixup_p + mosaic_p"),
        (["schedule.min_lr=1.0"], "schedule.min_lr"),
        (["data.classes=[a,b]", "model.num_classes=21"], "data.classes"),
        (["training.device=gpu"], "training.device"),
    ],
)
def test_impossible_combinations_are_rejected(overrides, key):
    assert key in _error(None, overrides=overrides)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config([str(tmp_path / "nope.yml")])
    assert "bad.yml: not valid YAML at line" in _error(tmp_path, "model:\n  arch: [fcn8s\n")
    assert "not a key=value" in _error(None, overrides=["training.epochs"])


def test_an_empty_override_clears_a_string_key():
    # 'model.init_from=' is how a shell user clears a key: it means '' (OmegaConf alone reads None).
    cfg = load_config([str(REPO / "predefined_configs/timm_effnetv2s_fcn8s.yml")], ["model.init_from="])
    assert cfg.model.init_from == ""
    assert load_config(overrides=["model.init_from=''"]).model.init_from == ""
    cfg = load_config(overrides=["data.classes=", "loss.class_weights=", "data.label_map="])
    assert (
        list(cfg.data.classes) == [] and list(cfg.loss.class_weights) == [] and dict(cfg.data.label_map) == {}
    )


@pytest.mark.parametrize(
    ("item", "what"), [("training.iters=", "of type int"), ("eval.flip=", "of type bool")]
)
def test_an_empty_override_of_another_type_says_what_it_needs(item, what):
    with pytest.raises(ConfigError, match=f"key '{item[:-1]}' needs a value {what} \\(nothing after '='\\)"):
        load_config(overrides=[item])
