"""The event bus's stored form: what the API reads back is what the worker published."""

from __future__ import annotations

import json

import fakeredis

from shared.bus import Emitter, EventBus
from shared.schema.events import OutputTextDelta, ResponseEvent


def test_a_terminal_events_response_is_cut_out_exactly() -> None:
    bus = EventBus(fakeredis.FakeRedis(), ttl_seconds=60)
    # a value that looks like the member being cut must not confuse the cut
    response = {"id": "resp_1", "status": "completed", "note": 'x "response": y'}
    Emitter(bus, "resp_1").emit(
        OutputTextDelta(item_id="m", output_index=0, content_index=0, delta='"response":'),
        ResponseEvent(type="response.completed", response=response),
    )
    delta, final = bus.read("resp_1", after=-1)
    assert final.terminal and not delta.terminal
    assert json.loads(final.response_json()) == response
    assert final.json()["response"] == response
