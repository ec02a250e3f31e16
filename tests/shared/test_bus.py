"""The event bus's stored form: what the API reads back is what the worker published."""

from __future__ import annotations

import json

import fakeredis

from shared import keys
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


def test_the_cut_does_not_depend_on_where_the_response_member_is() -> None:
    """The span the publisher records, not the member's place, decides the cut; an entry
    from before spans were recorded is parsed, giving the same text."""
    client = fakeredis.FakeRedis()
    bus = EventBus(client, ttl_seconds=60)
    response = {"id": "resp_1", "status": "completed", "note": '"response":{}'}
    event = {"response": response, "type": "response.completed", "sequence_number": 0, "x": 1}
    bus.publish("resp_1", [event])
    (stored,) = bus.read("resp_1")
    assert stored.data == json.dumps(event, separators=(",", ":"))
    assert stored.response_json() == json.dumps(response, separators=(",", ":"))
    client.xadd(keys.events("resp_2"), {"t": stored.type, "d": stored.data}, id="0-1")
    (unspanned,) = bus.read("resp_2")
    assert unspanned.response_span is None
    assert unspanned.response_json() == stored.response_json()
