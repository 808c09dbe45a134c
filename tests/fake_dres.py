"""A small fake DRES server for tests: the documented v2 client endpoints the project uses, on 127.0.0.1 only.

  POST /api/v2/login                      -> ApiUser with a sessionId (401 for a wrong password)
  GET  /api/v2/client/evaluation/list     -> the configured evaluations (401 without a valid session)
  POST /api/v2/submit/{evaluationId}      -> SuccessfulSubmissionsStatus; the body is checked against
                                             ApiClientSubmission (400 otherwise) and kept in ``submissions``

Bodies and status codes follow DRES's doc/oas-client.json. The server runs in a daemon thread, answers each
request with a bounded read, and ``stop()`` (or leaving the ``with`` block) shuts it down.
"""
from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER_KEYS = {"text", "mediaItemName", "mediaItemCollectionName", "start", "end"}
MAX_BODY = 1 << 20


class FakeDres:
    def __init__(self, *, username: str = "team", password: str = "secret",
                 evaluations: list[dict] | None = None, verdict: str = "CORRECT") -> None:
        self.username, self.password, self.verdict = username, password, verdict
        self.evaluations = evaluations if evaluations is not None else [
            {"id": "eval-1", "name": "VBS test run", "type": "SYNCHRONOUS", "status": "ACTIVE", "templateId": "t",
             "templateDescription": "", "teams": ["team"], "taskTemplates": []}]
        self.sessions: set[str] = set()
        self.submissions: list[dict] = []      # {"evaluation", "session", "body"}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def expire_sessions(self) -> None:
        with self._lock:
            self.sessions.clear()

    def start(self) -> "FakeDres":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "FakeDres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:       # quiet
                pass

            def _send(self, status: int, body) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, description: str) -> None:
                self._send(status, {"status": False, "description": description})

            def _body(self):
                length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
                try:
                    return json.loads(self.rfile.read(length) or b"null")
                except ValueError:
                    return None

            def _session_ok(self, query: dict) -> str | None:
                session = (query.get("session") or [""])[0]
                with fake._lock:
                    return session if session in fake.sessions else None

            def do_POST(self) -> None:
                url = urllib.parse.urlparse(self.path)
                query = urllib.parse.parse_qs(url.query)
                fake.requests.append(("POST", url.path))
                body = self._body()
                if url.path == "/api/v2/login":
                    if not isinstance(body, dict) or set(body) != {"username", "password"}:
                        return self._error(400, "Invalid parameters. This is a programmers error.")
                    if (body["username"], body["password"]) != (fake.username, fake.password):
                        return self._error(401, "Invalid credentials. Please try again!")
                    session = f"s{len(fake.sessions) + len(fake.submissions) + 1}-{id(self)}"
                    with fake._lock:
                        fake.sessions.add(session)
                    return self._send(200, {"id": "u1", "username": fake.username, "role": "PARTICIPANT",
                                            "sessionId": session})
                if url.path.startswith("/api/v2/submit/"):
                    evaluation = urllib.parse.unquote(url.path.rsplit("/", 1)[1])
                    session = self._session_ok(query)
                    if session is None:
                        return self._error(401, "Unauthorized.")
                    if evaluation not in {e["id"] for e in fake.evaluations}:
                        return self._error(404, f"Evaluation {evaluation} not found.")
                    if not _valid_submission(body):
                        return self._error(400, "Invalid submission.")
                    with fake._lock:
                        fake.submissions.append({"evaluation": evaluation, "session": session, "body": body})
                    return self._send(200, {"status": True, "submission": fake.verdict,
                                            "description": "Submission correct, well done!"})
                return self._error(404, "Not found.")

            def do_GET(self) -> None:
                url = urllib.parse.urlparse(self.path)
                query = urllib.parse.parse_qs(url.query)
                fake.requests.append(("GET", url.path))
                if url.path == "/api/v2/client/evaluation/list":
                    if self._session_ok(query) is None:
                        return self._error(401, "Unauthorized.")
                    return self._send(200, fake.evaluations)
                return self._error(404, "Not found.")

        return Handler


def _valid_submission(body) -> bool:
    """The shape of ApiClientSubmission: answerSets, each with answers of the documented keys only."""
    if not isinstance(body, dict) or set(body) != {"answerSets"} or not isinstance(body["answerSets"], list):
        return False
    for answer_set in body["answerSets"]:
        if not isinstance(answer_set, dict) or not isinstance(answer_set.get("answers"), list):
            return False
        if set(answer_set) - {"taskId", "taskName", "answers"}:
            return False
        for answer in answer_set["answers"]:
            if not isinstance(answer, dict) or not answer or set(answer) - ANSWER_KEYS:
                return False
            if any(k in answer and not isinstance(answer[k], int) for k in ("start", "end")):
                return False
    return True
