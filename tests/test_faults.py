"""Faults and load against a real `calltrack serve`: the quick versions of tests/faults.

Each scenario runs once per module (it starts processes and takes seconds) and the tests below
read its measurements, one property each. The full versions are the same scripts without
``--quick`` (see each script's docstring); numbers are printed with ``pytest -s``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from calltrack.config import Settings
from calltrack.store import open_store
from tests.faults import (
    _common,
    export_while_import,
    import_sigkill,
    load,
    pg_outage,
    sqlite_faults,
)

Result = dict[str, Any]


def _scenario(result: Result) -> Result:
    print(result)  # the measurements, for `pytest -s`
    if "skipped" in result:
        if _common.in_ci():
            pytest.fail(f"CI=true requires this scenario: {result['skipped']}")
        pytest.skip(result["skipped"])
    return result


@pytest.fixture(scope="module")
def outage() -> Result:
    if _common.find_pg_bin("initdb") is None and not _common.in_ci():
        pytest.skip("initdb is not installed: the PostgreSQL outage needs a private cluster")
    return _scenario(pg_outage.run(quick=True))


@pytest.fixture(scope="module")
def sqlite() -> Result:
    return _scenario(sqlite_faults.run(quick=True))


@pytest.fixture(scope="module")
def killed() -> Result:
    return _scenario(import_sigkill.run(quick=True))


@pytest.fixture(scope="module")
def loaded() -> Result:
    return _scenario(load.run(quick=True))


# -- PostgreSQL stopped under the service --------------------------------------------------------


def test_during_a_postgres_outage_every_answer_is_the_page_or_a_documented_503(
    outage: Result,
) -> None:
    assert outage["wrong_examples"] == []
    assert outage["statuses"].get("503", 0) > 0


def test_a_postgres_outage_turns_answers_into_503_within_a_second(outage: Result) -> None:
    assert outage["seconds_to_first_503"] is not None
    assert outage["seconds_to_first_503"] <= pg_outage.MAX_SECONDS_TO_503
    assert outage["slowest_503_seconds"] <= pg_outage.MAX_SECONDS_TO_503


def test_pages_come_back_within_seconds_of_postgres_restarting_without_restarting_the_service(
    outage: Result,
) -> None:
    assert outage["seconds_to_recover"] is not None
    assert outage["seconds_to_recover"] <= pg_outage.MAX_SECONDS_TO_RECOVER
    # Workers reconnect one by one: every answer is a page again within seconds.
    assert outage["seconds_to_recover_for_good"] <= pg_outage.MAX_SECONDS_TO_RECOVER


def test_a_postgres_outage_puts_no_traceback_in_the_server_log(outage: Result) -> None:
    # An outage is an expected condition: a warning line, not an internal error's traceback.
    assert outage["tracebacks_in_log"] == 0


def test_a_postgres_outage_run_finds_no_problem_of_its_own(outage: Result) -> None:
    assert outage["problems"] == []
    assert outage["ok"] is True


# -- the SQLite file locked, then moved away ----------------------------------------------------


def test_while_sqlite_is_locked_or_gone_every_answer_is_the_page_or_a_documented_503(
    sqlite: Result,
) -> None:
    assert sqlite["wrong_examples"] == []


def test_a_sqlite_file_under_another_writers_lock_is_still_read_quickly(sqlite: Result) -> None:
    locked = sqlite["locked"]
    assert set(locked["statuses"]) <= {"200", "503"}
    assert locked["statuses"].get("200", 0) > 0  # reads go on: marks are optional writes
    assert locked["slowest_answer_seconds"] <= sqlite_faults.MAX_SECONDS_TO_503
    assert sqlite["wrong_answers"] == 0


def test_pages_come_back_as_soon_as_the_sqlite_lock_is_released(sqlite: Result) -> None:
    recovered = sqlite["locked"]["seconds_to_recover"]
    assert recovered is not None
    assert recovered <= sqlite_faults.MAX_SECONDS_TO_RECOVER


def test_a_sqlite_file_moved_away_answers_503_not_pages_of_the_old_file(sqlite: Result) -> None:
    missing = sqlite["missing"]
    assert missing["pages_served_while_the_file_was_gone"] == 0
    assert missing["seconds_to_first_503"] is not None
    assert missing["seconds_to_first_503"] <= sqlite_faults.MAX_SECONDS_TO_503


def test_pages_come_back_once_the_sqlite_file_is_restored(sqlite: Result) -> None:
    recovered = sqlite["missing"]["seconds_to_recover"]
    assert recovered is not None
    assert recovered <= sqlite_faults.MAX_SECONDS_TO_RECOVER


def test_a_locked_or_missing_sqlite_file_puts_no_traceback_in_the_server_log(
    sqlite: Result,
) -> None:
    assert sqlite["tracebacks_in_log"] == 0


def test_the_sqlite_fault_run_finds_no_problem_of_its_own(sqlite: Result) -> None:
    # Also judges what no test above reads, like how long answers took while the file was gone.
    assert sqlite["problems"] == []
    assert sqlite["ok"] is True


def test_a_sqlite_store_keeps_no_connection_of_a_thread_that_has_ended(tmp_path: Path) -> None:
    """The server's worker threads end after 10 idle seconds and new ones take over."""
    store = open_store(Settings.from_env(env={}, database_url=f"sqlite:///{tmp_path / 't.db'}"))
    store.ensure_ready()

    def open_database_files() -> int:
        fds = Path("/proc/self/fd")
        return sum(1 for fd in fds.iterdir() if str(tmp_path) in _link(fd))

    def in_a_new_thread() -> None:
        thread = threading.Thread(target=store.count_calls)
        thread.start()
        thread.join()

    try:
        in_a_new_thread()
        before = open_database_files()
        for _ in range(10):
            in_a_new_thread()
        after = open_database_files()
    finally:
        store.close()
    assert after <= before, f"{after - before} more files open after 10 threads came and went"


