"""The `edi` connector: each order version becomes one file — EDIFACT ORDERS, X12 850 or CSV — in a
local folder or on an SFTP server, where the trading partner's translator picks it up.

Standards followed (details in connectors.edi_formats):
- UN/EDIFACT ORDERS D.96A: https://service.unece.org/trade/untdid/d96a/trmd/orders_c.htm
- ANSI ASC X12 850 Purchase Order 004010/005010: https://www.stedi.com/edi/x12-004010/850
- SFTP (draft-ietf-secsh-filexfer-02, version 3, the one OpenSSH speaks):
  https://datatracker.ietf.org/doc/html/draft-ietf-secsh-filexfer-02 — its RENAME fails when the
  target exists; OpenSSH's posix-rename@openssh.com extension replaces atomically
  (https://github.com/openssh/openssh-portable/blob/master/PROTOCOL, section 4.3).
- Paramiko client API: https://docs.paramiko.org/en/stable/api/transport.html and
  https://docs.paramiko.org/en/stable/api/sftp.html
"""

from __future__ import annotations

import base64
import binascii
import errno
import logging
import os
import re
import secrets
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import UTC
from hashlib import sha256
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from marshmallow import ValidationError, fields, validate, validates_schema

from connectors import edi_formats as fmt
from connectors.base import Connector, Link, PushContext, PushResult
from connectors.config import ConfigSchema, Secret
from connectors.errors import PermanentError, TransientError
from connectors.identity import anchors_field, customer_links, mapped, resolve_customer
from connectors.money import minor_units
from connectors.ssrf import connect_tcp

log = logging.getLogger(__name__)
FORMATS = ("edifact", "x12", "csv")
DEFAULTS = {  # per format: file prefix, extension, item number qualifier, tax type code
    "edifact": {"prefix": "ORDERS", "extension": "edi", "item_qualifier": "SA", "tax_type": "VAT"},
    "x12": {"prefix": "850", "extension": "edi", "item_qualifier": "SK", "tax_type": "TX"},
    "csv": {"prefix": "ORDER", "extension": "csv", "item_qualifier": "", "tax_type": ""},
}
KIND_RANK = {"new": 0, "replace": 1, "cancel": 2}
_STAMP = r"\d{8}T\d{6}(?:\d{6})?Z"
_LOCAL_ONLY = ("path",)
_SFTP_ONLY = ("sftp_host", "sftp_user", "sftp_password", "sftp_key", "sftp_key_passphrase",
              "sftp_host_key")
_CODE = validate.Regexp(r"^[A-Za-z0-9]{1,4}$", error="1-4 letters or digits")


