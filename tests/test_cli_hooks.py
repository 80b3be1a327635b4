"""`calltrack hook ...` and `calltrack hooks run`, as an operator runs them, on SQLite and
PostgreSQL, against real receivers on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from standardwebhooks.webhooks import WebhookVerificationError

from calltrack.cli import main
from calltrack.store import Store
from tests.conftest import StoreFactory
from tests.test_hooks_delivery import (
    HOOKS,
    Receiver,
    Shop,
    always,
    delivering,
    first_fails,
    free_port,
    wait_until,
)

CALLTRACK = Path(sys.executable).parent / "calltrack"
PUBLIC = "https://93.184.216.34/hook"  # a global address: allowed without any setting
KEYS = {"id", "account_id", "url", "method", "events", "enabled", "disabled_reason",
        "rotating_until", "secret"}  # fmt: skip


def run(store: Store, *args: str, allow: str = "127.0.0.1") -> tuple[int, str, str]:
    """One CLI run (CALLTRACK_HOOKS_ALLOW_HOSTS=``allow``): exit code, stdout, stderr."""
    result = CliRunner().invoke(
        main,
        ["--database", store.settings.database_url, *args],
        env={"CALLTRACK_HOOKS_ALLOW_HOSTS": allow},
    )
    return result.exit_code, result.stdout, result.stderr


def ok(store: Store, *args: str, allow: str = "127.0.0.1") -> dict[str, Any]:
    code, out, err = run(store, *args, "--json", allow=allow)
    assert code == 0, err
    decoded: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return decoded


def failed(store: Store, *args: str, allow: str = "") -> str:
    """A command that must fail the documented way (exit code 1, ``error: ...``); stderr."""
    code, out, err = run(store, *args, allow=allow)
    assert code == 1, out + err
    assert err.startswith("error: "), err
    assert "Traceback" not in out + err
    return err


def test_endpoints_are_added_listed_rotated_and_removed(store: Store) -> None:
    shop = Shop(store)
    other = store.create_account("other").id
    added = ok(store, "hook", "add", "shop", PUBLIC, "--event", "after_call_finish",
               "--event", "CALL_UPDATED", "--method", "put")  # fmt: skip
    assert set(added) == KEYS
    secret = str(added["secret"])
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert {k: v for k, v in added.items() if k not in ("id", "secret")} == {
        "account_id": shop.account, "url": PUBLIC, "method": "PUT",
        "events": ["AFTER_CALL_FINISH", "CALL_UPDATED"], "enabled": True, "disabled_reason": "",
        "rotating_until": None,
    }  # fmt: skip
    assert store.hook_secrets(int(added["id"])) == (secret,)
    code, text, _ = run(store, "hook", "add", "other", PUBLIC + "2", "--event",
                        "BEFORE_CALL_START")  # fmt: skip
    assert code == 0
    [first_line, secret_line, note] = text.strip().splitlines()
    assert first_line.endswith(f": POST {PUBLIC}2 (BEFORE_CALL_START)")
    assert secret_line.startswith("signing secret: whsec_")
    assert note == "(the secret is shown only now)"
    theirs = int(first_line.split()[2].rstrip(":"))
    assert [e.id for e in store.hooks(other)] == [theirs]

    listed = ok(store, "hook", "list")["endpoints"]
    assert [e["id"] for e in listed] == [added["id"], theirs]
    assert [e["id"] for e in ok(store, "hook", "list", "shop")["endpoints"]] == [added["id"]]
    counts = ("last_status", "pending", "failed", "delivered_last_day")
    assert [listed[0][k] for k in counts] == [None, 0, 0, 0]
    code, text, _ = run(store, "hook", "list")
    assert f"PUT {PUBLIC}  (AFTER_CALL_FINISH, CALL_UPDATED)" in text
    assert "enabled; never tried; 0 pending, 0 failed; none delivered in the last day" in text
    shown_secret = secret_line.removeprefix("signing secret: ")
    for shown in (json.dumps(listed), text):  # the secrets were shown once, when added
        assert "secret" not in shown
        assert secret.removeprefix("whsec_") not in shown
        assert shown_secret.removeprefix("whsec_") not in shown

    rotated = ok(store, "hook", "rotate", str(added["id"]))
    new = str(rotated["secret"])
    assert new.startswith("whsec_")
    assert new != secret
    assert store.hook_secrets(int(added["id"])) == (new, secret)  # both sign for 24 h
    [after] = ok(store, "hook", "list", "shop")["endpoints"]
    assert after["rotating_until"] >= time.time() + 23.9 * 3600
    assert new not in json.dumps(after)
    assert secret not in json.dumps(after)

    shop.call()  # a delivery waits for the endpoint (nothing sends it here)
    assert store.hook_stats(int(added["id"])).pending == 1
    assert ok(store, "hook", "remove", str(added["id"])) == {"id": added["id"], "removed": True}
    assert store.hook_stats(int(added["id"])).pending == 0  # its deliveries are cancelled
    assert [e["id"] for e in ok(store, "hook", "list")["endpoints"]] == [theirs]
    assert f"no webhook endpoint {added['id']}" in failed(store, "hook", "remove", str(added["id"]))
    assert ok(store, "hook", "list", "shop") == {"endpoints": []}
    assert run(store, "hook", "list", "shop")[1].strip() == "no webhook endpoints"


def test_an_unknown_endpoint_id_is_an_error_naming_it(store: Store) -> None:
    Shop(store)
    for command in ("remove", "rotate", "enable", "test", "log"):
        assert "no webhook endpoint 999" in failed(store, "hook", command, "999"), command


REFUSED_URLS = [
    ("ftp://example.com/hook", "", "URL: expected an http(s) URL with a host"),
    ("example.com/hook", "", "URL: expected an http(s) URL with a host"),
    ("http://93.184.216.34/hook", "", "URL: plain http is allowed only for hosts named in "
     "CALLTRACK_HOOKS_ALLOW_HOSTS (93.184.216.34 is not); use https"),
    ("https://127.0.0.1:9/hook", "", "URL: 127.0.0.1 resolves to 127.0.0.1, a private or "
     "reserved address; allow it in CALLTRACK_HOOKS_ALLOW_HOSTS"),
    ("https://localhost/hook", "", "URL: localhost resolves to 127.0.0.1"),
    ("https://169.254.169.254/latest/meta-data", "", "169.254.169.254, a private"),
    ("https://[::ffff:127.0.0.1]/", "", "a private or reserved address"),
    ("https://10.1.2.3/hook", "127.0.0.1", "10.1.2.3, a private or reserved address"),
    ("http://127.0.0.1:9/hook", "localhost", "plain http is allowed only"),
    ("https://u:p@93.184.216.34/", "", "credentials in the URL are not supported"),
]  # fmt: skip


def test_hook_add_refuses_a_url_naming_the_problem(store: Store) -> None:
    Shop(store)
    for url, allow, problem in REFUSED_URLS:
        err = failed(store, "hook", "add", "shop", url, "--event", "CALL_UPDATED", allow=allow)
        assert problem in err, (url, err)
    assert store.hooks() == []
    # What the allow list names passes, over http too.
    added = ok(store, "hook", "add", "shop", "http://127.0.0.1:9/hook", "--event",
               "CALL_UPDATED", allow="127.0.0.1")  # fmt: skip
    assert added["url"] == "http://127.0.0.1:9/hook"


def test_hook_add_refuses_unknown_events_accounts_and_methods(store: Store) -> None:
    Shop(store)
    # An unknown event or method is click's usage error, exit code 1 as every bad input of
    # the CLI is; the message names it and what is expected.
    result = CliRunner().invoke(main, ["--database", store.settings.database_url, "hook", "add",
                                       "shop", PUBLIC, "--event", "CALL_ENDED"])  # fmt: skip
    assert result.exit_code == 1
    assert "'CALL_ENDED' is not one of" in result.stderr
    assert "before_call_start" in result.stderr.lower()
    assert "call_updated" in result.stderr.lower()
    result = CliRunner().invoke(main, ["--database", store.settings.database_url, "hook", "add",
                                       "shop", PUBLIC, "--event", "CALL_UPDATED", "--method",
                                       "PATCH"])  # fmt: skip
    assert (result.exit_code, "'PATCH' is not one of" in result.stderr) == (1, True)
    result = CliRunner().invoke(main, ["--database", store.settings.database_url, "hook", "add",
                                       "shop", PUBLIC])  # fmt: skip
    assert (result.exit_code, "Missing option '--event'" in result.stderr) == (1, True)
    assert "nobody" in failed(store, "hook", "add", "nobody", PUBLIC, "--event", "CALL_UPDATED")
    assert store.hooks() == []


def test_hook_test_exit_codes_and_json(store: Store) -> None:
    shop = Shop(store)
    with Receiver(lambda hit, attempt: 500 if "/broken" in hit.target else 200) as receiver:
        good = shop.hook(receiver.url, ["AFTER_CALL_FINISH", "CALL_UPDATED"])
        broken = shop.hook(receiver.url + "/broken", ["CALL_UPDATED"])
        query = shop.hook(receiver.url + "?k=v", ["BEFORE_CALL_START"], "GET")
        down = shop.hook(f"http://127.0.0.1:{free_port()}/hook", ["CALL_UPDATED"])

        code, out, err = run(store, "hook", "test", str(good.endpoint.id))
        assert code == 0, err
        first_line, answer = out.strip().splitlines()
        assert first_line.startswith(f"POST {receiver.url} (AFTER_CALL_FINISH, msg_test_")
        assert "): answered 200 in " in first_line
        assert answer == "ok"  # what the receiver answered

        code, out, _ = run(store, "hook", "test", str(broken.endpoint.id), "--json")
        assert code == 1
        result = json.loads(out)
        assert {k: result[k] for k in ("id", "event", "status", "error", "answer")} == {
            "id": broken.endpoint.id, "event": "CALL_UPDATED", "status": 500,
            "error": "answered 500", "answer": "ok",
        }  # fmt: skip
        assert str(result["webhook_id"]).startswith("msg_test_")

        assert run(store, "hook", "test", str(query.endpoint.id))[0] == 0
        code, out, _ = run(store, "hook", "test", str(down.endpoint.id))
        assert code == 1
        assert ": no answer: cannot connect" in out

    hits = {(hit.method, hit.target.split("?")[0]): hit for hit in receiver.requests()}
    assert set(hits) == {("POST", "/hook"), ("POST", "/hook/broken"), ("GET", "/hook")}
    sample, failing = hits[("POST", "/hook")], hits[("POST", "/hook/broken")]
    assert len(receiver.requests()) == 3  # POST, POST, GET; the down endpoint got nothing
    for hit, secret in ((sample, good.secret), (failing, broken.secret)):
        hit.verify(secret)
        with pytest.raises(WebhookVerificationError):
            hit.verify(query.secret)
        assert hit.message_id.startswith("msg_test_")
        assert hit.call_id.startswith("test-")
    assert sample.content["event"] == "AFTER_CALL_FINISH"
    assert sample.content["call"]["clientNumber"] == "79161234567"
    get = hits[("GET", "/hook")]
    get.verify(query.secret)
    assert get.target.startswith("/hook?k=v&event=BEFORE_CALL_START&universalId=test-")
    assert get.body == b""
    # Nothing is recorded: a test is not a delivery.
    for endpoint in (good, broken, query, down):
        assert store.hook_log(endpoint.endpoint.id) == []
        assert store.hook_stats(endpoint.endpoint.id).last_status is None


def test_hook_log_shows_attempts_newest_first_and_list_the_delays(
    make_store: StoreFactory,
) -> None:
    store = make_store(**HOOKS)
    shop = Shop(store)
    with Receiver(first_fails(503)) as receiver:
        endpoint = shop.hook(receiver.url, ["AFTER_CALL_FINISH"]).endpoint.id
        text = run(store, "hook", "log", str(endpoint))[1].strip()
        assert text == f"no attempts for webhook endpoint {endpoint} yet"
        call = shop.call()
        with delivering(store):
            receiver.wait_for(1)
            wait_until(lambda: store.hook_stats(endpoint).delivered_day == 1, "recorded")
    [delivered, refused] = ok(store, "hook", "log", str(endpoint))["attempts"]
    message_id = receiver.requests()[0].message_id
    assert {k: delivered[k] for k in ("call", "event", "webhook_id", "status", "error")} == {
        "call": call, "event": "AFTER_CALL_FINISH", "webhook_id": message_id, "status": 200,
        "error": "",
    }  # fmt: skip
    assert {k: refused[k] for k in ("call", "webhook_id", "status", "error")} == {
        "call": call, "webhook_id": message_id, "status": 503, "error": "answered 503",
    }  # fmt: skip
    assert delivered["at"] >= refused["at"]
    assert str(delivered["at"]).endswith("Z")
    assert len(ok(store, "hook", "log", str(endpoint), "--limit", "1")["attempts"]) == 1
    lines = run(store, "hook", "log", str(endpoint))[1].strip().splitlines()
    assert len(lines) == 2
    assert " 200 " in lines[0]
    assert f"AFTER_CALL_FINISH {call}" in lines[0]
    assert lines[1].endswith(f"AFTER_CALL_FINISH {call}  answered 503")
    [listed] = ok(store, "hook", "list")["endpoints"]
    assert (listed["last_status"], listed["pending"], listed["delivered_last_day"]) == (200, 0, 1)
    assert listed["delay_p50_ms"] > 0
    assert listed["delay_p99_ms"] >= listed["delay_p50_ms"]
    text = run(store, "hook", "list")[1]
    assert "enabled; last answer 200; 0 pending, 0 failed; 1 delivered in the last day, " in text
    assert f"delay p50 {listed['delay_p50_ms']} ms" in text


def test_hooks_run_is_a_deliverer_of_its_own(store: Store) -> None:
    shop = Shop(store)
    with Receiver(always(200)) as receiver:
        issued = shop.hook(receiver.url, ["AFTER_CALL_FINISH"])
        call = shop.call()
        env = {**os.environ, "CALLTRACK_HOOKS_ALLOW_HOSTS": "127.0.0.1",
               "CALLTRACK_DATABASE_URL": store.settings.database_url}  # fmt: skip
        process = subprocess.Popen(
            [CALLTRACK, "hooks", "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            [hit] = receiver.wait_for(1).values()
            wait_until(lambda: store.hook_stats(issued.endpoint.id).delivered_day == 1, "recorded")
        finally:
            process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=20)
    assert (hit.call_id, hit.event) == (call, "AFTER_CALL_FINISH")
    hit.verify(issued.secret)
    assert b"delivering webhooks (Ctrl-C stops)" in err
    assert issued.secret.encode() not in err
    assert process.returncode == 0, err


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}/stat").exists() else ""
    return ") Z " not in stat  # a zombie is gone


def test_serve_delivers_from_one_process_beside_its_workers(store: Store) -> None:
    """The default: `serve` starts `hooks run` as a child; the workers deliver nothing, the
    child does, and it stops with `serve` (or when `serve` dies without stopping it)."""
    shop = Shop(store)
    port = _free_port()
    with Receiver(always(200)) as receiver:
        issued = shop.hook(receiver.url, ["AFTER_CALL_FINISH"])
        env = {**os.environ, "CALLTRACK_HOOKS_ALLOW_HOSTS": "127.0.0.1",
               "CALLTRACK_DATABASE_URL": store.settings.database_url}  # fmt: skip
        env.pop("CALLTRACK_HOOKS_DELIVERER", None)
        serve = subprocess.Popen(
            [CALLTRACK, "serve", "--port", str(port), "--workers", "2"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            wait_until(lambda: len(_children(serve.pid, "hooks")) == 1, "the deliverer started")
            [deliverer] = _children(serve.pid, "hooks")
            call = shop.call()
            [hit] = receiver.wait_for(1).values()
            wait_until(lambda: store.hook_stats(issued.endpoint.id).delivered_day == 1, "recorded")
            assert (hit.call_id, hit.event) == (call, "AFTER_CALL_FINISH")
            serve.send_signal(signal.SIGTERM)
            serve.wait(timeout=30)
            wait_until(lambda: not _alive(deliverer), "the deliverer stopped with serve")
        finally:
            if serve.poll() is None:
                os.killpg(serve.pid, signal.SIGKILL)
                serve.wait()


def test_a_deliverer_whose_serve_was_killed_stops_by_itself(store: Store) -> None:
    env = {**os.environ, "CALLTRACK_DATABASE_URL": store.settings.database_url}
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import os, subprocess; "
         f"p = subprocess.Popen([{str(CALLTRACK)!r}, 'hooks', 'run', '--parent', "
         "str(os.getpid())]); print(p.pid, flush=True); import time; time.sleep(60)"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        deliverer = int(child.stdout.readline())
        time.sleep(1.5)
        assert _alive(deliverer)  # its parent lives: it delivers
        child.kill()  # SIGKILL: no chance to stop its deliverer
        child.wait()
        wait_until(lambda: not _alive(deliverer), "the orphaned deliverer stopped")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()


def _children(pid: int, word: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and word.encode() in cmdline:
            found.append(int(entry.name))
    return found


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
