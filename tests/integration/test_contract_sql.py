"""The contract kit on the `sql` connector, against real PostgreSQL and real MariaDB.

Each backend gets a fresh database per module holding a legacy order-capture schema the way
such systems look: `orders_header` / `orders_line` with DECIMAL(12,2) money, a UNIQUE
external key, a status column and a product table the lines refer to. The kit runs twice:
with the full mapping (status, products), with a customers table besides, and with the least
an admin must map.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import harness
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from connectors.testing import ConnectorContract

KINDS = ("postgresql", "mariadb")
_AUTO = {"postgresql": "SERIAL PRIMARY KEY", "mariadb": "INTEGER AUTO_INCREMENT PRIMARY KEY"}
_TIME = {"postgresql": "TIMESTAMP WITH TIME ZONE", "mariadb": "DATETIME"}
LEGACY_DDL = (
    """CREATE TABLE customers (
         id {auto},
         email VARCHAR(254) NOT NULL,
         name VARCHAR(200))""",
    """CREATE TABLE products (
         id {auto},
         code VARCHAR(64) NOT NULL,
         title VARCHAR(200),
         CONSTRAINT uq_products_code UNIQUE (code))""",
    """CREATE TABLE orders_header (
         id {auto},
         external_ref VARCHAR(255) NOT NULL,
         order_no VARCHAR(64),
         channel VARCHAR(64),
         cust_email VARCHAR(254),
         cust_name VARCHAR(200),
         customer_id INTEGER NULL,
         currency CHAR(3) NOT NULL,
         subtotal DECIMAL(12,2) NOT NULL,
         discount_total DECIMAL(12,2) NOT NULL DEFAULT 0,
         shipping_total DECIMAL(12,2) NOT NULL DEFAULT 0,
         tax_total DECIMAL(12,2) NOT NULL DEFAULT 0,
         grand_total DECIMAL(12,2) NOT NULL,
         state VARCHAR(16) NOT NULL DEFAULT 'NEW',
         placed_at {time} NULL,
         note TEXT,
         broker_key VARCHAR(255),
         booked_at {time} DEFAULT CURRENT_TIMESTAMP,
         CONSTRAINT uq_orders_header_external_ref UNIQUE (external_ref))""",
    """CREATE TABLE orders_line (
         id {auto},
         header_id INTEGER NOT NULL,
         line_no INTEGER NOT NULL,
         product_id INTEGER NULL,
         sku VARCHAR(64),
         description VARCHAR(200),
         qty DECIMAL(12,4) NOT NULL,
         unit_price DECIMAL(12,4) NOT NULL,
         discount DECIMAL(12,2) NOT NULL DEFAULT 0,
         tax DECIMAL(12,2) NOT NULL DEFAULT 0,
         line_total DECIMAL(12,2) NOT NULL,
         CONSTRAINT uq_orders_line_no UNIQUE (header_id, line_no),
         CONSTRAINT fk_orders_line_header FOREIGN KEY (header_id) REFERENCES orders_header (id)
           ON DELETE CASCADE,
         CONSTRAINT fk_orders_line_product FOREIGN KEY (product_id) REFERENCES products (id))""",
)


class LegacyDatabase:
    """A fresh database with the legacy schema, read back independently of the connector.

    On MariaDB the connector logs in as its own user with a password (as a legacy system's
    integration account would); PostgreSQL here trusts loopback, so a role that does not
    exist stands for wrong credentials.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        admin_url, self._drop = harness.create_database(kind)
        self.engine: Engine = create_engine(admin_url)
        with self.engine.begin() as conn:
            for ddl in LEGACY_DDL:
                conn.execute(text(ddl.format(auto=_AUTO[kind], time=_TIME[kind])))
        self.user = None
        url = make_url(admin_url)
        if kind == "mariadb":
            self.user, password = f"fobo_legacy_{secrets.token_hex(3)}", f"canary-{secrets.token_hex(6)}"
            with self.engine.begin() as conn:
                conn.execute(text(f"CREATE USER '{self.user}'@'127.0.0.1' IDENTIFIED BY '{password}'"))
                conn.execute(text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {url.database}.* "
                                  f"TO '{self.user}'@'127.0.0.1'"))
            self.url = url.set(username=self.user, password=password)
            self.bad_url = self.url.set(password="wrong-" + password)
        else:
            self.url = url
            self.bad_url = url.set(username=f"fobo_nobody_{secrets.token_hex(3)}",
                                   password="wrong-canary")
        self.unreachable_url = url.set(port=harness.free_port())

    def close(self) -> None:
        if self.user:
            with self.engine.begin() as conn:
                conn.execute(text(f"DROP USER IF EXISTS '{self.user}'@'127.0.0.1'"))
        self.engine.dispose()
        self._drop()

    @staticmethod
    def render(url: Any) -> str:
        return url.render_as_string(hide_password=False)

    # --- the kit's BackOffice -------------------------------------------------------------
    def prepare(self, order: Any) -> None:
        """Every SKU of the order exists as a product (the SKU is the product code)."""
        with self.engine.begin() as conn:
            for line in order["lines"]:
                found = conn.execute(text("SELECT id FROM products WHERE code = :c"),
                                     {"c": line["sku"]}).first()
                if found is None:
                    conn.execute(text("INSERT INTO products (code, title) VALUES (:c, :t)"),
                                 {"c": line["sku"], "t": line["name"]})

    def records(self, external_id: str) -> list[dict[str, Any]]:
        """Header rows; the legacy schema keeps a note and a customer id, and no invoices."""
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT id, grand_total, state, note, customer_id "
                                     "FROM orders_header WHERE external_ref = :x"),
                                {"x": external_id}).all()
        return [{"reference": row[0], "total": row[1],
                 "status": "cancelled" if row[2] == "CANCELLED" else "open", "note": row[3],
                 "customer": row[4]} for row in rows]

    def header(self, external_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(text("SELECT * FROM orders_header WHERE external_ref = :x"),
                               {"x": external_id}).mappings().one()
        return dict(row)

    def lines(self, external_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT l.* FROM orders_line l JOIN orders_header h ON h.id = l.header_id "
                "WHERE h.external_ref = :x ORDER BY l.line_no"), {"x": external_id}).mappings()
            return [dict(r) for r in rows]

    def total_booked(self, external_id: str) -> Decimal:
        """What the legacy system would invoice: its lines plus the header's charges."""
        head = self.header(external_id)
        lines = sum((ln["line_total"] + ln["tax"] for ln in self.lines(external_id)), Decimal(0))
        return lines - head["discount_total"] + head["shipping_total"]


