"""Trusted company OpenID Connect issuers: their access tokens on the API, their ID tokens at
console sign-in.

Nothing in a token decides how it is verified. The issuer must be configured (`broker
issuers add`); its keys come only from the `jwks_uri` of its own discovery document (fetched
through the SSRF guard, `issuer` in the document equal to the configured one); the algorithm
must be on the issuer's allow-list; `typ`, `iss`, `aud`, `exp` (and `nbf`, `iat`) are checked.
Discovery and keys are cached per process; an unknown `kid` reloads the key set, at most
once per `UNKNOWN_KID_RELOAD_SECONDS`, so the IdP can rotate keys without a restart and a
flood of forged kids cannot turn into a flood of fetches.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact
from sqlalchemy import select

from broker.db import Database
from broker.identity.tokens import MAX_TOKEN_LENGTH, TokenRefused, check_jwt, verify_jwt
from broker.models import TrustedIssuer
from broker.services.crypto import SecretBox
from connectors.ssrf import Refused, guarded_session

log = logging.getLogger(__name__)

ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                      "ES512", "EdDSA")  # asymmetric only: never none, never HS*
DEFAULT_ALGORITHMS = ["RS256", "ES256"]
DEFAULT_TOKEN_TYPES = ["at+jwt", "application/at+jwt"]  # RFC 9068
ROWS_SECONDS = 10.0          # a `broker issuers add` elsewhere is seen within this
METADATA_SECONDS = 3600.0    # discovery and keys are re-fetched at least hourly
UNKNOWN_KID_RELOAD_SECONDS = 30.0
FETCH_TIMEOUT = (5.0, 10.0)
MAX_DOCUMENT_BYTES = 512 * 1024


class IssuerUnavailable(Exception):
    """The issuer's discovery document or keys could not be fetched (and none are cached)."""


@dataclass(frozen=True)
class Issuer:
    """A snapshot of one trusted issuer's configuration (secrets stay encrypted)."""

    name: str
    issuer: str
    audience: str
    algorithms: tuple[str, ...]
    token_types: tuple[str, ...]
    role_rules: tuple[dict[str, str], ...]
    client_id: str | None
    client_secret_encrypted: str | None
    scopes: str

    @classmethod
    def of(cls, row: TrustedIssuer) -> Issuer:
        return cls(row.name, row.issuer, row.audience, tuple(row.algorithms),
                   tuple(t.lower() for t in row.token_types), tuple(row.role_rules),
                   row.client_id, row.client_secret_encrypted, row.scopes)

    @property
    def signs_in(self) -> bool:
        return bool(self.client_id)


@dataclass
class _Cached:
    metadata: dict[str, Any]
    keys: KeySet
    fetched_at: float
    forced_at: float = float("-inf")


