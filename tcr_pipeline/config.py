"""One typed configuration: ``params.yaml`` parsed into pydantic models, one section per stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tcr_pipeline.errors import InputError

Encoding = Literal["aligned", "onehot", "paper"]
SplitKind = Literal["random", "tcr", "epitope"]
ModelKind = Literal["small", "medium", "large", "kmer", "cnn"]
ObjectiveName = Literal["paper", "mean_epitope_auc", "roc_auc", "average_precision"]
WatchedMetric = Literal[
    "accuracy", "precision", "recall", "roc_auc", "average_precision", "mean_epitope_auc", "paper_objective"
]


def _not_a_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("float_type", "Input should be a valid number")
    return value


# Counts, sizes and switches take only what YAML writes for them: `batch_size: true`, `'3'` or
# `vectorise: 'yes'` are mistakes, not values (pydantic's lax mode would turn them into 1, 3 and
# True). A number may be a quoted string, since PyYAML reads `1e-3` as one, but never a bool, and
# never .inf or .nan (`lr: .inf` trained to a NaN loss and a traceback).
Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Float = Annotated[float, BeforeValidator(_not_a_bool), AllowInfNan(False)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(_Section):
    """Where the raw labelled pairs live."""

    raw: Path = Path("data/raw/viral_pairs.csv")


class PrepareParams(_Section):
    """Encoding and splitting of the raw pairs (DVC stage ``prepare``)."""

    encoding: Encoding = "aligned"
    split: SplitKind = "tcr"
    use_clone_id: Bool = False
    fractions: tuple[Float, Float, Float] = (0.8, 0.1, 0.1)
    seed: Int = 42

    @field_validator("fractions")
    @classmethod
    def _fractions_sum_to_one(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(f <= 0 for f in value) or abs(sum(value) - 1.0) > 1e-6:
            raise ValueError("fractions must be three positive numbers summing to 1")
        return value


class ModelParams(_Section):
    """Architecture: the paper's three feed-forward sizes, or a k-mer linear model or a 1D-CNN.

    ``kmer`` and ``cnn`` need the ``aligned`` encoding; ``head`` says how their per-epitope
    outputs become a pair's probability (``softmax``: one softmax over the training epitopes and
    "none"; ``sigmoid``: one independent logistic output per epitope, like the k-mer baseline).
    """

    kind: ModelKind = "medium"
    small_widths: tuple[Int, Int] = (256, 64)
    medium_blocks: Int = Field(12, ge=2)
    large_blocks: Int = Field(24, ge=2)
    max_width: Int | None = Field(128, ge=1)  # None: start at the input width, as the paper
    width_step: Int = Field(10, ge=0)
    min_width: Int = Field(8, ge=1)
    residues: Literal["onehot", "blosum"] = "blosum"  # aligned encoding: residue vectors
    head: Literal["softmax", "sigmoid"] = "softmax"  # kmer, cnn
    kmer_sizes: tuple[Int, ...] = (1, 2, 3)  # kmer
    genes: Bool = True  # kmer, cnn: use V/J genes
    cnn_filters: Int = Field(32, ge=1)
    cnn_kernels: tuple[Int, ...] = (1, 3, 5, 7, 9)
    cnn_hidden: Int = Field(64, ge=1)
    dropout: Float = Field(0.2, ge=0, lt=1)


class TrainParams(_Section):
    """Optimisation (DVC stage ``train``)."""

    model: ModelParams = ModelParams()
    lr: Float = Field(0.01, gt=0)
    epochs: Int = Field(15, ge=1)
    batch_size: Int = Field(2048, ge=1)
    weight_decay: Float = Field(0.0, ge=0)
    balanced: Bool = True
    seed: Int = 42
    device: str = "auto"
    folds: Int = Field(1, ge=1, le=20)  # >1: K TCR-grouped folds of train+val (training.py)
    fold_seed: Int = 0  # which TCRs share a fold; the same for every trial, so runs compare


class EvaluateParams(_Section):
    """Decision threshold and the selectable search objective."""

    threshold: Float = Field(0.5, gt=0, lt=1)
    objective: ObjectiveName = "mean_epitope_auc"


class Dimension(_Section):
    """One searched hyperparameter: exactly one of the five kinds.

    ``branches`` makes a conditional space: each branch is a value of this hyperparameter with
    its own sub-space, searched only when that value is chosen (e.g. ``model.kind`` → ``cnn``
    with its filters and dropout, ``kmer`` with its head).
    """

    choice: list[Any] | None = None
    uniform: tuple[Float, Float] | None = None
    loguniform: tuple[Float, Float] | None = None
    integer: tuple[Int, Int] | None = None  # inclusive bounds
    branches: dict[str, dict[str, Dimension]] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Dimension:
        kinds = [k for k in DIMENSION_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of " + ", ".join(DIMENSION_KINDS))
        for kind, bounds in (("uniform", self.uniform), ("loguniform", self.loguniform)):
            if bounds is not None and not bounds[0] < bounds[1]:
                raise ValueError(f"{kind}: the low bound must be below the high one")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("loguniform: bounds must be positive")
        if self.integer is not None and self.integer[0] > self.integer[1]:
            raise ValueError("integer: the low bound must not exceed the high one")
        if self.choice is not None and not self.choice:
            raise ValueError("choice: give at least one value")
        if self.branches is not None and not self.branches:
            raise ValueError("branches: give at least one branch")
        return self


DIMENSION_KINDS = ("choice", "uniform", "loguniform", "integer", "branches")


def _paper_space() -> dict[str, Dimension]:
    return {
        "model.kind": Dimension(choice=["small", "medium", "large"]),
        "lr": Dimension(uniform=(0.001, 0.1)),
        "epochs": Dimension(integer=(5, 25)),
    }


class SearchParams(_Section):
    """The hyperparameter search: budget, parallelism, TPE settings and the space.

    Space keys are dotted paths into the ``train`` section (``model.kind``, ``lr``, ``epochs``,
    ``batch_size``, ``weight_decay``…).
    """

    max_evals: Int = Field(8, ge=1)
    parallelism: Int = Field(2, ge=1)
    batch_size: Int = Field(1, ge=1)  # trials per task: TPE suggests them at once (README)
    vectorise: Bool = True  # a batch's same-architecture trials train as one population (trials.py)
    seed: Int | None = None  # None: each new run draws one (recorded in its manifest)
    n_startup: Int = Field(5, ge=1)
    top_k: Int = Field(3, ge=1)
    cluster: str = "local"
    space: dict[str, Dimension] = Field(default_factory=_paper_space)


class DriftThresholds(_Section):
    """When a monitoring check alerts (docs/monitoring.md explains each statistic)."""

    psi: Float = Field(0.25, gt=0)  # categorical features: population stability index
    ks: Float = Field(0.2, gt=0, le=1)  # CDR3 lengths and scores: Kolmogorov–Smirnov statistic
    p_value: Float = Field(0.01, gt=0, le=1)  # a PSI or KS alert must also be significant
    unseen_rate: Float = Field(0.05, ge=0, le=1)  # rows with a gene, MHC, epitope, residue or length unseen
    positive_rate_delta: Float = Field(0.1, gt=0, le=1)  # |recent − test-split predicted-positive rate|
    metric_drop: Float = Field(0.1, gt=0)  # test metric − metric on newly labelled data
    metrics: tuple[WatchedMetric, ...] = ("average_precision", "mean_epitope_auc")  # watched for a drop
    invalid_rate: Float = Field(0.1, ge=0, le=1)
    latency_p95_ms: Float = Field(2000.0, gt=0)


class EmailParams(_Section):
    """An SMTP relay for alert emails; credentials come from the environment variables named here."""

    host: str
    port: Int = 25
    sender: str
    to: list[str] = Field(min_length=1)
    starttls: Bool = False
    username_env: str = "TCR_SMTP_USER"
    password_env: str = "TCR_SMTP_PASSWORD"
    timeout_s: Float = Field(10.0, gt=0)


class AlertParams(_Section):
    """Alert channels: a log line always, plus a webhook and/or an email when configured."""

    webhook: str | None = None  # http(s) URL; $TCR_ALERT_WEBHOOK when null (keeps tokens out of git)
    webhook_timeout_s: Float = Field(5.0, gt=0)
    email: EmailParams | None = None
    notify: Literal["always", "new"] = "always"  # new: only checks that crossed in this report


class MonitorParams(_Section):
    """Monitoring of the model in use: which queries, how many are enough, thresholds, alerts."""

    window: Int = Field(1000, ge=1)  # the last N logged rows…
    since_hours: Float | None = Field(None, gt=0)  # …of the last H hours (null: no time limit)
    min_queries: Int = Field(50, ge=1)  # fewer rows: drift is not assessed (no alert)
    thresholds: DriftThresholds = DriftThresholds()
    alerts: AlertParams = AlertParams()


class Params(_Section):
    """The whole of ``params.yaml``."""

    data: DataParams = DataParams()
    prepare: PrepareParams = PrepareParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    search: SearchParams = SearchParams()
    monitor: MonitorParams = MonitorParams()


def apply_hyperparams(train: TrainParams, hyperparams: dict[str, Any]) -> TrainParams:
    """``train`` with dotted keys (``model.kind``, ``lr`` …) replaced by searched values.

    An integer field takes a sampled number as an int (hyperopt's ``uniformint`` gives floats); a
    bool is no number there.
    """
    data = train.model_dump()
    for key, value in hyperparams.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise InputError(f"search.space: {key!r} is not a key of the train section")
        number = isinstance(value, int | float) and not isinstance(value, bool)
        node[leaf] = int(value) if number and type(node[leaf]) is int else value
    return TrainParams.model_validate(data)


def _space_values(space: dict[str, Dimension], prefix: str = "") -> list[tuple[str, str, Any]]:
    """Each value a search space can give: (where in params.yaml, train key, value)."""
    values: list[tuple[str, str, Any]] = []
    for key, dim in space.items():
        where = f"{prefix}{key}"
        given = [*(dim.choice or ()), *(dim.uniform or ()), *(dim.loguniform or ()), *(dim.integer or ())]
        values += [(where, key, v) for v in given]
        for branch, sub in (dim.branches or {}).items():
            values.append((where, key, branch))
            values += _space_values(sub, f"{where}.branches.{branch}.")
    return values


def _check_space(params: Params, path: Path | str) -> None:
    """Every value of ``search.space`` must be one the train section takes (else the trials fail)."""
    for where, key, value in _space_values(params.search.space):
        try:
            apply_hyperparams(params.train, {key: value})
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            expected = _EXPECTED.get(first["type"], first["msg"])
            raise InputError(
                f"{path}: search.space.{where}: {json.dumps(value, default=str)} is not a value of "
                f"train.{key} ({'expected ' + expected if first['type'] in _EXPECTED else expected})"
            ) from None


PARAMS_FILE = "params.yaml"  # the configuration file a command or flow reads when none is named


def resolve_params(
    path: Path | str | None = PARAMS_FILE, overrides: dict[str, Any] | None = None, *, required: bool = False
) -> Params:
    """The configuration in force, the one place params.yaml is resolved (CLI, flows, benchmarks).

    ``path``: the params file; a missing one means the defaults, unless ``required`` (a file the
    user named on the command line: then it is an :class:`InputError`). None or "": the defaults.
    ``overrides`` (dotted keys; None values are unset) go on top.
    """
    if not path or (not required and not Path(path).exists()):
        path = None
    return load_params(path, overrides)


def load_params(path: Path | str | None = None, overrides: dict[str, Any] | None = None) -> Params:
    """Read ``params.yaml`` (defaults when ``path`` is None) and apply dotted-key overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise InputError(f"{path}: no such params file") from None
        except yaml.YAMLError as exc:
            raise InputError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
        if not isinstance(raw, dict):
            raise InputError(f"{path}: expected a mapping of sections")
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        expected = _EXPECTED.get(first["type"])
        if expected is None:
            raise InputError(f"{path or 'params'}: {where}: {first['msg']}") from None
        got = json.dumps(first["input"], default=str)
        raise InputError(f"{path or 'params'}: {where}: expected {expected}, got {got}") from None
    _check_space(params, path or "params")
    return params


# what a wrongly typed value should have been, by pydantic error type (load_params)
_EXPECTED = {
    "int_type": "an integer",
    "bool_type": "true or false",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
}
