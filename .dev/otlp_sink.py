"""An OTLP/HTTP sink for make bench: accepts POST /v1/traces and counts what arrived (requests and
bytes, written to the file given as the second argument at exit). It does not decode: the
bench measures what producing and exporting spans costs the server, not a collector."""
import http.server
import signal
import sys

port, report = int(sys.argv[1]), sys.argv[2]
received = {"requests": 0, "bytes": 0}


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("content-length", 0))
        self.rfile.read(length)
        received["requests"] += 1
        received["bytes"] += length
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def stop(*_):
    with open(report, "w") as f:
        f.write(f"{received['requests']} {received['bytes']}\n")
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
http.server.ThreadingHTTPServer(("127.0.0.1", port), Sink).serve_forever()