def _link(fd: Path) -> str:
    try:
        return os.readlink(fd)
    except OSError:
        return ""


# -- imports killed, imports during a walk ------------------------------------------------------


def test_an_import_killed_at_any_moment_leaves_all_or_none_of_its_calls(killed: Result) -> None:
    assert [a["problems"] for a in killed["attempts"]] == [[]] * len(killed["attempts"])
    assert killed["killed_mid_import"] > 0  # at least one kill landed inside the import


def test_running_a_killed_import_again_stores_exactly_the_files_calls(killed: Result) -> None:
    assert killed["calls_after_full_run"] == killed["calls_in_file"]
    assert killed["problems"] == []


@pytest.mark.parametrize("postgres", [False, True], ids=["sqlite", "postgres-two-servers"])
def test_concurrent_walks_during_imports_puts_and_deletes_obey_the_paging_rules(
    postgres: bool,
) -> None:
    if postgres and _common.find_pg_bin("initdb") is None and not _common.in_ci():
        pytest.skip("initdb is not installed: this scenario needs a private cluster")
    walked = _scenario(export_while_import.run(quick=True, postgres=postgres))
    assert walked["problems"] == []
    assert walked["ok"] is True
    assert walked["servers"] == (2 if postgres else 1)
    assert len(walked["walks_per_walker"]) == 6  # every walker finished walks
    assert min(walked["writes"].get(kind, 0) for kind in ("imports", "updates", "deletes")) > 0


# -- load -----------------------------------------------------------------------------------------


def test_under_concurrent_load_every_answer_is_the_one_it_is_alone(loaded: Result) -> None:
    assert loaded["wrong_examples"] == []
    assert loaded["wrong_answers"] == 0
    assert loaded["requests"] > 0


def test_under_concurrent_load_there_is_no_server_error_timeout_or_dropped_connection(
    loaded: Result,
) -> None:
    assert loaded["failure_examples"] == []
    assert loaded["server_errors_or_failures"] == 0
    assert loaded["tracebacks_in_log"] == 0


def test_the_load_run_finds_no_problem_of_its_own(loaded: Result) -> None:
    # Each probe is also checked alone against the contract before the load (a wrong page or
    # message that is the same every time passes the comparisons under load): its verdict.
    assert loaded["problems"] == []
    assert loaded["ok"] is True


def test_server_memory_stays_flat_under_load(loaded: Result) -> None:
    growth = loaded["rss_last_kb"] - loaded["rss_first_kb"]
    allowed = max(load.MAX_RSS_GROWTH_KB, loaded["rss_first_kb"] * (load.MAX_RSS_GROWTH_RATIO - 1))
    assert growth <= allowed


