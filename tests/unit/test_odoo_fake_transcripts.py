"""The fake Odoo answers every recorded Odoo 19 exchange as the real server did.

tests/fixtures/transcripts/odoo19/ holds 206 JSON-2 and 206 XML-RPC exchanges recorded from a
real Odoo 19.0 (its README describes each step). This module replays every recorded request, in
the order they were recorded (JSON-2 steps 1-9f, XML-RPC 1-9f, then 9g and 10 of both), against
the fake seeded like the recorded database, and requires for each: the same HTTP status and
content type, the same XML-RPC fault code, the same error name, message, arguments and context,
the same exception line ending the traceback, and the same body, value for value.

Ids and document names are the recorded database's: they are mapped to the fake's *by step*.
The first time a recorded id appears in an answer (a create, a search, a many2one) it is bound to
the id the fake answered at the same place, and every later request is rewritten with the fake's
ids; a later answer must agree with the bindings so far. Seeded records the transcripts use
before they ever appear in an answer (company 1, tax 17...) are bound through the fake's `refs`.
Names (S00022, INV/2026/00010...) and ids inside messages ("(id 57)", "User: 2") are bound the
same way; dates and times compare by shape (the server clock is not ours).
"""

from __future__ import annotations

import html
import json
import re
import urllib.request
import xmlrpc.client
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fakes.odoo import API_KEY, PASSWORD, FakeOdoo

HERE = Path(__file__).resolve().parent.parent / "fixtures" / "transcripts" / "odoo19"
USER_PASSWORD = "rec-user-password-81"
DATABASE = "heldout"

# many2one / x2many fields of the recorded requests and answers -> their comodel (Odoo's schema)
COMODELS = {
    "partner_id": "res.partner", "partner_invoice_id": "res.partner",
    "partner_shipping_id": "res.partner", "parent_id": "res.partner", "child_ids": "res.partner",
    "country_id": "res.country", "state_id": "res.country.state",
    "product_id": "product.product", "tax_ids": "account.tax", "tax_id": "account.tax",
    "taxes_id": "account.tax", "company_id": "res.company", "currency_id": "res.currency",
    "pricelist_id": "product.pricelist", "property_product_pricelist": "product.pricelist",
    "order_line": "sale.order.line", "order_id": "sale.order", "sale_order_ids": "sale.order",
    "invoice_ids": "account.move", "move_ids": "account.move", "reversed_entry_id": "account.move",
    "invoice_line_ids": "account.move.line", "sale_line_ids": "sale.order.line",
    "journal_id": "account.journal", "user_id": "res.users", "uom_id": "uom.uom",
    "group_ids": "res.groups", "payment_method_line_id": "account.payment.method.line",
    "default_partner_id": "res.partner", "default_partner_shipping_id": "res.partner",
    "allowed_company_ids": "res.company", "uid": "res.users",
}
BY_MODEL = {("ir.model.data", "res_id"): "res.groups"}
# recorded ids of seeded records that requests use before any answer showed them (README)
SEEDED = {
    ("res.company", 1): "company", ("res.company", 2): "company2",
    ("res.users", 2): "user.admin", ("res.partner", 1): "partner.company",
    ("account.tax", 1): "tax.15", ("account.tax", 17): "tax.5.75",
    ("res.country", 233): "country.US", ("res.country.state", 35): "state.NY",
    ("res.currency", 1): "currency.USD", ("res.currency", 25): "currency.JPY",
    ("product.product", 55): "product.SKU-001", ("product.product", 56): "product.SKU-002",
    ("product.product", 57): "product.SKU-003", ("uom.uom", 1): "uom.units",
    ("decimal.precision", 3): "precision.price", ("account.journal", 1): "journal.sales",
    ("account.journal", 6): "journal.bank", ("account.journal", 7): "journal.sales2",
    ("res.groups", 1): "group.user", ("ir.model.data", 5): "xmlid.group_user",
    ("account.payment.method.line", 1): "payment_method_line.manual",
}
NAME = r"(?:S\d{5}|R?INV/\d{4}/\d{5}|P[A-Z]+\d*/\d{4}/\d{5})"
TOKENS = re.compile(
    rf"(?P<name>\b{NAME}\b)"
    r"|(?P<moveid>(?<=\(id )\d+(?=\)))"
    r"|(?P<userid>(?<=User: )\d+|(?<=\(id=)\d+(?=\)))"
    r"|(?P<record>(?<=\()[a-z_]+(?:\.[a-z_]+)+\(\d+,\))"
    r"|(?P<when>\b\d{4}-\d{2}-\d{2}(?: \d{2}:\d{2}:\d{2})?\b)"
    r"|(?P<port>(?<=port )\d+)")


