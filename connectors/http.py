"""The built-in `http` connector: book orders into any REST back office over HTTP(S)."""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from functools import cache
from http import HTTPStatus
from typing import Any, NamedTuple
from urllib.parse import quote, unquote, urlsplit

import urllib3
from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment
from marshmallow import ValidationError, fields, validate, validates, validates_schema

from connectors.base import Connector, PushContext, PushResult
from connectors.config import ConfigSchema, Secret
from connectors.errors import PermanentError, TransientError
from connectors.ssrf import GuardedPoolManager, guard_session
from connectors.tokens import ConsentSpec, consent_needed
from connectors.wire import retry_after

USER_AGENT = "fobo-broker/0.1"
RETRYABLE = frozenset({408, 409, 425, 429})  # plus every 5xx (RELIABILITY.md 4e)
CHECK_ID = "fobo-broker-check"
_AUTH_NEEDS = {"none": (), "basic": ("username", "password"), "bearer": ("token",),
               "oauth2": ("token_url", "client_id", "client_secret"),
               "oauth2_consent": ("authorize_url", "token_url", "client_id", "client_secret")}
_AUTH_OPTIONAL = {"oauth2": ("scope",), "oauth2_consent": ("scope", "resource", "authorize_params")}
_BROKER_AUTHORIZE_PARAMS = frozenset({"response_type", "client_id", "redirect_uri", "scope", "state",
                                      "code_challenge", "code_challenge_method", "resource"})
_is_url = validate.URL(schemes={"http", "https"}, require_tld=False)
log = logging.getLogger(__name__)


def _url(*placeholders: str, required: str | None = None) -> Any:
    """A validator for an http(s) URL that may contain the given {placeholders}."""
    def check(value: str) -> None:
        concrete = value
        for name in placeholders:
            concrete = concrete.replace(name, "x")
        if required and required not in value:
            raise ValidationError(f"needs a {required} placeholder")
        if "{" in concrete or "}" in concrete:
            raise ValidationError(f"allowed placeholders: {', '.join(placeholders) or 'none'}")
        _is_url(concrete)
        if "@" in urlsplit(concrete).netloc:
            raise ValidationError("put credentials under 'auth', not in the URL")
    return check


def _for(field: str, description: str, **meta: Any) -> dict[str, Any]:
    """Field metadata (connectors.describe): help text, and the auth types that use the field,
    so forms show it only for those."""
    types = [t for t in _AUTH_NEEDS if field in _AUTH_NEEDS[t] or field in _AUTH_OPTIONAL.get(t, ())]
    return {"description": description, "x-shown-when": {"type": types}, **meta}


class AuthConfig(ConfigSchema):
    """How the connector proves who it is; each type needs its own fields and no others."""

    type = fields.String(load_default="none", validate=validate.OneOf(list(_AUTH_NEEDS)), metadata={
        "title": "Type", "description": "none; basic (user name and password); bearer (a "
        "fixed token); oauth2 (client credentials: a service account of the broker); oauth2_consent "
        "(an admin signs in once at the back office and approves)."})
    username = fields.String(metadata=_for("username", "The user name of HTTP Basic authentication.",
                                           title="User name"))
    password = Secret(metadata=_for("password", "Its password."))
    token = Secret(metadata=_for("token", "Sent as 'Authorization: Bearer TOKEN' with every request."))
    token_url = fields.String(validate=_url(), metadata=_for(
        "token_url", "The authorization server's token endpoint.", title="Token URL"))
    authorize_url = fields.String(validate=_url(), metadata=_for(  # the admin's browser goes here
        "authorize_url", "Where the admin is sent to sign in and approve the broker.",
        title="Authorization URL"))
    client_id = fields.String(metadata=_for(
        "client_id", "The broker's client id, registered at the authorization server."))
    client_secret = Secret(metadata=_for("client_secret", "The secret of that client."))
    scope = fields.String(metadata=_for(
        "scope", "Scopes to ask for, separated by spaces (add offline_access for an OpenID "
        "Connect provider's refresh token)."))
    resource = fields.String(metadata=_for(  # RFC 8707 resource indicator, if the IdP wants one
        "resource", "An RFC 8707 resource indicator, if the authorization server wants one."))
    # oauth2_consent: vendor extras for the authorization request, e.g. {"access_type": "offline"}
    authorize_params = fields.Dict(values=fields.String(), keys=fields.String(validate=validate.NoneOf(
        sorted(_BROKER_AUTHORIZE_PARAMS), error="set by the broker, or a field of its own")),
        metadata=_for("authorize_params", 'Extra parameters of the authorization request, as JSON, '
                      'e.g. {"access_type": "offline"}.', title="Authorization parameters"))

    @validates_schema
    def _fields_match_type(self, data: dict[str, Any], **kwargs: Any) -> None:
        kind = data.get("type", "none")
        needs = _AUTH_NEEDS[kind]
        allowed = {"type", *needs, *_AUTH_OPTIONAL.get(kind, ())}
        errors = {f: [f"required for auth type '{kind}'"] for f in needs if not data.get(f)}
        errors.update({f: [f"not used by auth type '{kind}'"] for f in data if f not in allowed})
        if errors:
            raise ValidationError(errors)


