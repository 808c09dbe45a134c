"""A small client for the DRES evaluation server's v2 client API (the server of VBS and LSC).

What a team needs during a competition, as DRES documents it (``doc/oas-client.json``):

  POST /api/v2/login                         {"username", "password"} -> ApiUser {..., "sessionId"}
  GET  /api/v2/client/evaluation/list        ?session=S -> [ApiClientEvaluationInfo {id, name, status, ...}]
  POST /api/v2/submit/{evaluationId}         ?session=S, ApiClientSubmission
       {"answerSets": [{"answers": [{"mediaItemName", "start", "end"} | {"text"}]}]}
       -> SuccessfulSubmissionsStatus {status, submission: CORRECT|WRONG|INDETERMINATE|UNDECIDABLE, description}

``start``/``end`` are milliseconds into the video. Errors come back as ErrorStatus {status, description}; a
401 (expired session) logs in again once. The server URL and credentials come from the caller (flags or the
environment, ``DresSettings.from_env``), never from the index. Plain ``urllib``: no extra dependency, every
request bounded by ``timeout``.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from search.errors import InputError, MvkError

ENV_URL = "MVK_DRES_URL"
ENV_USER = "MVK_DRES_USER"
ENV_PASSWORD = "MVK_DRES_PASSWORD"
ENV_EVALUATION = "MVK_DRES_EVALUATION"
ENV_COLLECTION = "MVK_DRES_COLLECTION"


class DresError(MvkError):
    """The DRES server cannot be reached, refused a request, or answered something that is not DRES."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class DresSettings:
    url: str
    username: str
    password: str = ""
    evaluation: str | None = None        # evaluation id; None: the one active evaluation
    collection: str | None = None        # DRES media collection name (mediaItemCollectionName), if needed
    timeout: float = 10.0

    def __post_init__(self) -> None:
        parsed = urllib.parse.urlparse(self.url or "")
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise InputError(f"DRES server URL must be http(s)://host[:port], got {self.url!r}")
        if not self.username:
            raise InputError(f"no DRES user name (set {ENV_USER} or pass --dres-user)")
        if not self.timeout > 0:
            raise InputError(f"DRES timeout must be positive, got {self.timeout}")

    def __repr__(self) -> str:          # keeps the password out of tracebacks and logs
        return (f"DresSettings(url={self.url!r}, username={self.username!r}, evaluation={self.evaluation!r}, "
                f"collection={self.collection!r})")

    @classmethod
    def from_env(cls, environ=os.environ, **overrides) -> "DresSettings | None":
        """Settings from ``MVK_DRES_*`` with non-empty ``overrides`` on top; None when no server URL is known."""
        values = {"url": environ.get(ENV_URL, ""), "username": environ.get(ENV_USER, ""),
                  "password": environ.get(ENV_PASSWORD, ""), "evaluation": environ.get(ENV_EVALUATION) or None,
                  "collection": environ.get(ENV_COLLECTION) or None}
        values.update({k: v for k, v in overrides.items() if v not in (None, "")})
        if not values["url"]:
            return None
        return cls(**values)

    def public(self) -> dict:
        """What may be logged: no password."""
        return {"url": self.url, "username": self.username, "evaluation": self.evaluation,
                "collection": self.collection}


def seconds_to_ms(seconds: float) -> int:
    value = float(seconds)
    if not value >= 0 or value == float("inf"):
        raise InputError(f"a time in the video must be a number of seconds >= 0, got {seconds!r}")
    return int(round(value * 1000))


def kis_answer(video: str, start_s: float, end_s: float | None = None, *, collection: str | None = None) -> dict:
    """An ApiClientAnswer for a known-item search: the video's name in the DRES collection and a time interval
    (``end_s`` defaults to ``start_s``: a single moment)."""
    if not str(video).strip():
        raise InputError("the video name of a submission is empty")
    start = seconds_to_ms(start_s)
    end = seconds_to_ms(start_s if end_s is None else end_s)
    if end < start:
        raise InputError(f"the interval ends ({end} ms) before it starts ({start} ms)")
    answer = {"mediaItemName": str(video), "start": start, "end": end}
    if collection:
        answer["mediaItemCollectionName"] = collection
    return answer


def text_answer(text: str) -> dict:
    """An ApiClientAnswer for a question-answering task."""
    if not str(text).strip():
        raise InputError("the text of a submission is empty")
    return {"text": str(text)}


