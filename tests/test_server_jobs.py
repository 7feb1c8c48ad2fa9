"""The server end to end over real loopback sockets: results, sessions, concurrency, cancel,
heartbeats, re-delivery after a reconnect, error codes.

One in-process server for the module with few steps (tests check behaviour, not quality).
No timing assertions: waits have generous deadlines only so that a bug fails instead of
hanging.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import replace

import msgpack
import numpy as np
import pytest
import torch
import zmq

from ganpaint.core.adapt import AdaptConfig
from ganpaint.core.concepts.files import atomic_write_json
from ganpaint.core.concepts.library import ConceptLibrary
from ganpaint.core.generators import DEFAULT_MODEL, load_model
from ganpaint.core.invert import InvertConfig
from ganpaint.core.pipeline import EditSpec, GuardedCache, PipelineConfig, edit_photo
from ganpaint.server.client.ganpaint_client import Cancelled, Client, RawImage, ServerError
from ganpaint.server.config import Limits, ServerConfig
from ganpaint.server.protocol import ProtocolError
from ganpaint.server.runner import check_finite
from ganpaint.server.sessions import SessionCache
from ganpaint.server.testing import running_server

LONG = 5000  # steps for a job that is cancelled long before it ends
DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cfg = ServerConfig(
        bind="tcp://127.0.0.1:*",
        steps=20,
        invert_steps=30,
        limits=Limits(max_side=1024, max_queue=2, heartbeat_s=0.25, heartbeat_timeout_s=3.0),
    )
    lines: list[str] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 cores shared with other work: more threads only spin
    with pytest.MonkeyPatch.context() as mp:  # learned concepts go to a scratch library
        mp.setenv("GANPAINT_DATA", str(tmp_path_factory.mktemp("data")))
        with running_server(cfg, log=lines.append) as srv:
            srv.lines = lines
            yield srv
    torch.set_num_threads(threads)


@pytest.fixture
def client(server):
    c = Client(server.endpoint, timeout_s=10.0, retries=2)
    yield c
    c.close()


def photo(h=48, w=64, channels=4, dtype=np.uint8, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(3 * xx + c + seed) * np.cos(2 * yy - c) for c in range(3)], 2)
    img = (0.5 + 0.4 * base + rng.normal(0, 0.02, base.shape)).clip(0, 1) * top
    if channels == 4:
        img = np.concatenate([img, (xx[..., None] * top).clip(0, top)], axis=2)
    return img.round().astype(dtype)


def soft_mask(h=48, w=64) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[12:30, 20:44] = 255
    m[11, 20:44] = m[30, 20:44] = 100  # feathered rows
    return m


def raw(arr: np.ndarray) -> RawImage:
    h, w = arr.shape[:2]
    c = 1 if arr.ndim == 2 else arr.shape[2]
    dtype = "u8" if arr.dtype == np.uint8 else "u16"
    return RawImage(arr.astype(arr.dtype.newbyteorder("<")).tobytes(), w, h, c, dtype)


def array(img: RawImage) -> np.ndarray:
    dt = np.dtype(np.uint8) if img.dtype == "u8" else np.dtype("<u2")
    return np.frombuffer(img.data, dt).reshape(img.height, img.width, img.channels)


def wait_until(cond, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


class RawDealer:
    """A bare DEALER speaking the protocol by hand, for what the Client never does."""

    def __init__(self, endpoint: str, identity: bytes | None = None):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        if identity is not None:
            self.sock.setsockopt(zmq.ROUTING_ID, identity)
        self.sock.connect(endpoint)

    def send(self, header: dict, frames=()) -> None:
        self.sock.send_multipart([msgpack.packb(header, use_bin_type=True), *frames])

    def recv(self, timeout_s: float = DEADLINE_S) -> tuple[dict, list[bytes]]:
        if not self.sock.poll(int(timeout_s * 1000)):
            raise AssertionError("no reply")
        parts = self.sock.recv_multipart()
        return msgpack.unpackb(parts[0], raw=False), parts[1:]

    def recv_until(self, kinds: tuple[str, ...]) -> dict:
        while True:
            header, _ = self.recv()
            if header["kind"] in kinds:
                return header

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def edit_request(steps: int, rid: str | None = None, **over) -> tuple[dict, list[bytes]]:
    img, m = photo(), soft_mask()
    header = {
        "v": 1,
        "kind": "edit",
        "id": rid or uuid.uuid4().hex,
        "op": "remove",
        "units": [3, 5],
        "steps": steps,
        "image": {"width": 64, "height": 48, "channels": 4, "dtype": "u8"},
        "mask": {"width": 64, "height": 48, "channels": 1, "dtype": "u8"},
        **over,
    }
    return header, [img.tobytes(), m.tobytes()]


# -- results ---------------------------------------------------------------------------------
def test_hello_models_concepts_status(client):
    info = client.hello()
    assert info["protocol"] == 2 and info["device"] == "cpu"
    assert {"max_side", "max_pixels", "max_message_bytes"} <= set(info["limits"])
    models = client.models()
    assert "digiface-dcgan64" in [m["id"] for m in models]
    assert all("resolution" in m for m in models)
    assert isinstance(client.concepts(), list)
    st = client.status()
    assert {"running", "queued", "sessions"} <= set(st)


def test_edit_keeps_unselected_pixels_and_reuses_the_session(client):
    img, m = photo(seed=1), soft_mask()
    seen: list[dict] = []
    first = client.edit(raw(img), raw(m), op="remove", units=[3, 5], progress=seen.append)
    out = first["image"]
    assert (out.width, out.height, out.channels, out.dtype) == (64, 48, 4, "u8")
    got = array(out)
    assert np.array_equal(got[m == 0], img[m == 0])  # bit-identical outside the selection
    assert np.array_equal(got[..., 3], img[..., 3])  # alpha untouched
    assert not np.array_equal(got, img)
    assert first["session_reused"] is False and first["steps"] == 20
    assert {"psnr_keep", "seconds", "model", "job"} <= set(first)
    # The photo-resolution figures travel too, and measure this result: it changed pixels.
    assert first["metrics"]["detail_ratio"] > 0 and first["metrics"]["psnr_inside"] < 99
    stages = {p["stage"] for p in seen}
    assert {"queued", "invert", "adapt"} <= stages and all(p["job"] == first["job"] for p in seen)

    second = client.edit(raw(img), raw(m), op="add", units=[3, 5])
    assert second["session_reused"] is True
    assert np.array_equal(array(second["image"])[m == 0], img[m == 0])


def test_fast_quality_edit(client):
    img, m = photo(seed=7), soft_mask()
    assert "fast" in client.hello()["qualities"]
    res = client.edit(raw(img), raw(m), op="remove", units=[3], quality="fast")
    assert res["quality"] == "fast" and res["steps"] <= 20
    assert np.array_equal(array(res["image"])[m == 0], img[m == 0])


def test_a_client_finds_only_its_own_sessions_unless_the_server_shares_them(server):
    """A's photo is nothing to B: B's prepare of it is not session_reused and the cache's
    hits do not move; A's own, the same secret session name on another socket, and a bare
    connection's second request are. With --share-sessions every client finds every session."""
    img, m = photo(seed=23), soft_mask()
    prep = {"v": 1, "kind": "prepare", "image": raw(img).meta(), "mask": raw(m).meta()}
    frames = [raw(img).data, raw(m).data]
    with Client(server.endpoint, timeout_s=30.0, session="a" * 32) as a:
        assert a.prepare(raw(img), raw(m))["session_reused"] is False
        with Client(server.endpoint, timeout_s=30.0, session="b" * 32) as b:
            hits = b.status()["sessions"]["hits"]
            assert b.prepare(raw(img), raw(m))["session_reused"] is False
            assert b.status()["sessions"]["hits"] == hits
        with Client(server.endpoint, timeout_s=30.0, session="a" * 32) as again:
            assert again.prepare(raw(img), raw(m))["session_reused"] is True
    bare = RawDealer(server.endpoint)  # no session name: its connection is the scope
    try:
        for reused in (False, True):
            bare.send({**prep, "id": uuid.uuid4().hex}, frames)
            assert bare.recv_until(("result",))["session_reused"] is reused
        bare.send({**prep, "id": "short", "session": "too short"}, frames)
        assert bare.recv_until(("error",))["error"]["code"] == "bad_request"
    finally:
        bare.close()
    with running_server(replace(server.cfg, share_sessions=True), log=lambda line: None) as srv:
        with Client(srv.endpoint, timeout_s=30.0, session="a" * 32) as a:
            assert a.hello()["sessions"] == "shared"
            assert a.prepare(raw(img), raw(m))["session_reused"] is False
        with Client(srv.endpoint, timeout_s=30.0, session="b" * 32) as b:
            assert b.prepare(raw(img), raw(m))["session_reused"] is True
    with Client(server.endpoint, timeout_s=30.0) as c:
        assert c.hello()["sessions"] == "client"