class HttpConfig(ConfigSchema):
    """Where and how to send orders; `template` renders the body (default: canonical JSON)."""

    url = fields.String(required=True, validate=_url(), metadata={
        "description": "Where orders are sent: https://erp.example.com/api/orders. An address on "
        "your own network must be listed in BROKER_ALLOWED_PRIVATE_HOSTS."})
    method = fields.String(load_default="POST", validate=validate.OneOf(["POST", "PUT"]), metadata={
        "description": "The HTTP method of creates and updates."})
    headers = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict, metadata={
        "description": 'Extra request headers, as JSON: {"X-Tenant": "acme"}. Credentials go '
        "under Authentication."})
    timeout = fields.Float(load_default=10.0, validate=validate.Range(min=0, min_inclusive=False),
                           metadata={"title": "Read timeout (s)", "description": "Seconds to wait "
                                     "for the answer; longer counts as a failure and is retried."})
    connect_timeout = fields.Float(load_default=5.0,
                                   validate=validate.Range(min=0, min_inclusive=False),
                                   metadata={"title": "Connect timeout (s)"})
    auth = fields.Nested(AuthConfig, load_default=lambda: {"type": "none"},
                         metadata={"title": "Authentication"})
    template = fields.String(load_default=None, allow_none=True, metadata={
        "description": "A Jinja template of the request body; empty sends "
        '{"action": ..., "order": <the canonical order>}.'})
    content_type = fields.String(load_default="application/json", metadata={
        "description": "The Content-Type of the body."})
    idempotency_header = fields.String(load_default="Idempotency-Key",
                                       validate=validate.Regexp(r"^[A-Za-z0-9-]+$"), metadata={
                                           "description": "Header carrying a key that is the same "
                                           "for every retry of one write, so the back office books "
                                           "it once — if it honours the header; a back office that "
                                           "ignores it needs a Lookup URL."})
    reference_field = fields.String(load_default="id", validate=validate.Length(min=1), metadata={
        "description": "Field of the JSON answer holding the back office's reference (else the "
        "Location header)."})
    lookup_url = fields.String(load_default=None, allow_none=True,
                               validate=_url("{external_id}", required="{external_id}"), metadata={
                                   "title": "Lookup URL", "description": "GET URL that finds an "
                                   "order by {external_id}, so a lost answer is never booked twice. "
                                   "Without it, booking once rests on the back office honouring "
                                   "the idempotency header: if it ignores it, an order is booked "
                                   "twice whenever a worker dies between the back office's write "
                                   "and its answer (at-least-once)."})
    cancel_url = fields.String(load_default=None, allow_none=True,
                               validate=_url("{external_id}", "{reference}"), metadata={
                                   "title": "Cancel URL", "description": "POST URL that cancels "
                                   "{reference} or {external_id}; empty: cancellations are sent to "
                                   "the main URL."})
    verify_tls = fields.Boolean(load_default=True, metadata={
        "title": "Verify TLS certificates", "description": "Turn off only for a back office "
        "whose certificate you cannot fix yet."})
    max_response_bytes = fields.Integer(load_default=1 << 20, validate=validate.Range(min=1), metadata={
        "description": "Larger answers are refused."})

    @validates("template")
    def _template_compiles(self, value: str | None, **kwargs: Any) -> None:
        try:
            _jinja().parse(value or "")
        except TemplateSyntaxError as exc:
            raise ValidationError(f"template line {exc.lineno}: {exc.message}") from exc

    @validates_schema
    def _headers_are_ours_to_set(self, data: dict[str, Any], **kwargs: Any) -> None:
        managed = {"authorization": "credentials belong under 'auth'",
                   "content-type": "use 'content_type'", "x-broker-action": "set by the broker",
                   "x-broker-delivery": "set by the broker",
                   data.get("idempotency_header", "").lower(): "set by the broker"}
        errors = [f"'{k}': {managed.get(k.lower(), 'no line breaks allowed')}"
                  for k, v in data.get("headers", {}).items()
                  if k.lower() in managed or any(c in k + v for c in "\r\n")]
        if errors:
            raise ValidationError({"headers": errors})


