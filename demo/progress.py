"""The demo's long steps on the console: a bar that updates in place on a terminal, and a few
status lines (one per quarter of the way) when the output is a pipe or a file.

The demo bundle is trained in a child process (:mod:`demo.bundle`) whose own stdout and stderr
go to the training log; it reports how far it is on a pipe of its own, one JSON object a line
(:func:`progress_line`, :func:`message_line`), and :class:`Relay` draws those lines here.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import IO, Any

from tqdm import tqdm

# Status lines per step when the output is not a terminal: at 25%, 50%, 75% and 100%.
PIPE_LINES_PER_STEP = 4


@dataclass(frozen=True)
class Event:
    """A line of the child's progress pipe: a step's progress, or a message when ``total`` is 0."""

    step: str  # what the bar is labelled with, e.g. "detector"
    unit: str  # what is counted, e.g. "it" (iterations)
    done: int
    total: int
    note: str  # a message's text, or the latest state of the step (epoch, loss)


def progress_line(step: str, unit: str, done: int, total: int, note: str = "") -> str:
    fields = {"step": step, "unit": unit, "done": done, "total": total, "note": note}
    return json.dumps(fields) + "\n"


def message_line(text: str) -> str:
    return progress_line("", "", 0, 0, text)


def parse_event(line: str) -> Event:
    """The event a pipe line carries; a line that is not one is shown as a message."""
    try:
        fields: Any = json.loads(line)
        return Event(
            str(fields["step"]),
            str(fields["unit"]),
            int(fields["done"]),
            int(fields["total"]),
            str(fields["note"]),
        )
    except (ValueError, TypeError, KeyError):
        return Event("", "", 0, 0, line.rstrip("\n"))


def is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class StepBar:
    """One long step's progress on ``stream`` (default stdout), fed absolute counts."""

    def __init__(
        self,
        desc: str,
        total: int,
        unit: str,
        stream: IO[str] | None = None,
        *,
        pipe_lines: int = PIPE_LINES_PER_STEP,
    ) -> None:
        self.desc, self.total, self.unit = desc, max(0, total), unit
        self.stream = stream or sys.stdout
        self.pipe_lines = max(1, pipe_lines)
        self.done = 0
        self.note = ""
        self.started = time.monotonic()
        self._lines_printed = 0  # pipe mode: how many of the pipe_lines status lines so far
        self._last_printed = -1
        self._bar: tqdm[Any] | None = None
        if is_terminal(self.stream):
            self._bar = tqdm(
                total=self.total,
                desc=desc,
                unit=unit,
                file=self.stream,
                mininterval=0.5,
                dynamic_ncols=True,
                leave=True,
            )

    def __enter__(self) -> StepBar:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def update(self, done: int, note: str = "") -> None:
        if done > self.total:
            self.total = done
            if self._bar is not None:
                self._bar.total = done
        self.done, self.note = max(self.done, done), note or self.note
        if self._bar is not None:
            self._bar.set_postfix_str(self.note, refresh=False)
            self._bar.update(self.done - self._bar.n)
            return
        reached = self.pipe_lines if self.total == 0 else self.done * self.pipe_lines // self.total
        if reached > self._lines_printed:
            self._lines_printed = reached
            self._print_status()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._last_printed != self.done:
            # Stopped before the end (a failure, or totals that were never reached): say where.
            self._print_status()

    def _print_status(self) -> None:
        share = f" ({100 * self.done // self.total}%)" if self.total else ""
        note = f", {self.note}" if self.note else ""
        took = time.monotonic() - self.started
        self.stream.write(
            f"{self.desc}: {self.done}/{self.total} {self.unit}{share}, {took:.0f} s{note}\n"
        )
        self.stream.flush()
        self._last_printed = self.done


class Relay:
    """Draws a child's progress pipe: a :class:`StepBar` per step, messages as lines."""

    def __init__(self, stream: IO[str] | None = None, *, indent: str = "   ") -> None:
        self.stream = stream or sys.stdout
        self.indent = indent
        self.started = time.monotonic()
        self._step = ""
        self._bar: StepBar | None = None

    def feed(self, line: str) -> None:
        event = parse_event(line)
        if event.total == 0:
            self._close_bar()
            if event.note.strip():
                took = time.monotonic() - self.started
                self.stream.write(f"{self.indent}[{took:5.0f} s] {event.note}\n")
                self.stream.flush()
            return
        if self._bar is None or event.step != self._step:
            self._close_bar()
            self._step = event.step
            self._bar = StepBar(f"{self.indent}{event.step}", event.total, event.unit, self.stream)
        self._bar.update(event.done, event.note)

    def close(self) -> None:
        self._close_bar()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
