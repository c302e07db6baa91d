"""The client library moves its connection state only along chatcore's table."""

from __future__ import annotations

import pytest

from chatcore.states import ConnectionState as CS, TransitionError
from reference_server.client import ChatClient


def test_client_moves_along_the_table_and_refuses_the_rest():
    c = ChatClient("http://127.0.0.1:9", "alice", "pw", transport="short_polling")
    assert c.state is CS.DISCONNECTED
    with pytest.raises(TransitionError):
        c._connected()  # a poll cannot succeed before the client started connecting
    c._move(CS.CONNECTING)
    c._connected()
    assert c.state is CS.CONNECTED and c.connects == 1
    c._move(CS.BACKING_OFF)
    with pytest.raises(TransitionError, match="backing_off -> connected"):
        c._move(CS.CONNECTED)
    c._move(CS.DISCONNECTED)  # closing is allowed from any state
