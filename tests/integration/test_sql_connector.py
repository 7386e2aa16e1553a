"""What the `sql` connector promises beyond the contract kit.

Mapping validation needs no database; schema checks run on SQLite, PostgreSQL and MariaDB
(reflection differs per dialect); races, exact money, update/cancel rules and customer
matching run on real PostgreSQL and MariaDB with the legacy schema of the contract module.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import harness
import pytest
import sqlalchemy as sa
from marshmallow import ValidationError
from sqlalchemy import text
from test_contract_sql import KINDS, LegacyDatabase, full_config, minimal_config

from broker.schemas.order import load_order
from connectors.base import Links
from connectors.errors import IdentityReview, MissingMapping, PermanentError, TransientError
from connectors.sql import SqlConfig, SqlConnector
from connectors.testing import contract_order, later_version, push_context


def connector(config: dict[str, Any]) -> SqlConnector:
    return SqlConnector(SqlConfig().load(config), name="legacy")


# --- mapping validation (no database) -----------------------------------------------------
def test_unknown_canonical_path_is_rejected_with_its_field_path() -> None:
    config = full_config("postgresql+psycopg://app:pw@127.0.0.1/legacy")
    config["header"]["columns"]["cust_email"] = "customer.mail"
    config["lines"]["columns"]["qty"] = "quantiy"
    with pytest.raises(ValidationError) as caught:
        SqlConfig().load(config)
    header = caught.value.messages["header"]["columns"]["cust_email"][0]
    assert "'customer.mail'" in header and "did you mean customer.email" in header
    line = caught.value.messages["lines"]["columns"]["qty"][0]
    assert "'quantiy'" in line and "quantity" in line
    assert set(caught.value.messages) == {"header", "lines"}


def test_order_level_paths_are_allowed_on_lines_and_checked_too() -> None:
    config = full_config("sqlite://")
    config["lines"]["columns"]["currency"] = "order.currency"
    SqlConfig().load(config)
    config["lines"]["columns"]["currency"] = "order.currencyy"
    with pytest.raises(ValidationError) as caught:
        SqlConfig().load(config)
    assert "order.currencyy" in caught.value.messages["lines"]["columns"]["currency"][0]


def test_managed_columns_and_missing_sections_are_rejected() -> None:
    config = full_config("sqlite://")
    config["header"]["columns"].update(external_ref="external_id", state="status")
    config["lines"]["columns"]["header_id"] = "line_number"
    config.pop("products")
    with pytest.raises(ValidationError) as caught:
        SqlConfig().load(config)
    messages = caught.value.messages
    assert "external key" in messages["header"]["columns"]["external_ref"][0]
    assert "status.column" in messages["header"]["columns"]["state"][0]
    assert "lines.header_column" in messages["lines"]["columns"]["header_id"][0]
    assert "'products' section" in messages["lines"]["columns"]["product_id"][0]


def test_a_bad_url_is_refused_without_echoing_it() -> None:
    for url in ("nosuchdb+driver://app:hunter2-canary@host/db", "not a url hunter2-canary"):
        with pytest.raises(ValidationError) as caught:
            SqlConfig().load({**full_config("sqlite://"), "url": url})
        assert "hunter2-canary" not in str(caught.value.messages)
        assert caught.value.messages["url"]


def test_the_url_is_a_secret_and_never_dumped() -> None:
    loaded = SqlConfig().load(full_config("postgresql+psycopg://app:hunter2-canary@db/legacy"))
    assert "url" not in SqlConfig().dump(loaded)
    assert "hunter2-canary" not in repr(SqlConnector(loaded))


# --- schema checks on every dialect -------------------------------------------------------
@pytest.fixture(scope="module", params=("sqlite", *KINDS))
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
             ) -> Iterator[tuple[str, sa.Engine]]:
    url, drop = harness.create_database(request.param)
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('legacy')}/legacy.db"
    engine = sa.create_engine(url)
    try:
        yield url, engine
    finally:
        engine.dispose()
        drop()


def make_tables(engine: sa.Engine, *, unique: bool = True, money: Any = None,
                required_extra: bool = False) -> tuple[str, str]:
    """A header/lines pair with fresh names; money as DECIMAL(12,2), TEXT on SQLite."""
    token = secrets.token_hex(3)
    if money is None:
        money = sa.String(20) if engine.dialect.name == "sqlite" else sa.Numeric(12, 2)
    metadata = sa.MetaData()
    head = sa.Table(
        f"hdr_{token}", metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ext", sa.String(64), nullable=False, unique=unique),
        sa.Column("total", money, nullable=False),
        *([sa.Column("warehouse", sa.String(8), nullable=False)] if required_extra else []))
    sa.Table(f"lin_{token}", metadata,
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
             sa.Column("hdr_id", sa.Integer, sa.ForeignKey(head.c.id), nullable=False),
             sa.Column("sku", sa.String(64)),
             sa.Column("price", money, nullable=False))
    metadata.create_all(engine)
    return head.name, f"lin_{token}"


def small_config(url: str, header: str, lines: str, **header_columns: str) -> dict[str, Any]:
    return {"url": url,
            "header": {"table": header, "key_column": "ext",
                       "columns": {"total": "totals.total", **header_columns}},
            "lines": {"table": lines, "header_column": "hdr_id",
                      "columns": {"sku": "sku", "price": "unit_price"}}}


def check_fails(config: dict[str, Any]) -> str:
    with pytest.raises(PermanentError) as caught:
        connector(config).check()
    return str(caught.value)


def test_a_matching_schema_passes_the_check_and_books(database: tuple[str, sa.Engine]) -> None:
    url, engine = database
    header, lines = make_tables(engine)
    sql = connector(small_config(url, header, lines))
    sql.check()
    order = contract_order()
    result = sql.push(order, push_context(order))
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.table(header, sa.column("total")).c.total)).scalar_one()
    assert Decimal(str(total)) == order["totals"]["total"] and result.reference == "1"


def test_check_names_the_missing_column_and_table(database: tuple[str, sa.Engine]) -> None:
    url, engine = database
    header, lines = make_tables(engine)
    message = check_fails(small_config(url, header, lines, cust_mail="customer.email"))
    assert f"column {header}.cust_mail (header.columns) does not exist" in message
    assert "ext, total" in message  # and says which columns there are
    message = check_fails(small_config(url, header, "orders_lnie"))
    assert "table 'orders_lnie' (lines.table) does not exist" in message


def test_check_insists_on_a_unique_key_column(database: tuple[str, sa.Engine]) -> None:
    url, engine = database
    header, lines = make_tables(engine, unique=False)
    message = check_fails(small_config(url, header, lines))
    assert f"{header}.ext (header.key_column) is not UNIQUE" in message


def test_check_names_required_columns_left_unmapped(database: tuple[str, sa.Engine]) -> None:
    url, engine = database
    header, lines = make_tables(engine, required_extra=True)
    message = check_fails(small_config(url, header, lines))
    assert f"{header}.warehouse is NOT NULL without a default and not mapped" in message


def test_floating_point_money_columns_are_refused(database: tuple[str, sa.Engine]) -> None:
    url, engine = database
    header, lines = make_tables(engine, money=sa.Float())
    message = check_fails(small_config(url, header, lines))
    assert f"{header}.total ← totals.total" in message and "floating point" in message
    if engine.dialect.name == "sqlite":  # SQLite keeps NUMERIC as binary floating point
        header, lines = make_tables(engine, money=sa.Numeric(12, 2))
        assert "stores it as binary floating point" in check_fails(small_config(url, header, lines))


def test_a_table_dropped_under_a_running_connector_is_permanent_and_named_next_check(
        database: tuple[str, sa.Engine]) -> None:
    url, engine = database
    header, lines = make_tables(engine)
    sql = connector(small_config(url, header, lines))
    sql.check()
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {lines}"))
    order = contract_order()
    with pytest.raises(PermanentError):  # never retried: no attempt can succeed
        sql.push(order, push_context(order))
    assert f"table '{lines}' (lines.table) does not exist" in check_fails(
        small_config(url, header, lines))


# --- behaviour on PostgreSQL and MariaDB --------------------------------------------------
@pytest.fixture(scope="module", params=KINDS)
def legacy(request: pytest.FixtureRequest) -> Iterator[LegacyDatabase]:
    database = LegacyDatabase(request.param)
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def config(legacy: LegacyDatabase) -> dict[str, Any]:
    return full_config(legacy.render(legacy.url))


def test_concurrent_double_push_books_one_row(legacy: LegacyDatabase, config: dict[str, Any]) -> None:
    order = contract_order()
    legacy.prepare(order)
    workers = 6
    barrier = threading.Barrier(workers)
    results: list[Any] = []

    def push() -> None:
        sql = connector(config)  # one connector per worker process, as in production
        sql.lookup(contract_order())  # connected and reflected before the barrier
        barrier.wait()
        try:
            results.append(sql.push(order, push_context(order)).reference)
        except Exception as exc:
            results.append(exc)
        finally:
            sql.close()

    threads = [threading.Thread(target=push) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(set(results)) == 1 and isinstance(results[0], str), results
    assert len(legacy.records(order["external_id"])) == 1
    assert len(legacy.lines(order["external_id"])) == 2


def test_push_racing_an_uncommitted_writer_returns_its_row(legacy: LegacyDatabase,
                                                           config: dict[str, Any]) -> None:
    order = contract_order()
    legacy.prepare(order)
    sql = connector(config)
    sql.check()
    outcome: dict[str, Any] = {}

    def push() -> None:
        try:
            outcome["result"] = sql.push(order, push_context(order))
        except Exception as exc:
            outcome["error"] = exc

    with legacy.engine.connect() as conn:
        tx = conn.begin()
        conn.execute(text("INSERT INTO orders_header (external_ref, currency, subtotal, grand_total) "
                          "VALUES (:x, 'USD', 1, 1)"), {"x": order["external_id"]})
        theirs = conn.execute(text("SELECT id FROM orders_header WHERE external_ref = :x"),
                              {"x": order["external_id"]}).scalar_one()
        thread = threading.Thread(target=push)
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive(), f"the push should wait on the unique key: {outcome}"
        tx.commit()
    thread.join(15)
    assert outcome.get("result") is not None, outcome
    assert outcome["result"].reference == str(theirs)
    assert len(legacy.records(order["external_id"])) == 1
    sql.close()


def odd_order(unit_price: str) -> dict[str, Any]:
    """Two lines; the second has a unit price with more places than DECIMAL(12,4) holds."""
    external_id = f"ODD-{secrets.token_hex(4)}"
    return load_order({
        "external_id": external_id, "number": f"#{external_id}", "currency": "USD",
        "lines": [{"sku": "CK-WIDGET", "name": "Widget", "quantity": "1", "unit_price": "1.00"},
                  {"sku": "CK-GADGET", "name": "Gadget", "quantity": "1", "unit_price": unit_price}],
        "totals": {"total": "1.00"}})


def test_money_that_does_not_fit_is_refused_and_nothing_is_written(
        legacy: LegacyDatabase, config: dict[str, Any]) -> None:
    order = odd_order("0.00125")
    legacy.prepare(order)
    with pytest.raises(PermanentError) as caught:
        connector(config).push(order, push_context(order))
    message = str(caught.value)
    assert "line 2 unit_price" in message and "orders_line.unit_price" in message
    assert "0.00125 has more than 4 decimal places" in message
    assert legacy.records(order["external_id"]) == []  # the header went with the transaction


def test_update_rewrites_header_and_replaces_lines(legacy: LegacyDatabase,
                                                   config: dict[str, Any]) -> None:
    first = contract_order()
    legacy.prepare(first)
    sql = connector(config)
    booked = sql.push(first, push_context(first))
    second = load_order({**_dumped(first), "lines": [_dumped(first)["lines"][0]],
                         "totals": {"total": "64.31"}, "shipping": [], "discounts": [],
                         "note": "one line left"})
    result = sql.push(second, push_context(second, action="update", reference=booked.reference,
                                           version=2))
    assert result.reference == booked.reference and result.details["updated"]
    assert [ln["sku"] for ln in legacy.lines(first["external_id"])] == ["CK-WIDGET"]
    head = legacy.header(first["external_id"])
    assert head["grand_total"] == Decimal("64.31") and head["note"] == "one line left"
    assert head["broker_key"] == f"{first['external_id']}.v2.contract"


def test_create_of_a_booked_row_from_another_version_applies_it(
        legacy: LegacyDatabase, config: dict[str, Any]) -> None:
    """v1 booked but never acknowledged; v2 arrives as a create: the row gets v2."""
    first = contract_order()
    legacy.prepare(first)
    sql = connector(config)
    v1 = sql.push(first, push_context(first))
    second = load_order({**_dumped(first), "note": "version two"})
    again = sql.push(second, push_context(second, version=2))
    assert again.reference == v1.reference and again.details.get("updated")
    assert legacy.header(first["external_id"])["note"] == "version two"
    same = sql.push(second, push_context(second, version=2))  # the same version: untouched
    assert same.details.get("found")


def test_without_a_version_column_a_later_version_after_a_lost_answer_is_told_by_content(
        legacy: LegacyDatabase) -> None:
    sql = connector(minimal_config(legacy.render(legacy.url)))
    first = contract_order()
    v1 = sql.push(first, push_context(first))
    assert sql.push(first, push_context(first)).details.get("found")  # a retry: untouched
    second = contract_order(first["external_id"], quantity=5,
                            updated_at=later_version(first)["updated_at"])
    again = sql.push(second, push_context(second, version=2))  # v2 comes as a create
    assert again.reference == v1.reference and again.details.get("updated")
    assert legacy.header(first["external_id"])["grand_total"] == second["totals"]["total"]
    assert [ln["qty"] for ln in legacy.lines(first["external_id"])] == [5, 7]


def test_a_note_the_mapping_has_no_column_for_is_reported_not_applied(
        legacy: LegacyDatabase) -> None:
    order = contract_order()
    result = connector(minimal_config(legacy.render(legacy.url))).push(order, push_context(order))
    assert result.not_applied == (
        "the note: the mapping of connector 'legacy' has no note column (map one to the path note "
        "under header.columns)",)
    mapped = contract_order()
    legacy.prepare(mapped)
    assert connector(full_config(legacy.render(legacy.url))).push(
        mapped, push_context(mapped)).not_applied == ()


def test_a_cancelled_order_never_booked_without_a_status_column_writes_nothing_and_says_why(
        legacy: LegacyDatabase) -> None:
    order = contract_order(status="cancelled")
    result = connector(minimal_config(legacy.render(legacy.url))).push(order, push_context(order))
    assert legacy.records(order["external_id"]) == []
    assert "cancelled before it was booked" in result.not_applied[0]
    assert "status.column" in result.not_applied[0]


def test_a_cancelled_version_after_a_lost_answer_cancels_the_row(
        legacy: LegacyDatabase, config: dict[str, Any]) -> None:
    order = contract_order()
    legacy.prepare(order)
    sql = connector(config)
    booked = sql.push(order, push_context(order))
    cancelled = later_version(order, status="cancelled")
    result = sql.push(cancelled, push_context(cancelled, version=2))  # a create: v1's answer lost
    assert result.reference == booked.reference
    assert legacy.records(order["external_id"])[0]["status"] == "cancelled"
    again = later_version(cancelled)
    with pytest.raises(PermanentError, match=r"status\.column"):  # no column can say it
        connector(minimal_config(legacy.render(legacy.url))).push(again, push_context(again, version=3))


def test_discard_deletes_the_orders_rows_but_not_a_locked_one(
        legacy: LegacyDatabase, config: dict[str, Any]) -> None:
    sql = connector(config)
    order, locked = contract_order(), contract_order()
    for each in (order, locked):
        legacy.prepare(each)
        sql.push(each, push_context(each))
    sql.discard(order, push_context(order))
    assert legacy.records(order["external_id"]) == [] and legacy.lines(order["external_id"]) == []
    with legacy.engine.begin() as conn:
        conn.execute(text("UPDATE orders_header SET state = 'INVOICED' WHERE external_ref = :x"),
                     {"x": locked["external_id"]})
    with pytest.raises(PermanentError, match="'INVOICED'"):
        sql.discard(locked, push_context(locked))
    assert len(legacy.lines(locked["external_id"])) == 2


def test_calls_per_push_covers_the_statements_of_a_push(
        legacy: LegacyDatabase, config: dict[str, Any]) -> None:
    config["customers"] = {"table": "customers", "id_column": "id", "email_column": "email",
                           "columns": {"name": "customer.name"}}
    config["header"]["columns"]["customer_id"] = "customer.id"
    sql = connector(config)
    sql.check()  # the tables are reflected once per connector
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
    try:
        order = contract_order()
        legacy.prepare(order)
        statements.clear()
        sql.push(order, push_context(order))
        created = len(statements)
        statements.clear()
        later = contract_order(order["external_id"], quantity=5,
                               updated_at=later_version(order)["updated_at"])
        sql.push(later, push_context(later, version=2))
        updated = len(statements)
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", count)
    assert max(created, updated) > 0 and 2 * max(created, updated) <= SqlConnector.calls_per_push


def test_locked_orders_are_left_to_the_back_office(legacy: LegacyDatabase,
                                                   config: dict[str, Any]) -> None:
    order = contract_order()
    legacy.prepare(order)
    sql = connector(config)
    booked = sql.push(order, push_context(order))
    with legacy.engine.begin() as conn:
        conn.execute(text("UPDATE orders_header SET state = 'SHIPPED' WHERE external_ref = :x"),
                     {"x": order["external_id"]})
    later = load_order({**_dumped(order), "note": "changed"})
    with pytest.raises(PermanentError, match=r"'SHIPPED'.*update it by hand"):
        sql.push(later, push_context(later, action="update", reference=booked.reference, version=2))
    with pytest.raises(PermanentError, match="cancel it by hand"):
        sql.cancel(later, push_context(later, action="cancel", reference=booked.reference, version=3))
    assert legacy.header(order["external_id"])["note"] == "contract kit"


def test_cancel_is_idempotent_and_a_cancelled_order_is_not_updated(
        legacy: LegacyDatabase, config: dict[str, Any]) -> None:
    order = contract_order()
    legacy.prepare(order)
    sql = connector(config)
    booked = sql.push(order, push_context(order))
    cancelled = {**order, "status": "cancelled"}
    ctx = push_context(cancelled, action="cancel", reference=booked.reference, version=2)
    assert sql.push(cancelled, ctx).reference == booked.reference  # push routes a cancel too
    assert sql.cancel(cancelled, ctx).details.get("already")
    assert legacy.header(order["external_id"])["state"] == "CANCELLED"
    with pytest.raises(PermanentError, match="re-open it by hand"):
        sql.push(order, push_context(order, action="update", reference=booked.reference, version=3))


def test_a_cancelled_order_never_booked_is_created_cancelled(
        legacy: LegacyDatabase, config: dict[str, Any]) -> None:
    order = contract_order(status="cancelled")
    legacy.prepare(order)
    connector(config).push(order, push_context(order))
    assert legacy.records(order["external_id"])[0]["status"] == "cancelled"


def test_unmapped_tax_code_parks_and_a_mapping_resolves_it(
        legacy: LegacyDatabase, config: dict[str, Any]) -> None:
    config["lines"]["columns"]["description"] = "tax_code"
    order = contract_order()
    legacy.prepare(order)
    with pytest.raises(MissingMapping, match="'Sales Tax'") as caught:
        connector(config).push(order, push_context(order))
    assert (caught.value.kind, caught.value.key) == ("tax", "Sales Tax")
    assert legacy.records(order["external_id"]) == []
    ctx = push_context(order)
    ctx = type(ctx)(**{**ctx.__dict__, "links": Links(tax={"Sales Tax": "VAT-STD"})})
    connector(config).push(order, ctx)
    assert {ln["description"] for ln in legacy.lines(order["external_id"])} == {"VAT-STD"}


def test_customers_are_matched_by_verified_email_not_duplicated(
        legacy: LegacyDatabase, config: dict[str, Any]) -> None:
    config["customers"] = {"table": "customers", "id_column": "id", "email_column": "email",
                           "columns": {"name": "customer.name"}}
    config["header"]["columns"]["customer_id"] = "customer.id"
    sql = connector(config)
    first = contract_order()
    legacy.prepare(first)
    created = sql.push(first, push_context(first))
    customer_id = legacy.header(first["external_id"])["customer_id"]
    assert customer_id is not None
    keys = {link.key: link.value for link in created.links if link.kind == "customer"}
    assert keys == {f"customer:contract-kit:{first['customer']['external_id']}": str(customer_id),
                    f"email:{first['customer']['email']}": str(customer_id)}
    second = load_order({**_dumped(contract_order()), "customer": {
        **_dumped(first)["customer"], "external_id": "another-channel-id"}})
    sql.push(second, push_context(second))
    assert legacy.header(second["external_id"])["customer_id"] == customer_id
    unverified = load_order({**_dumped(contract_order()), "customer": {
        **_dumped(first)["customer"], "external_id": "x", "email_verified": False}})
    with pytest.raises(IdentityReview):
        sql.push(unverified, push_context(unverified))
    with legacy.engine.connect() as conn:
        count = conn.execute(text("SELECT COUNT(*) FROM customers WHERE email = :e"),
                             {"e": first["customer"]["email"]}).scalar_one()
    assert count == 1


def test_wrong_password_error_names_neither_password_nor_url(legacy: LegacyDatabase,
                                                             config: dict[str, Any]) -> None:
    bad = {**config, "url": legacy.render(legacy.bad_url)}
    with pytest.raises(PermanentError) as caught:
        connector(bad).check()
    message = str(caught.value)
    assert "check the user name and password" in message
    assert legacy.bad_url.password not in message and legacy.render(legacy.bad_url) not in message


def test_an_unreachable_database_is_transient_for_lookup_too(legacy: LegacyDatabase,
                                                             config: dict[str, Any]) -> None:
    sql = connector({**config, "url": legacy.render(legacy.unreachable_url), "connect_timeout": 2})
    with pytest.raises(TransientError, match="will retry"):
        sql.lookup(contract_order())


def test_a_missing_sqlite_directory_is_transient(tmp_path: Path) -> None:
    """A file database on a volume that is not mounted (yet) is worth another attempt."""
    config = small_config(f"sqlite:///{tmp_path}/not-mounted/legacy.db", "h", "l")
    with pytest.raises(TransientError):
        connector(config).check()


def _dumped(order: dict[str, Any]) -> dict[str, Any]:
    from broker.schemas.order import dump_order

    return dump_order(order)
