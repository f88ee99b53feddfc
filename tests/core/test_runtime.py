"""fcn.core.runtime and the choices made from the hardware: amp/channels-last 'auto', eval.fast_path
'auto', cuDNN's benchmark mode. The CPU's flags are set by the test, so it holds on any machine."""

from __future__ import annotations

import pytest
import torch

import fcn.core.runtime
import fcn.inference.fastpath
from fcn.config import load_config
from fcn.core.runtime import configure_determinism, resolve_amp, resolve_channels_last

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def flags(monkeypatch):
    """Set the CPU flags fcn.core.runtime sees: flags({'avx512_bf16'})."""

    def set_flags(values: set[str]) -> None:
        monkeypatch.setattr(fcn.core.runtime, "cpu_flags", lambda: frozenset(values))
        monkeypatch.setattr(fcn.inference.fastpath, "cpu_flags", lambda: frozenset(values))

    return set_flags


def test_cpu_flags_are_read_from_the_machine():
    flags = fcn.core.runtime.cpu_flags()
    assert isinstance(flags, frozenset)
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        assert "avx2" in flags or not flags  # /proc/cpuinfo lists it; elsewhere the probes say less


@pytest.mark.parametrize(
    "cpu, expected",
    [({"avx2"}, "none"), ({"avx2", "avx512f", "avx512_bf16"}, "bf16"), ({"amx_bf16"}, "bf16")],
)
def test_amp_auto_is_bf16_only_where_the_cpu_computes_it_natively(flags, cpu, expected):
    flags(cpu)
    assert resolve_amp("auto", CPU) == expected
    assert resolve_amp("none", CPU) == "none" and resolve_amp("bf16", CPU) == "bf16"  # as given


def test_channels_last_auto_is_on_with_cuda_and_mixed_precision_only():
    assert resolve_channels_last("auto", CUDA, "bf16") and resolve_channels_last("auto", CUDA, "fp16")
    assert not resolve_channels_last("auto", CUDA, "none")
    assert not resolve_channels_last("auto", CPU, "bf16")
    assert resolve_channels_last("true", CPU, "none") and resolve_channels_last("True", CPU, "none")
    assert not resolve_channels_last("false", CUDA, "bf16")


@pytest.mark.parametrize(
    "cpu, engines, fast_path, amp, channels_last, engine",
    [
        ({"avx512_bf16"}, ("onnxruntime",), "none", "bf16", True, "torch"),
        ({"avx2"}, (), "winograd", "none", False, "torch"),
        ({"avx2"}, ("openvino",), "none", "none", False, "openvino"),
        ({"avx2"}, ("onnxruntime", "openvino"), "none", "none", False, "onnxruntime"),
    ],
)
def test_fast_path_auto_follows_the_cpu_and_the_engines_and_says_so(
    flags, capsys, monkeypatch, cpu, engines, fast_path, amp, channels_last, engine
):
    # which engines are installed is this machine's business: the rule is tested for each case
    if fast_path == "winograd" and not torch.backends.nnpack.is_available():
        pytest.skip("no NNPACK in this build")
    flags(cpu)
    monkeypatch.setattr(fcn.inference.fastpath, "available", lambda name: name == "torch" or name in engines)
    cfg = fcn.inference.fastpath.resolve_fast_path(load_config(overrides=["eval.fast_path=auto"]), CPU)
    e = cfg.eval
    assert (e.fast_path, e.amp, bool(e.channels_last), e.engine) == (fast_path, amp, channels_last, engine)
    assert capsys.readouterr().out.startswith("eval.fast_path=auto: ")


def test_fast_path_auto_on_a_gpu_is_fp32_and_never_int8(flags, capsys):
    flags({"avx512_bf16"})
    cfg = fcn.inference.fastpath.resolve_fast_path(load_config(overrides=["eval.fast_path=auto"]), CUDA)
    assert cfg.eval.fast_path == "none" and cfg.eval.amp == "none"
    unchanged = load_config(overrides=["eval.fast_path=int8"])
    assert fcn.inference.fastpath.resolve_fast_path(unchanged, CPU) is unchanged


def test_fast_path_auto_keeps_the_rule_that_it_sets_precision_itself():
    from fcn.config import ConfigError

    with pytest.raises(ConfigError, match="eval.fast_path=auto"):
        load_config(overrides=["eval.fast_path=auto", "eval.amp=bf16"])


