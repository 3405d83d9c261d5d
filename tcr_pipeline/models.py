"""The paper's three feed-forward classifiers. Each outputs one logit per row."""

from __future__ import annotations

from torch import nn

from tcr_pipeline.config import ModelParams


def _tapering_widths(input_dim: int, blocks: int, params: ModelParams) -> list[int]:
    """Widths after each hidden block.

    The first block maps to ``min(input_dim, max_width)`` less one step; each further block
    narrows by ``width_step``, never below ``min_width``. With ``max_width=None`` (or the paper
    encoding's 123 inputs) this is the paper's rule: start at the input width, minus ten per block.
    """
    start = input_dim if params.max_width is None else min(input_dim, params.max_width)
    return [max(start - params.width_step * (i + 1), params.min_width) for i in range(blocks - 1)]


def build_model(input_dim: int, params: ModelParams) -> nn.Sequential:
    """Build ``small``, ``medium`` or ``large``.

    ``small``: three linear layers separated by two ReLUs.
    ``medium``: ``medium_blocks`` blocks; each but the last is Linear + BatchNorm + ELU narrowing
    the width by ``width_step``; the last block is only a Linear to one logit.
    ``large``: the same with ``large_blocks`` (double the blocks of medium by default).
    """
    if params.kind == "small":
        first, second = params.small_widths
        return nn.Sequential(
            nn.Linear(input_dim, first),
            nn.ReLU(),
            nn.Linear(first, second),
            nn.ReLU(),
            nn.Linear(second, 1),
        )
    blocks = params.medium_blocks if params.kind == "medium" else params.large_blocks
    layers: list[nn.Module] = []
    width = input_dim
    for next_width in _tapering_widths(input_dim, blocks, params):
        layers += [nn.Linear(width, next_width), nn.BatchNorm1d(next_width), nn.ELU()]
        width = next_width
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)
