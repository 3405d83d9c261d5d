"""Many trials of one architecture trained at once as one vectorised population.

Trials whose models have the same shapes (:func:`shape_key`) become the members of one
population: their weights are stacked (``torch.func.stack_module_state``) and each training step
computes every member's logits at once (:mod:`tcr_pipeline.stacking`: ``torch.func.vmap`` over
``functional_call`` for the paper MLPs, one ``embedding_bag`` for ``kmer``), then one backward
pass and an Adam step per member (torch's fused Adam on each member's slices on a CPU, where it
stays in cache; :func:`~tcr_pipeline.stacking.vectorised_adam_step` on the whole stacks on a
GPU). With ``train.folds = K`` every (trial, fold) pair is a member. Each member is what
:func:`tcr_pipeline.training.train_once` would train:

* its model is built as there (``torch.manual_seed(seed)``, then ``build_model``), and its own
  generator, seeded the same way, draws the same class-balanced batch orders;
* its own learning rate, weight decay and number of epochs (a member that has run its epochs
  leaves the stacks: the others go on without it), its own best epoch, curves and validation
  scores; Adam as ``torch.optim.Adam`` (L2 added to the gradient);
* BatchNorm keeps its running statistics: the stacked buffers are updated in place under
  ``vmap``, member by member, and evaluation uses them as ``model.eval()`` does.

Same seeds give the same curves, best epochs and scores as training the trials one by one, up to
float rounding (batched products sum in another order; in a Linear layer feeding a BatchNorm,
Adam scales the rounding-level gradients of weights that cannot change the output to steps of
±lr, so there evaluation-mode scores agree less closely: ``tests/test_population.py``). The
paper MLPs (``small``, ``medium``, ``large``, on any encoding; no dropout) and ``kmer`` are
vectorised. ``cnn`` trains one trial at a time, as do trials alone in their group: its input
width depends on the batch (``models.compact``), and its dropout would draw other random numbers
under ``vmap(randomness="different")`` than one by one.

Batches are indexed from ``prepared.features`` and passed to the model's own input layer exactly
as ``train_once`` does, whatever the features' dtype; the input layer (no weights: the aligned
codes → residue vectors and one-hots) runs once on all members' rows of a step.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.func import stack_module_state
from torch.optim.adam import adam

from tcr_pipeline.config import EvaluateParams, TrainParams
from tcr_pipeline.models import FeedForward, build_model
from tcr_pipeline.prepare import Prepared
from tcr_pipeline.stacking import BETAS, EPS, Inputs, stacked_forward, vectorised_adam_step
from tcr_pipeline.training import (
    TrainingError,
    TrainResult,
    balanced_weights,
    combine_folds,
    epoch_record,
    fold_splits,
    resolve_device,
    train_model,
)

PopulationCallback = Callable[[int, int, dict[str, float]], None]
AdamKind = Literal["auto", "fused", "stacked"]
VECTORISED_KINDS = ("small", "medium", "large", "kmer")
_PREDICT_ROWS = 65536  # predict_scores' chunk


def shape_key(params: TrainParams) -> tuple[Any, ...] | None:
    """Trials with equal keys can share one population; None: this trial trains on its own.

    The key holds what sets the tensors' shapes and the step: the architecture (residue vectors
    aside: one-hot and BLOSUM62 have the same width), the batch size and the device.
    """
    if params.model.kind not in VECTORISED_KINDS:
        return None
    model = params.model.model_dump(mode="json", exclude={"residues", "dropout"})
    return (json.dumps(model, sort_keys=True), params.batch_size, str(resolve_device(params.device)))


@dataclass(eq=False)
class _Member:
    """One model of the population: a trial's only model, or one of its fold models."""

    trial: int
    fold: int
    params: TrainParams
    train_rows: torch.Tensor
    val_rows: torch.Tensor
    model: nn.Module
    generator: torch.Generator
    weights: torch.Tensor | None
    result: TrainResult
    report: Callable[[int, dict[str, float]], None] | None = None
    best_value: float = -math.inf
    best_state: dict[str, torch.Tensor] | None = None
    steps: int = 0
    adam_steps: list[torch.Tensor] = field(default_factory=list)  # torch's Adam state "step"
    rows_seen: int = 0
    error: TrainingError | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def _input_key(member: _Member) -> str:
    """Members of one key share their input layer (the paper networks' residue vectors)."""
    return member.params.model.residues if isinstance(member.model, FeedForward) else ""


