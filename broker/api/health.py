"""Liveness, readiness (database and queue) and Prometheus metrics."""

from __future__ import annotations

import hmac

from flask import Response, jsonify, redirect, request
from flask.typing import ResponseReturnValue
from flask_smorest import Blueprint
from sqlalchemy import text

from broker import metrics
from broker.api.common import runtime
from broker.errors import ApiError

blp = Blueprint("health", __name__, description="Health and metrics")


@blp.after_app_request
def _count_response(response: Response) -> Response:
    """Every gateway answer counted by status, so a 5xx rate can raise an alert."""
    metrics.HTTP_RESPONSES.labels(code=str(response.status_code)).inc()
    return response


@blp.route("/", methods=["GET"])
@blp.doc(summary="The broker's address leads people to the console (which asks them to sign in)",
         security=[], responses={"302": {"description": "to /console/"}})
def home() -> ResponseReturnValue:
    return redirect("/console/", 302)


@blp.route("/healthz", methods=["GET"])
@blp.doc(summary="The process is alive", security=[])
def healthz() -> ResponseReturnValue:
    return jsonify({"status": "ok"})


@blp.route("/readyz", methods=["GET"])
@blp.doc(summary="The database and the queue answer", security=[],
         responses={"503": {"description": "a dependency is down"}})
def readyz() -> ResponseReturnValue:
    rt = runtime()
    checks: dict[str, str] = {}
    try:
        with rt.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"down: {type(exc).__name__}"
    try:
        with rt.publisher.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["queue"] = "ok"
    except Exception as exc:
        checks["queue"] = f"down: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    response = jsonify({"status": "ready" if ready else "not_ready", "checks": checks})
    response.status_code = 200 if ready else 503
    return response


@blp.route("/metrics", methods=["GET"])
@blp.doc(summary="Prometheus metrics (with BROKER_METRICS_TOKEN set: `Authorization: Bearer <token>`)",
         security=[], responses={"401": {"description": "BROKER_METRICS_TOKEN is set and the request "
                                                       "does not carry it"}})
def metrics_view() -> ResponseReturnValue:
    token = runtime().settings.metrics_token
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise ApiError(401, "unauthorized", "GET /metrics needs Authorization: Bearer "
                           "<BROKER_METRICS_TOKEN>", headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    body, content_type = metrics.render(runtime().db)
    return Response(body, content_type=content_type)
