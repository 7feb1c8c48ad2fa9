"""Who may talk to the server: loopback only, unless told otherwise and given CURVE keys.

Anything that can reach the socket can make the server burn CPU/GPU time and read back
images, so a non-loopback bind needs both --allow-remote and a CURVE key set; clients then
need the server's public key and an authorised key pair of their own.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import zmq
import zmq.auth

from .config import CurveFiles, ServerConfig

SERVER_CERT = "server"
CLIENT_CERT = "client"
CLIENTS_DIR = "clients"


class BindRefused(Exception):
    """The server will not start with this bind/security combination; one-line message."""


def is_loopback(endpoint: str) -> bool:
    """True for ipc://, inproc:// and tcp:// on a loopback address (127.0.0.0/8, ::1,
    localhost)."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        return False
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    host = rest.rsplit(":", 1)[0] if ":" in rest else rest
    host = host.strip("[]")
    if ";" in host:  # "tcp://src;dst" names a source interface: not a plain bind address
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", interface names and host names may reach other machines


def check_bind(cfg: ServerConfig) -> None:
    """Raise BindRefused unless the bind is loopback, or remote with explicit consent + keys."""
    if is_loopback(cfg.bind):
        return
    how = (
        "pass --allow-remote and --curve-dir DIR (make the keys with "
        "`ganpaint serve --make-keys DIR`, then give each client its key pair and the "
        "server's public key)"
    )
    if not cfg.allow_remote:
        raise BindRefused(
            f"refusing to listen on {cfg.bind}: not a loopback address, so other machines "
            f"could run jobs on this one. To allow it, {how}"
        )
    if cfg.curve is None:
        raise BindRefused(
            f"refusing to listen on {cfg.bind} without encryption and authentication: {how}"
        )
    if not zmq.has("curve"):
        raise BindRefused("this libzmq has no CURVE support; cannot serve remote clients")
    if not cfg.curve.server_secret.is_file():
        raise BindRefused(f"no server key file {cfg.curve.server_secret}")
    problem = exposed_secret(cfg.curve.server_secret)
    if problem:
        raise BindRefused(problem)
    _, secret = zmq.auth.load_certificate(cfg.curve.server_secret)
    if not secret:
        raise BindRefused(f"{cfg.curve.server_secret} holds no secret key")
    if not cfg.curve.clients_dir.is_dir() or not any(cfg.curve.clients_dir.glob("*.key")):
        raise BindRefused(f"no authorised client keys (*.key) in {cfg.curve.clients_dir}")


def curve_files(key_dir: Path) -> CurveFiles:
    """The layout written by make_keys: DIR/server.key_secret and DIR/clients/*.key."""
    return CurveFiles(key_dir / f"{SERVER_CERT}.key_secret", key_dir / CLIENTS_DIR)


def secure(sock: zmq.Socket, curve: CurveFiles) -> set[bytes]:
    """Make ``sock`` a CURVE server; returns the authorised clients' public keys (z85), which
    the ZAP handler (connections.ConnectionGate) admits. Call before bind."""
    public, secret = zmq.auth.load_certificate(curve.server_secret)
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True
    return set(zmq.auth.load_certificates(curve.clients_dir))


def exposed_secret(path: Path) -> str | None:
    """Why others can use the secret key file ``path`` (a one-line message with the chmod that
    fixes it), or None when only its owner can read or change it. Whoever reads a server's
    secret key can be that server to its clients, as ssh reasons about private keys."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return (
            f"the secret key {path} can be read or changed by other users (mode {mode:04o}); "
            f"run `chmod 600 {path}` and use a new key pair if others may have copied it"
        )
    return None


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` readable by its owner only (0600 from the first byte: no window in
    which the umask's mode lets others read it)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _certificate(public: bytes, secret: bytes | None = None) -> str:
    """A certificate in the layout zmq.auth.load_certificate reads."""
    kind = "Secret" if secret else "Public"
    lines = [f"#   ZeroMQ CURVE {kind} Certificate (ganpaint serve --make-keys)", "", "metadata"]
    lines += ["curve", f'    public-key = "{public.decode()}"']
    if secret:
        lines.append(f'    secret-key = "{secret.decode()}"')
    return "\n".join(lines) + "\n"


def _key_pair(key_dir: Path, name: str) -> tuple[Path, Path]:
    public, secret = zmq.curve_keypair()
    public_file, secret_file = key_dir / f"{name}.key", key_dir / f"{name}.key_secret"
    public_file.write_text(_certificate(public), encoding="utf-8")
    _write_private(secret_file, _certificate(public, secret))
    return public_file, secret_file


def make_keys(key_dir: Path) -> dict[str, Path]:
    """Create a server key pair and one client key pair (authorised) under key_dir: the
    folder private to its owner (0700), the secret keys 0600."""
    key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(key_dir, 0o700)
    (key_dir / CLIENTS_DIR).mkdir(exist_ok=True)
    server_public, server_secret = _key_pair(key_dir, SERVER_CERT)
    client_public, client_secret = _key_pair(key_dir, CLIENT_CERT)
    authorised = key_dir / CLIENTS_DIR / f"{CLIENT_CERT}.key"
    authorised.write_bytes(client_public.read_bytes())
    return {
        "server_public": server_public,
        "server_secret": server_secret,
        "client_public": client_public,
        "client_secret": client_secret,
        "authorised": authorised,
    }
