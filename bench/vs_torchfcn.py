"""Our FCN-8s VGG16 (paper geometry) against wkentaro/pytorch-fcn's torchfcn.models.FCN8s: the same
weights in both, outputs compared, fp32 forwards timed in interleaved rounds (alternating which goes
first), median per model.

torchfcn is read from its unpacked sdist, not installed (``pip install torchfcn`` would also install
a PyPI package named ``fcn`` over this project's):

    pip download --no-deps --no-binary :all: torchfcn==1.9.7 -d /tmp/t && tar xzf /tmp/t/*.tar.gz -C /tmp/t
    python -m bench.vs_torchfcn --models-dir /tmp/t/torchfcn-1.9.7/torchfcn/models --rounds 5
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
import types

import torch

from fcn.config import load_config
from fcn.models import build_model


def their_fcn8s(models_dir: str) -> type:
    """Return torchfcn's FCN8s class, loaded from its source files."""
    package = types.ModuleType("torchfcn_models")
    package.__path__ = [models_dir]
    sys.modules["torchfcn_models"] = package
    for name in ("fcn32s", "fcn8s"):  # fcn8s imports get_upsampling_weight from fcn32s
        spec = importlib.util.spec_from_file_location(f"torchfcn_models.{name}", f"{models_dir}/{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["torchfcn_models.fcn8s"].FCN8s


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.vs_torchfcn", description=__doc__.splitlines()[0])
    p.add_argument("--models-dir", required=True, help="torchfcn/models of the unpacked torchfcn sdist")
    p.add_argument("--size", type=int, default=500)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(
        overrides=[
            "model.arch=fcn8s",
            "model.backbone=vgg16",
            "model.geometry=paper",
            "model.pretrained=false",
        ]
    )
    torch.manual_seed(0)
    ours = build_model(cfg.model).eval()
    with torch.no_grad():
        for name in ("score_fr", "score_pool4", "score_pool3"):  # zero-initialised: give them weights
            getattr(ours, name).weight.normal_(0, 0.01)
    theirs = their_fcn8s(args.models_dir)(21).eval()
    theirs.load_state_dict({k.replace("backbone.", ""): v for k, v in ours.state_dict().items()})
    x = torch.randn(1, 3, args.size, args.size)
    models = {"ours": ours, "theirs": theirs}
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        diff = (ours(x) - theirs(x)).abs().max().item()  # also the warm-up
        for r in range(args.rounds):
            for name in list(models) if r % 2 == 0 else list(models)[::-1]:
                start = time.perf_counter()
                models[name](x)
                times[name].append(time.perf_counter() - start)
    ours_s, theirs_s = statistics.median(times["ours"]), statistics.median(times["theirs"])
    print(f"max |ours - theirs| = {diff}; seconds per round: {times}")
    print(
        f"median: ours {ours_s:.3f} s, theirs {theirs_s:.3f} s, ours / theirs speed {theirs_s / ours_s:.3f}x"
    )
    return {"max_abs_diff": diff, "times": times}


if __name__ == "__main__":
    main()
