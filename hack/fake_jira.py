"""A small fake of JIRA's REST API v2, for tests and the demo (loopback only).

The real ``jira`` client (3.10.5) talks to it over HTTP. It serves the calls the quantramp
adapter makes (observed by logging every request) and a few the client makes on its own:

* ``GET /rest/api/2/serverInfo``, ``GET /rest/api/2/myself``, ``GET /rest/api/2/field`` (the
  client reads the field list before its first search, to translate field names),
  ``GET /rest/api/2/project/{key}``;
* ``POST /rest/api/2/issue``: fields project (``{"key"}`` or ``{"id"}``), summary (1-255),
  issuetype (``{"name"}``; one of ``issue_types``), description, labels (no spaces), priority
  (``{"name"}``; Highest..Lowest). Keys ``<PROJECT>-1``, ``-2``...; 400 with JIRA's ``errors``
  shape on a bad field; with ``no_priority=True`` a priority is refused as on a project whose
  create screen lacks the field;
* ``GET /rest/api/2/issue/{key}``;
* ``GET|POST /rest/api/2/search`` (Server / Data Center) and ``/rest/api/2/search/jql`` (Cloud):
  only the JQL ``project = KEY AND labels = "label"`` (quotes optional, keywords any case, optional
  ``ORDER BY created ASC|DESC``); any other JQL is a 400, as JIRA does for a query it cannot parse;
* ``GET|POST /rest/api/2/issue/{key}/comment``;
* ``GET /_tickets``: every ticket with its comments, as JSON.

Every call needs ``Authorization: Bearer <token>`` (or basic ``user:token`` when ``user`` is
given), else 401. From Python::

    fake = fake_jira.serve()             # 127.0.0.1, ephemeral port, project QR
    JIRA(server=fake.url, token_auth=fake.token, ...)
    fake.tickets; fake.requests; fake.stop()

By hand: ``python hack/fake_jira.py --port 8766 [--token ...] [--project QR]``.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger("fake_jira")

DEFAULT_TOKEN = "jira-quantramp-fake-token"
API = "/rest/api/2"
PRIORITIES = ("Highest", "High", "Medium", "Low", "Lowest")
JQL_RE = re.compile(
    r'^\s*project\s*=\s*"?(?P<project>[A-Z][A-Z0-9_]*)"?\s+AND\s+labels\s*=\s*"?(?P<label>[^"\s]+)"?'
    r'(\s+ORDER\s+BY\s+created(\s+(?P<dir>ASC|DESC))?)?\s*$',
    re.IGNORECASE,
)
FIELDS = [
    {"id": f, "key": f, "name": f.capitalize(), "custom": False, "navigable": True, "searchable": True,
     "clauseNames": [f], "schema": {"type": "string", "system": f}}
    for f in ("summary", "description", "labels", "priority", "issuetype", "project", "created", "status", "comment")
]


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


@dataclass
class FakeJira:
    """A running fake (see the module docstring). ``tickets``: the issues by key; ``requests``:
    (method, path, HTTP status) of every request, oldest first."""

    server: ThreadingHTTPServer
    thread: threading.Thread
    token: str
    user: str | None
    projects: tuple[str, ...]
    issue_types: tuple[str, ...]
    no_priority: bool = False
    tickets_: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_id: int = 10000

    @property
    def url(self) -> str:
        """The server URL for ``JIRA(server=...)``: ``http://127.0.0.1:<port>``."""
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def tickets(self) -> dict[str, dict[str, Any]]:
        """A deep copy of the tickets by key: ``{"key", "id", "fields": {...}, "comments": [...]}``."""
        with self.lock:
            return json.loads(json.dumps(self.tickets_))

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    server_version = "fake-jira/1"
    fake: FakeJira

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)

    # --- plumbing ---
    def _send(self, status: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        path = urlsplit(self.path).path
        with self.fake.lock:  # logged before answering, so a client that has its answer sees it logged
            self.fake.requests.append((self.command, path, status))
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)
        log.info("%s %s -> %d", self.command, path, status)

    def _error(self, status: int, *messages: str, errors: dict[str, str] | None = None) -> None:
        self._send(status, {"errorMessages": list(messages), "errors": errors or {}})

    def _json(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}") if n else {}

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization") or ""
        if auth == f"Bearer {self.fake.token}":
            return True
        if self.fake.user and auth.startswith("Basic "):
            try:
                return base64.b64decode(auth[6:]).decode() == f"{self.fake.user}:{self.fake.token}"
            except ValueError:
                return False
        return False

    def _issue_json(self, t: dict[str, Any]) -> dict[str, Any]:
        f = dict(t["fields"])
        f["comment"] = {"comments": t["comments"], "total": len(t["comments"]), "maxResults": len(t["comments"]), "startAt": 0}
        return {"id": t["id"], "key": t["key"], "self": f"{self.fake.url}{API}/issue/{t['id']}", "fields": f}

    def _route(self, method: str) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path).rstrip("/")
        if path == "/_tickets" and method == "GET":
            return self._send(200, self.fake.tickets)
        if not path.startswith(API + "/"):
            return self._error(404, f"no such resource: {path}")
        if not self._authorized():
            return self._error(401, "You are not authenticated. Authentication required to perform this operation.")
        rest = path[len(API) + 1:]
        query = {k: v if len(v) > 1 else v[0] for k, v in parse_qs(parts.query).items()}
        try:
            body = self._json() if method == "POST" else {}
        except ValueError:
            return self._error(400, "Unexpected character in the JSON body")
        if method == "GET" and rest == "serverInfo":
            return self._send(200, {"baseUrl": self.fake.url, "version": "9.12.0", "versionNumbers": [9, 12, 0],
                                    "deploymentType": "Server", "buildNumber": 9120000, "serverTitle": "fake JIRA"})
        if method == "GET" and rest == "myself":
            name = self.fake.user or "quantramp"
            return self._send(200, {"name": name, "key": name, "displayName": "quantramp operator", "active": True})
        if method == "GET" and rest == "field":
            return self._send(200, FIELDS)
        if method == "GET" and (m := re.fullmatch(r"project/([A-Za-z0-9_]+)", rest)):
            key = m.group(1).upper()
            if key not in self.fake.projects:
                return self._error(404, f"No project could be found with key '{m.group(1)}'.")
            return self._send(200, {"id": str(10000 + self.fake.projects.index(key)), "key": key, "name": key})
        if rest in ("search", "search/jql"):
            return self._search(rest, body if method == "POST" else query)
        if method == "POST" and rest == "issue":
            return self._create(body)
        if m := re.fullmatch(r"issue/([A-Za-z0-9_-]+)(/comment)?", rest):
            t = self._find(m.group(1))
            if t is None:
                return self._error(404, "Issue does not exist or you do not have permission to see it.")
            if not m.group(2) and method == "GET":
                return self._send(200, self._issue_json(t))
            if m.group(2) and method == "GET":
                cs = t["comments"]
                return self._send(200, {"startAt": 0, "maxResults": len(cs), "total": len(cs), "comments": cs})
            if m.group(2) and method == "POST":
                return self._comment(t, body)
        return self._error(404, f"fake JIRA does not serve {method} {path}")

    def do_GET(self) -> None:  # noqa: N802
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    # --- resources ---
    def _find(self, key_or_id: str) -> dict[str, Any] | None:
        with self.fake.lock:
            return next((t for t in self.fake.tickets_.values() if key_or_id in (t["key"], t["id"])), None)

    def _create(self, body: dict[str, Any]) -> None:
        f = body.get("fields") or {}
        errors: dict[str, str] = {}
        proj = f.get("project") or {}
        pkey = proj.get("key") or next((p for i, p in enumerate(self.fake.projects) if str(10000 + i) == str(proj.get("id"))), None)
        if pkey not in self.fake.projects:
            errors["project"] = "valid project is required"
        summary = f.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            errors["summary"] = "You must specify a summary of the issue."
        elif len(summary) > 255 or "\n" in summary:
            errors["summary"] = "Summary must be less than 255 characters and on one line."
        itype = (f.get("issuetype") or {}).get("name")
        if itype not in self.fake.issue_types:
            errors["issuetype"] = "valid issue type is required"
        labels = f.get("labels", [])
        bad = [lab for lab in labels if not isinstance(lab, str) or not lab or " " in lab or len(lab) > 255]
        if bad:
            errors["labels"] = f"The label '{bad[0]}' contains spaces which is invalid."
        if "priority" in f:
            if self.fake.no_priority:
                errors["priority"] = "Field 'priority' cannot be set. It is not on the appropriate screen, or unknown."
            elif (f["priority"] or {}).get("name") not in PRIORITIES:
                errors["priority"] = "Priority name is not valid."
        if errors:
            return self._error(400, errors=errors)
        with self.fake.lock:
            n = sum(1 for t in self.fake.tickets_.values() if t["key"].startswith(f"{pkey}-")) + 1
            self.fake.next_id += 1
            t = {"key": f"{pkey}-{n}", "id": str(self.fake.next_id), "comments": [], "fields": {
                "project": {"key": pkey}, "summary": summary, "description": f.get("description") or "",
                "issuetype": {"name": itype}, "labels": list(labels),
                "priority": {"name": (f.get("priority") or {}).get("name", "Medium")},
                "status": {"name": "Open"}, "created": _now(),
            }}
            self.fake.tickets_[t["key"]] = t
        self._send(201, {"id": t["id"], "key": t["key"], "self": f"{self.fake.url}{API}/issue/{t['id']}"})

    def _search(self, rest: str, params: dict[str, Any]) -> None:
        jql = str(params.get("jql") or "")
        m = JQL_RE.match(jql)
        if not m:
            return self._error(400, f"fake JIRA only understands 'project = KEY AND labels = \"label\" "
                                    f"[ORDER BY created ASC|DESC]', not: {jql}")
        project, label = m.group("project").upper(), m.group("label")
        if project not in self.fake.projects:
            return self._error(400, f"The value '{project}' does not exist for the field 'project'.")
        with self.fake.lock:
            found = [t for t in self.fake.tickets_.values() if t["fields"]["project"]["key"] == project and label in t["fields"]["labels"]]
        found.sort(key=lambda t: int(t["id"]), reverse=(m.group("dir") or "ASC").upper() == "DESC")
        total = len(found)
        max_results = int(params.get("maxResults") or 50)
        start = int(params.get("startAt") or 0) if rest == "search" else 0
        page = [self._issue_json(t) for t in found[start:start + max_results]]
        if rest == "search/jql":
            return self._send(200, {"issues": page, "isLast": True})
        return self._send(200, {"startAt": start, "maxResults": max_results, "total": total, "issues": page})

    def _comment(self, t: dict[str, Any], body: dict[str, Any]) -> None:
        text = body.get("body")
        if not isinstance(text, str) or not text.strip():
            return self._error(400, errors={"comment": "Comment body can not be empty!"})
        with self.fake.lock:
            self.fake.next_id += 1
            c = {"id": str(self.fake.next_id), "self": f"{self.fake.url}{API}/issue/{t['id']}/comment/{self.fake.next_id}",
                 "body": text, "author": {"name": self.fake.user or "quantramp"}, "created": _now(), "updated": _now()}
            t["comments"].append(c)
        self._send(201, c)


