"""attnsift.config: one mechanism for every component's options (types, conversion, validate, device/dtype)."""
import dataclasses
from typing import Literal, Optional

import pytest

from attnsift.config import Config, config_from_options, describe, resolve_config, resolve_device, resolve_dtype


@dataclasses.dataclass(frozen=True)
class _Demo(Config):
    mode: Literal["rrf", "score"] = "rrf"
    rate: float = 1.0
    steps: int = 3
    weights: Optional[tuple[float, ...]] = None
    rrf_k: Optional[float] = None

    def validate(self) -> None:
        if self.mode == "score" and self.rrf_k is not None:
            raise ValueError("rrf_k applies to mode=rrf only")


@dataclasses.dataclass(frozen=True)
class _Plain:  # not a Config: config_from_options still runs its validate()
    n: int = 1
    seen: list = dataclasses.field(default_factory=list)

    def validate(self) -> None:
        if self.n > 5:
            raise ValueError("n must be <= 5")


def test_strings_are_converted_to_field_types():
    cfg = config_from_options(_Demo, {"mode": "score", "rate": "0.5", "steps": "7", "weights": "0.3, 0.7"})
    assert cfg == _Demo("score", 0.5, 7, (0.3, 0.7), None)
    assert config_from_options(_Demo, {"weights": "none"}).weights is None
    assert config_from_options(_Demo, {"weights": "[1, 2]"}).weights == (1.0, 2.0)


def test_unknown_key_lists_accepted_ones_and_literal_lists_values():
    with pytest.raises(ValueError, match=r"unknown option\(s\) modes for _Demo; accepted: mode, rate, rrf_k, steps, weights"):
        config_from_options(_Demo, {"modes": "rrf"})
    with pytest.raises(ValueError, match=r"mode='max': expected one of 'rrf', 'score'"):
        config_from_options(_Demo, {"mode": "max"})
    with pytest.raises(ValueError, match=r"steps='2.5': expected an integer"):
        config_from_options(_Demo, {"steps": "2.5"})
    with pytest.raises(TypeError, match="expected a number"):  # a Python value of the wrong type
        config_from_options(_Demo, {"rate": True})


def test_validate_runs_however_the_config_is_built():
    with pytest.raises(ValueError, match="rrf_k applies to mode=rrf only"):
        config_from_options(_Demo, {"mode": "score", "rrf_k": "10"})
    with pytest.raises(ValueError, match="rrf_k applies"):
        _Demo(mode="score", rrf_k=10.0)
    with pytest.raises(ValueError, match="n must be <= 5"):
        config_from_options(_Plain, {"n": "9"})
    with pytest.raises(TypeError, match=r"_Demo.steps must be an integer, got '3' \(str\)"):
        _Demo(steps="3")
    assert isinstance(_Demo(rate=2).rate, float)  # an int for a float field is stored as a float


def test_with_options_and_resolve_config():
    base = _Demo(mode="score")
    assert base.with_options({"rate": "2"}) == _Demo("score", 2.0)
    with pytest.raises(ValueError, match="rrf_k applies"):
        base.with_options(rrf_k="1")
    assert resolve_config(_Demo, None, {"steps": "4"}).steps == 4
    assert resolve_config(_Demo, base, {}) is base
    with pytest.raises(ValueError, match=r"got config= and options \(steps\); give one of them"):
        resolve_config(_Demo, base, {"steps": 4}, "Thing")
    with pytest.raises(TypeError, match="takes config=_Demo"):
        resolve_config(_Demo, _Plain(), None)


def test_describe():
    assert describe(Optional[Literal["a", "b"]]) == "one of 'a', 'b' or none"
    assert describe(tuple[float, ...]) == "a comma-separated list (each a number)"


def test_device_and_dtype():
    torch = pytest.importorskip("torch")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype(None, "cpu") is torch.float32
    assert resolve_dtype(None, "cuda") is torch.bfloat16
    assert resolve_dtype(None, "cuda", accelerator_default="float32") is torch.float32
    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype(torch.float16) is torch.float16
    with pytest.raises(ValueError, match="unknown dtype 'int8'; expected one of float32, bfloat16, float16"):
        resolve_dtype("int8")
    with pytest.raises(ValueError, match="not a floating-point type"):
        resolve_dtype(torch.int64)
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
