"""Back-office credential custody: an admin's one-time OAuth 2.0 consent for a connector.

A connector whose `consent()` returns a ConsentSpec books with tokens the broker holds for it:
an admin starts the authorization code grant (with PKCE) from the console (`begin_consent`),
the authorization server sends the browser back with a code (`complete_consent`), and the
tokens are kept encrypted in `connector_grants`. Workers get access tokens through a
`GrantTokenSource`, which refreshes shortly before expiry under a cross-process lock (two
workers never spend the same refresh token: with rotation the second would be refused), and
the sweeper refreshes grants nobody uses (`refresh_due`). A refused refresh marks the grant
`refresh_failed` (the connector's health shows it) and parks deliveries as "consent required"
until an admin connects again, which resumes them; nothing is dead-lettered for it.

No token, code, verifier or client secret ever goes into a message, a log line or the audit log.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from broker.db import Database, utcnow
from broker.logging import register_secret
from broker.models import Connector, ConnectorGrant, Delivery, DeliveryStatus
from broker.services import audit, timeline
from broker.services.crypto import SecretBox
from connectors.errors import ConsentRequired, TransientError
from connectors.ssrf import Refused, guard_session
from connectors.tokens import ConsentSpec, consent_needed
from connectors.wire import retry_after

log = logging.getLogger(__name__)

PENDING_TTL_SECONDS = 600   # an authorization code flow left longer than this must start again
TOKEN_TIMEOUT = (5.0, 10.0)  # connect, read: well under the database's lock and statement limits
OK, REFRESH_FAILED = "ok", "refresh_failed"
_TRANSIENT = frozenset({408, 425, 429})  # plus every 5xx


class ConsentError(ValueError):
    """A consent that cannot start or complete; the message tells the admin what to do."""


# --- the consent ---------------------------------------------------------------------------

def begin_consent(db: Database, box: SecretBox, connector_name: str, redirect_uri: str,
                  ) -> tuple[str, dict[str, Any]]:
    """The authorization URL to send the admin's browser to, and what to keep until it returns.

    Keep `pending` server-side (the admin's console session), never in the browser: only its
    `state` travels in the URL. Pass it back to `complete_consent` with the callback's query.

    Raises: ConsentError (no such connector, it does not use consent, bad redirect_uri).
    """
    parts = urlsplit(redirect_uri or "")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
        raise ConsentError(f"redirect_uri {redirect_uri!r} must be an absolute http(s) URL "
                           "without a fragment, exactly as registered at the authorization server")
    with db.begin() as session:
        row = _connector_row(session, connector_name)
        spec = _consent_of(row, box)
    from authlib.common.urls import add_params_to_uri
    from authlib.oauth2.rfc7636 import create_s256_code_challenge

    state, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(64)  # RFC 7636: 43-128
    params = {"response_type": "code", "client_id": spec.client_id, "redirect_uri": redirect_uri,
              "state": state, "code_challenge": create_s256_code_challenge(verifier),
              "code_challenge_method": "S256"}
    if spec.scope:
        params["scope"] = spec.scope
        if "offline_access" in spec.scope.split():
            params["prompt"] = "consent"  # OpenID Connect Core §11: else no refresh token
    for key, value in spec.extra.items():
        if key not in params or key == "prompt":  # extras never override the broker's own
            params[key] = value
    pending = {"connector": row.name, "state": state, "code_verifier": verifier,
               "redirect_uri": redirect_uri, "started_at": utcnow().isoformat()}
    return add_params_to_uri(spec.authorize_url, list(params.items())), pending


def complete_consent(db: Database, box: SecretBox, pending: Mapping[str, Any],
                     params: Mapping[str, str], actor: str) -> dict[str, Any]:
    """Exchange the callback's code for tokens, keep them encrypted, resume parked deliveries.

    `params` is the query of the redirect back from the authorization server. Returns the
    grant's public status plus `resumed` (deliveries) and `wake` ([(connector id, queue)]):
    call `rt.publisher.wake(result["wake"])` after this returns.

    Raises: ConsentError (state mismatch, expired, refused by the user or the provider, the
    token endpoint unreachable) — nothing is changed then.
    """
    name = _pending_field(pending, "connector")
    expected_state = _pending_field(pending, "state")
    verifier = _pending_field(pending, "code_verifier")
    redirect_uri = _pending_field(pending, "redirect_uri")
    started = _parse_time(pending.get("started_at"))
    if started is None or not timedelta(0) <= utcnow() - started <= timedelta(
            seconds=PENDING_TTL_SECONDS):
        raise ConsentError(f"the consent for connector '{name}' was started more than "
                           f"{PENDING_TTL_SECONDS // 60} minutes ago; {_restart(name)}")
    state = params.get("state") or ""
    if not hmac.compare_digest(state.encode(), expected_state.encode()):
        raise ConsentError(f"the answer from the authorization server does not belong to the "
                           f"consent in progress for connector '{name}' (state mismatch); "
                           f"{_restart(name)}")
    if params.get("error"):
        said = _short(params["error"])
        if params.get("error_description"):
            said += f": {_short(params['error_description'])}"
        raise ConsentError(f"the authorization server did not grant access to connector "
                           f"'{name}' ({said}); {_restart(name)}")
    code = params.get("code")
    if not code:
        raise ConsentError(f"the authorization server sent no code for connector '{name}'; "
                           f"{_restart(name)}")
    with db.begin() as session:
        row = _connector_row(session, name)
        spec = _consent_of(row, box)
        connector_id, queue = row.id, row.queue
    token = _exchange_code(spec, name, code=code, verifier=verifier, redirect_uri=redirect_uri)
    access, refresh = token["access_token"], token.get("refresh_token") or None
    register_secret(access)
    register_secret(refresh)
    now = utcnow()
    expires_at = _expiry(token, now)
    scope = _scope(token, spec)
    with db.begin() as session:
        grant = session.get(ConnectorGrant, connector_id, with_for_update=True)
        before = _public(grant) if grant is not None else None
        if grant is None:
            grant = ConnectorGrant(connector_id=connector_id)
            session.add(grant)
        grant.access_token_encrypted = box.encrypt(access)
        grant.refresh_token_encrypted = box.encrypt(refresh) if refresh else None
        grant.expires_at, grant.scope, grant.status, grant.last_error = expires_at, scope, OK, None
        grant.granted_by, grant.granted_at, grant.refreshed_at = actor[:255], now, None
        parked = session.execute(select(Delivery.id, Delivery.order_id).where(
            Delivery.connector_id == connector_id, Delivery.status == DeliveryStatus.PARKED,
            Delivery.parked_kind == "consent", Delivery.parked_key == name)).all()
        for delivery_id, order_id in parked:
            timeline.record(session, order_id, "resumed",
                            f"connector {name} connected to its back office by {actor}",
                            delivery_id=delivery_id)
        if parked:
            session.execute(update(Delivery).where(Delivery.id.in_([d for d, _ in parked])).values(
                status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=now, parked_reason=None,
                parked_kind=None, parked_key=None, last_error=None, updated_at=now))
        audit.record(session, actor=actor, action="connector.consent", target_type="connector",
                     target=name, before=before,
                     after={**_public(grant), "refreshable": refresh is not None,
                            "resumed": len(parked)})
    if refresh is None:
        log.warning("the authorization server issued no refresh token for connector %s: it must "
                    "be connected again when the access token expires (ask for offline access, "
                    "e.g. scope offline_access)", name)
    log.info("connector %s connected to its back office by %s; %d parked deliveries resumed",
             name, actor, len(parked))
    return {"connector": name, **_public(grant), "refreshable": refresh is not None,
            "resumed": len(parked), "wake": [(connector_id, queue)] if parked else []}


# --- tokens for the connector --------------------------------------------------------------

@dataclass(frozen=True)
class _Grant:
    """A grant row as read, tokens decrypted (never logged: repr hides them)."""

    access: str | None
    refresh: str | None
    refresh_sealed: str | None   # the ciphertext read, for the compare-and-set
    expires_at: datetime | None
    issued_at: datetime
    status: str
    last_error: str | None

    def __repr__(self) -> str:
        return f"_Grant(status={self.status!r}, expires_at={self.expires_at!r})"

    def renew_at(self, margin: float) -> datetime | None:
        """When to refresh: `margin` before expiry, or half-way for short-lived tokens."""
        if self.expires_at is None:
            return None  # no expiry given: used until the back office refuses it
        lifetime = max(0.0, (self.expires_at - self.issued_at).total_seconds())
        return self.expires_at - timedelta(seconds=min(margin, lifetime / 2))

    def usable(self, now: datetime, margin: float, refused: str | None) -> bool:
        renew = self.renew_at(margin)
        return bool(self.access) and (renew is None or now < renew) \
            and not _same(self.access, refused)


class GrantTokenSource:
    """The TokenSource of one connector's consent (connectors.tokens), backed by its grant row.

    The access token is cached in memory until `margin_seconds` before it expires (half its
    lifetime when that is shorter); then the grant is re-read and, if nobody refreshed it
    meanwhile, refreshed under a lock every process honours: the row's `SELECT … FOR UPDATE` on
    PostgreSQL and MariaDB, an exclusive file lock next to the database on SQLite (so the
    embedded database's single write lock is not held during the network call). The refresh
    is stored with a compare-and-set on the refresh token it spent.
    """

    def __init__(self, db: Database, box: SecretBox, connector_id: str, connector_name: str,
                 spec: ConsentSpec, margin_seconds: float = 60) -> None:
        self.db, self.box, self.spec = db, box, spec
        self.connector_id, self.connector_name = connector_id, connector_name
        self.margin = float(margin_seconds)
        self.refreshes = 0  # token endpoint calls made by this source (health, tests)
        self._cached: tuple[str, datetime | None] | None = None  # (token, renew at)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"GrantTokenSource({self.connector_name!r})"

    def access_token(self, refused: str | None = None) -> str:
        """A valid access token (see connectors.tokens.TokenSource).

        Raises: ConsentRequired (no grant, or its refresh was refused), TransientError.
        """
        with self._lock:
            now = utcnow()
            if self._cached is not None:
                token, renew = self._cached
                if (renew is None or now < renew) and not _same(token, refused):
                    return token
            grant = self._read()
            if grant is None:
                raise consent_needed(self.connector_name)
            if grant.usable(now, self.margin, refused):
                return self._keep(grant)
            return self._refresh(refused)

    def refresh_if_due(self, within_seconds: float) -> bool:
        """Refresh the grant if it expires within `within_seconds` (the sweeper); True if done.

        Raises: ConsentRequired, TransientError — as access_token.
        """
        with self._lock:
            grant = self._read()
            if grant is None or grant.status != OK or not grant.refresh \
                    or grant.usable(utcnow(), within_seconds, None):
                return False
            before = self.refreshes
            self._refresh(None, margin=within_seconds)
            return self.refreshes > before

    # -- internals ----------------------------------------------------------------------------

    def _read(self, session: Session | None = None, *, lock: bool = False) -> _Grant | None:
        if session is None:
            with self.db.begin() as fresh:
                return self._read(fresh)
        row = session.get(ConnectorGrant, self.connector_id, with_for_update=lock,
                          populate_existing=True)
        if row is None:
            return None
        grant = _Grant(self.box.decrypt(row.access_token_encrypted),
                       self.box.decrypt(row.refresh_token_encrypted), row.refresh_token_encrypted,
                       row.expires_at, row.refreshed_at or row.granted_at, row.status, row.last_error)
        register_secret(grant.access)
        register_secret(grant.refresh)
        return grant

    def _keep(self, grant: _Grant) -> str:
        assert grant.access is not None
        self._cached = (grant.access, grant.renew_at(self.margin))
        return grant.access

    def _refresh(self, refused: str | None, *, margin: float | None = None) -> str:
        """Refresh under the cross-process lock unless someone else just did."""
        margin = self.margin if margin is None else margin
        if self.db.dialect == "sqlite":
            with _file_lock(self.db, self.connector_id):
                grant = self._read()
                outcome = self._decide(grant, refused, margin)
                if outcome is None:
                    assert grant is not None
                    outcome = self._call(grant)
                    with self.db.begin() as session:
                        outcome = self._store(session, grant, outcome)
        else:
            with self.db.begin() as session:
                grant = self._read(session, lock=True)  # waits for a refresh in progress
                outcome = self._decide(grant, refused, margin)
                if outcome is None:
                    assert grant is not None
                    outcome = self._call(grant)  # the row stays locked: nobody spends it twice
                    outcome = self._store(session, grant, outcome)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _decide(self, grant: _Grant | None, refused: str | None, margin: float,
                ) -> str | Exception | None:
        """Under the lock: a token to use, an error to raise, or None to refresh now."""
        if grant is None:
            return consent_needed(self.connector_name)
        if grant.usable(utcnow(), margin, refused):  # another worker refreshed meanwhile
            return self._keep(grant)
        if grant.status == REFRESH_FAILED:
            return self._reconnect(grant.last_error)
        return None

    def _call(self, grant: _Grant) -> dict[str, Any] | Exception:
        """POST grant_type=refresh_token; the answer, or the error it amounts to."""
        if not grant.refresh:
            return _Rejected("the access token expired and the consent came without a refresh "
                             "token (ask for offline access, e.g. scope offline_access)")
        self.refreshes += 1
        try:
            return _refresh_call(self.spec, grant.refresh)
        except (_Rejected, TransientError) as exc:
            return exc

    def _store(self, session: Session, grant: _Grant, outcome: dict[str, Any] | Exception,
               ) -> str | Exception:
        """Write the outcome (compare-and-set on the refresh token spent); what to return."""
        now = utcnow()
        same_grant = (ConnectorGrant.connector_id == self.connector_id,
                      ConnectorGrant.refresh_token_encrypted == grant.refresh_sealed)
        if isinstance(outcome, _Rejected):
            message = (f"refresh refused: {outcome}; an admin must connect connector "
                       f"'{self.connector_name}' again: Console → Connectors → "
                       f"{self.connector_name} → Connect")[:1000]
            session.execute(update(ConnectorGrant).where(*same_grant).values(
                status=REFRESH_FAILED, last_error=message))
            log.warning("connector %s: %s", self.connector_name, message)
            self._cached = None
            return ConsentRequired(message, key=self.connector_name)
        if isinstance(outcome, TransientError):
            message = f"refresh failed, will retry: {outcome}"[:1000]
            session.execute(update(ConnectorGrant).where(*same_grant).values(last_error=message))
            log.warning("connector %s: %s", self.connector_name, message)
            return TransientError(f"connector '{self.connector_name}' could not refresh its "
                                  f"access token: {outcome}", retry_after=outcome.retry_after)
        if isinstance(outcome, Exception):
            return outcome
        access = outcome["access_token"]
        refresh = outcome.get("refresh_token") or grant.refresh  # not rotated: keep the old one
        register_secret(access)
        register_secret(refresh)
        values: dict[str, Any] = {
            "access_token_encrypted": self.box.encrypt(access), "expires_at": _expiry(outcome, now),
            "refreshed_at": now, "status": OK, "last_error": None}
        if not _same(refresh, grant.refresh):
            values["refresh_token_encrypted"] = self.box.encrypt(refresh)
        if outcome.get("scope"):
            values["scope"] = str(outcome["scope"])[:255]
        changed = session.execute(update(ConnectorGrant).where(*same_grant).values(values)).rowcount
        if not changed:  # a new consent landed meanwhile: its tokens win, ours are dropped
            log.info("connector %s was connected again during a refresh; using the new grant",
                     self.connector_name)
            fresh = self._read(session)
            if fresh is None:
                return consent_needed(self.connector_name)
            return self._keep(fresh) if fresh.access else self._reconnect(fresh.last_error)
        log.info("refreshed the OAuth 2.0 access token of connector %s", self.connector_name)
        issued = _Grant(access, refresh, None, values["expires_at"], now, OK, None)
        return self._keep(issued)

    def _reconnect(self, why: str | None) -> ConsentRequired:
        return ConsentRequired(why or f"an admin must connect connector '{self.connector_name}' "
                               f"again: Console → Connectors → {self.connector_name} → Connect",
                               key=self.connector_name)


def refresh_due(db: Database, box: SecretBox, within_seconds: float = 300) -> int:
    """Refresh every healthy grant that expires within the window, with or without traffic.

    Keeps refresh tokens alive (some expire when idle) and shows a refused refresh on the
    connector's health before an order needs it. Failures are logged and recorded on the
    grant, never raised. Returns how many grants were refreshed.
    """
    horizon = utcnow() + timedelta(seconds=within_seconds)
    with db.begin() as session:
        rows = session.execute(
            select(Connector).join(ConnectorGrant, ConnectorGrant.connector_id == Connector.id)
            .where(ConnectorGrant.status == OK, ConnectorGrant.refresh_token_encrypted.is_not(None),
                   ConnectorGrant.expires_at.is_not(None), ConnectorGrant.expires_at <= horizon)
        ).scalars().all()
        session.expunge_all()
    done = 0
    for row in rows:
        try:
            spec = _consent_of(row, box)
            source = GrantTokenSource(db, box, row.id, row.name, spec)
            done += source.refresh_if_due(within_seconds)
        except (ConsentRequired, TransientError, ConsentError) as exc:
            log.warning("connector %s: grant not refreshed: %s", row.name, exc)
        except Exception:  # one broken connector must not stop the others or the sweep
            log.exception("connector %s: refreshing its grant failed unexpectedly", row.name)
    return done


# --- health ----------------------------------------------------------------------------------

def grant_status(session: Session, connector_id: str) -> dict[str, Any] | None:
    """The public state of a connector's grant for health views; None without a consent."""
    grant = session.get(ConnectorGrant, connector_id)
    return _public(grant) if grant is not None else None


def consent_health(session: Session, box: SecretBox, row: Connector) -> dict[str, Any] | None:
    """What `connectors list/check` show: None if the connector does not use consent, else
    {"state": needed | ok | refresh_failed, "summary": one line, "grant": grant_status}."""
    try:
        _consent_of(row, box)
    except ConsentError:
        return None
    except Exception:  # an invalid config is reported by `connectors check`, not here
        return None
    grant = grant_status(session, row.id)
    if grant is None:
        return {"state": "needed", "summary": "needed", "grant": None}
    if grant["status"] == REFRESH_FAILED:
        return {"state": REFRESH_FAILED, "grant": grant,
                "summary": f"refresh failed: {grant['last_error'] or 'connect again'}"}
    summary = f"ok (expires {grant['expires_at']})" if grant["expires_at"] else "ok"
    if grant["last_error"]:
        summary += f"; last refresh attempt failed: {grant['last_error']}"
    return {"state": OK, "summary": summary, "grant": grant}


# --- helpers ---------------------------------------------------------------------------------

class _Rejected(Exception):
    """The token endpoint refused the grant (invalid_grant, 400, 401): only a new consent helps."""


def _connector_row(session: Session, name: str) -> Connector:
    row = session.execute(select(Connector).where(Connector.name == name)).scalar_one_or_none()
    if row is None:
        raise ConsentError(f"no connector named {name!r}")
    return row


def _consent_of(row: Connector, box: SecretBox) -> ConsentSpec:
    """The ConsentSpec of a connector row, built like Runtime.connector builds its instance."""
    from marshmallow import ValidationError

    from broker.services.crypto import SecretBoxError
    from connectors.config import merge_secrets
    from connectors.errors import ConnectorError
    from connectors.registry import connector_class

    try:
        secrets_ = box.decrypt(row.secrets_encrypted, {})
        cls = connector_class(row.kind)
        instance = cls(cls.Config().load(merge_secrets(row.config or {}, secrets_)), name=row.name)
    except (ConnectorError, LookupError, ValueError, ValidationError, SecretBoxError) as exc:
        raise ConsentError(f"connector '{row.name}' cannot be loaded: {exc}") from None
    try:
        spec = instance.consent()
    finally:
        instance.close()
    if spec is None:
        raise ConsentError(f"connector '{row.name}' does not use an OAuth 2.0 consent (for the "
                           f"http kind: auth type oauth2_consent)")
    register_secret(spec.client_secret)
    return spec


def _exchange_code(spec: ConsentSpec, name: str, *, code: str, verifier: str,
                   redirect_uri: str) -> dict[str, Any]:
    """The token endpoint's answer to the authorization code (RFC 6749 §4.1.3, RFC 7636)."""
    try:
        token = _token_call(spec, grant_type="authorization_code", code=code,
                            code_verifier=verifier, redirect_uri=redirect_uri)
    except _Rejected as exc:
        raise ConsentError(f"the token endpoint refused the authorization code of connector "
                           f"'{name}': {exc}; check auth.token_url, client_id and client_secret, "
                           f"then {_restart(name, lower=True)}") from None
    except TransientError as exc:
        raise ConsentError(f"the token endpoint of connector '{name}' could not be reached: "
                           f"{exc}; {_restart(name)}") from None
    if not token.get("access_token"):
        raise ConsentError(f"the token endpoint of connector '{name}' sent no access token; "
                           f"{_restart(name)}")
    return token


def _refresh_call(spec: ConsentSpec, refresh_token: str) -> dict[str, Any]:
    token = _token_call(spec, grant_type="refresh_token", refresh_token=refresh_token)
    if not token.get("access_token"):
        raise _Rejected(f"the token endpoint at {_origin(spec.token_url)} sent no access token")
    return token


def _token_call(spec: ConsentSpec, **form: str) -> dict[str, Any]:
    """One guarded token endpoint request, client_secret_basic.

    Raises: _Rejected (4xx, an OAuth error, a refused URL), TransientError (network, 5xx, 429).
    """
    import requests
    from authlib.integrations.base_client.errors import OAuthError
    from authlib.integrations.requests_client import OAuth2Session

    where = _origin(spec.token_url)
    hide = [v for v in (spec.client_secret, *form.values()) if v]

    def status_first(resp: Any) -> Any:
        if resp.status_code < 300:
            return resp
        error, description = _oauth_error(resp)
        said = f"{resp.status_code}" + (f" {error}" if error else "") + \
            (f": {description}" if description else "")
        said = _scrub(f"the token endpoint at {where} answered {said}", hide)
        if resp.status_code in _TRANSIENT or resp.status_code >= 500:
            raise TransientError(said, retry_after=retry_after(resp.headers.get("Retry-After")))
        if 300 <= resp.status_code < 400:
            said += " (redirects are not followed; set auth.token_url to the final address)"
        raise _Rejected(said)

    grant_type = form.pop("grant_type")
    try:
        with OAuth2Session(spec.client_id, spec.client_secret,
                           token_endpoint_auth_method="client_secret_basic") as session:
            guard_session(session)  # SSRF guard; no ~/.netrc credentials or env proxies
            session.register_compliance_hook("access_token_response", status_first)
            session.register_compliance_hook("refresh_token_response", status_first)
            kwargs: dict[str, Any] = {"timeout": TOKEN_TIMEOUT, "allow_redirects": False}
            if grant_type == "refresh_token":
                token = session.refresh_token(spec.token_url, refresh_token=form["refresh_token"],
                                              **kwargs)
            else:
                token = session.fetch_token(spec.token_url, grant_type=grant_type, **form, **kwargs)
    except (_Rejected, TransientError):
        raise
    except Refused as exc:
        raise _Rejected(f"{exc}; fix auth.token_url") from None
    except OAuthError as exc:  # an error object in a 2xx answer
        raise _Rejected(_scrub(f"the token endpoint at {where} answered {exc.error}"
                               + (f": {exc.description}" if exc.description else ""), hide)) from None
    except requests.RequestException as exc:
        raise TransientError(_scrub(f"the token endpoint at {where} is unreachable: "
                                    f"{_reason(exc)}", hide)) from None
    except ValueError as exc:
        raise _Rejected(_scrub(f"the token endpoint at {where} sent an unreadable answer: {exc}",
                               hide)) from None
    return dict(token)


def _reason(exc: BaseException) -> str:
    """The innermost cause, short: 'ConnectionRefusedError: [Errno 111] Connection refused'."""
    seen = {id(exc)}
    while (inner := exc.__cause__ or exc.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        exc = inner
    if exc.args and isinstance(exc.args[0], BaseException) and id(exc.args[0]) not in seen:
        return _reason(exc.args[0])
    return _short(f"{type(exc).__name__}: {exc}", 300)


def _oauth_error(resp: Any) -> tuple[str, str]:
    """RFC 6749 §5.2 `error` and `error_description`, if the body is such a JSON object."""
    try:
        body = resp.json()
    except ValueError:
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    return _short(str(body.get("error") or "")), _short(str(body.get("error_description") or ""))


def _public(grant: ConnectorGrant) -> dict[str, Any]:
    """Everything about a grant but its tokens."""
    return {"status": grant.status, "expires_at": _iso(grant.expires_at),
            "refreshed_at": _iso(grant.refreshed_at), "granted_by": grant.granted_by,
            "granted_at": _iso(grant.granted_at), "last_error": grant.last_error,
            "scope": grant.scope}


def _expiry(token: Mapping[str, Any], now: datetime) -> datetime | None:
    try:
        seconds = float(token.get("expires_in") or 0)
    except (TypeError, ValueError):
        seconds = 0
    return now + timedelta(seconds=seconds) if seconds > 0 else None


def _scope(token: Mapping[str, Any], spec: ConsentSpec) -> str | None:
    scope = token.get("scope") or spec.scope
    if isinstance(scope, list | tuple):
        scope = " ".join(scope)
    return str(scope)[:255] if scope else None


def _same(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two optional token values."""
    if a is None or b is None:
        return False
    return hmac.compare_digest(a.encode(), b.encode())


def _scrub(text: str, values: list[str]) -> str:
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, "***")
    return text


def _short(text: str, limit: int = 200) -> str:
    """Provider-supplied text, one line and bounded, for an operator's message."""
    return " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())[:limit]


def _restart(name: str, *, lower: bool = False) -> str:
    text = f"Start again: Console → Connectors → {name} → Connect"
    return text[0].lower() + text[1:] if lower else text


def _pending_field(pending: Mapping[str, Any], key: str) -> str:
    value = pending.get(key) if isinstance(pending, Mapping) else None
    if not isinstance(value, str) or not value:
        raise ConsentError("no consent is in progress in this session (it expired or was "
                           "started elsewhere); start again from Console → Connectors")
    return value


def _parse_time(value: Any) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else \
            datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"


_process_locks: dict[str, threading.Lock] = {}
_process_locks_guard = threading.Lock()


@contextmanager
def _file_lock(db: Database, connector_id: str) -> Iterator[None]:
    """An exclusive lock per grant shared by every process on this host (SQLite is one host)."""
    path = db.engine.url.database
    if not path or path == ":memory:":
        with _process_locks_guard:
            lock = _process_locks.setdefault(connector_id, threading.Lock())
        with lock:
            yield
        return
    import fcntl

    lock_path = f"{os.path.abspath(path)}-grant-{connector_id}.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when the descriptor closes, even on a crash
        yield
    finally:
        os.close(fd)


__all__ = ["ConsentError", "GrantTokenSource", "begin_consent", "complete_consent",
           "consent_health", "grant_status", "refresh_due"]
