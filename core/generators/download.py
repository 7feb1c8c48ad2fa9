"""Model weights in the user cache: where to download them from, how they are checked, and
how a user points us at a file of their own.

Sources, tried in this order for a file ``F`` of a registered model:

1. mirrors from ``$GANPAINT_MIRRORS`` (base URLs separated by spaces or commas),
2. mirrors from ``"mirrors"`` in the models config file (``config_path()``:
   ``<data_dir>/models.json``),
3. the model's published hosts (``ModelSpec.urls``; for ProGAN dissect.csail.mit.edu, then
   gandissect.csail.mit.edu, reported dead since 2023 but kept as a fallback).

A mirror is a base URL (``https://…/``, ``file:///…/``) or a local folder; ``F`` is appended.
The config file may also name a weights file per model, used instead of the cache::

    {"mirrors": ["https://example.org/ganpaint/"],
     "checkpoints": {"progan-churchoutdoor": "/data/proggan_churchoutdoor-7e701dd5.pth"}}

Checking: a name ``…-<hex>.pth`` follows torch.hub's convention that ``<hex>`` starts the
file's SHA-256. GAN Dissection downloads with ``torch.hub.load_state_dict_from_url`` and never
turns its ``check_hash`` on, so nothing in the reference confirms that its files match their
names. We check, and on a mismatch keep the file as ``F.unverified`` and say both hashes and
how to use it anyway (``--checkpoint FILE`` or ``"checkpoints"`` in the config file).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..paths import data_dir, models_dir
from .base import ModelError
from .dcgan import sha256_file

MIRRORS_ENV = "GANPAINT_MIRRORS"
UNVERIFIED = ".unverified"
HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")


def config_path() -> Path:
    """The models config file: ``<data_dir>/models.json`` (``$GANPAINT_DATA`` overrides)."""
    return data_dir() / "models.json"


def hash_prefix(file_name: str) -> str:
    """The hex a file's name promises its SHA-256 starts with ("" when it names none)."""
    m = HASH_IN_NAME.search(file_name)
    return m.group(1) if m else ""


# -- the config file ---------------------------------------------------------------------
def read_config(path: Path | None = None) -> dict:
    """The models config ({} when there is none); a broken one is a ModelError."""
    path = Path(path) if path is not None else config_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read {path}: {_one_line(e)}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} must hold a JSON object with 'mirrors' and/or 'checkpoints'")
    mirrors = data.get("mirrors", [])
    if not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors):
        raise ModelError(f"{path}: 'mirrors' must be a list of base URLs")
    checkpoints = data.get("checkpoints", {})
    if not isinstance(checkpoints, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in checkpoints.items()
    ):
        raise ModelError(f"{path}: 'checkpoints' must map model ids to file paths")
    added = data.get("added", {})
    if not isinstance(added, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("file"), str) for v in added.values()
    ):
        raise ModelError(f"{path}: 'added' must map model ids to {{\"file\": …}} records")
    return {"mirrors": mirrors, "checkpoints": checkpoints, "added": added}


def mirrors() -> list[str]:
    """Base URLs of the user's mirrors: $GANPAINT_MIRRORS first, then the config file's."""
    env = [m for m in re.split(r"[\s,]+", os.environ.get(MIRRORS_ENV, "")) if m]
    return [_base_url(m) for m in env + read_config().get("mirrors", [])]


def configured_checkpoint(model_id: str) -> Path | None:
    """The weights file the config file names for a model, if any."""
    value = read_config().get("checkpoints", {}).get(model_id)
    return Path(value).expanduser() if value else None


def _base_url(mirror: str) -> str:
    if "://" not in mirror:  # a local folder
        mirror = Path(mirror).expanduser().resolve().as_uri()
    return mirror if mirror.endswith("/") else mirror + "/"


def sources(file_name: str, published: tuple[str, ...]) -> list[str]:
    """Every URL to try for ``file_name``, in order, without repeats."""
    urls = [m + file_name for m in mirrors()] + list(published)
    return list(dict.fromkeys(urls))


# -- fetching ----------------------------------------------------------------------------
@dataclass
class HashMismatch(Exception):
    url: str
    got: str  # the file's full SHA-256
    kept: Path  # where the file was kept


