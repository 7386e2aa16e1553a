"""A fake SFTP server on loopback (paramiko's server side), serving one local folder as its root.

It behaves like OpenSSH's sftp-server where the edi connector depends on it:
- SFTP version 3 (draft-ietf-secsh-filexfer-02,
  https://datatracker.ietf.org/doc/html/draft-ietf-secsh-filexfer-02): RENAME of a regular file is
  done with link()+unlink(), so it fails (SSH_FX_FAILURE) when the target exists — see
  process_rename in https://github.com/openssh/openssh-portable/blob/master/sftp-server.c;
- the posix-rename@openssh.com extension replaces the target atomically (OpenSSH PROTOCOL §4.3,
  https://github.com/openssh/openssh-portable/blob/master/PROTOCOL); it can be switched off to play
  a server without it;
- password and public-key authentication (RFC 4252), one host key (RFC 4253 §8).
Built on paramiko's ServerInterface / SFTPServerInterface
(https://docs.paramiko.org/en/stable/api/server.html, .../api/sftp.html).

`requests` lists every request served (list, stat, open, write, close, remove, rename,
posix_rename, mkdir), so tests can count what a push costs.

Faults for tests: `deny_writes` answers SSH_FX_PERMISSION_DENIED to every open for writing;
`drop_after_bytes` closes the SSH connection once a file received that many bytes (a connection
lost mid-upload).

`PartnerInbox` is the other half of the fake trading partner: its translator, reading the files
back with independent parsers from PyPI — pydifact for EDIFACT (https://pypi.org/project/pydifact/),
pyx12's X12Reader for X12, which also checks the ISA/GS/ST envelopes and the SE/GE/IEA counts
(https://pypi.org/project/pyx12/) — and the csv module for CSV.
"""

from __future__ import annotations

import csv
import hmac
import io
import logging
import os
import posixpath
import re
import socket
import threading
import warnings
from decimal import Decimal
from pathlib import Path
from typing import Any

import paramiko
from paramiko.sftp import SFTP_FAILURE, SFTP_OK, SFTP_OP_UNSUPPORTED, SFTP_PERMISSION_DENIED

logging.getLogger("paramiko").setLevel(logging.CRITICAL)  # clients that hang up are expected here


class FakeSftpServer:
    """Use as a context manager; `root` is the served folder, `host_key_line` goes in the config."""

    def __init__(self, root: Path, *, users: dict[str, str] | None = None,
                 authorized_keys: dict[str, list[paramiko.PKey]] | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.users = dict(users or {})
        self.authorized_keys = {u: list(keys) for u, keys in (authorized_keys or {}).items()}
        self.host_key = paramiko.ECDSAKey.generate()
        self.posix_rename = True
        self.deny_writes = False
        self.drop_after_bytes: int | None = None
        self.logins: list[str] = []
        self.failed_logins: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self._transports: list[paramiko.Transport] = []
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def host_key_line(self) -> str:
        """As `ssh-keyscan` prints it, minus the host name."""
        return f"{self.host_key.get_name()} {self.host_key.get_base64()}"

    def __enter__(self) -> FakeSftpServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> FakeSftpServer:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(32)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, name="fake-sftp", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.drop_connections()

    def drop_connections(self) -> None:
        """Close every SSH session, as a server restart would."""
        with self._lock:
            transports, self._transports = self._transports, []
        for transport in transports:
            transport.close()

    def _accept(self) -> None:
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        transport = paramiko.Transport(conn)
        transport.add_server_key(self.host_key)
        transport.set_subsystem_handler("sftp", paramiko.SFTPServer, _Files, self)
        with self._lock:
            self._transports.append(transport)
        try:
            transport.start_server(server=_Auth(self, transport))
        except (paramiko.SSHException, EOFError, OSError):
            transport.close()

    # --- what the fake's handlers use ---------------------------------------------------------
    def local(self, path: str) -> str:
        """A client path (absolute or relative to the root) as a path under `root`, never outside."""
        clean = posixpath.normpath("/" + path)
        return str(self.root / clean.lstrip("/"))


class _Auth(paramiko.ServerInterface):
    def __init__(self, fake: FakeSftpServer, transport: paramiko.Transport) -> None:
        self.fake, self.transport = fake, transport

    def get_allowed_auths(self, username: str) -> str:
        return "password,publickey"

    def check_auth_password(self, username: str, password: str) -> int:
        expected = self.fake.users.get(username)
        if expected is not None and hmac.compare_digest(expected.encode(), password.encode()):
            self.fake.logins.append(username)
            return paramiko.AUTH_SUCCESSFUL
        self.fake.failed_logins.append(username)
        return paramiko.AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if any(k.asbytes() == key.asbytes() for k in self.fake.authorized_keys.get(username, [])):
            self.fake.logins.append(username)
            return paramiko.AUTH_SUCCESSFUL
        self.fake.failed_logins.append(username)
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED


class _Handle(paramiko.SFTPHandle):
    def __init__(self, flags: int, fake: FakeSftpServer, transport: paramiko.Transport) -> None:
        super().__init__(flags)
        self.fake, self.transport, self.received = fake, transport, 0

    def write(self, offset: int, data: bytes) -> int:
        self.fake.requests.append(("write", ""))
        limit = self.fake.drop_after_bytes
        if limit is not None and self.received + len(data) > limit:
            keep = max(0, limit - self.received)
            super().write(offset, data[:keep])
            self.transport.close()  # the line goes dead mid-upload
            return SFTP_FAILURE
        self.received += len(data)
        return super().write(offset, data)

    def stat(self) -> Any:
        return paramiko.SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))

    def close(self) -> None:
        self.fake.requests.append(("close", ""))
        super().close()


