"""What a server is told at start: where to listen, what to accept, how much to keep."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ganpaint.core.adapt import DEFAULT_STEPS
from ganpaint.core.generators import DEFAULT_MODEL

DEFAULT_BIND = "tcp://127.0.0.1:5570"


@dataclass
class Limits:
    """What a request may ask for; reported to clients in hello."""

    max_side: int = 8192  # pixels, either side of the image
    max_pixels: int = 16 * 1024 * 1024  # width × height
    max_steps: int = 10_000  # G′ adaptation steps per job
    max_queue: int = 8  # jobs waiting behind the running one; more get "busy"
    # Pixels of queued and running jobs plus undelivered final replies; past it, "busy".
    max_pending_bytes: int = 512 * 1024 * 1024
    # Client connections open at once; past it, handshakes are refused (server/connections.py).
    # libzmq holds up to a message or two per connection before the server reads them; with
    # messages of at most max_message_bytes() that is ≈ 2.2 MiB a connection (280 MiB at 128).
    max_connections: int = 128
    # Pixel frames larger than this travel as an upload, in chunks of this size (uploads.py).
    chunk_bytes: int = 1024 * 1024
    max_units: int = 512  # unit indices in one edit
    heartbeat_s: float = 1.0  # how often a waiting client should send a heartbeat
    heartbeat_timeout_s: float = 10.0  # silence after which a client's jobs are cancelled

    def max_frame_bytes(self) -> int:
        """Largest frame a valid request carries: an RGBA 16-bit image at max_pixels."""
        return self.max_pixels * 4 * 2

    def max_message_bytes(self) -> int:
        """zmq.MAXMSGSIZE (per frame in libzmq): a larger frame drops the connection. A
        request's pixel frames up to this size may come in the request itself; larger ones
        as an upload."""
        return self.chunk_bytes + 64 * 1024

    def to_dict(self) -> dict:
        d = asdict(self)
        d["max_message_bytes"] = self.max_message_bytes()
        return d


@dataclass
class CurveFiles:
    """CURVE keys for a non-loopback bind (layout written by `ganpaint serve --make-keys`)."""

    server_secret: Path  # zmq.auth certificate with the server's secret key
    clients_dir: Path  # folder of authorised clients' public certificates (*.key)


@dataclass
class ClusterConfig:
    """Where jobs run when the server is scaled out on Ray (server/cluster/)."""

    address: str | None = None  # a Ray cluster to join ("auto", "HOST:6379"); None: start one
    workers: int = 1  # worker actors: one per GPU (--device cuda or auto with GPUs), else CPU
    threads: int | None = None  # torch threads in each worker (None: torch's choice)
    object_store_mb: int | None = None  # a cluster started here: Ray's object store size


@dataclass
class ServerConfig:
    bind: str = DEFAULT_BIND
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    model: str = DEFAULT_MODEL  # used when a request names none
    steps: int = DEFAULT_STEPS  # G′ steps when a request names none
    quality: str = "faithful"  # G′ fit when a request names none (core.fast.QUALITIES)
    invert_steps: int | None = None  # inversion z + r steps; None = the core's default
    invert_precision: str = "auto"  # G's arithmetic while inverting (core/invert.py)
    session_budget_bytes: int = 512 * 1024 * 1024  # memory for cached inversions and fits
    # Cached sessions are each client's own (its CURVE key, else its session secret, else its
    # connection); True: every client may reuse every session (trusted seats only).
    share_sessions: bool = False
    allow_remote: bool = False
    curve: CurveFiles | None = None
    download: bool = True  # may fetch missing model weights on first use
    # model id -> weights file used instead of the cache (not hash-checked; `--checkpoint`)
    checkpoints: dict[str, Path] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    cluster: ClusterConfig | None = None  # None: jobs run in this process (one device)
