"""Messages an operator acts on name the real thing: the connector in an identity review's
command, and a well-formed setting in Odoo's missing-pricelist refusal."""

from __future__ import annotations

from typing import Any

import pytest
from test_odoo_connector import Make, connect, ctx, fake, make_order  # noqa: F401  (fixtures)

from connectors.base import Links, PushContext
from connectors.errors import IdentityReview, MissingSetting
from connectors.identity import resolve_customer


class _Erp:
    """A connector's lookup, as connectors pass it (a bound method)."""

    name = "tryton-eu"

    def by_email(self, email: str) -> list[str]:
        return ["P-7", "P-9"] if email == "two@example.com" else ["P-7"]


def _order(email: str, verified: bool) -> dict[str, Any]:
    return {"external_id": "1", "channel": "shopify",
            "customer": {"external_id": "c1", "email": email, "email_verified": verified}}


def _ctx() -> PushContext:
    return PushContext(delivery_id="d", idempotency_key="k", action="create", attempt=1, links=Links())


@pytest.mark.parametrize(("email", "verified"), [("two@example.com", True), ("one@example.com", False)])
def test_an_identity_review_names_the_connector_in_its_command(email: str, verified: bool) -> None:
    with pytest.raises(IdentityReview) as caught:
        resolve_customer(_order(email, verified), _ctx(), search_by_email=_Erp().by_email)
    assert "broker mappings add tryton-eu customer customer:shopify:c1" in str(caught.value)
    assert "CONNECTOR" not in str(caught.value)
    with pytest.raises(IdentityReview, match="broker mappings add legacy customer"):
        resolve_customer(_order(email, verified), _ctx(), search_by_email=lambda e: ["A", "B"] if verified
                         else ["A"], connector="legacy")


def test_odoos_missing_pricelist_message_is_a_well_formed_setting(fake: Any, connect: Make) -> None:  # noqa: F811
    order = make_order("W-2001")
    order["currency"] = "EUR"
    with pytest.raises(MissingSetting) as caught:  # parks until the connector is saved
        connect().push(order, ctx())
    assert caught.value.key == "pricelists"
    assert "add pricelists: {EUR: PRICELIST_ID} (an active pricelist in EUR" in str(caught.value)
    assert "}}" not in str(caught.value)
