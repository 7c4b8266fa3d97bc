"""Process log set-up: level filters, targets, line format, runtime level change, reopen."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from sozu.command import logging as sozu_logging
from sozu.command.logging import (
    DEBUG,
    ERROR,
    INFO,
    OFF,
    WARN,
    LoggingError,
    current_level,
    get_logger,
    parse_level,
    reopen,
    set_level,
    setup_logging,
)

LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (?P<level>ERROR|WARN |INFO |DEBUG) "
    r"\[(?P<process>[^\]]+)\] (?P<rest>.*)$"
)


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    factory = sozu_logging._current_factory()
    if factory is not None:
        factory.close()
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def read(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.mark.parametrize(
    ("spec", "level"),
    [
        ("info", INFO),
        ("INFO", INFO),
        ("warn", WARN),
        ("error", ERROR),
        ("debug", DEBUG),
        ("trace", DEBUG),
        ("off", OFF),
        ("3", INFO),
        ("5", DEBUG),
        ("info,sozu=debug", INFO),
        ("sozu=debug,error", ERROR),
        ("sozu=debug", DEBUG),
        ("sozu=warn,lib=debug", WARN),
        ("sozu=", DEBUG),
        (" info , sozu = trace ", INFO),
        ("info/regex", INFO),
    ],
)
def test_parse_level(spec: str, level: int) -> None:
    assert parse_level(spec) == level


@pytest.mark.parametrize(
    "spec", ["", ",", "verbose", "info,sozu=loud", "a=b=c", "info/x/y", "=debug"]
)
def test_parse_level_refuses(spec: str) -> None:
    with pytest.raises(LoggingError):
        parse_level(spec)


def test_file_target_line_format(tmp_path: Path) -> None:
    target = tmp_path / "sozu.log"
    setup_logging("info", str(target), process="WRK-01")
    log = get_logger("sozu.worker")
    log.info("worker_spawned", worker_id=1, pid=4242)
    log.warning("odd value", text="two words", empty="", obj=[1, 2])
    log.error("failed")
    log.debug("hidden")
    lines = read(target)
    assert len(lines) == 3
    first = LINE.match(lines[0])
    assert first
    assert first["level"] == "INFO " and first["process"] == "WRK-01"
    assert first["rest"] == "worker_spawned worker_id=1 pid=4242"
    second = LINE.match(lines[1])
    assert second and second["level"] == "WARN "
    assert second["rest"] == "odd value text='two words' empty='' obj=[1, 2]"
    third = LINE.match(lines[2])
    assert third and third["level"] == "ERROR"


def test_file_url_and_append(tmp_path: Path) -> None:
    target = tmp_path / "main.log"
    target.write_text("existing\n")
    setup_logging("debug", f"file://{target}")
    get_logger("x").debug("debug_shown")
    lines = read(target)
    assert lines[0] == "existing"
    assert lines[1].endswith(" [main] debug_shown")


def test_stdout_and_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "stdout")
    get_logger("x").info("to_stdout")
    setup_logging("info", "stderr")
    get_logger("x").info("to_stderr")
    captured = capsys.readouterr()
    assert "to_stdout" in captured.out and "to_stdout" not in captured.err
    assert "to_stderr" in captured.err


def test_bad_targets_and_levels(tmp_path: Path) -> None:
    with pytest.raises(LoggingError):
        setup_logging("info", "udp://127.0.0.1:514")
    with pytest.raises(LoggingError):
        setup_logging("info", str(tmp_path))  # a directory
    with pytest.raises(LoggingError):
        setup_logging("chatty", "stdout")


def test_set_level_applies_to_loggers_already_handed_out(tmp_path: Path) -> None:
    target = tmp_path / "s.log"
    setup_logging("info", str(target))
    log = get_logger("sozu.supervisor")
    assert current_level() == INFO
    log.debug("before_hidden")
    set_level("debug")
    assert current_level() == DEBUG
    log.debug("after_shown")
    set_level("error,sozu=info")
    log.warning("warn_hidden")
    log.error("error_shown")
    set_level("off")
    assert current_level() == OFF
    log.error("off_hidden")
    with pytest.raises(LoggingError):
        set_level("nonsense")
    text = target.read_text()
    assert "before_hidden" not in text and "after_shown" in text
    assert "warn_hidden" not in text and "error_shown" in text
    assert "off_hidden" not in text


def test_exception_traceback(tmp_path: Path) -> None:
    target = tmp_path / "e.log"
    setup_logging("info", str(target))
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        get_logger("x").exception("handler_crashed", request_id="r1")
    lines = read(target)
    assert LINE.match(lines[0]) and lines[0].endswith("handler_crashed request_id=r1")
    assert any("RuntimeError: boom" in line for line in lines[1:])


def test_colored(tmp_path: Path) -> None:
    target = tmp_path / "c.log"
    setup_logging("info", str(target), colored=True)
    get_logger("x").info("tinted")
    [line] = read(target)
    assert "\x1b[" in line and "tinted" in line and "INFO" in line


def test_reopen_after_rotation(tmp_path: Path) -> None:
    target = tmp_path / "r.log"
    setup_logging("info", str(target))
    log = get_logger("x")
    log.info("first")
    target.rename(tmp_path / "r.log.1")
    log.info("second")
    reopen()
    log.info("third")
    assert [line.rsplit(" ", 1)[1] for line in read(tmp_path / "r.log.1")] == ["first", "second"]
    assert [line.rsplit(" ", 1)[1] for line in read(target)] == ["third"]


def test_reopen_is_a_noop_on_stdout() -> None:
    reopen()  # never configured: nothing to do
    setup_logging("info", "stdout")
    reopen()


def test_setup_again_switches_target(tmp_path: Path) -> None:
    one, two = tmp_path / "1.log", tmp_path / "2.log"
    setup_logging("info", str(one))
    log = get_logger("x")
    log.info("a")
    setup_logging("info", str(two), process="main")
    log.info("b")
    assert read(one)[0].endswith(" a") and len(read(one)) == 1
    assert read(two)[0].endswith(" b")


def test_context_binding(tmp_path: Path) -> None:
    target = tmp_path / "ctx.log"
    setup_logging("info", str(target))
    sozu_logging.bind_context(worker_id=3)
    get_logger("x").info("bound")
    assert read(target)[0].endswith("bound worker_id=3")


def test_a_tab_line_event_is_written_verbatim(tmp_path: Path) -> None:
    target = tmp_path / "a.log"
    setup_logging("info", str(target))
    get_logger("sozu.audit").info("[S R c -]\tAUDIT\tCommand(verb=x)")
    [line] = read(target)
    assert line.endswith(" [main] [S R c -]\tAUDIT\tCommand(verb=x)")


def test_set_level_reaches_concrete_bound_loggers(tmp_path: Path) -> None:
    target = tmp_path / "b.log"
    setup_logging("info", str(target))
    fast = get_logger("hot").bind(worker=1)
    fast.debug("hidden")
    set_level("trace")
    fast.debug("shown")
    set_level("warn")
    fast.info("hidden_again")
    assert current_level() == WARN
    [line] = read(target)
    assert line.endswith(" shown worker=1")


def test_current_level_default() -> None:
    structlog.reset_defaults()
    assert current_level() <= INFO  # structlog's default logs everything
    set_level("error")  # works on a default configuration too
    assert current_level() == ERROR