class DresClient:
    """One logged-in DRES session (logs in on first use). Not tied to any index."""

    def __init__(self, settings: DresSettings) -> None:
        self.settings = settings
        self.session: str | None = None

    # -- HTTP -----------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, body: dict | None = None, session: bool = True):
        query = f"?{urllib.parse.urlencode({'session': self.session})}" if session and self.session else ""
        url = self.settings.url.rstrip("/") + path + query
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        shown = self.settings.url.rstrip("/") + path
        try:
            with urllib.request.urlopen(req, timeout=self.settings.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise DresError(f"DRES {method} {shown}: HTTP {exc.code}: {_description(exc)}", exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DresError(f"cannot reach the DRES server at {self.settings.url}: {reason}") from None
        try:
            return json.loads(raw.decode("utf-8")) if raw else {}
        except (UnicodeDecodeError, ValueError):
            raise DresError(f"DRES {method} {shown}: the answer is not JSON: {raw[:80]!r}") from None

    def _call(self, method: str, path: str, body: dict | None = None):
        """A request in the session; logs in first, and once more when the session expired (401)."""
        if self.session is None:
            self.login()
        try:
            return self._request(method, path, body=body)
        except DresError as exc:
            if exc.status != 401:
                raise
            self.login()
            return self._request(method, path, body=body)

    # -- the documented endpoints ---------------------------------------------------------------------

    def login(self) -> str:
        """POST /api/v2/login; the session id (kept for the following calls)."""
        self.session = None
        user = self._request("POST", "/api/v2/login", session=False,
                             body={"username": self.settings.username, "password": self.settings.password})
        session = user.get("sessionId") if isinstance(user, dict) else None
        if not session:
            raise DresError(f"DRES login at {self.settings.url} answered no sessionId")
        self.session = str(session)
        return self.session

    def evaluations(self) -> list[dict]:
        """GET /api/v2/client/evaluation/list: the evaluations this user may see (id, name, status, ...)."""
        found = self._call("GET", "/api/v2/client/evaluation/list")
        if not isinstance(found, list):
            raise DresError(f"DRES evaluation list at {self.settings.url} is not a list")
        return found

    def evaluation_id(self) -> str:
        """The configured evaluation, else the one ACTIVE evaluation (DresError naming them when not one)."""
        if self.settings.evaluation:
            return self.settings.evaluation
        active = [e for e in self.evaluations() if str(e.get("status", "")).upper() == "ACTIVE"]
        if len(active) == 1:
            return str(active[0]["id"])
        if not active:
            raise DresError(f"no active evaluation on the DRES server at {self.settings.url}")
        names = ", ".join(f"{e.get('id')} ({e.get('name')})" for e in active)
        raise DresError(f"{len(active)} active evaluations on {self.settings.url}: choose one with "
                        f"--evaluation or {ENV_EVALUATION} ({names})")

    def submit(self, answers: list[dict], *, evaluation: str | None = None) -> dict:
        """POST /api/v2/submit/{evaluationId} with one answer set; the server's status (``submission`` is the
        verdict: CORRECT, WRONG, INDETERMINATE or UNDECIDABLE) plus the ``evaluation`` it went to."""
        evaluation = evaluation or self.evaluation_id()
        path = f"/api/v2/submit/{urllib.parse.quote(str(evaluation), safe='')}"
        reply = self._call("POST", path, {"answerSets": [{"answers": list(answers)}]})
        if not isinstance(reply, dict):
            raise DresError(f"DRES submission to {self.settings.url} answered {reply!r}")
        return {**reply, "evaluation": evaluation}

    def submit_kis(self, video: str, start_s: float, end_s: float | None = None, *,
                   evaluation: str | None = None) -> dict:
        """Submit a video and a time interval (seconds; a single moment when ``end_s`` is None)."""
        return self.submit([kis_answer(video, start_s, end_s, collection=self.settings.collection)],
                           evaluation=evaluation)

    def submit_text(self, text: str, *, evaluation: str | None = None) -> dict:
        return self.submit([text_answer(text)], evaluation=evaluation)


def _description(exc: urllib.error.HTTPError) -> str:
    """The ``description`` of a DRES ErrorStatus body, or the HTTP reason."""
    try:
        body = json.loads(exc.read().decode("utf-8"))
        if isinstance(body, dict) and body.get("description"):
            return str(body["description"])
    except (OSError, ValueError, UnicodeDecodeError):
        pass
    return str(exc.reason)


def submit_logged(client: DresClient, log, *, source: str, video: str | None = None, start_s: float | None = None,
                  end_s: float | None = None, text: str | None = None, evaluation: str | None = None,
                  context: dict | None = None) -> dict:
    """Submit a KIS answer (``video`` + times) or a ``text`` answer and append the attempt to the event log
    (``mvk_tools.eventlog.EventLog``), whatever its outcome; re-raises DresError after logging it."""
    if text is not None:
        answer = text_answer(text)
    elif video is None or start_s is None:
        raise InputError("a submission needs a text, or a video and a time")
    else:
        answer = kis_answer(video, start_s, end_s, collection=client.settings.collection)
    entry = {"server": client.settings.public(), "answer": answer, **({"context": context} if context else {})}
    try:
        reply = client.submit([answer], evaluation=evaluation)
    except DresError as exc:
        log.submission(source=source, ok=False, error=str(exc), http_status=exc.status, **entry)
        raise
    log.submission(source=source, ok=bool(reply.get("status", True)), evaluation=reply.get("evaluation"),
                   verdict=reply.get("submission"), description=reply.get("description"), **entry)
    return reply