class _Population:
    """The stacked weights, buffers and Adam state of the members still training."""

    def __init__(
        self, prepared: Prepared, members: list[_Member], device: torch.device, adam: AdamKind
    ) -> None:
        self.members = members
        self.device = device
        self.stacked_adam = adam == "stacked" or (adam == "auto" and device.type != "cpu")
        self.features = prepared.features.to(device)
        self.labels = prepared.labels.to(device)
        self.forward = stacked_forward(members[0].model)
        bodies = [self.forward.body_of(m.model)[1] for m in members]
        params, buffers = stack_module_state(bodies)
        self.params = {k: v.detach() for k, v in params.items()}
        persistent = bodies[0].state_dict().keys()  # (not the input layer's lookup tables)
        self.buffers = {k: v for k, v in buffers.items() if k in persistent}
        self.adam = {k: (torch.zeros_like(v), torch.zeros_like(v)) for k, v in self.params.items()}
        self.batch_size = members[0].params.batch_size
        self.loss_sums = torch.zeros(len(members), device=device)  # per member, this epoch
        for m in members:
            m.adam_steps = [torch.zeros((), dtype=torch.float32) for _ in self.params]

    def keep(self, members: list[_Member]) -> None:
        """Go on with ``members`` only (the others have run all their epochs or diverged)."""
        if len(members) == len(self.members):
            return
        index = torch.tensor([self.members.index(m) for m in members], dtype=torch.long, device=self.device)
        self.params = {k: v[index] for k, v in self.params.items()}
        self.buffers = {k: v[index] for k, v in self.buffers.items()}
        self.adam = {k: (a[index], b[index]) for k, (a, b) in self.adam.items()}
        self.loss_sums = self.loss_sums[index]
        self.members = members

    def _inputs(self, members: list[_Member], rows: torch.Tensor) -> Inputs:
        """Each member's input layer on its rows: tensors of (members, batch, …); rows (members, batch)."""
        x = self.features[rows.flatten()]
        groups: dict[str, list[int]] = {}
        for i, m in enumerate(members):
            groups.setdefault(_input_key(m), []).append(i)
        if len(groups) == 1:
            return tuple(t.unflatten(0, rows.shape) for t in self.forward.inputs(members[0].model, x))
        parts = x.unflatten(0, rows.shape)
        out: list[torch.Tensor] = []
        for positions in groups.values():
            index = torch.tensor(positions, dtype=torch.long, device=self.device)
            inputs = self.forward.inputs(members[positions[0]].model, parts[index].flatten(0, 1))
            for k, t in enumerate(inputs):
                t = t.unflatten(0, (len(positions), -1))
                if len(out) <= k:
                    out.append(t.new_empty((len(members), *t.shape[1:])))
                out[k][index] = t
        return tuple(out)

    def train_step(self, positions: list[int], rows: torch.Tensor) -> None:
        """One optimiser step of the members at ``positions`` on their batches ``rows``."""
        every = len(positions) == len(self.members)
        index = None if every else torch.tensor(positions, dtype=torch.long, device=self.device)
        members = [self.members[p] for p in positions]
        params = {
            k: (v if index is None else v[index]).detach().requires_grad_() for k, v in self.params.items()
        }
        buffers = self.buffers if index is None else {k: v[index] for k, v in self.buffers.items()}
        logits = self.forward.logits(
            params, buffers, self._inputs(members, rows), shared=False, training=True
        )
        losses = nn.functional.binary_cross_entropy_with_logits(
            logits, self.labels[rows], reduction="none"
        ).mean(1)
        grads = dict(zip(params, torch.autograd.grad(losses.sum(), list(params.values())), strict=True))
        with torch.no_grad():
            if index is None:
                self.loss_sums += losses.detach() * rows.shape[1]
            else:
                self.loss_sums[index] += losses.detach() * rows.shape[1]
                for k, v in buffers.items():  # the BatchNorm statistics of the members that stepped
                    self.buffers[k][index] = v
            for m in members:
                m.steps += 1
                m.rows_seen += rows.shape[1]
            if self.stacked_adam:
                self._adam_stacked(index, grads)
            else:  # (fused Adam needs contiguous gradients: vmap's may not be)
                self._adam_per_member(positions, {k: g.contiguous() for k, g in grads.items()})

    def _adam_per_member(self, positions: list[int], grads: dict[str, torch.Tensor]) -> None:
        """torch's fused Adam on each member's slices in turn (in cache: fastest on a CPU)."""
        for j, p in enumerate(positions):
            m = self.members[p]
            adam(
                [v[p] for v in self.params.values()],
                [g[j] for g in grads.values()],
                [a[p] for a, _ in self.adam.values()],
                [b[p] for _, b in self.adam.values()],
                [],
                m.adam_steps,
                fused=True,
                lr=m.params.lr,
                weight_decay=m.params.weight_decay,
                beta1=BETAS[0],
                beta2=BETAS[1],
                eps=EPS,
                amsgrad=False,
                maximize=False,
            )

    def _adam_stacked(self, index: torch.Tensor | None, grads: dict[str, torch.Tensor]) -> None:
        """:func:`vectorised_adam_step` on the stacks (a few large kernels: fastest on a GPU)."""
        members = self.members if index is None else [self.members[i] for i in index.tolist()]
        params = self.params if index is None else {k: v[index] for k, v in self.params.items()}
        state = self.adam if index is None else {k: (a[index], b[index]) for k, (a, b) in self.adam.items()}
        lr = torch.tensor([m.params.lr for m in members], dtype=torch.float32, device=self.device)
        decay = torch.tensor(
            [m.params.weight_decay for m in members], dtype=torch.float32, device=self.device
        )
        vectorised_adam_step(params, grads, state, [m.steps for m in members], lr, decay)
        if index is not None:  # write the members' slices back
            for k, v in params.items():
                self.params[k][index] = v
            for k, (a, b) in state.items():
                self.adam[k][0][index] = a
                self.adam[k][1][index] = b

    def train_epoch(self) -> None:
        """Every member's epoch: its own batch order, drawn as train_once draws it."""
        orders = []
        for m in self.members:
            n = len(m.train_rows)
            if m.weights is not None:
                order = torch.multinomial(m.weights, n, replacement=True, generator=m.generator)
            else:
                order = torch.randperm(n, generator=m.generator)
            orders.append(m.train_rows[order].to(self.device))
            m.rows_seen = 0
        self.loss_sums = torch.zeros(len(self.members), device=self.device)
        lengths = [len(o) for o in orders]
        padded = torch.zeros((len(orders), max(lengths)), dtype=torch.long, device=self.device)
        for i, order in enumerate(orders):
            padded[i, : len(order)] = order
        for start in range(0, max(lengths), self.batch_size):
            sizes: dict[int, list[int]] = {}
            for i, n in enumerate(lengths):
                size = min(self.batch_size, n - start)
                if size >= 2:  # BatchNorm cannot train on a single row (train_once skips it)
                    sizes.setdefault(size, []).append(i)
            for size, positions in sizes.items():
                rows = padded[:, start : start + size]
                self.train_step(positions, rows if len(positions) == len(orders) else rows[positions])

    @torch.no_grad()
    def predict(self, members: list[_Member], rows: torch.Tensor) -> torch.Tensor:
        """(members, rows) probabilities in evaluation mode, on the CPU (as predict_scores)."""
        index = torch.tensor([self.members.index(m) for m in members], dtype=torch.long, device=self.device)
        params = {k: v[index] for k, v in self.params.items()}
        buffers = {k: v[index] for k, v in self.buffers.items()}
        out = []
        for start in range(0, len(rows), _PREDICT_ROWS):
            x = self.features[rows[start : start + _PREDICT_ROWS].to(self.device)]
            inputs = self.forward.inputs(members[0].model, x)
            logits = self.forward.logits(params, buffers, inputs, shared=True, training=False)
            out.append(torch.sigmoid(logits).float().cpu())
        return torch.cat(out, dim=1) if out else torch.empty(len(members), 0)

    def state_of(self, member: _Member) -> dict[str, torch.Tensor]:
        """The member's state dict (its slice of the stacks), cloned."""
        i = self.members.index(member)
        state = {**self.params, **self.buffers}
        return {self.forward.prefix + k: v[i].detach().clone() for k, v in state.items()}


