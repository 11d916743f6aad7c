"""What a reader's browser downloads for pages of the built book: the HTML and every file it
loads (scripts, styles, fonts, images), in bytes, as Chromium fetched them from a local server.

Usage (after ``make book``; Debian's chromium, as tests/test_book_browser.py uses it)::

    .venv/bin/python benchmarks/page_weight.py notebooks/08_explore [--html _build/html]

Prints one line per page, its HTML and the rest by kind; ``--files`` lists every file.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import threading
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def kind(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix == ".html":
        return "html"
    if suffix == ".js":
        return "script"
    if suffix in (".woff", ".woff2", ".ttf", ".otf"):
        return "font"
    if suffix in (".png", ".jpg", ".jpeg", ".webp", ".svg", ".gif"):
        return "image"
    return "style" if suffix == ".css" else "other"


def weigh(pages: list[str], html: Path, list_files: bool = False) -> dict[str, Counter]:
    from playwright.sync_api import sync_playwright

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format, *args):  # noqa: A002
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass  # the browser closing a connection early (a missing favicon) is not news

    handler = functools.partial(Quiet, directory=str(html))
    server = Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    out = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for page_name in pages:
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = context.new_page()
                sizes: dict[str, int] = {}

                def seen(response, sizes=sizes):
                    url = urlparse(response.url)
                    if url.scheme in ("http", "https") and response.ok:
                        # the local file, not the response: the server sends it uncompressed
                        path = html / url.path.lstrip("/")
                        sizes[url.path] = path.stat().st_size if path.is_file() else 0

                page.on("response", seen)
                page.goto(f"{base}/{page_name}.html", wait_until="networkidle")
                page.wait_for_timeout(2000)  # widgets and MathJax fetch after the load event
                page.wait_for_load_state("networkidle")
                weights = Counter()
                for path, size in sizes.items():
                    weights[kind(path)] += size
                    if list_files:
                        print(f"  {size:>10,d}  {path}")
                out[page_name] = weights
                context.close()
            browser.close()
    finally:
        server.shutdown()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="+", help="pages as in _toc.yml, e.g. notebooks/08_explore")
    parser.add_argument("--html", default="_build/html", type=Path)
    parser.add_argument("--files", action="store_true", help="list every file loaded")
    args = parser.parse_args(argv)
    for name, w in weigh(args.pages, args.html, args.files).items():
        parts = ", ".join(f"{k} {v / 1e6:.2f}" for k, v in sorted(w.items()) if k != "html")
        print(f"{name}: {sum(w.values()) / 1e6:.2f} MB in all; HTML {w['html'] / 1e6:.2f} MB, "
              f"{parts} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