def download_file(url: str, dest: Path, sha256_prefix: str = "", timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``dest`` atomically: stream into a temp file beside it, check the
    SHA-256 prefix, then rename. Network problems raise OSError/HTTPException (for the
    caller to word); a hash mismatch keeps the file as ``dest.unverified`` and raises
    HashMismatch. Never leaves a partial ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        request = urllib.request.Request(url, headers={"User-Agent": "ganpaint"})
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(request, timeout=timeout) as r:
            for chunk in iter(lambda: r.read(1 << 20), b""):
                digest.update(chunk)
                f.write(chunk)
        got = digest.hexdigest()
        if sha256_prefix and not got.startswith(sha256_prefix.lower()):
            kept = dest.with_name(dest.name + UNVERIFIED)
            os.replace(tmp, kept)
            raise HashMismatch(url, got, kept)
        os.replace(tmp, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


_NETWORK_ERRORS = (
    urllib.error.URLError,
    http.client.HTTPException,
    TimeoutError,
    ConnectionError,
    ValueError,  # a malformed URL
)


def ensure_weights(
    model_id: str, file_name: str, published: tuple[str, ...], download_ok: bool = True
) -> Path:
    """Path of a model's weights in the cache, downloading (and checking) when missing.

    Every failure is a one-line ModelError that says what was tried and what to do.
    """
    dest = models_dir() / file_name
    prefix = hash_prefix(file_name)
    if dest.is_file():
        got = sha256_file(dest) if prefix else ""
        if prefix and not got.startswith(prefix):
            raise ModelError(_mismatch(model_id, file_name, prefix, got, dest, "in the cache"))
        return dest
    kept = dest.with_name(dest.name + UNVERIFIED)
    if kept.is_file():  # an earlier download did not match its name: do not fetch it again
        got = sha256_file(kept)
        if not got.startswith(prefix):
            raise ModelError(
                _mismatch(model_id, file_name, prefix, got, kept, "downloaded earlier")
                + "; delete it to download again"
            )
        os.replace(kept, dest)  # it matches after all (e.g. the name was corrected)
        return dest
    urls = sources(file_name, published)
    where = f'put the file at {dest}, add a mirror (${MIRRORS_ENV} or "mirrors" in '
    where += f"{config_path()}), or pass --checkpoint FILE"
    if not download_ok:
        raise ModelError(
            f"weights of {model_id} not found at {dest} and downloads are off; "
            f"sources: {', '.join(urls) or 'none'}; {where}"
        )
    tried: list[str] = []
    mismatch: HashMismatch | None = None
    for url in urls:
        try:
            path = download_file(url, dest, prefix)
        except HashMismatch as e:  # try the other sources: one mirror may be stale
            tried.append(f"{url} (SHA-256 {e.got[:12]}…)")
            mismatch = e  # the last such file is the one kept
            continue
        except _NETWORK_ERRORS as e:
            tried.append(f"{url} ({_one_line(e)})")
            continue
        except OSError as e:  # local: the cache folder cannot be made or written
            raise ModelError(f"cannot write {dest.name} into {dest.parent}: {_one_line(e)}") from e
        if mismatch is not None:
            mismatch.kept.unlink(missing_ok=True)
        return path
    if mismatch is not None:
        raise ModelError(
            _mismatch(model_id, file_name, prefix, mismatch.got, mismatch.kept, "downloaded")
            + f"; tried {'; '.join(tried)}"
        )
    raise ModelError(f"cannot download {file_name}; tried {'; '.join(tried) or 'nothing'}; {where}")


def _mismatch(model_id: str, file_name: str, prefix: str, got: str, path: Path, how: str) -> str:
    return (
        f"{file_name} ({how}) has SHA-256 {got}, but its name promises one starting {prefix} "
        "(torch.hub's naming convention, which GAN Dissection never checks: the file may "
        f"still be right); kept at {path}; to use it anyway pass --checkpoint {path} or set "
        f'"checkpoints": {{"{model_id}": "{path}"}} in {config_path()}'
    )


def _one_line(e: BaseException) -> str:
    reason = getattr(e, "reason", None) or e
    text = " ".join(str(reason).split())
    if isinstance(e, urllib.error.HTTPError):
        text = f"HTTP {e.code} {text}".strip()
    return text[:160] or type(e).__name__
