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
from joserfc.errors import JoseError
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


def verify_jwt(token: str, *, algorithms: Iterable[str], types: Iterable[str],
               find_key: Callable[[Any], Any], issuer: str, audience: str,
               essential: Iterable[str] = ()) -> dict[str, Any] | None:
    """The claims of a compact JWS whose header passes `header_acceptable`, signed by the key
    `find_key(kid)` returns (None: unknown), with iss, aud, exp and `essential` claims valid."""
    if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        return None
    try:
        obj = extract_compact(token.encode("ascii"))
        header = obj.headers()
        if not header_acceptable(header, algorithms, types):
            return None
        key = find_key(header.get("kid"))
        if key is None or not validate_compact(obj, key, algorithms=[header["alg"]]):
            return None
        claims = json.loads(obj.payload)
        if not isinstance(claims, dict):
            return None
        JWTClaimsRegistry(
            leeway=LEEWAY_SECONDS, iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience}, exp={"essential": True},
            **{name: {"essential": True} for name in essential},
        ).validate(claims)
    except (JoseError, ValueError, TypeError, UnicodeError):
        return None
    return claims


def verify(keys: KeyStore, token_string: str, *, issuer: str, audience: str) -> dict[str, Any] | None:
    """The token's claims if it is a well-formed, unexpired access token we signed, else None."""
    claims = verify_jwt(token_string, algorithms=(ALG,), types=ACCEPTED_TYPES,
                        find_key=lambda kid: keys.verification_key(kid) if isinstance(kid, str) else None,
                        issuer=issuer, audience=audience,
                        essential=("iat", "sub", "client_id", "jti"))
    if claims is None:
        return None
    if claims["sub"] != claims["client_id"] or not isinstance(claims["jti"], str):
        return None
    if not isinstance(claims.get("scope", ""), str):
        return None
    return claims