def test_prepare_inverts_ahead_and_the_edit_after_it_is_the_same_edit(server, client):
    # What the plug-in sends while its dialog is open: the region's inversion only. The edit
    # that follows finds it (session reused), skips the inversion, and its pixels are those
    # of the same edit made cold by a server that never saw the photo.
    img, m = photo(seed=11), soft_mask()
    ahead = client.prepare(raw(img), raw(m), quality="fast")
    assert ahead["session_reused"] is False and ahead["steps"] == 30
    assert ahead["psnr_inversion"] > 10 and "image" not in ahead
    again = client.prepare(raw(img), raw(m), quality="fast")
    assert again["session_reused"] is True  # already there
    after = client.edit(raw(img), raw(m), op="add", units=[3, 5], quality="fast")
    assert after["session_reused"] is True
    assert after["psnr_inversion"] == ahead["psnr_inversion"]
    with running_server(server.cfg, log=lambda line: None) as fresh:
        with Client(fresh.endpoint, timeout_s=10.0, retries=2) as c:
            cold = c.edit(raw(img), raw(m), op="add", units=[3, 5], quality="fast")
    assert cold["session_reused"] is False
    assert np.array_equal(array(after["image"])[..., :3], array(cold["image"])[..., :3])
    assert any(line.startswith("prepare ") for line in server.lines)
    with pytest.raises(ServerError) as e:
        client.prepare(raw(img), raw(np.zeros_like(m)))
    assert e.value.code == "bad_request" and "mask is empty" in e.value.message


