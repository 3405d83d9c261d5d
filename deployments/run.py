"""Run a deployment of prefect.yaml, wait for its flow run, and report how it ended.

Called through ``deployments/run.sh``, which sets up the environment (deployments/env.sh) and runs
this from the project root: by people on the login node, by ``.github/workflows/cluster-run.yml``
(over SSH) and by ``tests/test_deployments.py``. One command for all three, so the workflow cannot
drift from what the tests run.

While the run goes on, its state changes and its logs (subflows and trials included) are printed
to stderr. At the end a Markdown report goes to stdout, and is appended to ``--summary FILE`` or
to ``$GITHUB_STEP_SUMMARY``: the final state (with the error when the run did not complete), the
run in the result store, the current best model, and links to the Prefect UI and the dashboard.
The report is read from the store through ``tcr_pipeline.store``, as the worker's flow wrote it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun

EXIT_COMPLETED = 0
EXIT_NOT_COMPLETED = 1  # Failed, Crashed, Cancelled…
EXIT_USAGE = 2  # bad arguments, unknown deployment or parameter
EXIT_NO_API = 3  # no Prefect server to talk to
EXIT_TIMEOUT = 124  # still running after --timeout, as timeout(1)

DASHBOARD_ENV = "TCR_DASHBOARD_URL"  # e.g. http://login01:8050, may contain {run_id}
ERROR_CHARS = 4000  # of the error shown in the report
TRACEBACK_LINES = 12  # of the first error logged, shown in the report


class UsageError(Exception):
    """A mistake in the command line: reported in one line, exit status 2."""


def _say(message: str) -> None:
    print(f"[tcr-run] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Arguments and parameters
# ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="deployments/run.sh",
        description="Run a deployment, wait for the flow run, report its state, the best model and links.",
        epilog="Exit status: 0 Completed; 1 Failed, Crashed or Cancelled; 2 bad arguments; "
        "3 no Prefect server; 124 still running after --timeout (the run goes on).",
    )
    parser.add_argument("deployment", help="FLOW/DEPLOYMENT, e.g. tcr-pipeline/full or search/search-only")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a flow parameter; VALUE is read as JSON when it is (2, true, null, {...}), else as text",
    )
    parser.add_argument("--params", metavar="JSON", help="flow parameters as a JSON object (--param wins)")
    parser.add_argument(
        "--timeout", type=float, default=0, metavar="SECONDS", help="stop waiting after this long (0: never)"
    )
    parser.add_argument(
        "--summary",
        type=Path,
        default=os.environ.get("GITHUB_STEP_SUMMARY") or None,
        metavar="FILE",
        help="also append the report to FILE (default: $GITHUB_STEP_SUMMARY when set)",
    )
    parser.add_argument("--no-logs", action="store_true", help="print state changes only, not the run's logs")
    parser.add_argument("--poll", type=float, default=2.0, metavar="SECONDS", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.deployment.count("/") != 1 or not all(args.deployment.split("/")):
        parser.error(f"deployment must be FLOW/DEPLOYMENT, got {args.deployment!r}")
    return args


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_parameters(params_json: str | None, pairs: Sequence[str]) -> dict[str, tuple[Any, str]]:
    """``{name: (value, raw text)}`` from ``--params`` and ``--param KEY=VALUE`` (the latter win).

    As ``prefect deployment run`` does, a value is JSON when it parses as JSON, else text; the raw
    text is kept so that :func:`coerce_parameters` can fall back to it (``run_id=20261123``).
    """
    parameters: dict[str, tuple[Any, str]] = {}
    if params_json:
        try:
            loaded = json.loads(params_json)
        except ValueError as exc:
            raise UsageError(f"--params is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise UsageError("--params must be a JSON object, e.g. '{\"max_evals\": 16}'")
        parameters |= {str(key): (value, json.dumps(value)) for key, value in loaded.items()}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--param expects KEY=VALUE, got {pair!r}")
        parameters[key.strip()] = (_json_or_text(text), text)
    return parameters


_JSON_TYPES = {
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    list: "array",
    dict: "object",
    type(None): "null",
}


def _schema_types(schema: dict[str, Any]) -> set[str]:
    types: set[str] = set()
    kind = schema.get("type")
    types |= set(kind) if isinstance(kind, list) else {kind} if kind else set()
    for option in schema.get("anyOf", []) + schema.get("oneOf", []):
        types |= _schema_types(option)
    if "integer" in types:
        types.add("number")
    return types


def coerce_parameters(
    parameters: dict[str, tuple[Any, str]], schema: dict[str, Any], deployment: str
) -> dict[str, Any]:
    """Check names against the deployment's parameter schema; keep text where JSON is not wanted."""
    properties: dict[str, Any] = schema.get("properties", {})
    unknown = sorted(set(parameters) - set(properties))
    if unknown:
        raise UsageError(
            f"{deployment} has no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters: {', '.join(sorted(properties))}"
        )
    coerced: dict[str, Any] = {}
    for name, (value, text) in parameters.items():
        types = _schema_types(properties[name])
        wanted = not types or _JSON_TYPES.get(type(value)) in types
        coerced[name] = text if not wanted and "string" in types else value
    return coerced


