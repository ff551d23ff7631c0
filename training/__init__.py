"""Workstation side: train the emotion CNN on FER-2013 (or your own photos) and evaluate models."""
