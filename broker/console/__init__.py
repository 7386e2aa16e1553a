"""The web console for IT admins: server-rendered pages, sign-in, a strict CSP."""

from __future__ import annotations

from flask import Flask, Response, request

from broker.console.sessions import DbSessionInterface
from broker.runtime import Runtime

# No inline script or style, nothing from elsewhere, no framing, forms post only to us.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'")


def init_console(app: Flask, rt: Runtime) -> None:
    from broker.console import auth, views

    secure = rt.settings.public_url.startswith("https://")
    app.session_interface = DbSessionInterface(rt.db, rt.settings.session_ttl, secure)
    app.register_blueprint(auth.bp)
    app.register_blueprint(views.bp)
    from broker.console import (
        audit_log,
        clients,
        common,
        connectors,
        dead_letters,
        gaps,
        orders,
        routes,
        sources,
    )

    for page in (common, orders, dead_letters, gaps, sources, connectors, routes, clients, audit_log):
        app.register_blueprint(page.bp)
    from broker.console.forms import split_optional, stands_out
    from broker.services.status import delivery_label
    from connectors.describe import humanise

    app.jinja_env.globals["csrf_token"] = auth.csrf_token
    app.jinja_env.globals["current_user"] = auth.current_user
    app.jinja_env.globals["delivery_label"] = delivery_label
    app.jinja_env.globals["split_optional"] = split_optional
    app.jinja_env.globals["stands_out"] = stands_out
    app.jinja_env.globals["humanise"] = humanise

    @app.after_request
    def _console_headers(response: Response) -> Response:
        if request.path.startswith("/console"):
            response.headers["Content-Security-Policy"] = CSP
            response.headers["X-Frame-Options"] = "DENY"
            response.headers["Referrer-Policy"] = "no-referrer"
            if secure:
                response.headers["Strict-Transport-Security"] = "max-age=31536000"
        return response