# ---------------------------------------------------------------------------------------------
# Watching a flow run
# ---------------------------------------------------------------------------------------------


@dataclass
class Watch:
    """A flow run being followed: its subflows, the logs already printed, the errors seen."""

    root: UUID
    show_logs: bool
    family: set[UUID] = field(default_factory=set)
    flow_names: dict[UUID, str] = field(default_factory=dict)
    run_labels: dict[UUID, str] = field(default_factory=dict)
    seen_logs: set[UUID] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    last_log: datetime | None = None


async def _refresh_family(client: PrefectClient, watch: Watch) -> None:
    """Add the subflows (at any depth) of the root flow run: their logs belong to the run too."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    watch.family.add(watch.root)
    frontier = set(watch.family)
    while frontier:
        children = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=list(frontier))
            )
        )
        frontier = set()
        for child in children:
            if child.id not in watch.family:
                watch.family.add(child.id)
                frontier.add(child.id)
            if child.flow_id not in watch.flow_names:
                watch.flow_names[child.flow_id] = (await client.read_flow(child.flow_id)).name
            watch.run_labels[child.id] = watch.flow_names[child.flow_id]


async def _print_new_logs(client: PrefectClient, watch: Watch) -> int:
    """Print the logs of the run's family not printed yet, oldest first; return how many."""
    import logging

    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterTimestamp
    from prefect.client.schemas.sorting import LogSort

    since = watch.last_log - timedelta(seconds=30) if watch.last_log else None  # logs arrive late
    log_filter = LogFilter(
        flow_run_id=LogFilterFlowRunId(any_=sorted(watch.family)),
        timestamp=LogFilterTimestamp(after_=since) if since else None,
    )
    new = []
    offset, page = 0, 200
    while True:
        logs = await client.read_logs(
            log_filter=log_filter, limit=page, offset=offset, sort=LogSort.TIMESTAMP_ASC
        )
        new += [log for log in logs if log.id not in watch.seen_logs]
        if len(logs) < page:
            break
        offset += page
    for log in new:
        watch.seen_logs.add(log.id)
        watch.last_log = max(watch.last_log or log.timestamp, log.timestamp)
        if log.level >= logging.ERROR:
            watch.errors.append(log.message)
        if watch.show_logs:
            label = watch.run_labels.get(log.flow_run_id, "flow") if log.flow_run_id else "flow"
            level = logging.getLevelName(log.level)
            stamp = log.timestamp.astimezone()  # the API's are UTC; state changes print local time
            print(f"{stamp:%H:%M:%S} {level:<7} {label} | {log.message}", file=sys.stderr, flush=True)
    return len(new)


async def follow(
    client: PrefectClient, flow_run: FlowRun, show_logs: bool, timeout: float, poll: float
) -> tuple[FlowRun, Watch, bool]:
    """Poll the flow run until its state is final (or ``timeout`` passes); return it, what was seen,
    and whether it timed out."""
    watch = Watch(root=flow_run.id, show_logs=show_logs)
    watch.run_labels[flow_run.id] = (await client.read_flow(flow_run.flow_id)).name
    watch.flow_names[flow_run.flow_id] = watch.run_labels[flow_run.id]
    deadline = time.monotonic() + timeout if timeout > 0 else None
    last_state = None
    while True:
        flow_run = await client.read_flow_run(flow_run.id)
        state = flow_run.state
        if state is not None and (state.type, state.name) != last_state:
            last_state = (state.type, state.name)
            _say(f"{datetime.now():%H:%M:%S} flow run {flow_run.name}: {state.name}")
        await _refresh_family(client, watch)
        await _print_new_logs(client, watch)
        if state is not None and state.is_final():
            break
        if deadline is not None and time.monotonic() > deadline:
            return flow_run, watch, True
        await asyncio.sleep(poll)
    # The flow's last logs (its traceback) are shipped by the process as it exits, after the state.
    quiet_since = time.monotonic()
    give_up = quiet_since + 20
    while time.monotonic() < give_up and time.monotonic() - quiet_since < 4:
        await asyncio.sleep(1)
        await _refresh_family(client, watch)
        if await _print_new_logs(client, watch):
            quiet_since = time.monotonic()
    return flow_run, watch, False


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def public_url(url: str | None) -> str | None:
    """``url`` without a user name or password in it (never print credentials)."""
    if not url:
        return None
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def dashboard_url(run_id: str | None) -> str | None:
    """The lab dashboard from ``$TCR_DASHBOARD_URL``; ``{run_id}`` in it is filled in."""
    template = os.environ.get(DASHBOARD_ENV)
    if not template:
        return None
    return public_url(template.replace("{run_id}", run_id or ""))


