"""Real gunicorn on loopback, called over HTTP with requests."""
import pytest
import requests

from models import registry

pytestmark = pytest.mark.slow
Q = "What is the tens digit of 89290?"


def test_single_and_batch_answers(live_server):
    url = live_server["url"]
    for model in ("transformer", "memsizer"):
        single = requests.post(url + "/answer", json={"question": Q, "model": model}, timeout=10)
        assert single.status_code == 200 and single.json()["model"] == model
        batch = requests.post(url + "/answer", json={"questions": [Q, Q, "What is the units digit of 7?"],
                                                    "model": model}, timeout=10)
        assert batch.status_code == 200 and batch.json()["count"] == 3
        assert batch.json()["answers"][0] == single.json()["answer"]


def test_bad_input_and_body_limit(live_server):
    url = live_server["url"]
    bad = requests.post(url + "/answer", data=b"{oops", headers={"Content-Type": "application/json"}, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    deep = requests.post(url + "/answer", data=b"[" * 4000, headers={"Content-Type": "application/json"}, timeout=10)
    assert deep.status_code == 400 and deep.json()["error"]["code"] == "invalid_json"
    big = requests.post(url + "/answer", data=b'{"question": "' + b"1" * 10000 + b'"}',
                        headers={"Content-Type": "application/json"}, timeout=10)
    assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"
    assert requests.get(url + "/nowhere", timeout=10).json()["error"]["code"] == "not_found"


def test_metrics_aggregate_across_workers(live_server):
    url = live_server["url"]
    for _ in range(6):
        requests.post(url + "/answer", json={"question": Q, "model": "memsizer"}, timeout=10)
    text = requests.get(url + "/metrics", timeout=10).text
    line = next(l for l in text.splitlines() if l.startswith('placevalue_questions_answered_total{model="memsizer"}'))
    assert float(line.split()[-1]) >= 6


def test_models_and_health(live_server):
    url = live_server["url"]
    assert requests.get(url + "/healthz", timeout=10).json() == {"status": "ok"}
    rows = requests.get(url + "/models", timeout=10).json()["models"]
    assert [r["name"] for r in rows] == list(registry.names())
    assert all(r["ready"] for r in rows), "every backend has a (tiny) checkpoint here"
    # ready was awaited, so both workers have loaded, whichever of them answers
    for _ in range(4):
        ready = requests.get(url + "/readyz", timeout=10, headers={"Connection": "close"})
        assert ready.status_code == 200 and ready.json()["workers"] == {"loaded": 2, "expected": 2}
    assert "placevalue_workers_loaded 2.0" in requests.get(url + "/metrics", timeout=10).text


@pytest.mark.parametrize("given", [True, False], ids=["metrics-dir-given", "metrics-dir-temporary"])
def test_metrics_directory_is_not_leaked(tiny_checkpoints, tmp_path, given):
    """A given PROMETHEUS_MULTIPROC_DIR is used as is; without one, gunicorn makes a temporary
    directory for the metrics and removes it when it exits (one used to be left per start)."""
    from tests.conftest import start_gunicorn
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    metrics = str(tmp_path / "metrics") if given else ""
    if given:
        (tmp_path / "metrics").mkdir()
    process, url, log = start_gunicorn(tiny_checkpoints, tmp_path, TMPDIR=str(scratch), PROMETHEUS_MULTIPROC_DIR=metrics)
    try:
        assert requests.post(url + "/answer", json={"question": Q}, timeout=10).status_code == 200
        assert "placevalue_questions_answered_total" in requests.get(url + "/metrics", timeout=10).text
        made = list(scratch.glob("placevalue-metrics-*"))
        assert len(made) == (0 if given else 1)
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0
        log.close()
    assert not list(scratch.glob("placevalue-metrics-*"))
    if given:
        assert any((tmp_path / "metrics").iterdir())  # the workers' metric files went where we said


def test_nothing_is_written_into_the_checkout(live_server):
    """Metrics files and logs go to temporary directories, never into the repository."""
    from pathlib import Path
    requests.get(live_server["url"] + "/metrics", timeout=10)
    root = Path(__file__).resolve().parents[2]
    assert not list(root.glob("*.db")) and not list(root.glob("*.log"))


def test_a_burst_of_keep_alive_clients_is_shared_between_the_workers(tiny_checkpoints, tmp_path):
    """With gunicorn's own worker, which worker keeps a connection is a race: on this idle tiny
    server 16 clients split 10/6 in 2 of 5 starts (6/10 and worse in 13 of 16 benchmark runs on
    the shipped models). The balanced worker leaves a connection to a sibling holding fewer."""
    import http.client
    import threading
    from urllib.parse import urlsplit

    from benchmarks.http_load import connections_per_worker
    from tests.conftest import start_gunicorn
    # the rule, not its tuning: a bound far above the default 1 ms, so that how fast a sibling
    # slowed by a busy machine wakes never decides the split (gunicorn's own worker ignores it)
    process, url, log = start_gunicorn(tiny_checkpoints, tmp_path, PLACEVALUE_ACCEPT_DEFER_MS="30000")
    port, go, connections = urlsplit(url).port, threading.Event(), []

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        go.wait()
        for _ in range(3):
            connection.request("GET", "/healthz")
            assert connection.getresponse().read()
        connections.append(connection)

    try:
        threads = [threading.Thread(target=client) for _ in range(16)]
        for thread in threads:
            thread.start()
        go.set()
        for thread in threads:
            thread.join()
        held = connections_per_worker(process.pid, port)
        assert sum(held.values()) == 16 and len(held) == 2
        assert max(held.values()) - min(held.values()) <= 2, held
    finally:
        for connection in connections:
            connection.close()
        process.terminate()
        assert process.wait(timeout=30) == 0
        log.close()


def test_the_connection_board_counts_only_workers_that_accept():
    from app.balanced_worker import NOT_ACCEPTING, ConnectionBoard
    board = ConnectionBoard(slots=4)
    first, second = board.claim(), board.claim()
    assert board.connections[second] == NOT_ACCEPTING and board.fewest_elsewhere(first) is None
    board.connections[first], board.connections[second] = 5, 2
    assert board.fewest_elsewhere(first) == 2 and board.fewest_elsewhere(second) == 5
    board.free(second)
    assert board.fewest_elsewhere(first) is None and board.claim() == second


class FakeClock:
    """Time that passes only when the worker sleeps."""

    def __init__(self):
        self.now, self.sleeps = 0.0, 0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now, self.sleeps = self.now + seconds, self.sleeps + 1


def deferring_worker(monkeypatch, held: int, sibling_holds: int | None):
    """A balanced worker holding `held` connections beside one sibling (None: still booting)."""
    from app import balanced_worker
    board = balanced_worker.ConnectionBoard(slots=4)
    monkeypatch.setattr(balanced_worker, "BOARD", board)
    worker = object.__new__(balanced_worker.BalancedThreadWorker)  # no gunicorn arbiter needed
    worker.board_slot, sibling = board.claim(), board.claim()
    worker.nr_conns, worker._accepting = held, True
    board.connections[worker.board_slot] = held
    if sibling_holds is not None:
        board.connections[sibling] = sibling_holds
    return worker, board, sibling


@pytest.mark.parametrize("held, sibling_holds", [(1, None), (3, 3), (2, 5)],
                         ids=["sibling-booting", "as-many", "fewer"])
def test_a_worker_holding_no_more_than_its_siblings_accepts_at_once(monkeypatch, held, sibling_holds):
    worker, _, _ = deferring_worker(monkeypatch, held, sibling_holds)
    clock = FakeClock()
    assert worker.leave_to_sibling("listener", clock=clock, sleep=clock.sleep) is True
    assert clock.sleeps == 0


def test_a_worker_holding_more_leaves_the_connection_to_the_sibling_that_takes_it(monkeypatch):
    from app import balanced_worker
    worker, _, _ = deferring_worker(monkeypatch, held=4, sibling_holds=3)
    monkeypatch.setattr(balanced_worker, "ACCEPT_DEFER_S", 30.0)
    clock, queued = FakeClock(), iter([True, True, False])  # the sibling accepts on its third look
    monkeypatch.setattr(balanced_worker, "connection_waiting", lambda listener: next(queued))
    assert worker.leave_to_sibling("listener", clock=clock, sleep=clock.sleep) is False
    assert clock.sleeps == 3


def test_a_worker_holding_more_accepts_once_the_sibling_has_caught_up(monkeypatch):
    from app import balanced_worker
    worker, board, sibling = deferring_worker(monkeypatch, held=4, sibling_holds=2)
    monkeypatch.setattr(balanced_worker, "ACCEPT_DEFER_S", 30.0)
    clock = FakeClock()

    def sibling_accepts_elsewhere(seconds):  # other connections reach the sibling meanwhile
        clock.sleep(seconds)
        board.connections[sibling] += 1
    monkeypatch.setattr(balanced_worker, "connection_waiting", lambda listener: True)
    assert worker.leave_to_sibling("listener", clock=clock, sleep=sibling_accepts_elsewhere) is True
    assert clock.sleeps == 2 and board.connections[sibling] == 4


def test_a_stuck_sibling_costs_a_connection_the_bound_and_never_the_connection(monkeypatch):
    from app import balanced_worker
    worker, _, _ = deferring_worker(monkeypatch, held=4, sibling_holds=0)
    monkeypatch.setattr(balanced_worker, "ACCEPT_DEFER_S", 0.01)
    monkeypatch.setattr(balanced_worker, "connection_waiting", lambda listener: True)
    clock = FakeClock()
    assert worker.leave_to_sibling("listener", clock=clock, sleep=clock.sleep) is True
    assert 0.01 <= clock.now < 0.01 + 2 * balanced_worker.POLL_S


@pytest.mark.parametrize("left_to_sibling", [False, True])
def test_accept_takes_the_connection_only_when_the_wait_says_so_and_publishes(monkeypatch, left_to_sibling):
    from gunicorn.workers.gthread import ThreadWorker

    from app import balanced_worker
    worker, board, _ = deferring_worker(monkeypatch, held=4, sibling_holds=3)
    accepted = []

    def accept(worker, listener):
        accepted.append(listener)
        worker.nr_conns += 1
    monkeypatch.setattr(ThreadWorker, "accept", accept)
    monkeypatch.setattr(balanced_worker.BalancedThreadWorker, "leave_to_sibling",
                        lambda worker, listener: not left_to_sibling)
    worker.accept("listener")
    assert accepted == ([] if left_to_sibling else ["listener"])
    assert board.connections[worker.board_slot] == (4 if left_to_sibling else 5)


def test_a_queued_connection_is_seen_without_being_accepted():
    import socket

    from app.balanced_worker import connection_waiting
    with socket.create_server(("127.0.0.1", 0)) as listener:
        assert not connection_waiting(listener)
        with socket.create_connection(listener.getsockname()):
            assert connection_waiting(listener) and connection_waiting(listener)  # still queued
            listener.accept()[0].close()
            assert not connection_waiting(listener)


def test_connections_are_shared_again_after_earlier_clients_hung_up(tiny_checkpoints, tmp_path):
    """A worker's count must fall when its clients leave: a count left high lets the sibling take
    every later connection without deferring. gunicorn's own worker split these 6 connections
    unevenly in 4 of 5 starts."""
    import http.client
    import time
    from urllib.parse import urlsplit

    from benchmarks.http_load import connections_per_worker
    from tests.conftest import start_gunicorn
    # the rule, not its tuning: a bound far above the default 1 ms, so that how fast a sibling
    # slowed by a busy machine wakes never decides the split (gunicorn's own worker ignores it)
    process, url, log = start_gunicorn(tiny_checkpoints, tmp_path, PLACEVALUE_ACCEPT_DEFER_MS="30000")
    port = urlsplit(url).port

    def connect():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/healthz")
        assert connection.getresponse().read()
        return connection

    held = {}
    try:
        first = [connect() for _ in range(8)]
        for connection in first:
            connection.close()
        deadline = time.monotonic() + 10
        # until the workers have closed their ends (a hung-up socket stays open, no longer
        # established, until the worker's event loop sees it: only then does its count fall)
        while sum(connections_per_worker(process.pid, port, established_only=False).values()) and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        later = [connect() for _ in range(6)]  # one after another, each kept
        held = connections_per_worker(process.pid, port)
        for connection in later:
            connection.close()
        assert sorted(held.values()) == [3, 3], held
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0
        log.close()


def test_a_worker_republishes_its_count_wherever_gunicorn_changes_it(monkeypatch):
    from gunicorn.workers.gthread import ThreadWorker

    from app import balanced_worker
    board = balanced_worker.ConnectionBoard(slots=2)
    monkeypatch.setattr(balanced_worker, "BOARD", board)

    def hang_up(worker, *args):
        worker.nr_conns -= 1
    for method in ("finish_request", "murder_keepalived", "murder_pending"):
        monkeypatch.setattr(ThreadWorker, method, hang_up)
    monkeypatch.setattr(ThreadWorker, "set_accept_enabled",
                        lambda worker, enabled: setattr(worker, "_accepting", enabled))
    worker = object.__new__(balanced_worker.BalancedThreadWorker)
    worker.board_slot, worker.nr_conns, worker._accepting = board.claim(), 5, False
    assert board.connections[worker.board_slot] == balanced_worker.NOT_ACCEPTING
    worker.set_accept_enabled(True)
    assert board.connections[worker.board_slot] == 5
    worker.finish_request("connection", "future")
    worker.murder_keepalived()
    worker.murder_pending()
    assert board.connections[worker.board_slot] == 2
    worker.set_accept_enabled(False)  # full or stopping: siblings stop leaving connections to it
    assert board.connections[worker.board_slot] == balanced_worker.NOT_ACCEPTING


@pytest.mark.parametrize("command", [("-w", "1"), ("-c", "gunicorn.conf.py", "-w", "3")], ids=["w1-no-c", "w3"])
def test_ready_with_the_workers_gunicorn_really_runs(tiny_checkpoints, tmp_path, command):
    """`gunicorn -w N wsgi:app`: the command line's worker count, not the config file's default (2),
    is what /readyz waits for, with or without -c (gunicorn reads the checkout's config file anyway)."""
    from tests.conftest import start_gunicorn
    workers = int(command[-1])
    process, url, log = start_gunicorn(tiny_checkpoints, tmp_path, command=command, GUNICORN_WORKERS="2")
    try:  # start_gunicorn returned: /readyz answered 200
        ready = requests.get(url + "/readyz", timeout=10, headers={"Connection": "close"})
        assert ready.status_code == 200 and ready.json()["workers"] == {"loaded": workers, "expected": workers}
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0
        log.close()
