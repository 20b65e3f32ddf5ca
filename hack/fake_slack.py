"""A small fake of Slack's Web API and incoming webhooks, for tests and the demo (loopback only).

The real ``slack_sdk`` clients talk to it over HTTP: ``WebClient(base_url=fake.api_url)`` and
``WebhookClient(fake.webhook_url)``.

* ``POST /api/auth.test``: who the token is;
* ``POST /api/chat.postMessage``: form or JSON body; needs ``Authorization: Bearer xoxb-...``
  (the ``token`` given to :func:`serve`, or any ``xoxb-`` token when none was given), else
  ``invalid_auth`` / ``not_authed``; an unknown channel is ``channel_not_found``; no text and no
  blocks is ``no_text``; blocks beyond Slack's limits (header > 150 characters, > 10 section
  fields, a field > 2000, section text > 3000, > 50 blocks) are ``invalid_blocks``. Answers
  ``{"ok": true, "channel": <id>, "ts": ...}``;
* ``POST /webhook/<anything>`` (and ``/services/<anything>``): a webhook post, answers ``ok``;
* :meth:`FakeSlack.rate_limit_next` (or ``POST /_rate_limit?n=N``): the next N calls answer
  HTTP 429 with ``Retry-After: 1``, as Slack does;
* ``GET /_messages``: every message received, as JSON (``api``, ``channel``, ``text``,
  ``blocks``, ``ts``, ``path``).

From Python::

    fake = fake_slack.serve()            # 127.0.0.1, ephemeral port, background thread
    client = WebClient(token=fake.token, base_url=fake.api_url)
    fake.messages; fake.requests; fake.rate_limit_next(2); fake.stop()

By hand: ``python hack/fake_slack.py --port 8765 [--token xoxb-...] [--channel trading-alerts]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("fake_slack")

DEFAULT_TOKEN = "xoxb-quantramp-fake"
DEFAULT_CHANNELS = ("trading-alerts", "quantramp")


def _block_error(blocks: Any) -> str:
    """Why Slack would refuse these blocks (``""`` if it would not)."""
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "blocks must be a list of at most 50"
    for b in blocks:
        if not isinstance(b, dict) or "type" not in b:
            return "a block needs a type"
        if b["type"] == "header":
            t = b.get("text", {})
            if t.get("type") != "plain_text" or not 0 < len(t.get("text", "")) <= 150:
                return "header text must be plain_text of 1-150 characters"
        if b["type"] == "section":
            fields = b.get("fields", [])
            if len(fields) > 10:
                return "a section has at most 10 fields"
            if any(not 0 < len(f.get("text", "")) <= 2000 for f in fields):
                return "a section field has 1-2000 characters"
            if "text" in b and not 0 < len(b["text"].get("text", "")) <= 3000:
                return "section text has 1-3000 characters"
            if "text" not in b and not fields:
                return "a section needs text or fields"
        if b["type"] == "context" and not 0 < len(b.get("elements", [])) <= 10:
            return "a context block has 1-10 elements"
    return ""


@dataclass
class FakeSlack:
    """A running fake (see the module docstring). ``messages``: every message received;
    ``requests``: (method, path, HTTP status) of every request, oldest first."""

    server: ThreadingHTTPServer
    thread: threading.Thread
    token: str | None
    channels: dict[str, str]
    messages_: list[dict] = field(default_factory=list)
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    limit_left: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    seq: int = 0

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>/``."""
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/"

    @property
    def api_url(self) -> str:
        """The Web API base, for ``WebClient(base_url=...)``."""
        return self.url + "api/"

    @property
    def webhook_url(self) -> str:
        """An incoming-webhook URL on this fake."""
        return self.url + "webhook/T0000FAKE/B0000FAKE/fakewebhooksecret"

    @property
    def messages(self) -> list[dict]:
        """A copy of the messages received, oldest first."""
        with self.lock:
            return [dict(m) for m in self.messages_]

    def rate_limit_next(self, n: int) -> None:
        """Answer the next ``n`` API or webhook calls with HTTP 429 and ``Retry-After: 1``."""
        with self.lock:
            self.limit_left = n

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    server_version = "fake-slack/1"
    fake: FakeSlack  # set per server class

    def log_message(self, fmt: str, *args: Any) -> None:  # route to logging, not stderr
        log.debug("%s %s", self.address_string(), fmt % args)

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        with self.fake.lock:  # logged before answering, so a client that has its answer sees it logged
            self.fake.requests.append((self.command, urlsplit(self.path).path, status))
        self.send_response(status)
        ctype = "text/plain; charset=utf-8" if isinstance(body, str) else "application/json; charset=utf-8"
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)
        log.info("%s %s -> %d", self.command, urlsplit(self.path).path, status)

    def _body(self) -> dict[str, Any]:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if ctype == "application/json":
            return json.loads(raw or b"{}")
        form = {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
        for k in ("blocks", "attachments"):
            if isinstance(form.get(k), str):
                form[k] = json.loads(form[k])
        return form

    def _limited(self) -> bool:
        with self.fake.lock:
            if self.fake.limit_left <= 0:
                return False
            self.fake.limit_left -= 1
        return True

    def do_GET(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        if path == "/_messages":
            return self._send(200, self.fake.messages)
        return self._send(404, {"ok": False, "error": "unknown_method"})

    def do_POST(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        path = parts.path
        if path == "/_rate_limit":
            n = int(parse_qs(parts.query).get("n", ["1"])[0])
            self.fake.rate_limit_next(n)
            return self._send(200, {"ok": True, "rate_limit_next": n})
        try:
            body = self._body()
        except ValueError:
            return self._send(400, "invalid_payload" if not path.startswith("/api/") else {"ok": False, "error": "invalid_json"})
        if path.startswith(("/webhook/", "/services/")):
            return self._webhook(path, body)
        if not path.startswith("/api/"):
            return self._send(404, {"ok": False, "error": "unknown_method"})
        if self._limited():
            return self._send(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"})
        method = path[len("/api/"):]
        user = self._auth(body)
        if isinstance(user, dict):
            return self._send(200, user)
        if method == "auth.test":
            return self._send(200, {"ok": True, "url": self.fake.url, "team": "quantramp-fake", "user": "quantramp",
                                    "team_id": "T0000FAKE", "user_id": "U0000FAKE", "bot_id": "B0000FAKE"})
        if method == "chat.postMessage":
            return self._post_message(body)
        return self._send(404, {"ok": False, "error": "unknown_method"})

    def _auth(self, body: dict[str, Any]) -> dict[str, Any] | str:
        auth = self.headers.get("Authorization") or ""
        token = auth[len("Bearer "):].strip() if auth.startswith("Bearer ") else str(body.get("token") or "")
        if not token:
            return {"ok": False, "error": "not_authed"}
        good = token == self.fake.token if self.fake.token else token.startswith("xoxb-")
        return token if good else {"ok": False, "error": "invalid_auth"}

    def _post_message(self, body: dict[str, Any]) -> None:
        channel = str(body.get("channel") or "")
        cid = self.fake.channels.get(channel.lstrip("#")) or (channel if channel in self.fake.channels.values() else "")
        if not cid:
            return self._send(200, {"ok": False, "error": "channel_not_found"})
        if not body.get("text") and not body.get("blocks"):
            return self._send(200, {"ok": False, "error": "no_text"})
        if "blocks" in body and (why := _block_error(body["blocks"])):
            return self._send(200, {"ok": False, "error": "invalid_blocks", "errors": [why]})
        with self.fake.lock:
            self.fake.seq += 1
            ts = f"{int(time.time())}.{self.fake.seq:06d}"
            self.fake.messages_.append({"api": "chat.postMessage", "channel": cid, "text": body.get("text", ""),
                                        "blocks": body.get("blocks", []), "ts": ts, "path": "/api/chat.postMessage"})
        self._send(200, {"ok": True, "channel": cid, "ts": ts,
                         "message": {"type": "message", "text": body.get("text", ""), "ts": ts}})

    def _webhook(self, path: str, body: dict[str, Any]) -> None:
        if self._limited():
            return self._send(429, "rate_limited", {"Retry-After": "1"})
        if not body.get("text") and not body.get("blocks"):
            return self._send(400, "no_text")
        if "blocks" in body and _block_error(body["blocks"]):
            return self._send(400, "invalid_blocks")
        with self.fake.lock:
            self.fake.messages_.append({"api": "webhook", "channel": "", "text": body.get("text", ""),
                                        "blocks": body.get("blocks", []), "ts": "", "path": path})
        self._send(200, "ok")


def serve(host: str = "127.0.0.1", port: int = 0, token: str | None = DEFAULT_TOKEN,
          channels: tuple[str, ...] = DEFAULT_CHANNELS) -> FakeSlack:
    """Start a fake on ``host:port`` (0: an ephemeral port) in a daemon thread.

    ``token``: the only bot token accepted (None: any ``xoxb-`` token); ``channels``: the
    channel names that exist (ids ``C0000000001``...). Returns the running :class:`FakeSlack`."""
    handler = type("Handler", (_Handler,), {})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-slack", daemon=True)
    fake = FakeSlack(server=server, thread=thread, token=token,
                     channels={c: f"C{i:010d}" for i, c in enumerate(channels, 1)})
    handler.fake = fake
    thread.start()
    return fake


def main() -> None:
    p = argparse.ArgumentParser(description="fake Slack Web API and incoming webhooks on loopback")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--token", default=DEFAULT_TOKEN, help="the accepted bot token ('' accepts any xoxb- token)")
    p.add_argument("--channel", action="append", help="a channel that exists (repeatable)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    fake = serve(args.host, args.port, args.token or None, tuple(args.channel or DEFAULT_CHANNELS))
    print(f"fake Slack: api {fake.api_url}  webhook {fake.webhook_url}  messages {fake.url}_messages", flush=True)
    try:
        fake.thread.join()
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
