"""POST /oauth/token: the client credentials grant (RFC 6749 §4.4)."""

from __future__ import annotations

from flask import current_app
from flask.typing import ResponseReturnValue
from flask_smorest import Blueprint

blp = Blueprint("oauth", __name__, description="OAuth 2.0 authorization server")


@blp.route("/oauth/token", methods=["POST"])
@blp.doc(summary="Issue an access token (client_credentials; HTTP Basic or form credentials)",
         security=[], requestBody={"content": {"application/x-www-form-urlencoded": {"schema": {
             "type": "object", "required": ["grant_type"],
             "properties": {"grant_type": {"type": "string", "enum": ["client_credentials"]},
                            "scope": {"type": "string"}, "client_id": {"type": "string"},
                            "client_secret": {"type": "string"}}}}}})
def issue_token() -> ResponseReturnValue:
    return current_app.extensions["broker_oauth"].create_token_response()
