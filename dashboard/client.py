"""Call a dashboard's callbacks over HTTP as the browser does, without a browser.

Used by the tests and ``bench/dashboard_load.py``: a page load is the router callback followed by the
page's callbacks, each one POST to ``/_dash-update-component`` through Flask's test client, so
the time measured is the server's whole work for the request (routing, the callback, JSON).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dash
from flask.testing import FlaskClient

CHROMIUM_ENV = "TCR_CHROMIUM"  # the Chromium binary of the browser tests and the load benchmark
DEFAULT_CHROMIUM = "/usr/bin/chromium"
# Chromium as root needs --no-sandbox; the rest keep it from calling out of a closed network.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-first-run",
    "--window-size=1400,1000",
)


@dataclass(frozen=True)
class Dependency:
    """One callback as the renderer knows it."""

    output: str
    outputs: list[dict[str, str]]
    inputs: list[dict[str, str]]
    state: list[dict[str, str]]
    initial: bool  # fired when its inputs appear (not prevent_initial_call, not clientside)
    server: bool  # runs on the server (not clientside)

    def keys(self, specs: list[dict[str, str]]) -> set[str]:
        return {f"{s['id']}.{s['property']}" for s in specs}


def _outputs(output: str) -> list[dict[str, str]]:
    parts = output[2:-2].split("...") if output.startswith("..") else [output]
    found = []
    for part in parts:
        ident, _, prop = part.rpartition(".")
        found.append({"id": ident, "property": prop.split("@")[0]})
    return found


class DashClient:
    """A Flask test client that knows the app's callbacks by their outputs."""

    def __init__(self, app: dash.Dash, headers: dict[str, str] | None = None) -> None:
        self.app = app
        self.client: FlaskClient = app.server.test_client()
        self.headers = headers or {}
        self.dependencies: list[Dependency] = []
        self.shell: dict[str, Any] = {}

    def load(self) -> None:
        """Fetch the index, the layout and the callback list, as a browser's first visit does."""
        response = self.client.get("/", headers=self.headers)
        assert response.status_code == 200, response.status_code
        response = self.client.get("/_dash-layout", headers=self.headers)
        assert response.status_code == 200, response.status_code
        self.shell = component_values(response.json)
        response = self.client.get("/_dash-dependencies", headers=self.headers)
        assert response.status_code == 200, response.status_code
        self.dependencies = [
            Dependency(
                d["output"],
                _outputs(d["output"]),
                d["inputs"],
                d["state"],
                not d.get("prevent_initial_call") and not d.get("clientside_function"),
                not d.get("clientside_function"),
            )
            for d in response.json or []
        ]

    def find(self, output: str) -> Dependency:
        """The callback whose outputs include ``output`` (``"id.property"``)."""
        ident, _, prop = output.rpartition(".")
        for dep in self.dependencies:
            if any(o["id"] == ident and o["property"] == prop for o in dep.outputs):
                return dep
        raise KeyError(output)

    def call(self, output: str, values: dict[str, Any], changed: list[str] | None = None) -> dict[str, Any]:
        """Run the callback producing ``output`` with input and state ``values`` (``"id.prop"`` keys).

        Returns ``{"id.prop": value}`` for the outputs it updated (empty when it prevented the update).
        """
        dep = self.find(output)

        def items(specs: list[dict[str, str]]) -> list[dict[str, Any]]:
            return [{**s, "value": values.get(f"{s['id']}.{s['property']}")} for s in specs]

        payload = {
            "output": dep.output,
            "outputs": dep.outputs if len(dep.outputs) > 1 or dep.output.startswith("..") else dep.outputs[0],
            "inputs": items(dep.inputs),
            "changedPropIds": changed
            if changed is not None
            else [f"{i['id']}.{i['property']}" for i in dep.inputs],
            "state": items(dep.state),
        }
        response = self.client.post("/_dash-update-component", json=payload, headers=self.headers)
        if response.status_code == 204:
            return {}
        assert response.status_code == 200, (
            output,
            response.status_code,
            response.get_data(as_text=True)[:2000],
        )
        body = (response.json or {})["response"]
        return {f"{ident}.{prop}": value for ident, props in body.items() for prop, value in props.items()}

    def page(self, pathname: str) -> dict[str, Any]:
        """The router callback: a page's layout."""
        return self.call(
            "_pages_content.children",
            {"_pages_location.pathname": pathname, "_pages_location.search": ""},
        )

    def open_page(self, pathname: str) -> dict[str, Any]:
        """Everything a browser's visit to ``pathname`` asks of the server after the shell.

        The router callback, then every callback of the page that fires on load, each after the
        callbacks that feed its inputs (the renderer's order). Returns every property's value.
        """
        layout = self.page(pathname)["_pages_content.children"]
        values = {**self.shell, **component_values(layout)}
        known = {key.rpartition(".")[0] for key in values}
        pending = [
            d
            for d in self.dependencies
            if d.initial
            and not d.output.startswith("_pages")
            and all(o["id"] in known for o in d.outputs)
            and all(i["id"] in known for i in d.inputs)
        ]
        while pending:
            produced = {f"{o['id']}.{o['property']}" for d in pending for o in d.outputs}
            ready = [
                d
                for d in pending
                if not any(
                    f"{i['id']}.{i['property']}"
                    in produced - {f"{o['id']}.{o['property']}" for o in d.outputs}
                    for i in d.inputs
                )
            ]
            if not ready:
                raise RuntimeError(f"callbacks wait on each other: {[d.output for d in pending]}")
            for dep in ready:
                first = dep.outputs[0]
                values.update(self.call(f"{first['id']}.{first['property']}", values))
            pending = [d for d in pending if d not in ready]
        return values

    def propagate(self, values: dict[str, Any], changed: set[str]) -> dict[str, Any]:
        """Fire what a change of ``changed`` properties triggers, and what their outputs trigger,
        each callback once, in the renderer's order (a callback waits for those feeding it).

        ``values`` (every property of the open page) is updated and returned.
        """
        known = {key.rpartition(".")[0] for key in values}
        changed = set(changed)
        fired: set[str] = set()
        while True:
            triggered = [
                d
                for d in self.dependencies
                if d.server
                and d.output not in fired
                and not d.output.startswith("_pages")
                and d.keys(d.inputs) & changed
                and all(o["id"] in known for o in d.outputs)
            ]
            if not triggered:
                return values
            produced = set().union(*(d.keys(d.outputs) for d in triggered))
            ready = [
                d for d in triggered if not d.keys(d.inputs) & (produced - d.keys(d.outputs))
            ] or triggered[:1]
            for dep in ready:
                first = dep.outputs[0]
                result = self.call(
                    f"{first['id']}.{first['property']}",
                    values,
                    changed=sorted(dep.keys(dep.inputs) & changed),
                )
                fired.add(dep.output)
                values.update(result)
                changed |= set(result)


