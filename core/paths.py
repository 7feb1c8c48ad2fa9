"""Per-user folders: a cache for re-downloadable files and a data folder for the user's own.

Nothing here creates a folder; callers ``mkdir`` when they first write. Environment
overrides come first so tests, portable installs and GIMP's sandboxed plug-in process can
point elsewhere.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP = "ganpaint"


def _env_dir(name: str, relative_ok: bool = False) -> Path | None:
    """A folder named by an environment variable, or None when unset.

    Our own overrides may be relative (taken from the current folder); relative XDG values
    are invalid per the XDG spec and ignored.
    """
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    return path.resolve() if relative_ok else None


def cache_dir() -> Path:
    """Root of the user cache: ``$GANPAINT_CACHE``, else the platform's cache folder.

    Linux: ``$XDG_CACHE_HOME/ganpaint`` (default ``~/.cache/ganpaint``); Windows:
    ``%LOCALAPPDATA%\\ganpaint\\Cache``; macOS: ``~/Library/Caches/ganpaint``.
    """
    override = _env_dir("GANPAINT_CACHE", relative_ok=True)
    if override is not None:
        return override
    if sys.platform == "win32":
        base = _env_dir("LOCALAPPDATA") or Path.home() / "AppData" / "Local"
        return base / APP / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / APP
    return (_env_dir("XDG_CACHE_HOME") or Path.home() / ".cache") / APP


def models_dir() -> Path:
    """Where downloaded model weights live: ``cache_dir()/models``."""
    return cache_dir() / "models"


def data_dir() -> Path:
    """Root of the user's own data: ``$GANPAINT_DATA``, else the platform's data folder.

    Linux: ``$XDG_DATA_HOME/ganpaint`` (default ``~/.local/share/ganpaint``); Windows:
    ``%LOCALAPPDATA%\\ganpaint``; macOS: ``~/Library/Application Support/ganpaint``.
    """
    override = _env_dir("GANPAINT_DATA", relative_ok=True)
    if override is not None:
        return override
    if sys.platform == "win32":
        return (_env_dir("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / APP
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP
    return (_env_dir("XDG_DATA_HOME") or Path.home() / ".local" / "share") / APP