@dataclass
class Exchange:
    protocol: str
    index: int
    step: str
    request: dict[str, Any]
    response: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.protocol}-{self.index:03d} {self.step}"

    @property
    def phase(self) -> str:
        return self.step.split()[0]


def load(name: str, protocol: str) -> list[Exchange]:
    rows = [json.loads(line) for line in (HERE / name).read_text().splitlines() if line.strip()]
    return [Exchange(protocol, i, r["step"], r["request"], r["response"])
            for i, r in enumerate(rows)]


JSON2, XMLRPC = load("json2.jsonl", "json2"), load("xmlrpc.jsonl", "xmlrpc")


def recorded_order() -> list[Exchange]:
    """JSON-2 ran first, then XML-RPC, then 9g (the XML-RPC run made its user), then 10."""
    def part(rows: list[Exchange], phases: set[str], keep: bool) -> list[Exchange]:
        return [r for r in rows if (r.phase in phases) == keep]
    late = {"9g", "10"}
    return (part(JSON2, late, False) + part(XMLRPC, late, False)
            + [r for r in XMLRPC if r.phase == "9g"] + [r for r in JSON2 if r.phase == "9g"]
            + [r for r in JSON2 if r.phase == "10"] + [r for r in XMLRPC if r.phase == "10"])


@dataclass
class Mapper:
    """Recorded ids and names -> the fake's, bound by step; every later use must agree."""

    fake: FakeOdoo
    ids: dict[tuple[str, int], int] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for key, ref in SEEDED.items():
            self.ids[key] = self.fake.refs[ref]

    # --- recorded -> fake (requests) -------------------------------------------------------
    def id(self, model: str | None, value: Any) -> Any:
        if model is None or isinstance(value, bool) or not isinstance(value, int):
            return value
        return self.ids.get((model, value), value)

    def ids_of(self, model: str | None, values: Any) -> Any:
        if isinstance(values, list):
            return [self.id(model, v) for v in values]
        return self.id(model, values)

    def domain(self, model: str, domain: list[Any]) -> list[Any]:
        out = []
        for leaf in domain:
            if isinstance(leaf, list) and len(leaf) == 3:
                target = model if leaf[0] == "id" else COMODELS.get(leaf[0])
                out.append([leaf[0], leaf[1], self.ids_of(target, leaf[2])])
            else:
                out.append(leaf)
        return out

    def vals(self, model: str, vals: Any) -> Any:
        if isinstance(vals, list):
            return [self.vals(model, v) for v in vals]
        if not isinstance(vals, dict):
            return vals
        out = {}
        for key, value in vals.items():
            target = BY_MODEL.get((model, key)) or COMODELS.get(key)
            if target is None:
                out[key] = value
            elif isinstance(value, list):
                out[key] = [self.command(target, c) for c in value]
            else:
                out[key] = self.id(target, value)
        return out

    def command(self, model: str, command: Any) -> Any:
        if not isinstance(command, list) or not command:
            return self.id(model, command)
        op = command[0]
        if op == 0:
            return [0, 0, self.vals(model, command[2])]
        if op == 1:
            return [1, self.id(model, command[1]), self.vals(model, command[2])]
        if op in (2, 3, 4):
            return [op, self.id(model, command[1]), *command[2:]]
        if op == 6:
            return [6, 0, self.ids_of(model, command[2])]
        return command

    def context(self, context: dict[str, Any]) -> dict[str, Any]:
        out = dict(context)
        active = context.get("active_model")
        for key in ("active_ids", "active_id"):
            if key in out:
                out[key] = self.ids_of(active, out[key])
        if "allowed_company_ids" in out:
            out["allowed_company_ids"] = self.ids_of("res.company", out["allowed_company_ids"])
        return out

    def arguments(self, model: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        out = dict(kwargs)
        if "domain" in out:
            out["domain"] = self.domain(model, out["domain"])
        for key in ("vals", "vals_list"):
            if key in out:
                out[key] = self.vals(model, out[key])
        if "context" in out:
            out["context"] = self.context(out["context"])
        return out

    # --- fake answers against recorded ones (binding as they come) ----------------------------
    def bind(self, model: str, recorded: int, fake: Any, where: str) -> None:
        if not isinstance(fake, int) or isinstance(fake, bool):
            self.problems.append(f"{where}: {model} id {recorded} answered as {fake!r}")
            return
        known = self.ids.get((model, recorded))
        if known is None:
            taken = [r for (m, r), f in self.ids.items() if m == model and f == fake]
            if taken and taken[0] != recorded:
                self.problems.append(f"{where}: the fake's {model} {fake} is already recorded "
                                     f"{taken[0]}, here {recorded}")
            self.ids[(model, recorded)] = fake
        elif known != fake:
            self.problems.append(f"{where}: {model} {recorded} is the fake's {known}, answered "
                                 f"{fake}")

    def text(self, recorded: str, fake: Any, where: str) -> None:
        """Same text once names, ids in messages and dates are bound by position."""
        if not isinstance(fake, str):
            self.problems.append(f"{where}: expected text {recorded!r}, got {fake!r}")
            return
        rec_parts, fake_parts = TOKENS.split(recorded), TOKENS.split(fake)
        rec_tokens = list(TOKENS.finditer(recorded))
        fake_tokens = list(TOKENS.finditer(fake))
        literal = [p for i, p in enumerate(rec_parts) if i % (TOKENS.groups + 1) == 0]
        fake_literal = [p for i, p in enumerate(fake_parts) if i % (TOKENS.groups + 1) == 0]
        if literal != fake_literal or len(rec_tokens) != len(fake_tokens):
            self.problems.append(f"{where}: text differs:\n  recorded {recorded!r}\n  fake     "
                                 f"{fake!r}")
            return
        for rec, got in zip(rec_tokens, fake_tokens, strict=True):
            kind = rec.lastgroup
            if kind != got.lastgroup:
                self.problems.append(f"{where}: {rec.group()!r} vs {got.group()!r}")
            elif kind == "name":
                known = self.names.setdefault(rec.group(), got.group())
                if known != got.group():
                    self.problems.append(f"{where}: {rec.group()} is the fake's {known}, "
                                         f"answered {got.group()}")
            elif kind == "moveid":
                self.bind("account.move", int(rec.group()), int(got.group()), where)
            elif kind == "userid":
                self.bind("res.users", int(rec.group()), int(got.group()), where)
            elif kind == "record":
                model, rid = rec.group()[:-2].split("(")
                fake_model, fake_rid = got.group()[:-2].split("(")
                if model != fake_model:
                    self.problems.append(f"{where}: {rec.group()} vs {got.group()}")
                elif int(rid) != 999999 or int(fake_rid) != 999999:
                    self.bind(model, int(rid), int(fake_rid), where)

    def value(self, recorded: Any, fake: Any, where: str, model: str | None = None,
              comodel: str | None = None) -> None:
        """Compare a recorded answer with the fake's; `model` for rows, `comodel` for a field."""
        if isinstance(recorded, dict):
            self.mapping(recorded, fake, where, model)
        elif isinstance(recorded, list):
            if not isinstance(fake, list) or len(fake) != len(recorded):
                self.problems.append(f"{where}: expected {recorded!r}, got {fake!r}")
                return
            if comodel and len(recorded) == 2 and isinstance(recorded[0], int) and \
                    isinstance(recorded[1], str) and not isinstance(recorded[0], bool):
                self.bind(comodel, recorded[0], fake[0], where)   # many2one [id, name]
                self.text(recorded[1], fake[1], where)
                return
            for i, (rec, got) in enumerate(zip(recorded, fake, strict=True)):
                if comodel and isinstance(rec, int) and not isinstance(rec, bool):
                    self.bind(comodel, rec, got, f"{where}[{i}]")
                else:
                    self.value(rec, got, f"{where}[{i}]", model, comodel)
        elif isinstance(recorded, bool) or recorded is None:
            if fake is not recorded and not (recorded is None and fake is None):
                self.problems.append(f"{where}: expected {recorded!r}, got {fake!r}")
        elif isinstance(recorded, int | float):
            if comodel and isinstance(recorded, int):
                self.bind(comodel, recorded, fake, where)
            elif isinstance(fake, bool) or not isinstance(fake, int | float) or fake != recorded:
                self.problems.append(f"{where}: expected {recorded!r}, got {fake!r}")
        elif isinstance(recorded, str):
            self.text(recorded, fake, where)
        else:
            self.problems.append(f"{where}: cannot compare {recorded!r}")

    def mapping(self, recorded: dict[str, Any], fake: Any, where: str, model: str | None) -> None:
        if not isinstance(fake, dict):
            self.problems.append(f"{where}: expected an object, got {fake!r}")
            return
        if set(recorded) != set(fake):
            self.problems.append(f"{where}: keys {sorted(recorded)} vs {sorted(fake)}")
            return
        action = str(recorded.get("type", "")).startswith("ir.actions")
        for key, rec in recorded.items():
            got, at = fake[key], f"{where}.{key}"
            if action and key == "res_id" and rec:
                self.bind(str(recorded["res_model"]), rec, got, at)
            elif action and key in ("id", "views", "view_id", "search_view_id"):
                self.value(rec, got, at)
            elif key == "context" and isinstance(rec, dict):
                self.mapping(rec, got, at, None)
            elif key == "suggested_company":
                self.mapping(rec, got, at, "res.company")
            elif key == "id" and model:
                self.bind(model, rec, got, at)
            else:
                target = (BY_MODEL.get((model or "", key)) or COMODELS.get(key)) \
                    if not action else None
                if key == "move_ids" and isinstance(rec, list) and rec and isinstance(rec[0], list):
                    self.value(rec[0][:2], got[0][:2], at)     # default_get's [6, 0, ids]
                    self.value(rec[0][2], got[0][2], at, comodel="account.move")
                else:
                    self.value(rec, got, at, None, target)


# --- transport ---------------------------------------------------------------------------
def http(fake: FakeOdoo, method: str, path: str, body: bytes | None,
         headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(fake.url + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def secrets_in(text: str, *, xml: bool) -> str:
    pairs = {"<API_KEY>": API_KEY, "<PASSWORD>": PASSWORD, "<USER_PASSWORD>": USER_PASSWORD}
    for placeholder, value in pairs.items():
        text = text.replace(html.escape(placeholder) if xml else placeholder, value)
        text = text.replace(placeholder, value)
    return text


def send_json2(fake: FakeOdoo, mapper: Mapper, ex: Exchange) -> tuple[int, dict[str, str], bytes]:
    req = ex.request
    headers = {k: secrets_in(v, xml=False) for k, v in req["headers"].items()}
    if "cookie" in headers:
        headers["cookie"] = headers["cookie"].replace(
            "<SESSION_ID>", fake.session_for("rec-nosales-174928", USER_PASSWORD))
    body: bytes | None = None
    if isinstance(req.get("body"), dict):
        parts = req["path"].split("/")
        model = parts[3] if len(parts) > 3 else ""
        data = mapper.arguments(model, dict(req["body"]))
        if "ids" in data:
            data["ids"] = mapper.ids_of(model, data["ids"])
        body = json.dumps(data).encode()
    elif isinstance(req.get("body"), str):
        body = req["body"].encode()
    return http(fake, req["method"], req["path"], body, headers)


def send_xmlrpc(fake: FakeOdoo, mapper: Mapper, ex: Exchange) -> tuple[int, dict[str, str], bytes]:
    text = secrets_in(ex.request["body"], xml=True)
    params, method = xmlrpc.client.loads(text.encode())
    args = list(params)
    if method == "execute_kw":
        model, name = args[3], args[4]
        args[1] = mapper.id("res.users", args[1])
        positional = list(args[5]) if len(args) > 5 else []
        if positional and name == "create":
            positional[0] = mapper.vals(model, positional[0])
        elif positional:
            positional[0] = mapper.ids_of(model, positional[0])
        args[5] = positional
        if len(args) > 6:
            args[6] = mapper.arguments(model, dict(args[6]))
    body = xmlrpc.client.dumps(tuple(args), methodname=method, allow_none=True).encode()
    return http(fake, "POST", ex.request["path"], body, {"Content-Type": "text/xml"})


# --- comparing ---------------------------------------------------------------------------
def exception_line(debug: str, name: str) -> str:
    """The traceback's last exception line(s), from the exception's class name on."""
    short = name.removeprefix("builtins.")
    at = debug.rfind(f"\n{short}: ")
    return debug[at + 1:] if at >= 0 else debug


def fault_of(text: str) -> tuple[int, str] | None:
    """(code, string) of a recorded fault; read leniently (the recorder left raw <odoo>)."""
    found = re.search(r"<name>faultCode</name>\s*<value><int>(\d+)</int></value>.*?"
                      r"<name>faultString</name>\s*<value><string>(.*?)</string></value>",
                      text, re.S)
    return (int(found.group(1)), html.unescape(found.group(2))) if found else None


def last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def row_model(ex: Exchange) -> str | None:
    """The model whose records the answer lists (reads and searches)."""
    if ex.protocol == "json2":
        parts = ex.request["path"].split("/")
        return parts[3] if len(parts) > 4 else None
    params, method = xmlrpc.client.loads(secrets_in(ex.request["body"], xml=True).encode())
    return params[3] if method == "execute_kw" else None


def compare(mapper: Mapper, ex: Exchange, status: int, headers: dict[str, str],
            data: bytes) -> None:
    want = ex.response
    where = ex.label
    if status != want["status"]:
        mapper.problems.append(f"{where}: status {status}, recorded {want['status']}: "
                               f"{data[:300]!r}")
        return
    recorded_type = want["headers"].get("content-type", "").split(";")[0]
    if headers.get("content-type", "").split(";")[0] != recorded_type:
        mapper.problems.append(f"{where}: content type {headers.get('content-type')}, recorded "
                               f"{recorded_type}")
        return
    if "www-authenticate" in want["headers"] and \
            headers.get("www-authenticate") != want["headers"]["www-authenticate"]:
        mapper.problems.append(f"{where}: WWW-Authenticate {headers.get('www-authenticate')!r}")
    body = want["body"]
    text = data.decode()
    if recorded_type == "text/html":
        if text != body:
            mapper.problems.append(f"{where}: page differs:\n{body!r}\n{text!r}")
        return
    model = row_model(ex)
    if ex.protocol == "json2":
        got = json.loads(text)
        if isinstance(body, dict) and status >= 400:
            for key in ("name", "message", "arguments", "context"):
                mapper.value(body.get(key), got.get(key), f"{where} {key}")
            if set(got) != set(body):
                mapper.problems.append(f"{where}: error keys {sorted(got)}")
            mapper.text(exception_line(body["debug"], body["name"]),
                        exception_line(got.get("debug", ""), body["name"]), f"{where} debug")
            return
        compare_result(mapper, ex, body, got, model)
        return
    fault = fault_of(body)
    try:
        got = xmlrpc.client.loads(data)[0][0]
    except xmlrpc.client.Fault as exc:
        if fault is None:
            mapper.problems.append(f"{where}: fault {exc.faultCode} {exc.faultString[-300:]!r}")
            return
        if exc.faultCode != fault[0]:
            mapper.problems.append(f"{where}: fault {exc.faultCode}, recorded {fault[0]}: "
                                   f"{exc.faultString[-300:]!r}")
        elif fault[0] == 1:
            mapper.text(last_line(fault[1]), last_line(exc.faultString), f"{where} fault")
        else:
            mapper.text(fault[1], exc.faultString, f"{where} fault")
        return
    if fault is not None:
        mapper.problems.append(f"{where}: answered {got!r}, recorded fault {fault}")
        return
    compare_result(mapper, ex, xmlrpc.client.loads(body.encode())[0][0], got, model)


def compare_result(mapper: Mapper, ex: Exchange, recorded: Any, got: Any, model: str | None
                   ) -> None:
    if ex.protocol == "json2":
        method = ex.request["path"].rsplit("/", 1)[-1]
    else:
        params, method = xmlrpc.client.loads(secrets_in(ex.request["body"], xml=True).encode())
        method = params[4] if method == "execute_kw" else method
    if method in ("authenticate", "login"):
        mapper.value(recorded, got, ex.label, comodel="res.users")
    elif method == "create" and model:
        mapper.value(recorded, got, ex.label, comodel=model)
    else:
        mapper.value(recorded, got, ex.label, model)


# --- the replay --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def replay() -> Iterator[dict[str, list[str]]]:
    """Every exchange replayed once, in recorded order: label -> what differed."""
    found: dict[str, list[str]] = {}
    with FakeOdoo(version=19, data="recorded", databases=(DATABASE,)) as fake:
        mapper = Mapper(fake)
        for ex in recorded_order():
            before = len(mapper.problems)
            try:
                sender = send_json2 if ex.protocol == "json2" else send_xmlrpc
                compare(mapper, ex, *sender(fake, mapper, ex))
            except Exception as exc:  # a crash of one step is that step's failure
                mapper.problems.append(f"{ex.label}: {type(exc).__name__}: {exc}")
            found[ex.label] = mapper.problems[before:]
        yield found


@pytest.mark.parametrize("exchange", JSON2 + XMLRPC, ids=lambda ex: ex.label)
def test_fake_answers_the_recorded_exchange_as_odoo_19_did(
        replay: dict[str, list[str]], exchange: Exchange) -> None:
    problems = replay[exchange.label]
    assert not problems, "\n".join(problems)


def test_every_recorded_exchange_was_replayed(replay: dict[str, list[str]]) -> None:
    assert len(JSON2) == len(XMLRPC) == 206
    assert set(replay) == {ex.label for ex in JSON2 + XMLRPC}


# --- what a live Odoo 19 answered where the transcripts are silent (checked under /tmp) -------
def json2_call(fake: FakeOdoo, path: str, body: dict[str, Any]) -> tuple[int, str, Any]:
    status, headers, data = http(fake, "POST", path, json.dumps(body).encode(), {
        "Content-Type": "application/json", "Authorization": f"bearer {API_KEY}"})
    kind = headers.get("content-type", "").split(";")[0]
    return status, kind, json.loads(data) if kind == "application/json" else data.decode()


def test_fake_routes_paths_as_the_live_odoo_19_did() -> None:
    with FakeOdoo(version=19, data="recorded") as fake:
        for path in ("/web/json/2/res.users/context_get", "/fobo/json/2/res.users/context_get",
                     "/xmlrpc/2/json/2/res.users/context_get"):
            status, kind, _ = json2_call(fake, path, {})
            assert (status, kind) == (404, "text/html"), path   # Odoo's 404 web page
        status, kind, body = json2_call(fake, "/json/2/json/2/res.users/context_get", {})
        assert (status, body["message"]) == (404, "Did you mean POST /json/2/<model>/<method>?")
        status, kind, body = json2_call(fake, "/json/2/res.users/context_get/", {})
        assert status == 200 and body["uid"] == fake.uid
        status, kind, body = json2_call(fake, "/odoo/xmlrpc/2/common", {})
        assert (status, kind) == (400, "text/html") and "invalid CSRF token" in body


def test_fake_keeps_notes_and_company_rules_as_the_live_odoo_19_did() -> None:
    with FakeOdoo(version=19, data="recorded", auto_lock=True) as fake:
        partner = fake.add_partner("Probe", "probe@example.com")
        product, foreign_tax = fake.refs["product.SKU-001"], fake.refs["tax.5.75"]
        status, _, body = json2_call(fake, "/json/2/sale.order/create", {"vals_list": {
            "partner_id": partner, "order_line": [[0, 0, {
                "product_id": product, "product_uom_qty": 1, "tax_ids": [[6, 0, [foreign_tax]]]}]]}})
        assert status == 422 and "no company crossover is allowed" in body["message"]
        assert "\u201cTaxes\u201d (tax_ids: '5.75%') belongs to another company" in body["message"]
        status, _, [so] = json2_call(fake, "/json/2/sale.order/create", {"vals_list": {
            "partner_id": partner, "note": "plain text\nsecond line & more",
            "order_line": [[0, 0, {"product_id": product, "product_uom_qty": 1}]]}})
        read = json2_call(fake, "/json/2/sale.order/read", {"ids": [so], "fields": ["note"]})[2]
        assert read[0]["note"] == "<p>plain text\nsecond line &amp; more</p>"
        json2_call(fake, "/json/2/sale.order/action_confirm", {"ids": [so]})  # auto-locked
        for note in ("<p>locked note</p>", False):
            assert json2_call(fake, "/json/2/sale.order/write", {
                "ids": [so], "vals": {"note": note}})[0] == 200
        json2_call(fake, "/json/2/sale.order/action_unlock", {"ids": [so]})
        json2_call(fake, "/json/2/sale.order/action_cancel", {"ids": [so]})
        assert json2_call(fake, "/json/2/sale.order/write", {
            "ids": [so], "vals": {"note": "cancelled note"}})[0] == 200
        read = json2_call(fake, "/json/2/sale.order/read", {"ids": [so],
                                                             "fields": ["note", "state"]})[2]
        assert read[0] == {"id": so, "note": "<p>cancelled note</p>", "state": "cancel"}
