"""A real trytond 8 back office for the Tryton connector's tests, served over JSON-RPC.

Building: a subprocess (`python tests/backoffice/tryton.py build DIR`) activates the `sale`
module (which brings account_invoice, stock, party, product, company, currency...) into an
SQLite database with Tryton's own scenario helpers (trytond.tests.tools, the modules'
tests/tools.py), then adds what an integrator would set up: a company in USD, a chart of
accounts, fiscal years with invoice sequences, a 7.25 % sales tax, products CK-WIDGET and
CK-GADGET, service products for shipping / discounts / adjustments / collected tax, a card
payment method, the United States with Illinois, an API user in the Sales and Accounting
groups, and a one-line text layout for the invoice report (see _build). That takes ~25 s of
CPU, so the file is cached (key: the building code of this file, the installed trytond
packages, the month); a run with Tryton tests starts building it when collection ends, beside
the first tests, and each test session (each xdist worker) serves a copy of it.

Serving: `python -m trytond.cli` on a free loopback port, the way `trytond` runs in
production (JSON-RPC at POST /<database>/rpc/, https://docs.tryton.org/8.0/server/topics/rpc.html).

Services: none (SQLite). If trytond is not installed the tests skip on a laptop and fail in CI.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from decimal import Decimal
from importlib import metadata
from pathlib import Path
from typing import Any

DATABASE = "fobo"
ADMIN_PASSWORD = "admin-tryton-canary-51d0c3"
API_LOGIN = "fobo-api"
API_PASSWORD = "fobo-tryton-canary-4f1c9a2e"
TAX_NAME = "Sales Tax 7.25%"
PRODUCTS = {  # code: (name, type, list price)
    "CK-WIDGET": ("Contract Widget", "goods", "19.99"),
    "CK-GADGET": ("Contract Gadget", "goods", "0.07"),
    "FOBO-SHIP": ("Shipping", "service", "0"),
    "FOBO-DISC": ("Discount", "service", "0"),
    "FOBO-ADJ": ("Rounding adjustment", "service", "0"),
    "FOBO-TAX": ("Sales tax collected", "service", "0"),
}
FACTS = "facts.json"


# --- building (runs in its own interpreter: trytond's pool and config are global) -------------
def _build(directory: Path) -> None:
    os.environ.update(TRYTOND_DATABASE__URI="sqlite://", TRYTOND_DATABASE__PATH=str(directory),
                      DB_NAME=DATABASE)
    from proteus import Model
    from trytond.modules.account.tests.tools import (
        create_chart,
        create_fiscalyear,
        create_tax,
        get_accounts,
    )
    from trytond.modules.account_invoice.tests.tools import (
        create_payment_term,
        set_fiscalyear_invoice_sequences,
    )
    from trytond.modules.company.tests.tools import create_company, get_company
    from trytond.tests.tools import activate_modules

    activate_modules(["sale"], create_company, create_chart)
    company = get_company()
    today = dt.date.today()
    for year in (today.year - 1, today.year, today.year + 1):
        fiscalyear = create_fiscalyear(today=(dt.date(year, 1, 1), dt.date(year, 12, 31)))
        fiscalyear.name = str(year)
        fiscalyear = set_fiscalyear_invoice_sequences(fiscalyear)
        fiscalyear.click("create_period")
    accounts = get_accounts()

    payment_term = create_payment_term()
    payment_term.save()
    configuration = Model.get("account.configuration")(1)
    configuration.tax_rounding = "line"  # how most channels round: per line, then summed
    configuration.default_customer_payment_term = payment_term
    configuration.save()

    tax = create_tax(Decimal("0.0725"))
    tax.name = tax.description = TAX_NAME
    tax.save()

    categories = {}
    for kind in ("goods", "service"):  # goods are taxed by default, services are not
        category = Model.get("product.category")(name=f"Shop {kind}", accounting=True)
        category.account_revenue = accounts["revenue"]
        category.account_expense = accounts["expense"]
        if kind == "goods":
            category.customer_taxes.append(Model.get("account.tax")(tax.id))
        category.save()
        categories[kind] = category
    unit, = Model.get("product.uom").find([("name", "=", "Unit")])
    products = {}
    for code, (name, kind, price) in PRODUCTS.items():
        template = Model.get("product.template")(
            name=name, code=code, type=kind, default_uom=unit, salable=True,
            list_price=Decimal(price), account_category=categories[kind])
        template.save()
        products[code] = template.products[0].id

    journal, = Model.get("account.journal").find([("type", "=", "cash")])
    method = Model.get("account.invoice.payment.method")(
        name="Card", journal=journal, credit_account=accounts["cash"],
        debit_account=accounts["cash"])
    method.save()

    # Tryton renders the invoice report whenever it posts a customer invoice, to keep it with
    # the invoice (account_invoice: post → print_invoice). The stock ODT layout took ~9 % of
    # trytond's CPU per booking and nothing here reads it: a one-line text layout instead, as
    # an integrator sets their own layout (Reports → Invoice → Content).
    report, = Model.get("ir.action.report").find([("report_name", "=", "account.invoice")])
    report.template_extension = "txt"
    report.extension = "txt"
    report.report_content_custom = b"Invoice ${records[0].number}: ${records[0].total_amount}\n"
    report.save()

    country = Model.get("country.country")(name="United States", code="US")
    country.save()
    Model.get("country.subdivision")(name="Illinois", code="US-IL", type="state",
                                     country=country).save()

    groups = Model.get("res.group").find([("name", "in", ["Sales", "Accounting"])])
    assert len(groups) == 2, groups
    user = Model.get("res.user")(name="FOBO broker", login=API_LOGIN)
    user.password = API_PASSWORD
    user.groups.extend(groups)
    user.companies.append(Model.get("company.company")(company.id))
    user.company = Model.get("company.company")(company.id)
    user.save()
    admin, = Model.get("res.user").find([("login", "=", "admin")])
    admin.password = ADMIN_PASSWORD
    admin.save()

    facts = {"database": DATABASE, "company": company.id, "tax": tax.id,
             "products": products, "payment_method": method.id, "country": country.id,
             "currency": company.currency.id}
    (directory / FACTS).write_text(json.dumps(facts, indent=1))


def _cache_key() -> str:
    """What the built database depends on: the code above (how it is built, not how it is
    served), the installed trytond packages and the month (its fiscal years)."""
    source = Path(__file__).read_text()
    digest = hashlib.sha256(source[:source.index("\ndef _cache_key")].encode())
    for dist in sorted(metadata.distributions(), key=lambda d: d.metadata["Name"] or ""):
        name = (dist.metadata["Name"] or "").lower()
        if name.startswith(("trytond", "proteus")):
            digest.update(f"{name}=={dist.version};".encode())
    digest.update(dt.date.today().strftime("%Y-%m").encode())
    return digest.hexdigest()[:16]


def prepared_database() -> Path:
    """The directory holding the built database and its facts, built once per cache key."""
    root = Path(os.environ.get("FOBO_TRYTON_CACHE")
                or Path.home() / ".cache" / "fobo-broker" / "tryton")
    target = root / _cache_key()
    if (target / FACTS).exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    import fcntl

    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel sessions build once
        if (target / FACTS).exists():
            return target
        staging = Path(tempfile.mkdtemp(prefix="build-", dir=root))
        try:
            subprocess.run([sys.executable, __file__, "build", str(staging)], check=True,
                           capture_output=True, text=True, timeout=600)
        except subprocess.CalledProcessError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise RuntimeError(f"building the Tryton database failed:\n{exc.stderr[-4000:]}") from exc
        staging.rename(target)
        for stale in root.iterdir():  # earlier months, other trytond versions, dead builds
            if stale.is_dir() and stale != target:
                shutil.rmtree(stale, ignore_errors=True)
    return target


def prepare_in_background() -> None:
    """Start building the database now, in a thread: the build is a subprocess, so it overlaps
    with the tests that run before the first Tryton test, which then finds it built."""
    try:
        import trytond  # noqa: F401
    except ImportError:
        return

    def build() -> None:
        with contextlib.suppress(Exception):  # the first Tryton test reports what went wrong
            prepared_database()

    threading.Thread(target=build, name="tryton-build", daemon=True).start()


# --- a small independent JSON-RPC client (reads back what the connector booked) ---------------
def _encode(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    if isinstance(value, dt.datetime):
        raise TypeError("datetimes are not needed by these tests")
    if isinstance(value, dt.date):
        return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}
    raise TypeError(repr(value))


def _decode(obj: dict[str, Any]) -> Any:
    kind = obj.get("__class__")
    if kind == "Decimal":
        return Decimal(obj["decimal"])
    if kind == "date":
        return dt.date(obj["year"], obj["month"], obj["day"])
    if kind == "datetime":
        return dt.datetime(obj["year"], obj["month"], obj["day"], obj["hour"], obj["minute"],
                           obj["second"], obj["microsecond"])
    return obj


class TrytonServer:
    """A trytond process on loopback serving a copy of the prepared database."""

    def __init__(self) -> None:
        import requests
        from harness import free_port

        source = prepared_database()
        self.facts: dict[str, Any] = json.loads((source / FACTS).read_text())
        self.tmp = Path(tempfile.mkdtemp(prefix="fobo-tryton-"))
        shutil.copy(source / f"{DATABASE}.sqlite", self.tmp / f"{DATABASE}.sqlite")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database = DATABASE
        self.login, self.password = API_LOGIN, API_PASSWORD
        conf = self.tmp / "trytond.conf"
        conf.write_text(f"[database]\nuri = sqlite://\npath = {self.tmp}\n"
                        f"[web]\nlisten = 127.0.0.1:{self.port}\n")
        self.log = self.tmp / "trytond.log"
        with open(self.log, "wb") as log:
            env = {k: v for k, v in os.environ.items() if not k.startswith("TRYTON")}
            self.proc = subprocess.Popen([sys.executable, "-m", "trytond.cli", "-c", str(conf),
                                          "-d", DATABASE],
                                         stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        self.http = requests.Session()
        self._auth: str | None = None
        deadline = time.monotonic() + 60
        while True:
            try:
                self.http.post(f"{self.url}/rpc/", json={"id": 0, "method": "common.server.version",
                                                         "params": []}, timeout=2).raise_for_status()
                break
            except requests.RequestException:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    tail = self.log_tail()
                    self.stop()
                    raise RuntimeError("trytond did not start:\n" + tail) from None
                time.sleep(0.1)
        try:
            user_id, session, *_ = self._post("common.db.login",
                                              ["admin", {"password": ADMIN_PASSWORD}])
            token = base64.b64encode(f"admin:{user_id}:{session}".encode()).decode()
            self._auth = f"Session {token}"
            self.context = self.rpc("model.res.user.get_preferences", True)
        except Exception as exc:
            tail = self.log_tail()
            self.stop()
            raise RuntimeError(f"trytond answers but not as expected: {exc}\n{tail}") from exc

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def _post(self, method: str, params: list[Any]) -> Any:
        headers = {"Content-Type": "application/json"}
        if self._auth:
            headers["Authorization"] = self._auth
        body = json.dumps({"id": 1, "method": method, "params": params}, default=_encode)
        response = self.http.post(f"{self.url}/{self.database}/rpc/", data=body, headers=headers,
                                  timeout=60)
        response.raise_for_status()
        answer = json.loads(response.text, object_hook=_decode)
        if answer.get("error"):
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def rpc(self, method: str, *params: Any) -> Any:
        """Call as the administrator, with the administrator's context."""
        return self._post(method, [*params, getattr(self, "context", {})])

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=10)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- what the tests read -------------------------------------------------------------
    def sales(self, reference: str) -> list[dict[str, Any]]:
        ids = self.rpc("model.sale.sale.search", [("reference", "=", reference)], 0, None,
                       [("id", "ASC")])
        return self.rpc("model.sale.sale.read", ids, [
            "number", "reference", "state", "total_amount", "tax_amount", "untaxed_amount",
            "party", "invoices", "invoice_state", "description", "sale_date",
            "invoice_address", "shipment_address", "lines", "comment"]) if ids else []

    def connector_config(self, **extra: Any) -> dict[str, Any]:
        """The tryton connector config an integrator would enter for this database."""
        return {"url": self.url, "database": self.database, "login": API_LOGIN,
                "password": API_PASSWORD, "timeout": 30,
                "shipping_product": "FOBO-SHIP", "discount_product": "FOBO-DISC",
                "adjustment_product": "FOBO-ADJ", "payment_method": self.facts["payment_method"],
                "taxes": [{"name": "Sales Tax", "value": str(self.facts["tax"])}], **extra}

    def read(self, model: str, ids: list[int], fields: list[str]) -> list[dict[str, Any]]:
        return self.rpc(f"model.{model}.read", ids, fields)

    def search_read(self, model: str, domain: list[Any], fields: list[str]) -> list[dict[str, Any]]:
        ids = self.rpc(f"model.{model}.search", domain, 0, None, [("id", "ASC")])
        return self.read(model, ids, fields) if ids else []

    def ensure_product(self, code: str, price: Decimal = Decimal("1")) -> int:
        """A salable goods product with this code (created like an integrator would)."""
        found = self.rpc("model.product.product.search", [("code", "=", code)], 0, 1, None)
        if found:
            return found[0]
        widget = self.read("product.product", [self.facts["products"]["CK-WIDGET"]], ["template"])[0]
        template = self.read("product.template", [widget["template"]],
                             ["default_uom", "sale_uom", "account_category"])[0]
        created = self.rpc("model.product.template.create", [{
            "name": code, "code": code, "type": "goods", "salable": True, "list_price": price,
            "default_uom": template["default_uom"], "sale_uom": template["sale_uom"],
            "account_category": template["account_category"],
            "products": [("create", [{}])]}])
        return self.read("product.template", created, ["products"])[0]["products"][0]


