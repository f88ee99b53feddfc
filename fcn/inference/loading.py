"""A checkpoint back into a model: its config read (with the caller's files and overrides),
eval.fast_path=auto resolved, the net rebuilt without downloading anything, the chosen weights
(EMA or raw) checked against it and loaded; then, as eval.engine says, the torch model itself or
its ONNX export in ONNX Runtime or OpenVINO (fcn.inference.engines).

Everything that predicts from a checkpoint loads it here: fcn.api.Segmenter (predict.py, video,
demo.py), fcn.inference.evaluation (evaluate.py), the ONNX export command and the benchmarks; each
takes a Hugging Face Hub repository '<user>/<repo>' where it takes a checkpoint (resolve_checkpoint)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from omegaconf import DictConfig
from torch import nn

from fcn.config import config_from_dict, with_overrides
from fcn.core.checkpoint import CheckpointError, describe_mismatch, load_checkpoint, model_weights
from fcn.inference.engines import Engine, check_engine, find_cached_onnx, make_engine, to_engine
from fcn.inference.fastpath import resolve_fast_path
from fcn.inference.hub import REPO_ID, WEIGHTS_NAME, download_repo, is_folder, read_folder

# A name with one of these endings is a file the user meant, even when it looks like '<user>/<repo>'
# (runs/best.pt): its absence is "no such file", never a Hub download.
_FILE_ENDINGS = (".pt", ".pth", ".ckpt", ".safetensors", ".onnx", ".caffemodel", ".yml", ".yaml", ".json")


def resolve_checkpoint(checkpoint: str | os.PathLike, revision: str | None = None) -> str:
    """Return the local path of checkpoint: itself when it exists (a .pt file, a folder
    save_pretrained wrote); for a Hugging Face Hub repository '<user>/<repo>' that is no local path,
    its downloaded folder (fcn.inference.hub.download_repo: huggingface_hub's cache, HF_HUB_OFFLINE
    honoured), as Segmenter.from_pretrained resolves one. OSError in one line when it cannot be had."""
    text = str(checkpoint)
    if os.path.exists(text) or not REPO_ID.match(text) or text.lower().endswith(_FILE_ENDINGS):
        return text
    return str(download_repo(text, revision))


def _check_weights(model: nn.Module, state: dict, path: str, cfg: DictConfig) -> None:
    """Raise CheckpointError in one line when state's names or shapes do not fit model."""
    problems = describe_mismatch(model.state_dict(), state)
    if problems:
        m = cfg.model
        raise CheckpointError(
            f"{path}: weights do not fit model.arch={m.arch} backbone={m.backbone} geometry={m.geometry} "
            f"num_classes={m.num_classes}: {problems}; do not override model.* keys of a checkpoint"
        )


def load_model(
    checkpoint_path: str | os.PathLike,
    device: torch.device | str = "cpu",
    use_ema: bool | None = None,
    paths: Sequence[str] = (),
    overrides: Sequence[str] = (),
) -> tuple[nn.Module, DictConfig]:
    """Return (model in eval mode on device, config) rebuilt from a checkpoint of this project, from
    weights imported in the reference naming, or from a folder save_pretrained wrote (no pickle);
    use_ema=None follows the config's eval.use_ema. The checkpoint's config is data
    (fcn.config.config_from_dict): nothing it names is imported."""
    model, cfg, _ = load_model_weights(checkpoint_path, device, use_ema, paths, overrides)
    return model, cfg


def load_model_weights(
    checkpoint_path: str | os.PathLike,
    device: torch.device | str,
    use_ema: bool | None,
    paths: Sequence[str],
    overrides: Sequence[str],
) -> tuple[nn.Module, DictConfig, str]:
    """Return (model, config, weights) as load_model does, weights naming which were loaded:
    'ema' or 'model'."""
    path = resolve_checkpoint(checkpoint_path)
    ckpt, cfg = _read(path, device, paths, overrides, trust_remote_code=False, datasets=False)
    return _build(ckpt, cfg, path, device, use_ema)


def _read(
    path: str,
    device: torch.device | str,
    paths: Sequence[str],
    overrides: Sequence[str],
    *,
    trust_remote_code: bool,
    datasets: bool,
) -> tuple[dict, DictConfig]:
    """Return (checkpoint, config): its config (data: fcn.config.config_from_dict, with
    trust_remote_code and datasets) with the caller's files and overrides, fast_path=auto resolved
    for device and the input normalisation resolved."""
    # A folder of fcn.inference.hub's shape (save_pretrained, a Hub snapshot) reads as a weights checkpoint.
    ckpt = read_folder(path) if is_folder(path) else load_checkpoint(path, map_location="cpu")
    check_structure(ckpt, path)
    cfg = config_from_dict(
        ckpt["config"],
        source=path,
        paths=paths,
        overrides=overrides,
        trust_remote_code=trust_remote_code,
        datasets=datasets,
    )
    cfg = resolve_fast_path(cfg, torch.device(device))
    from fcn.models import resolve_normalization

    return ckpt, resolve_normalization(cfg)  # a no-op for train.py's checkpoints, which hold it resolved