def test_no_api_key_is_found_in_clear_in_the_database_files_or_the_server_log(
    loaded: Result,
) -> None:
    assert loaded["keys_found_in_clear"] == []


# -- lending under concurrent hits, two servers on one PostgreSQL ---------------------------------


@pytest.fixture(scope="module")
def lending() -> Result:
    from tests.faults import hits_two_servers

    if _common.find_pg_bin("initdb") is None and not _common.in_ci():
        pytest.skip("initdb is not installed: two servers on one PostgreSQL need a private cluster")
    return _scenario(hits_two_servers.run(quick=True))


def test_two_servers_under_concurrent_hits_never_lend_one_number_to_two_sessions(
    lending: Result,
) -> None:
    assert lending["overlapping_hold_pairs"] == 0  # in the holds table
    assert lending["answers_to_a_held_number"] == 0  # as the visitors saw it
    assert lending["numbers_lent_again"] > 0  # holds ran out and numbers went to new sessions


def test_two_servers_answer_every_hit_and_ping_with_200(lending: Result) -> None:
    assert lending["statuses"] == {"200": lending["answers"]}
    assert sorted(lending["answers_per_server"]) == ["server1", "server2"]
    assert lending["tracebacks_in_logs"] == 0


def test_a_visitor_pinging_within_its_hold_keeps_its_session_and_number(lending: Result) -> None:
    assert lending["pings_within_hold_checked"] > 0
    assert lending["numbers_lost_within_hold"] == 0
    assert lending["sessions_changed"] == 0
    assert lending["answers_without_a_hold"] == 0  # no hold ends before the request plus hold


def test_the_stub_is_answered_only_while_every_pool_number_is_held(lending: Result) -> None:
    assert lending["stub_answers"] > 0
    assert lending["stubs_while_a_number_was_free"] == 0
    assert lending["phones_not_latest_hold"] == 0


def test_the_two_server_lending_run_finds_no_problem_of_its_own(lending: Result) -> None:
    assert lending["problems"] == []
    assert lending["ok"] is True


# -- a PBX retrying while the service is killed mid-call -----------------------------------------


@pytest.mark.parametrize("postgres", [False, True], ids=["sqlite", "postgres"])
def test_a_pbx_retrying_through_sigkills_leaves_each_ended_call_one_complete_record(
    postgres: bool,
) -> None:
    from tests.faults import pbx_retry

    if postgres and _common.find_pg_bin("initdb") is None and not _common.in_ci():
        pytest.skip("initdb is not installed: this scenario needs a private cluster")
    run = _scenario(pbx_retry.run(quick=True, postgres=postgres))
    assert run["kills_with_requests_in_flight"] > 0  # something to test
    assert run["retries"] > 0
    assert run["seconds_to_consistent"] is not None  # every call, once, complete, in the export
    assert run["seconds_to_consistent"] <= pbx_retry.MAX_SECONDS_TO_CONSISTENT
    assert run["records"] == run["calls"]
    assert run["problems"] == []
    assert run["ok"] is True


# -- webhooks through a misbehaving receiver while the service is killed --------------------------


@pytest.mark.parametrize("postgres", [False, True], ids=["sqlite", "postgres-two-servers"])
def test_webhooks_through_a_failing_receiver_and_sigkills_arrive_once_in_order(
    postgres: bool,
) -> None:
    from tests.faults import hooks_kill

    if postgres and _common.find_pg_bin("initdb") is None and not _common.in_ci():
        pytest.skip("initdb is not installed: two servers on one PostgreSQL need a private cluster")
    run = _scenario(hooks_kill.run(quick=True, postgres=postgres))
    assert run["servers"] == (2 if postgres else 1)
    assert run["kills_mid_attempt"] > 0  # something to test: a lease ran out
    assert run["lost"] == 0
    assert run["sent_as_two_ids"] == 0
    assert run["unexpected"] == 0
    assert run["out_of_order"] == 0
    assert run["in_flight_twice"] == 0
    assert run["gone"]["answered_410"] > 0
    assert run["problems"] == []
    assert run["ok"] is True
