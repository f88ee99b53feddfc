"""The config schema: defaults load, bad keys and values are one-line errors."""

import pytest
from omegaconf.errors import ReadonlyConfigError

from fcn.config import ConfigError, load_config


def test_defaults_load_and_are_read_only():
    cfg = load_config()
    assert cfg.model.arch == "fcn32s"
    with pytest.raises(ReadonlyConfigError):
        cfg.model.arch = "fcn32s"


def test_unknown_key_names_key_and_suggests(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text("optimizer:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as exc:
        load_config([str(path)])
    message = str(exc.value)
    assert str(path) in message and "optimizer.lrr" in message and "lr" in message
    assert "\n" not in message


def test_config_yml_is_the_documented_schema():
    from pathlib import Path

    from fcn.config import documented_yaml

    shipped = (Path(__file__).parent.parent / "config.yml").read_text()
    assert shipped == documented_yaml(), "config.yml is stale: run python -m fcn.config > config.yml"