def serve(host: str = "127.0.0.1", port: int = 0, token: str = DEFAULT_TOKEN, user: str | None = None,
          projects: tuple[str, ...] = ("QR",), issue_types: tuple[str, ...] = ("Task", "Bug", "Incident"),
          no_priority: bool = False) -> FakeJira:
    """Start a fake on ``host:port`` (0: an ephemeral port) in a daemon thread; returns the running
    :class:`FakeJira`. ``token``: the bearer token accepted (and the basic-auth password of
    ``user`` when given); ``projects``: the project keys that exist; ``issue_types``: the issue
    types they accept; ``no_priority``: refuse the priority field on create."""
    handler = type("Handler", (_Handler,), {})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-jira", daemon=True)
    fake = FakeJira(server=server, thread=thread, token=token, user=user, projects=tuple(p.upper() for p in projects),
                    issue_types=issue_types, no_priority=no_priority)
    handler.fake = fake
    thread.start()
    return fake


def main() -> None:
    p = argparse.ArgumentParser(description="fake JIRA REST API v2 on loopback")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8766)
    p.add_argument("--token", default=DEFAULT_TOKEN)
    p.add_argument("--user", default=None, help="accept basic auth USER:TOKEN as well")
    p.add_argument("--project", action="append", help="a project key that exists (repeatable; default QR)")
    p.add_argument("--no-priority", action="store_true", help="refuse the priority field on create")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    fake = serve(args.host, args.port, args.token, args.user, tuple(args.project or ("QR",)), no_priority=args.no_priority)
    print(f"fake JIRA: {fake.url}  tickets {fake.url}/_tickets", flush=True)
    try:
        fake.thread.join()
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
