"""A webhook receiver for the tests: verifies every delivery with the official Standard Webhooks
library (standardwebhooks from PyPI, pinned in requirements.txt), never with tenantry's code.

  python receiver.py            listens on 127.0.0.1, an ephemeral port, printed as `port N`

Each endpoint is a path /hooks/<name>, configured by POST /control/<name> with JSON
{"secrets": [...], "status": 200, "delay_ms": 0, "hold": false, "body": "ok"}. For each delivery it
records the headers, the parsed body and, for each configured secret, whether that secret alone
verifies it (signature, id and timestamp, as the library checks them). `hold` keeps requests
waiting until POST /release/<name>. GET /received/<name> answers the records.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

LOCK = threading.Lock()
CONFIG = {}
RECEIVED = {}
RELEASED = {}


def config(name):
    with LOCK:
        return dict(CONFIG.get(name, {}))


def released(name):
    with LOCK:
        return RELEASED.setdefault(name, threading.Event())


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body, content_type="application/json"):
        data = body.encode()
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self):
        parts = self.path.strip("/").split("/")
        if parts[0] == "received" and len(parts) == 2:
            with LOCK:
                records = list(RECEIVED.get(parts[1], []))
            return self.answer(200, json.dumps(records))
        self.answer(404, "{}")

    def do_POST(self):
        parts = self.path.strip("/").split("/")
        body = self.read_body()
        if len(parts) != 2:
            return self.answer(404, "{}")
        kind, name = parts
        if kind == "control":
            with LOCK:
                CONFIG[name] = json.loads(body or b"{}")
                RELEASED[name] = threading.Event()
            return self.answer(200, "{}")
        if kind == "release":
            released(name).set()
            return self.answer(200, "{}")
        if kind != "hooks":
            return self.answer(404, "{}")
        cfg = config(name)
        headers = {k: v for k, v in self.headers.items()}
        verified = []
        for secret in cfg.get("secrets", []):
            try:
                Webhook(secret).verify(body, headers)
                verified.append(True)
            except WebhookVerificationError:
                verified.append(False)
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        record = {
            "webhook_id": headers.get("webhook-id") or headers.get("Webhook-Id"),
            "webhook_timestamp": headers.get("webhook-timestamp") or headers.get("Webhook-Timestamp"),
            "signatures": len((headers.get("webhook-signature") or headers.get("Webhook-Signature") or "").split()),
            "verified": verified,
            "payload": payload,
            "received_at": time.time(),
        }
        with LOCK:
            RECEIVED.setdefault(name, []).append(record)
        if cfg.get("hold"):
            released(name).wait(60)
        if cfg.get("delay_ms"):
            time.sleep(cfg["delay_ms"] / 1000)
        status = int(cfg.get("status", 200))
        if 300 <= status < 400:
            self.send_response(status)
            self.send_header("location", cfg.get("location", "http://127.0.0.1:1/elsewhere"))
            self.send_header("content-length", "0")
            self.end_headers()
            return
        self.answer(status, cfg.get("body", "ok"), "text/plain")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"port {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
