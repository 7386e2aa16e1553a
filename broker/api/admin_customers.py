"""Customers' personal data over REST, for admins: erasure on request (GDPR art. 17)."""

from __future__ import annotations

from typing import Any

from flask.typing import ResponseReturnValue
from flask_smorest import Blueprint

from broker.api.admin import guarded, service_errors
from broker.api.audit import request_actor
from broker.api.common import runtime
from broker.schemas.api import CustomerEraseSchema, ErasureSchema
from broker.services.erasure import erase_customer

blp = Blueprint("admin_customers", __name__, url_prefix="/api/v1", description="Customers")


@blp.route("/customers/erase", methods=["POST"])
@guarded(blp, "admin", "Erase one customer's personal data", 404, 409, 422,
         description="Removes the customer's email, names, phone numbers and addresses from every "
                     "order, order version, raw event, timeline entry, identity link and audit "
                     "entry; orders keep their totals, state and journey. The email travels in the "
                     "body, never in a URL (URLs are logged). Recorded in the audit log as "
                     "`customer.erase` under the hash in `subject`. Safe to repeat: when nothing "
                     "is left, `already_erased_at` says when it was erased. 404: nothing names "
                     "this email; 409: orders of the customer still wait to be delivered (see "
                     "`force`).")
@blp.arguments(CustomerEraseSchema)
@blp.response(200, ErasureSchema)
def erase(body: dict[str, Any]) -> ResponseReturnValue:
    with service_errors():
        result = erase_customer(runtime().db, body["email"], actor=request_actor(),
                                force=body["force"])
    return result.as_dict()
