"""Reconcilers: one module per kind, ordered steps over ports."""
