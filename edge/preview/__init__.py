"""The live view: a small web page served by the service for aiming the camera.

Off by default, and bound to 127.0.0.1 when on, because "no image leaves the device" is what the
product promises: a remote look goes through an SSH tunnel (docs/home-assistant.md). Standard
library only (http.server in a thread); frames are drawn and JPEG-encoded only while a browser
watches the stream, so an idle preview costs nothing per frame.
"""

from edge.preview.server import LiveView, PreviewServer

__all__ = ["LiveView", "PreviewServer"]
