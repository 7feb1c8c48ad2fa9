"""The server scaled out on a local Ray cluster (127.0.0.1, two CPU workers), end to end over
real sockets: the protocol through the cluster front, sessions that stay with their photo's
worker, results equal to the single-process server's, and a worker killed mid-job.

Needs the optional extra (``pip install 'ganpaint[cluster]'``); skipped without Ray. The
protocol tests run here are 17 of the 23 of test_server_jobs.py: those that use one server.
The ones that start more servers of the same configuration (prepare, shared sessions,
uploads, the byte budget's own server) or depend on one queue for every photo (a dead
client's queued job), and the runner's own non-finite check, stay with the single server.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

from test_server_jobs import (  # noqa: E402  (the protocol tests, run through the cluster)
    DEADLINE_S,
    array,
    photo,
    raw,
    soft_mask,
    test_a_client_that_stops_sending_heartbeats_has_its_job_cancelled,  # noqa: F401
    test_a_full_queue_answers_busy,  # noqa: F401
    test_a_reconnected_client_gets_its_replies_and_no_one_else_does,  # noqa: F401
    test_another_client_heartbeating_or_polling_a_job_gets_nothing_of_it,  # noqa: F401
    test_broken_concepts_are_refused_at_use_and_never_blacken_a_session,  # noqa: F401
    test_cancel_mid_job_then_the_next_job_runs,  # noqa: F401
    test_cancel_queued_and_running_jobs_from_another_client,  # noqa: F401
    test_discover_groups_units_and_draws_a_sheet,  # noqa: F401
    test_edit_keeps_unselected_pixels_and_reuses_the_session,  # noqa: F401
    test_edit_with_a_built_in_concept,  # noqa: F401
    test_errors_have_stable_codes,  # noqa: F401
    test_fast_quality_edit,  # noqa: F401
    test_hello_models_concepts_status,  # noqa: F401
    test_learn_a_concept_then_use_it,  # noqa: F401
    test_reconstruct_u16_rgb,  # noqa: F401
    test_status_and_hello_report_the_byte_budget,  # noqa: F401
    test_two_clients_at_once_both_get_their_own_result,  # noqa: F401
    wait_until,
)

from ganpaint.server.client.ganpaint_client import Client  # noqa: E402
from ganpaint.server.config import ClusterConfig, Limits, ServerConfig  # noqa: E402
from ganpaint.server.testing import running_server  # noqa: E402

pytestmark = pytest.mark.cluster

SINGLE = ServerConfig(
    bind="tcp://127.0.0.1:*",
    steps=20,
    invert_steps=30,
    limits=Limits(max_side=1024, max_queue=2, heartbeat_s=0.25, heartbeat_timeout_s=3.0),
)
WORKERS = 2


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Learned concepts go to a scratch library, shared by the front and its workers (they
    inherit the environment of the process that starts the cluster)."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("data")
        mp.setenv("GANPAINT_DATA", str(path))
        yield path


@pytest.fixture(scope="module")
def server(data_dir):
    cluster = ClusterConfig(workers=WORKERS, threads=1, object_store_mb=256)
    cfg = ServerConfig(**{**SINGLE.__dict__, "cluster": cluster})
    lines: list[str] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the single-process reference runs as the workers do
    try:
        with running_server(cfg, log=lines.append) as srv:
            srv.lines = lines
            yield srv
    finally:
        torch.set_num_threads(threads)
        assert not ray.is_initialized()  # the front stopped the cluster it started


@pytest.fixture
def client(server):
    c = Client(server.endpoint, timeout_s=10.0, retries=2)
    yield c
    c.close()


def edit_on(endpoint: str, img: np.ndarray, times: int, out: list, session=None, **kw) -> None:
    m = soft_mask()
    with Client(endpoint, timeout_s=30.0, session=session) as c:
        for _ in range(times):
            out.append(c.edit(raw(img), raw(m), op="add", units=[3, 5], **kw))


def test_status_lists_each_worker(client):
    workers = client.status()["workers"]
    assert len(workers) == WORKERS
    for w in workers:
        assert w["up"] and w["device"] == "cpu" and w["host"]
        assert {"queued", "running", "sessions", "done", "models_loaded"} <= set(w)


def test_six_seats_four_edits_on_three_photos_reuse_sessions_and_match_one_server(server):
    """Six seats (each its own session secret, as each GIMP has), two on each photo, four
    edits each: every seat's later edits find its session (so each photo's edits of a seat
    ran on one worker), and its four results are exactly those of the single-process server
    making the same four edits in a row."""
    photos = [photo(seed=40 + i) for i in range(3)]
    got: list[list[dict]] = [[] for _ in range(6)]
    seats = [
        threading.Thread(
            target=edit_on,
            args=(server.endpoint, photos[i % 3], 4, got[i]),
            kwargs={"session": f"seat-{i}-" + "s" * 16},
        )
        for i in range(6)
    ]
    for t in seats:
        t.start()
    for t in seats:
        t.join(DEADLINE_S * 4)
    want: list[list[dict]] = [[] for _ in range(3)]
    with running_server(SINGLE, log=lambda line: None) as single:
        for i, img in enumerate(photos):
            edit_on(single.endpoint, img, 4, want[i])
    for i in range(6):
        assert [r["session_reused"] for r in got[i]] == [False, True, True, True]
        for mine, theirs in zip(got[i], want[i % 3], strict=True):
            assert np.array_equal(array(mine["image"]), array(theirs["image"]))
    assert sum(w["sessions"] for w in server.queue.workers()) >= 6
    assert all(w["done"] > 0 for w in server.queue.workers())  # both workers took seats


def test_a_worker_killed_mid_job_the_job_finishes_elsewhere(server):
    """kill -9 the worker running an edit: the client's progress goes on (from the start, on
    the other worker, which rebuilds the session) and its result is the one the single
    server gives for the same edit; Ray starts the dead worker again and it rejoins."""
    img = photo(seed=50)
    seen: list[dict] = []
    killed: dict[str, float] = {}
    out: list[dict] = []

    def killer() -> None:
        wait_until(lambda: any(p["stage"] == "adapt" for p in seen), "the job to adapt")
        slot = next(s for s in server.queue.slots if s.running is not None)
        pid = ray.get(slot.handle.info.remote())["pid"]
        killed["at"], killed["seen"] = time.monotonic(), len(seen)
        os.kill(pid, signal.SIGKILL)

    k = threading.Thread(target=killer)
    k.start()
    edit_on(server.endpoint, img, 1, out, steps=300, progress=seen.append)
    k.join(DEADLINE_S)
    res = out[0]
    after = seen[killed["seen"] :]
    assert any(p["stage"] == "invert" for p in after)  # it ran again, from the inversion
    assert res["session_reused"] is False
    assert any("running it again on another worker" in line for line in server.lines)
    with running_server(SINGLE, log=lambda line: None) as single:
        want: list[dict] = []
        edit_on(single.endpoint, img, 1, want, steps=300)
    assert np.array_equal(array(res["image"]), array(want[0]["image"]))
    wait_until(lambda: all(w["up"] for w in server.queue.workers()), "the worker to rejoin")
