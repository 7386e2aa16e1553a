"""The edi connector: files that parse back exactly, atomic and idempotent writes, SFTP specifics.

Every generated file is read back with an independent parser (pydifact, pyx12, csv — see
tests/fakes/sftp.py) and compared value by value with the order, amounts to the minor unit.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import paramiko
import pytest
from fakes.sftp import FakeSftpServer, PartnerInbox, read_csv, read_edifact, read_x12, summary
from harness import free_port
from marshmallow import ValidationError

from broker.schemas.order import dump_order, load_order
from connectors.base import Link, Links, PushContext
from connectors.edi import DEFAULTS, EdiConfig, EdiConnector, safe_id
from connectors.errors import PermanentError, TransientError
from connectors.testing import contract_order, push_context

PARTIES = {"sender_id": "SENDERID", "receiver_id": "RECEIVERID"}


def tricky_order(external_id: str = "ESC-1", **changes: Any) -> dict[str, Any]:
    """An order whose texts hold every EDIFACT service character and a non-Latin-1 letter."""
    doc = {
        "external_id": external_id, "number": "#10?42", "channel": "shop", "currency": "EUR",
        "placed_at": "2026-11-20T14:03:00Z", "updated_at": "2026-11-20T14:05:07Z",
        "customer": {"external_id": "c+1", "email": "o'neil@example.com", "email_verified": True,
                     "first_name": "Zoë", "last_name": "O'Neil:Smith+Co?", "phone": "+33 1 23"},
        "billing_address": {"name": "Zoë O'Neil", "company": "A+B: ltd?", "line1": "1 Rue d'Arc",
                            "line2": "Bât. 2", "city": "Paris", "postal_code": "75001",
                            "country": "FR"},
        "shipping_address": {"name": "Łukasz Ž", "line1": "2 Quai", "city": "Lyon",
                             "postal_code": "69001", "country": "FR"},
        "lines": [{"external_id": "l1", "sku": "SKU+1:A'B?", "name": "Crème 'brûlée' + jar: 2?",
                   "quantity": "1.5", "unit_price": "10.0125", "discount": "0.50",
                   "taxes": [{"name": "TVA", "rate": "0.2", "amount": "2.90"}]}],
        "shipping": [{"method": "Colissimo", "amount": "4.90",
                      "taxes": [{"name": "TVA", "rate": "0.2", "amount": "0.98"}]}],
        "discounts": [{"code": "NOËL", "amount": "1.00"}],
        "totals": {"subtotal": "14.52", "discount": "1.00", "shipping": "4.90", "tax": "3.88",
                   "total": "22.30"},
        "note": "Ring twice\nthen wait: 'OK'? +1",
    }
    doc.update(changes)
    return load_order(doc)


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    folder = tmp_path / "outbox"
    folder.mkdir()
    return folder


@pytest.fixture
def connect(outbox: Path) -> Iterator[Callable[..., EdiConnector]]:
    made: list[EdiConnector] = []

    def make(fmt: str = "edifact", **config: Any) -> EdiConnector:
        config.setdefault("path", str(outbox))
        if fmt != "csv":
            for key, value in PARTIES.items():
                config.setdefault(key, value)
        connector = EdiConnector(EdiConfig().load({"format": fmt, **config}), name="edi-test")
        made.append(connector)
        return connector

    yield make
    for connector in made:
        connector.close()


def files(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def written(result: Any, folder: Path) -> bytes:
    return (folder / result.reference).read_bytes()


# --- EDIFACT ---------------------------------------------------------------------------------

def test_edifact_parses_back_with_every_value(connect: Callable[..., EdiConnector],
                                              outbox: Path) -> None:
    order = contract_order()
    result = connect("edifact", sender_qualifier="14", receiver_qualifier="14",
                     association_code="EAN008").push(order, push_context(order))
    segs = read_edifact(written(result, outbox))
    tags = [t for t, _ in segs]
    assert tags[:5] == ["UNB", "UNH", "BGM", "DTM", "FTX"] and tags[-4:] == ["MOA", "CNT", "UNT", "UNZ"]
    first = {t: e for t, e in reversed(segs)}  # first occurrence of each tag
    unb = first["UNB"]
    assert unb[0] == ["UNOC", "3"] and unb[1] == ["SENDERID", "14"] and unb[2] == ["RECEIVERID", "14"]
    assert unb[3] == [order["updated_at"].strftime("%y%m%d"), order["updated_at"].strftime("%H%M")]
    assert first["UNZ"] == ["1", unb[4]]
    assert first["UNH"][1] == ["ORDERS", "D", "96A", "UN", "EAN008"]
    assert first["BGM"] == ["220", order["external_id"], "9"]
    assert first["DTM"] == [["137", order["placed_at"].strftime("%Y%m%d%H%M"), "203"]]
    assert first["CUX"] == [["2", "USD", "9"]]
    nads = {e[0]: e for t, e in segs if t == "NAD"}
    assert nads["BY"][1] == [order["customer"]["external_id"], "", "92"]
    assert nads["BY"][3:] == ["Ana Silva", "1 Main St", "Springfield", "IL", "62701", "US"]
    assert nads["DP"][3] == "Ana Silva"  # UNOC is Latin-1: Š is transliterated
    lins = [i for i, (t, _) in enumerate(segs) if t == "LIN"]
    for line, start in zip(order["lines"], lins, strict=True):
        group = dict(segs[start:start + 5])
        assert group["LIN"][2] == [line["sku"], "SA"]
        assert group["IMD"] == ["F", "", ["", "", "", line["name"]]]
        assert Decimal(group["QTY"][0][1]) == line["quantity"]
        assert Decimal(group["PRI"][0][1]) == line["unit_price"]
        amount = line["quantity"] * line["unit_price"] - (line.get("discount") or 0)
        assert group["MOA"] == [["203", f"{amount:.2f}"]]
    taxes = [e for t, e in segs if t == "TAX"]
    assert taxes[0] == ["7", ["VAT", "", "", "Sales Tax"], "", "", ["", "", "", "7.25"]]
    moas = [e[0] for t, e in segs if t == "MOA"]
    totals = order["totals"]
    assert moas[-3:] == [["79", str(totals["subtotal"])], ["124", str(totals["tax"])],
                         ["86", str(totals["total"])]]
    assert ["23", "4.95"] in moas and ["204", "1.03"] in moas and ["204", "0.01"] in moas
    line_taxes = [Decimal(t["amount"]) for line in order["lines"] for t in line["taxes"]]
    assert sorted(Decimal(m[1]) for m in moas if m[0] == "124")[:-1] == sorted(line_taxes)
    assert first["CNT"] == [["2", "2"]]


def test_edifact_escapes_release_characters(connect: Callable[..., EdiConnector],
                                            outbox: Path) -> None:
    order = tricky_order()
    data = written(connect("edifact", sender_id="ME?+:'").push(order, push_context(order)), outbox)
    text = data.decode("iso-8859-1")
    assert "O?'Neil?:Smith?+Co??" in text and "SKU?+1?:A?'B??" in text
    segs = read_edifact(data)
    values = dict(segs)
    assert values["UNB"][1] == "ME?+:'"
    assert values["RFF"] == [["CR", "#10?42"]]
    assert values["LIN"][2] == ["SKU+1:A'B?", "SA"]
    assert values["IMD"][2][3] == "Crème 'brûlée' + jar: 2?"  # é is Latin-1: kept
    assert values["FTX"][3] == "Ring twice then wait: 'OK'? +1"  # the line break became a space
    assert values["CTA"][1][1] == "Zoë O'Neil:Smith+Co?"
    nads = {e[0]: e for t, e in segs if t == "NAD"}
    assert nads["BY"][1] == ["c+1", "", "92"]
    assert nads["BY"][3] == ["Zoë O'Neil A+B: ltd?"] or nads["BY"][3] == "Zoë O'Neil A+B: ltd?"
    assert nads["DP"][3] == "Lukasz Z"  # Ł and Ž are not Latin-1: transliterated
    assert next(e for t, e in segs if t == "ALC" and e[0] == "A")[:2] == ["A", "NOËL"]
    assert summary("edifact", data)["total"] == Decimal("22.30")


def test_edifact_unow_keeps_unicode_and_escapes_the_repetition_separator(
        connect: Callable[..., EdiConnector], outbox: Path) -> None:
    order = tricky_order(customer={"first_name": "Łukasz*", "last_name": "Чехов",
                                   "email": "l@example.com"})
    data = written(connect("edifact", edifact_syntax="UNOW").push(order, push_context(order)), outbox)
    assert data.startswith(b"UNA:+.?*'UNB+UNOW:4+") and "Łukasz?* Чехов".encode() in data
    segs = dict(read_edifact(data))
    assert segs["CTA"][1][1] == "Łukasz* Чехов"
    assert segs["UNB"][3][0] == order["updated_at"].strftime("%Y%m%d")  # syntax 4: CCYYMMDD


def test_bgm_function_follows_create_update_and_cancel(connect: Callable[..., EdiConnector],
                                                       outbox: Path) -> None:
    connector = connect("edifact")
    order = contract_order()
    created = connector.push(order, push_context(order))
    later = contract_order(order["external_id"], quantity=5,
                           updated_at=order["updated_at"].replace(year=2027))
    updated = connector.push(later, push_context(later, action="update",
                                                 reference=created.reference, version=2))
    cancelled = {**later, "status": "cancelled"}
    gone = connector.cancel(cancelled, push_context(cancelled, action="cancel",
                                                   reference=updated.reference, version=3))
    functions = [dict(read_edifact(written(r, outbox)))["BGM"][2] for r in (created, updated, gone)]
    assert functions == ["9", "5", "1"]
    assert [r.reference.split("_")[3] for r in (created, updated, gone)] == ["new", "replace",
                                                                             "cancel"]
    inbox = PartnerInbox(outbox, "edifact", "ORDERS", "edi")
    record, = inbox.records(order["external_id"])
    assert (record["reference"], record["total"], record["status"]) == (
        gone.reference, later["totals"]["total"], "cancelled")


def test_a_cancelled_order_never_booked_is_sent_as_a_cancellation(
        connect: Callable[..., EdiConnector], outbox: Path) -> None:
    order = contract_order(status="cancelled")
    result = connect("x12").push(order, push_context(order))
    assert dict(read_x12(written(result, outbox)))["BEG"][0] == "01"


# --- X12 -------------------------------------------------------------------------------------

def test_x12_850_parses_back_with_valid_envelopes(connect: Callable[..., EdiConnector],
                                                   outbox: Path) -> None:
    order = contract_order()
    data = written(connect("x12", sender_qualifier="01", test_indicator=True)
                   .push(order, push_context(order)), outbox)
    assert data.index(b"~") == 105  # ISA is fixed width: 106 characters with its terminator
    segs = read_x12(data)  # pyx12 checked ISA13=IEA02, GS06=GE02, ST02=SE02 and every count
    first = {t: e for t, e in reversed(segs)}
    isa = first["ISA"]
    assert isa[4:8] == ["01", "SENDERID       ", "ZZ", "RECEIVERID     "]
    assert isa[11:16] == ["00401", isa[12], "0", "T", ">"] and len(isa[12]) == 9
    assert first["GS"][:3] == ["PO", "SENDERID", "RECEIVERID"] and first["GS"][6:] == ["X", "004010"]
    assert first["BEG"] == ["00", "SA", order["external_id"], "", order["placed_at"].strftime("%Y%m%d")]
    assert first["CUR"] == ["BY", "USD"] and first["REF"] == ["CO", order["number"]]
    sacs = [e for t, e in segs if t == "SAC"]
    assert sacs[0][:5] == ["C", "G830", "", "", "495"] and sacs[0][14] == "Standard"
    assert sacs[1][:5] == ["A", "C310", "", "", "103"] and sacs[1][14] == "CONTRACT"
    assert sacs[2] == ["A", "C310", "", "", "1"]  # the line discount, N2: 0.01
    po1 = [e for t, e in segs if t == "PO1"]
    for line, seg in zip(order["lines"], po1, strict=True):
        assert Decimal(seg[1]) == line["quantity"] and seg[2] == "EA"
        assert Decimal(seg[3]) == line["unit_price"] and seg[5:7] == ["SK", line["sku"]]
    txi = [Decimal(e[1]) for t, e in segs if t == "TXI"]
    assert txi == [Decimal(t["amount"]) for line in order["lines"] for t in line["taxes"]]
    assert first["CTT"] == ["2", str(sum(line["quantity"] for line in order["lines"]))]
    assert first["AMT"] == ["TT", str(order["totals"]["total"])]
    names = {e[0]: e for t, e in segs if t == "N1"}
    assert names["BT"] == ["BT", "Ana Silva", "92", order["customer"]["external_id"]]


def test_x12_strips_delimiters_from_text_and_writes_5010(connect: Callable[..., EdiConnector],
                                                         outbox: Path) -> None:
    order = tricky_order(lines=[{"sku": "A*B~C>D^E", "name": "x*y~z", "quantity": "1",
                                 "unit_price": "10.00"}], shipping=[], discounts=[],
                         totals={"subtotal": "10.00", "total": "10.00"})
    data = written(connect("x12", x12_version="005010").push(order, push_context(order)), outbox)
    segs = read_x12(data)
    first = {t: e for t, e in reversed(segs)}
    assert first["ISA"][10:12] == ["^", "00501"] and first["GS"][7] == "005010"
    assert first["PO1"][6] == "A B C D E" and first["PID"][4] == "x y z"
    assert summary("x12", data)["total"] == Decimal("10.00")


def test_x12_refuses_amounts_sac_cannot_carry(connect: Callable[..., EdiConnector],
                                              outbox: Path) -> None:
    order = tricky_order(currency="KWD", shipping=[{"method": "Aramex", "amount": "1.005"}],
                         lines=[{"sku": "A", "quantity": "1", "unit_price": "2.000"}], discounts=[],
                         totals={"subtotal": "2.000", "shipping": "1.005", "total": "3.005"})
    with pytest.raises(PermanentError, match=r"two decimals.*1\.005 KWD"):
        connect("x12").push(order, push_context(order))
    assert files(outbox) == []
    data = written(connect("edifact").push(order, push_context(order)), outbox)
    assert summary("edifact", data)["total"] == Decimal("3.005")  # EDIFACT keeps all 3 places


def test_long_external_ids_make_safe_names_and_short_po_numbers(
        connect: Callable[..., EdiConnector], outbox: Path) -> None:
    order = tricky_order(external_id="gid://shop/Order/" + "9" * 40)
    result = connect("x12").push(order, push_context(order))
    assert "/" not in result.reference and result.reference.startswith("850_gid---shop-Order-99")
    assert safe_id(order["external_id"]) in result.reference
    beg = dict(read_x12(written(result, outbox)))["BEG"]
    assert len(beg[2]) == 22 and beg[2].startswith("gid://shop/Or")


# --- CSV -------------------------------------------------------------------------------------

def test_csv_one_row_per_line_with_exact_amounts(connect: Callable[..., EdiConnector],
                                                 outbox: Path) -> None:
    order = tricky_order(lines=[*dump_order(tricky_order())["lines"],
                                {"sku": "B;2", "name": 'Say "hi"; bye', "quantity": "2",
                                 "unit_price": "0.10"}],
                         totals={"subtotal": "14.72", "discount": "1.00", "shipping": "4.90",
                                 "tax": "3.88", "total": "22.50"})
    data = written(connect("csv", csv_delimiter=";").push(order, push_context(order)), outbox)
    assert data.count(b"\r\n") == 3
    rows = read_csv(data, ";")
    assert [r["line_no"] for r in rows] == ["1", "2"]
    assert rows[1]["name"] == 'Say "hi"; bye' and rows[1]["sku"] == "B;2"
    assert rows[0]["quantity"] == "1.5" and rows[0]["unit_price"] == "10.0125"
    assert rows[0]["line_amount"] == "14.52" and rows[0]["line_discount"] == "0.50"
    assert rows[0]["line_tax"] == "2.90" and rows[0]["shipping_tax"] == "0.98"
    assert rows[0]["customer_name"] == "Zoë O'Neil:Smith+Co?" and rows[0]["shipping_name"] == "Łukasz Ž"
    for row in rows:
        assert Decimal(row["total"]) == order["totals"]["total"] and row["action"] == "new"
        assert row["updated_at"] == "2026-11-20T14:05:07Z" and row["currency"] == "EUR"


# --- idempotency and atomic writes -------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["edifact", "x12", "csv"])
def test_a_retry_writes_identical_bytes(fmt: str, connect: Callable[..., EdiConnector],
                                        tmp_path: Path) -> None:
    order = contract_order()
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    first = connect(fmt, path=str(a)).push(order, push_context(order))
    again = connect(fmt, path=str(b)).push(dict(order), push_context(order, attempt=2))
    assert first.reference == again.reference
    assert written(first, a) == written(again, b)
    other = contract_order()
    assert connect(fmt, path=str(a)).push(other, push_context(other)).reference != first.reference


def test_push_twice_writes_one_file_and_lookup_finds_it(connect: Callable[..., EdiConnector],
                                                        outbox: Path) -> None:
    connector = connect("edifact")
    order = contract_order()
    assert connector.lookup(order) is None
    first = connector.push(order, push_context(order))
    before = (outbox / first.reference).stat().st_mtime_ns
    second = connect("edifact").push(order, push_context(order, attempt=2))
    assert first.details["written"] and not second.details["written"]
    assert files(outbox) == [first.reference]
    assert (outbox / first.reference).stat().st_mtime_ns == before
    assert connect("edifact").lookup(order) == first.reference
    newer = contract_order(order["external_id"], quantity=4,
                           updated_at=order["updated_at"].replace(year=2027))
    assert connector.lookup(newer) is None  # that version was not written


def test_a_failed_write_leaves_no_file_behind(connect: Callable[..., EdiConnector], outbox: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    order = contract_order()
    connector = connect("edifact")

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(TransientError, match="No space left"):
        connector.push(order, push_context(order))
    assert files(outbox) == []
    monkeypatch.undo()
    result = connector.push(order, push_context(order))
    assert files(outbox) == [result.reference]


def test_a_crashed_attempts_partial_file_is_cleaned_up(connect: Callable[..., EdiConnector],
                                                       outbox: Path) -> None:
    order = contract_order()
    connector = connect("x12")
    name = connector.file_name(order, "new")
    (outbox / f".{name}.k3x9_2ab.part").write_bytes(b"ISA*00*half a file")
    result = connector.push(order, push_context(order))
    assert files(outbox) == [name] == [result.reference]
    read_x12(written(result, outbox))


def test_readers_never_see_a_partial_file(connect: Callable[..., EdiConnector],
                                          outbox: Path) -> None:
    """A poller listing the folder while orders are written parses every file it sees."""
    connector = connect("edifact")
    orders = [contract_order() for _ in range(25)]
    for order in orders:  # big files take several write() calls
        order["note"] = "x" * 50_000
    done, seen, problems = threading.Event(), set(), []

    def poll() -> None:
        while not done.is_set():
            for name in os.listdir(outbox):
                if name.startswith(".") or name in seen:
                    continue
                try:
                    summary("edifact", (outbox / name).read_bytes())
                    seen.add(name)
                except Exception as exc:
                    problems.append(f"{name}: {exc!r}")

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for order in orders:
            connector.push(order, push_context(order))
    finally:
        done.set()
        reader.join()
    assert problems == []
    assert len([n for n in files(outbox) if not n.startswith(".")]) == 25
    assert not [n for n in files(outbox) if n.startswith(".")]


def test_ledger_remembers_files_the_partner_already_took(connect: Callable[..., EdiConnector],
                                                         outbox: Path) -> None:
    order = contract_order()
    with_ledger = connect("csv", ledger_path=".sent")
    with_ledger.check()
    first = with_ledger.push(order, push_context(order))
    (outbox / first.reference).unlink()  # picked up and deleted by the partner
    again = with_ledger.push(order, push_context(order, attempt=2))
    assert not again.details["written"] and not (outbox / first.reference).exists()
    assert with_ledger.lookup(order) == first.reference
    # without a ledger the connector cannot know, and writes it again (documented)
    assert connect("csv").push(order, push_context(order)).details["written"]


def test_missing_folder_is_permanent_with_the_fix(connect: Callable[..., EdiConnector],
                                                  tmp_path: Path) -> None:
    connector = connect("edifact", path=str(tmp_path / "nope"))
    with pytest.raises(PermanentError, match="does not exist; create it or fix 'path'"):
        connector.check()
    order = contract_order()
    with pytest.raises(PermanentError, match="does not exist"):
        connector.push(order, push_context(order))


# --- identity and mappings ---------------------------------------------------------------------

def test_links_and_mappings_shape_the_message(connect: Callable[..., EdiConnector],
                                              outbox: Path) -> None:
    order = contract_order()
    email_key = f"email:{order['customer']['email']}"
    links = Links(customer={email_key: "PARTNER-CUST-7"}, product={"CK-WIDGET": "4006381333931"},
                  tax={"Sales Tax": "STT"}, shipping={"Standard": "UPS-GROUND"})
    ctx = PushContext(delivery_id="d1", idempotency_key="k1", action="create", attempt=1,
                      links=links)
    result = connect("edifact", item_qualifier="EN").push(order, ctx)
    segs = read_edifact(written(result, outbox))
    nad = next(e for t, e in segs if t == "NAD" and e[0] == "BY")
    assert nad[1] == ["PARTNER-CUST-7", "", "91"]  # assigned by the seller: the partner's id
    lins = [e[2] for t, e in segs if t == "LIN"]
    assert lins == [["4006381333931", "EN"], ["CK-GADGET", "EN"]]
    assert {e[1][0] for t, e in segs if t == "TAX"} == {"STT"}
    assert next(e for t, e in segs if t == "ALC" and e[0] == "C")[4] == ["FC", "", "", "UPS-GROUND"]
    customer_key = f"customer:contract-kit:{order['customer']['external_id']}"
    assert set(result.links) == {Link("customer", customer_key, "PARTNER-CUST-7"),
                                 Link("customer", email_key, "PARTNER-CUST-7")}


# --- versions after a lost answer, notes, discard -------------------------------------------------

@pytest.mark.parametrize("fmt", ["edifact", "x12", "csv"])
def test_a_later_version_arriving_as_a_create_replaces_instead_of_a_second_original(
        fmt: str, connect: Callable[..., EdiConnector], outbox: Path) -> None:
    connector = connect(fmt)
    first = contract_order()
    connector.push(first, push_context(first))  # its answer was lost: no reference
    later = contract_order(first["external_id"], quantity=5,
                           updated_at=first["updated_at"].replace(year=2027))
    result = connector.push(later, push_context(later, version=2))  # so it comes as a create
    again = connect(fmt).push(later, push_context(later, version=2, attempt=2))
    assert result.details["function"] == "replace" and not again.details["written"]
    assert again.reference == result.reference and len(files(outbox)) == 2
    inbox = PartnerInbox(outbox, fmt, DEFAULTS[fmt]["prefix"], DEFAULTS[fmt]["extension"])
    record, = inbox.records(first["external_id"])
    assert (record["reference"], record["total"]) == (result.reference, later["totals"]["total"])


@pytest.mark.parametrize("fmt", ["edifact", "x12", "csv"])
def test_the_note_reaches_the_partner_in_every_format(
        fmt: str, connect: Callable[..., EdiConnector], outbox: Path) -> None:
    note = "ring twice, then leave it with the neighbour " + "and say hello " * 30
    order = contract_order()
    order = {**order, "note": note.strip()}
    connect(fmt).push(order, push_context(order))
    inbox = PartnerInbox(outbox, fmt, DEFAULTS[fmt]["prefix"], DEFAULTS[fmt]["extension"])
    assert inbox.records(order["external_id"])[0]["note"] == note.strip()


def test_x12_carries_the_note_in_an_n9_loop_before_the_buyer(
        connect: Callable[..., EdiConnector], outbox: Path) -> None:
    order = contract_order()
    segs = read_x12(written(connect("x12").push(order, push_context(order)), outbox))
    tags = [t for t, _ in segs]
    assert tags.index("N9") < tags.index("MSG") < tags.index("N1")
    assert dict(segs)["N9"] == ["L1", "NOTES"] and dict(segs)["MSG"] == ["contract kit"]


def test_discard_sends_one_cancellation_and_deletes_nothing(
        connect: Callable[..., EdiConnector], outbox: Path) -> None:
    connector = connect("edifact")
    order = contract_order()
    booked = connector.push(order, push_context(order))
    connector.discard(order, push_context(order))
    connector.discard(order, push_context(order))  # the latest message cancels it already
    names = files(outbox)
    assert booked.reference in names and [n.split("_")[3] for n in names] == ["cancel", "new"]
    inbox = PartnerInbox(outbox, "edifact", "ORDERS", "edi")
    assert inbox.records(order["external_id"])[0]["status"] == "cancelled"
    never = contract_order()
    connector.discard(never, push_context(never))  # nothing was sent: nothing to say
    assert len(files(outbox)) == 2


# --- SFTP ----------------------------------------------------------------------------------------

@pytest.fixture
def sftp(tmp_path: Path) -> Iterator[FakeSftpServer]:
    client_key = paramiko.ECDSAKey.generate()
    with FakeSftpServer(tmp_path / "sftp", users={"bob": "pw-bob-1"},
                        authorized_keys={"keyed": [client_key]}) as server:
        (server.root / "in").mkdir()
        server.client_key = client_key  # type: ignore[attr-defined]
        yield server


def sftp_config(server: FakeSftpServer, **extra: Any) -> dict[str, Any]:
    return {"sftp_host": "127.0.0.1", "sftp_port": server.port, "sftp_user": "bob",
            "sftp_password": "pw-bob-1", "sftp_host_key": server.host_key_line,
            "sftp_path": "/in", "timeout": 5, "path": None, **extra}


def test_sftp_key_authentication(connect: Callable[..., EdiConnector], sftp: FakeSftpServer) -> None:
    import io

    text = io.StringIO()
    sftp.client_key.write_private_key(text, password="key-pass")  # type: ignore[attr-defined]
    config = sftp_config(sftp, sftp_user="keyed", sftp_password=None, sftp_key=text.getvalue(),
                         sftp_key_passphrase="key-pass")
    connector = connect("csv", **config)
    connector.check()
    order = contract_order()
    result = connector.push(order, push_context(order))
    assert (sftp.root / "in" / result.reference).exists() and sftp.logins == ["keyed"]
    stranger = paramiko.ECDSAKey.generate()
    text = io.StringIO()
    stranger.write_private_key(text)
    with pytest.raises(PermanentError, match=r"refused user 'keyed'.*sftp_key") as caught:
        connect("csv", **{**config, "sftp_key": text.getvalue(), "sftp_key_passphrase": None}).check()
    assert "PRIVATE KEY" not in str(caught.value)


def test_sftp_host_key_mismatch_is_permanent(connect: Callable[..., EdiConnector],
                                             sftp: FakeSftpServer) -> None:
    impostor = paramiko.ECDSAKey.generate()
    config = sftp_config(sftp, sftp_host_key=f"{impostor.get_name()} {impostor.get_base64()}")
    with pytest.raises(PermanentError, match="presented host key ecdsa-sha2-nistp256") as caught:
        connect("csv", **config).check()
    assert sftp.host_key.get_base64() in str(caught.value) and sftp.logins == []


def test_sftp_connection_lost_mid_upload_leaves_no_file(connect: Callable[..., EdiConnector],
                                                        sftp: FakeSftpServer) -> None:
    connector = connect("edifact", **sftp_config(sftp))
    order = contract_order()
    sftp.drop_after_bytes = 200
    with pytest.raises(TransientError, match="will retry"):
        connector.push(order, push_context(order))
    folder = sftp.root / "in"
    assert [n for n in files(folder) if not n.startswith(".")] == []
    sftp.drop_after_bytes = None
    result = connector.push(order, push_context(order, attempt=2))
    assert files(folder) == [result.reference]  # the partial temp file was removed
    assert summary("edifact", written(result, folder))["total"] == order["totals"]["total"]


def test_sftp_without_posix_rename_falls_back_to_plain_rename(
        connect: Callable[..., EdiConnector], sftp: FakeSftpServer) -> None:
    sftp.posix_rename = False
    connector = connect("x12", **sftp_config(sftp))
    order = contract_order()
    result = connector.push(order, push_context(order))
    assert ("rename", f"/in/{result.reference}") in sftp.requests
    read_x12(written(result, sftp.root / "in"))


def test_sftp_session_dropped_by_the_server_is_reopened(connect: Callable[..., EdiConnector],
                                                        sftp: FakeSftpServer) -> None:
    connector = connect("csv", **sftp_config(sftp))
    connector.check()
    sftp.drop_connections()
    order = contract_order()
    result = connector.push(order, push_context(order))
    assert (sftp.root / "in" / result.reference).exists() and len(sftp.logins) == 2


def test_sftp_ledger_keeps_markers_on_the_server(connect: Callable[..., EdiConnector],
                                                 sftp: FakeSftpServer) -> None:
    connector = connect("edifact", **sftp_config(sftp, ledger_path="sent"))
    order = contract_order()
    result = connector.push(order, push_context(order))  # creates the ledger folder on first use
    assert (sftp.root / "in" / "sent" / result.reference).stat().st_size == 0
    (sftp.root / "in" / result.reference).unlink()  # the partner took it
    assert not connector.push(order, push_context(order, attempt=2)).details["written"]
    assert connector.lookup(order) == result.reference


def test_sftp_denied_write_and_missing_folder_are_permanent(
        connect: Callable[..., EdiConnector], sftp: FakeSftpServer) -> None:
    order = contract_order()
    sftp.deny_writes = True
    with pytest.raises(PermanentError, match=r"denied user 'bob' writing .* grant write access"):
        connect("csv", **sftp_config(sftp)).push(order, push_context(order))
    sftp.deny_writes = False
    with pytest.raises(PermanentError, match="sftp_path /nope does not exist"):
        connect("csv", **sftp_config(sftp, sftp_path="/nope")).check()


def test_sftp_unreachable_is_transient(connect: Callable[..., EdiConnector],
                                       sftp: FakeSftpServer) -> None:
    with pytest.raises(TransientError, match="unreachable"):
        connect("csv", **sftp_config(sftp, sftp_port=free_port())).check()


# --- config ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("config", "field", "says"), [
    ({"format": "csv"}, "path", "either 'path'"),
    ({"format": "csv", "path": "/x", "sftp_host": "h"}, "path", "not both"),
    ({"format": "csv", "path": "/x", "sftp_user": "u"}, "sftp_user", "only used with sftp_host"),
    ({"format": "csv", "sftp_host": "h", "sftp_user": "u", "sftp_password": "p"},
     "sftp_host_key", "ssh-keyscan"),
    ({"format": "csv", "sftp_host": "h", "sftp_user": "u", "sftp_password": "p",
      "sftp_host_key": "ssh-ed25519 not-base64!"}, "sftp_host_key", "not a valid ssh-ed25519"),
    ({"format": "csv", "sftp_host": "h", "sftp_user": "u", "sftp_host_key": "x"},
     "sftp_password", "sftp_password or sftp_key"),
    ({"format": "csv", "sftp_host": "h", "sftp_user": "u", "sftp_key": "secret-not-a-key",
      "sftp_host_key": "x"}, "sftp_key", "not a readable private key"),
    ({"format": "edifact", "path": "/x"}, "sender_id", "required for format 'edifact'"),
    ({"format": "x12", "path": "/x", "sender_id": "A" * 16, "receiver_id": "B"}, "sender_id",
     "at most 15"),
    ({"format": "csv", "path": "/x", "csv_delimiter": '"'}, "csv_delimiter", ""),
])
def test_config_errors_name_the_field(config: dict[str, Any], field: str, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        EdiConfig().load(config)
    assert field in caught.value.messages and says in str(caught.value.messages[field])
    assert "secret-not-a-key" not in str(caught.value.messages)


def test_calls_per_push_covers_an_sftp_push_with_a_ledger(connect: Callable[..., EdiConnector],
                                                          sftp: FakeSftpServer) -> None:
    session = 5  # TCP connect, banner, key exchange, authentication, the sftp channel
    connector = connect("edifact", **sftp_config(sftp, ledger_path="sent"))
    order = contract_order()
    connector.push(order, push_context(order))
    later = contract_order(order["external_id"], quantity=5,
                           updated_at=order["updated_at"].replace(year=2027))
    sftp.requests.clear()
    connector.close()  # a fresh session, as a new worker would open
    connector.push(later, push_context(later, version=2))
    made = len(sftp.requests) + session * len(sftp.logins[1:])
    assert ("posix_rename", f"/in/{connector.lookup(later)}") in sftp.requests
    assert 0 < made <= EdiConnector.calls_per_push, sftp.requests
