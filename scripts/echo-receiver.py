#!/usr/bin/env python3
"""A webhook receiver for trying hookrelay out: prints every request it gets
and answers 204. Usage: scripts/echo-receiver.py [port] (default 8080)."""
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Echo(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        print(f"{self.command} {self.path}", flush=True)
        for name in ("content-type", "webhook-id", "webhook-timestamp", "webhook-signature"):
            print(f"  {name}: {self.headers.get(name)}", flush=True)
        print(f"  {body.decode(errors='replace')}\n", flush=True)
        self.send_response(204)
        self.end_headers()

    do_PUT = do_POST

    def log_message(self, *args):
        pass


port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
print(f"listening on http://127.0.0.1:{port}", flush=True)
HTTPServer(("127.0.0.1", port), Echo).serve_forever()
