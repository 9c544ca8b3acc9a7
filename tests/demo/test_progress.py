"""What the demo's long steps print: a few lines each however many updates, the rest in a log.

No ML here: the child process is a few lines of Python standing in for demo.train_bundle (it
floods its stdout and stderr as Detectron2 and Keras do, and reports on the progress pipe).
"""

from __future__ import annotations

import io
import sys
import textwrap
from pathlib import Path

import pytest

from demo.bundle import run_reporting_progress
from demo.progress import (
    PIPE_LINES_PER_STEP,
    Relay,
    StepBar,
    message_line,
    parse_event,
    progress_line,
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_step_prints_a_status_line_per_quarter_when_not_on_a_terminal() -> None:
    out = io.StringIO()
    with StepBar("   detector", 600, "it", out) as bar:
        for done in range(1, 601):
            bar.update(done, f"loss {1 / done:.3f}")
    lines = out.getvalue().splitlines()
    assert len(lines) == PIPE_LINES_PER_STEP == 4
    assert [line.split(":")[1].split()[0] for line in lines] == [
        "150/600",
        "300/600",
        "450/600",
        "600/600",
    ]
    assert "(100%)" in lines[-1] and "loss 0.002" in lines[-1]


def test_a_step_that_stops_early_says_where_it_stopped() -> None:
    out = io.StringIO()
    with StepBar("   ingesting", 60, "img", out) as bar:
        for done in range(1, 21):
            bar.update(done, "running, 0 failed")
    lines = out.getvalue().splitlines()
    # 15/60 at the first quarter, then 20/60 when the step ends short of the total.
    assert len(lines) == 2
    assert "15/60" in lines[0] and "20/60 img (33%)" in lines[1]


def test_on_a_terminal_the_bar_updates_in_place() -> None:
    out = Terminal()
    with StepBar("   detector", 600, "it", out) as bar:
        for done in range(1, 601):
            bar.update(done)
    text = out.getvalue()
    assert text.count("\n") == 1, "one line, redrawn with carriage returns"
    assert "\r" in text and "600/600" in text


def test_relay_draws_a_training_run_in_a_bounded_number_of_lines() -> None:
    stream = [message_line("detector: 128 synthetic DeepFashion2 photos converted to COCO (0 s)")]
    stream += [progress_line("detector", "it", i, 600, f"loss {2 / i:.3f}") for i in range(1, 601)]
    stream += [message_line("detector: tiny-gn trained for 600 iterations (205 s)")]
    stream += [message_line("embedder: 96 synthetic In-shop items (1 s)")]
    stream += [
        progress_line("embedder", "batch", i, 6 * 24, f"epoch {1 + (i - 1) // 24}/6")
        for i in range(1, 6 * 24 + 1)
    ]
    stream += [message_line("embedder: ResNet50, metric loss, all layers, 6 epochs (70 s)")]
    out = io.StringIO()
    relay = Relay(out)
    for line in stream:
        relay.feed(line)
    relay.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 + 2 * PIPE_LINES_PER_STEP
    assert "converted to COCO" in lines[0]
    assert "detector: 600/600 it (100%)" in lines[4]
    assert "trained for 600 iterations" in lines[5]
    assert "embedder: 144/144 batch (100%)" in lines[10] and "epoch 6/6" in lines[10]


def test_a_line_that_is_not_an_event_is_shown_as_a_message() -> None:
    assert parse_event("Traceback (most recent call last):\n").note.startswith("Traceback")
    assert parse_event("Traceback (most recent call last):\n").total == 0
    event = parse_event(progress_line("detector", "it", 3, 600, "loss 1.000"))
    assert (event.step, event.unit, event.done, event.total) == ("detector", "it", 3, 600)


CHILD = textwrap.dedent(
    """
    import os, sys
    fd = int(sys.argv[sys.argv.index("--progress-fd") + 1])
    sys.path.insert(0, os.getcwd())
    from demo.progress import message_line, progress_line
    with os.fdopen(fd, "w") as pipe:
        pipe.write(message_line("detector: starting"))
        for i in range(1, 501):
            print(f"[d2.utils.events] iter: {i} total_loss: 1.0", flush=True)
            print(f"UserWarning {i}", file=sys.stderr, flush=True)
            pipe.write(progress_line("detector", "it", i, 500))
            pipe.flush()
    sys.exit(int(sys.argv[1]))
    """
)


@pytest.mark.parametrize("exit_code", [0, 3])
def test_the_child_output_goes_to_the_log_and_the_console_gets_its_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], exit_code: int
) -> None:
    log = tmp_path / "logs" / "training.log"
    code = run_reporting_progress(
        [sys.executable, "-c", CHILD, str(exit_code)], {"PYTHONUNBUFFERED": "1"}, log
    )
    assert code == exit_code
    console = capsys.readouterr().out.splitlines()
    assert len(console) == 1 + PIPE_LINES_PER_STEP, console
    assert "detector: starting" in console[0] and "500/500" in console[-1]
    assert not any("total_loss" in line or "UserWarning" in line for line in console)
    logged = log.read_text()
    assert logged.count("total_loss") == 500 and logged.count("UserWarning") == 500
