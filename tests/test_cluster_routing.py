"""The cluster's routing and turn-taking (no Ray needed), and Ray as an optional import."""

from __future__ import annotations

import subprocess
import sys

from ganpaint.server.cluster.fair import FairQueue
from ganpaint.server.cluster.ring import HashRing

NAMES = ["w0", "w1", "w2"]
KEYS = [f"photo-{i}" for i in range(3000)]


def test_the_ring_spreads_keys_and_moves_only_a_leaving_workers_keys():
    ring = HashRing(NAMES)
    home = {k: ring.lookup(k, NAMES) for k in KEYS}
    shares = [sum(1 for w in home.values() if w == n) / len(KEYS) for n in NAMES]
    assert min(shares) > 0.2  # a fair share each (1/3 ± sampling and placement)
    live = ["w0", "w2"]
    moved = {k: ring.lookup(k, live) for k in KEYS}
    assert all(moved[k] == home[k] for k in KEYS if home[k] != "w1")  # the others stay
    assert {moved[k] for k in KEYS if home[k] == "w1"} == {"w0", "w2"}  # w1's spread out
    assert all(ring.lookup(k, NAMES) == home[k] for k in KEYS)  # back when it returns
    assert ring.lookup("photo-1", []) is None
    assert HashRing(reversed(NAMES)).lookup("photo-7", NAMES) == home["photo-7"]


def test_the_queue_takes_turns_among_seats():
    q: FairQueue[str] = FairQueue()
    for i in range(4):
        q.push("busy", f"b{i}")
    q.push("quiet", "q0")
    q.push("late", "l0")
    assert q.order() == ["b0", "q0", "l0", "b1", "b2", "b3"]
    popped = [q.pop() for _ in range(3)]
    assert popped == ["b0", "q0", "l0"]
    q.push("quiet", "q1")  # the quiet seat comes back: its turn comes before busy's third
    assert q.order() == ["b1", "q1", "b2", "b3"]
    q.push("late", "l1", first=True)  # a job run again after its worker died goes first
    assert q.pop() == "l1" and q.count("busy") == 3 and len(q) == 4
    assert q.pop(lambda item: item.startswith("q")) == "q1"
    assert q.remove("b2") and not q.remove("b2")
    assert q.clear() == ["b1", "b3"] and len(q) == 0 and q.pop() is None


def test_the_server_works_without_ray_and_cluster_asks_for_the_extra():
    """Ray blocked: the server and the CLI import, and --cluster is one clear line, exit 2."""
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "import ganpaint.server.server\n"
        "from ganpaint.server.cli.main import main\n"
        "sys.exit(main(['serve', '--cluster', 'ray', '--workers', '2']))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 2
    assert "pip install 'ganpaint[cluster]'" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
