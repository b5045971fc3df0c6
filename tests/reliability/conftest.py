"""Chaos suite plumbing: every scenario records (scenario, trials, passed, figure) and the session
ends with one table of them, so a CI log shows in figures what survived which fault.

Why a table and not just pass/fail: a reliability claim ("zero orphan pods in 12 trials") is a
number someone quotes; the assertions make the test fail, the table says how much was exercised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest


@dataclass
class Row:
    scenario: str
    trials: int
    passed: int
    figure: str


ROWS: list[Row] = []


@pytest.fixture
def chaos_record() -> Callable[[str, int, int, str], None]:
    """``chaos_record(scenario, trials, passed, figure)``: add one row to the session's table.

    Tests record *before* asserting, so a failing scenario still shows its figures."""

    def record(scenario: str, trials: int, passed: int, figure: str) -> None:
        ROWS.append(Row(scenario, trials, passed, figure))

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ROWS:
        return
    header = ("scenario", "trials", "passed", "figure")
    cells = [header, *((r.scenario, str(r.trials), str(r.passed), r.figure) for r in ROWS)]
    widths = [max(len(row[i]) for row in cells) for i in range(3)]
    terminalreporter.section("trainpod chaos summary")
    for i, row in enumerate(cells):
        line = f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}"
        terminalreporter.write_line(line)
        if i == 0:
            terminalreporter.write_line("-" * len(line))