def _validate(
    population: _Population, prepared: Prepared, evaluate: EvaluateParams, epoch: int, started: float
) -> list[_Member]:
    """Score every member on its validation rows; returns the members that diverged."""
    by_rows: dict[tuple[tuple[int, int, int], str], list[_Member]] = {}
    for m in population.members:  # members validated on the same rows with the same input layer
        folds = m.params.folds
        rows_key = (folds, m.params.fold_seed if folds > 1 else 0, m.fold)
        by_rows.setdefault((rows_key, _input_key(m)), []).append(m)
    diverged = []
    loss_sums = dict(zip(population.members, population.loss_sums.cpu().tolist(), strict=True))
    for members in by_rows.values():
        rows = members[0].val_rows
        truth = (prepared.labels[rows], prepared.epitopes_of(rows))
        for m, scores in zip(members, population.predict(members, rows), strict=True):
            train_loss = loss_sums[m] / max(m.rows_seen, 1)
            try:
                record, value = epoch_record(
                    epoch, train_loss, scores, truth, evaluate, started, len(m.train_rows)
                )
            except TrainingError as exc:
                m.error = exc
                diverged.append(m)
                continue
            m.history.append(record)
            if m.best_state is None or value > m.best_value:
                m.best_value, m.result.best_epoch, m.result.val_scores = value, epoch, scores
                m.best_state = population.state_of(m)
            if m.report is not None:
                m.report(epoch, record)
    return diverged


