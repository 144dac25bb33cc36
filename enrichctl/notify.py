"""The optional dead-man's switch: healthchecks-style pings around a run.

``GET <url>/start`` when a run starts, ``GET <url>`` when it succeeds, ``GET <url>/fail`` when it
fails. A ping is bounded by ``notify.timeout_seconds`` and never fails or blocks the run; the URL
(whose path is a secret on healthchecks.io) is logged as scheme and host only.
"""

from __future__ import annotations

import logging
from typing import Literal

import aiohttp
from yarl import URL

from enrichctl.logs import get_logger, log_event
from enrichctl.settings import NotifySettings

log = get_logger("notify")

Phase = Literal["start", "success", "fail"]
_SUFFIX: dict[str, str] = {"start": "/start", "success": "", "fail": "/fail"}


def ping_url_for(base: str, phase: Phase) -> URL:
    """``<base>/start``, ``<base>`` or ``<base>/fail`` (a trailing slash and a query are kept apart)."""
    url = URL(base)
    return url.with_path(url.path.rstrip("/") + _SUFFIX[phase]).with_query(url.query)


def url_public(base: str) -> str:
    """What of a ping URL may be logged: scheme, host and port."""
    try:
        url = URL(base)
    except ValueError:
        return "<invalid url>"
    if not url.host:
        return "<invalid url>"
    port = f":{url.explicit_port}" if url.explicit_port else ""
    return f"{url.scheme}://{url.host}{port}"


async def ping(
    settings: NotifySettings, phase: Phase, *, session: aiohttp.ClientSession | None = None
) -> bool:
    """Send the ``phase`` ping; True when the endpoint answered 2xx, False when no URL is set or
    the ping failed (logged as a warning). Raises nothing but ``CancelledError``."""
    if not settings.ping_url:
        return False
    timeout = aiohttp.ClientTimeout(total=settings.timeout_seconds)
    try:
        url = ping_url_for(settings.ping_url, phase)
        if session is None:
            async with aiohttp.ClientSession(timeout=timeout) as own:
                status = await _get(own, url, timeout)
        else:
            status = await _get(session, url, timeout)
    except TimeoutError:
        return _failed(settings, phase, f"no answer within {settings.timeout_seconds:g} s")
    except aiohttp.ClientConnectorError as exc:
        return _failed(settings, phase, f"cannot connect: {exc.os_error.strerror or type(exc.os_error).__name__}")
    except (aiohttp.ClientError, ValueError) as exc:  # ValueError: an unusable URL
        # The text of these may quote the URL: only the error's kind is logged.
        return _failed(settings, phase, type(exc).__name__)
    if 200 <= status < 300:
        return True
    return _failed(settings, phase, f"HTTP {status}")


async def _get(session: aiohttp.ClientSession, url: URL, timeout: aiohttp.ClientTimeout) -> int:
    async with session.get(url, timeout=timeout, allow_redirects=True) as response:
        await response.read()  # tiny ("OK"); reading it lets the connection be reused
        return response.status


def _failed(settings: NotifySettings, phase: Phase, reason: str) -> bool:
    assert settings.ping_url is not None
    log_event(log, logging.WARNING, "notify_ping_failed", phase=phase,
              target=url_public(settings.ping_url), error=reason)
    return False
