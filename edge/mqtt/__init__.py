"""The way out to the network: the publisher, the payloads it carries and Home Assistant discovery."""
