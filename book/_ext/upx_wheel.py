"""The upx wheel in every page's download menu (issue 27 section 3).

A downloaded chapter imports ``upx_core``, which no public package index holds yet, so the book
carries the package itself: ``make book`` builds the wheel into ``_build/wheel/`` (a folder of
``html_extra_path``, copied to the root of the HTML), and this extension adds it to the menu of
the download button beside the notebook and its source. A build without the wheel warns, which
fails ``make book`` (``-W``), rather than offering a link that leads nowhere.
"""

from __future__ import annotations

from pathlib import Path

from sphinx.util import logging

LOGGER = logging.getLogger(__name__)
WHEEL_DIR = "_build/wheel"


def _wheel(app) -> str | None:
    wheels = sorted((Path(app.srcdir) / WHEEL_DIR).glob("upx-*.whl"))
    if len(wheels) != 1:
        LOGGER.warning("expected one upx wheel in %s, found %d: run `make book`, which builds it",
                       WHEEL_DIR, len(wheels))
        return None
    return wheels[0].name


def add_wheel_button(app, pagename, templatename, context, doctree) -> None:
    name = app.env.upx_wheel
    if not name:
        return
    for group in context.get("header_buttons", []):
        if group.get("label") == "download-buttons":
            group["buttons"].append({
                "type": "link",
                "url": context["pathto"](name, 1),
                "text": "upx wheel",
                "tooltip": f"Download {name}, the package the notebooks import "
                           "(pip install it: the book's introduction has the line)",
                "icon": "fas fa-box",
                "label": "download-wheel-button",
            })


def find_wheel(app) -> None:
    app.env.upx_wheel = _wheel(app)


def setup(app):
    app.connect("builder-inited", find_wheel)
    # after sphinx-book-theme's add_header_buttons (priority 501) has made the download group
    app.connect("html-page-context", add_wheel_button, priority=502)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
