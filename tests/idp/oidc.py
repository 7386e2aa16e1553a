"""A real OpenID Connect provider for tests: panva's oidc-provider (npm) on loopback.

`install()` puts the pinned npm package in a per-lockfile cache once; `OidcProvider` writes a
config (fresh signing keys each start unless told otherwise), runs `node provider.mjs` and
offers the few HTTP calls tests need. Everything the provider stores lives in memory, so a
restart forgets sessions, grants and tokens.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import requests
from joserfc.jwk import ECKey, RSAKey

IDP_DIR = Path(__file__).resolve().parent
FILES = ("package.json", "package-lock.json", "provider.mjs")
NPM_FLAGS = ("--no-audit", "--no-fund", "--ignore-scripts")
TIMEOUT = 10.0


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found on PATH: the OIDC test provider needs Node.js and npm")
    return path


def free_port() -> int:
    """A loopback port free right now (the OS picks it; another process could still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def install() -> Path:
    """Install the pinned oidc-provider into a cache directory keyed by the lockfile's hash.

    Safe for concurrent pytest processes: an flock serialises installers, npm works in a temp
    directory that is renamed into place only when complete. provider.mjs is refreshed on every
    call so edits to it never need a reinstall.
    """
    node, npm = _tool("node"), _tool("npm")
    digest = hashlib.sha256((IDP_DIR / "package-lock.json").read_bytes()).hexdigest()[:16]
    root = Path(os.environ.get("FOBO_OIDC_CACHE") or Path.home() / ".cache" / "fobo-broker")
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"oidc-provider-{digest}"
    with open(root / f"oidc-provider-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "node_modules" / "oidc-provider" / "package.json").is_file():
            work = Path(tempfile.mkdtemp(prefix=f".oidc-provider-{digest}-", dir=root))
            try:
                for name in FILES:
                    shutil.copy2(IDP_DIR / name, work / name)
                _npm(npm, node, work)
                shutil.rmtree(target, ignore_errors=True)
                work.rename(target)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        script = target / "provider.mjs"
        if not script.is_file() or script.read_bytes() != (IDP_DIR / "provider.mjs").read_bytes():
            staged = target / ".provider.mjs.tmp"
            shutil.copy2(IDP_DIR / "provider.mjs", staged)
            staged.replace(script)
    return target


def _npm(npm: str, node: str, workdir: Path) -> None:
    """`npm ci` from the lockfile; `npm install` only if ci itself is unusable."""
    env = {**os.environ, "PATH": f"{Path(node).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    errors = []
    for command in ("ci", "install"):
        done = subprocess.run([npm, command, *NPM_FLAGS], cwd=workdir, env=env, capture_output=True,
                              text=True, timeout=600, check=False)
        if done.returncode == 0:
            return
        errors.append(f"npm {command} exited {done.returncode}:\n{done.stderr[-4000:]}")
    raise RuntimeError("installing oidc-provider failed\n" + "\n".join(errors))


def generate_jwks() -> dict[str, Any]:
    """A private JWK set with an ES256 and an RS256 signing key, each with a fresh kid."""
    ec = ECKey.generate_key("P-256", parameters={"kid": f"es256-{secrets.token_hex(6)}", "use": "sig",
                                                 "alg": "ES256"}, private=True)
    rsa = RSAKey.generate_key(2048, parameters={"kid": f"rs256-{secrets.token_hex(6)}", "use": "sig",
                                                "alg": "RS256"}, private=True)
    return {"keys": [ec.as_dict(private=True), rsa.as_dict(private=True)]}


class _Forms(HTMLParser):
    """Collects each <form>'s action, method and named <input> values."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {key: value or "" for key, value in attrs}
        if tag == "form":
            self.forms.append({"action": values.get("action", ""), "method": values.get("method", "get"),
                               "fields": {}})
        elif tag == "input" and self.forms and values.get("name"):
            self.forms[-1]["fields"][values["name"]] = values.get("value", "")


def _basic(client_id: str, secret: str) -> tuple[str, str]:
    """client_secret_basic per RFC 6749 §2.3.1: form-encode before Basic (oidc-provider decodes)."""
    return quote(client_id, safe=""), quote(secret, safe="")


class OidcProvider:
    """One oidc-provider process on 127.0.0.1; the issuer has no trailing slash."""

    def __init__(self, accounts: dict[str, dict[str, Any]], clients: list[dict[str, Any]],
                 resources: dict[str, dict[str, Any]], port: int | None = None, *,
                 access_token_ttl: int = 300, refresh_token_ttl: int = 3600,
                 startup_timeout: float = 30.0) -> None:
        self.accounts, self.clients, self.resources = accounts, clients, resources
        self.port = port or free_port()
        self.access_token_ttl, self.refresh_token_ttl = access_token_ttl, refresh_token_ttl
        self.startup_timeout = startup_timeout
        self.jwks = generate_jwks()
        self._cookie_keys = [secrets.token_urlsafe(32)]
        self._workdir = Path(tempfile.mkdtemp(prefix="fobo-oidc-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> OidcProvider:
        """Launch node and wait for its READY line; on failure raise with its stderr.

        node's stdin is a pipe from us: it exits when we do, even if stop() never runs.
        """
        if self._process is not None:
            return self
        node, directory = _tool("node"), install()
        config = self._workdir / "config.json"
        config.write_text(json.dumps({
            "issuer": self.issuer, "port": self.port, "jwks": self.jwks, "clients": self.clients,
            "accounts": self.accounts, "resources": self.resources, "cookie_keys": self._cookie_keys,
            "access_token_ttl": self.access_token_ttl, "refresh_token_ttl": self.refresh_token_ttl,
        }))
        config.chmod(0o600)
        stdout, stderr = self._workdir / "stdout.log", self._workdir / "stderr.log"
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            self._process = subprocess.Popen([node, "provider.mjs", str(config)], cwd=directory,
                                             stdin=subprocess.PIPE, stdout=out, stderr=err)
        deadline = time.monotonic() + self.startup_timeout
        while f"READY {self.issuer}" not in stdout.read_text(errors="replace"):
            failed = self._process.poll() is not None
            if failed or time.monotonic() > deadline:
                self.stop()
                why = "exited" if failed else f"not ready after {self.startup_timeout}s"
                raise RuntimeError(f"oidc-provider {why}:\n{self.stderr()}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self, rotate_keys: bool = False) -> None:
        """Same port and issuer; state is lost. rotate_keys: new keys with new kids."""
        self.stop()
        if rotate_keys:
            self.jwks = generate_jwks()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def stderr(self) -> str:
        """What node wrote to stderr: warnings plus one line per OAuth error it returned."""
        with contextlib.suppress(FileNotFoundError):
            return (self._workdir / "stderr.log").read_text(errors="replace")
        return ""

    def __enter__(self) -> OidcProvider:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- HTTP ----------------------------------------------------------------------------

    def discovery(self) -> dict[str, Any]:
        response = requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=TIMEOUT)
        response.raise_for_status()
        return response.json()

    def public_jwks(self) -> dict[str, Any]:
        response = requests.get(self.discovery()["jwks_uri"], timeout=TIMEOUT)
        response.raise_for_status()
        return response.json()

    def token_request(self, client_id: str, secret: str, **params: str) -> requests.Response:
        """POST to the token endpoint with client_secret_basic; the caller checks the outcome."""
        return requests.post(self.discovery()["token_endpoint"], data=params,
                             auth=_basic(client_id, secret), timeout=TIMEOUT)

    def client_credentials_token(self, client_id: str, secret: str, resource: str,
                                 scope: str | None = None) -> dict[str, Any]:
        params = {"grant_type": "client_credentials", "resource": resource}
        if scope is not None:
            params["scope"] = scope
        response = self.token_request(client_id, secret, **params)
        if response.status_code != 200:
            raise RuntimeError(f"client_credentials refused ({response.status_code}): {response.text}")
        return response.json()

    def revoke(self, token: str, client_id: str, secret: str, hint: str | None = None) -> None:
        data = {"token": token, **({"token_type_hint": hint} if hint else {})}
        response = requests.post(self.discovery()["revocation_endpoint"], data=data,
                                 auth=_basic(client_id, secret), timeout=TIMEOUT)
        if response.status_code != 200:
            raise RuntimeError(f"revocation refused ({response.status_code}): {response.text}")

    def introspect(self, token: str, client_id: str, secret: str) -> dict[str, Any]:
        response = requests.post(self.discovery()["introspection_endpoint"], data={"token": token},
                                 auth=_basic(client_id, secret), timeout=TIMEOUT)
        response.raise_for_status()
        return response.json()

    def sign_in(self, session: requests.Session, authorize_url: str, login: str) -> str:
        """Drive the browser part of an authorization request as `login` would.

        Follows redirects only within the provider, fills the devInteractions login form (and a
        consent form should one appear) and returns the first Location leaving the provider —
        the client's redirect_uri with code/state/iss or error params — without requesting it.
        """
        method, url, data = "GET", authorize_url, None
        logged_in = False
        for _ in range(20):
            response = session.request(method, url, data=data, allow_redirects=False, timeout=TIMEOUT)
            if response.is_redirect:
                location = urljoin(response.url, response.headers["Location"])
                if not self._inside(location):
                    return location
                method, url, data = "GET", location, None
                continue
            parser = _Forms()
            parser.feed(response.text)
            form = next((f for f in parser.forms if f["fields"].get("prompt") in ("login", "consent")), None)
            if response.status_code != 200 or form is None:
                raise RuntimeError(f"sign-in stuck at {response.url} ({response.status_code}): "
                                   f"{response.text[:2000]}")
            fields = dict(form["fields"])
            if fields["prompt"] == "login":
                if logged_in:
                    raise RuntimeError(f"login form shown again after signing in as {login!r}")
                logged_in = True
                fields.update(login=login, password="any")
            method, url, data = "POST", urljoin(response.url, form["action"]), fields
        raise RuntimeError(f"sign-in did not leave the provider: last URL {url}")

    def _inside(self, url: str) -> bool:
        parts, ours = urlsplit(url), urlsplit(self.issuer)
        return (parts.scheme, parts.netloc) == (ours.scheme, ours.netloc)


def node_required() -> None:
    """Skip outside CI when Node.js is missing; in CI (`CI` set) a missing Node.js fails."""
    import pytest

    if shutil.which("node") and shutil.which("npm"):
        return
    if os.environ.get("CI"):
        pytest.fail("node and npm are required for the OpenID Connect provider tests")
    pytest.skip("node/npm not installed: the OpenID Connect test provider needs Node.js")
