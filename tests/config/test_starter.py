"""The starter recipe for your own data (predefined_configs/starter.yml) and its CPU check
(cpu_check.yml): what they select, the three keys a user adds, and a short run of the check."""

from __future__ import annotations

from pathlib import Path

import pytest

from fcn.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
STARTER = str(REPO / "predefined_configs" / "starter.yml")
CPU_CHECK = str(REPO / "predefined_configs" / "cpu_check.yml")


def user_keys(root: Path) -> list[str]:
    """The three keys the Your data page adds: training and validation data, and the classes."""
    return [
        f"data.train={{name: folder, root: {root}}}",
        f"data.val={{name: folder, root: {root}, split: val}}",
        "data.classes=[background,circle,square,triangle]",
    ]


def test_starter_is_a_pretrained_resnet50_fcn8s_with_adamw_poly_warmup(tmp_path):
    cfg = load_config([STARTER], user_keys(tmp_path))
    m, t = cfg.model, cfg.training
    assert (m.arch, m.backbone, m.geometry, m.pretrained.lower()) == ("fcn8s", "resnet50", "same", "true")
    assert (cfg.optimizer.name, cfg.schedule.name) == ("adamw", "poly")
    assert cfg.schedule.warmup_iters > 0 and t.amp == "auto" and t.iters > 0 and 0 < t.eval_every < t.iters
    tr = cfg.data.transforms
    assert tr.preset == "standard" and tr.hflip and tr.scale_min < 1 < tr.scale_max
    assert m.num_classes == 4  # model.num_classes follows data.classes


def test_cpu_check_over_the_starter_needs_no_download_and_keeps_its_optimizer(tmp_path):
    cfg = load_config([STARTER, CPU_CHECK], user_keys(tmp_path))
    assert (cfg.model.backbone, cfg.model.pretrained.lower()) == ("resnet18", "false")
    assert (cfg.model.arch, cfg.optimizer.name, cfg.schedule.name) == ("fcn8s", "adamw", "poly")
    assert cfg.training.iters <= 1000 and cfg.data.transforms.crop_size <= 128


def test_num_classes_follows_classes_and_a_contradiction_is_still_an_error(tmp_path):
    assert load_config().model.num_classes == 21  # PASCAL VOC's when no classes are given
    keys = user_keys(tmp_path)
    assert load_config([STARTER], keys[:2] + ["data.classes=[a,b,c,d,e,f,g]"]).model.num_classes == 7
    with pytest.raises(ConfigError, match="data.classes has 4 names but model.num_classes=5"):
        load_config([STARTER], [*keys, "model.num_classes=5"])
    with pytest.raises(ConfigError, match="needs data.classes"):
        load_config([STARTER], keys[:2])


@pytest.mark.slow
def test_cpu_check_trains_on_the_toy_data(tmp_path):
    from fcn.data.toy import generate
    from fcn.training.loop import fit

    root = tmp_path / "toy"
    generate(root, seed=0, n_train=16, n_val=4, size=32)
    run = tmp_path / "run"
    extra = [
        f"training.run_dir={run}",
        "training.device=cpu",
        "training.iters=4",
        "training.eval_every=2",
        "data.num_workers=0",
        "data.batch_size=4",
        "data.transforms.crop_size=32",
    ]
    summary = fit(load_config([STARTER, CPU_CHECK], [*user_keys(root), *extra]))
    assert summary["iteration"] == 4
    assert (run / "checkpoints" / "best.pt").is_file() and (run / "metrics.jsonl").is_file()