def test_cudnn_benchmark_only_for_fixed_input_sizes_and_never_when_deterministic():
    before = torch.backends.cudnn.benchmark
    try:
        configure_determinism(False, fixed_sizes=True)
        assert torch.backends.cudnn.benchmark
        configure_determinism(False, fixed_sizes=False)  # the paper's native-size batches of 1
        assert not torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.benchmark = before


def test_training_channels_last_takes_true_false_auto_and_rejects_others():
    from fcn.config import ConfigError

    assert load_config().training.channels_last == "auto"
    assert (
        str(load_config(overrides=["training.channels_last=true"]).training.channels_last).lower() == "true"
    )
    with pytest.raises(ConfigError, match="training.channels_last"):
        load_config(overrides=["training.channels_last=maybe"])


def _net(cast_once: bool = True) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1, bias=False),
        torch.nn.Conv2d(4, 4, 1),
    ).eval()
    model.cast_once = cast_once
    return model


@pytest.mark.parametrize("channels_last", [False, True])
def test_amp_forward_casts_once_with_autocasts_outputs_bit_for_bit(channels_last):
    from fcn.core.runtime import amp_forward

    model, x = _net(), torch.randn(2, 3, 12, 10)
    if channels_last:
        model, x = (
            model.to(memory_format=torch.channels_last),
            x.contiguous(memory_format=torch.channels_last),
        )
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model(x)
        first = amp_forward(model, x)
        cache = model.__dict__["_fcn_cast_once"]
        second = amp_forward(model, x)
        assert model.__dict__["_fcn_cast_once"] is cache  # kept, not cast again
    assert first.dtype == expected.dtype == torch.bfloat16
    assert torch.equal(first, expected) and torch.equal(second, expected)
    assert sorted(cache[1]) == ["0.bias", "0.weight", "3.weight", "4.bias", "4.weight"]  # not BatchNorm's
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the model itself is untouched


def test_amp_forward_recasts_changed_weights_and_stays_out_of_the_way_elsewhere():
    from fcn.core.runtime import amp_forward

    model, x = _net(), torch.randn(1, 3, 8, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        amp_forward(model, x)
        model.load_state_dict(
            {k: v * 2 if v.is_floating_point() else v for k, v in model.state_dict().items()}
        )
        assert torch.equal(amp_forward(model, x), model(x))  # in-place copy_: recast
        model[0].weight = torch.nn.Parameter(model[0].weight.detach() + 1)
        assert torch.equal(amp_forward(model, x), model(x))  # a new Parameter: recast
    with torch.no_grad():
        assert torch.equal(amp_forward(model, x), model(x))  # no autocast: the fp32 model as it is
    model.__dict__.pop("_fcn_cast_once")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = amp_forward(model, x)  # gradients on (training): a plain call, nothing kept
    assert out.requires_grad and "_fcn_cast_once" not in model.__dict__
    unmarked = _net(cast_once=False)  # a model the inference loader did not build (training's)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(amp_forward(unmarked, x), unmarked(x))
    assert "_fcn_cast_once" not in unmarked.__dict__


@pytest.mark.parametrize("backbone", ["resnet18", "vgg16"])
def test_amp_forward_of_an_fcn_equals_autocasts_bit_for_bit(backbone):
    """The nets themselves (their learnable upsampling included), channels-last as eval.fast_path=auto."""
    from fcn.core.runtime import amp_forward
    from fcn.models import build_model

    geometry = ["model.geometry=same"] if backbone != "vgg16" else []
    cfg = load_config(overrides=[f"model.backbone={backbone}", "model.pretrained=false", *geometry])
    torch.manual_seed(0)
    model = build_model(cfg.model).eval().to(memory_format=torch.channels_last)
    model.cast_once = True
    x = torch.randn(1, 3, 72, 56).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(amp_forward(model, x), model(x))
        assert torch.equal(amp_forward(model, x), model(x))  # from the kept copies


def test_device_auto_picks_cuda_then_apples_mps_then_the_cpu(monkeypatch, flags):
    from fcn.core.runtime import select_device

    flags({"avx512_bf16"})

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert select_device("auto") == torch.device("mps")
    assert select_device("mps") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert select_device("auto") == CPU
    with pytest.raises(ValueError, match="no MPS device"):
        select_device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert select_device("auto") == CUDA
    assert resolve_amp("auto", torch.device("mps")) == "none"  # never the CPU's flags for the GPU


def test_training_device_takes_mps():
    assert load_config(overrides=["training.device=mps"]).training.device == "mps"
