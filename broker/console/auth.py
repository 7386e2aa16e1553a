"""Console sign-in: OpenID Connect authorization code with PKCE through a trusted company
issuer, or a local user (the bootstrap admin); sign-out; the guard of console views.

The OIDC request's state, nonce and PKCE verifier live only in the server-side session of
the browser that started it; the callback must return that state, and the ID token that
nonce, from the issuer that was asked (RFC 9207 `iss` when sent), to the exact redirect
URI. Roles come from the issuer's role rules; no matching rule means no access. Every
successful sign-in rotates the session.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

import requests
from authlib.common.urls import add_params_to_uri
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue

from broker.identity.issuers import Issuer, IssuerDirectory, IssuerUnavailable
from broker.identity.roles import Principal, map_role, role_permissions
from broker.services import audit
from broker.services.users import LoginRefused, authenticate
from connectors.ssrf import Refused, guard_session

log = logging.getLogger(__name__)
bp = Blueprint("console_auth", __name__, url_prefix="/console")
PENDING_SECONDS = 600
CALLBACK = "/console/auth/callback"


def runtime() -> Any:
    return current_app.extensions["broker"]


def directory() -> IssuerDirectory:
    return current_app.extensions["broker_issuers"]


def csrf_token() -> str:
    """The session's synchronizer token (OWASP), put in every console form."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return str(session["csrf"])


def check_csrf() -> None:
    """Refuse a state-changing console request without this session's token."""
    sent = request.form.get("csrf_token", "")
    if not (session.get("csrf") and hmac.compare_digest(sent, str(session["csrf"]))):
        abort(400, "the form has expired or did not come from this console; reload the page "
                   "and try again")


def current_user() -> Principal | None:
    user = session.get("user")
    if not user:
        return None
    return Principal(actor=user["actor"], display=user["display"], role=user["role"],
                     permissions=role_permissions(user["role"]))


