"""The canonical order schema (ORDER.md): exact money, ISO codes, UTC times, paths in errors."""

from __future__ import annotations

import copy
import datetime as dt
import json
from decimal import Decimal

import pytest
from marshmallow import ValidationError

from broker.schemas.order import (
    ORDER_EXAMPLE,
    dump_order,
    flatten_errors,
    load_order,
    minor_units,
    order_digest,
)


def example(**changes: object) -> dict:
    order = copy.deepcopy(ORDER_EXAMPLE)
    order.update(changes)
    return order


def simple(currency: str = "USD", lines: int = 1, **changes: object) -> dict:
    """An order of `lines` lines at 10.00 each (in `currency`), no tax, shipping or discount."""
    order = {
        "external_id": "A-1",
        "currency": currency,
        "lines": [{"sku": f"S{i}", "quantity": "1", "unit_price": "10"} for i in range(lines)],
        "totals": {"total": str(10 * lines)},
    }
    order.update(changes)
    return order


def errors_of(data: object) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        load_order(data)
    return flatten_errors(caught.value.messages)


def test_example_from_the_spec_loads():
    order = load_order(example())

    assert order["totals"]["total"] == Decimal("29.06")
    assert order["placed_at"] == dt.datetime(2026, 11, 20, 14, 3, tzinfo=dt.UTC)
    assert order["lines"][0]["taxes"][0]["rate"] == Decimal("0.0625")


def test_amounts_are_decimals_never_floats():
    order = load_order(example())

    for value in (order["lines"][0]["quantity"], order["lines"][0]["unit_price"],
                  order["totals"]["total"], order["payment"]["amount"]):
        assert type(value) is Decimal


def test_json_floats_stay_exact():
    data = simple(lines=2)
    data["lines"][0]["unit_price"] = 0.1
    data["lines"][1]["unit_price"] = 0.2
    data["totals"] = {"total": 0.3}

    order = load_order(data)

    assert order["lines"][0]["unit_price"] + order["lines"][1]["unit_price"] == Decimal("0.3")
    assert order["totals"]["total"] == Decimal("0.30")


def test_numbers_accepted_and_normalised_to_currency_places():
    data = simple(totals={"total": 10})
    data["lines"][0].update(quantity=1, unit_price=10)

    order = load_order(data)
    dumped = dump_order(order)

    assert dumped["lines"][0]["unit_price"] == "10.00"
    assert dumped["lines"][0]["quantity"] == "1"
    assert dumped["totals"]["total"] == "10.00"


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "1e3", " 12", "1_000", True, float("nan")])
def test_non_decimal_amounts_rejected(bad):
    data = simple()
    data["lines"][0]["unit_price"] = bad

    assert "lines.0.unit_price" in errors_of(data)


def test_minor_units_follow_iso_4217():
    assert [minor_units(c) for c in ("JPY", "USD", "KWD", "CLF", "eur")] == [0, 2, 3, 4, 2]


def test_jpy_amount_with_decimals_rejected():
    errors = errors_of(simple("JPY", totals={"total": "10.5"}))

    assert list(errors) == ["totals.total"]
    assert "0 decimal places in JPY" in errors["totals.total"][0]


def test_kwd_amount_with_three_decimals_accepted():
    data = simple("KWD", totals={"total": "10.005"})
    data["lines"][0]["unit_price"] = "10.005"

    assert load_order(data)["totals"]["total"] == Decimal("10.005")


def test_unit_price_may_carry_fractional_minor_units_but_not_more():
    data = simple(totals={"total": "10.00"})
    data["lines"][0]["unit_price"] = "10.0012"
    assert load_order(data)["lines"][0]["unit_price"] == Decimal("10.0012")

    data["lines"][0]["unit_price"] = "10.0000012"  # 7 places > 2 + 4
    assert "lines.0.unit_price" in errors_of(data)


