"""HTTP blueprints: webhooks, orders, OAuth token endpoint, health and metrics."""
