"""`python -m bench.model`'s report: the results table and the issue-8 targets with their verdicts."""

from typing import Any, Dict, List

from bench.common import (
    markdown_table,
)
from bench.model.setup import (
    GB,
    TARGET_AGREEMENT,
    TARGET_FP32_FRACTION,
    TARGET_INFER_SPEEDUP,
    TARGET_TRAIN_SIZE,
    TARGET_TRAIN_SPEEDUP,
    VARIANTS,
)

# ----------------------------------------------------------------------------- report


def fraction_of_matmul(row: dict, rates: Dict[str, float]) -> float:
    """Return the row's achieved FLOP/s over the matmul rate of its dtype (fp32: its group's)."""
    seconds = row["seconds"] if row["measured"] else row["estimate_s"]
    amp = VARIANTS[row["variant"]].amp
    rate = row["matmul_fp32_flops_per_s"] if amp == "none" else rates[amp]
    return row["flops"] / seconds / rate


def results_table(rows: List[dict], rates: Dict[str, float]) -> str:
    """Return the markdown table of every (arch, geometry, size, mode, variant)."""
    headers = [
        "arch",
        "geometry",
        "size",
        "mode",
        "variant",
        "GFLOP",
        "s/img",
        "GFLOP/s",
        "mm GFLOP/s",
        "% mm",
    ]
    headers += ["vs fp32", "agree %", "logit err", "compile s"]
    body = []
    for r in rows:
        seconds = r["seconds"] if r["measured"] else r["estimate_s"]
        mark = "" if r["measured"] else "~"
        agree = f"{100 * r['agreement']:.2f}" if "agreement" in r else "-"
        err = f"{r['logit_rel_err']:.1e}" if "logit_rel_err" in r else "-"
        comp = f"{r['compile_s']:.0f}" if r.get("compile_s") is not None else "-"
        if "error" in r:
            body.append(
                [r["arch"], r["geometry"], r["size"], r["mode"], r["variant"], f"{r['flops'] / GB:.0f}"]
            )
            body[-1] += ["failed: " + r["error"][:60]] + ["-"] * 7
            continue
        body.append(
            [
                r["arch"],
                r["geometry"],
                r["size"],
                r["mode"],
                r["variant"],
                f"{r['flops'] / GB:.0f}",
                f"{mark}{seconds:.2f}",
                f"{mark}{r['flops'] / seconds / GB:.1f}",
                f"{(r['matmul_fp32_flops_per_s'] if VARIANTS[r['variant']].amp == 'none' else rates['bf16']) / GB:.1f}",
                f"{mark}{100 * fraction_of_matmul(r, rates):.0f}",
                f"{mark}{r['speedup']:.2f}x",
                agree,
                err,
                comp,
            ]
        )
    return markdown_table(headers, body)


def _verdict(value: float, required: float, unit: str = "x") -> str:
    """Return 'PASS'/'MISS' with how far the value is from the requirement."""
    if value >= required:
        return f"PASS ({value / required:.2f} times the requirement)"
    return f"MISS: {value:.2f}{unit} is {100 * value / required:.0f}% of the {required:.2f}{unit} required"


def evaluate_targets(rows: List[dict], rates: Dict[str, float], growth: dict | None, size: int) -> List[dict]:
    """Return issue 8's targets with the measured value, requirement and verdict."""

    def pick(geometry: str, sz: int, mode: str) -> List[dict]:
        return [
            r
            for r in rows
            if (r["arch"], r["geometry"], r["size"], r["mode"]) == ("fcn8s", geometry, sz, mode)
        ]

    targets = []
    infer = pick("paper", size, "infer")
    fp32 = next((r for r in infer if r["variant"] == "fp32"), None)
    name = f"FCN-8s paper {size} fp32 inference / fp32 matmul rate >= {TARGET_FP32_FRACTION:.0%}"
    if fp32:
        value = fraction_of_matmul(fp32, rates)
        targets.append(
            {
                "target": name,
                "value": value,
                "required": TARGET_FP32_FRACTION,
                "verdict": _verdict(value, TARGET_FP32_FRACTION, ""),
            }
        )
    good = [r for r in infer if r["measured"] and r.get("agreement", 0.0) >= TARGET_AGREEMENT]
    if good:
        best = max(good, key=lambda r: r["speedup"])
        fastest = max((r for r in infer if r["measured"]), key=lambda r: r["speedup"])
        note = f"{best['variant']} ({100 * best['agreement']:.3f}% agreement)"
        if fastest is not best:
            note += f"; fastest of all: {fastest['variant']} {fastest['speedup']:.2f}x at {100 * fastest['agreement']:.2f}%"
        targets.append(
            {
                "target": f"fastest FCN-8s paper {size} inference with >= {TARGET_AGREEMENT:.1%} pixel agreement "
                f"vs fp32 >= {TARGET_INFER_SPEEDUP}x",
                "value": best["speedup"],
                "required": TARGET_INFER_SPEEDUP,
                "verdict": _verdict(best["speedup"], TARGET_INFER_SPEEDUP),
                "note": note,
            }
        )
    train = [r for r in pick("paper", TARGET_TRAIN_SIZE, "train") if VARIANTS[r["variant"]].amp == "bf16"]
    name = (
        f"bf16 autocast FCN-8s paper training step at {TARGET_TRAIN_SIZE} vs fp32 >= {TARGET_TRAIN_SPEEDUP}x"
    )
    if train:
        measured = [r for r in train if r["measured"]]
        best = max(measured or train, key=lambda r: r["speedup"])
        est = "" if best["measured"] else " (estimate: not run, see --max-seconds)"
        targets.append(
            {
                "target": name,
                "value": best["speedup"],
                "required": TARGET_TRAIN_SPEEDUP,
                "verdict": _verdict(best["speedup"], TARGET_TRAIN_SPEEDUP) + est,
                "note": best["variant"],
            }
        )
    if growth:
        verdict = "PASS" if growth["ok"] else "MISS"
        value = f"{growth['growth_mb']:+.1f} MB, tensors {growth['step10']['live_tensors']} -> {growth['last']['live_tensors']}"
        targets.append(
            {
                "target": f"no retained memory/tensors over {growth['steps']} training steps",
                "value": value,
                "required": f"<= {growth['tolerance_mb']:.0f} MB, no new tensors",
                "verdict": verdict,
            }
        )
    return targets


def _format_value(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
