"""What goes over the wire: compressed responses and long-lived caching of the script bundles.

Over an SSH tunnel a cold first load is mostly the JavaScript bundles (plotly.js alone is 4.8 MB
uncompressed). Dash serves them under fingerprinted URLs (the version and mtime are in the name),
so they never change under a URL: they are compressed once with brotli at its best setting and
kept in memory, and sent with ``Cache-Control: public, max-age=31536000, immutable`` so a browser
never asks again. Every other response (the index, the layout, callback results) is compressed
on the fly by flask-compress (brotli at a fast setting, gzip for clients without brotli).

plotly.js is most of it: 4.8 MB, 1.1 MB at brotli's best. The figures use only cartesian traces
(scatter, bar, heatmap), so the dashboard serves plotly.js's official *cartesian* bundle
(``vendor/``, the npm package ``plotly.js-cartesian-dist-min``, MIT) in place of the full one:
1.5 MB, 0.41 MB compressed. It is used only when its version is the one the installed
``plotly`` package ships (``plotly.offline.get_plotlyjs_version``); otherwise, or without the
file, the full bundle is served as before.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import brotli
from flask import Flask, Response, request
from flask_compress import Compress
from plotly.offline import get_plotlyjs_version

BUNDLE_PREFIX = "/_dash-component-suites/"
PLOTLY_PATH = re.compile(r"^/_dash-component-suites/plotly/package_data/plotly(\.v[^/]*)?\.min\.js$")
VENDOR = Path(__file__).parent / "vendor"
IMMUTABLE = "public, max-age=31536000, immutable"
BEST_QUALITY = 11  # ≈ 17 s for plotly.js on one core: done once, in the background
QUICK_QUALITY = 9  # ≈ 0.4 s for plotly.js: what a request waits for when the best is not ready
MIMETYPES = [
    "text/html",
    "text/css",
    "text/plain",
    "application/json",
    "application/javascript",
    "text/javascript",
]


class BundleCache:
    """Brotli-compressed bundles by URL path, each compressed once: quickly on its first request
    and, with ``best``, again at brotli's best setting in a background thread (brotli releases
    the GIL: the server keeps answering), which then replaces the quick one."""

    def __init__(self, best: bool = False) -> None:
        self.best = best
        self._cache: dict[str, tuple[int, bytes]] = {}
        self._pending: list[threading.Thread] = []
        self._lock = threading.Lock()

    def get(self, path: str, data: bytes) -> bytes:
        with self._lock:
            hit = self._cache.get(path)
        if hit is not None:
            return hit[1]
        compressed = brotli.compress(data, quality=QUICK_QUALITY)
        with self._lock:
            if path in self._cache:
                return self._cache[path][1]
            self._cache[path] = (QUICK_QUALITY, compressed)
            if self.best:
                thread = threading.Thread(target=self._compress_best, args=(path, data), daemon=True)
                self._pending.append(thread)
                thread.start()
        return compressed

    def _compress_best(self, path: str, data: bytes) -> None:
        compressed = brotli.compress(data, quality=BEST_QUALITY)
        with self._lock:
            self._cache[path] = (BEST_QUALITY, compressed)

    def wait(self) -> None:
        """Wait until every best compression started so far has finished (the benchmark)."""
        while True:
            with self._lock:
                pending, self._pending = self._pending, []
            if not pending:
                return
            for thread in pending:
                thread.join()

    def sizes(self) -> dict[str, tuple[int, int]]:
        """Path -> (quality, compressed bytes), for the benchmark."""
        with self._lock:
            return {p: (q, len(b)) for p, (q, b) in self._cache.items()}


def cartesian_plotly() -> Path | None:
    """The vendored cartesian plotly.js bundle, when it matches the installed plotly's version."""
    path = VENDOR / f"plotly-cartesian-{get_plotlyjs_version()}.min.js"
    return path if path.is_file() else None


def serve_cartesian_plotly(server: Flask) -> Path | None:
    """Answer requests for plotly.js with the cartesian bundle (None: kept the full one)."""
    path = cartesian_plotly()
    if path is None:
        return None
    data = path.read_bytes()

    @server.before_request
    def _plotly() -> Response | None:
        if request.method != "GET" or not PLOTLY_PATH.match(request.path):
            return None
        return Response(data, mimetype="application/javascript")

    return path


def enable_compression(server: Flask, best: bool = False) -> BundleCache:
    """Compress every response; bundles once (``best``: then again at brotli's best setting, in
    the background) and marked immutable."""
    server.config.update(
        COMPRESS_ALGORITHM=["br", "gzip"],
        COMPRESS_BR_LEVEL=4,
        COMPRESS_LEVEL=6,
        COMPRESS_MIN_SIZE=500,
        COMPRESS_MIMETYPES=MIMETYPES,
        COMPRESS_STREAMS=False,
    )
    Compress(server)
    bundles = BundleCache(best)

    # Registered after flask-compress's hook, so it runs first (Flask runs them in reverse): a
    # bundle it has encoded is left alone by flask-compress (Content-Encoding is set).
    @server.after_request
    def _bundles(response: Response) -> Response:
        if not request.path.startswith(BUNDLE_PREFIX) or response.status_code != 200:
            return response
        response.headers["Cache-Control"] = IMMUTABLE
        vary = response.headers.get("Vary")
        response.headers["Vary"] = f"{vary}, Accept-Encoding" if vary else "Accept-Encoding"
        if "br" not in request.headers.get("Accept-Encoding", "") or response.mimetype not in MIMETYPES:
            return response  # flask-compress gzips it
        response.direct_passthrough = False
        response.set_data(bundles.get(request.path, response.get_data()))
        response.headers["Content-Encoding"] = "br"
        return response

    return bundles
