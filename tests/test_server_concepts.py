"""The server's concept library: read once, read again when its file changes, never on the
socket thread; an edit naming a concept and a `concepts` listing use what was read.

No timing assertions: waits have generous deadlines only so that a bug fails instead of
hanging.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from ganpaint.core.concepts import library
from ganpaint.core.concepts.library import ConceptLibrary
from ganpaint.core.concepts.record import Concept
from ganpaint.core.generators import DEFAULT_MODEL
from ganpaint.server.client.ganpaint_client import Client, RawImage, ServerError
from ganpaint.server.config import ServerConfig
from ganpaint.server.testing import running_server


def learned(name: str, units=(3, 1, 4)) -> Concept:
    return Concept(name, DEFAULT_MODEL, "layer2", list(units), [1.0] * len(units), "learned")


@pytest.fixture
def parses(monkeypatch, tmp_path):
    """The threads other than the test's own on which a concepts file (built-in or the
    user's) was parsed, in order: a spy on the parser."""
    monkeypatch.setenv("GANPAINT_DATA", str(tmp_path))
    seen: list[str] = []
    parse = library._parse

    def spy(data, model_id):
        if threading.current_thread() is not threading.main_thread():
            seen.append(threading.current_thread().name)
        return parse(data, model_id)

    monkeypatch.setattr(library, "_parse", spy)
    return seen


def test_the_library_is_read_once_and_again_when_it_changes_never_on_the_socket_thread(parses):
    mine = ConceptLibrary(DEFAULT_MODEL)
    mine.add(learned("first"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = ServerConfig(bind="tcp://127.0.0.1:*", steps=1, invert_steps=2, quality="fast")
    try:
        with running_server(cfg, log=lambda line: None) as srv:
            with Client(srv.endpoint, timeout_s=30.0) as c:
                for _ in range(3):
                    assert "first" in {d["name"] for d in c.concepts()}
                img = RawImage(np.full((16, 16, 3), 90, np.uint8).tobytes(), 16, 16, 3, "u8")
                mask = RawImage(np.full((16, 16), 255, np.uint8).tobytes(), 16, 16, 1, "u8")
                res = c.edit(img, mask, op="add", concept="first")
                assert res["concept"] == "first" and res["units"] == [3, 1, 4]
                with pytest.raises(ServerError) as e:
                    c.edit(img, mask, op="add", concept="second")
                assert e.value.code == "unknown_concept"
                read_before = list(parses)
                # Another process changes the library: the next listing and edit see it.
                ConceptLibrary(DEFAULT_MODEL).add(learned("second", (7, 8)))
                assert "second" in {d["name"] for d in c.concepts()}
                assert c.edit(img, mask, op="add", concept="second")["units"] == [7, 8]
                assert c.concepts()[-1]["name"] == "second"
    finally:
        torch.set_num_threads(threads)
    # The built-ins and the user's file once, ahead of the first request; the user's file
    # once more after the change: not per request, and never on the socket thread.
    assert read_before == ["ganpaint-concepts"] * 2, parses
    assert parses == ["ganpaint-concepts"] * 3