def _train_group(
    prepared: Prepared, members: list[_Member], evaluate: EvaluateParams, adam: AdamKind
) -> None:
    """Train ``members`` (one shape key) as one population; fills each member's result."""
    device = resolve_device(members[0].params.device)
    started = time.perf_counter()
    population = _Population(prepared, members, device, adam)
    failed: set[int] = set()
    epoch = 0
    while population.members:
        epoch += 1
        epoch_started = time.perf_counter()
        population.train_epoch()
        for m in _validate(population, prepared, evaluate, epoch, epoch_started):
            failed.add(m.trial)
        population.keep([m for m in population.members if m.trial not in failed and m.params.epochs > epoch])
    for m in members:
        m.result.history = m.history
        m.result.seconds = time.perf_counter() - started
        if m.trial not in failed and m.best_state is not None:
            m.model.load_state_dict(m.best_state)


def _members_of(
    prepared: Prepared, trial: int, params: TrainParams, on_epoch: PopulationCallback | None
) -> list[_Member]:
    """The members of one trial: one model, or one per fold (train_model's seeds and callbacks)."""
    splits = (
        [(prepared.rows("train"), prepared.rows("val"))]
        if params.folds <= 1
        else fold_splits(prepared, params)
    )
    spec = prepared.encoder.input_spec() if prepared.encoder is not None else None
    device = resolve_device(params.device)
    members = []
    for k, (train_rows, val_rows) in enumerate(splits):
        member_params = params if params.folds <= 1 else params.model_copy(update={"seed": params.seed + k})
        torch.manual_seed(member_params.seed)
        model = build_model(prepared.features.shape[1], member_params.model, spec).to(device)
        report = None
        if on_epoch is not None:
            fold = None if params.folds <= 1 else k

            def report(
                epoch: int, record: dict[str, float], fold: int | None = fold, trial: int = trial
            ) -> None:
                assert on_epoch is not None
                if fold is None:
                    on_epoch(trial, epoch, record)
                else:
                    on_epoch(trial, fold * params.epochs + epoch, {**record, "fold": fold + 1})

        member = _Member(  # trial, fold, params, rows to train and to validate on, model
            trial,
            k,
            member_params,
            train_rows,
            val_rows,
            model,
            generator=torch.Generator().manual_seed(member_params.seed),
            weights=balanced_weights(prepared.labels[train_rows]) if params.balanced else None,
            result=TrainResult(model=model, device=str(device), val_rows=val_rows),
            report=report,
        )
        members.append(member)
    return members


def train_population(
    prepared: Prepared,
    trains: Sequence[TrainParams],
    evaluate: EvaluateParams,
    on_epoch: PopulationCallback | None = None,
    adam: AdamKind = "auto",
) -> list[TrainResult | TrainingError]:
    """Train every trial of ``trains``; one result per trial, in order: what train_model returns.

    Trials of one :func:`shape_key` (two or more) train as one population; the others one by one
    with :func:`train_model`. A trial whose training diverged gets the ``TrainingError`` that
    train_model would have raised (its population goes on without it).

    ``on_epoch(trial, step, record)`` is called after each epoch of each member, with ``trial``
    the index into ``trains`` and ``step``, ``record`` what train_model's ``on_epoch`` gets for
    that trial (with folds: ``step`` counts epochs across folds and ``record`` names its
    ``fold``). Members of one population report epoch by epoch, interleaved across trials; a
    record's ``seconds`` is the whole population's epoch.

    ``adam``: ``fused`` (torch's fused Adam on each member in turn), ``stacked``
    (:func:`~tcr_pipeline.stacking.vectorised_adam_step` on all members at once) or ``auto``
    (fused on a CPU, stacked on a GPU).
    """
    groups: dict[tuple[Any, ...], list[int]] = {}
    alone = []
    for i, params in enumerate(trains):
        key = shape_key(params)
        if key is None:
            alone.append(i)
        else:
            groups.setdefault(key, []).append(i)
    results: dict[int, TrainResult | TrainingError] = {}
    for trials in groups.values():
        if len(trials) == 1:
            alone.append(trials[0])
            continue
        started = time.perf_counter()
        members = {i: _members_of(prepared, i, trains[i], on_epoch) for i in trials}
        _train_group(prepared, [m for ms in members.values() for m in ms], evaluate, adam)
        for i, ms in members.items():
            errors = [m.error for m in ms if m.error is not None]
            if errors:
                results[i] = errors[0]
            elif len(ms) == 1:
                results[i] = ms[0].result
            else:
                results[i] = combine_folds(
                    [m.result for m in ms], trains[i].epochs, time.perf_counter() - started
                )
    for i in sorted(alone):
        callback = None
        if on_epoch is not None:

            def callback(step: int, record: dict[str, float], trial: int = i) -> None:
                assert on_epoch is not None
                on_epoch(trial, step, record)

        try:
            results[i] = train_model(prepared, trains[i], evaluate, callback)
        except TrainingError as exc:
            results[i] = exc
    return [results[i] for i in range(len(trains))]