def fetch_json(session: requests.Session, url: str, what: str) -> dict[str, Any]:
    """A JSON object from `url` (no redirects, bounded size), or IssuerUnavailable."""
    try:
        with session.get(url, timeout=FETCH_TIMEOUT, allow_redirects=False, stream=True,
                         headers={"Accept": "application/json"}) as resp:
            body = resp.raw.read(MAX_DOCUMENT_BYTES + 1, decode_content=True)
            status = resp.status_code
    except (requests.RequestException, Refused) as exc:
        raise IssuerUnavailable(f"{what} at {url} unreachable: {exc}") from None
    if status != 200:
        raise IssuerUnavailable(f"{what} at {url} answered {status}")
    if len(body) > MAX_DOCUMENT_BYTES:
        raise IssuerUnavailable(f"{what} at {url} is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = json.loads(body)
    except ValueError:
        raise IssuerUnavailable(f"{what} at {url} is not JSON") from None
    if not isinstance(document, dict):
        raise IssuerUnavailable(f"{what} at {url} is not a JSON object")
    return document


def discover(issuer: str) -> tuple[dict[str, Any], KeySet]:
    """The issuer's OpenID discovery document and its signing keys."""
    with guarded_session() as session:
        metadata = fetch_json(session, issuer.rstrip("/") + "/.well-known/openid-configuration",
                              "the discovery document of " + issuer)
        if metadata.get("issuer") != issuer:  # OpenID Connect Discovery 1.0, section 4.3
            raise IssuerUnavailable(f"the discovery document of {issuer} names issuer "
                                    f"{metadata.get('issuer')!r}; configure that exact issuer URL")
        jwks_uri = metadata.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise IssuerUnavailable(f"the discovery document of {issuer} has no jwks_uri")
        jwks = fetch_json(session, jwks_uri, "the key set of " + issuer)
    try:
        keys = [k for k in jwks.get("keys", []) if isinstance(k, dict) and k.get("use", "sig") == "sig"
                and k.get("kty") in ("RSA", "EC", "OKP")]  # never a symmetric key
        return metadata, KeySet.import_key_set({"keys": keys})
    except (JoseError, ValueError, TypeError) as exc:
        raise IssuerUnavailable(f"the key set of {issuer} is invalid: {exc}") from None


class IssuerDirectory:
    """The trusted issuers of this process, with their discovery documents and keys cached."""

    def __init__(self, db: Database, box: SecretBox) -> None:
        self.db, self.box = db, box
        self._lock = threading.Lock()
        self._rows: dict[str, Issuer] = {}
        self._rows_at = float("-inf")
        self._cache: dict[str, _Cached] = {}

    def invalidate(self) -> None:
        with self._lock:
            self._rows_at = float("-inf")
            self._cache.clear()

    def issuers(self) -> dict[str, Issuer]:
        """Enabled issuers by issuer URL, re-read every ROWS_SECONDS."""
        if time.monotonic() - self._rows_at > ROWS_SECONDS:
            with self.db.begin() as session:
                rows = session.execute(select(TrustedIssuer).where(
                    TrustedIssuer.enabled.is_(True))).scalars().all()
                fresh = {row.issuer: Issuer.of(row) for row in rows}
            with self._lock:
                self._rows, self._rows_at = fresh, time.monotonic()
        return self._rows

    def by_name(self, name: str) -> Issuer | None:
        return next((i for i in self.issuers().values() if i.name == name), None)

    def metadata(self, issuer: Issuer) -> dict[str, Any]:
        return self._cached(issuer).metadata

    def _cached(self, issuer: Issuer, *, unknown_kid: bool = False) -> _Cached:
        now = time.monotonic()
        cached = self._cache.get(issuer.issuer)
        stale = cached is None or now - cached.fetched_at > METADATA_SECONDS
        forced = (unknown_kid and cached is not None
                  and now - cached.forced_at > UNKNOWN_KID_RELOAD_SECONDS)
        if not (stale or forced):
            return cached  # type: ignore[return-value]
        try:
            metadata, keys = discover(issuer.issuer)
        except IssuerUnavailable:
            if cached is None:
                raise
            log.warning("could not refresh the keys of issuer %s; using the cached ones",
                        issuer.name, exc_info=False)
            cached.forced_at = now if forced else cached.forced_at
            return cached
        fresh = _Cached(metadata, keys, now, now if forced else float("-inf"))
        with self._lock:
            self._cache[issuer.issuer] = fresh
        return fresh

    def _key(self, issuer: Issuer, kid: str | None) -> Any:
        def find(keys: KeySet) -> Any:
            if kid is None:  # only an issuer with a single key may omit kid
                return keys.keys[0] if len(keys.keys) == 1 else None
            return next((k for k in keys.keys if k.kid == kid), None)

        key = find(self._cached(issuer).keys)
        if key is None:
            key = find(self._cached(issuer, unknown_kid=True).keys)
        return key

    def verify(self, issuer: Issuer, token: str, *, audience: str, token_types: tuple[str, ...],
               ) -> dict[str, Any] | None:
        """The claims of a token this issuer signed for `audience`, else None.

        Raises IssuerUnavailable when the issuer's keys cannot be fetched at all.
        """
        return verify_jwt(token, algorithms=issuer.algorithms, types=token_types,
                          find_key=lambda kid: self._key(issuer, kid), issuer=issuer.issuer,
                          audience=audience, essential=("sub",))

    def verify_access_token(self, token: str) -> tuple[Issuer, dict[str, Any]] | None:
        """(issuer, claims) when a trusted issuer signed this access token for our API."""
        try:
            return self.check_access_token(token)
        except TokenRefused:
            return None

    def check_access_token(self, token: str) -> tuple[Issuer, dict[str, Any]]:
        """(issuer, claims) of an access token a trusted issuer signed for our API; TokenRefused
        says why not (`untrusted_issuer`, `wrong_audience`, `expired`, …). Raises
        IssuerUnavailable when the issuer's keys cannot be fetched at all."""
        iss = unverified_issuer(token)
        issuer = self.issuers().get(iss) if iss else None
        if issuer is None:
            raise TokenRefused("untrusted_issuer", f"iss {iss!r} is not a trusted issuer" if iss
                               else "no iss claim")
        claims = check_jwt(token, algorithms=issuer.algorithms, types=issuer.token_types,
                           find_key=lambda kid: self._key(issuer, kid), issuer=issuer.issuer,
                           audience=issuer.audience, essential=("sub",))
        return issuer, claims

    def client_secret(self, issuer: Issuer) -> str | None:
        return self.box.decrypt(issuer.client_secret_encrypted, None) if (
            issuer.client_secret_encrypted) else None


def unverified_issuer(token: str) -> str | None:
    """The `iss` a token claims, only to choose the verifier (never trusted by itself)."""
    if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        return None
    try:
        claims = json.loads(extract_compact(token.encode("ascii")).payload)
    except (JoseError, ValueError, TypeError, UnicodeError):
        return None
    iss = claims.get("iss") if isinstance(claims, dict) else None
    return iss if isinstance(iss, str) else None
