"""The `amlwire` command."""
