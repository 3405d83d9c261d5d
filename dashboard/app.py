"""The dashboard's shell and factory: ``create_app(store)`` builds a multi-page Dash app.

The shell holds the navigation, a ``dcc.Interval`` and ``store-version``: on every tick the
store reader re-reads only what changed, and ``store-version`` changes (so the pages redraw) only
when something did. The pages live in :mod:`dashboard.pages`, one module each.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dash
from dash import Input, Output, State, dcc, html, no_update

from dashboard import figures
from dashboard.auth import enable_basic_auth, load_credentials
from dashboard.data import Dashboard
from dashboard.pages import PAGES
from dashboard.style import CSS
from dashboard.transfer import enable_compression, serve_cartesian_plotly

INDEX = """<!DOCTYPE html>
<html>
    <head>
        {%metas%}
        <title>{%title%}</title>
        {%favicon%}
        {%css%}
        <style>STYLE</style>
    </head>
    <body>
        {%app_entry%}
        <footer>
            {%config%}
            {%scripts%}
            {%renderer%}
        </footer>
    </body>
</html>
""".replace("STYLE", CSS)
UNUSED_BUNDLES = ("/dash_table/",)  # Dash links the DataTable's bundle on every page; no page uses it
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8050
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def shell(ctx: Dashboard) -> html.Div:
    """The frame around every page: title, navigation, refresh timer, the page itself.

    It reads nothing (Dash also calls it when the layout is set, to validate callbacks):
    ``store-version`` is filled by its callback as the page loads.
    """
    links = [
        dcc.Link(
            page["name"], href=page["relative_path"], className="nav-link", id=f"nav-{page['name'].lower()}"
        )
        for page in dash.page_registry.values()
        if page["module"].startswith("dashboard.pages.")
    ]
    return html.Div(
        [
            html.Header(
                [
                    html.Div([html.Span("tcr-pipeline", className="brand"), html.Span(str(ctx.store.root))]),
                    html.Nav(links),
                ],
                className="topbar",
            ),
            dcc.Interval(id="refresh-interval", interval=ctx.refresh_ms, n_intervals=0),
            dcc.Store(id="store-version"),
            html.Main(dash.page_container, className="page"),
        ]
    )


class _App(dash.Dash):
    """Dash, less the script tags of component libraries no page uses."""

    def interpolate_index(self, **kwargs: Any) -> str:  # type: ignore[override]  # Dash's documented way
        scripts = kwargs.get("scripts", "")
        kwargs["scripts"] = "\n".join(
            line for line in scripts.split("\n") if not any(unused in line for unused in UNUSED_BUNDLES)
        )
        return super().interpolate_index(**kwargs)


def _register_shell_callbacks(app: dash.Dash, ctx: Dashboard) -> None:
    @app.callback(
        Output("store-version", "data"),
        Input("refresh-interval", "n_intervals"),
        State("store-version", "data"),
    )
    def refresh_version(_: int, current: int | None) -> Any:
        version = ctx.reader.refresh()
        return no_update if version == current else version


def create_app(
    store_root: Path | str,
    auth: Mapping[str, str] | None = None,
    refresh_ms: int = 5000,
    max_rows: int = 1000,
    max_bytes: int = 256 * 1024,
    torch_threads: int | None = 1,
    best_compression: bool = False,
) -> dash.Dash:
    """A dashboard over ``store_root``; nothing is read until a page is requested.

    ``auth`` maps user names to password hashes (:func:`dashboard.auth.hash_password`); with it
    every request needs HTTP basic auth. ``refresh_ms`` is how often pages look for changes.
    ``torch_threads`` sets PyTorch's intra-op threads for this process (None: leave it): the
    dashboard scores at most ``max_rows`` rows at a time, which one thread does fastest — on a
    2-core machine a 10-row query takes 22 ms on one thread and 180 ms on two, which spin
    against the web server's threads. Responses are compressed (:mod:`dashboard.transfer`);
    ``best_compression`` also recompresses each script bundle at brotli's best setting in the
    background after its first request (what a long-running server wants; tests skip it).
    """
    if torch_threads is not None:
        import torch

        torch.set_num_threads(torch_threads)
    ctx = Dashboard.open(store_root, refresh_ms=refresh_ms, max_rows=max_rows, max_bytes=max_bytes)
    app = _App(
        __name__,
        use_pages=True,
        pages_folder="",
        include_assets_files=False,
        title="tcr-pipeline",
        update_title="",
        suppress_callback_exceptions=False,
    )
    for order, page in enumerate(PAGES):
        dash.register_page(
            page.__name__,
            path=page.PATH,
            name=page.NAME,
            title=f"{page.NAME} · tcr-pipeline",
            order=order,
            layout=page.layout,
        )
        page.register_callbacks(app, ctx)
    app.index_string = INDEX
    app.layout = lambda: shell(ctx)
    _register_shell_callbacks(app, ctx)
    # Requests far over the Predict page's limit are refused before they are parsed; anything
    # up to this gets the page's own message.
    app.server.config["MAX_CONTENT_LENGTH"] = max(32 << 20, 4 * max_bytes)
    app.server.config["tcr_dashboard"] = ctx
    if auth:  # first: its check runs before any other hook answers
        enable_basic_auth(app.server, auth)
    app.server.config["tcr_bundles"] = enable_compression(app.server, best=best_compression)
    app.server.config["tcr_plotly"] = serve_cartesian_plotly(app.server)
    return app


def run(
    store: Path | str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    auth_file: Path | str | None = None,
    debug: bool = False,
) -> None:
    """Serve the dashboard (what ``tcr-pipeline dashboard`` calls).

    Credentials come from ``auth_file``, ``$TCR_DASHBOARD_AUTH_FILE`` or ``$TCR_DASHBOARD_USERS``
    (see :mod:`dashboard.auth`); without any, the dashboard has no login, so it should listen
    only on the loopback address (the default).
    """
    credentials = load_credentials(auth_file)
    if not credentials and host not in LOOPBACK:
        print(
            f"warning: serving {store} on {host}:{port} without a login; set TCR_DASHBOARD_AUTH_FILE "
            "(see dashboard/README.md)",
            file=sys.stderr,
        )
    app = create_app(store, auth=credentials, best_compression=True)
    threading.Thread(target=warm_up, args=(app.server.config["tcr_dashboard"],), daemon=True).start()
    app.run(host=host, port=port, debug=debug)


def warm_up(ctx: Dashboard) -> None:
    """Read the store and load the best model while the server starts, so the first visitor does
    not wait for it; also builds one of each figure (plotly imports its validators on first use)."""
    try:
        figures.warm_up()
        ctx.reader.refresh(force=True)
        entry = ctx.entry(None)
        if entry is not None:
            ctx.models.get(entry)
    except Exception as exc:  # a page will show the problem; the server must start regardless
        print(f"warning: warming up the dashboard failed: {exc}", file=sys.stderr)