def test_reconstruct_u16_rgb(client):
    img = photo(40, 30, channels=3, dtype=np.uint16, seed=2)
    res = client.reconstruct(raw(img), steps=10)
    out = res["image"]
    assert (out.width, out.height, out.channels, out.dtype) == (30, 40, 3, "u16")
    assert array(out).shape == img.shape and res["steps"] == 10


def test_two_clients_at_once_both_get_their_own_result(server):
    results: dict[int, dict] = {}
    errors: list[BaseException] = []
    imgs = {i: photo(seed=10 + i) for i in range(2)}
    m = soft_mask()

    def run(i: int) -> None:
        with Client(server.endpoint, timeout_s=10.0) as c:
            try:
                results[i] = c.edit(raw(imgs[i]), raw(m), op="remove", units=[7])
            except BaseException as e:  # reported below
                errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE_S)
    assert not errors and set(results) == {0, 1}
    assert results[0]["job"] != results[1]["job"]
    for i in range(2):
        got = array(results[i]["image"])
        assert np.array_equal(got[m == 0], imgs[i][m == 0])


# -- cancel ----------------------------------------------------------------------------------
def test_cancel_mid_job_then_the_next_job_runs(client):
    seen: list[dict] = []

    def adapting() -> bool:
        return any(p["stage"] == "adapt" for p in seen)

    img, m = photo(seed=3), soft_mask()
    with pytest.raises(Cancelled) as e:
        client.edit(
            raw(img),
            raw(m),
            op="remove",
            units=[1],
            steps=LONG,
            progress=seen.append,
            should_cancel=adapting,
        )
    assert e.value.code == "cancelled"
    assert "adapt cancelled at step" in e.value.message  # stopped mid-job, not at the end
    step = int(e.value.message.split("at step ")[1].split("/")[0])
    assert step < LONG
    res = client.edit(raw(img), raw(m), op="remove", units=[1])
    assert res["steps"] == 20


