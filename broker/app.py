"""The Flask application factory (called through broker.create_app)."""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from flask import Flask, Response, g, request

from broker.api.docs import BrokerApi, init_docs
from broker.console import init_console
from broker.errors import ApiError, init_errors
from broker.identity.issuers import IssuerDirectory
from broker.identity.server import init_oauth
from broker.logging import ACCESS_LOGGER, log_access, register_secret, set_request_id, setup_logging
from broker.runtime import Runtime
from broker.schemas.order import OrderSchema
from broker.settings import Settings, load_settings


def build_app(settings: Settings | None = None, *, runtime: Runtime | None = None,
              configure_logging: bool = True, **overrides: Any) -> Flask:
    settings = settings or load_settings(**overrides)
    if configure_logging:
        setup_logging(settings.log_level, settings.log_json)
    app = Flask("broker")
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        API_TITLE="FOBO Broker", API_VERSION="v1", OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/api", OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={"components": {"securitySchemes": {"oauth2": {
            "type": "oauth2", "flows": {"clientCredentials": {
                "tokenUrl": "/oauth/token",
                "scopes": {"orders:write": "submit orders", "orders:read": "read orders",
                           "admin": "configure the broker"}}}}}}},
        JSON_SORT_KEYS=False,
    )
    rt = runtime or Runtime(settings)
    app.extensions["broker"] = rt
    app.extensions["broker_oauth"] = init_oauth(app, rt)
    app.extensions["broker_issuers"] = IssuerDirectory(rt.db, rt.box)

    api = BrokerApi(app)
    api.spec.components.schema("Order", schema=OrderSchema)
    from broker.api import (
        admin_clients,
        admin_connectors,
        admin_customers,
        admin_deliveries,
        admin_mappings,
        admin_routes,
        admin_sources,
        audit,
        health,
        oauth,
        orders,
        webhooks,
        wellknown,
    )

    for blueprint in (webhooks.blp, orders.blp, oauth.blp, health.blp, audit.blp,
                      wellknown.blp, admin_sources.blp, admin_connectors.blp, admin_routes.blp,
                      admin_deliveries.blp, admin_mappings.blp, admin_clients.blp,
                      admin_customers.blp):
        api.register_blueprint(blueprint)
    init_docs(app, api)
    init_console(app, rt)
    init_errors(app)  # after Api(), so our error shape wins over flask-smorest's

    if settings.trusted_proxies:  # the client address the proxies saw, not the last proxy's
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies,  # type: ignore[method-assign]
                                x_proto=settings.trusted_proxies)
    if settings.metrics_token:
        register_secret(settings.metrics_token)

    @app.before_request
    def _request_id() -> None:
        g.started = time.perf_counter()
        g.request_id = request.headers.get("X-Request-Id", "")[:64] or secrets.token_hex(8)
        set_request_id(g.request_id)
        # PostgreSQL refuses NUL in text: a name, id or filter with one matches nothing anyway
        if "\x00" in request.path or any("\x00" in v for v in request.args.values()):
            raise ApiError(400, "invalid_request", "the URL contains a NUL character")

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.get("request_id", "")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    if settings.access_log:  # whatever BROKER_LOG_LEVEL says
        logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO)
        app.after_request(log_access)
    else:
        logging.getLogger(ACCESS_LOGGER).setLevel(logging.WARNING)

    from broker.cli import broker_group

    app.cli.add_command(broker_group)
    return app
