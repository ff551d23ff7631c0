"""``emotion-edge watch``: a fleet's MQTT events into one SQLite database, with a live view (see watcher.py)."""
