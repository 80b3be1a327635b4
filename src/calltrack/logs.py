"""Logging setup shared by the server and its workers."""

from __future__ import annotations

from typing import Any


def log_config(level: str = "info") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for uvicorn and calltrack's own loggers."""
    level = level.upper()
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": fmt}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "plain"},
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "stream": "ext://sys.stdout",
            },
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "calltrack": {"handlers": ["stderr"], "level": level, "propagate": False},
            "calltrack.access": {"handlers": ["stdout"], "level": level, "propagate": False},
        },
    }
