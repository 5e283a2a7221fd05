"""WSGI entry point: gunicorn shopsite.wsgi:application.

Every response carries `X-Release: <the release folder's name>` (e.g.
`20240101120000-0123456789ab`, taken once when the worker loads the app), so a client
sees which release answered. It is added here rather than in a middleware so that it is
also on the 500 of a release whose code fails before Django can answer at all (a URLconf
that does not import breaks Django's own 500 handler too; gunicorn would answer bare).
"""

import logging
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shopsite.settings")

django_application = get_wsgi_application()

RELEASE = Path(settings.BASE_DIR).resolve().name
_RELEASE_HEADER = ("X-Release", RELEASE)

logger = logging.getLogger("shopsite.wsgi")


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return start_response(status, [*headers, _RELEASE_HEADER], exc_info)

    try:
        return django_application(environ, start)
    except Exception:
        logger.exception(
            "no response from Django for %s %s",
            environ.get("REQUEST_METHOD"),
            environ.get("PATH_INFO"),
        )
        start_response(
            "500 Internal Server Error",
            [("Content-Type", "text/plain; charset=utf-8"), _RELEASE_HEADER],
            sys.exc_info(),
        )
        return [b"Internal Server Error\n"]