class EdiConfig(ConfigSchema):
    """Which format, where files go, and who the trading partners are."""

    format = fields.String(required=True, validate=validate.OneOf(FORMATS))
    path = fields.String(load_default=None, allow_none=True)
    sftp_host = fields.String(load_default=None, allow_none=True)
    sftp_port = fields.Integer(load_default=22, validate=validate.Range(min=1, max=65535))
    sftp_user = fields.String(load_default=None, allow_none=True)
    # Secrets get no load_default: a None would be stored, and registered for log redaction, as one.
    sftp_password = Secret(allow_none=True)
    sftp_key = Secret(allow_none=True)
    sftp_key_passphrase = Secret(allow_none=True)
    sftp_host_key = fields.String(load_default=None, allow_none=True)
    sftp_path = fields.String(load_default=".", validate=validate.Length(min=1))
    ledger_path = fields.String(load_default=None, allow_none=True)
    timeout = fields.Float(load_default=15.0, validate=validate.Range(min=0, min_inclusive=False))
    file_prefix = fields.String(load_default=None, allow_none=True, validate=validate.Regexp(
        r"^[A-Za-z0-9-]{1,20}$", error="1-20 letters, digits or '-'"))
    file_extension = fields.String(load_default=None, allow_none=True, validate=validate.Regexp(
        r"^[A-Za-z0-9]{1,10}$", error="1-10 letters or digits"))
    sender_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(1, 35))
    sender_qualifier = fields.String(load_default=None, allow_none=True, validate=_CODE)
    receiver_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(1, 35))
    receiver_qualifier = fields.String(load_default=None, allow_none=True, validate=_CODE)
    gs_sender = fields.String(load_default=None, allow_none=True, validate=validate.Length(2, 15))
    gs_receiver = fields.String(load_default=None, allow_none=True, validate=validate.Length(2, 15))
    edifact_syntax = fields.String(load_default="UNOC", validate=validate.OneOf(["UNOC", "UNOW"]))
    association_code = fields.String(load_default=None, allow_none=True,
                                     validate=validate.Regexp(r"^[A-Za-z0-9]{1,6}$"))
    x12_version = fields.String(load_default="004010",
                                validate=validate.OneOf(["004010", "005010"]))
    test_indicator = fields.Boolean(load_default=False)
    item_qualifier = fields.String(load_default=None, allow_none=True,
                                   validate=validate.Regexp(r"^[A-Z0-9]{1,3}$"))
    tax_type = fields.String(load_default=None, allow_none=True,
                             validate=validate.Regexp(r"^[A-Z0-9]{1,3}$"))
    csv_delimiter = fields.String(load_default=",", validate=validate.And(
        validate.Length(equal=1), validate.NoneOf(['"', "\r", "\n"])))
    customer_anchors = anchors_field()

    @validates_schema
    def _consistent(self, data: dict[str, Any], **kwargs: Any) -> None:
        errors: dict[str, list[str]] = {}
        if bool(data.get("path")) == bool(data.get("sftp_host")):
            errors["path"] = ["give either 'path' (a local folder) or 'sftp_host', not both"]
        if data.get("path"):
            for key in _SFTP_ONLY:
                if data.get(key):
                    errors[key] = ["only used with sftp_host"]
        if data.get("sftp_host"):
            if not data.get("sftp_user"):
                errors["sftp_user"] = ["required with sftp_host"]
            if not (data.get("sftp_password") or data.get("sftp_key")):
                errors["sftp_password"] = ["give sftp_password or sftp_key"]
            if data.get("sftp_key_passphrase") and not data.get("sftp_key"):
                errors["sftp_key_passphrase"] = ["only used with sftp_key"]
            if data.get("sftp_key"):
                try:
                    _private_key(data["sftp_key"], data.get("sftp_key_passphrase"))
                except PermanentError as exc:
                    errors["sftp_key"] = [str(exc)]
            if not data.get("sftp_host_key"):
                errors["sftp_host_key"] = ["required: the server's public host key, e.g. the "
                                           "output of `ssh-keyscan -t ed25519 HOST`"]
            else:
                try:
                    _host_key(data["sftp_host_key"])
                except PermanentError as exc:
                    errors["sftp_host_key"] = [str(exc)]
        kind = data.get("format")
        if kind in ("edifact", "x12"):
            for key in ("sender_id", "receiver_id"):
                if not data.get(key):
                    errors[key] = [f"required for format '{kind}'"]
        if kind == "x12":
            for key in ("sender_id", "receiver_id"):
                value = data.get(key) or ""
                if len(value) > 15 or any(c in value for c in "*~>^"):
                    errors[key] = ["X12 ISA ids are at most 15 characters, without * ~ > ^"]
            for key in ("sender_qualifier", "receiver_qualifier"):
                if data.get(key) and len(data[key]) != 2:
                    errors[key] = ["X12 ISA qualifiers have 2 characters (e.g. ZZ, 01, 12)"]
        if errors:
            raise ValidationError(errors)


class Folder(Protocol):
    """Where files land: a local directory or one on an SFTP server."""

    where: str

    def check(self) -> None: ...
    def names(self) -> list[str]: ...
    def write(self, name: str, data: bytes) -> None: ...
    def close(self) -> None: ...


