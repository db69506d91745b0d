"""A real RTSP server for the stream tests: GStreamer's RTSP server (Debian's gir1.2-gst-rtsp-server-1.0) sending
a live 20 fps MJPEG test pattern at rtsp://127.0.0.1:PORT/cam until killed.

Run as a program (``python rtsp_test_server.py PORT``) so that a test can kill and restart it like a camera."""

from __future__ import annotations

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402 (after choosing the versions)

# I420 before jpegenc: rtpjpegpay refuses the component layout jpegenc picks for other formats.
PIPELINE = ("( videotestsrc is-live=true ! video/x-raw,format=I420,width=160,height=120,framerate=20/1 "
            "! jpegenc ! rtpjpegpay name=pay0 pt=26 )")  # fmt: skip


def main(port: str) -> None:
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE)
    factory.set_shared(True)
    server.get_mount_points().add_factory("/cam", factory)
    server.attach(None)
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main(sys.argv[1])
