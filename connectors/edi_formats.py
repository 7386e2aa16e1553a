"""Render a canonical order as an EDI interchange or CSV file: pure functions, same input → same bytes.

Three formats, each following its published standard:

EDIFACT ORDERS D.96A — UN/EDIFACT purchase order message
    https://service.unece.org/trade/untdid/d96a/trmd/orders_c.htm (segment table; also
    https://www.stedi.com/edifact/D96A/messages/ORDERS), syntax rules ISO 9735 (UNA service string
    advice, release character "?"), data elements from the D.96A directory
    (1225 message function: 9 original, 5 replace, 1 cancellation —
    https://stedi.com/edi/edifact/D96A/elements/1225; 5025 amount qualifiers 79 line items total,
    86 message total, 124 tax, 203 line item, 23 charge, 204 allowance —
    https://stedi.com/edi/edifact/D96A/elements/5025, and the way translators read them back:
    https://www.ibm.com/docs/en/SSRJDU/business_transaction_intelligence/QA/bti_qa_order_edifact.html).
    Segments written, in table order:
    UNA UNB UNH BGM DTM FTX [SG1 RFF] [SG2 NAD CTA COM] [SG7 CUX] [SG19 ALC MOA TAX MOA]
    [SG25 LIN IMD QTY MOA SG28 PRI SG33 TAX MOA SG38 ALC MOA] UNS MOA CNT UNT UNZ.

ANSI ASC X12 850 Purchase Order (004010 or 005010)
    ISA/GS envelopes (ISA is fixed width, 106 characters with its terminator), BEG (353 purpose:
    00 original, 05 replace, 01 cancellation), CUR, REF, SAC loop (SAC05 is N2: two implied
    decimals — https://stedi.com/edi/x12-004010/segment/SAC), the note in an N9 loop (N9*L1,
    "letters or notes", then MSG; heading positions 295/300, before the N1 loop at 310 —
    https://www.stedi.com/edi/x12-004010/850), N1/N3/N4/PER, PO1 loop (PO1, PID,
    SAC, TXI), CTT with AMT*TT (the 850's summary AMT01 is TT —
    https://stedi.com/edi/x12-002040/segment/AMT), SE/GE/IEA; transaction set layout:
    https://www.stedi.com/edi/x12-004010/850. SAC02 (element 1300): G830 shipping and handling,
    H850 tax (the shipping's tax, which 850 has no TXI for in the heading), C310 discount.

CSV — one row per order line after a header row (RFC 4180 quoting and CRLF line ends), order
    totals repeated on every row so each row stands alone.

Limits, on purpose: element lengths are the directories' where a value can be split (NAD names
and streets, IMD, FTX) or shortened deterministically (BGM 1004, BEG03 — head plus a hash); other
over-long values pass unchanged rather than being cut. X12 has no release character, so its
delimiters are replaced by spaces in text; N4 carries a region only when it is a 2-letter code;
TXI carries the tax amount without its rate (element 954's percent form differs between releases).
UNOC (Latin-1) text is transliterated ("Š" → "S"), UNOW (UTF-8) keeps everything.

Money stays Decimal: amounts are quantized to the currency's minor units (ISO 4217), unit prices
and quantities are written with the precision the order carries. Nothing here reads a clock or
a random source, so a retry renders identical bytes (control numbers come from a hash).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

FUNCTIONS = ("new", "replace", "cancel")
EDIFACT_FUNCTION = {"new": "9", "replace": "5", "cancel": "1"}     # data element 1225
X12_PURPOSE = {"new": "00", "replace": "05", "cancel": "01"}        # data element 353
NO_DATE = datetime(1970, 1, 1, tzinfo=UTC)
CSV_COLUMNS = (
    "external_id", "number", "action", "status", "placed_at", "updated_at", "currency",
    "customer_id", "customer_email", "customer_name", "customer_phone",
    "billing_name", "billing_company", "billing_line1", "billing_line2", "billing_city",
    "billing_region", "billing_postal_code", "billing_country",
    "shipping_name", "shipping_company", "shipping_line1", "shipping_line2", "shipping_city",
    "shipping_region", "shipping_postal_code", "shipping_country",
    "line_no", "line_external_id", "sku", "item_number", "name", "quantity", "unit_price",
    "line_discount", "line_tax", "line_amount",
    "subtotal", "discount", "shipping", "shipping_tax", "tax", "total", "shipping_method", "note",
)


class RenderError(ValueError):
    """The order cannot be expressed in this format as configured; the message says why."""


@dataclass(frozen=True)
class Party:
    """The trading partners named in the envelope (UNB S002/S003, ISA05-08 and GS02/03)."""

    sender_id: str = ""
    sender_qualifier: str | None = None
    receiver_id: str = ""
    receiver_qualifier: str | None = None
    gs_sender: str | None = None
    gs_receiver: str | None = None


@dataclass(frozen=True)
class Message:
    """Everything a renderer needs: the loaded order plus what the connector resolved for it."""

    order: Mapping[str, Any]
    function: str                       # new | replace | cancel
    places: int                         # minor units of the order's currency
    customer_id: str | None = None
    customer_agency: str = "92"         # 91 assigned by the seller (a link), 92 by the buyer
    item_numbers: Mapping[str, str] = field(default_factory=dict)   # sku → partner item number
    tax_codes: Mapping[str, str] = field(default_factory=dict)      # tax name → tax type code
    shipping_codes: Mapping[str, str] = field(default_factory=dict)  # method → partner code

    @property
    def prepared(self) -> datetime:
        """The version's own time, so the envelope date is the same on every retry."""
        when = self.order.get("updated_at") or self.order.get("placed_at") or NO_DATE
        return when.astimezone(UTC)

    def control(self, modulus: int) -> int:
        """A control number in 1..modulus-1 from the order version and message function."""
        seed = f"{order_digest(self.order)}:{self.function}".encode()
        return int(hashlib.sha256(seed).hexdigest(), 16) % (modulus - 1) + 1


