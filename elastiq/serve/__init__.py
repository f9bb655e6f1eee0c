"""elastiq.serve: an OpenAI-compatible HTTP server over a hosted model whose option follows
a memory budget, and its status page.

    from elastiq.serve import open_service, create_app
    service = open_service("smollm2.elastic", budget=Fixed(90 * 2**20))
    app = create_app(service)        # FastAPI: run it with uvicorn

Sits beside the command line: imports elastiq.elastic (hosting, budgets) and elastiq.runtime;
on the native engine the process never imports torch. fastapi, uvicorn and sse-starlette
are its web stack (the ``serve`` extra)."""
from __future__ import annotations

from elastiq.elastic.budget import Fixed

from .hosted import Hosted, open_hosted
from .service import BudgetControl, Service


def open_service(path, engine: str = "auto", threads: int | None = None, budget=None, trace=None, speed: float = 1.0,
                 warn=print) -> Service:
    """A :class:`Service` hosting ``path``. ``budget`` is a budget source (elastiq.elastic's
    Fixed, AvailableMemory, CgroupLimit) or None (the largest option); ``trace`` a list of
    (seconds, bytes) replayed from the start, at ``speed``."""
    service = Service(open_hosted(path, engine, threads, warn=warn))
    control, chooser = service.budget, service.hosted.chooser
    if control is not None:
        if trace is not None:
            control.set(trace[0][1], "trace")
            control.replay(trace, speed)
        elif budget is None:
            control.set(int(chooser.sizes[chooser.options[0]]), "largest option")
        elif isinstance(budget, Fixed):
            control.set(budget(), "fixed")
        else:
            control.follow(budget, type(budget).__name__)
    return service


def create_app(service: Service, api_key: str | None = None):
    from .api import create_app as make

    return make(service, api_key)


__all__ = ["BudgetControl", "Hosted", "Service", "create_app", "open_hosted", "open_service"]
