"""A batch's events checked together (engine.history.events.check_events): an enqueue that a
newer, sound state event of its job in the batch makes the same row as is left out unchecked;
one whose newer event is garbage, or carries no payload, is checked and kept."""

from __future__ import annotations

from engine.history.events import RawEvent, check_events

PAYLOAD = '{"args":[1],"kwargs":{}}'


def _enqueued(job: str, **over: str) -> RawEvent:
    fields = {"e": "enqueued", "j": job, "q": "default", "t": "1000", "v": "1", "task": "t"}
    fields |= {"payload": PAYLOAD, "status": "waiting", "created": "1000", "id": f"1-{job}"}
    return RawEvent(**(fields | over))


def _completed(job: str, **over: str) -> RawEvent:
    fields = {"e": "completed", "j": job, "q": "default", "t": "2000", "v": "2", "task": "t"}
    fields |= {"attempts": "1", "result": "null", "finished": "2000", "payload": PAYLOAD}
    fields |= {"created": "1000", "id": f"2-{job}"}
    return RawEvent(**(fields | over))


def test_an_enqueue_a_sound_newer_event_supersedes_is_left_out_unchecked() -> None:
    # Its status is garbage: checked, it would count as such.
    events, garbage, superseded = check_events([_enqueued("a", status="exploded"), _completed("a")])
    assert [(e.type, e.job_id) for e in events] == [("completed", "a")]
    assert (garbage, superseded) == (0, 1)
    assert events[0].payload == PAYLOAD and events[0].created_ms == 1000


def test_an_enqueue_is_kept_when_its_newer_event_cannot_make_the_row() -> None:
    batch = [
        _enqueued("garbled"),
        _completed("garbled", attempts="many"),  # garbage: the enqueue is all there is
        _enqueued("bare"),
        _completed("bare", payload="", created=""),  # an older engine's: no payload
        _enqueued("alone"),
        _enqueued("later", v="3"),
        _completed("later"),  # v2: older than the enqueue (a replay's)
    ]
    events, garbage, superseded = check_events(batch)
    assert sorted((e.type, e.job_id) for e in events) == [
        ("completed", "bare"),
        ("completed", "later"),
        ("enqueued", "alone"),
        ("enqueued", "bare"),
        ("enqueued", "garbled"),
        ("enqueued", "later"),
    ]
    assert (garbage, superseded) == (1, 0)
