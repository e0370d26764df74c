"""The launcher's one exit code for several processes, and how it reads its command line."""

from __future__ import annotations

import pytest

from icu_unlearn.errors import UsageError
from icu_unlearn.launch import split_argv, worst_exit_code


def test_worst_exit_code_hand_worked():
    """Return codes as subprocess gives them (-15: killed by SIGTERM, 15)."""
    assert worst_exit_code([0]) == 0
    assert worst_exit_code([3, 3]) == 3  # both ranks ran out of epochs: incomplete
    # rank 0 exited 3 and the agent then killed rank 1: the kill is a consequence
    assert worst_exit_code([3, -15]) == 3
    assert worst_exit_code([2, 3]) == 2  # bad input over incomplete
    assert worst_exit_code([130, 2]) == 130  # interrupted over bad input
    assert worst_exit_code([3, 1]) == 1 and worst_exit_code([130, 137]) == 137  # crashes win
    assert worst_exit_code([-2]) == 130  # SIGINT (2): 128 + 2, the shell's interrupted code
    assert worst_exit_code([-15, -9]) == 143  # only signals: 128 + 15 beats 128 + 9


def test_the_command_follows_a_double_dash():
    options, command = split_argv(["--num_processes", "2", "--", "run", "c.yaml", "--", "x"])
    assert options == ["--num_processes", "2"] and command == ["run", "c.yaml", "--", "x"]
    for bad in ([], ["--num_processes", "2", "run"], ["--num_processes", "2", "--"]):
        with pytest.raises(UsageError, match="--"):
            split_argv(bad)
