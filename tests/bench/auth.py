"""What authentication costs per API call: the broker's own JWT vs a trusted issuer's JWT vs a
console session, against an unauthenticated baseline, in one run.

    python tests/bench/auth.py [--requests 3000]

Each variant sends the same GET through the WSGI app in this process (Flask's test client, so
no network or load-generator noise: the figures are the CPU the gateway spends), on the
embedded SQLite default:

  baseline        GET /healthz (no authentication)
  broker token    GET /api/v1/orders/{id} with one of our ES256 access tokens (signature, claims,
                  and the jti looked up in the tokens table)
  issuer token    the same call with an ES256 access token of a real OpenID Connect provider
                  (tests/idp: oidc-provider on loopback); its keys come from the cached JWKS
  console session GET /console/ with a signed-in local admin (server-side session lookup)

It prints requests/s, p50/p95/p99 latency and each variant's cost relative to the baseline.
Needs Node.js for the provider (see tests/idp).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE.parents[1] / "tests")]

from harness import Stack, order  # noqa: E402
from idp.oidc import OidcProvider  # noqa: E402

API = "https://broker.test/api"


def measure(name: str, call: Any, n: int) -> dict[str, Any]:
    for _ in range(min(100, n)):  # warm caches (keys, JWKS, connections)
        assert call().status_code == 200
    laps = []
    start = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        status = call().status_code
        laps.append(time.perf_counter() - t)
        assert status == 200, (name, status)
    total = time.perf_counter() - start
    laps.sort()
    pick = lambda q: laps[min(len(laps) - 1, int(q * len(laps)))] * 1000  # noqa: E731
    return {"name": name, "rps": n / total, "p50": pick(0.50), "p95": pick(0.95),
            "p99": pick(0.99), "mean": statistics.fmean(laps) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    n = parser.parse_args().requests
    accounts = {"bench": {"email": "bench@corp.test", "groups": ["broker-admins"]}}
    clients = [{"client_id": "svc", "client_secret": "svc-secret", "redirect_uris": [],
                "grant_types": ["client_credentials"], "response_types": []}]
    resources = {API: {"audience": "fobo-broker", "scope": "broker", "alg": "ES256",
                       "accessTokenTTL": 900}}
    with tempfile.TemporaryDirectory() as tmp, OidcProvider(accounts, clients, resources) as idp:
        stack = Stack(Path(tmp), "sqlite", "embedded")
        try:
            stack.source("shop")
            made = stack.cli("clients", "create", "bench", "--source", "shop", "--json")
            ours = stack.client.post("/oauth/token", data={"grant_type": "client_credentials"},
                                     auth=(made["client_id"], made["client_secret"])).json["access_token"]
            order_id = stack.client.post("/api/v1/orders", json=order("B-1"),
                                         headers={"Authorization": f"Bearer {ours}"}).json["id"]
            stack.cli("issuers", "add", "corp", "--issuer", idp.issuer, "--audience", "fobo-broker",
                      "--role", "admin=client_id:svc")
            theirs = idp.client_credentials_token("svc", "svc-secret", API)["access_token"]
            result = stack.app.test_cli_runner().invoke(args=["broker", "users", "create-admin", "root"])
            password = result.output.split("password (shown once): ")[1].strip()
            browser = stack.app.test_client()
            page = browser.get("/console/login").get_data(as_text=True)
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
            assert browser.post("/console/login", data={"username": "root", "password": password,
                                                        "csrf_token": csrf}).status_code == 303
            url = f"/api/v1/orders/{order_id}"
            rows = [
                measure("baseline /healthz", lambda: stack.client.get("/healthz"), n),
                measure("broker token", lambda: stack.client.get(
                    url, headers={"Authorization": f"Bearer {ours}"}), n),
                measure("issuer token", lambda: stack.client.get(
                    url, headers={"Authorization": f"Bearer {theirs}"}), n),
                measure("console session", lambda: browser.get("/console/"), n),
            ]
        finally:
            stack.close()
    base = rows[0]["mean"]
    print(f"{'variant':<18} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'x baseline':>11}")
    for row in rows:
        print(f"{row['name']:<18} {row['rps']:>8.0f} {row['p50']:>8.2f} {row['p95']:>8.2f} "
              f"{row['p99']:>8.2f} {row['mean'] / base:>11.1f}")


if __name__ == "__main__":
    main()
