"""protocol/pipe.py: the byte pipe's half-close and idle bookkeeping, with a fake clock."""

from __future__ import annotations

from sozu.worker.protocol.pipe import BACK, FRONT, PipeState, Verdict


def test_half_close_passes_the_end_on_then_closes_when_both_ended() -> None:
    pipe = PipeState(front_timeout=60, back_timeout=30, started=0.0)
    assert pipe.ended(FRONT, can_half_close=True) is Verdict.SHUT_OTHER
    assert not pipe.closed
    assert pipe.ended(BACK, can_half_close=True) is Verdict.CLOSE
    assert pipe.closed
    assert pipe.lost() is Verdict.NOTHING


def test_an_end_without_half_close_support_closes() -> None:
    pipe = PipeState(60, 30, 0.0)
    assert pipe.ended(BACK, can_half_close=False) is Verdict.CLOSE


def test_a_lost_side_closes_once() -> None:
    pipe = PipeState(60, 30, 0.0)
    assert pipe.lost() is Verdict.CLOSE
    assert pipe.lost() is Verdict.NOTHING


def test_bytes_and_idle_deadlines() -> None:
    pipe = PipeState(front_timeout=10, back_timeout=4, started=100.0)
    assert pipe.next_deadline() == 104.0
    pipe.received(FRONT, 5, 101.0)
    pipe.received(BACK, 7, 103.0)
    assert (pipe.bytes_in, pipe.bytes_out) == (5, 7)
    assert pipe.idle_side(106.0) is None
    assert pipe.next_deadline() == 107.0
    assert pipe.idle_side(107.0) == BACK
    pipe.received(BACK, 1, 107.0)
    assert pipe.idle_side(111.0) == FRONT


def test_zero_timeouts_never_expire() -> None:
    pipe = PipeState(front_timeout=0, back_timeout=0, started=0.0)
    assert pipe.next_deadline() is None
    assert pipe.idle_side(1e9) is None