class EdiConnector(Connector):
    """Write each order version as one file, named after the order, version and message function.

    Idempotent by file name: `<prefix>_<external id>_<updated_at>_<new|replace|cancel>_<digest>.<ext>`
    (the digest is of the order version's content), so a retry finds its file and writes nothing; a
    file is written to a hidden temporary name, synced and renamed, so the partner never reads half.
    Control numbers (UNB 0020, ISA13/GS06) come from the same digest: a retry renders identical bytes.

    Update: a replacement message in a new file (EDIFACT BGM 1225 = 5, X12 BEG01 = 05, CSV action
    "replace") carrying the whole new version. A create that finds a message for the order
    already sent (an earlier answer was lost, and this is a later version) sends a replacement
    too, never a second original: the partner would book a second order. Cancel: a cancellation
    message (BGM 1225 = 1, BEG01 = 01, action "cancel"); an order cancelled before it was ever
    booked is sent as a cancellation too, so the partner learns of it without shipping it.
    lookup(order) finds this version's file.

    When the partner deletes files after pickup, set `ledger_path`: a folder where an empty marker
    per written file is kept, so a retry after pickup still writes nothing.
    Customers: NAD+BY / N1*BT carry a linked partner id (agency 91) or the channel's customer id
    (92). SKUs travel as they are unless a product link maps them to the partner's item number; tax
    names map to tax type codes (`broker mappings add CONNECTOR tax 'Sales Tax' STT`), defaulting to
    `tax_type`.
    """

    kind = "edi"
    title = "EDI file (EDIFACT ORDERS, X12 850, CSV) to a folder or SFTP"
    Config = EdiConfig
    # SFTP requests of one push, each bounded by `timeout`: the session (TCP connect, banner,
    # key exchange, authentication, the sftp channel: 5), listing the folder and the ledger
    # (2), then the write: listing for a crashed attempt's leftover (1), open, write (one per
    # 32 KiB, pipelined), close, rename (4; 3 more without posix-rename), the ledger's stat,
    # mkdir, open and close (4). A kept session the server dropped is reopened once (5).
    calls_per_push = 24

    def __init__(self, config: Mapping[str, Any], *, name: str = "") -> None:
        super().__init__(config, name=name)
        try:  # validating again is idempotent and fills defaults when given a raw config
            self.settings: dict[str, Any] = EdiConfig().load(dict(config))
        except ValidationError as exc:
            raise PermanentError(f"connector '{self.name}' has an invalid config: {exc.messages}; "
                                 "fix it under Connectors") from exc
        defaults = DEFAULTS[self.settings["format"]]
        self.prefix = self.settings["file_prefix"] or defaults["prefix"]
        self.extension = self.settings["file_extension"] or defaults["extension"]
        self.item_qualifier = self.settings["item_qualifier"] or defaults["item_qualifier"]
        self.tax_type = self.settings["tax_type"] or defaults["tax_type"]
        self._folder: Folder | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        s = self.settings
        where = s["path"] or f"sftp://{s['sftp_user']}@{s['sftp_host']}:{s['sftp_port']}"
        return f"<EdiConnector {self.name!r} {s['format']} to {where}>"

    # --- the contract ----------------------------------------------------------------------
    def check(self) -> None:
        """Prove the folder is there and writable (SFTP: reachable, host key and login accepted).

        Raises: TransientError if unreachable, PermanentError if credentials or paths are wrong.
        """
        self.folder().check()

    def push(self, order: Mapping[str, Any], ctx: PushContext) -> PushResult:
        """Write the order (new, or a replacement on update) unless its file is there already.

        Raises: TransientError, PermanentError.
        """
        if ctx.action == "cancel":
            return self.cancel(order, ctx)
        if order.get("status") == "cancelled":
            return self._deliver(order, ctx, "cancel")
        return self._deliver(order, ctx, "replace" if ctx.action == "update" else "new")

    def cancel(self, order: Mapping[str, Any], ctx: PushContext) -> PushResult:
        """Write a cancellation message for the order.

        Raises: TransientError, PermanentError.
        """
        return self._deliver(order, ctx, "cancel")

    def lookup(self, order: Mapping[str, Any]) -> str | None:
        """The file written for this order version (any function; the latest one), else None.

        Raises: TransientError, PermanentError.
        """
        version = fmt.order_digest(order)[:12]  # names the version's content; no secret
        found = [m for m in self._sent(order) if m["version"] == version]
        return found[-1][0] if found else None

    def discard(self, order: Mapping[str, Any], ctx: PushContext) -> None:
        """Send a cancellation unless the order's latest message is one; delete nothing.

        A partner cannot unreceive a message: its translator may have read a file the moment it
        landed, so deleting it would only hide what was sent. Raises: TransientError,
        PermanentError.
        """
        sent = self._sent(order)
        if sent and sent[-1]["kind"] != "cancel":
            self._deliver({**order, "status": "cancelled"}, ctx, "cancel")

    def _sent(self, order: Mapping[str, Any]) -> list[re.Match[str]]:
        """The files written for this order (ledger included), oldest first: by version time,
        then new < replace < cancel."""
        pattern = self._pattern(order)
        found = [m for m in map(pattern.match, self.folder().names()) if m]
        return sorted(found, key=lambda m: (m["stamp"], KIND_RANK[m["kind"]]))

    def close(self) -> None:
        with self._lock:
            if self._folder is not None:
                self._folder.close()
                self._folder = None

    # --- files -----------------------------------------------------------------------------
    def file_name(self, order: Mapping[str, Any], function: str) -> str:
        """Deterministic from the order version and the message function."""
        digest = fmt.order_digest(order)[:12]
        return f"{self.prefix}_{safe_id(order['external_id'])}_{stamp(order)}_{function}_{digest}." \
               f"{self.extension}"

    def _pattern(self, order: Mapping[str, Any], *, digest: str = r"[0-9a-f]{12}") -> re.Pattern[str]:
        return re.compile(rf"^{re.escape(self.prefix)}_{re.escape(safe_id(order['external_id']))}_"
                          rf"(?P<stamp>{_STAMP})_(?P<kind>new|replace|cancel)_(?P<version>{digest})"
                          rf"\.{re.escape(self.extension)}$")

    def render(self, order: Mapping[str, Any], ctx: PushContext,
               function: str) -> tuple[bytes, tuple[Link, ...]]:
        """The file's bytes and the identity links learned; the same order gives the same bytes.

        Raises: PermanentError when the order cannot be expressed in the configured format.
        """
        anchors = self.settings["customer_anchors"]
        linked = resolve_customer(order, ctx, anchors=anchors)  # links only: no partner directory
        customer = order.get("customer") or {}
        lines = order.get("lines") or []
        taxes = [t.get("name") for item in [*lines, *(order.get("shipping") or [])]
                 for t in item.get("taxes") or [] if t.get("name")]
        msg = fmt.Message(
            order=order, function=function, places=minor_units(order["currency"]),
            customer_id=linked or customer.get("external_id") or None,
            customer_agency="91" if linked else "92",
            item_numbers={line["sku"]: ctx.links.product[line["sku"]] for line in lines
                          if line.get("sku") and line["sku"] in ctx.links.product},
            tax_codes={name: mapped(ctx, "tax", name, connector=self.name, default=self.tax_type)
                       or "" for name in taxes},
            shipping_codes={s["method"]: mapped(ctx, "shipping", s["method"], connector=self.name,
                                                default=s["method"]) or s["method"]
                            for s in order.get("shipping") or [] if s.get("method")})
        s = self.settings
        party = fmt.Party(s["sender_id"] or "", s["sender_qualifier"], s["receiver_id"] or "",
                          s["receiver_qualifier"], s["gs_sender"], s["gs_receiver"])
        try:
            if s["format"] == "edifact":
                data = fmt.render_edifact(msg, party, syntax=s["edifact_syntax"],
                                          association=s["association_code"], test=s["test_indicator"],
                                          item_qualifier=self.item_qualifier)
            elif s["format"] == "x12":
                data = fmt.render_x12(msg, party, version=s["x12_version"], test=s["test_indicator"],
                                      item_qualifier=self.item_qualifier, tax_type=self.tax_type)
            else:
                data = fmt.render_csv(msg, delimiter=s["csv_delimiter"])
        except fmt.RenderError as exc:
            raise PermanentError(f"{_label(order)} cannot be written as {s['format']} by connector "
                                 f"'{self.name}': {exc}") from exc
        return data, customer_links(order, linked, anchors) if linked else ()

    def folder(self) -> Folder:
        with self._lock:
            if self._folder is None:
                s = self.settings
                self._folder = (LocalFolder(s["path"], s["ledger_path"], self.name) if s["path"]
                                else SftpFolder(s, self.name))
            return self._folder

    def _deliver(self, order: Mapping[str, Any], ctx: PushContext, function: str) -> PushResult:
        folder = self.folder()
        sent = self._sent(order)
        version = fmt.order_digest(order)[:12]
        if function == "new" and sent:
            # The partner has a message for this order already (an earlier answer was lost): a
            # second original would be a second order, so this version replaces the first.
            mine = [m for m in sent if m["version"] == version]
            function = mine[-1]["kind"] if mine else "replace"
        data, links = self.render(order, ctx, function)
        name = self.file_name(order, function)
        details: dict[str, Any] = {"file": name, "where": folder.where, "function": function}
        if name in {m[0] for m in sent}:
            return PushResult(name, details={**details, "written": False}, links=links)
        folder.write(name, data)
        log.info("connector %s wrote %s (%d bytes) to %s", self.name, name, len(data), folder.where)
        return PushResult(name, details={**details, "written": True, "bytes": len(data)}, links=links)