@cache
def _jinja() -> SandboxedEnvironment:
    # StrictUndefined: a typo in a template fails loudly; use `| default(...)` for optional keys.
    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


class _Answer(NamedTuple):
    status: int
    headers: Any  # urllib3.HTTPHeaderDict, case-insensitive
    body: bytes
    complete: bool  # False when the body exceeded max_response_bytes


AT_LEAST_ONCE = (
    "connector '{name}' has no lookup_url: orders are booked once only if the back office "
    "honours the {header} header. If it ignores it, an order is booked twice whenever a worker "
    "dies between the back office's write and its answer (at-least-once). Set lookup_url (a GET "
    "that finds an order by {{external_id}}), or make sure the back office deduplicates on {header}.")


class HttpConnector(Connector):
    """POST (or PUT) each order to a REST back office; the idempotency key makes retries safe."""

    kind = "http"
    title = "HTTP / REST back office"
    Config = HttpConfig
    clock = staticmethod(time.monotonic)  # when cached tokens are due (tests move it)

    def __init__(self, config: Mapping[str, Any], *, name: str = "") -> None:
        super().__init__(config, name=name)
        try:  # validating again is idempotent and fills defaults when given a raw config
            self.settings: dict[str, Any] = HttpConfig().load(dict(config))
        except ValidationError as exc:
            raise PermanentError(f"connector '{self.name}' has an invalid config: {exc.messages}; "
                                 "fix it under Connectors") from exc
        template = self.settings["template"]
        self._template = _jinja().from_string(template) if template else None
        self._auth = self.settings["auth"]
        self._pool: urllib3.PoolManager | None = None
        self._token: str | None = None
        self._token_renew_at = 0.0
        self._consent_token: str | None = None  # the last token of the consent, for redaction
        self._lock = threading.Lock()

    def consent(self) -> ConsentSpec | None:
        """Under auth type oauth2_consent: the authorization code grant an admin runs once."""
        auth = self._auth
        if auth["type"] != "oauth2_consent":
            return None
        return ConsentSpec(auth["authorize_url"], auth["token_url"], auth["client_id"],
                           auth["client_secret"], scope=auth.get("scope"),
                           extra={**auth.get("authorize_params", {}),
                                  **({"resource": auth["resource"]} if auth.get("resource") else {})})

    def check(self) -> None:
        """Prove the back office answers and takes our credentials, without booking anything.

        Raises: TransientError if unreachable or failing, PermanentError if credentials fail.
        """
        lookup_url = self.settings["lookup_url"]
        if lookup_url:
            url = lookup_url.replace("{external_id}", CHECK_ID)
            answer = self._request("GET", url)
            if answer.status not in (200, 404):
                self._raise_for_status(answer, "the connection check", url, hint=(
                    f"check lookup_url of connector '{self.name}'"), ok=False)
            return
        answer = self._request("OPTIONS", self.settings["url"])
        if (answer.status >= 500 and answer.status != 501) or answer.status in (401, 403):
            self._raise_for_status(answer, "the connection check", self.settings["url"])

    def warnings(self) -> list[str]:
        if self.settings["lookup_url"]:
            return []
        return [AT_LEAST_ONCE.format(name=self.name, header=self.settings["idempotency_header"])]

    def push(self, order: Mapping[str, Any], ctx: PushContext) -> PushResult:
        """Create or update the order; creates look the order up first when lookup_url is set.

        Raises: TransientError, PermanentError.
        """
        if ctx.action == "cancel":
            return self.cancel(order, ctx)
        if ctx.action == "create" and self.settings["lookup_url"]:
            # DESIGN invariant 2: protects against back offices that ignore the idempotency key.
            reference = self.lookup(order)
            if reference is not None:  # booked before (its answer was lost): this content updates it
                ctx = replace(ctx, action="update", reference=reference,
                              idempotency_key=f"{ctx.idempotency_key}.update")
                result = self._send(self.settings["url"], order, ctx, "update")
                return replace(result, reference=reference, details={**result.details, "found": True})
        return self._send(self.settings["url"], order, ctx, ctx.action)

    def cancel(self, order: Mapping[str, Any], ctx: PushContext) -> PushResult:
        """Send action "cancel" to cancel_url, or to url when none is configured.

        Raises: TransientError, PermanentError.
        """
        template = self.settings["cancel_url"]
        url = self._fill(template, order, ctx.reference) if template else self.settings["url"]
        return self._send(url, order, ctx, "cancel")

    def can_look_up(self) -> bool:
        return bool(self.settings["lookup_url"])

    def lookup(self, order: Mapping[str, Any]) -> str | None:
        """The reference found via lookup_url by external id; None on 404 or without lookup_url.

        Raises: TransientError, PermanentError.
        """
        if not self.settings["lookup_url"]:
            return None
        url = self._fill(self.settings["lookup_url"], order, None)
        answer = self._request("GET", url)
        if answer.status == 404:
            return None
        subject = f"the lookup of {_label(order)}"
        self._raise_for_status(answer, subject, url)
        reference = self._reference(answer, location=False)
        if reference is None:
            raise self._fail(PermanentError, f"{subject} at {_origin(url)} answered "
                             f"{answer.status} without '{self.settings['reference_field']}' in "
                             f"its JSON; set reference_field of connector '{self.name}'")
        return reference

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.clear()
                self._pool = None

    def _send(self, url: str, order: Mapping[str, Any], ctx: PushContext, action: str,
              ) -> PushResult:
        headers = {"Content-Type": self.settings["content_type"],
                   self.settings["idempotency_header"]: ctx.idempotency_key,
                   "X-Broker-Action": action, "X-Broker-Delivery": ctx.delivery_id}
        answer = self._request(self.settings["method"], url, self._body(order, ctx, action),
                               headers)
        self._raise_for_status(answer, _label(order), url)
        reference = self._reference(answer) or ctx.idempotency_key
        return PushResult(reference, details={"status": answer.status})

    def _body(self, order: Mapping[str, Any], ctx: PushContext, action: str) -> bytes:
        # Lazy: listing connector kinds must not import the broker's schemas.
        from broker.schemas.order import dump_order

        dumped = ctx.document if ctx.document is not None else dump_order(dict(order))
        if self._template is None:
            return json.dumps({"action": action, "order": dumped}, sort_keys=True,
                              separators=(",", ":"), ensure_ascii=False).encode()
        try:
            return self._template.render(order=dumped, action=action, reference=ctx.reference,
                                         idempotency_key=ctx.idempotency_key).encode()
        except Exception as exc:  # any template bug fails every retry alike
            raise self._fail(PermanentError, f"the template of connector '{self.name}' failed "
                             f"for {_label(order)}: {exc}; fix the template and replay") from exc

    def _request(self, method: str, url: str, body: bytes | None = None,
                 headers: Mapping[str, str] | None = None) -> _Answer:
        """One exchange; under oauth2(_consent) a 401 renews the token and retries once."""
        answer, token = self._exchange(method, url, body, headers)
        if answer.status == 401 and self._auth["type"] == "oauth2":
            with self._lock:
                if self._token is token:  # the very token refused (RELIABILITY 5b.2: no ==)
                    self._token = None
            answer, _ = self._exchange(method, url, body, headers)
        elif answer.status == 401 and self._auth["type"] == "oauth2_consent":
            answer, _ = self._exchange(method, url, body, headers, refused=token)
        return answer

    def _exchange(self, method: str, url: str, body: bytes | None,
                  headers: Mapping[str, str] | None, refused: str | None = None,
                  ) -> tuple[_Answer, str | None]:
        sent = urllib3.HTTPHeaderDict({"User-Agent": USER_AGENT, "Accept": "application/json"})
        sent.update(self.settings["headers"])
        sent.update(headers or {})
        token = None
        if self._auth["type"] == "basic":
            sent["Authorization"] = f"Basic {self._basic()}"
        elif self._auth["type"] in ("bearer", "oauth2"):
            token = self._auth.get("token") or self._access_token()
            sent["Authorization"] = f"Bearer {token}"
        elif self._auth["type"] == "oauth2_consent":
            if self.tokens is None:  # the broker hands one over; without it nobody consented
                raise consent_needed(self.name)
            token = self._consent_token = self.tokens.access_token(refused)
            sent["Authorization"] = f"Bearer {token}"
        limit = self.settings["max_response_bytes"]
        try:
            resp = self._http().request(method, url, body=body, headers=sent, redirect=False,
                                        preload_content=False)
            complete = False
            try:
                data = resp.read(limit + 1)
                complete = len(data) <= limit
            finally:
                if not complete:
                    resp.close()  # an unread remainder would poison the keep-alive connection
                resp.release_conn()
        except urllib3.exceptions.HTTPError as exc:
            raise self._fail(TransientError, f"back office at {_origin(url)} unreachable: "
                             f"{self._reason(exc)}") from exc
        return _Answer(resp.status, resp.headers, data[:limit], complete), token

    def _http(self) -> urllib3.PoolManager:
        if self._pool is not None:
            return self._pool
        with self._lock:
            if self._pool is None:
                self._pool = GuardedPoolManager(  # SSRF guard: checked, pinned addresses
                    num_pools=4, maxsize=8, retries=False,
                    timeout=urllib3.Timeout(connect=self.settings["connect_timeout"],
                                            read=self.settings["timeout"]),
                    cert_reqs="CERT_REQUIRED" if self.settings["verify_tls"] else "CERT_NONE")
            return self._pool

    def _access_token(self) -> str:
        """The cached client-credentials token, fetched again shortly before it expires."""
        with self._lock:
            if self._token is None or self.clock() >= self._token_renew_at:
                self._token, lifetime = self._fetch_token()
                self._token_renew_at = self.clock() + (
                    lifetime - min(30.0, lifetime / 2) if lifetime > 0 else math.inf)
            return self._token

    def _fetch_token(self) -> tuple[str, float]:
        import requests
        from authlib.integrations.base_client.errors import OAuthError
        from authlib.integrations.requests_client import OAuth2Session

        url, where = self._auth["token_url"], _origin(self._auth["token_url"])
        hint = f"check auth.token_url, client_id and client_secret of connector '{self.name}'"

        def status_first(resp: Any) -> Any:
            if resp.status_code >= 300:  # the same status table as the back office's answers
                self._raise_for_status(_Answer(resp.status_code, resp.headers, resp.content,
                                               True), "the OAuth 2.0 token request", url,
                                       hint=hint, who="token endpoint")
            return resp

        try:
            with OAuth2Session(self._auth["client_id"], self._auth["client_secret"],
                               scope=self._auth.get("scope")) as session:
                guard_session(session)  # SSRF guard; no ~/.netrc credentials or env proxies
                session.register_compliance_hook("access_token_response", status_first)
                token = session.fetch_token(
                    url, grant_type="client_credentials", verify=self.settings["verify_tls"],
                    allow_redirects=False,
                    timeout=(self.settings["connect_timeout"], self.settings["timeout"]))
        except requests.RequestException as exc:
            raise self._fail(TransientError, f"token endpoint at {where} unreachable: "
                             f"{self._reason(exc)}") from exc
        except (OAuthError, ValueError) as exc:
            raise self._fail(PermanentError, f"token endpoint at {where} refused: {exc}; {hint}"
                             ) from exc
        if not token.get("access_token"):
            raise self._fail(PermanentError, f"token endpoint at {where} sent no access_token; "
                             f"{hint}")
        log.info("fetched an OAuth 2.0 token for connector %s", self.name)
        return token["access_token"], float(token.get("expires_in") or 0)

    def _raise_for_status(self, answer: _Answer, subject: str, url: str, *, ok: bool = True,
                          hint: str = "fix the order or the connector config and replay",
                          who: str = "back office") -> None:
        """The one status table: 2xx passes, 408/409/425/429/5xx retry, anything else stops."""
        status = answer.status
        if ok and 200 <= status < 300:
            if not answer.complete:
                raise self._fail(PermanentError, f"the answer to {subject} is larger than "
                                 f"max_response_bytes ({self.settings['max_response_bytes']}); "
                                 f"raise it for connector '{self.name}' and replay")
            return
        try:
            phrase = f" {HTTPStatus(status).phrase}"
        except ValueError:
            phrase = ""
        said = f"{who} at {_origin(url)} answered {status}{phrase} for {subject}"
        snippet = " ".join(self._redact(answer.body[:4096].decode("utf-8", "replace")).split())
        said += f": {snippet[:300] or '(empty body)'}"
        if status in RETRYABLE or 500 <= status < 600:
            raise self._fail(TransientError, f"{said}; will retry",
                             retry_after=retry_after(answer.headers.get("Retry-After")))
        if status in (401, 403) and self._auth["type"] == "oauth2_consent" and who != "token endpoint":
            hint = (f"the back office refused the consent's access token: check auth.scope and "
                    f"auth.resource of connector '{self.name}', connect it again (Console → "
                    f"Connectors → {self.name} → Connect), then replay")
        elif status in (401, 403):
            hint = f"check the credentials under 'auth' of connector '{self.name}', then replay"
        elif 300 <= status < 400:
            hint = (f"redirects are not followed; set the connector's URL to "
                    f"{answer.headers.get('Location', 'the final address')}")
        raise self._fail(PermanentError, f"{said}; {hint}")

    def _reference(self, answer: _Answer, *, location: bool = True) -> str | None:
        """The reference at reference_field in the JSON answer, else the Location's last segment."""
        try:
            value: Any = json.loads(answer.body) if answer.body else None
        except ValueError:
            value = None
        for part in self.settings["reference_field"].split("."):
            if isinstance(value, dict):
                value = value.get(part)
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                value = None
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)
        where = answer.headers.get("Location") if location else None
        segment = urlsplit(where).path.rstrip("/").rpartition("/")[2] if where else ""
        return unquote(segment) or None

    def _fill(self, template: str, order: Mapping[str, Any], reference: str | None) -> str:
        if "{reference}" in template and not reference:
            raise self._fail(PermanentError, f"cancel_url of connector '{self.name}' needs the "
                             f"back-office reference of {_label(order)}, which is not known; "
                             "cancel it by hand")
        return (template.replace("{external_id}", quote(str(order["external_id"]), safe=""))
                .replace("{reference}", quote(reference or "", safe="")))

    def _basic(self) -> str:
        pair = f"{self._auth['username']}:{self._auth['password']}"
        return base64.b64encode(pair.encode()).decode()

    def _redact(self, text: str) -> str:
        """Replace every secret this connector knows, raw or encoded, with ***."""
        secrets = [self._auth.get(k) for k in ("password", "token", "client_secret")]
        secrets += [self._token, self._consent_token]
        if self._auth["type"] == "basic":
            secrets.append(self._basic())
        variants = {v for s in secrets if s for v in (s, quote(s, safe=""), quote(s))}
        for secret in sorted(variants, key=len, reverse=True):
            # Short secrets only as whole words, so "unreachable" survives a password "b".
            text = (text.replace(secret, "***") if len(secret) >= 8 else
                    re.sub(rf"(?<!\w){re.escape(secret)}(?!\w)", "***", text))
        return text

    def _fail(self, cls: type[Exception], message: str, **kwargs: Any) -> Exception:
        return cls(self._redact(message), **kwargs)

    def _reason(self, exc: BaseException) -> str:
        """A short cause: 'ConnectionRefusedError: …', 'no answer within 10.0s'."""
        if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
            return f"no answer within {self.settings['timeout']}s"
        if type(exc) is urllib3.exceptions.ConnectTimeoutError:  # not its NewConnectionError
            return f"no connection within {self.settings['connect_timeout']}s"
        while (inner := exc.__cause__ or exc.__context__ or getattr(exc, "reason", None)) \
                and isinstance(inner, BaseException) and inner is not exc:
            exc = inner
        return f"{type(exc).__name__}: {exc}"[:300]


def _origin(url: str) -> str:
    """scheme://host[:port], never userinfo or path, for messages."""
    parts = urlsplit(url)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"


def _label(order: Mapping[str, Any]) -> str:
    return f"order {order.get('number') or order.get('external_id')}"
