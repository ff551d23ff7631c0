"""Offline commands beside the service: analyze a recording, draw it, benchmark, and the demo."""
