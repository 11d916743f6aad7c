"""Re-exported names imported on first use (PEP 562).

``import upx_core`` (and with it the ``upx`` command's first line) and ``import
upx_core.method`` load no torch until a name that needs it is used: a Ctrl-C while torch loads
then reaches ``cli.main``, which ends it with one line instead of a traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str]
                 ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, which re-exports each name of
    ``exports`` from the module (relative to ``package``) that it maps to."""

    def __getattr__(name: str) -> object:
        if name in exports:
            value = getattr(importlib.import_module(f".{exports[name]}", package), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
