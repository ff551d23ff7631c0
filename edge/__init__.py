"""emotion-edge: facial-expression recognition on a Raspberry Pi, published over MQTT."""

__version__ = "0.2.0"