def full_config(url: str) -> dict[str, Any]:
    """Everything mapped: status with locked values, products, the idempotency key column."""
    return {
        "url": url,
        "header": {
            "table": "orders_header", "key_column": "external_ref",
            "columns": {"order_no": "number", "channel": "channel",
                        "cust_email": "customer.email", "cust_name": "customer.name",
                        "currency": "currency", "subtotal": "totals.subtotal",
                        "discount_total": "totals.discount", "shipping_total": "totals.shipping",
                        "tax_total": "totals.tax", "grand_total": "totals.total",
                        "placed_at": "placed_at", "note": "note",
                        "broker_key": "broker.idempotency_key"},
        },
        "lines": {
            "table": "orders_line", "header_column": "header_id",
            "columns": {"line_no": "line_number", "product_id": "product_id", "sku": "sku",
                        "description": "name", "qty": "quantity", "unit_price": "unit_price",
                        "discount": "discount", "tax": "tax", "line_total": "total"},
        },
        "status": {"column": "state", "open": "NEW", "cancelled": "CANCELLED",
                   "locked": ["SHIPPED", "INVOICED"]},
        "products": {"table": "products", "sku_column": "code", "id_column": "id"},
        "timeout": 10, "connect_timeout": 3,
    }


def minimal_config(url: str) -> dict[str, Any]:
    """Only what the schema requires: NOT NULL columns without a default."""
    return {
        "url": url,
        "header": {"table": "orders_header", "key_column": "external_ref",
                   "columns": {"currency": "currency", "subtotal": "totals.subtotal",
                               "grand_total": "totals.total"}},
        "lines": {"table": "orders_line", "header_column": "header_id",
                  "columns": {"line_no": "line_number", "qty": "quantity",
                              "unit_price": "unit_price", "line_total": "total"}},
        "connect_timeout": 3,
    }


@pytest.fixture(scope="module", params=KINDS)
def legacy(request: pytest.FixtureRequest) -> Iterator[LegacyDatabase]:
    database = LegacyDatabase(request.param)
    try:
        yield database
    finally:
        database.close()


class _SqlFixtures:
    @pytest.fixture
    def backoffice(self, legacy: LegacyDatabase) -> LegacyDatabase:
        return legacy

    @pytest.fixture
    def bad_credentials_config(self, config: dict[str, Any], legacy: LegacyDatabase) -> dict[str, Any]:
        return {**config, "url": legacy.render(legacy.bad_url)}

    @pytest.fixture
    def unreachable_config(self, config: dict[str, Any], legacy: LegacyDatabase) -> dict[str, Any]:
        return {**config, "url": legacy.render(legacy.unreachable_url), "connect_timeout": 2}


class TestSqlContract(_SqlFixtures, ConnectorContract):
    kind = "sql"
    matches_customers = False  # no customers section: the header keeps the email as given

    @pytest.fixture
    def config(self, legacy: LegacyDatabase) -> dict[str, Any]:
        return full_config(legacy.render(legacy.url))

    def test_booked_money_adds_up_line_by_line(self, config: dict[str, Any],
                                               legacy: LegacyDatabase) -> None:
        """Not only the header total: the lines and charges the legacy system sums agree."""
        order = self.order()
        self.book(self.make(config), legacy, order)
        assert legacy.total_booked(order["external_id"]) == order["totals"]["total"]
        head = legacy.header(order["external_id"])
        assert head["subtotal"] == order["totals"]["subtotal"]
        assert head["tax_total"] == order["totals"]["tax"]
        lines = legacy.lines(order["external_id"])
        assert [ln["unit_price"] for ln in lines] == [ln["unit_price"] for ln in order["lines"]]


class TestSqlContractMinimal(_SqlFixtures, ConnectorContract):
    """No status column (cancel is refused, saying what to configure), no product table."""

    kind = "sql"
    supports_cancel = False
    maps_products = False
    matches_customers = False

    @pytest.fixture
    def config(self, legacy: LegacyDatabase) -> dict[str, Any]:
        return minimal_config(legacy.render(legacy.url))


class TestSqlContractWithCustomers(TestSqlContract):
    """With a customers table the connector matches customers like the ERPs do (links, then a
    verified email; an unverified one parks for identity review)."""

    matches_customers = True

    @pytest.fixture
    def config(self, legacy: LegacyDatabase) -> dict[str, Any]:
        config = full_config(legacy.render(legacy.url))
        config["customers"] = {"table": "customers", "id_column": "id", "email_column": "email",
                               "columns": {"name": "customer.name"}}
        config["header"]["columns"]["customer_id"] = "customer.id"
        return config
