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

import msgpack
import numpy as np
import pytest
import torch
import zmq

from ganpaint.server.client import Cancelled, Client, RawImage, ServerError
from ganpaint.server.config import Limits, ServerConfig
from ganpaint.server.requests import QUALITIES
from ganpaint.server.testing import running_server

LONG = 5000  # steps for a job that is cancelled long before it ends
DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cfg = ServerConfig(
        bind="tcp://127.0.0.1:*",
        steps=20,
        invert_steps=30,
        limits=Limits(max_side=1024, max_queue=2, heartbeat_s=0.25, heartbeat_timeout_s=2.0),
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

    def __init__(self, endpoint: str):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
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
    assert info["protocol"] == 1 and info["device"] == "cpu"
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
    stages = {p["stage"] for p in seen}
    assert {"queued", "invert", "adapt"} <= stages and all(p["job"] == first["job"] for p in seen)

    second = client.edit(raw(img), raw(m), op="add", units=[3, 5])
    assert second["session_reused"] is True
    assert np.array_equal(array(second["image"])[m == 0], img[m == 0])


@pytest.mark.skipif("fast" not in QUALITIES, reason="the pipeline has no fast fit yet")
def test_fast_quality_edit(client):
    img, m = photo(seed=7), soft_mask()
    assert "fast" in client.hello()["qualities"]
    res = client.edit(raw(img), raw(m), op="remove", units=[3], quality="fast")
    assert res["quality"] == "fast" and res["steps"] <= 20
    assert np.array_equal(array(res["image"])[m == 0], img[m == 0])


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
    outcome: dict[str, BaseException | dict] = {}

    def run(name: str, steps: int) -> None:
        with Client(server.endpoint, timeout_s=10.0) as c:
            try:
                outcome[name] = c.edit(
                    raw(photo(seed=4)), raw(soft_mask()), op="remove", units=[2], steps=steps
                )
            except BaseException as e:
                outcome[name] = e

    long_t = threading.Thread(target=run, args=("long", LONG))
    long_t.start()
    wait_until(lambda: client.status()["running"] is not None, "the long job to start")
    queued_t = threading.Thread(target=run, args=("queued", 20))
    queued_t.start()
    wait_until(lambda: client.status()["queued"], "the second job to queue")
    running, queued = client.status()["running"], client.status()["queued"][0]

    assert client.cancel(queued["job"])["state"] == "cancelled"
    queued_t.join(DEADLINE_S)
    assert isinstance(outcome["queued"], Cancelled)
    assert client.cancel(running["job"])["state"] == "cancelling"
    long_t.join(DEADLINE_S)
    assert isinstance(outcome["long"], Cancelled)
    assert client.cancel(running["job"])["state"] == "finished"
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


def test_a_reconnected_client_gets_its_replies_and_the_final_one_again(server):
    first = RawDealer(server.endpoint)
    header, frames = edit_request(20, rid="retry-me")
    first.send(header, frames)
    job = first.recv_until(("accepted",))["job"]
    first.close()  # the connection is gone; a new socket has a new identity

    second = RawDealer(server.endpoint)
    try:
        final = None
        while final is None:  # heartbeats move the job's replies to this socket
            second.send({"v": 1, "kind": "heartbeat", "id": "retry-me", "job": job})
            h, parts = second.recv()
            if h["kind"] in ("result", "error"):
                final, pixels = h, parts
            time.sleep(0.1)
        assert final["kind"] == "result" and final["job"] == job
        second.send({"v": 1, "kind": "heartbeat", "id": "retry-me", "job": job})
        again, parts = second.recv()
        assert again == final and parts == pixels
        second.send(header, frames)  # the same request id again: no second job
        again, _ = second.recv()
        assert again["kind"] == "result" and again["job"] == job
    finally:
        second.close()


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
    assert np.array_equal(array(res["image"])[m == 0], img[m == 0])


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
