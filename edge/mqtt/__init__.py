"""The way out to the network: the publisher, the payloads it carries, Home Assistant discovery, and the
one way in, the commands it listens to."""