def test_cancel_queued_and_running_jobs_from_another_client(server, client):
    """Another client sees that jobs exist, not their ids; told an id (as the plug-in tells
    its watchdog), it may cancel that job."""
    outcome: dict[str, BaseException | dict] = {}
    ids: dict[str, str] = {}

    def run(name: str, steps: int) -> None:
        def seen(p: dict) -> None:
            ids[name] = p["job"]

        with Client(server.endpoint, timeout_s=10.0) as c:
            try:
                outcome[name] = c.edit(
                    raw(photo(seed=4)),
                    raw(soft_mask()),
                    op="remove",
                    units=[2],
                    steps=steps,
                    progress=seen,
                )
            except BaseException as e:
                outcome[name] = e

    long_t = threading.Thread(target=run, args=("long", LONG))
    long_t.start()
    wait_until(lambda: client.status()["running"] is not None, "the long job to start")
    queued_t = threading.Thread(target=run, args=("queued", 20))
    queued_t.start()
    wait_until(lambda: client.status()["queued"] and "queued" in ids, "the second job to queue")
    st = client.status()
    running, queued = st["running"], st["queued"][0]
    assert running["mine"] is False and queued["mine"] is False
    assert {running["job"], queued["job"]}.isdisjoint(ids.values())  # opaque labels only
    assert client.cancel(queued["job"])["state"] == "unknown"  # a label names no job

    assert client.cancel(ids["queued"])["state"] == "cancelled"
    queued_t.join(DEADLINE_S)
    assert isinstance(outcome["queued"], Cancelled)
    assert "another client" in outcome["queued"].message
    assert client.cancel(ids["long"])["state"] == "cancelling"
    long_t.join(DEADLINE_S)
    assert isinstance(outcome["long"], Cancelled)
    assert client.cancel(ids["long"])["state"] == "finished"
    assert client.cancel("no-such-job")["state"] == "unknown"


def test_a_client_that_stops_sending_heartbeats_has_its_job_cancelled(server):
    dealer = RawDealer(server.endpoint)
    try:
        header, frames = edit_request(LONG)
        dealer.send(header, frames)
        accepted = dealer.recv_until(("accepted",))
        final = dealer.recv_until(("result", "error"))  # no heartbeats sent
        assert final["job"] == accepted["job"]
        assert final["error"]["code"] == "cancelled"
        assert "heartbeat" in final["error"]["message"]
    finally:
        dealer.close()
    assert any("no heartbeat" in line for line in server.lines)


def test_a_reconnected_client_gets_its_replies_and_no_one_else_does(server):
    """A new socket with the owner's routing id is the owner again (the lazy pirate
    reconnect of ganpaint_client.py); a socket with any other id gets nothing of the job."""
    me = b"gp-test-" + uuid.uuid4().bytes
    first = RawDealer(server.endpoint, identity=me)
    header, frames = edit_request(20, rid="retry-me")
    first.send(header, frames)
    job = first.recv_until(("accepted",))["job"]
    first.close()  # the connection is gone, and with it, maybe, the final reply

    stranger = RawDealer(server.endpoint)
    second = RawDealer(server.endpoint, identity=me)
    try:
        final = None
        while final is None:
            second.send({"v": 1, "kind": "heartbeat", "id": "retry-me", "job": job})
            h, parts = second.recv()
            if h["kind"] in ("result", "error"):
                final, pixels = h, parts
            time.sleep(0.1)
        assert final["kind"] == "result" and final["job"] == job and len(pixels) == 1
        second.send({"v": 1, "kind": "status", "id": "sync"})  # skip replies still on the way
        while second.recv()[0]["id"] != "sync":
            pass
        # Delivered, so freed: nothing is kept, and asking again gets a plain answer.
        wait_until(lambda: not server.finished, "the kept reply to go")
        second.send({"v": 1, "kind": "heartbeat", "id": "retry-me", "job": job})
        again, parts = second.recv()
        assert again["kind"] == "error" and "has ended" in again["error"]["message"]
        assert parts == []
        second.send(header, frames)  # the same request again: no second job
        again, _ = second.recv()
        assert again["kind"] == "error" and again["job"] == job and "already ran" in str(again)

        stranger.send({"v": 1, "kind": "heartbeat", "id": "x", "job": job})
        h, parts = stranger.recv()
        assert h["kind"] == "error" and h["error"]["code"] == "bad_request" and parts == []
        assert "another client" in h["error"]["message"]
    finally:
        second.close()
        stranger.close()