class _Files(paramiko.SFTPServerInterface):
    """File operations on the fake's root, errors mapped like sftp-server's errno_to_portable."""

    def __init__(self, server: _Auth, fake: FakeSftpServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(server, *args, **kwargs)
        self.fake, self.transport = fake, server.transport

    def _note(self, what: str, path: str) -> None:
        self.fake.requests.append((what, path))

    def list_folder(self, path: str) -> Any:
        """Entries that vanish while the folder is read (another client's temporary file just
        renamed) are left out, as OpenSSH's sftp-server does (process_readdir: an entry whose
        lstat fails is skipped), instead of failing the whole listing."""
        self._note("list", path)
        try:
            folder = self.fake.local(path)
            names = os.listdir(folder)
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)
        entries = []
        for name in names:
            try:
                entries.append(paramiko.SFTPAttributes.from_stat(
                    os.lstat(os.path.join(folder, name)), name))
            except FileNotFoundError:
                continue
        return entries

    def stat(self, path: str) -> Any:
        self._note("stat", path)
        try:
            return paramiko.SFTPAttributes.from_stat(os.stat(self.fake.local(path)))
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)

    lstat = stat

    def open(self, path: str, flags: int, attr: Any) -> Any:
        self._note("open", path)
        writing = flags & (os.O_WRONLY | os.O_RDWR)
        if writing and self.fake.deny_writes:
            return SFTP_PERMISSION_DENIED
        mode = getattr(attr, "st_mode", None) or 0o644
        try:
            fd = os.open(self.fake.local(path), flags, mode)
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)
        if flags & os.O_WRONLY:
            fstr = "ab" if flags & os.O_APPEND else "wb"
        elif flags & os.O_RDWR:
            fstr = "a+b" if flags & os.O_APPEND else "r+b"
        else:
            fstr = "rb"
        handle = _Handle(flags, self.fake, self.transport)
        handle.readfile = handle.writefile = os.fdopen(fd, fstr)
        return handle

    def remove(self, path: str) -> int:
        self._note("remove", path)
        try:
            os.remove(self.fake.local(path))
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)
        return SFTP_OK

    def rename(self, oldpath: str, newpath: str) -> int:
        self._note("rename", newpath)
        old, new = self.fake.local(oldpath), self.fake.local(newpath)
        try:
            os.link(old, new)  # like sftp-server: never replaces an existing file
            os.unlink(old)
        except FileExistsError:
            return SFTP_FAILURE
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)
        return SFTP_OK

    def posix_rename(self, oldpath: str, newpath: str) -> int:
        self._note("posix_rename", newpath)
        if not self.fake.posix_rename:
            return SFTP_OP_UNSUPPORTED
        try:
            os.replace(self.fake.local(oldpath), self.fake.local(newpath))
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)
        return SFTP_OK

    def mkdir(self, path: str, attr: Any) -> int:
        self._note("mkdir", path)
        try:
            os.mkdir(self.fake.local(path))
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)
        return SFTP_OK

    def rmdir(self, path: str) -> int:
        try:
            os.rmdir(self.fake.local(path))
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)
        return SFTP_OK

    def chattr(self, path: str, attr: Any) -> int:
        return SFTP_OK

    def canonicalize(self, path: str) -> str:
        return posixpath.normpath("/" + path)


