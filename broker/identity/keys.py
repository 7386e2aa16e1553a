"""The authorization server's signing keys (ES256): stored encrypted, cached briefly, rotated.

Every gateway process signs and verifies with the keys in `signing_keys`. The private half is
decrypted once per key and process, never per request; the key list is re-read every
`CACHE_SECONDS` so a rotation made elsewhere (`broker keys rotate`) is picked up within
seconds, and at once when a token names a kid this process has not seen yet.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from joserfc.jwk import ECKey
from sqlalchemy import delete, or_, select, update

from broker.db import Database, utcnow
from broker.models import SigningKey
from broker.services import audit
from broker.services.crypto import SecretBox

ALG = "ES256"
CURVE = "P-256"
CACHE_SECONDS = 5.0
# Fewest seconds between two forced reloads for an unknown kid: a flood of forged kids
# must not turn into a flood of queries.
UNKNOWN_KID_RELOAD_SECONDS = 1.0
# Clock skew accepted on exp/iat; also added to how long a retired key stays published.
LEEWAY_SECONDS = 30


@dataclass(frozen=True)
class PublishedKey:
    kid: str
    key: ECKey
    jwk: dict[str, Any]
    publish_until: datetime | None

    def published(self, now: datetime) -> bool:
        return self.publish_until is None or self.publish_until > now


class KeyStore:
    """The key set of one process: which key signs, which keys verify, the JWKS document."""

    def __init__(self, db: Database, box: SecretBox, token_ttl: int) -> None:
        self.db, self.box, self.token_ttl = db, box, token_ttl
        self._lock = threading.Lock()
        self._loaded_at = float("-inf")
        self._forced_at = float("-inf")
        # Replaced as a whole on reload, so a reader never sees half of an old and a new set.
        self._published: dict[str, PublishedKey] = {}
        self._signing: tuple[str, ECKey] | None = None

    # --- reading ---------------------------------------------------------------------
    def _load(self) -> None:
        now = utcnow()
        with self.db.begin() as session:
            rows = session.execute(
                select(SigningKey).where(or_(SigningKey.retired_at.is_(None), SigningKey.publish_until > now))
                .order_by(SigningKey.created_at.desc(), SigningKey.kid)).scalars().all()
            published = {}
            for row in rows:
                jwk = dict(row.public_jwk)
                published[row.kid] = PublishedKey(row.kid, ECKey.import_key(jwk), jwk, row.publish_until)
            active = next((row for row in rows if row.retired_at is None), None)
            kid, encrypted = (active.kid, active.private_encrypted) if active else (None, None)
        signing = self._signing
        if kid is None:
            signing = None
        elif signing is None or signing[0] != kid:
            signing = (kid, ECKey.import_key(self.box.decrypt(encrypted)))
        self._published, self._signing = published, signing
        self._loaded_at = time.monotonic()

    def _fresh(self) -> None:
        if time.monotonic() - self._loaded_at >= CACHE_SECONDS:
            with self._lock:
                if time.monotonic() - self._loaded_at >= CACHE_SECONDS:
                    self._load()

    def signing_key(self) -> tuple[str, ECKey]:
        """(kid, private key) of the newest active key; the first one is created on first use."""
        self._fresh()
        signing = self._signing
        if signing is None:
            with self._lock:
                self._load()
                if self._signing is None:
                    with self.db.begin() as session:
                        session.add(self._new_row())
                    self._load()
            signing = self._signing
            assert signing is not None
        return signing

    def verification_key(self, kid: str) -> ECKey | None:
        """The public key for `kid` if it is one of ours and still published, else None."""
        self._fresh()
        entry = self._published.get(kid)
        if entry is None:
            with self._lock:
                if time.monotonic() - self._forced_at >= UNKNOWN_KID_RELOAD_SECONDS:
                    self._forced_at = time.monotonic()
                    self._load()
            entry = self._published.get(kid)
        if entry is None or not entry.published(utcnow()):
            return None
        return entry.key

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set: active keys and retired keys whose tokens may still be alive."""
        self._fresh()
        now = utcnow()
        if not self._published:
            self.signing_key()
        return {"keys": [entry.jwk for entry in self._published.values() if entry.published(now)]}

    # --- changing --------------------------------------------------------------------
    def _new_row(self) -> SigningKey:
        key = ECKey.generate_key(CURVE, private=True)
        kid = key.thumbprint()
        public = {**key.as_dict(private=False), "kid": kid, "alg": ALG, "use": "sig"}
        return SigningKey(kid=kid, alg=ALG, public_jwk=public, created_at=utcnow(),
                          private_encrypted=self.box.encrypt(key.as_dict(private=True)))

    def retire_margin(self) -> timedelta:
        """How long a retired key stays published: the longest life a token signed with it can
        still have — one TTL, plus the key cache of gateways that have not yet seen the
        rotation and go on signing with it, plus the verification leeway."""
        return timedelta(seconds=self.token_ttl + CACHE_SECONDS + LEEWAY_SECONDS)

    def rotate(self, actor: str = audit.SYSTEM) -> dict[str, Any]:
        """Create a new signing key, retire the active ones, drop keys no longer published.

        One transaction (with its audit entry), so no process ever sees zero active keys.
        """
        now = utcnow()
        until = now + self.retire_margin()
        with self.db.begin() as session:
            retired = list(session.execute(select(SigningKey.kid).where(
                SigningKey.retired_at.is_(None))).scalars())
            session.execute(update(SigningKey).where(SigningKey.retired_at.is_(None))
                            .values(retired_at=now, publish_until=until))
            dropped = session.execute(delete(SigningKey).where(
                SigningKey.retired_at.is_not(None), SigningKey.publish_until <= now)).rowcount
            row = self._new_row()
            kid = row.kid
            session.add(row)
            audit.record(session, actor=actor, action="signing_key.rotate", target_type="signing_key",
                         target=kid, before={"active": retired},
                         after={"active": [kid], "retired": retired, "publish_until": until.isoformat(),
                                "dropped": dropped})
        with self._lock:
            self._load()
        return {"kid": kid, "alg": ALG, "retired": retired, "publish_until": until.isoformat(),
                "dropped": dropped}
