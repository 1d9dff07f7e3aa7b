"""The version check every server shim makes before it touches an upstream library's internals.

A shim (config/daphne_*.py, config/uvicorn_frames.py, the consumer's frame sender) states the
upstream versions it was written for. On any other version it logs one warning and changes
nothing, so the server's own path stays in place whole: never half a patch over code it was not
read against.
"""

import importlib.metadata
import logging
from collections.abc import Mapping

logger = logging.getLogger(__name__)

_verdicts: dict[str, bool] = {}


def upstream_version(package: str) -> str | None:
    """The installed version of `package` (a distribution name), None when it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions_match(shim: str, written_for: Mapping[str, str], *, without: str) -> bool:
    """Whether every package of `written_for` is installed at the version the shim was written for;
    if not, logs one warning naming each package, the version found and the one expected, and what
    the server does `without` the shim."""
    found = {package: upstream_version(package) for package in written_for}
    wrong = [f"{package} {found[package] or 'not installed'} (written for {expected})"
             for package, expected in written_for.items() if found[package] != expected]
    if wrong:
        logger.warning("%s is off: found %s; the server's own path is used instead (%s)",
                       shim, ", ".join(wrong), without)
    return not wrong


def versions_match_once(shim: str, written_for: Mapping[str, str], *, without: str) -> bool:
    """`versions_match`, checked (and warned about) once per process for a shim used per call."""
    if shim not in _verdicts:
        _verdicts[shim] = versions_match(shim, written_for, without=without)
    return _verdicts[shim]