# --- naming ------------------------------------------------------------------------------------

def safe_id(external_id: str) -> str:
    """The external id as a file-name part; anything else is replaced and a hash keeps it unique."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "-", external_id).lstrip(".")
    if safe != external_id or len(safe) > 64 or not safe:
        safe = f"{safe[:64]}-{sha256(external_id.encode()).hexdigest()[:8]}"
    return safe


def stamp(order: Mapping[str, Any]) -> str:
    """The version's time (updated_at, else placed_at) in UTC, sortable: 20261120T140300Z."""
    when = (order.get("updated_at") or order.get("placed_at") or fmt.NO_DATE).astimezone(UTC)
    micro = f"{when.microsecond:06d}" if when.microsecond else ""
    return when.strftime("%Y%m%dT%H%M%S") + micro + "Z"


def _label(order: Mapping[str, Any]) -> str:
    return f"order {order.get('number') or order.get('external_id')}"


def _temp_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(name)}\.[0-9a-z_]+\.part$")


# --- a local folder ------------------------------------------------------------------------------

class LocalFolder:
    """A directory on this host (or a mount): temp file in the same folder, fsync, rename, fsync dir."""

    def __init__(self, path: str, ledger: str | None, connector: str) -> None:
        self.path = Path(path)
        self.ledger = (self.path / ledger) if ledger else None
        self.connector = connector
        self.where = str(self.path)

    def check(self) -> None:
        for folder, key in ((self.path, "path"), (self.ledger, "ledger_path")):
            if folder is None:
                continue
            with self._errors(f"checking {folder}"):
                if key == "ledger_path":
                    folder.mkdir(parents=True, exist_ok=True)
                if not folder.is_dir():
                    raise PermanentError(f"folder {folder} does not exist; create it or fix '{key}' "
                                         f"of connector '{self.connector}'")
                if not os.access(folder, os.W_OK | os.X_OK):
                    raise PermanentError(f"folder {folder} is not writable by the broker's user; "
                                         f"grant write access or fix '{key}' of connector "
                                         f"'{self.connector}'")

    def names(self) -> list[str]:
        with self._errors(f"listing {self.path}"):
            if not self.path.is_dir():
                raise PermanentError(f"folder {self.path} does not exist; create it or fix 'path' "
                                     f"of connector '{self.connector}'")
            found = set(os.listdir(self.path))
            if self.ledger and self.ledger.is_dir():
                found.update(os.listdir(self.ledger))
            return sorted(found)

    def write(self, name: str, data: bytes) -> None:
        with self._errors(f"writing {name}"):
            for stale in filter(_temp_pattern(name).match, os.listdir(self.path)):
                with suppress(FileNotFoundError):  # a crashed attempt's leftover
                    os.unlink(self.path / stale)
            fd, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=self.path)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.chmod(temp, 0o644)  # mkstemp makes it 0600; the partner's poller must read it
                os.replace(temp, self.path / name)
            except FileNotFoundError as exc:  # another attempt took our temp file for a leftover
                raise TransientError(f"writing {name} in {self.path}: the temporary file vanished; "
                                     "will retry") from exc
            except BaseException:
                with suppress(OSError):
                    os.unlink(temp)
                raise
            _fsync_dir(self.path)
            if self.ledger:
                self.ledger.mkdir(parents=True, exist_ok=True)
                (self.ledger / name).touch()
                _fsync_dir(self.ledger)

    def close(self) -> None:
        """Nothing to release."""

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except (PermanentError, TransientError):
            raise
        except OSError as exc:
            text = f"{doing} in {self.path} failed: {exc.strerror or exc}"
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR):
                raise PermanentError(f"{text}; fix the folder or 'path' of connector "
                                     f"'{self.connector}'") from exc
            raise TransientError(f"{text}; will retry") from exc


