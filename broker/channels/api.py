"""A small client for channel APIs (enrichment and catch-up), with rate-limit handling.

Every vendor signals throttling with 429 and `Retry-After` (Shopify, Stripe, Square,
BigCommerce; WooCommerce behind most hosts). Short waits are taken in place; longer ones, 5xx
and network failures raise ChannelUnavailable so the event waits in the database instead of
holding a worker.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import requests

from broker.channels.base import PayloadError
from broker.logging import register_secret
from connectors.ssrf import Refused, guarded_session
from connectors.wire import retry_after

MAX_INLINE_WAIT = 5.0
INLINE_RETRIES = 3


class ChannelUnavailable(Exception):
    """The channel API cannot answer now; try again after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ChannelApi:
    """JSON over HTTPS to one channel account; `auth` and `headers` carry its credentials."""

    def __init__(self, base_url: str, *, headers: Mapping[str, str] | None = None,
                 auth: tuple[str, str] | None = None, timeout: float = 15.0,
                 secrets: tuple[str, ...] = ()) -> None:
        if not base_url:
            raise PayloadError("the source has no API URL configured")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = guarded_session()  # SSRF guard: checked, pinned public addresses only
        self.session.headers.update({"Accept": "application/json", **(headers or {})})
        self.session.auth = auth
        for secret in secrets:
            register_secret(secret)

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """The response of a 2xx; raises ChannelUnavailable or PayloadError otherwise."""
        for _ in range(INLINE_RETRIES + 1):
            try:
                response = self.session.request(method, self.url(path), timeout=self.timeout,
                                                allow_redirects=False, **kwargs)
            except Refused as exc:
                raise PayloadError(f"{method} {path}: the channel API URL is refused: {exc}; fix "
                                   "the source's settings with `broker sources configure`") from None
            except requests.RequestException as exc:
                raise ChannelUnavailable(f"{method} {path}: {type(exc).__name__}") from None
            if response.status_code == 429:
                wait = self.retry_after(response)
                if wait is not None and wait <= MAX_INLINE_WAIT:
                    time.sleep(wait)
                    continue
                raise ChannelUnavailable(f"{method} {path}: rate limited (429)", wait)
            return self._checked(method, path, response)
        raise ChannelUnavailable(f"{method} {path}: still rate limited after "
                                 f"{INLINE_RETRIES} waits", MAX_INLINE_WAIT)

    def retry_after(self, response: requests.Response) -> float | None:
        """Seconds the channel asks us to wait; vendors with their own header override this."""
        return retry_after(response.headers.get("Retry-After"))

    @staticmethod
    def _checked(method: str, path: str, response: requests.Response) -> requests.Response:
        status = response.status_code
        if status < 300:
            return response
        if status in (401, 403):
            raise ChannelUnavailable(f"{method} {path}: the channel refused the source's API "
                                     f"credentials ({status}); update them with "
                                     "`broker sources configure`", 300)
        if status == 404:
            raise PayloadError(f"{method} {path}: not found in the channel (404)")
        if status >= 500 or status in (408, 409, 425):
            raise ChannelUnavailable(f"{method} {path}: the channel answered {status}",
                                     retry_after(response.headers.get("Retry-After")))
        raise PayloadError(f"{method} {path}: the channel answered {status}: "
                           f"{response.text[:300]}")

    def get(self, path: str, **params: Any) -> Any:
        """The JSON answer, with exact decimals (money never passes through a float)."""
        return self.parse(self.request("GET", path, params=params or None))

    def post(self, path: str, body: Any) -> Any:
        return self.parse(self.request("POST", path, json=body))

    @staticmethod
    def parse(response: requests.Response) -> Any:
        """JSON with exact decimals; None for an empty answer (e.g. 204 No Content)."""
        if response.status_code == 204 or not response.content:
            return None
        try:
            return json.loads(response.content, parse_float=Decimal)
        except ValueError:
            raise ChannelUnavailable(f"{response.request.method} {response.url}: "
                                     "the channel answered with something other than JSON") from None