def test_another_client_heartbeating_or_polling_a_job_gets_nothing_of_it(server):
    """Client B learns A's job id (here from A's own progress, as if it leaked) and polls
    it with heartbeats and status all along: B never gets a progress or result of A's, the
    job stays A's, and A gets its result."""
    ids: list[str] = []
    out: dict[str, object] = {}
    img, m = photo(seed=21), soft_mask()

    def owner() -> None:
        with Client(server.endpoint, timeout_s=10.0) as a:
            try:
                out["a"] = a.edit(
                    raw(img),
                    raw(m),
                    op="remove",
                    units=[4],
                    steps=150,
                    progress=lambda p: ids.append(p["job"]),
                )
            except BaseException as e:
                out["a"] = e

    t = threading.Thread(target=owner)
    t.start()
    wait_until(lambda: ids, "A's job to be accepted")
    job = ids[0]
    b = RawDealer(server.endpoint)
    got: list[tuple[dict, list]] = []
    try:
        while t.is_alive():
            b.send({"v": 1, "kind": "heartbeat", "id": "steal", "job": job})
            b.send({"v": 1, "kind": "status", "id": "look"})
            for _ in range(2):
                got.append(b.recv())
            time.sleep(0.3)
        t.join(DEADLINE_S)
        b.send({"v": 1, "kind": "heartbeat", "id": "steal", "job": job})  # after the end
        got.append(b.recv())
    finally:
        b.close()
    result = out["a"]
    assert isinstance(result, dict) and result["job"] == job, result
    assert np.array_equal(array(result["image"])[m == 0], img[m == 0])
    beats = [h for h, _ in got if h["id"] == "steal"]
    assert beats and all(h["kind"] == "error" for h in beats)
    assert all(parts == [] for _, parts in got)  # never any pixels
    statuses = [h for h, _ in got if h["id"] == "look"]
    assert statuses and all(h["kind"] == "status" for h in statuses)
    shown = [j for h in statuses for j in h["jobs"]]
    assert shown and all(j["job"] != job and j["mine"] is False for j in shown)


def test_a_dead_clients_queued_job_is_not_started(server, client):
    """Running and queued clients die at about the same time: when the running one is
    reaped, the queued one is dequeued with its client silent, and is not started."""
    img, m = photo(seed=22), soft_mask()
    client.edit(raw(img), raw(m), op="remove", units=[3], steps=1)  # its session: adapt at once
    header_a, frames_a = edit_request(LONG)
    frames_a[0] = img.tobytes()
    running_d, queued_d = RawDealer(server.endpoint), RawDealer(server.endpoint)
    try:
        running_d.send(header_a, frames_a)
        a = running_d.recv_until(("accepted",))["job"]
        header, frames = edit_request(20)
        queued_d.send(header, frames)
        b = queued_d.recv_until(("accepted",))["job"]
        running_d.send({"v": 1, "kind": "heartbeat", "id": "hb", "job": a})
        # The queued client goes silent 1 s after the running one: when the running job is
        # reaped (3 s of silence) the queued one has been silent for ~2 s, below the reaping
        # timeout but past missing four heartbeats (0.25 s each) and a third of the timeout.
        time.sleep(1.0)
        queued_d.send({"v": 1, "kind": "heartbeat", "id": "hb", "job": b})
    finally:
        running_d.close()
        queued_d.close()
    wait_until(lambda: not server.jobs, "both jobs to end")
    mine = [line for line in server.lines if f" {b} " in line]
    assert mine and "before it started" in mine[-1] and "no heartbeat" in mine[-1], mine
    assert any(f" {a} " in line and "adapt cancelled" in line for line in server.lines)


# -- errors ----------------------------------------------------------------------------------
def test_errors_have_stable_codes(server, client):
    img, m = raw(photo()), raw(soft_mask())
    cases = [
        (dict(op="remove", units=[1], model="stylegan9"), "unknown_model"),
        (dict(op="remove", concept="no-such-concept"), "unknown_concept"),
        (dict(op="remove", units=[99999]), "bad_request"),
        (dict(op="explode", units=[1]), "bad_request"),
    ]
    for kwargs, code in cases:
        with pytest.raises(ServerError) as e:
            client.edit(img, m, **kwargs)
        assert e.value.code == code, kwargs
    big = RawImage(bytes(2000 * 10 * 3), 2000, 10, 3, "u8")
    with pytest.raises(ServerError) as e:  # refused by the client, from hello's limits
        client.reconstruct(big)
    assert e.value.code == "too_large"
    dealer = RawDealer(server.endpoint)  # and by the server, for clients that do not check
    try:
        dealer.send(
            {
                "v": 1,
                "kind": "reconstruct",
                "id": "big",
                "image": {"width": 2000, "height": 10, "channels": 3, "dtype": "u8"},
            },
            [big.data],
        )
        reply, _ = dealer.recv()
        assert reply["error"]["code"] == "too_large" and reply["id"] == "big"
    finally:
        dealer.close()


