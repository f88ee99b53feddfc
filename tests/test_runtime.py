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
