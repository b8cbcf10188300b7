"""Structured logs with a correlation id, and Prometheus metrics.

Log lines carry ids and codes only: never a name, birth date, NHS number or free text.
Call sites pass those explicitly; nothing logs a request body or an event payload.
"""

from __future__ import annotations

import logging
import sys
import traceback
from uuid import uuid4

import structlog
from prometheus_client import Counter, Gauge, Histogram

CORRELATION_HEADER = "X-Correlation-ID"

EVENTS_PUBLISHED = Counter(
    "carepath_events_published_total",
    "Events handed to the broker by the relay",
    ["service", "type"],
)
EVENTS_CONSUMED = Counter(
    "carepath_events_consumed_total",
    "Events a consumer acted on or ignored as duplicates",
    ["service", "outcome"],
)
MESSAGES_RETRIED = Counter(
    "carepath_messages_retried_total", "Messages that failed and will be retried", ["queue"]
)
MESSAGES_DEAD_LETTERED = Counter(
    "carepath_messages_dead_lettered_total", "Messages that failed every retry", ["queue"]
)
OUTBOX_UNSENT = Gauge(
    "carepath_outbox_unsent", "Outbox rows committed but not yet sent", ["service"]
)
OUTBOX_LAG_SECONDS = Gauge(
    "carepath_outbox_lag_seconds", "Age of the oldest unsent outbox row", ["service"]
)
RELAY_SEND_SECONDS = Histogram(
    "carepath_relay_send_seconds",
    "Time to hand one batch of outbox rows to the broker",
    ["service"],
)


# Libraries whose INFO lines are noise at our volume: every feed catch-up is an HTTP call
# per feed on a timer ("HTTP Request: GET ..." each time). Failures are logged by the
# caller.
QUIET_LOGGERS = ("httpx", "httpcore")


def configure_logging(level: str = "INFO", json: bool = True) -> None:
    """One format for every line a process writes: JSON (production) or console lines.

    structlog's own loggers hand their event dicts to the standard library; the root
    handler renders them, and every library record (uvicorn, alembic, dramatiq, httpx,
    Litestar), with `structlog.stdlib.ProcessorFormatter`. Callers must keep uvicorn and
    Litestar from installing handlers of their own (`log_config=None`,
    `logging_config=None`).
    """
    numeric_level = logging.getLevelName(level.upper())
    # Run for both: structlog's events before they reach logging, library records in the
    # formatter (foreign_pre_chain).
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared, processors=_rendering(json=json)
        )
    )
    handler.addFilter(NoTracebackValues())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric_level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic", "dramatiq"):
        # Whatever configured them before (uvicorn's default dictConfig), hand their
        # records to the root handler.
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, numeric_level))


def _rendering(*, json: bool) -> list[structlog.typing.Processor]:
    strip = structlog.stdlib.ProcessorFormatter.remove_processors_meta
    if json:
        return [strip, structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    # The plain traceback formatter: rich's (the default when installed) prints each
    # frame's local variables, which can be a patient's record.
    console = structlog.dev.ConsoleRenderer(
        colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
    )
    return [strip, console]


class NoTracebackValues(logging.Filter):
    """Drop tracebacks from library log records (dramatiq logs every failed message's).

    A traceback's last line quotes the exception, and a database error quotes the row it
    was writing: patient data. The record keeps the exception's type and where it was
    raised; the text stays out.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            frames = traceback.extract_tb(error.__traceback__)[-3:]
            where = "; ".join(
                f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in frames
            )
            record.msg = (
                f"{record.msg} [{type(error).__module__}.{type(error).__qualname__} at {where}]"
            )
            record.exc_info = None
            record.exc_text = None
        return True


def new_correlation_id() -> str:
    return uuid4().hex


def current_correlation_id() -> str:
    bound = structlog.contextvars.get_contextvars().get("correlation_id")
    return str(bound) if bound else new_correlation_id()


def bind_correlation_id(correlation_id: str) -> None:
    structlog.contextvars.bind_contextvars(correlation_id=correlation_id)


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