def test_status_and_hello_report_the_byte_budget(server, client):
    limits = client.hello()["limits"]
    assert limits["max_pending_bytes"] == Limits().max_pending_bytes
    client.reconstruct(raw(photo(seed=23)), steps=2)

    # Idle: no job inputs held; only replies that could not be delivered (earlier tests
    # closed sockets with jobs) are kept, each for its owner.
    def only_kept_replies() -> bool:
        kept = sum(f.nbytes for f in list(server.finished.values()))
        return client.status()["pending_bytes"] == kept

    wait_until(only_kept_replies, "status to count kept replies only")


def test_past_the_byte_budget_jobs_are_busy(tmp_path, monkeypatch):
    """A server whose budget holds two of these edits: the third is refused with busy
    saying why, while the job count limit is far away."""
    monkeypatch.setenv("GANPAINT_DATA", str(tmp_path))
    per_job = 64 * 48 * 4 + 64 * 48
    cfg = ServerConfig(
        bind="tcp://127.0.0.1:*",
        steps=20,
        invert_steps=30,
        limits=Limits(max_side=1024, max_queue=8, max_pending_bytes=2 * per_job + 100),
    )
    with running_server(cfg, log=lambda line: None) as srv:
        dealer = RawDealer(srv.endpoint)
        try:
            jobs = []
            for _ in range(2):
                header, frames = edit_request(LONG)
                dealer.send(header, frames)
                jobs.append(dealer.recv_until(("accepted",))["job"])
            assert srv.pending_bytes() == 2 * per_job
            header, frames = edit_request(LONG)
            dealer.send(header, frames)
            reply = dealer.recv_until(("error",))
            assert reply["error"]["code"] == "busy" and reply["id"] == header["id"]
            assert "budget" in reply["error"]["message"]
            for job in jobs:
                dealer.send({"v": 1, "kind": "cancel", "id": "c", "job": job})
            wait_until(lambda: not srv.jobs, "the cancelled jobs to end")
            assert srv.pending_bytes() == 0  # the inputs went with the jobs
        finally:
            dealer.close()


def test_a_full_queue_answers_busy(server, client):
    dealer = RawDealer(server.endpoint)
    jobs = []
    try:
        for _ in range(3):  # one running + max_queue (2) waiting
            header, frames = edit_request(LONG)
            dealer.send(header, frames)
            jobs.append(dealer.recv_until(("accepted",))["job"])
        header, frames = edit_request(LONG)
        dealer.send(header, frames)
        reply = dealer.recv_until(("error",))
        assert reply["error"]["code"] == "busy" and reply["id"] == header["id"]
    finally:
        for job in jobs:
            client.cancel(job)
        dealer.close()
    wait_until(lambda: not client.status()["jobs"], "the cancelled jobs to end")


# -- concepts --------------------------------------------------------------------------------
def test_edit_with_a_built_in_concept(client):
    concepts = client.concepts()
    names = [c["name"] for c in concepts]
    assert "dark hair" in names
    assert all({"name", "source", "units", "origin", "ops"} <= set(c) for c in concepts)
    assert not any(c["hidden"] for c in concepts)  # unnamed ones only when asked for all
    every = client.concepts(all=True)
    assert len(every) > len(concepts) and all(c["hidden"] for c in every if c["name"] not in names)
    img, m = photo(seed=5), soft_mask()
    res = client.edit(raw(img), raw(m), op="add", concept="dark hair", strength="low")
    assert res["concept"] == "dark hair" and len(res["units"]) == 4  # "low" = the top 4 units
    assert res["strength"] == "low"
    assert np.array_equal(array(res["image"])[m == 0], img[m == 0])
    # No strength: the concept's default, else "high" (the GANPaint demo's default, 15 units);
    # leave_out skips ranked units and the next ones move up.
    hair = next(c for c in concepts if c["name"] == "dark hair")
    want = hair.get("default_strength", "high")
    n = min(hair.get("strengths", {"high": 15}).get(want, 15), len(hair["units"]))
    res = client.edit(
        raw(img), raw(m), op="remove", concept="dark hair", leave_out=hair["units"][:1]
    )
    assert res["strength"] == want
    assert res["units"] == [u for u in hair["units"] if u != hair["units"][0]][:n]


