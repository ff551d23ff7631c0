"""Workstation side: quantise a trained Keras model to a verified full-int8 TFLite model with its card."""
