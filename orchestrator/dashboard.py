"""`medsweep dashboard SWEEP`: optuna-dashboard on the sweep's Optuna study, bound to 127.0.0.1
on a free port (the OS picks it when the server binds: no race with other programs).

The study lives in the sweep's `optuna.journal` (the default) or in the RDB storage named by
`sweep.storage`. Each Optuna trial carries the medsweep run id, sweep and artifacts folder as
user attributes, and its intermediate values are the raw metric of each epoch.
"""

from __future__ import annotations

import socketserver
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from orchestrator.errors import UserError
from orchestrator.results.store import ResultsStore
from orchestrator.results.views_common import resolve_sweep

HOST = "127.0.0.1"


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log on the terminal (the URL line is what the user needs)."""


def storage_of(store: ResultsStore, sweep: str) -> tuple[Any, str]:
    """The sweep's Optuna storage object and a description of where it is."""
    import optuna

    info = store.sweep_info(sweep)
    url = ((info.get("config") or {}).get("sweep") or {}).get("storage")
    if url:
        if "***" in str(url):
            raise UserError(
                "the sweep's study is in an RDB storage whose password is not stored; run "
                "optuna-dashboard with the full URL yourself",
                source=store.sweep_dir(sweep) / "sweep.json",
                where="config.sweep.storage",
            )
        return optuna.storages.get_storage(url), str(url).split("@")[-1]
    journal = store.sweep_dir(sweep) / "optuna.journal"
    if not journal.is_file():
        raise UserError(
            f"sweep {sweep!r} has no Optuna study (a single `medsweep run`, or a sweep that "
            "never started a trial)",
            source=journal,
        )
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(journal))), str(journal)


def serve(
    store: ResultsStore,
    sweep: str,
    port: int = 0,
    announce: Callable[[str], None] = print,
    ready: Callable[[Any], None] | None = None,
) -> None:
    """Serve optuna-dashboard for `sweep` until interrupted; `announce` gets the URL line and
    `ready` the server (tests stop it with `server.shutdown()`)."""
    try:
        import optuna_dashboard
    except ImportError:
        raise UserError(
            "optuna-dashboard is not installed; pip install 'medsweep[dashboard]' "
            "(or optuna-dashboard)",
            where="dashboard",
        ) from None
    sweep = resolve_sweep(store, sweep)
    storage, where = storage_of(store, sweep)
    app = optuna_dashboard.wsgi(storage)
    try:
        server = make_server(HOST, port, app, server_class=_Server, handler_class=_QuietHandler)
    except OSError as err:
        raise UserError(f"cannot listen on {HOST}:{port}: {err}", where="--port") from None
    url = f"http://{HOST}:{server.server_port}/dashboard"
    announce(f"optuna-dashboard of sweep {sweep} ({where}): {url}  (Ctrl-C to stop)")
    if ready is not None:
        ready(server)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
