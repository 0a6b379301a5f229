"""The restart policy of `capmesh up` and `capmesh gateway --workers`, on a clock the test moves."""

from __future__ import annotations

from capmesh.services.runtime.restarts import CRASH_LOOP_EXITS, CRASH_LOOP_WINDOW_S, CrashHistory


def test_the_backoff_doubles_then_a_crash_loop_ends_the_restarts() -> None:
    now = [0.0]
    history = CrashHistory(clock=lambda: now[0])
    delays = []
    for _ in range(CRASH_LOOP_EXITS - 1):
        delays.append(history.exited())
        now[0] += 1.0
    assert delays == [0.5, 1.0, 2.0, 4.0]
    assert history.exited() is None and history.recent == CRASH_LOOP_EXITS


def test_exits_older_than_the_window_are_forgotten() -> None:
    now = [0.0]
    history = CrashHistory(clock=lambda: now[0])
    assert [history.exited(), history.exited()] == [0.5, 1.0]
    now[0] += CRASH_LOOP_WINDOW_S + 1  # it served a while: it starts over
    assert history.exited() == 0.5 and history.recent == 1
