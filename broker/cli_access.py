"""CLI for who may get in: local console users and trusted company issuers."""

from __future__ import annotations

import click

from broker.cli_common import actor, fail, out, rt, setup_call, table


@click.group("users", context_settings={"max_content_width": 100})
def users_group() -> None:
    """Local console users (the bootstrap admin)."""


@users_group.command("create-admin")
@click.argument("username")
@click.option("--role", type=click.Choice(["admin", "operator", "viewer"]), default="admin",
              show_default=True)
@click.option("--password-stdin", is_flag=True,
              help="Read the password from stdin instead of generating one.")
@click.option("--reset-password", is_flag=True, help="Set a new password for an existing user.")
def users_create_admin(username: str, role: str, password_stdin: bool, reset_password: bool) -> None:
    """Create a local console user; without --password-stdin a strong password is generated
    and shown once. Passwords are stored as Argon2id hashes."""
    from broker.services.users import create_user

    password = click.get_text_stream("stdin").readline().rstrip("\r\n") if password_stdin else None
    _, generated = setup_call(create_user, rt().db, username, password, role=role,
                               reset=reset_password, actor=actor())
    click.echo(f"user {username} ({role}) {'updated' if reset_password else 'created'}; sign in at "
               f"{rt().settings.public_url}/console/login")
    if generated:
        click.echo(f"password (shown once): {generated}")


@users_group.command("list")
@click.option("--json", "as_json", is_flag=True)
def users_list(as_json: bool) -> None:
    from broker.services.users import list_users

    rows = list_users(rt().db)
    out(rows, as_json, table(rows, ["username", "role", "disabled", "last_login_at"]))


@click.group("issuers", short_help="Trusted company identity providers.")
def issuers_group() -> None:
    """Trusted company OpenID Connect issuers (API tokens and console sign-in)."""


def _issuer_options(fn: click.decorators.FC) -> click.decorators.FC:
    options = [
        click.option("--issuer", "issuer_url", help="Issuer URL, exactly as in its discovery document."),
        click.option("--audience", help="The `aud` its access tokens carry for the broker."),
        click.option("--alg", "algorithms", multiple=True,
                     help="Allowed signature algorithm (repeat); default RS256 and ES256."),
        click.option("--token-type", "token_types", multiple=True,
                     help="Accepted `typ` of access tokens (repeat); default at+jwt (RFC 9068)."),
        click.option("--role", "rules", multiple=True,
                     help="ROLE=CLAIM:VALUE, e.g. admin=groups:broker-admins (repeat). Replaces "
                          "the rules; no matching rule means no access."),
        click.option("--client-id", help="Console sign-in: the broker's client id at the issuer."),
        click.option("--client-secret", help="Console sign-in: its secret, or @FILE."),
        click.option("--scopes", help="Console sign-in scopes (default: openid email profile)."),
        click.option("--enable/--disable", "enabled", default=None),
        click.option("--json", "as_json", is_flag=True),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _secret(value: str | None) -> str | None:
    if value and value.startswith("@"):
        try:
            with open(value[1:], encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError as exc:
            fail(f"cannot read {value[1:]}: {exc.strerror}")
    return value


def _upsert(name: str, issuer_url: str | None, audience: str | None, algorithms: tuple[str, ...],
            token_types: tuple[str, ...], rules: tuple[str, ...], client_id: str | None,
            client_secret: str | None, scopes: str | None, enabled: bool | None,
            as_json: bool) -> None:
    from broker.services.issuers import public_view, upsert_issuer

    runtime = rt()
    row, created = setup_call(
        upsert_issuer, runtime.db, runtime.box, name, issuer=issuer_url, audience=audience,
        algorithms=list(algorithms) or None, token_types=list(token_types) or None,
        role_rules=list(rules) if rules else None, client_id=client_id,
        client_secret=_secret(client_secret), scopes=scopes, enabled=enabled, actor=actor())
    view = public_view(row)
    text = f"issuer {name} {'added' if created else 'updated'}: {row.issuer}"
    if not row.role_rules:
        text += "\nwarning: no --role rules yet, so its tokens grant no access"
    if row.client_id:
        text += f"\nconsole sign-in redirect URI: {runtime.settings.public_url}/console/auth/callback"
    out(view, as_json, text)


@issuers_group.command("add")
@click.argument("name")
@_issuer_options
def issuers_add(name: str, **options: object) -> None:
    """Trust an issuer's access tokens on the API (and, with --client-id, console sign-in)."""
    _upsert(name, **options)  # type: ignore[arg-type]


@issuers_group.command("configure")
@click.argument("name")
@_issuer_options
def issuers_configure(name: str, **options: object) -> None:
    """Change some settings of a trusted issuer (the others stay)."""
    _upsert(name, **options)  # type: ignore[arg-type]


@issuers_group.command("list")
@click.option("--json", "as_json", is_flag=True)
def issuers_list(as_json: bool) -> None:
    from broker.services.issuers import list_issuers

    rows = list_issuers(rt().db)
    out(rows, as_json, table(rows, ["name", "issuer", "audience", "role_rules", "client_id",
                                      "enabled"]))


@issuers_group.command("remove")
@click.argument("name")
def issuers_remove(name: str) -> None:
    from broker.services.issuers import remove_issuer

    setup_call(remove_issuer, rt().db, name, actor=actor())
    click.echo(f"issuer {name} removed; its tokens are refused within seconds")


@issuers_group.command("check")
@click.argument("name")
def issuers_check(name: str) -> None:
    """Fetch the issuer's discovery document and keys, as the gateway will."""
    from broker.identity.issuers import IssuerUnavailable, discover
    from broker.services.issuers import list_issuers

    found = next((i for i in list_issuers(rt().db) if i["name"] == name), None)
    if found is None:
        fail(f"no issuer named {name!r}")
    try:
        metadata, keys = discover(found["issuer"])
    except IssuerUnavailable as exc:
        fail(str(exc))
    kids = ", ".join(str(k.kid) for k in keys.keys) or "none"
    click.echo(f"{name}: ok; {len(keys.keys)} signing key(s) ({kids}); token endpoint "
               f"{metadata.get('token_endpoint')}")