def test_quantity_has_at_most_four_decimals_and_must_be_positive():
    data = simple()
    data["lines"][0]["quantity"] = "1.00001"
    assert "lines.0.quantity" in errors_of(data)

    data["lines"][0]["quantity"] = "0"
    assert "lines.0.quantity" in errors_of(data)


def test_bad_currency_and_country_rejected_with_their_paths():
    data = example(currency="XYZ")
    data["billing_address"]["country"] = "XX"

    errors = errors_of(data)

    assert "currency" in errors
    assert "billing_address.country" in errors


def test_lowercase_codes_normalised_to_uppercase():
    data = example(currency="usd")
    data["shipping_address"]["country"] = "us"

    order = load_order(data)

    assert (order["currency"], order["shipping_address"]["country"]) == ("USD", "US")


def test_naive_datetime_rejected():
    assert "placed_at" in errors_of(example(placed_at="2026-11-20T14:03:00"))


def test_offset_datetime_stored_as_utc_and_dumped_with_z():
    order = load_order(example(updated_at="2026-11-20T16:05:00+02:00"))

    assert order["updated_at"].utcoffset() == dt.timedelta(0)
    assert dump_order(order)["updated_at"] == "2026-11-20T14:05:00Z"


def test_unknown_field_deep_in_lines_reported_with_its_path():
    data = example()
    data["lines"][0]["colour"] = "blue"

    assert errors_of(data) == {"lines.0.colour": ["Unknown field."]}


def test_error_deep_in_lines_named_by_index():
    data = simple(lines=4, totals={"total": "40"})
    data["lines"][3]["unit_price"] = "-1"

    assert list(errors_of(data)) == ["lines.3.unit_price"]


def test_missing_required_fields_each_reported():
    errors = errors_of({"lines": []})

    assert {"external_id", "currency", "totals", "lines"} <= set(errors)
    assert "totals.total" in errors_of(simple(totals={}))


def test_line_needs_a_sku_or_a_name():
    data = simple()
    del data["lines"][0]["sku"]

    assert "lines.0.sku" in errors_of(data)


def test_non_object_top_level_rejected():
    assert list(errors_of([ORDER_EXAMPLE])) == ["_schema"]


def test_totals_mismatch_names_totals_total_with_expected_sum():
    data = example()
    data["totals"]["total"] = "30.00"

    assert errors_of(data) == {"totals.total": [
        "total 30.00 does not match subtotal 25.00 - discount 2.50 + shipping 5.00 + tax 1.56"
        " = 29.06"]}


def test_subtotal_mismatch_names_totals_subtotal():
    data = example()
    data["totals"]["subtotal"] = "26.00"

    assert list(errors_of(data)) == ["totals.subtotal"]


def test_total_checked_from_parts_when_totals_breakdown_absent():
    data = example()
    data["totals"] = {"total": "29.06"}
    assert load_order(data)["totals"] == {"total": Decimal("29.06")}

    data["totals"] = {"total": "31.56"}  # forgot the discount
    assert list(errors_of(data)) == ["totals.total"]


def test_tax_inclusive_prices_do_not_add_tax_to_total():
    data = example(prices_include_tax=True)
    data["totals"]["total"] = "27.50"
    assert load_order(data)["totals"]["total"] == Decimal("27.50")

    data["totals"]["total"] = "29.06"
    assert list(errors_of(data)) == ["totals.total"]


def test_rounding_within_one_minor_unit_per_line_accepted_beyond_rejected():
    assert load_order(simple(lines=3, totals={"total": "30.03"}))
    assert load_order(simple(lines=3, totals={"total": "29.97"}))

    assert list(errors_of(simple(lines=3, totals={"total": "30.04"}))) == ["totals.total"]


def test_cancelled_status_accepted_and_open_is_the_default():
    assert load_order(example(status="cancelled"))["status"] == "cancelled"
    assert load_order(simple())["status"] == "open"
    assert "status" in errors_of(example(status="closed"))


def test_payment_status_must_be_known():
    data = example()
    data["payment"]["status"] = "captured"

    assert "payment.status" in errors_of(data)


