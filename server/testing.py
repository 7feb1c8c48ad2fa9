"""An in-process server on a background thread, for tests, benchmarks and embedding.

with running_server(ServerConfig(bind="tcp://127.0.0.1:*")) as srv:
    client = Client(srv.endpoint)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from .config import ServerConfig
from .server import EditServer


@contextlib.contextmanager
def running_server(
    cfg: ServerConfig, log: Callable[[str], None] | None = None
) -> Iterator[EditServer]:
    """Bind (a "*" port picks a free one: read ``.endpoint``), serve on a thread, and stop and
    join on exit."""
    server = EditServer(cfg, log=log)
    server.bind()
    thread = threading.Thread(target=server.serve, name="ganpaint-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop()
        thread.join(60)