def component_values(tree: Any) -> dict[str, Any]:
    """``{"id.prop": value}`` for every component with an id in a serialised layout."""
    found: dict[str, Any] = {}

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for child in node:
                walk(child)
        elif isinstance(node, dict) and "props" in node and "type" in node:
            props = node["props"]
            if isinstance(props.get("id"), str):
                for prop, value in props.items():
                    if prop != "id":
                        found[f"{props['id']}.{prop}"] = value
                found.setdefault(f"{props['id']}.id", props["id"])
            for value in props.values():
                walk(value)

    walk(tree)
    return found


def chromium_binary() -> str:
    """The Chromium the browser tests and ``bench/dashboard_load.py`` drive (``$TCR_CHROMIUM``)."""
    return os.environ.get(CHROMIUM_ENV, DEFAULT_CHROMIUM)


def chromium_options(profile: Path) -> Any:
    """Selenium options for a fresh headless Chromium with its profile in ``profile``.

    Also sets selenium's HTTP timeout: selenium 3.141 (what dash[testing] allows with urllib3 2)
    passes urllib3 an ``object()`` as its default timeout, which urllib3 2 rejects.
    """
    from selenium import webdriver
    from selenium.webdriver.remote.remote_connection import RemoteConnection

    RemoteConnection.set_timeout(120)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium_binary()
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return options