def requires(permission: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Console views: signed in (else to the sign-in page) and allowed (else 403)."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            user = current_user()
            if user is None:
                return redirect(url_for("console_auth.login", next=request.full_path))
            if not user.can(permission):
                abort(403, f"your role ({user.role}) may not do this")
            g.user = user
            if request.method == "POST":
                check_csrf()
            return view(*args, **kwargs)

        return guarded

    return decorate


def _safe_next(target: str | None) -> str:
    """Only a path inside the console: never an open redirect."""
    if not target:
        return url_for("console.home")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/console") or "\\" in target:
        return url_for("console.home")
    return target.rstrip("?")


def _sign_in(actor: str, display: str, role: str, via: str) -> ResponseReturnValue:
    target = _safe_next(session.get("next"))
    session.clear()
    session.rotate()  # type: ignore[attr-defined]
    session["user"] = {"actor": actor, "display": display, "role": role, "via": via,
                       "at": int(time.time())}
    session["csrf"] = secrets.token_urlsafe(32)
    with runtime().db.begin() as db_session:
        audit.record(db_session, actor=actor, action="console.sign_in", target_type="user",
                     target=actor, after={"role": role, "via": via})
    log.info("console sign-in of %s as %s via %s", actor, role, via)
    return redirect(target, 303)


def _refuse(message: str, status: int = 400) -> ResponseReturnValue:
    return render_template("console/login.html", error=message, **_login_page()), status


def _login_page() -> dict[str, Any]:
    signs_in = [i for i in directory().issuers().values() if i.signs_in]
    return {"issuers": sorted(signs_in, key=lambda i: i.name), "csrf": csrf_token()}


@bp.route("/login", methods=["GET"])
def login() -> ResponseReturnValue:
    if request.args.get("next"):
        session["next"] = _safe_next(request.args["next"])
    return render_template("console/login.html", error=None, **_login_page())


@bp.route("/login", methods=["POST"])
def login_local() -> ResponseReturnValue:
    check_csrf()
    username, password = request.form.get("username", ""), request.form.get("password", "")
    try:
        user = authenticate(runtime().db, username, password, request.remote_addr or "unknown")
    except LoginRefused as exc:
        log.warning("console sign-in refused for user name %r from %s: %s", username[:64],
                    request.remote_addr, exc)
        page = _refuse(str(exc), 429 if exc.retry_after else 401)
        if exc.retry_after:
            return page[0], page[1], {"Retry-After": str(exc.retry_after)}  # type: ignore[index]
        return page
    return _sign_in(f"user:{user.username}", user.username, user.role, "local")


def redirect_uri() -> str:
    return runtime().settings.public_url + CALLBACK


@bp.route("/login/<name>", methods=["GET"])
def login_oidc(name: str) -> ResponseReturnValue:
    issuer = directory().by_name(name)
    if issuer is None or not issuer.signs_in:
        return _refuse(f"there is no sign-in through {name!r}", 404)
    try:
        endpoint = directory().metadata(issuer)["authorization_endpoint"]
    except (IssuerUnavailable, KeyError) as exc:
        log.warning("sign-in through %s unavailable: %s", name, exc)
        return _refuse(f"{name} cannot be reached right now; try again shortly", 503)
    pending = {"issuer": issuer.name, "state": secrets.token_urlsafe(32),
               "nonce": secrets.token_urlsafe(32), "verifier": secrets.token_urlsafe(64),
               "started": int(time.time())}
    session["oidc"] = pending
    return redirect(add_params_to_uri(endpoint, [
        ("response_type", "code"), ("client_id", issuer.client_id), ("scope", issuer.scopes),
        ("redirect_uri", redirect_uri()), ("state", pending["state"]),
        ("nonce", pending["nonce"]), ("code_challenge_method", "S256"),
        ("code_challenge", create_s256_code_challenge(pending["verifier"]))]), 303)


def _token_endpoint_session(issuer: Issuer, metadata: dict[str, Any]) -> OAuth2Session:
    methods = metadata.get("token_endpoint_auth_methods_supported", ["client_secret_basic"])
    method = "client_secret_basic" if "client_secret_basic" in methods else "client_secret_post"
    client = OAuth2Session(issuer.client_id, directory().client_secret(issuer),
                           token_endpoint_auth_method=method)
    guard_session(client)
    return client


def _userinfo(metadata: dict[str, Any], access_token: str) -> dict[str, Any]:
    endpoint = metadata.get("userinfo_endpoint")
    if not endpoint:
        return {}
    session_ = guard_session(requests.Session())
    try:
        resp = session_.get(endpoint, headers={"Authorization": f"Bearer {access_token}"},
                            timeout=(5, 10), allow_redirects=False)
        return resp.json() if resp.status_code == 200 else {}
    except (requests.RequestException, ValueError, Refused):
        return {}
    finally:
        session_.close()


@bp.route("/auth/callback", methods=["GET"])
def callback() -> ResponseReturnValue:
    pending = session.pop("oidc", None)
    args = request.args
    if not pending or time.time() - pending["started"] > PENDING_SECONDS:
        return _refuse("this sign-in has expired or was started in another browser; start again")
    if not hmac.compare_digest(args.get("state", ""), pending["state"]):
        log.warning("console sign-in refused: state mismatch")
        return _refuse("the sign-in answer does not belong to this browser (state mismatch); "
                       "start again")
    issuer = directory().by_name(pending["issuer"])
    if issuer is None:
        return _refuse("that identity provider is no longer configured")
    try:
        metadata = directory().metadata(issuer)
    except IssuerUnavailable:
        return _refuse(f"{issuer.name} cannot be reached right now; try again shortly", 503)
    iss = args.get("iss")
    if (iss is not None and iss != issuer.issuer) or (
            iss is None and metadata.get("authorization_response_iss_parameter_supported")):
        log.warning("console sign-in refused: answer from issuer %r, expected %s", iss,
                    issuer.issuer)
        return _refuse("the sign-in answer came from another identity provider (issuer "
                       "mismatch); start again")
    if args.get("error"):
        return _refuse(f"{issuer.name} refused the sign-in: {args['error'][:100]}"
                       + (f" ({args['error_description'][:200]})" if args.get("error_description")
                          else ""), 403)
    if not args.get("code"):
        return _refuse("the sign-in answer has no authorization code; start again")
    try:
        with _token_endpoint_session(issuer, metadata) as client:
            token = client.fetch_token(metadata["token_endpoint"], grant_type="authorization_code",
                                       code=args["code"], redirect_uri=redirect_uri(),
                                       code_verifier=pending["verifier"], timeout=(5, 10),
                                       allow_redirects=False)
    except (OAuthError, requests.RequestException, Refused, KeyError, ValueError) as exc:
        log.warning("console sign-in through %s failed at the token endpoint: %s", issuer.name,
                    type(exc).__name__)
        return _refuse(f"{issuer.name} did not complete the sign-in; start again")
    claims = directory().verify(issuer, str(token.get("id_token", "")), audience=str(issuer.client_id),
                                token_types=("jwt", "application/jwt", ""))
    if claims is None or not hmac.compare_digest(str(claims.get("nonce", "")), pending["nonce"]):
        log.warning("console sign-in through %s refused: invalid ID token or nonce", issuer.name)
        return _refuse("the identity provider's answer could not be verified; start again")
    if isinstance(claims.get("aud"), list) and len(claims["aud"]) > 1 and (
            claims.get("azp") != issuer.client_id):
        return _refuse("the identity provider's answer was meant for another application")
    info = _userinfo(metadata, str(token.get("access_token", "")))
    if info.get("sub") == claims["sub"]:
        claims = {**info, **claims}
    role = map_role(claims, issuer.role_rules)
    display = str(claims.get("email") or claims.get("preferred_username") or claims["sub"])
    if role is None:
        log.warning("console sign-in of %s through %s: no role rule matches", display, issuer.name)
        return render_template("console/denied.html", who=display, issuer=issuer.name), 403
    return _sign_in(f"{issuer.name}:{claims['sub']}", display, role, issuer.name)


@bp.route("/logout", methods=["POST"])
def logout() -> ResponseReturnValue:
    check_csrf()
    user = session.get("user")
    session.clear()
    session.rotate()  # type: ignore[attr-defined]
    if user:
        with runtime().db.begin() as db_session:
            audit.record(db_session, actor=user["actor"], action="console.sign_out",
                         target_type="user", target=user["actor"])
    flash("You have signed out.")
    return redirect(url_for("console_auth.login"), 303)
