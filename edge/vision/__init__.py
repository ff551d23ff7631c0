"""What the camera's frames become: face boxes (detector), emotion probabilities (classifier, on the
LiteRT interpreter described by a model card) and tracks with events (tracker)."""
