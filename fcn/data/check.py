"""Check a dataset before training on it: python -m fcn.data.check --config FILE [key=value ...]

Lists data.train and data.val as the config names them (every missing file and every id listed
twice, not only the first; a 'pairs' folder's images without a mask and masks without an image), reads every image and mask once in data.num_workers processes (a
Dataset class by import path: item by item here), translates the masks by data.label_map /
reduce_zero_label as training does, and prints each bad file on a line of its own with the reason
(raw ids the label map does not list among them), then for the good pairs the pixels per class,
the range of image sizes and inverse-frequency weights for loss.class_weights.

Exit code: 0 when nothing is bad, 1 when a bad file was found, 2 for a bad command line or config
or a split that cannot be listed at all (a missing dataset directory).

The scanner is fcn/data/scan.py and the class weights fcn/data/weights.py; this module is the
command (its report and exit code) and keeps their names importable from here.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures.process import BrokenProcessPool
from typing import Optional, Sequence

from fcn.config import VOID, ConfigError, load_config
from fcn.data import class_names
from fcn.data.listing import hold_out_line
from fcn.data.scan import (
    SPLITS,
    PairResult,
    SplitReport,
    check_dataset,
    decode_array,
    decode_image,
    describe,
    external_dataset,
    inspect_item,
    inspect_labels,
    inspect_pair,
    list_split,
    mask_reader,
    read_pairs,
    summarise,
)
from fcn.data.weights import (
    class_weights,
    counts_checksum,
    frequency_weights,
    median_frequency_weights,
    split_report_cached,
)

__all__ = [
    "SPLITS",
    "PairResult",
    "SplitReport",
    "check_dataset",
    "class_weights",
    "counts_checksum",
    "decode_array",
    "decode_image",
    "describe",
    "external_dataset",
    "format_report",
    "format_split",
    "frequency_weights",
    "inspect_item",
    "inspect_labels",
    "inspect_pair",
    "list_split",
    "main",
    "mask_reader",
    "median_frequency_weights",
    "read_pairs",
    "split_report_cached",
    "summarise",
    "weights_line",
]


def weights_line(weights: Sequence[float]) -> str:
    """Return loss.class_weights as one line of YAML to paste into a config (4 significant digits).

    Nested, not 'loss.class_weights: [...]': a config file holds sections, and rejects a dotted key.
    """
    values = ", ".join(f"{w:.4g}" for w in weights)
    return f"loss: {{class_weights: [{values}]}}"


def format_split(report: SplitReport, names: Sequence[str], ignore_index: int = VOID) -> list[str]:
    """Return the lines that describe a split's good pairs: pixels per class, void and image sizes."""
    lines = [f"{report.key} ({report.description}): {report.good} good pairs of {report.pairs}"]
    lines += [f"  {line}" for line in report.left_out]
    if report.good == 0:
        return lines
    total = int(report.counts.sum()) if not report.pixels else report.pixels
    width = max(len(name) for name in [*names, "void", "class"])
    lines.append(f"  {'label':>5}  {'class':<{width}}  {'pixels':>13}  {'share':>6}")
    for label, name in [*enumerate(names), (ignore_index, "ignored")]:
        pixels = int(report.counts[label])
        lines.append(f"  {label:>5}  {name:<{width}}  {pixels:>13,}  {100 * pixels / total:>5.1f}%")
    (w0, h0), (w1, h1) = report.min_size, report.max_size
    lines.append(f"  image size: W {w0}..{w1}, H {h0}..{h1}")
    kinds = ", ".join(f"{kind} x {n}" for kind, n in sorted(report.kinds.items()) if kind)
    if kinds:
        lines.append(f"  images as stored: {kinds}")
    return lines


def format_report(
    reports: Sequence[SplitReport], names: Sequence[str], ignore_index: int = VOID, task: str = "multiclass"
) -> str:
    """Return the whole report: bad files, then each split's counts, the weights line and a summary line
    (a binary task: names are its two labels' (background, foreground), the weight is bce's pos_weight)."""
    lines = [str(problem) for report in reports for problem in report.problems]
    if lines:
        lines.append("")
    for report in reports:
        lines += format_split(report, names, ignore_index) + [""]
    train = reports[0]
    if task == "binary" and train.counts[:2].sum() > 0:
        weight = frequency_weights(train, "inverse_frequency", 1, ignore_index, task)
        lines.append(f"bce pos_weight from {train.key}'s pixels (background / foreground), for your config:")
        lines.append(weights_line(weight))
    elif task == "multilabel" and train.negatives is not None:
        weight = frequency_weights(train, "inverse_frequency", len(names) - 1, ignore_index, task)
        lines.append(
            f"bce pos_weight from {train.key}'s pixels (each class's pixels without it / with it), for your config:"
        )
        lines.append(weights_line(weight))
    elif task == "multilabel":
        lines.append(f"no pos_weight: {train.key} has no good pair")
    elif train.counts[: len(names)].sum() > 0:
        lines.append(
            f"class weights from {train.key}'s pixels (inverse frequency, pixel-weighted mean 1), for your config:"
        )
        lines.append(weights_line(frequency_weights(train, "inverse_frequency", len(names), ignore_index)))
    else:
        lines.append(f"no class weights: {train.key} has no good pair with labelled pixels")
    lines.append(
        "; ".join(f"{r.key} {r.description}: {r.pairs} pairs, {len(r.problems)} bad" for r in reports)
    )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the arguments, check the dataset, print the report and return the exit code (0, 1 or 2)."""
    parser = argparse.ArgumentParser(
        prog="python -m fcn.data.check",
        description="Check data.train and data.val before training: every bad file, class pixels, weights.",
        epilog="Example: python -m fcn.data.check --config my_data.yml data.num_workers=2",
    )
    parser.add_argument(
        "--config",
        action="append",
        default=None,
        help="YAML config (repeatable, merged in order; default: config.yml), as train.py reads it",
    )
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.num_workers=2")

    def one_line_error(message: str) -> None:
        raise ConfigError(f"command line: {message} (see --help)")

    parser.error = one_line_error  # argparse's usage block would make the error two lines
    try:
        args = parser.parse_args(argv)
        cfg = load_config(args.config if args.config is not None else ["config.yml"], args.overrides)
        reports = check_dataset(cfg)
    except ValueError as exc:  # a ConfigError, or a split that cannot be listed
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenProcessPool as exc:  # a worker killed (out of memory?): a failure found during the work
        print(f"error: a worker process died ({exc}); try fewer data.num_workers", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    names = class_names(cfg.data)
    if cfg.data.task == "binary":  # its masks' two labels
        names = ["background", *names]
    elif cfg.data.task == "multilabel":  # each class's pixels (they may overlap), then those of none
        names = [*names, "(no class)"]
    if float(cfg.data.val_fraction):  # one export, two splits: said first
        train, val = reports
        print(hold_out_line(float(cfg.data.val_fraction), val.pairs, train.pairs + val.pairs))
    print(format_report(reports, names, cfg.data.ignore_index, cfg.data.task))
    return 1 if any(report.problems for report in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
