"""Forward passes and Adam steps of several models of one architecture with stacked weights.

A population (:mod:`tcr_pipeline.population`) holds each parameter of its G members as one
tensor with a leading member dimension. The classes here compute all members' logits at once:

``StackedNetwork`` (the paper MLPs)
    ``torch.func.vmap`` over ``torch.func.functional_call`` of the network; BatchNorm's running
    statistics are stacked buffers that ``vmap`` updates in place, member by member.
``StackedKmer`` (``kmer``)
    One ``embedding_bag`` over all members' k-mer counts: member g's k-mer i is row
    ``g × V + i`` of the members' count tables laid end to end (row ``G × V`` is the padding).

Their ``inputs`` is the model's own input layer (no weights: aligned codes → residue vectors and
one-hots, or k-mer indices), applied row by row, so it runs once on all members' rows.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from tcr_pipeline.models import FeedForward, KmerLinear, pair_logit

Inputs = tuple[torch.Tensor, ...]
State = dict[str, torch.Tensor]  # stacked parameters or buffers by name
BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, as train_once uses them
EPS = 1e-8


class StackedNetwork:
    """Paper networks (``small``, ``medium``, ``large``) with stacked weights."""

    def __init__(self, model: nn.Module) -> None:
        self.prefix, body = self.body_of(model)
        self.template = copy.deepcopy(body).to("meta")

    @staticmethod
    def body_of(model: nn.Module) -> tuple[str, nn.Module]:
        """(state-dict prefix, the part with weights)."""
        return ("net.", model.net) if isinstance(model, FeedForward) else ("", model)

    @staticmethod
    def inputs(model: nn.Module, x: torch.Tensor) -> Inputs:
        return (model.expand(x) if isinstance(model, FeedForward) else x,)

    def _call(
        self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], h: torch.Tensor
    ) -> torch.Tensor:
        return functional_call(self.template, (params, buffers), (h,))

    def logits(
        self, params: State, buffers: State, inputs: Inputs, shared: bool, training: bool
    ) -> torch.Tensor:
        """(members, rows) logits; ``shared``: the same (rows, …) inputs for every member."""
        self.template.train(training)
        return vmap(self._call, in_dims=(0, 0, None if shared else 0))(params, buffers, inputs[0]).squeeze(-1)


class StackedKmer:
    """``kmer`` models (:class:`tcr_pipeline.models.KmerLinear`) with stacked weights."""

    prefix = ""

    def __init__(self, model: nn.Module) -> None:
        assert isinstance(model, KmerLinear)
        self.genes = list(model.genes) if model.genes is not None else []
        self.softmax = model.softmax

    @staticmethod
    def body_of(model: nn.Module) -> tuple[str, nn.Module]:
        return "", model

    @staticmethod
    def inputs(model: nn.Module, x: torch.Tensor) -> Inputs:
        assert isinstance(model, KmerLinear)
        genes = [model.columns.category(x, g) for g in (model.genes or {})]
        gene_codes = torch.stack(genes, 1) if genes else x.new_zeros((len(x), 0), dtype=torch.long)
        return model.kmer_codes(x), gene_codes, model.columns.category(x, "Epitope").unsqueeze(1)

    def logits(
        self, params: State, buffers: State, inputs: Inputs, shared: bool, training: bool
    ) -> torch.Tensor:
        weight = params["kmers.weight"]  # (G, V, outputs)
        members, vocabulary, outputs = weight.shape
        codes, gene_codes, epitope = (t.expand(members, *t.shape) if shared else t for t in inputs)
        offset = torch.arange(members, device=codes.device).view(-1, 1, 1) * vocabulary
        padding = members * vocabulary  # KmerLinear's padding_idx=0: no count, no gradient
        index = torch.where(codes > 0, codes + offset, padding)
        table = torch.cat([weight.reshape(padding, outputs), weight.new_zeros(1, outputs)])
        z = nn.functional.embedding_bag(index.flatten(0, 1), table, mode="sum", padding_idx=padding)
        z = z.unflatten(0, codes.shape[:2]) + params["bias"].unsqueeze(1)
        rows = torch.arange(members, device=codes.device).view(-1, 1)
        for j, gene in enumerate(self.genes):  # nn.Embedding(padding_idx=0): code 0 adds nothing
            code = gene_codes[..., j]
            z = z + params[f"genes.{gene}.weight"][rows, code] * (code > 0).unsqueeze(-1)
        return pair_logit(z, epitope, self.softmax).squeeze(-1)


def stacked_forward(model: nn.Module) -> StackedNetwork | StackedKmer:
    """The stacked forward pass of ``model``'s architecture."""
    return StackedKmer(model) if isinstance(model, KmerLinear) else StackedNetwork(model)


def vectorised_adam_step(
    params: dict[str, torch.Tensor],
    grads: dict[str, torch.Tensor],
    state: dict[str, tuple[torch.Tensor, torch.Tensor]],
    steps: Sequence[int],
    lr: torch.Tensor,
    weight_decay: torch.Tensor,
) -> None:
    """One ``torch.optim.Adam`` step of stacked members (dim 0), in place.

    ``steps`` are the members' step counts after this step; ``lr`` and ``weight_decay`` hold one
    value per member; ``state`` the (exp_avg, exp_avg_sq) of each stacked parameter.
    """
    beta1, beta2 = BETAS
    device = lr.device
    step_size = torch.tensor([1 / (1 - beta1**s) for s in steps], dtype=torch.float64, device=device)
    step_size = (lr.double() * step_size).to(lr.dtype)
    correction = torch.tensor([(1 - beta2**s) ** 0.5 for s in steps], dtype=lr.dtype, device=device)
    for name, param in params.items():
        shape = (-1,) + (1,) * (param.dim() - 1)
        grad = grads[name] + weight_decay.view(shape) * param
        exp_avg, exp_avg_sq = state[name]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / correction.view(shape)).add_(EPS)
        param.add_(exp_avg / denom * -step_size.view(shape))
