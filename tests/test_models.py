"""The paper's three feed-forward classifiers: layer counts, tapering widths, output shape."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from torch import nn

from tcr_pipeline.config import ModelParams
from tcr_pipeline.models import build_model


def _count(model: nn.Module, kind: type[nn.Module]) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def _widths(model: nn.Module) -> list[int]:
    return [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]


def test_small_is_three_linear_and_two_relu() -> None:
    model = build_model(123, ModelParams(kind="small"))
    assert _count(model, nn.Linear) == 3
    assert _count(model, nn.ReLU) == 2
    assert _count(model, nn.BatchNorm1d) == 0
    assert [type(m) for m in model] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert _widths(model) == [256, 64, 1]
    assert model[0].in_features == 123


@pytest.mark.parametrize(("kind", "linear"), [("medium", 12), ("large", 24)])
def test_medium_and_large_blocks(kind: str, linear: int) -> None:
    model = build_model(123, ModelParams(kind=kind))
    assert _count(model, nn.Linear) == linear
    assert _count(model, nn.BatchNorm1d) == linear - 1
    assert _count(model, nn.ELU) == linear - 1
    assert _count(model, nn.ReLU) == 0
    # every block but the last is Linear → BatchNorm → ELU; the last is the Linear to one logit
    layers = list(model)
    for i in range(linear - 1):
        assert [type(m) for m in layers[3 * i : 3 * i + 3]] == [nn.Linear, nn.BatchNorm1d, nn.ELU]
        assert layers[3 * i + 1].num_features == layers[3 * i].out_features
    assert isinstance(layers[-1], nn.Linear)
    assert layers[-1].out_features == 1


def test_large_has_twice_the_blocks_of_medium() -> None:
    params = ModelParams()
    assert params.large_blocks == 2 * params.medium_blocks


def test_paper_rule_widths_for_123_inputs() -> None:
    """max_width None: start at the input width, ten fewer per block (123 → 113, 103, …)."""
    model = build_model(123, ModelParams(kind="medium", max_width=None))
    widths = _widths(model)
    assert widths == [113, 103, 93, 83, 73, 63, 53, 43, 33, 23, 13, 1]
    hidden = widths[:-1]
    assert all(a - b == 10 for a, b in pairwise(hidden))
    assert model[0].in_features == 123
    # each Linear takes the previous one's width
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [m.in_features for m in linears[1:]] == [m.out_features for m in linears[:-1]]


def test_large_widths_stop_at_min_width() -> None:
    widths = _widths(build_model(123, ModelParams(kind="large", max_width=None)))
    hidden = widths[:-1]
    assert hidden[:11] == [113, 103, 93, 83, 73, 63, 53, 43, 33, 23, 13]
    assert hidden[11:] == [8] * 12  # never below min_width
    assert widths[-1] == 1


def test_max_width_caps_the_first_block() -> None:
    widths = _widths(build_model(1097, ModelParams(kind="medium", max_width=128)))
    assert widths[:3] == [118, 108, 98]


@pytest.mark.parametrize("kind", ["small", "medium", "large"])
@pytest.mark.parametrize("input_dim", [123, 1097])
def test_output_is_one_logit_per_row(kind: str, input_dim: int) -> None:
    torch.manual_seed(0)
    model = build_model(input_dim, ModelParams(kind=kind))
    batch = torch.rand(5, input_dim)
    model.train()
    assert model(batch).shape == (5, 1)
    model.eval()
    with torch.no_grad():
        out = model(batch)
    assert out.shape == (5, 1)
    assert torch.isfinite(out).all()
