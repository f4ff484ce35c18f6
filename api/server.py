"""Run the REST API with uvicorn: what ``rag serve`` (and ``python -m rag.api``) do.

A server on a non-loopback interface without any API key would give the whole data directory to anyone
on the network, so it refuses to start unless told ``insecure=True``.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from pathlib import Path

import uvicorn

from rag.api.app import create_app
from rag.api.keys import key_store
from rag.core.errors import ConfigError
from rag.core.settings import Settings

log = logging.getLogger(__name__)

GRACE_SECONDS = 10


def is_loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost`` and the like; anything that resolves elsewhere is not."""
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except (OSError, ValueError):
            return False


def check_exposure(settings: Settings, host: str, insecure: bool) -> None:
    """Refuse a network-facing server with no API key.

    Raises:
        ConfigError: ``host`` is not loopback, no active key exists, and ``insecure`` is false.
    """
    if is_loopback(host) or insecure:
        return
    if not key_store(settings, read_only=True).any_active():
        raise ConfigError(
            f"refusing to serve on {host} with no API key: anyone on the network could read and change the index; "
            "create one with `rag keys create --collection '*' --role admin`, or pass --insecure"
        )


def serve(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    insecure: bool = False,
    project_root: Path | None = None,
    on_ready: Callable[[str], None] | None = None,
    log_level: str = "warning",
) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM)."""
    host = host or settings.api.host
    port = port if port is not None else settings.api.port
    check_exposure(settings, host, insecure)
    app = create_app(settings, project_root=project_root)
    # A request blocked on a slow LLM must not hold up a stop for long: after this, open requests are
    # cancelled and the embedded LLM server is stopped with the app.
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, access_log=False, timeout_graceful_shutdown=GRACE_SECONDS
    )
    server = uvicorn.Server(config)
    if on_ready is not None:
        startup = server.startup

        async def announce(sockets=None):  # noqa: ANN001, ANN202 - uvicorn's signature
            await startup(sockets=sockets)
            if server.started:
                bound = server.servers[0].sockets[0].getsockname() if server.servers else (host, port)
                shown = f"[{bound[0]}]" if ":" in str(bound[0]) else bound[0]
                on_ready(f"http://{shown}:{bound[1]}")

        server.startup = announce  # type: ignore[method-assign]
    server.run()
