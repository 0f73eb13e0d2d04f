"""The ingress token file, watched: a rotated token takes effect without a restart.

The file follows the Kubernetes-secret convention (:func:`bridge.config.read_secret_file`). It is
read every :data:`POLL_INTERVAL` seconds, not watched with inotify: a mounted secret changes by a
symlink swap that inotify reports inconsistently, and one small read every two seconds costs
nothing. A file that is missing, empty or unreadable for a while keeps the current token (a
rotation in progress), with one warning; the token itself is never logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .config import SecretFileError, read_secret_file

log = logging.getLogger(__name__)

POLL_INTERVAL = 2.0


class TokenFile:
    """Calls ``apply(token)`` whenever the file at ``path`` holds a token other than the last."""

    def __init__(
        self,
        path: str,
        apply: Callable[[str], None],
        *,
        current: str | None,
        interval: float = POLL_INTERVAL,
    ) -> None:
        self.path = path
        self._apply = apply
        self._current = current
        self._interval = interval
        self._problem: str | None = None

    def __repr__(self) -> str:
        return f"TokenFile(path={self.path!r})"

    def check(self) -> bool:
        """Read the file once; apply a changed token. True when the token changed."""
        try:
            token = read_secret_file(self.path)
        except SecretFileError as exc:
            if str(exc) != self._problem:
                self._problem = str(exc)
                log.warning("ingress token file: %s; keeping the current token", exc)
            return False
        if self._problem is not None:
            self._problem = None
            log.info("ingress token file %s is readable again", self.path)
        if token == self._current:
            return False
        self._apply(token)
        self._current = token
        log.info("ingress token reloaded from %s", self.path)
        return True

    async def watch_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.check()
