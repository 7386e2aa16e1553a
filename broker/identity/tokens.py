"""JWT access tokens per RFC 9068: minted for a client, verified against our own key set only.

Verification trusts nothing the token says about how to verify it: the algorithm must be the
one we sign with, the key is looked up by `kid` in the broker's own key set (a `jwk`, `jku`,
`x5u` or `x5c` header is a forgery sign and refused outright), and `typ`, `iss`, `aud`, `exp`,
`iat` are checked before the caller looks at `jti` in the token table.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

from joserfc import jwt
from joserfc.errors import ClaimError, ExpiredTokenError, JoseError
from joserfc.jws import extract_compact, validate_compact
from joserfc.jwt import JWTClaimsRegistry

from broker.identity.keys import ALG, LEEWAY_SECONDS, KeyStore

TOKEN_TYPE = "at+jwt"
ACCEPTED_TYPES = {"at+jwt", "application/at+jwt"}
# Header parameters that would let a token choose its own verification key or extend the
# rules it is checked by; our tokens carry none of them.
FORBIDDEN_HEADERS = {"jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256", "crit", "b64", "zip", "enc"}
MAX_TOKEN_LENGTH = 8192


def header_acceptable(header: dict[str, Any], algorithms: Iterable[str],
                      types: Iterable[str]) -> bool:
    """The header names an allowed algorithm and type and nothing that picks its own key."""
    return (header.get("alg") in set(algorithms)
            and str(header.get("typ", "")).lower() in set(types)
            and not FORBIDDEN_HEADERS & set(header))


def mint(keys: KeyStore, *, issuer: str, audience: str, client_id: str, scope: str,
         ttl: int) -> tuple[str, dict[str, Any]]:
    """A signed access token and its claims (the caller records `jti`)."""
    kid, key = keys.signing_key()
    now = int(time.time())
    claims = {"iss": issuer, "sub": client_id, "aud": audience, "client_id": client_id,
              "scope": scope, "iat": now, "exp": now + ttl, "jti": secrets.token_urlsafe(24)}
    header = {"alg": ALG, "typ": TOKEN_TYPE, "kid": kid}
    return jwt.encode(header, claims, key, algorithms=[ALG]), claims


class TokenRefused(Exception):
    """Why a bearer token is refused: a short reason (`wrong_audience`, `expired`, …) and what
    was wrong, for the log and the 401 (never the token itself)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


_CLAIM_REASONS = {"iss": "wrong_issuer", "aud": "wrong_audience", "nbf": "not_yet_valid",
                  "iat": "issued_in_the_future"}


def check_jwt(token: str, *, algorithms: Iterable[str], types: Iterable[str],
              find_key: Callable[[Any], Any], issuer: str, audience: str,
              essential: Iterable[str] = ()) -> dict[str, Any]:
    """The claims of a compact JWS whose header passes `header_acceptable`, signed by the key
    `find_key(kid)` returns (None: unknown), with iss, aud, exp and `essential` claims valid.

    Raises TokenRefused saying which check failed.
    """
    if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        raise TokenRefused("malformed", "not a compact JWT" if token and len(token) <= MAX_TOKEN_LENGTH
                           else f"longer than {MAX_TOKEN_LENGTH} characters" if token else "empty")
    try:
        obj = extract_compact(token.encode("ascii"))
        header = obj.headers()
    except (JoseError, ValueError, TypeError, UnicodeError):
        raise TokenRefused("malformed", "the header cannot be read") from None
    algorithms, types = set(algorithms), set(types)
    if header.get("alg") not in algorithms:
        raise TokenRefused("algorithm_not_allowed", f"alg {header.get('alg')!r}, allowed: "
                           f"{', '.join(sorted(algorithms))}")
    if str(header.get("typ", "")).lower() not in types:
        raise TokenRefused("wrong_type", f"typ {header.get('typ')!r}, expected {' or '.join(sorted(types))}")
    if FORBIDDEN_HEADERS & set(header):
        raise TokenRefused("forbidden_header", ", ".join(sorted(FORBIDDEN_HEADERS & set(header))))
    key = find_key(header.get("kid"))
    if key is None:
        raise TokenRefused("unknown_key", f"kid {header.get('kid')!r} is not in the issuer's key set")
    try:
        valid = validate_compact(obj, key, algorithms=[header["alg"]])
    except (JoseError, ValueError, TypeError):
        valid = False
    if not valid:
        raise TokenRefused("bad_signature")
    try:
        claims = json.loads(obj.payload)
    except (ValueError, UnicodeError):
        raise TokenRefused("malformed", "the claims are not JSON") from None
    if not isinstance(claims, dict):
        raise TokenRefused("malformed", "the claims are not a JSON object")
    try:
        JWTClaimsRegistry(
            leeway=LEEWAY_SECONDS, iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience}, exp={"essential": True},
            **{name: {"essential": True} for name in essential},
        ).validate(claims)
    except ExpiredTokenError:
        raise TokenRefused("expired", f"exp {claims.get('exp')}") from None
    except ClaimError as exc:
        claim = str(getattr(exc, "claim", "") or "")
        if exc.error == "missing_claim":
            raise TokenRefused("missing_claim", claim) from None
        said = {"aud": f"aud {claims.get('aud')!r}, expected {audience!r}",
                "iss": f"iss {claims.get('iss')!r}, expected {issuer!r}"}.get(claim, claim)
        raise TokenRefused(_CLAIM_REASONS.get(claim, "invalid_claim"), said) from None
    except (JoseError, ValueError, TypeError) as exc:
        raise TokenRefused("invalid_claim", type(exc).__name__) from None
    return claims


def verify_jwt(token: str, *, algorithms: Iterable[str], types: Iterable[str],
               find_key: Callable[[Any], Any], issuer: str, audience: str,
               essential: Iterable[str] = ()) -> dict[str, Any] | None:
    """check_jwt's claims, or None when the token is refused."""
    try:
        return check_jwt(token, algorithms=algorithms, types=types, find_key=find_key, issuer=issuer,
                         audience=audience, essential=essential)
    except TokenRefused:
        return None


def check(keys: KeyStore, token_string: str, *, issuer: str, audience: str) -> dict[str, Any]:
    """The claims of a well-formed, unexpired access token we signed; TokenRefused otherwise."""
    claims = check_jwt(token_string, algorithms=(ALG,), types=ACCEPTED_TYPES,
                       find_key=lambda kid: keys.verification_key(kid) if isinstance(kid, str) else None,
                       issuer=issuer, audience=audience, essential=("iat", "sub", "client_id", "jti"))
    if claims["sub"] != claims["client_id"] or not isinstance(claims["jti"], str):
        raise TokenRefused("invalid_claim", "sub differs from client_id, or jti is not a string")
    if not isinstance(claims.get("scope", ""), str):
        raise TokenRefused("invalid_claim", "scope is not a string")
    return claims


def verify(keys: KeyStore, token_string: str, *, issuer: str, audience: str) -> dict[str, Any] | None:
    """The token's claims if it is a well-formed, unexpired access token we signed, else None."""
    try:
        return check(keys, token_string, issuer=issuer, audience=audience)
    except TokenRefused:
        return None
