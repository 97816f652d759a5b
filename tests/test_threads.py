"""The CPU thread budget: one intra-op thread per free core, a fixed count when asked, restored after."""

from __future__ import annotations

import pytest
import torch
from sparsebridge import threads
from sparsebridge.errors import SparsebridgeError


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.delenv(threads.ENV_VAR, raising=False)


class FakeClock:
    """/proc/stat and our own CPU time as the test says, to fake another process's load."""

    def __init__(self, monkeypatch) -> None:
        self.wall = self.busy = self.own = 0.0
        monkeypatch.setattr(threads.time, "monotonic", lambda: self.wall)
        monkeypatch.setattr(threads, "_busy_seconds", lambda: self.busy)
        monkeypatch.setattr(threads, "_own_seconds", lambda: self.own)

    def advance(self, seconds: float, ours: float, others: float) -> None:
        self.wall += seconds
        self.own += ours * seconds
        self.busy += (ours + others) * seconds


def test_a_foreign_busy_core_leaves_one_thread_and_it_comes_back(two_cores, monkeypatch):
    clock = FakeClock(monkeypatch)
    monkeypatch.setattr(threads, "runnable_others", lambda: 0.0)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with threads.cpu_thread_budget(torch.device("cpu")) as budget:
            assert budget.threads == 2
            clock.advance(1.0, ours=1.0, others=1.0)  # another process keeps one core busy
            budget.tick()
            assert (budget.threads, torch.get_num_threads()) == (1, 1)
            assert budget.foreign == pytest.approx(1.0)
            clock.advance(0.1, ours=1.0, others=0.0)  # within the window: no re-measurement
            budget.tick()
            assert budget.threads == 1
            clock.advance(1.0, ours=1.0, others=0.1)  # the other process stopped
            budget.tick()
            assert budget.threads == 2
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(before)


def test_the_start_reads_the_runnable_tasks(two_cores, monkeypatch):
    FakeClock(monkeypatch)
    monkeypatch.setattr(threads, "runnable_others", lambda: 1.0)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with threads.cpu_thread_budget(torch.device("cpu")) as budget:
            assert torch.get_num_threads() == budget.threads == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_torch_thread_count_is_a_cap(two_cores, monkeypatch):
    FakeClock(monkeypatch)
    monkeypatch.setattr(threads, "runnable_others", lambda: 0.0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the caller asked for one thread: auto never uses more
    try:
        with threads.cpu_thread_budget(torch.device("cpu")) as budget:
            assert budget.threads == 1
    finally:
        torch.set_num_threads(before)


def test_fixed_count_from_the_environment(two_cores, monkeypatch):
    monkeypatch.setenv(threads.ENV_VAR, "3")
    before = torch.get_num_threads()
    try:
        with threads.cpu_thread_budget(torch.device("cpu")) as budget:
            assert budget.threads == torch.get_num_threads() == 3
            budget.tick()
            assert budget.threads == 3
    finally:
        torch.set_num_threads(before)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_environment_value_is_one_clear_error(monkeypatch, value):
    monkeypatch.setenv(threads.ENV_VAR, value)
    with pytest.raises(SparsebridgeError, match=f"{threads.ENV_VAR}={value!r}"):
        threads.fixed_threads()


def test_off_cpu_nothing_is_touched():
    with threads.cpu_thread_budget(torch.device("meta")) as budget:
        assert budget is None


def test_encoder_attribute_fixes_the_count(encoder, monkeypatch):
    seen = []
    real = threads.ThreadBudget.start

    def start(self):
        real(self)
        seen.append(self.threads)

    monkeypatch.setattr(threads.ThreadBudget, "start", start)
    encoder.num_threads = 1
    try:
        encoder.encode(["one text"])
    finally:
        del encoder.num_threads
    assert seen == [1]


def test_runnable_others_excludes_our_own_threads(monkeypatch, tmp_path):
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("0.50 0.40 0.30 3/120 4242\n")
    monkeypatch.setattr(threads, "_LOADAVG", loadavg)
    monkeypatch.setattr(threads, "_own_running_threads", lambda: 1)
    assert threads.runnable_others() == 2.0
    monkeypatch.setattr(threads, "_own_running_threads", lambda: 3)  # our spinning workers are not foreign
    assert threads.runnable_others() == 0.0


@pytest.mark.parametrize(("others", "expected"), [(0.0, 2), (1.0, 1)])
def test_a_count_decided_once_reads_a_window_not_an_instant(two_cores, monkeypatch, others, expected):
    # A backend's count is fixed when its model compiles (issue 24): a task runnable at that instant
    # (here: always one, as the look itself might see) must not cost a thread for the process's life;
    # a core that others keep busy over the whole window must.
    clock = FakeClock(monkeypatch)
    monkeypatch.setattr(threads, "runnable_others", lambda: 1.0)
    monkeypatch.setattr(threads.time, "sleep", lambda s: clock.advance(s, ours=0.0, others=others))
    assert threads.settled_threads() == expected


def test_a_count_decided_once_honours_the_fixed_count(two_cores, monkeypatch):
    monkeypatch.setenv(threads.ENV_VAR, "3")
    assert threads.settled_threads() == 3
