"""Server-side console sessions: the cookie carries only a random id, the database the rest.

A session is stored as the SHA-256 of its id, so a database reader cannot ride one. Signing
in calls `rotate()`: the pre-login id (which held the OIDC state, nonce and PKCE verifier) is
deleted and a fresh id is issued, so an id planted before sign-in is worthless after it.
Signing out deletes the row. The cookie is HttpOnly, SameSite=Lax (the IdP's redirect back
is a cross-site top-level GET that must carry it), and Secure with the `__Host-` prefix
whenever the broker's public URL is https.

Only /console pages open a session; the API, webhooks and the console's static files never
touch the table.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin
from sqlalchemy import delete
from werkzeug.datastructures import CallbackDict

from broker.db import Database, utcnow
from broker.models import ConsoleSession

ANONYMOUS_TTL = timedelta(minutes=30)  # a sign-in must finish within this
PREFIX = "/console"
STATIC = "/console/static/"


def _hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


class DbSession(CallbackDict, SessionMixin):  # type: ignore[type-arg]
    def __init__(self, initial: dict[str, Any] | None = None, sid: str | None = None) -> None:
        def changed(_: Any) -> None:
            self.modified = True

        super().__init__(initial or {}, changed)
        self.sid = sid
        self.modified = False
        self.rotated = False

    def rotate(self) -> None:
        """Issue a new id when this response is saved (call at sign-in)."""
        self.rotated = True
        self.modified = True


class DbSessionInterface(SessionInterface):
    def __init__(self, db: Database, ttl_seconds: int, secure: bool) -> None:
        self.db, self.ttl, self.secure = db, timedelta(seconds=ttl_seconds), secure
        self.cookie = "__Host-broker-session" if secure else "broker-session"

    def open_session(self, app: Flask, request: Request) -> DbSession | None:
        if not request.path.startswith(PREFIX) or request.path.startswith(STATIC):
            return self.make_null_session(app)  # type: ignore[return-value]
        sid = request.cookies.get(self.cookie)
        if sid and len(sid) < 100:
            with self.db.begin() as session:
                row = session.get(ConsoleSession, _hash(sid))
                if row is not None and row.expires_at > utcnow():
                    return DbSession(dict(row.data), sid)
        return DbSession()

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if not isinstance(session, DbSession) or not (session.modified or session.rotated):
            return
        with self.db.begin() as db_session:
            if session.sid and (session.rotated or not session):
                db_session.execute(delete(ConsoleSession).where(
                    ConsoleSession.id_hash == _hash(session.sid)))
            if not session:
                response.delete_cookie(self.cookie, path="/", secure=self.secure, httponly=True,
                                       samesite="Lax")
                return
            if session.sid is None or session.rotated:
                session.sid = secrets.token_urlsafe(32)
            now = utcnow()
            expires = now + (self.ttl if session.get("user") else ANONYMOUS_TTL)
            row = db_session.get(ConsoleSession, _hash(session.sid))
            if row is None:
                db_session.add(ConsoleSession(id_hash=_hash(session.sid), data=dict(session),
                                              created_at=now, expires_at=expires))
            else:
                row.data = dict(session)
            if session.rotated:  # a good moment to forget expired sessions
                db_session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < now))
        session.rotated = False
        response.set_cookie(self.cookie, session.sid, path="/", secure=self.secure,
                            httponly=True, samesite="Lax")
        response.vary.add("Cookie")
