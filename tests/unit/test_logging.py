"""One log format: structlog's events and every library's records render alike."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from shared.observability import QUIET_LOGGERS, configure_logging, get_logger
from shared.settings import PlatformSettings, RunMode

LIBRARY_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic", "dramatiq", "httpx")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back for the other tests."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    libraries = {
        name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate)
        for name in (*LIBRARY_LOGGERS, *QUIET_LOGGERS)
    }
    levels = {name: logging.getLogger(name).level for name in libraries}
    config = structlog.get_config()
    yield
    structlog.configure(**config)
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, (library_handlers, propagate) in libraries.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = library_handlers
        logger.propagate = propagate
        logger.setLevel(levels[name])


def lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line]


def emit_one_of_each() -> None:
    get_logger("shared.outbox").warning("relay.broker_down", attempt=3)
    logging.getLogger("shared.anything").info("a stdlib record %s", "with args")
    logging.getLogger("uvicorn.error").info("Application startup complete.")


def test_production_renders_every_record_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=True)
    emit_one_of_each()

    records = [json.loads(line) for line in lines(capsys)]

    assert [(r["event"], r["level"], r["logger"]) for r in records] == [
        ("relay.broker_down", "warning", "shared.outbox"),
        ("a stdlib record with args", "info", "shared.anything"),
        ("Application startup complete.", "info", "uvicorn.error"),
    ]
    assert records[0]["attempt"] == 3
    assert all("timestamp" in r for r in records)


def test_development_renders_console_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=False)
    emit_one_of_each()

    output = lines(capsys)

    assert len(output) == 3
    assert not any(line.startswith("{") for line in output)
    assert "[warning  ] relay.broker_down" in output[0]
    assert "attempt=3" in output[0]
    assert "[info     ] a stdlib record with args" in output[1]
    assert "[info     ] Application startup complete." in output[2]
    assert "[uvicorn.error]" in output[2]


def test_uvicorn_loggers_configured_before_are_handed_to_the_root_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    own = logging.StreamHandler()
    logging.getLogger("uvicorn.access").addHandler(own)
    logging.getLogger("uvicorn.access").propagate = False

    configure_logging("INFO", json=True)
    logging.getLogger("uvicorn.access").info("GET /health 200")

    (line,) = lines(capsys)
    assert json.loads(line)["event"] == "GET /health 200"
    assert own not in logging.getLogger("uvicorn.access").handlers


def test_correlation_id_is_on_library_records_too(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=True)
    with structlog.contextvars.bound_contextvars(correlation_id="c0ffee"):
        get_logger("shared.web").info("request.done")
        logging.getLogger("dramatiq.worker").warning("Retrying message %r", "m-1")

    records = [json.loads(line) for line in lines(capsys)]

    assert [r["correlation_id"] for r in records] == ["c0ffee", "c0ffee"]


@pytest.mark.parametrize("as_json", [True, False])
def test_httpx_requests_are_not_logged_at_info(
    capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    configure_logging("INFO", json=as_json)
    logging.getLogger("httpx").info('HTTP Request: GET http://feed "HTTP/1.1 200 OK"')
    logging.getLogger("httpcore.connection").info("connect_tcp.started")
    logging.getLogger("httpx").warning("a failure worth a line")

    output = lines(capsys)

    assert len(output) == 1
    assert "a failure worth a line" in output[0]


def test_a_library_traceback_keeps_its_type_not_its_text(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", json=True)
    try:
        raise ValueError("NHS number 943 476 5919")
    except ValueError:
        logging.getLogger("dramatiq.worker").exception("Failed to process message")

    (line,) = lines(capsys)
    record = json.loads(line)
    assert record["level"] == "error"
    assert "builtins.ValueError" in record["event"]
    assert "943" not in line
    assert "Traceback" not in line


def test_json_in_production_console_in_development_unless_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CAREPATH_LOG_JSON", raising=False)
    assert PlatformSettings(env=RunMode.production).json_logs
    assert not PlatformSettings(env=RunMode.development).json_logs
    assert not PlatformSettings(env=RunMode.production, log_json=False).json_logs
    assert PlatformSettings(env=RunMode.development, log_json=True).json_logs