def _code(text: object) -> str:
    """Inline Markdown code that neither a backtick nor a line break can break out of."""
    return "`" + " ".join(str(text).replace("`", "'").split()) + "`"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def store_lines(store_root: str | None, run_id: str | None, completed: bool) -> list[str]:
    """Report lines about the run and the current model, read from the result store."""
    if not run_id:
        return []
    from tcr_pipeline.store import Store, summarize_run

    store = Store.from_env(store_root)
    root = store.root.resolve()
    manifest = store.load_manifest(run_id)
    if manifest is None:
        why = (
            "does the worker use another `TCR_STORE`? Pass `--param store=DIR`"
            if completed
            else "the flow ended before the search began"
        )
        return [f"- store run: {_code(run_id)} is not in {_code(root)} ({why})"]
    summary = summarize_run(manifest, store.list_trials(run_id))
    best, finished = summary.best_trial, f"{summary.done}/{manifest.max_evals}"
    run_line = (
        f"- store run: {_code(run_id)} in {_code(root)}: {manifest.status}, {finished} "
        f"trials finished ({summary.ok} ok) on cluster profile {_code(manifest.cluster)}"
    )
    if best is not None:
        run_line += f"; best {manifest.objective} objective {_fmt(best.objective)} (trial {best.trial_id})"
    lines = [run_line]
    registry = store.load_registry()
    current = registry.current_entry
    if current is None:
        lines.append("- best model: none registered yet")
        return lines
    auc = current.test_metrics.get("mean_epitope_auc")
    lines.append(
        f"- best model: {_code(current.model_id)} ({current.objective_name} objective "
        f"{_fmt(current.objective)}, test mean epitope AUC {_fmt(auc)}) at {_code(root / current.path)}; "
        + ("promoted by this run" if current.run_id == run_id else "kept: this run did not beat it")
    )
    return lines


def error_text(message: str | None, error_logs: Sequence[str]) -> str:
    """The state's message, then the end of the first error logged (the innermost traceback)."""
    text = (message or "(no message)").strip()
    if error_logs:
        text += "\n\n" + "\n".join(error_logs[0].rstrip().splitlines()[-TRACEBACK_LINES:])
    if len(text) > ERROR_CHARS:
        text = text[:ERROR_CHARS] + "\n…"
    return text.replace("```", "'''")


