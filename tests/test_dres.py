"""The DRES client and `mvk submit` against a fake DRES server on loopback (tests/fake_dres.py): log in, list
evaluations, submit a KIS answer (video + interval in ms) and a text answer, re-login on an expired session,
every submission in the JSONL event log, and a clear one-line error for each way it can fail."""
from __future__ import annotations

import json
import socket

import pytest

from app.cli import main
from mvk_tools.dres import DresClient, DresError, DresSettings, kis_answer, submit_logged
from mvk_tools.eventlog import EventLog
from search.errors import InputError
from tests.fake_dres import FakeDres


@pytest.fixture()
def dres():
    with FakeDres() as server:
        yield server


def settings(server: FakeDres, **kw) -> DresSettings:
    values = {"url": server.url, "username": "team", "password": "secret", "timeout": 5.0}
    values.update(kw)
    return DresSettings(**values)


def test_login_list_and_submit_a_video_moment(dres):
    client = DresClient(settings(dres))
    assert [e["id"] for e in client.evaluations()] == ["eval-1"]
    reply = client.submit_kis("0042", 83.5, 90.25)
    assert reply["submission"] == "CORRECT" and reply["evaluation"] == "eval-1"
    (sub,) = dres.submissions
    assert sub["evaluation"] == "eval-1" and sub["session"] == client.session
    assert sub["body"] == {"answerSets": [{"answers": [{"mediaItemName": "0042", "start": 83500, "end": 90250}]}]}


def test_a_text_answer_and_a_collection_name(dres):
    client = DresClient(settings(dres, collection="mvk", evaluation="eval-1"))
    client.submit_text("a green turtle")
    client.submit_kis("0007", 1.0)
    first, second = (s["body"]["answerSets"][0]["answers"][0] for s in dres.submissions)
    assert first == {"text": "a green turtle"}
    assert second == {"mediaItemName": "0007", "mediaItemCollectionName": "mvk", "start": 1000, "end": 1000}


def test_an_expired_session_logs_in_again_once(dres):
    client = DresClient(settings(dres))
    client.login()
    old = client.session
    dres.expire_sessions()
    client.submit_kis("0042", 3.0)
    assert client.session != old and len(dres.submissions) == 1


def test_wrong_credentials_are_named(dres):
    with pytest.raises(DresError, match="HTTP 401: Invalid credentials"):
        DresClient(settings(dres, password="nope")).evaluations()


def test_an_unknown_evaluation_is_refused_with_the_servers_reason(dres):
    with pytest.raises(DresError, match="HTTP 404: Evaluation nope not found"):
        DresClient(settings(dres, evaluation="nope")).submit_kis("0042", 1.0)


def test_no_or_several_active_evaluations_are_explained():
    with FakeDres(evaluations=[{"id": "old", "name": "old", "status": "TERMINATED"}]) as server:
        with pytest.raises(DresError, match="no active evaluation"):
            DresClient(settings(server)).submit_kis("1", 1.0)
    two = [{"id": f"e{i}", "name": f"run {i}", "status": "ACTIVE"} for i in (1, 2)]
    with FakeDres(evaluations=two) as server:
        with pytest.raises(DresError, match=r"2 active evaluations.*e1 \(run 1\).*e2 \(run 2\)"):
            DresClient(settings(server)).submit_kis("1", 1.0)
        assert DresClient(settings(server, evaluation="e2")).submit_kis("1", 1.0)["evaluation"] == "e2"


def test_an_unreachable_server_is_named():
    with socket.socket() as sock:          # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DresError, match=f"cannot reach the DRES server at http://127.0.0.1:{port}"):
        DresClient(DresSettings(url=f"http://127.0.0.1:{port}", username="u", timeout=2.0)).login()


@pytest.mark.parametrize("kwargs, message", [
    ({"url": "ftp://x", "username": "u"}, "must be http"),
    ({"url": "localhost:8080", "username": "u"}, "must be http"),
    ({"url": "http://h", "username": ""}, "no DRES user name"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        DresSettings(**kwargs)


def test_bad_answers_are_refused():
    with pytest.raises(InputError, match="ends .* before it starts"):
        kis_answer("v", 10.0, 5.0)
    with pytest.raises(InputError, match=">= 0"):
        kis_answer("v", -1.0)
    with pytest.raises(InputError, match="video name .* empty"):
        kis_answer(" ", 1.0)


def test_the_password_is_never_in_repr_or_log(dres, tmp_path):
    s = settings(dres)
    assert "secret" not in repr(s)
    log = EventLog(tmp_path / "events.jsonl")
    submit_logged(DresClient(s), log, source="test", video="0042", start_s=2.0)
    assert "secret" not in (tmp_path / "events.jsonl").read_text()


def test_every_submission_is_logged_accepted_or_not(dres, tmp_path):
    log = EventLog(tmp_path / "events.jsonl")
    submit_logged(DresClient(settings(dres)), log, source="test", video="0042", start_s=2.0, end_s=4.0,
                  context={"gid": 7})
    with pytest.raises(DresError):
        submit_logged(DresClient(settings(dres, evaluation="gone")), log, source="test", video="0042", start_s=2.0)
    first, second = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert first["event"] == "submit" and first["ok"] is True and first["verdict"] == "CORRECT"
    assert first["answer"] == {"mediaItemName": "0042", "start": 2000, "end": 4000}
    assert first["context"] == {"gid": 7} and first["server"]["url"] == dres.url
    assert second["ok"] is False and second["http_status"] == 404 and "gone" in second["error"]
    assert first["timestamp"] <= second["timestamp"]


def test_mvk_submit_sends_a_video_moment_and_logs_it(dres, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MVK_DRES_URL", dres.url)
    monkeypatch.setenv("MVK_DRES_USER", "team")
    monkeypatch.setenv("MVK_DRES_PASSWORD", "secret")
    log = tmp_path / "log.jsonl"
    assert main(["submit", "--video", "0042", "--time", "12.5", "--end", "14", "--log", str(log)]) == 0
    assert "CORRECT" in capsys.readouterr().out
    assert dres.submissions[0]["body"]["answerSets"][0]["answers"][0] == \
        {"mediaItemName": "0042", "start": 12500, "end": 14000}
    assert json.loads(log.read_text())["source"] == "cli"
    assert main(["submit", "--list"]) == 0
    assert "eval-1\tACTIVE\tVBS test run" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["submit", "--video", "0042"], "needs both --video and --time"),
    (["submit", "--text", "x", "--video", "1", "--time", "1"], "give one answer"),
    (["submit"], "give one answer"),
    (["submit", "--text", "x", "--dres-url", ""], "no DRES server"),
])
def test_mvk_submit_refuses_incomplete_input(argv, message, capsys, monkeypatch):
    monkeypatch.delenv("MVK_DRES_URL", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_mvk_submit_names_a_refused_login(dres, capsys):
    argv = ["submit", "--text", "x", "--dres-url", dres.url, "--dres-user", "team", "--dres-password", "bad",
            "--log", "/dev/null"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mvk submit: error: DRES POST") and "Invalid credentials" in err