def _fsync_dir(path: Path) -> None:
    """Make the rename itself durable (POSIX: the directory entry lives in the directory)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- SFTP -------------------------------------------------------------------------------------

def _host_key(text: str) -> Any:
    """A host key from `ssh-keyscan`/known_hosts text: [host] TYPE BASE64 [comment]."""
    import paramiko

    known = {i for cls in paramiko.key_classes for i in cls.identifiers()}
    tokens = text.split()
    for i, token in enumerate(tokens[:-1]):
        if token in known:
            try:
                return paramiko.PKey.from_type_string(token, base64.b64decode(tokens[i + 1]))
            except (binascii.Error, ValueError, paramiko.SSHException) as exc:
                raise PermanentError(f"not a valid {token} public key: {exc}") from exc
    raise PermanentError("expected 'TYPE BASE64' (e.g. 'ssh-ed25519 AAAA...'), as ssh-keyscan "
                         f"prints it; supported types: {', '.join(sorted(known))}")


def _private_key(text: str, passphrase: str | None) -> Any:
    """A private key in OpenSSH or PEM form (RSA, ECDSA, Ed25519)."""
    import io

    import paramiko
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    data, password = text.encode(), passphrase.encode() if passphrase else None
    try:
        try:
            loaded: Any = serialization.load_ssh_private_key(data, password=password)
        except ValueError:
            loaded = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError) as exc:  # never echo the key or passphrase
        raise PermanentError("sftp_key is not a readable private key (OpenSSH or PEM), or its "
                             f"passphrase is wrong: {type(exc).__name__}") from None
    for kind, cls in ((rsa.RSAPrivateKey, paramiko.RSAKey), (ec.EllipticCurvePrivateKey,
                      paramiko.ECDSAKey), (ed25519.Ed25519PrivateKey, paramiko.Ed25519Key)):
        if isinstance(loaded, kind):
            try:
                return cls.from_private_key(io.StringIO(text), password=passphrase)
            except paramiko.SSHException as exc:
                raise PermanentError(f"sftp_key could not be loaded: {type(exc).__name__}") from None
    raise PermanentError("sftp_key must be an RSA, ECDSA or Ed25519 key")


def _fingerprint(key: Any) -> str:
    return f"{key.get_name()} {key.get_base64()} ({key.fingerprint})"


class SftpFolder:
    """A directory on an SFTP server, one SSH session per connector (reconnected after errors)."""

    def __init__(self, settings: Mapping[str, Any], connector: str) -> None:
        self.s = settings
        self.connector = connector
        self.dir = PurePosixPath(settings["sftp_path"])
        ledger = settings["ledger_path"]
        self.ledger = (self.dir / ledger) if ledger else None
        host = settings["sftp_host"]
        path = str(self.dir) if self.dir.is_absolute() else f"/~/{self.dir}"  # draft sftp URI form
        self.where = f"sftp://{settings['sftp_user']}@{host}:{settings['sftp_port']}{path}"
        self.origin = f"{host}:{settings['sftp_port']}"
        self._transport: Any = None
        self._sftp: Any = None
        self._lock = threading.RLock()

    def check(self) -> None:
        def run(sftp: Any) -> None:
            for folder, key in ((self.dir, "sftp_path"), (self.ledger, "ledger_path")):
                if folder is None:
                    continue
                try:
                    mode = sftp.stat(str(folder)).st_mode
                except FileNotFoundError:
                    if key == "ledger_path":
                        sftp.mkdir(str(folder))
                        continue
                    raise PermanentError(f"{key} {folder} does not exist on {self.origin}; create "
                                         f"it or fix '{key}' of connector '{self.connector}'") from None
                if mode is not None and not stat.S_ISDIR(mode):
                    raise PermanentError(f"{key} {folder} on {self.origin} is not a folder")
        self._run("checking the folder", run)

    def names(self) -> list[str]:
        def run(sftp: Any) -> list[str]:
            found = set(sftp.listdir(str(self.dir)))
            if self.ledger is not None:
                with suppress(FileNotFoundError):
                    found.update(sftp.listdir(str(self.ledger)))
            return sorted(found)
        return self._run("listing the folder", run)

    def write(self, name: str, data: bytes) -> None:
        def run(sftp: Any) -> None:
            try:
                listing = sftp.listdir(str(self.dir))
            except FileNotFoundError:
                raise PermanentError(f"sftp_path {self.dir} does not exist on {self.origin}; create "
                                     f"it or fix sftp_path of connector '{self.connector}'") from None
            for stale in filter(_temp_pattern(name).match, listing):
                with suppress(FileNotFoundError):  # a crashed attempt's leftover
                    sftp.remove(str(self.dir / stale))
            temp = str(self.dir / f".{name}.{secrets.token_hex(4)}.part")
            final = str(self.dir / name)
            with sftp.open(temp, "wb") as fh:
                fh.set_pipelined(True)
                fh.write(data)
            # close() waited for every write's status: the whole file is on the server.
            try:
                sftp.posix_rename(temp, final)
            except OSError as exc:
                if isinstance(exc, FileNotFoundError | PermissionError):
                    raise
                # The server lacks posix-rename@openssh.com: a v3 RENAME fails if `final` exists,
                # which only happens when another attempt wrote the same bytes first.
                try:
                    sftp.rename(temp, final)
                except OSError:
                    sftp.stat(final)  # raises if the file really is missing
                    with suppress(OSError):
                        sftp.remove(temp)
            if self.ledger is not None:
                try:
                    sftp.stat(str(self.ledger))
                except FileNotFoundError:
                    sftp.mkdir(str(self.ledger))
                with sftp.open(str(self.ledger / name), "wb"):
                    pass
        self._run(f"writing {name}", run, writing=True)

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _run(self, doing: str, action: Callable[[Any], Any], *, writing: bool = False) -> Any:
        import paramiko

        with self._lock:
            reused = self._sftp is not None
            sftp = self._connect()
            try:
                try:
                    return action(sftp)
                except (paramiko.SSHException, EOFError, TimeoutError, ConnectionError):
                    if not reused:
                        raise
                    # A kept session the server dropped meanwhile (idle timeout, restart): every
                    # action is safe to repeat from the start, so try once on a fresh session.
                    log.info("SFTP session to %s was dropped; reconnecting", self.origin)
                    self._drop()
                    return action(self._connect())
            except (PermanentError, TransientError):
                raise
            except PermissionError as exc:
                raise PermanentError(
                    f"SFTP server {self.origin} denied user '{self.s['sftp_user']}' {doing} in "
                    f"{self.dir}: grant {'write' if writing else 'read'} access there or fix "
                    f"sftp_path of connector '{self.connector}'") from exc
            except FileNotFoundError as exc:
                if writing:  # the temp file vanished (another attempt cleaned it): try again
                    self._drop()
                    raise TransientError(f"{doing} on {self.origin}: a file vanished mid-write "
                                         f"({exc}); will retry") from exc
                raise PermanentError(f"sftp_path {self.dir} does not exist on {self.origin}; create "
                                     f"it or fix sftp_path of connector '{self.connector}'") from exc
            except Exception as exc:  # socket errors, SSHException, EOFError, timeouts
                self._drop()
                raise TransientError(f"{doing} on SFTP server {self.origin} failed: "
                                     f"{type(exc).__name__}: {exc}; will retry") from exc

    def _connect(self) -> Any:
        if self._sftp is not None and self._transport is not None and self._transport.is_active():
            return self._sftp
        self._drop()
        import paramiko

        timeout = self.s["timeout"]
        host, port, user = self.s["sftp_host"], self.s["sftp_port"], self.s["sftp_user"]
        expected = _host_key(self.s["sftp_host_key"])
        try:
            sock = connect_tcp(host, port, timeout)  # SSRF guard: a checked, pinned address
        except OSError as exc:
            raise TransientError(f"SFTP server {self.origin} unreachable: {type(exc).__name__}: "
                                 f"{exc}; will retry") from exc
        transport = paramiko.Transport(sock)
        self._transport = transport
        try:
            transport.banner_timeout = transport.auth_timeout = timeout
            transport.handshake_timeout = timeout
            name = expected.get_name()
            transport.get_security_options().key_types = (
                ["rsa-sha2-512", "rsa-sha2-256"] if name == "ssh-rsa" else [name])
            transport.start_client(timeout=timeout)
            presented = transport.get_remote_server_key()
            if presented.asbytes() != expected.asbytes():
                raise PermanentError(
                    f"SFTP server {self.origin} presented host key {_fingerprint(presented)}, not "
                    f"the one in sftp_host_key of connector '{self.connector}'; if the server's key "
                    "really changed, paste the new one there (a mismatch may also mean someone is "
                    "intercepting the connection)")
            if self.s.get("sftp_key"):
                transport.auth_publickey(user, _private_key(self.s.get("sftp_key"),
                                                            self.s.get("sftp_key_passphrase")))
            else:
                transport.auth_password(user, self.s.get("sftp_password"))
            sftp = paramiko.SFTPClient.from_transport(transport)
            sftp.get_channel().settimeout(timeout)
        except PermanentError:
            self._drop()
            raise
        except paramiko.AuthenticationException as exc:
            self._drop()
            how = "key" if self.s.get("sftp_key") else "password"
            raise PermanentError(
                f"SFTP server {self.origin} refused user '{user}' ({how} authentication: "
                f"{type(exc).__name__}); check sftp_user and sftp_{how} of connector "
                f"'{self.connector}'") from None
        except Exception as exc:
            self._drop()
            raise TransientError(f"SSH session with {self.origin} failed: {type(exc).__name__}: "
                                 f"{exc}; will retry") from exc
        self._sftp = sftp
        return sftp

    def _drop(self) -> None:
        for thing in (self._sftp, self._transport):
            if thing is not None:
                with suppress(Exception):
                    thing.close()
        self._sftp = self._transport = None