def render_report(
    deployment: str,
    flow_run: FlowRun,
    parameters: dict[str, Any],
    watch: Watch,
    timed_out: bool,
    ui_url: str | None,
) -> str:
    """The Markdown report: state, links, parameters, the store's view, and the error if any."""
    state = flow_run.state
    completed = state is not None and state.is_completed()
    state_name = state.name if state else "unknown"
    mark = "✅" if completed else "⏳" if timed_out else "❌"
    run_id = parameters.get("run_id")
    given = {key: value for key, value in sorted(parameters.items()) if value is not None}
    lines = [
        f"### {mark} {deployment}: {f'still running ({state_name})' if timed_out else state_name}",
        "",
        f"- flow run: [{flow_run.name}]({ui_url})" if ui_url else f"- flow run: {_code(flow_run.name)}",
        f"- flow run id: {_code(flow_run.id)}",
        "- parameters: "
        + ", ".join(_code(f"{key}={json.dumps(value)}") for key, value in given.items())
        + " (the others: their defaults, deployments/README.md)",
    ]
    if flow_run.total_run_time:
        lines.append(f"- run time: {flow_run.total_run_time.total_seconds():.0f} s")
    try:
        lines += store_lines(parameters.get("store"), run_id, completed)
    except Exception as exc:  # the report must not hide the run's own outcome
        lines.append(f"- store: could not be read ({type(exc).__name__}: {exc})")
    dashboard = dashboard_url(run_id)
    lines.append(
        f"- dashboard: {dashboard}" if dashboard else f"- dashboard: set `{DASHBOARD_ENV}` to link it"
    )
    if timed_out:
        lines += ["", "The flow run goes on: follow it in the Prefect UI, or `prefect flow-run logs ID`."]
    elif not completed:
        lines += [
            "",
            "Error:",
            "",
            "```text",
            error_text(state.message if state else None, watch.errors),
            "```",
        ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, parameters: dict[str, tuple[Any, str]]) -> int:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
    from prefect.utilities.urls import url_for

    from tcr_pipeline.store import new_run_id

    async with get_client() as client:
        problem = await client.api_healthcheck()
        if problem is not None:
            _say(f"error: no Prefect server answers ({type(problem).__name__}: {problem})")
            return EXIT_NO_API
        try:
            deployment = await client.read_deployment_by_name(args.deployment)
        except ObjectNotFound:
            known = sorted(
                [
                    f"{(await client.read_flow(d.flow_id)).name}/{d.name}"
                    for d in await client.read_deployments()
                ]
            )
            _say(f"error: no deployment {args.deployment!r}; deployed: {', '.join(known) or 'none'} "
                 "(deploy with deployments/deploy.sh)")  # fmt: skip
            return EXIT_USAGE
        try:
            values = coerce_parameters(parameters, deployment.parameter_openapi_schema or {}, args.deployment)
        except UsageError as exc:
            _say(f"error: {exc}")
            return EXIT_USAGE
        properties = (deployment.parameter_openapi_schema or {}).get("properties", {})
        if "run_id" in properties and values.get("run_id") is None:
            values["run_id"] = new_run_id()  # named here, so the report can find the run in the store
        try:
            flow_run = await client.create_flow_run_from_deployment(
                deployment.id,
                parameters=values,
                name=str(values["run_id"]) if values.get("run_id") else None,
            )
        except PrefectHTTPStatusError as exc:  # e.g. a value the flow's signature does not accept
            try:
                detail = exc.response.json().get("detail", exc.response.text)
            except ValueError:
                detail = exc.response.text or str(exc)
            _say(f"error: the server refused the run: {detail}")
            return EXIT_USAGE
        ui_url = public_url(url_for("flow-run", obj_id=flow_run.id))
        _say(
            f"flow run {flow_run.name} ({flow_run.id}) of {args.deployment}"
            + (f": {ui_url}" if ui_url else "")
        )
        _say(f"parameters: {json.dumps(values, sort_keys=True)}")
        flow_run, watch, timed_out = await follow(client, flow_run, not args.no_logs, args.timeout, args.poll)

    merged = {**(deployment.parameters or {}), **values}
    report = render_report(args.deployment, flow_run, merged, watch, timed_out, ui_url)
    sys.stdout.write(report)
    sys.stdout.flush()
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        with args.summary.open("a") as summary:
            summary.write(report + "\n")
    state = flow_run.state
    if timed_out:
        _say(f"still {state.name if state else 'running'} after {args.timeout:.0f} s; the flow run goes on")
        return EXIT_TIMEOUT
    if state is None or not state.is_completed():
        _say(f"error: flow run {flow_run.name} ended {state.name if state else 'without a state'}: "
             f"{(state.message if state else None) or 'no message'}")  # fmt: skip
        return EXIT_NOT_COMPLETED
    _say(f"flow run {flow_run.name} Completed")
    return EXIT_COMPLETED


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        parameters = parse_parameters(args.params, args.param)
    except UsageError as exc:
        _say(f"error: {exc}")
        return EXIT_USAGE
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:  # else the client would start a temporary server
        _say("error: PREFECT_API_URL is not set: point it at the lab's Prefect server, "
             "e.g. http://login01:4200/api (deployments/README.md)")  # fmt: skip
        return EXIT_NO_API
    try:
        return asyncio.run(run(args, parameters))
    except KeyboardInterrupt:
        _say("interrupted: the flow run goes on (prefect flow-run cancel ID stops it)")
        return 130


if __name__ == "__main__":
    sys.exit(main())
