"""structlog set up once: JSON lines for machines, key=value for people.

Everything else that logs goes out the same way: stdlib logging (urllib3, grpc, asyncio)
and Python warnings (urllib3's InsecureRequestWarning, deprecations) are rendered by
structlog's ProcessorFormatter, so with `--log-format json` every line is JSON."""

from __future__ import annotations

import logging
import sys

import structlog

# Marks the root handler configure() installed, so a second call replaces it rather than
# adding another (and leaves handlers others installed, e.g. pytest's, alone).
_OURS = "_controlplane_handler"


def configure(level: str = "info", fmt: str = "console", *, cache: bool = True) -> None:
    """`cache=False` keeps loggers re-reading the configuration, so tests can capture
    them (structlog.testing.capture_logs) whatever ran before."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    number = logging.getLevelNamesMapping()[level.upper()]
    shared: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *shared,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=cache,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        # Records from stdlib loggers: the logger's name says where they came from
        # ("py.warnings" for warnings).
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    ))
    setattr(handler, _OURS, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)
    logging.captureWarnings(True)  # warnings become records of the "py.warnings" logger