def test_learn_a_concept_then_use_it(client):
    img, m = photo(seed=6), soft_mask()
    learned = client.learn_concept(raw(img), raw(m), name="test thing")
    assert learned["name"] == "test thing" and learned["units"] and learned["job"]
    mine = [c for c in client.concepts() if c["name"] == "test thing"]
    assert mine and mine[0]["origin"] == "user" and mine[0]["source"] == "learned"
    with pytest.raises(ServerError) as e:  # refused at once: the name is taken
        client.learn_concept(raw(img), raw(m), name="test thing")
    assert e.value.code == "bad_request" and "already exists" in e.value.message
    res = client.edit(raw(img), raw(m), op="remove", concept="test thing")
    assert res["session_reused"] is True  # learning inverted this very region


def test_discover_groups_units_and_draws_a_sheet(client):
    res = client.discover(groups=3, samples=24, sheet=True)
    assert len(res["concepts"]) == 3 and res["saved"] is False
    assert [c["name"] for c in res["concepts"]] == ["group-01", "group-02", "group-03"]
    sheet = res["image"]
    assert sheet.channels == 3 and sheet.dtype == "u8" and sheet.width > sheet.height > 0


def write_user_concepts(concepts: list[dict]) -> None:
    """Put concepts straight into the server's user file, as a hand-edited or older file
    would be, without the import checks."""
    lib = ConceptLibrary(DEFAULT_MODEL)
    atomic_write_json(
        lib.user_path,
        {"format": "ganpaint-concepts", "version": 1, "model": DEFAULT_MODEL, "concepts": concepts},
    )


def bad_concept(name: str, **over) -> dict:
    base = {"name": name, "model": DEFAULT_MODEL, "layer": "layer2", "units": [1, 2]}
    return {**base, "values": [1.0, 1.0], "source": "learned", **over}


def test_broken_concepts_are_refused_at_use_and_never_blacken_a_session(server, client):
    img, m = photo(seed=24), soft_mask()
    write_user_concepts(
        [
            bad_concept("bad-layer", layer="../../etc/passwd"),
            bad_concept("bad-unit", units=[999999], values=[1.0]),
            bad_concept("bad-unit-quantiles", units=[999999], values=None),
            bad_concept("huge", values=[9000.0, 9000.0]),  # a finite float32, not an activation
        ]
    )
    for name, says in [
        ("bad-layer", "no layer"),
        ("bad-unit", "out of range"),
        ("bad-unit-quantiles", "out of range"),
        ("huge", "far outside"),
    ]:
        with pytest.raises(ServerError) as e:
            client.edit(raw(img), raw(m), op="add", concept=name)
        assert e.value.code == "bad_request" and says in e.value.message, (name, e.value)
    # A value that overflows float32 does not even load: the file is set aside, the name is
    # unknown, and the built-ins carry on.
    write_user_concepts([bad_concept("v39", values=[1e39, 1e39])])
    with pytest.raises(ServerError) as e:
        client.edit(raw(img), raw(m), op="add", concept="v39")
    assert e.value.code == "unknown_concept"
    res = client.edit(raw(img), raw(m), op="add", concept="dark hair")
    assert np.isfinite(res["psnr_keep"])
    got = array(res["image"])[m > 0][:, :3]
    assert got.max() > 0 and not np.array_equal(got, np.zeros_like(got))
    assert not any("internal error" in line for line in server.lines)


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast")
def test_a_non_finite_fit_is_an_error_and_leaves_the_session_as_it_was():
    """The pipeline fed values that overflow float32 (what validation now keeps out) gives
    NaN; the runner's guard turns that into an error and undoes what the job stored."""
    gen = load_model(DEFAULT_MODEL, "cpu")
    cfg = PipelineConfig(
        invert=InvertConfig(starts=2, z_steps=4, r_steps=4), adapt=AdaptConfig(steps=3)
    )
    img, m = photo(seed=25), soft_mask()
    poison = EditSpec([1, 2], "add", [1e39, 1e39])
    cache = SessionCache(1 << 30)

    guard = GuardedCache(cache)
    res = edit_photo(gen, img, m, poison, cfg, cache=guard)
    assert not np.isfinite(res.psnr_keep)  # the poison is real
    with pytest.raises(ProtocolError) as e:
        check_finite(res, guard)
    assert e.value.code == "internal" and "non-finite" in e.value.message
    assert len(cache) == 0  # the new session went

    good = EditSpec([1, 2], "remove")
    guard = GuardedCache(cache)
    check_finite(edit_photo(gen, img, m, good, cfg, cache=guard), guard)
    (session,) = [cache[k] for k in cache]
    fit = session.fit
    guard = GuardedCache(cache)
    res = edit_photo(gen, img, m, poison, cfg, cache=guard)
    assert res.session_reused and not np.isfinite(res.psnr_keep)
    with pytest.raises(ProtocolError):
        check_finite(res, guard)
    assert session.fit is fit  # the poisoned fit was not kept
    again = edit_photo(gen, img, m, good, cfg, cache=GuardedCache(cache))
    assert again.session_reused and np.isfinite(again.psnr_keep)


