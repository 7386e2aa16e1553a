"""Channel adapters: verify a vendor's webhook exactly as documented, then map its payload."""