# --- the partner's translator ------------------------------------------------------------------

FUNCTION_OF = {"9": "new", "5": "replace", "1": "cancel", "00": "new", "05": "replace", "01": "cancel"}


def read_edifact(data: bytes) -> list[tuple[str, list[Any]]]:
    """Segments (tag, elements) of an interchange, UNB to UNZ, after checking UNT and UNZ."""
    from pydifact.parser import Parser
    from pydifact.segmentcollection import Interchange

    encoding = "utf-8" if b"UNOW" in data[:40] else "iso-8859-1"
    text = data.decode(encoding)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydifact ships no directory files to validate against
        interchange = Interchange.from_str(text)  # checks the UNB header and the UNH/UNT pairing
        messages = list(interchange.get_messages())
        segments = [(seg.tag, seg.elements) for seg in Parser().parse(text) if seg.tag != "UNA"]
    assert segments[0][0] == "UNB" and segments[-1][0] == "UNZ", segments
    unh = [i for i, (tag, _) in enumerate(segments) if tag == "UNH"]
    unt = [i for i, (tag, _) in enumerate(segments) if tag == "UNT"]
    assert len(unh) == len(unt) == len(messages) == 1, segments
    assert int(segments[unt[0]][1][0]) == unt[0] - unh[0] + 1, "UNT segment count"
    assert segments[unt[0]][1][1] == segments[unh[0]][1][0], "UNT message reference"
    assert segments[-1][1] == ["1", segments[0][1][4]], "UNZ count and interchange reference"
    return segments


def read_x12(data: bytes) -> list[tuple[str, list[str]]]:
    """Segments (id, elements) of an interchange; pyx12 must report no envelope error."""
    from pyx12.x12file import X12Reader

    reader = X12Reader(io.StringIO(data.decode("ascii")))
    segments = []
    for seg in reader:
        elements = [seg.get_value(f"{seg.get_seg_id()}{i:02d}") or "" for i in range(1, len(seg) + 1)]
        segments.append((seg.get_seg_id(), elements))
    reader.cleanup()
    errors = reader.pop_errors()
    assert not errors, errors
    return segments


def read_csv(data: bytes, delimiter: str = ",") -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline=""), delimiter=delimiter))


