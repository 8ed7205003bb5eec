"""The local Azure emulator: an HTTPS server of the ARM endpoints amlwire uses, for tests and the demo."""
