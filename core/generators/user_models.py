"""Models a user adds from their own files (``ganpaint models add FILE [--name NAME]``).

Adding reads the file the way loading does (never running its code), builds the generator
once to prove that it loads, and records in the models config file (download.config_path())
under ``"added"``: the file's absolute path, its SHA-256, its format and architecture. The
model is then listed by ``ganpaint models``, the server's ``hello`` and GIMP's model choice.
Loading checks the SHA-256 again: a file changed since it was added is refused.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from .base import ModelError
from .dcgan import sha256_file
from .download import config_path, read_config

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


def default_name(path: Path) -> str:
    stem = re.sub(r"[^a-z0-9._-]+", "-", Path(path).stem.lower()).strip("-._")
    return stem or "stylegan"


def added_models() -> dict[str, dict]:
    """id → the record ``models add`` wrote (file, sha256, format, family, resolution …)."""
    return dict(read_config().get("added", {}))


def add_model(path: Path, name: str | None, builtin: set[str]) -> dict:
    """Check a user's file, record it under ``name`` and return the record with its id."""
    from .stylegan_files import file_arch, load_stylegan

    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ModelError(f"no such file: {path}")
    name = name or default_name(path)
    if not NAME.fullmatch(name):
        raise ModelError(f"model name {name!r}: use lower-case letters, digits, '.', '_', '-'")
    if name in builtin:
        raise ModelError(f"{name!r} is a built-in model; pick another --name")
    record = {"file": str(path), "sha256": sha256_file(path), **file_arch(path)}
    gen = load_stylegan(path, name)  # proves that it loads; the weights are checked here
    record["layers"] = gen.n_layers
    record["edit_layer"] = gen.edit_layer
    _write_added(name, record)
    return {"id": name, **record}


def _write_added(name: str, record: dict) -> None:
    path = config_path()
    read_config(path)  # a broken config is reported, never overwritten
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        data = {}
    data.setdefault("added", {})[name] = record
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".models.", suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def verified_file(model_id: str, record: dict) -> Path:
    """The added model's file, if it still is the file that was added."""
    path = Path(record["file"])
    if not path.is_file():
        raise ModelError(f"{model_id}: its file {path} is gone; add it again (ganpaint models add)")
    got = sha256_file(path)
    if got != record.get("sha256"):
        raise ModelError(
            f"{model_id}: {path} has changed since it was added (SHA-256 {got[:12]}…, "
            f"recorded {str(record.get('sha256'))[:12]}…); run ganpaint models add {path} "
            f"--name {model_id} again"
        )
    return path