def summary(kind: str, data: bytes, delimiter: str = ",") -> dict[str, Any]:
    """What the partner books from one file: function, order id, currency, total, line count."""
    if kind == "edifact":
        segs = read_edifact(data)
        bgm = next(e for t, e in segs if t == "BGM")
        moa = {e[0][0]: Decimal(e[0][1]) for t, e in segs if t == "MOA"}  # the summary ones win
        cux = next(e for t, e in segs if t == "CUX")
        # FTX+AAI: C108 free text in pieces of an..70, cut anywhere; NAD+BY C082 the buyer's id
        note = "".join(_pieces(e[3]) for t, e in segs if t == "FTX" and e[0] == "AAI")
        buyer = next(e for t, e in segs if t == "NAD" and e[0] == "BY")
        return {"function": FUNCTION_OF[bgm[2]], "external_id": bgm[1], "total": moa["86"],
                "currency": cux[0][1], "lines": sum(1 for t, _ in segs if t == "LIN"),
                "note": note or None, "customer": (_pieces(buyer[1][:1]) if len(buyer) > 1
                                                   and buyer[1] else None) or None}
    if kind == "x12":
        segs = read_x12(data)
        beg = next(e for t, e in segs if t == "BEG")
        amt = next(e for t, e in segs if t == "AMT" and e[0] == "TT")
        cur = next(e for t, e in segs if t == "CUR")
        # N9*L1 then MSG texts (an..264, split between words); N1*BT N104 the buyer's id
        texts, notes = [], False
        for tag, elements in segs:
            notes = (tag == "N9" and elements[0] == "L1") or (notes and tag == "MSG")
            if notes and tag == "MSG":
                texts.append(elements[0])
        buyer = next(e for t, e in segs if t == "N1" and e[0] == "BT")
        return {"function": FUNCTION_OF[beg[0]], "external_id": beg[2], "total": Decimal(amt[1]),
                "currency": cur[1], "lines": sum(1 for t, _ in segs if t == "PO1"),
                "note": " ".join(texts) or None,
                "customer": buyer[3] if len(buyer) > 3 and buyer[3] else None}
    rows = read_csv(data, delimiter)
    assert len({(r["action"], r["total"], r["external_id"]) for r in rows}) == 1, rows
    return {"function": rows[0]["action"], "external_id": rows[0]["external_id"],
            "total": Decimal(rows[0]["total"]), "currency": rows[0]["currency"], "lines": len(rows),
            "note": rows[0]["note"] or None, "customer": rows[0]["customer_id"] or None}


def _pieces(element: Any) -> str:
    """An EDIFACT element as pydifact gives it (a string, or a list of components) as text."""
    return element if isinstance(element, str) else "".join(str(c or "") for c in element)


class PartnerInbox:
    """The partner's view of a folder: which orders it holds, as its translator would book them.

    A replacement or cancellation supersedes what came before for the same order (that is what
    BGM 1225 = 5/1 and BEG01 = 05/01 mean); two originals of one order are two orders — the
    duplicate the connector must never cause.
    """

    def __init__(self, folder: Path, kind: str, prefix: str, extension: str,
                 delimiter: str = ",") -> None:
        self.folder, self.kind = Path(folder), kind
        self.prefix, self.extension, self.delimiter = prefix, extension, delimiter

    def prepare(self, order: Any) -> None:
        """The partner takes any SKU (EDI carries item numbers as they are): nothing to create."""

    def files(self, external_id: str) -> list[str]:
        """This order's files, oldest first (by version time, then new < replace < cancel)."""
        pattern = re.compile(rf"^{re.escape(self.prefix)}_{re.escape(external_id)}_(\d{{8}}T\d+Z)_"
                             rf"(new|replace|cancel)_[0-9a-f]{{12}}\.{re.escape(self.extension)}$")
        rank = {"new": 0, "replace": 1, "cancel": 2}
        found = [m for m in map(pattern.match, os.listdir(self.folder)) if m]
        return [m[0] for m in sorted(found, key=lambda m: (m[1], rank[m[2]]))]

    def records(self, external_id: str) -> list[dict[str, Any]]:
        """The orders the partner books from this order's messages, each as its latest message
        says: a replacement or cancellation supersedes what came before; each original opens an
        order of its own. With the buyer's id as the customer and the free text as the note."""
        records: list[dict[str, Any]] = []
        for name in self.files(external_id):
            info = summary(self.kind, (self.folder / name).read_bytes(), self.delimiter)
            assert info["external_id"] in (external_id, external_id[:13]), info
            record = {"reference": name, "total": info["total"],
                      "status": "cancelled" if info["function"] == "cancel" else "open",
                      "customer": info["customer"], "note": info["note"]}
            if info["function"] == "new":
                records.append(record)
            else:
                records = [record]
        return records