class TrytonBackOffice:
    """The contract kit's view of the back office: sales by reference (= external id)."""

    def __init__(self, server: TrytonServer, prefix: str = "") -> None:
        self.server, self.prefix = server, prefix

    def prepare(self, order: Mapping[str, Any]) -> None:
        for line in order["lines"]:
            self.server.ensure_product(line.get("sku") or line["name"])

    def records(self, external_id: str) -> list[dict[str, Any]]:
        """Sales with their party, their Comment as the note, and what was invoiced: posted or
        paid invoices, credit notes (negative totals in Tryton) netted."""
        records = []
        for sale in self.server.sales(self.prefix + external_id):
            invoices = self.server.read("account.invoice", sale["invoices"],
                                        ["state", "total_amount"]) if sale["invoices"] else []
            records.append({
                "reference": sale["number"], "total": sale["total_amount"],
                "status": "cancelled" if sale["state"] == "cancelled" else "open",
                "state": sale["state"], "customer": sale["party"], "note": sale["comment"],
                "invoiced": sum((i["total_amount"] for i in invoices
                                 if i["state"] in ("posted", "paid")), Decimal(0))})
        return records


_SHARED: dict[str, TrytonServer] = {}


def shared_server(request: Any) -> TrytonServer:
    """One server per test session, whichever module asks first; stopped at session end."""
    import pytest
    from harness import STRICT

    try:
        import proteus  # noqa: F401
        import trytond  # noqa: F401
    except ImportError:
        message = "trytond and proteus are not installed (pip install 'trytond-sale>=8,<9' proteus)"
        if STRICT:
            pytest.fail(message + " (required in CI)")
        pytest.skip(message)
    if "server" not in _SHARED:
        server = TrytonServer()
        _SHARED["server"] = server
        request.config.add_cleanup(lambda: _SHARED.pop("server").stop())
    return _SHARED["server"]


if __name__ == "__main__" and sys.argv[1:2] == ["build"]:
    _build(Path(sys.argv[2]))
