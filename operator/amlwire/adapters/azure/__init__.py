"""Azure adapter: SDK clients to domain types, error classification, long-running operations."""