def _tensors(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
    )


def check_structure(ckpt: object, path: str) -> None:
    """Raise CheckpointError in one line naming the file and the entry when a checkpoint (or a
    folder read as one) is not a dict with 'model' (names -> tensors), 'config' (a mapping) and
    'ema' (None or names -> tensors)."""
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path}: not a pytorch-fcn checkpoint (it needs 'model' and 'config' entries)")
    if not _tensors(ckpt["model"]):
        raise CheckpointError(
            f"{path}: its 'model' entry is a {type(ckpt['model']).__name__}, not a state dict of named "
            "tensors; it was not written by pytorch-fcn (or is damaged)"
        )
    if ckpt.get("ema") is not None and not _tensors(ckpt["ema"]):
        raise CheckpointError(f"{path}: its 'ema' entry is a {type(ckpt['ema']).__name__}, not a state dict")
    if not isinstance(ckpt["config"], dict):
        raise CheckpointError(
            f"{path}: its 'config' entry is a {type(ckpt['config']).__name__}, not a mapping"
        )


def _build(
    ckpt: dict, cfg: DictConfig, path: str, device: torch.device | str, use_ema: bool | None
) -> tuple[nn.Module, DictConfig, str]:
    """Return (model in eval mode on device, config, 'ema' | 'model') of a checkpoint read by _read."""
    if use_ema is None:
        use_ema = bool(cfg.eval.use_ema)
    from fcn.models import build_model

    # Never download backbone weights nor read another checkpoint: the weights come from this one.
    build_cfg = with_overrides(cfg, ["model.pretrained=false", "model.init_from=''"], source=path)
    model = build_model(build_cfg.model, initialize=False)  # every weight is loaded next
    state, which = model_weights(ckpt, use_ema)
    _check_weights(model, state, path, cfg)
    model.load_state_dict(state)
    model.to(device).eval()
    if cfg.eval.channels_last:
        model.to(memory_format=torch.channels_last)
    model.cast_once = True  # under autocast, its weights are cast once (fcn.core.runtime.amp_forward)
    return model, cfg, which


def load(
    checkpoint_path: str | os.PathLike,
    device: torch.device | str = "cpu",
    use_ema: bool | None = None,
    paths: Sequence[str] = (),
    overrides: Sequence[str] = (),
    log: bool = True,
) -> tuple[nn.Module | Engine, DictConfig]:
    """Return (model or engine, config) of a checkpoint as cfg.eval.engine says (after the config's
    files and overrides, and eval.fast_path=auto resolved): the torch model on device, or the
    checkpoint's ONNX export (cached beside it) in ONNX Runtime or OpenVINO on the CPU. An engine
    whose export is cached is made from that file alone: the torch model is not built."""
    model, cfg, _ = load_with_weights(checkpoint_path, device, use_ema, paths, overrides, log)
    return model, cfg


def load_with_weights(
    checkpoint_path: str | os.PathLike,
    device: torch.device | str = "cpu",
    use_ema: bool | None = None,
    paths: Sequence[str] = (),
    overrides: Sequence[str] = (),
    log: bool = True,
    *,
    trust_remote_code: bool = False,
    datasets: bool = False,
) -> tuple[nn.Module | Engine, DictConfig, str]:
    """Return (model or engine, config, weights) as load does, weights naming which were loaded:
    'ema' or 'model'. datasets=True: the caller builds the config's datasets (evaluate.py), so a
    dataset class the checkpoint's config names by import path is refused unless the user's own
    config replaces it or trust_remote_code (fcn.config.config_from_dict)."""
    path = resolve_checkpoint(checkpoint_path)
    ckpt, cfg = _read(path, device, paths, overrides, trust_remote_code=trust_remote_code, datasets=datasets)
    # A folder's ONNX export is cached beside its model.safetensors.
    source = str(Path(path) / WEIGHTS_NAME) if is_folder(path) else path
    engine = str(cfg.eval.engine)
    if engine != "torch":
        ema = bool(cfg.eval.use_ema) if use_ema is None else use_ema
        which = "ema" if ema and ckpt.get("ema") else "model"
        cached = find_cached_onnx(source, which, cfg)
        if cached is not None:
            check_engine(engine)
            return make_engine(engine, cached), cfg, which
    model, cfg, which = _build(ckpt, cfg, path, device, use_ema)
    return to_engine(model, cfg, source, which, log=log), cfg, which
