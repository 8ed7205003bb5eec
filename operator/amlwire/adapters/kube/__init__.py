"""Kubernetes adapter: server-side apply with field manager `amlwire`, events, child manifests."""
