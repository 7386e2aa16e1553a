"""The OpenAPI document's settings and the interactive docs at /api/docs.

Swagger UI's files come from the `swagger-ui-bundle-v2` package and are served by the broker
itself: nothing is loaded from a CDN, and the page has no inline script or style, so it runs
under a strict Content-Security-Policy. (flask-smorest's own Swagger UI page needs an inline
script, hence this page.)
"""

from __future__ import annotations

from http import HTTPStatus
from importlib.resources import files
from pathlib import Path

from flask import Flask, Response, abort, send_file, url_for
from flask.typing import ResponseReturnValue
from flask_smorest import Api, Blueprint
from markupsafe import escape

from broker.schemas.api import ErrorSchema

blp = Blueprint("api_docs", __name__, url_prefix="/api/docs", description="API documentation")

# Only what the page uses; the bundle's demo page (pointing at the petstore) is not served.
ASSETS = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript",
          "favicon-32x32.png": "image/png", "favicon-16x16.png": "image/png"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
INIT_JS = """\
window.addEventListener("load", function () {
  var node = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: node.getAttribute("data-spec-url"),
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    persistAuthorization: false
  });
});
"""
PAGE = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} API</title>
<link rel="stylesheet" href="{css}">
<link rel="icon" type="image/png" href="{icon}">
</head>
<body>
<div id="swagger-ui" data-spec-url="{spec}"></div>
<script src="{bundle}"></script>
<script src="{init}"></script>
</body>
</html>
"""


class BrokerApi(Api):
    """flask-smorest's Api, documenting the broker's one error shape for every error answer."""

    ERROR_SCHEMA = ErrorSchema


def _bundle_dir() -> Path:
    root = files("swagger_ui_bundle") / "vendor"
    found = sorted((p for p in root.iterdir() if p.name.startswith("swagger-ui-")), key=lambda p: p.name)
    return Path(str(found[-1]))


def _html(body: str, content_type: str) -> Response:
    response = Response(body, content_type=content_type)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-cache"
    return response


@blp.route("", methods=["GET"])
@blp.doc(summary="Interactive API documentation (Swagger UI)", security=[], responses={
    "200": {"description": "the page", "content": {"text/html": {"schema": {"type": "string"}}}}})
def page() -> ResponseReturnValue:
    return _html(PAGE.format(title=escape("FOBO Broker"),
                             css=url_for("api_docs.asset", name="swagger-ui.css"),
                             icon=url_for("api_docs.asset", name="favicon-32x32.png"),
                             spec=url_for("api-docs.openapi_json"),
                             bundle=url_for("api_docs.asset", name="swagger-ui-bundle.js"),
                             init=url_for("api_docs.asset", name="docs.js")), "text/html; charset=utf-8")


@blp.route("/assets/<name>", methods=["GET"],
           parameters=[{"in": "path", "name": "name", "required": True,
                        "schema": {"type": "string", "enum": sorted([*ASSETS, "docs.js"])}}])
@blp.doc(summary="A file of the documentation page", security=[], responses={
    "200": {"description": "the file", "content": {"*/*": {"schema": {"type": "string"}}}},
    "404": {"description": "not a file of the page"}})
def asset(name: str) -> ResponseReturnValue:
    if name == "docs.js":
        response = _html(INIT_JS, "text/javascript; charset=utf-8")
    elif name in ASSETS:
        response = send_file(_bundle_dir() / name, mimetype=ASSETS[name], max_age=3600)
        response.headers["Cache-Control"] = "public, max-age=3600"
    else:
        abort(HTTPStatus.NOT_FOUND)
    return response


def init_docs(app: Flask, api: Api) -> None:
    """The docs blueprint, and the OpenAPI document describing itself."""
    api.register_blueprint(blp)
    rule = next(r for r in app.url_map.iter_rules() if r.endpoint == "api-docs.openapi_json")
    api.spec.path(rule=rule, parameters=[], operations={"get": {
        "tags": ["api_docs"], "summary": "This OpenAPI 3.1 document", "security": [],
        "responses": {"200": {"description": "the document",
                              "content": {"application/json": {"schema": {"type": "object"}}}}}}})
