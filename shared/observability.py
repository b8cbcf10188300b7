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


def configure_logging(level: str = "INFO", json: bool = True) -> None:
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Route the standard library (uvicorn, dramatiq, alembic) through one format.
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(NoTracebackValues())
    # Every feed catch-up is an HTTP call per feed on a timer: a line each at INFO would
    # bury everything else. Failures are logged by the caller.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(level)))


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
