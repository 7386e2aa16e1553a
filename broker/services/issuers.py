"""Trusted company issuers: validated, audited configuration (verification lives in
broker.identity.issuers)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select

from broker.db import Database
from broker.identity.issuers import ALLOWED_ALGORITHMS, DEFAULT_ALGORITHMS, DEFAULT_TOKEN_TYPES
from broker.identity.roles import parse_rule
from broker.models import TrustedIssuer
from broker.services import audit
from broker.services.crypto import SecretBox
from broker.services.sources import SetupError, check_name
from connectors.ssrf import Refused, check_url


def _check_issuer_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
        raise SetupError(f"issuer {url!r} must be the issuer's URL exactly as its discovery "
                         "document names it, e.g. https://login.example.com/realms/acme")
    try:
        check_url(url)  # the SSRF guard refuses it now rather than at every sign-in
    except Refused as exc:
        raise SetupError(f"issuer {url!r}: {exc}") from None
    except OSError as exc:
        raise SetupError(f"issuer {url!r}: its host name does not resolve ({exc.strerror})") from None
    return url


def _algorithms(values: list[str] | None) -> list[str]:
    algorithms = list(values or DEFAULT_ALGORITHMS)
    wrong = [a for a in algorithms if a not in ALLOWED_ALGORITHMS]
    if wrong:
        raise SetupError(f"algorithm(s) {', '.join(wrong)} not allowed; choose among "
                         f"{', '.join(ALLOWED_ALGORITHMS)} (asymmetric signatures only)")
    return algorithms


def _rules(values: list[str]) -> list[dict[str, str]]:
    try:
        return [parse_rule(v) for v in values]
    except ValueError as exc:
        raise SetupError(str(exc)) from None


def public_view(row: TrustedIssuer) -> dict[str, Any]:
    """What admins may read (the client secret by presence only)."""
    return {"name": row.name, "issuer": row.issuer, "audience": row.audience,
            "algorithms": row.algorithms, "token_types": row.token_types,
            "role_rules": row.role_rules, "client_id": row.client_id,
            "client_secret": "set" if row.client_secret_encrypted else None,
            "scopes": row.scopes, "enabled": row.enabled}


def upsert_issuer(db: Database, box: SecretBox, name: str, *, issuer: str | None = None,
                  audience: str | None = None, algorithms: list[str] | None = None,
                  token_types: list[str] | None = None, role_rules: list[str] | None = None,
                  client_id: str | None = None, client_secret: str | None = None,
                  scopes: str | None = None, enabled: bool | None = None,
                  actor: str = audit.SYSTEM) -> tuple[TrustedIssuer, bool]:
    """Create an issuer (issuer and audience required) or change the given fields of one."""
    check_name(name, "issuer")
    with db.begin() as session:
        row = session.execute(select(TrustedIssuer).where(TrustedIssuer.name == name)
                              ).scalar_one_or_none()
        created = row is None
        if created and not (issuer and audience):
            raise SetupError(f"issuer {name!r} is new: give its --issuer URL and the --audience "
                             "its access tokens carry for the broker")
        before = None if created else public_view(row)
        if created:
            row = TrustedIssuer(name=name, algorithms=DEFAULT_ALGORITHMS,
                                token_types=DEFAULT_TOKEN_TYPES, role_rules=[],
                                scopes="openid email profile", enabled=True)
            session.add(row)
        if issuer is not None:
            row.issuer = _check_issuer_url(issuer)
        if audience is not None:
            row.audience = audience
        if algorithms is not None:
            row.algorithms = _algorithms(algorithms)
        if token_types is not None:
            row.token_types = [t.lower() for t in token_types] or DEFAULT_TOKEN_TYPES
        if role_rules is not None:
            row.role_rules = _rules(role_rules)
        if client_id is not None:
            row.client_id = client_id or None
        if client_secret is not None:
            row.client_secret_encrypted = box.encrypt(client_secret) if client_secret else None
        if scopes is not None:
            if "openid" not in scopes.split():
                raise SetupError("scopes must include 'openid' (console sign-in is OpenID Connect)")
            row.scopes = scopes
        if enabled is not None:
            row.enabled = enabled
        clash = session.execute(select(TrustedIssuer.name).where(
            TrustedIssuer.issuer == row.issuer, TrustedIssuer.name != name)).scalar_one_or_none()
        if clash:
            raise SetupError(f"issuer URL {row.issuer} is already configured as {clash!r}")
        session.flush()
        after = public_view(row)
        if before != after:
            audit.record(session, actor=actor, action="issuer.create" if created else "issuer.update",
                         target_type="issuer", target=name, before=before, after=after)
    return row, created


def remove_issuer(db: Database, name: str, *, actor: str = audit.SYSTEM) -> None:
    with db.begin() as session:
        row = session.execute(select(TrustedIssuer).where(TrustedIssuer.name == name)
                              ).scalar_one_or_none()
        if row is None:
            raise SetupError(f"no issuer named {name!r}")
        audit.record(session, actor=actor, action="issuer.delete", target_type="issuer",
                     target=name, before=public_view(row))
        session.delete(row)


def list_issuers(db: Database) -> list[dict[str, Any]]:
    with db.begin() as session:
        return [public_view(r) for r in session.execute(
            select(TrustedIssuer).order_by(TrustedIssuer.name)).scalars()]
