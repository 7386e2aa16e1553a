"""Real back offices for connector tests, built once per test session and shared."""