def test_large_pixels_arrive_as_an_upload_under_credit(server):
    """A server whose messages take 1 KiB of pixels: the client sends a 12 KiB photo as an
    upload, chunk by chunk as the server grants credit, and gets the same edit as in one
    message. A raw client's upload: its bytes are reserved at the start (pending_bytes), a
    chunk out of order or from another connection is bad_request, one with no credit left
    open past the heartbeat timeout is dropped and its bytes freed."""
    img, m = photo(seed=31), soft_mask()
    cfg = replace(server.cfg, limits=replace(server.cfg.limits, chunk_bytes=1024))
    edit = dict(op="add", units=[3, 5], quality="fast")
    with running_server(cfg, log=lambda line: None) as small:
        with Client(small.endpoint, timeout_s=30.0) as c:
            chunk = c.hello()["limits"]["chunk_bytes"]
            assert chunk == 1024 and c._needs_upload([raw(img).data])
            uploaded = c.edit(raw(img), raw(m), **edit)
        a, b = RawDealer(small.endpoint, b"gp-a-" + bytes(16)), RawDealer(small.endpoint)
        try:
            head = {"v": 2, "kind": "edit", "id": "up-1", "upload": True, "units": [3]}
            head |= {"op": "add", "image": raw(img).meta(), "mask": raw(m).meta()}
            a.send(head)
            start = a.recv_until(("upload",))
            total = img.nbytes + m.nbytes
            assert start["total_bytes"] == total and start["next"] == 0 and start["credit"] == 8
            assert small.pending_bytes() == total  # reserved before any chunk came
            data = raw(img).data + raw(m).data
            piece = {"v": 2, "kind": "chunk", "id": "up-1", "upload": start["upload"]}
            a.send({**piece, "index": 0}, [data[:1024]])
            assert a.recv_until(("credit",))["credit"] == 9
            b.send({**piece, "index": 1}, [data[1024:2048]])  # another connection's upload
            assert b.recv_until(("error",))["error"]["code"] == "bad_request"
            a.send({**piece, "index": 2}, [data[2048:3072]])  # chunk 1 skipped
            assert a.recv_until(("error",))["error"]["code"] == "bad_request"
            assert small.pending_bytes() == 0  # the upload is gone with its bytes
            a.send({**head, "id": "up-2"})  # a new one, left without chunks
            a.recv_until(("upload",))
            assert small.pending_bytes() == total
            wait_until(lambda: small.pending_bytes() == 0, "the silent upload to be dropped")
        finally:
            a.close()
            b.close()
    with running_server(server.cfg, log=lambda line: None) as whole:
        with Client(whole.endpoint, timeout_s=30.0) as c:
            assert not c._needs_upload([raw(img).data])
            sent_whole = c.edit(raw(img), raw(m), **edit)
    assert np.array_equal(array(uploaded["image"]), array(sent_whole["image"]))


def test_an_edit_may_ask_before_drawing_a_large_selection_anew(client):
    img = photo(320, 320, channels=3, seed=7)
    m = np.zeros((320, 320), np.uint8)
    m[60:260, 60:260] = 255  # its crop is > 4× the model's 64 px
    units = list(range(0, 256, 4))  # many units at once: new structure, not a recolour
    with pytest.raises(ServerError) as e:
        client.edit(raw(img), raw(m), op="add", units=units, confirm_replaced=0.0)
    assert e.value.code == "would_replace"
    assert "of the selection anew" in e.value.message and "enlarged" in e.value.message
    # Asked and answered: the same edit without the question runs on the kept inversion.
    res = client.edit(raw(img), raw(m), op="add", units=units)
    assert res["session_reused"] and res["metrics"]["replaced_fraction"] > 0
    with pytest.raises(ServerError, match="confirm_replaced"):
        client.edit(raw(img), raw(m), op="add", units=units, confirm_replaced=1.5)