# --- shared arithmetic ---------------------------------------------------------------------

def order_digest(order: Mapping[str, Any]) -> str:
    """sha256 of the loaded order: equal versions (same content) give equal digests."""
    text = json.dumps(order, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def document_number(external_id: str, limit: int) -> str:
    """The order's id as the document number (BGM 1004 an..35, BEG03 an..22); a longer id is
    shortened deterministically to its head and a hash, so replacements still match it."""
    if len(external_id) <= limit:
        return external_id
    return external_id[:limit - 9] + "." + hashlib.sha256(external_id.encode()).hexdigest()[:8]


def money(value: Any, places: int) -> Decimal:
    """An amount in the currency's minor units (half up, as receipts round)."""
    return Decimal(value or 0).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def plain(value: Decimal) -> str:
    """Fixed-point text without exponent and without trailing zeros ("5.00" → "5")."""
    return format(value.normalize() if value else Decimal(0), "f")


@dataclass(frozen=True)
class Line:
    no: int
    sku: str | None
    item_number: str | None
    name: str
    quantity: Decimal
    unit_price: Decimal
    discount: Decimal
    amount: Decimal                     # quantity x unit price - discount, in minor units
    taxes: tuple[tuple[str, str, Decimal | None, Decimal], ...]  # (name, code, rate, amount)
    external_id: str | None


def lines(msg: Message) -> list[Line]:
    out = []
    for no, line in enumerate(msg.order["lines"], start=1):
        sku = line.get("sku") or None
        quantity, price = Decimal(line["quantity"]), Decimal(line["unit_price"])
        discount = money(line.get("discount"), msg.places)
        amount = money(quantity * price - discount, msg.places)
        taxes = tuple((t.get("name") or "", msg.tax_codes.get(t.get("name") or "", ""),
                       t.get("rate"), money(t["amount"], msg.places)) for t in line.get("taxes") or [])
        out.append(Line(no, sku, msg.item_numbers.get(sku or "", sku), line.get("name") or sku or "",
                        quantity, price, discount, amount, taxes, line.get("external_id")))
    return out


def totals(msg: Message, items: Sequence[Line]) -> dict[str, Decimal]:
    """The order's own totals (never recomputed: the file books what the channel charged)."""
    given = msg.order.get("totals") or {}
    p = msg.places
    shipping = sum((money(s["amount"], p) for s in msg.order.get("shipping") or []), Decimal(0))
    discounts = sum((money(d["amount"], p) for d in msg.order.get("discounts") or []), Decimal(0))
    line_tax = sum((t[3] for item in items for t in item.taxes), Decimal(0))
    shipping_tax = sum((money(t["amount"], p) for s in msg.order.get("shipping") or []
                        for t in s.get("taxes") or []), Decimal(0))
    return {
        "subtotal": money(given.get("subtotal") if given.get("subtotal") is not None
                          else sum((i.amount for i in items), Decimal(0)), p),
        "discount": money(given["discount"] if given.get("discount") is not None else discounts, p),
        "shipping": money(given["shipping"] if given.get("shipping") is not None else shipping, p),
        "tax": money(given["tax"] if given.get("tax") is not None else line_tax + shipping_tax, p),
        "shipping_tax": money(shipping_tax, p),
        "total": money(given["total"], p),
    }


def _name(customer: Mapping[str, Any]) -> str:
    return " ".join(filter(None, (customer.get("first_name"), customer.get("last_name"))))


def _chunks(text: str, size: int, count: int | None = None) -> list[str]:
    parts = [text[i:i + size] for i in range(0, len(text), size)] or [""]
    return parts[:count] if count else parts


# --- EDIFACT ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class EdifactSyntax:
    """UNOC (ISO 8859-1, syntax 3) or UNOW (UTF-8, syntax 4); ISO 9735 service characters."""

    identifier: str = "UNOC"

    @property
    def version(self) -> str:
        return "4" if self.identifier == "UNOW" else "3"

    @property
    def una(self) -> str:
        # component, element, decimal mark, release, repetition (v4) / reserved (v3), terminator
        return "UNA:+.?" + ("*" if self.version == "4" else " ") + "'"

    @property
    def encoding(self) -> str:
        return "utf-8" if self.identifier == "UNOW" else "iso-8859-1"

    def escape(self, value: Any) -> str:
        """Text fit for the repertoire, with ? before each service character (ISO 9735 §7)."""
        text = _printable(str(value))
        if self.identifier != "UNOW":
            text = _fit(text, lambda c: ord(c) < 256)
        specials = "?+:'" + ("*" if self.version == "4" else "")
        return "".join("?" + c if c in specials else c for c in text)


def _printable(text: str) -> str:
    """Control characters (line breaks, tabs) become single spaces; ends trimmed."""
    return " ".join("".join(c if unicodedata.category(c)[0] != "C" else " " for c in text).split())


# Latin letters without a Unicode decomposition, spelled as ISO/IEC 8859 keyboards type them.
_SPELLED = {"Ł": "L", "ł": "l", "Đ": "D", "đ": "d", "Ð": "D", "ð": "d", "Ħ": "H", "ħ": "h",
            "\u0131": "i", "Œ": "OE", "œ": "oe", "Æ": "AE", "æ": "ae", "Ø": "O", "ø": "o", "ß": "ss",
            "Þ": "Th", "þ": "th"}


def _fit(text: str, allowed: Any) -> str:
    """Transliterate what the character set lacks ("Š" → "S", "Ł" → "L"); "?" where nothing fits."""
    out = []
    for char in text:
        if allowed(char):
            out.append(char)
            continue
        spelled = _SPELLED.get(char, char)
        base = "".join(c for c in unicodedata.normalize("NFKD", spelled)
                       if allowed(c) and not unicodedata.combining(c))
        out.append(base or "?")
    return "".join(out)


def render_edifact(msg: Message, party: Party, *, syntax: str = "UNOC",
                   association: str | None = None, test: bool = False,
                   item_qualifier: str = "SA") -> bytes:
    """An interchange holding one ORDERS D.96A message.

    Raises: RenderError when the order cannot be expressed.
    """
    s = EdifactSyntax(syntax)
    order, p = msg.order, msg.places
    items = lines(msg)
    sums = totals(msg, items)
    segments: list[list[Any]] = []

    def seg(tag: str, *elements: Any) -> None:
        segments.append([tag, *elements])

    seg("BGM", "220", document_number(order["external_id"], 35), EDIFACT_FUNCTION[msg.function])
    placed = order.get("placed_at") or msg.prepared
    seg("DTM", ["137", placed.astimezone(UTC).strftime("%Y%m%d%H%M"), "203"])
    note = _printable(order.get("note") or "")
    if note:
        for group in _batched(_chunks(note, 70), 5):  # FTX C108: 5 x an..70
            seg("FTX", "AAI", "", "", group)
    if order.get("number"):
        seg("RFF", ["CR", order["number"]])
    customer = order.get("customer") or {}
    billing = order.get("billing_address") or {}
    party_id = [msg.customer_id, "", msg.customer_agency] if msg.customer_id else ""
    seg("NAD", "BY", party_id, "", *_nad_address(billing or {"name": _name(customer)}))
    contact = _name(customer) or billing.get("name")
    if contact or customer.get("email") or customer.get("phone"):
        seg("CTA", "OC", ["", contact or ""])
        if customer.get("email"):
            seg("COM", [customer["email"], "EM"])
        if customer.get("phone"):
            seg("COM", [customer["phone"], "TE"])
    shipping_address = order.get("shipping_address")
    if shipping_address:
        seg("NAD", "DP", "", "", *_nad_address(shipping_address))
    seg("CUX", ["2", order["currency"], "9"])
    for ship in order.get("shipping") or []:  # SG19: charges (ALC C) with their taxes (SG24)
        method = ship.get("method") or "shipping"
        seg("ALC", "C", "", "", "", ["FC", "", "", msg.shipping_codes.get(method, method)])
        seg("MOA", ["23", money(ship["amount"], p)])
        for tax in ship.get("taxes") or []:
            name = tax.get("name") or ""
            _edifact_tax(seg, msg.tax_codes.get(name, ""), name, tax.get("rate"),
                         money(tax["amount"], p))
    for disc in order.get("discounts") or []:
        seg("ALC", "A", disc.get("code") or "", "", "", ["DI"])
        seg("MOA", ["204", money(disc["amount"], p)])
    for item in items:
        seg("LIN", item.no, "", [item.item_number, item_qualifier] if item.item_number else "")
        for pair in _batched(_chunks(_printable(item.name), 35), 2):  # C273 7008: 2 x an..35
            seg("IMD", "F", "", ["", "", "", *pair])
        seg("QTY", ["21", plain(item.quantity)])
        seg("MOA", ["203", item.amount])
        seg("PRI", ["AAB", plain(item.unit_price)])  # gross price; the discount follows in SG38
        for name, code, rate, amount in item.taxes:
            _edifact_tax(seg, code, name, rate, amount)
        if item.discount:
            seg("ALC", "A", "", "", "", ["DI"])
            seg("MOA", ["204", item.discount])
    seg("UNS", "S")
    seg("MOA", ["79", sums["subtotal"]])
    seg("MOA", ["124", sums["tax"]])
    seg("MOA", ["86", sums["total"]])
    seg("CNT", ["2", len(items)])

    control = msg.control(10 ** 14)
    header = [syntax, s.version]
    sender = [party.sender_id, party.sender_qualifier] if party.sender_qualifier else party.sender_id
    receiver = ([party.receiver_id, party.receiver_qualifier] if party.receiver_qualifier
                else party.receiver_id)
    date = msg.prepared.strftime("%Y%m%d" if s.version == "4" else "%y%m%d")
    unb = ["UNB", header, sender, receiver, [date, msg.prepared.strftime("%H%M")], control]
    if test:
        unb += ["", "", "", "", "", "1"]  # 0035 test indicator is UNB's 11th element
    message_type = ["ORDERS", "D", "96A", "UN", *([association] if association else [])]
    body = [["UNH", "1", message_type], *segments]
    body.append(["UNT", len(body) + 1, "1"])
    out = [s.una, *(_edifact_segment(s, x) for x in [unb, *body, ["UNZ", 1, control]])]
    return "".join(out).encode(s.encoding)


def _edifact_tax(seg: Any, code: str, name: str, rate: Decimal | None, amount: Decimal) -> None:
    """SG33/SG24: TAX (7 = tax; C241 type code and name; C243 rate in percent) and its MOA 124."""
    seg("TAX", "7", [code, "", "", name], "", "",
        ["", "", "", plain(rate * 100)] if rate is not None else "")
    seg("MOA", ["124", amount])


def _nad_address(address: Mapping[str, Any]) -> list[Any]:
    """C080 party name (5 x an..35), C059 street (4 x an..35), city, region, postcode, country."""
    name = " ".join(filter(None, (address.get("name"), address.get("company"))))
    street = ", ".join(filter(None, (address.get("line1"), address.get("line2"))))
    return [_chunks(_printable(name), 35, 5), _chunks(_printable(street), 35, 4),
            address.get("city") or "", address.get("region") or "",
            address.get("postal_code") or "", address.get("country") or ""]


def _edifact_segment(s: EdifactSyntax, parts: list[Any]) -> str:
    tag, *elements = parts
    texts = []
    for element in elements:
        components = [_value(s, c) for c in (element if isinstance(element, list | tuple)
                                              else [element])]
        while components and components[-1] == "":
            components.pop()  # trailing empty components are omitted, with their separators
        texts.append(":".join(components))
    while texts and texts[-1] == "":
        texts.pop()  # ISO 9735: trailing empty data elements are omitted
    return "+".join([tag, *texts]) + "'"


def _value(s: EdifactSyntax, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    return s.escape(value)


def _batched(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


# --- X12 -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class X12Syntax:
    version: str = "004010"  # or 005010
    element: str = "*"
    component: str = ">"
    terminator: str = "~"
    repetition: str = "^"

    @property
    def separators(self) -> str:
        extra = self.repetition if self.version >= "005010" else ""
        return self.element + self.component + self.terminator + extra

    def clean(self, value: Any) -> str:
        """ASCII text without any delimiter (X12 has no release character)."""
        text = _fit(_printable(str(value)), lambda c: 32 <= ord(c) < 127)
        for char in self.separators:
            text = text.replace(char, " ")
        return " ".join(text.split())


def render_x12(msg: Message, party: Party, *, version: str = "004010", test: bool = False,
               item_qualifier: str = "SK", tax_type: str = "TX") -> bytes:
    """An interchange with one functional group (PO) holding one 850 transaction set.

    Raises: RenderError when the order cannot be expressed (e.g. an amount with more than the
    two decimals SAC05 carries, or an envelope id longer than ISA allows).
    """
    x = X12Syntax(version)
    order, p = msg.order, msg.places
    items = lines(msg)
    sums = totals(msg, items)
    body: list[list[Any]] = []

    def seg(tag: str, *elements: Any) -> None:
        body.append([tag, *elements])

    placed = (order.get("placed_at") or msg.prepared).astimezone(UTC)
    seg("BEG", X12_PURPOSE[msg.function], "SA", document_number(order["external_id"], 22), "",
        placed.strftime("%Y%m%d"))
    seg("CUR", "BY", order["currency"])
    if order.get("number"):
        seg("REF", "CO", str(order["number"])[:30])
    for ship in order.get("shipping") or []:
        method = ship.get("method") or "shipping"
        seg("SAC", "C", "G830", "", "", _n2(ship["amount"], p, order), *[""] * 9,
            msg.shipping_codes.get(method, method))
        for tax in ship.get("taxes") or []:
            seg("SAC", "C", "H850", "", "", _n2(tax["amount"], p, order), *[""] * 9,
                f"tax on shipping: {tax.get('name') or ''}".strip())
    for disc in order.get("discounts") or []:
        seg("SAC", "A", "C310", "", "", _n2(disc["amount"], p, order), *[""] * 9,
            disc.get("code") or "discount")
    note = x12_note(order.get("note"))
    if note:  # N9 loop (N9 then MSG, each MSG01 an..264) comes before the N1 loop
        seg("N9", "L1", "NOTES")
        for text in note:
            seg("MSG", text)
    customer = order.get("customer") or {}
    billing = order.get("billing_address") or {"name": _name(customer)}
    _n1(seg, "BT", billing, msg.customer_id, "91" if msg.customer_agency == "91" else "92")
    contact = _name(customer) or billing.get("name") or ""
    per = ["PER", "IC", contact]
    for value, qualifier in ((customer.get("email"), "EM"), (customer.get("phone"), "TE")):
        if value:
            per += [qualifier, value]
    if len(per) > 3:
        seg(*per)
    if order.get("shipping_address"):
        _n1(seg, "ST", order["shipping_address"], None, "")
    for item in items:
        seg("PO1", item.no, plain(item.quantity), "EA", plain(item.unit_price), "",
            *([item_qualifier, item.item_number] if item.item_number else []))
        seg("PID", "F", "", "", "", item.name[:80])
        if item.discount:
            seg("SAC", "A", "C310", "", "", _n2(item.discount, p, order))
        for _, code, _rate, amount in item.taxes:
            seg("TXI", code or tax_type, plain(amount))
    seg("CTT", len(items), plain(sum((i.quantity for i in items), Decimal(0))))
    seg("AMT", "TT", plain(sums["total"]))

    control = msg.control(10 ** 9)
    ids = [(party.sender_qualifier or "ZZ", party.sender_id),
           (party.receiver_qualifier or "ZZ", party.receiver_id)]
    for qualifier, value in ids:
        if not 1 <= len(value) <= 15 or len(qualifier) != 2 or x.clean(value) != value:
            raise RenderError(f"X12 interchange ids are 1-15 plain characters with a 2-character "
                              f"qualifier; {qualifier}/{value!r} is not")
    when = msg.prepared
    isa = ["ISA", "00", " " * 10, "00", " " * 10, ids[0][0], ids[0][1].ljust(15), ids[1][0],
           ids[1][1].ljust(15), when.strftime("%y%m%d"), when.strftime("%H%M"),
           x.repetition if version >= "005010" else "U", version[:5], f"{control:09d}", "0",
           "T" if test else "P", x.component]
    gs = ["GS", "PO", party.gs_sender or party.sender_id, party.gs_receiver or party.receiver_id,
          when.strftime("%Y%m%d"), when.strftime("%H%M"), control, "X", version]
    transaction = [["ST", "850", "0001"], *body]
    transaction.append(["SE", len(transaction) + 1, "0001"])
    out = [x.element.join(isa) + x.terminator]
    for parts in [gs, *transaction, ["GE", 1, control], ["IEA", 1, f"{control:09d}"]]:
        out.append(_x12_segment(x, parts))
    return "".join(out).encode("ascii")




def _n2(value: Any, places: int, order: Mapping[str, Any]) -> str:
    """N2: an integer with two implied decimals (4.95 → 495)."""
    cents = money(value, places) * 100
    if cents != cents.to_integral_value():
        raise RenderError(f"X12 SAC05 carries two decimals; {money(value, places)} "
                          f"{order['currency']} cannot be written exactly (use format edifact or csv "
                          "for this currency)")
    return str(int(cents))


def _n1(seg: Any, code: str, address: Mapping[str, Any], party_id: str | None, agency: str) -> None:
    name = " ".join(filter(None, (address.get("name"), address.get("company")))) or "-"
    seg("N1", code, name[:60], *([agency, party_id] if party_id else []))
    if address.get("line1") or address.get("line2"):
        seg("N3", (address.get("line1") or address.get("line2") or "")[:55],
            (address.get("line2") or "")[:55] if address.get("line1") else "")
    region = address.get("region") or ""
    if address.get("city") or address.get("postal_code") or address.get("country"):
        seg("N4", (address.get("city") or "")[:30], region if len(region) == 2 else "",
            address.get("postal_code") or "", address.get("country") or "")


def x12_note(note: str | None) -> list[str]:
    """The note as MSG texts (MSG01 is an..264), split between words: X12 text elements lose
    their outer spaces, so a reader joins them with one space."""
    import textwrap

    return textwrap.wrap(_printable(note or ""), 264)


def _x12_segment(x: X12Syntax, parts: list[Any]) -> str:
    tag, *elements = parts
    texts = [x.clean(e) if not isinstance(e, int) else str(e) for e in elements]
    while texts and texts[-1] == "":
        texts.pop()  # X12: no trailing element separators
    return x.element.join([tag, *texts]) + x.terminator


# --- CSV -------------------------------------------------------------------------------------

def render_csv(msg: Message, *, delimiter: str = ",") -> bytes:
    """A header row and one row per order line, UTF-8, CRLF line ends, minimal quoting."""
    order, p = msg.order, msg.places
    items = lines(msg)
    sums = totals(msg, items)
    customer = order.get("customer") or {}
    billing = order.get("billing_address") or {}
    shipping_address = order.get("shipping_address") or {}

    def when(key: str) -> str:
        value = order.get(key)
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else ""

    def address(prefix: str, values: Mapping[str, Any]) -> dict[str, Any]:
        return {f"{prefix}_{k}": values.get(k) for k in
                ("name", "company", "line1", "line2", "city", "region", "postal_code", "country")}

    common = {
        "external_id": order["external_id"], "number": order.get("number"),
        "action": msg.function, "status": order.get("status") or "open",
        "placed_at": when("placed_at"), "updated_at": when("updated_at"),
        "currency": order["currency"], "customer_id": msg.customer_id,
        "customer_email": customer.get("email"), "customer_name": _name(customer),
        "customer_phone": customer.get("phone"),
        **address("billing", billing), **address("shipping", shipping_address),
        "subtotal": sums["subtotal"], "discount": sums["discount"], "shipping": sums["shipping"],
        "shipping_tax": sums["shipping_tax"], "tax": sums["tax"], "total": sums["total"],
        "shipping_method": ", ".join(s.get("method") or "" for s in order.get("shipping") or []),
        "note": _printable(order.get("note") or ""),
    }
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, delimiter=delimiter,
                            lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writeheader()
    for item in items:
        row = {**common, "line_no": item.no, "line_external_id": item.external_id, "sku": item.sku,
               "item_number": item.item_number, "name": _printable(item.name),
               "quantity": plain(item.quantity), "unit_price": plain(item.unit_price),
               "line_discount": item.discount,
               "line_tax": money(sum((t[3] for t in item.taxes), Decimal(0)), p),
               "line_amount": item.amount}
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue().encode("utf-8")


def csv_rows(data: bytes, delimiter: str = ",") -> list[dict[str, str]]:
    """Parse a file render_csv wrote (for lookups and tests)."""
    return list(csv.DictReader(io.StringIO(data.decode("utf-8")), delimiter=delimiter))

