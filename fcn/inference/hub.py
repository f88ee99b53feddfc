"""Folders in the Hugging Face Hub's shape: a model's weights, config and model card, without pickle.

A folder holds three files:

- ``model.safetensors``: the state dict (safetensors: tensors and their names, nothing executable);
- ``config.json``: ``{"format": "pytorch-fcn", "version": 1, "config": <the resolved config>, "run":
  {iteration, epoch, best_miou, metrics}}``; the config holds the classes, palette and normalisation;
- ``README.md``: the model card (Hub metadata, classes, input, the run's metrics, the code to use it).

``write_folder`` writes one (each file atomically); ``read_folder`` reads one back into the dict a
weights checkpoint is (``fcn.inference.loading`` takes a folder wherever it takes a checkpoint);
``download_repo`` fetches ``<user>/<repo>`` with ``huggingface_hub.snapshot_download`` (its cache,
``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` honoured).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from fcn.core.checkpoint import CheckpointError, load_checkpoint
from fcn.core.files import atomic_write

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
FORMAT, VERSION = "pytorch-fcn", 1
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
"""A Hub repository id, <user or organisation>/<name>."""


def is_folder(path: str | os.PathLike) -> bool:
    """Whether path is a directory (read as a folder of this module's shape)."""
    return Path(path).is_dir()


def read_folder(path: str | os.PathLike) -> dict:
    """Return {'version', 'model', 'ema': None, 'config', **run} of a folder, read without pickle;
    CheckpointError in one line naming the folder and what is wrong."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(path)
    missing = [name for name in (WEIGHTS_NAME, CONFIG_NAME) if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(
            f"{folder}: not a pytorch-fcn folder ({' and '.join(missing)} missing; save_pretrained writes them)"
        )
    try:
        meta = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder / CONFIG_NAME}: unreadable ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f'{folder / CONFIG_NAME}: not a pytorch-fcn config (no "format": "{FORMAT}")')
    version = meta.get("version", VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(
            f'{folder / CONFIG_NAME}: "version" is {json.dumps(version)}, not a number; write the folder '
            "again with save_pretrained"
        )
    if version > VERSION:
        raise CheckpointError(
            f"{folder}: written by a newer pytorch-fcn (folder version {meta['version']} > {VERSION}); upgrade"
        )
    try:
        state = load_file(folder / WEIGHTS_NAME)
    except (SafetensorError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{folder / WEIGHTS_NAME}: unreadable ({first})") from None
    run_meta = meta.get("run") or {}
    if not isinstance(run_meta, dict):
        raise CheckpointError(f'{folder / CONFIG_NAME}: "run" is a {type(run_meta).__name__}, not a mapping')
    run = {k: v for k, v in run_meta.items() if k in ("iteration", "epoch", "best_miou")}
    return {"version": VERSION, "model": state, "ema": None, "config": meta["config"], **run}


def run_record(checkpoint: str | os.PathLike) -> dict:
    """Return what is known of the run that made a checkpoint: iteration, epoch and best_miou from
    it, and 'metrics': the evaluation of that iteration (else the best) from the run directory's
    metrics.jsonl when it sits beside it (runs/x/checkpoints/best.pt -> runs/x/metrics.jsonl); for
    a registry entry's converted checkpoint, 'published' (its address) and 'reported' (its number)."""
    path = Path(checkpoint)
    if path.is_dir():
        try:
            return json.loads((path / CONFIG_NAME).read_text()).get("run") or {}
        except (OSError, ValueError, AttributeError):
            return {}
    state = load_checkpoint(path)
    run: dict[str, Any] = {k: state[k] for k in ("iteration", "epoch", "best_miou") if k in state}
    from fcn.models.pretrained import entry_of

    entry = entry_of(path)
    if entry is not None:  # published weights, converted by the registry: what their authors report
        run.update(published=entry.resource.url, reported=entry.reported)
    log = path.parent.parent / "metrics.jsonl"
    if log.is_file():
        records = []
        for line in log.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        records = [r for r in records if isinstance(r, dict) and "mean_iou" in r]
        same = [r for r in records if r.get("iteration") == run.get("iteration")]
        best = same or sorted(records, key=lambda r: -_number(r.get("mean_iou")))
        if best:
            keep = (
                "iteration",
                "epoch",
                "pixel_acc",
                "mean_acc",
                "mean_iou",
                "fwavacc",
                "iou",
                "geometric_pixel_acc",
            )
            run["metrics"] = {k: best[0][k] for k in keep if k in best[0]}
    return run


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return -math.inf
    return -math.inf if math.isnan(number) else number


def _safetensors_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return the state dict as safetensors stores it: contiguous CPU tensors, none sharing memory."""
    out, seen = {}, set()
    for name, tensor in state.items():
        t = tensor.detach().cpu().contiguous()
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        out[name] = t.clone() if key in seen else t
        seen.add(key)
    return out


def write_folder(
    model: torch.nn.Module, config: dict, directory: str | os.PathLike, run: Mapping[str, Any] | None = None
) -> Path:
    """Write model's weights, the config (a plain dict: fcn.config.to_dict) and the model card into
    directory (created; the three files replaced, each atomically, others left alone); return it."""
    from safetensors.torch import save_file

    folder = Path(directory)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder}: a file, not a directory; give a directory to write the folder into")
    run = dict(run or {})
    state = _safetensors_state(model.state_dict())
    metadata = {"format": "pt", "library": FORMAT}  # the Hub reads 'format' to show the tensors
    atomic_write(folder / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp), metadata=metadata))
    meta = {"format": FORMAT, "version": VERSION, "config": config, "run": run}
    text = json.dumps(meta, indent=2, allow_nan=True) + "\n"
    atomic_write(folder / CONFIG_NAME, lambda tmp: tmp.write_text(text))
    card = model_card(config, run, sum(t.numel() for t in state.values()))
    atomic_write(folder / CARD_NAME, lambda tmp: tmp.write_text(card))
    return folder


def model_card(config: dict, run: Mapping[str, Any], parameters: int) -> str:
    """Return the README.md of a folder: Hub metadata, what the model is, its classes and colours,
    the input it expects, the run's metrics and the code to use it."""
    from omegaconf import OmegaConf

    from fcn.config import config_from_dict
    from fcn.core.normalize import CAFFE_MEAN_BGR, channel_stats, input_normalization
    from fcn.data import class_names, palette

    cfg = config_from_dict(config, source=CONFIG_NAME, datasets=False)  # a card names the data, builds none
    m, tr = cfg.model, cfg.data.transforms
    names, colours = class_names(cfg.data), palette(cfg.data)
    norm = input_normalization(tr)
    if norm == "caffe":
        norm_text = f"BGR channel order, pixels 0-255 minus the mean {tuple(round(v, 3) for v in CAFFE_MEAN_BGR)} (Caffe's)"
    else:
        stats = channel_stats(norm, int(m.in_channels))
        norm_text = f"{int(m.in_channels)} channels scaled to 0-1, then mean {stats.mean}, std {stats.std}"
    lines = [
        "---",
        "library_name: pytorch-fcn",
        "pipeline_tag: image-segmentation",
        "tags:",
        "- image-segmentation",
        "- semantic-segmentation",
        "- fcn",
        "---",
        "",
        f"# {m.arch} ({m.backbone}), {len(names)} classes",
        "",
        f"A fully convolutional network for semantic segmentation made with pytorch-fcn: `model.arch={m.arch}`, "
        f"`model.backbone={m.backbone}`, {parameters:,} parameters. The files: `{WEIGHTS_NAME}` (the weights), "
        f"`{CONFIG_NAME}` (the full pytorch-fcn config, with the classes, palette and input normalisation).",
        "",
        "## Use",
        "",
        "```python",
        "from fcn import Segmenter",
        "",
        'seg = Segmenter.from_pretrained("<user>/<repo>")   # or the path of this folder',
        'mask = seg("photo.jpg")              # H x W uint8 class indices',
        'picture = seg.overlay("photo.jpg")   # the photo tinted with the class colours',
        "```",
        "",
        "```bash",
        "python predict.py --checkpoint <this folder> --input photos/ --output masks/",
        "```",
        "",
        "## Input",
        "",
        f"Any size; {norm_text}. `Segmenter` and `predict.py` do this from an image file.",
        "",
        "## Metrics",
        "",
    ]
    metrics = run.get("metrics") or {}
    if metrics:
        iteration = metrics.get("iteration", run.get("iteration", "?"))
        lines.append(
            f"The run that made these weights, evaluated at iteration {iteration} on `{cfg.data.val.name}` "
            f"split `{cfg.data.val.split}`:"
        )
        lines.append("")
        lines.append("| pixel acc | mean acc | mean IU | f.w. IU |")
        lines.append("|---|---|---|---|")
        cells = [metrics.get(k) for k in ("pixel_acc", "mean_acc", "mean_iou", "fwavacc")]
        lines.append("| " + " | ".join("-" if v is None else f"{100 * float(v):.2f}" for v in cells) + " |")
    elif run.get("best_miou") is not None and not math.isnan(_number(run["best_miou"])):
        lines.append(
            f"The run's best mean IU on its validation set: {100 * float(run['best_miou']):.2f} "
            f"(iteration {run.get('iteration', '?')})."
        )
    elif run.get("reported"):
        lines.append(
            f"Published weights (<{run.get('published', '')}>), converted by pytorch-fcn. Reported by "
            f"their authors, not measured here: {run['reported']}."
        )
    else:
        lines.append(
            "None recorded with these weights (they were not saved by a training run of pytorch-fcn)."
        )
    per_class = metrics.get("iou") if metrics else None
    lines += [
        "",
        "## Classes",
        "",
        "| label | class | colour (RGB) |" + (" IU |" if per_class else ""),
        "|---|---|---|" + ("---|" if per_class else ""),
    ]
    for i, name in enumerate(names):
        colour = "(" + ", ".join(str(int(c)) for c in colours[i]) + ")"
        row = f"| {i} | {name} | {colour} |"
        if per_class and i < len(per_class):
            value = _number(per_class[i])
            row += f" {'-' if value == -math.inf else f'{100 * value:.2f}'} |"
        lines.append(row)
    lines += [
        "",
        "## Upload",
        "",
        "```bash",
        'hf upload <user>/<repo> <this folder> . --exclude "*.onnx"',
        "```",
        "",
        "The model's keys (`config.json` holds the whole config):",
        "",
        "```yaml",
        OmegaConf.to_yaml(OmegaConf.create({"model": config.get("model", {})})).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def download_repo(repo_id: str, revision: str | None = None) -> Path:
    """Return the local folder of Hub repository repo_id at revision (a branch, tag or commit hash;
    None: the default branch) -- huggingface_hub.snapshot_download of the three files, downloaded
    once into its cache ($HF_HOME / $HF_HUB_CACHE) and checked there as huggingface_hub checks every
    file (its sha256 against the Hub's), one download at a time (its file lock); with
    HF_HUB_OFFLINE=1 the cached copy only. OSError in one line when it cannot be had."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise OSError(
            f"{repo_id}: huggingface_hub is not installed (pip install huggingface_hub; it comes with timm)"
        ) from None
    try:
        return Path(
            snapshot_download(
                repo_id, revision=revision, allow_patterns=[WEIGHTS_NAME, CONFIG_NAME, CARD_NAME]
            )
        )
    except Exception as exc:  # huggingface_hub's errors are of many kinds (HTTP, offline, not found, auth)
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        at = f"@{revision}" if revision else ""
        raise OSError(
            f"{repo_id}{at}: cannot get it from the Hugging Face Hub ({type(exc).__name__}: {reason}); check the "
            "name and the network (offline, HF_HUB_OFFLINE=1 uses a copy already in the Hub's cache), or give "
            "the path of a folder that save_pretrained wrote"
        ) from None
