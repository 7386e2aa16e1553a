"""Test-only OpenID Connect provider (panva/oidc-provider on Node.js); see oidc.py."""