def test_nullable_optional_fields_accept_null():
    order = load_order(example(note=None, customer={"email": None, "company": None}))

    assert order["note"] is None
    assert order["customer"]["email_verified"] is False


def test_metadata_must_be_a_small_json_object():
    assert "metadata" in errors_of(example(metadata=["a"]))
    assert "metadata" in errors_of(example(metadata={"blob": "x" * 17_000}))

    deep: dict = {}
    for _ in range(40):
        deep = {"d": deep}
    assert "metadata" in errors_of(example(metadata=deep))


def test_digest_stable_across_key_order():
    reordered = dict(reversed(list(copy.deepcopy(ORDER_EXAMPLE).items())))

    assert order_digest(load_order(reordered)) == order_digest(load_order(example()))


def test_digest_equal_for_number_and_string_of_the_same_value():
    as_numbers = json.loads(json.dumps(ORDER_EXAMPLE).replace('"12.50"', "12.5"))
    as_decimals = json.loads(json.dumps(ORDER_EXAMPLE), parse_float=Decimal)
    assert as_numbers["lines"][0]["unit_price"] == 12.5
    as_decimals["metadata"] = {"weight": Decimal("1.50")}
    as_numbers["metadata"] = {"weight": 1.5}

    assert order_digest(load_order(as_numbers)) == order_digest(load_order(as_decimals))


def test_digest_changes_when_the_order_changes():
    changed = example(note="Ring twice")

    assert order_digest(load_order(changed)) != order_digest(load_order(example()))


def test_dump_round_trips_through_json():
    order = load_order(example())
    dumped = json.loads(json.dumps(dump_order(order)))

    assert load_order(dumped) == order
    assert dumped["totals"]["total"] == "29.06"
    assert dumped["placed_at"] == "2026-11-20T14:03:00Z"


def test_flatten_errors_gives_dotted_paths():
    messages = {"lines": {3: {"unit_price": ["bad"], "_schema": ["whole line"]}},
                "_schema": ["top"]}

    assert flatten_errors(messages) == {
        "lines.3.unit_price": ["bad"], "lines.3": ["whole line"], "_schema": ["top"]}


def test_reload_of_a_dump_equals_a_full_load():
    """Deliveries re-read stored versions with reload_order: it must agree with load_order."""
    from broker.schemas.order import reload_order

    variants = [
        ORDER_EXAMPLE,
        {**ORDER_EXAMPLE, "currency": "JPY", "lines": [{"sku": "A", "quantity": "3",
                                                        "unit_price": "1200"}],
         "shipping": [], "discounts": [], "payment": None,
         "totals": {"subtotal": "3600", "total": "3600"}, "metadata": {"n": 1.5, "k": [1, "x"]}},
    ]
    for variant in variants:
        dumped = dump_order(load_order(variant))
        assert reload_order(dumped) == load_order(dumped)


def test_nul_characters_are_refused_with_every_path():
    """PostgreSQL stores no NUL in text or JSON: such an order is bad input, named by path."""
    order = example(number="#10\x0042", tags=["vip", "b\x00"],
                    metadata={"k\x00": 1, "list": ["ok", "\x00"]})
    order["lines"][0]["name"] = "Blue\x00Widget"
    order["customer"]["email"] = "ana\x00@example.com"
    with pytest.raises(ValidationError) as caught:
        load_order(order)
    fields = flatten_errors(caught.value.messages)
    assert set(fields) == {"number", "tags.1", "metadata.k\\u0000", "metadata.list.1",
                           "lines.0.name", "customer.email"}, fields
    assert all("NUL" in " ".join(messages) for messages in fields.values())


def test_order_number_is_at_most_64_characters():
    """The orders table indexes the number as 64 characters; a longer one is refused up front."""
    assert load_order(example(number="N" * 64))["number"] == "N" * 64
    with pytest.raises(ValidationError) as caught:
        load_order(example(number="N" * 65))
    assert list(flatten_errors(caught.value.messages)) == ["number"]
