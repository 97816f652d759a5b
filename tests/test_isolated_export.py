"""Export steps in a child process (``sparsebridge.backends.isolated``): the answer, the caller's
exception, and one clear error when the child dies without an answer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sparsebridge.backends.isolated import ExportProcessError, run_isolated
from sparsebridge.errors import SparsebridgeError


def test_the_call_runs_in_another_process_and_its_result_comes_back():
    assert run_isolated(os.getpid) != os.getpid()


def test_the_childs_exception_is_raised_as_it_was(tmp_path):
    missing = tmp_path / "missing.txt"
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        run_isolated(Path.read_text, missing)


def test_a_child_that_dies_is_one_clear_error():
    with pytest.raises(ExportProcessError, match=r"_exit: the export's child process exited with status 3") as info:
        run_isolated(os._exit, 3)
    assert isinstance(info.value, SparsebridgeError)
