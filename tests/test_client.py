"""The client on its own: standalone file, local checks, lazy-pirate retries, timeouts,
heartbeats and cancel-on-exit, against small scripted servers on real sockets."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import msgpack
import pytest
import zmq

from ganpaint.server.client import ganpaint_client as client_mod
from ganpaint.server.client.ganpaint_client import Client, RawImage, ServerError, ServerUnavailable

CLIENT_FILE = Path(client_mod.__file__)
LIMITS = {"max_side": 100, "max_pixels": 5000}


def test_client_file_is_standalone(tmp_path: Path):
    tree = ast.parse(CLIENT_FILE.read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports: the file is copied alone"
            roots.add(node.module.split(".")[0])
    assert roots - set(sys.stdlib_module_names) <= {"zmq", "msgpack"}

    shutil.copy(CLIENT_FILE, tmp_path / "ganpaint_client.py")
    check = (
        "import sys; import ganpaint_client as c; "
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'numpy', 'ganpaint'}); "
        "assert not bad, bad; c.Client, c.RawImage, c.ServerError, c.ServerUnavailable, c.Cancelled"
    )
    subprocess.run([sys.executable, "-c", check], cwd=tmp_path, check=True)


class ScriptedServer:
    """A ROUTER on a free loopback port; ``script(sock, seen)`` runs on a thread and may
    answer however it likes. ``seen`` collects (identity, header) of everything received."""

    def __init__(self, script):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # as the real server: reopened sockets
        self.sock.bind("tcp://127.0.0.1:*")
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.seen: list[tuple[bytes, dict]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(script,), daemon=True)
        self.thread.start()

    def _run(self, script) -> None:
        script(self)
        while not self.stop.is_set():  # keep swallowing whatever else comes
            self.next(0.05)

    def next(self, timeout_s: float = 10.0):
        if not self.sock.poll(int(timeout_s * 1000)):
            return None
        ident, head, *_ = self.sock.recv_multipart()
        header = msgpack.unpackb(head, raw=False)
        self.seen.append((ident, header))
        return ident, header

    def reply(self, ident: bytes, header: dict, **fields) -> None:
        out = {"v": 1, "id": header.get("id", ""), **fields}
        self.sock.send_multipart([ident, msgpack.packb(out, use_bin_type=True)])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.sock.close(0)
        self.ctx.term()


@pytest.fixture
def scripted():
    servers: list[ScriptedServer] = []

    def make(script) -> ScriptedServer:
        servers.append(ScriptedServer(script))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def free_endpoint() -> str:
    ctx = zmq.Context()
    s = ctx.socket(zmq.ROUTER)
    s.bind("tcp://127.0.0.1:*")
    endpoint = s.getsockopt_string(zmq.LAST_ENDPOINT)
    s.close(0)
    ctx.term()
    return endpoint


def image(w=4, h=3) -> tuple[RawImage, RawImage]:
    return RawImage(bytes(w * h * 3), w, h, 3, "u8"), RawImage(b"\xff" * (w * h), w, h, 1, "u8")


def test_nothing_answers_is_unavailable():
    with Client(free_endpoint(), timeout_s=0.2, retries=2) as c:
        with pytest.raises(ServerUnavailable) as e:
            c.hello()
    assert e.value.code == "unavailable" and isinstance(e.value, ServerError)


def test_bad_images_are_refused_locally():
    img, mask = image()
    with Client(free_endpoint(), timeout_s=0.2, retries=1) as c:
        for bad in [
            RawImage(b"123", 4, 3, 3, "u8"),
            RawImage(img.data, 4, 3, 2, "u8"),
            RawImage(img.data, 4, 3, 3, "f32"),
        ]:
            with pytest.raises(ServerError) as e:
                c.reconstruct(bad)
            assert e.value.code == "bad_request"
        with pytest.raises(ServerError) as e:
            c.edit(img, RawImage(b"\xff" * 4, 2, 2, 1, "u8"), op="add", units=[1])
        assert e.value.code == "bad_request"


def test_lazy_pirate_reopens_the_socket_and_retries(scripted):
    def script(srv: ScriptedServer) -> None:
        srv.next()  # the first attempt goes unanswered
        ident, header = srv.next()
        srv.reply(ident, header, kind="hello", protocol=1, limits=LIMITS)

    srv = scripted(script)
    with Client(srv.endpoint, timeout_s=0.5, retries=3) as c:
        assert c.hello()["protocol"] == 1
    (first, h1), (second, h2) = srv.seen[:2]
    assert first == second  # a new DEALER with the same routing id: the same owner
    assert h1["id"] == h2["id"]  # the same request, so a server can drop a duplicate


def test_a_server_that_goes_silent_mid_job_times_out_and_the_job_is_cancelled(scripted):
    def script(srv: ScriptedServer) -> None:
        ident, header = srv.next()  # hello, for the limits
        srv.reply(ident, header, kind="hello", limits=LIMITS)
        ident, header = srv.next()
        srv.reply(ident, header, kind="accepted", job="j-7", position=0, heartbeat_s=0.1)

    srv = scripted(script)
    img, mask = image()
    with Client(srv.endpoint, timeout_s=0.5, retries=2) as c:
        with pytest.raises(ServerError) as e:
            c.edit(img, mask, op="add", units=[1])
    assert e.value.code == "timeout"
    srv.stop.set()
    srv.thread.join(10)
    kinds = [h["kind"] for _, h in srv.seen]
    assert "heartbeat" in kinds and kinds[-1] == "cancel"
    assert all(h.get("job") == "j-7" for _, h in srv.seen if h["kind"] in ("heartbeat", "cancel"))


def test_a_failing_progress_callback_cancels_the_job(scripted):
    def script(srv: ScriptedServer) -> None:
        ident, header = srv.next()
        srv.reply(ident, header, kind="hello", limits=LIMITS)
        ident, header = srv.next()
        srv.reply(ident, header, kind="accepted", job="j-8", position=0)
        srv.reply(ident, header, kind="progress", job="j-8", stage="adapt", step=1, total=9)

    srv = scripted(script)

    def progress(p: dict) -> None:
        if p["stage"] == "adapt":
            raise KeyError("the dialog is gone")

    img, mask = image()
    with Client(srv.endpoint, timeout_s=5.0) as c:
        with pytest.raises(KeyError):
            c.edit(img, mask, op="add", units=[1], progress=progress)
    srv.stop.set()
    srv.thread.join(10)
    assert srv.seen[-1][1]["kind"] == "cancel" and srv.seen[-1][1]["job"] == "j-8"


def test_error_replies_become_server_errors(scripted):
    def script(srv: ScriptedServer) -> None:
        ident, header = srv.next()
        srv.reply(ident, header, kind="error", error={"code": "busy", "message": "full"})

    srv = scripted(script)
    with Client(srv.endpoint, timeout_s=5.0) as c:
        with pytest.raises(ServerError) as e:
            c.status()
    assert (e.value.code, e.value.message) == ("busy", "full")
