"""Identity: the broker's own OAuth 2.0 authorization server and the bearer-token guard."""
