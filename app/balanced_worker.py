"""A gunicorn gthread worker that leaves a new connection to a sibling holding fewer.

With gunicorn's own gthread worker, which worker gets a connection is a race between the workers
polling the shared listening socket, and keep-alive clients stay where they landed. Each worker
runs its passes on one core, so 4 clients held by one worker leave the other core idle, which
halved a backend's answers/s in some runs; keep-alive 0 and per-worker sockets were no better.
gunicorn's maintainers leave the placement to the kernel (benoitc/gunicorn#2817, #3433).

Each worker publishes how many connections it holds on a board shared by all workers (made in
the master before it forks). Before accepting, a worker holding more than the least-loaded
sibling waits, so that the sibling, woken by the same connection, can take it. The wait ends on
what it waits for: the connection is gone (a sibling took it: nothing to accept), or the sibling
has caught up (accept). ACCEPT_DEFER_S only bounds it, so a stuck or slow sibling costs a
connection at most that wait, never the connection; how long a sibling takes to wake decides
nothing below the bound. A worker republishes its count wherever
gunicorn's gthread worker changes it (an accept, a finished request that closes, an expired
keep-alive or pending connection): a count left high after its clients hung up would let a
sibling take every new connection without deferring.
"""
import select
import time
from multiprocessing import RawArray

from gunicorn.workers.gthread import ThreadWorker

from serving.settings import ServingSettings

ACCEPT_DEFER_S = ServingSettings().accept_defer_ms / 1000  # PLACEVALUE_ACCEPT_DEFER_MS
SLOTS = 256  # more than any worker count; a slot is freed when its worker exits
FREE = -1
NOT_ACCEPTING = -2  # claimed, but its worker still loads the app, is full or is stopping
POLL_S = 0.0005  # how often a deferring worker looks again at the listener and the board


class ConnectionBoard:
    """Connections held per worker slot, in memory shared across fork. Slots are claimed and
    freed by the master only (worker objects are built there, and child_exit runs there), so no
    two processes ever claim at once."""

    def __init__(self, slots: int = SLOTS):
        self.connections = RawArray("q", [FREE] * slots)

    def claim(self) -> int:
        for slot, held in enumerate(self.connections):
            if held == FREE:
                self.connections[slot] = NOT_ACCEPTING
                return slot
        raise RuntimeError(f"more than {len(self.connections)} live workers")

    def free(self, slot: int):
        self.connections[slot] = FREE

    def fewest_elsewhere(self, slot: int) -> int | None:
        """The fewest connections any other accepting worker holds, or None if there is none."""
        others = [held for other, held in enumerate(self.connections) if other != slot and held >= 0]
        return min(others) if others else None


def connection_waiting(listener) -> bool:
    """Whether the listening socket still has a connection to accept (without accepting it). poll,
    not select, which refuses descriptors past 1024."""
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    return bool(poller.poll(0))


BOARD = ConnectionBoard()  # the master imports this module when it loads the worker class


class BalancedThreadWorker(ThreadWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.board_slot = BOARD.claim()  # in the master, before the fork

    def publish(self):
        BOARD.connections[self.board_slot] = self.nr_conns if self._accepting else NOT_ACCEPTING

    def set_accept_enabled(self, enabled):  # on at the start of run(), off when full or stopping
        super().set_accept_enabled(enabled)
        self.publish()

    def accept(self, listener):
        if self.leave_to_sibling(listener):
            super().accept(listener)  # EAGAIN, if another worker took it meanwhile, is handled there
        self.publish()

    def leave_to_sibling(self, listener, clock=time.monotonic, sleep=time.sleep) -> bool:
        """Wait while a sibling holds fewer and the connection is still queued. True: accept it
        (nobody holds fewer, or the bound ran out); False: a sibling took it. The event loop of
        this worker pauses meanwhile (its request threads do not)."""
        deadline = clock() + ACCEPT_DEFER_S
        while True:
            fewest = BOARD.fewest_elsewhere(self.board_slot)
            if fewest is None or self.nr_conns <= fewest or clock() >= deadline:
                return True
            sleep(POLL_S)
            if not connection_waiting(listener):
                return False

    # The other places gunicorn's gthread worker (27) changes nr_conns; all run on the event loop.
    def finish_request(self, conn, fs):
        super().finish_request(conn, fs)
        self.publish()

    def murder_keepalived(self, force=False):
        super().murder_keepalived(force)
        self.publish()

    def murder_pending(self):
        super().murder_pending()
        self.publish()


def release(worker):
    """child_exit hook (in the master): free the exited worker's slot."""
    slot = getattr(worker, "board_slot", None)
    if slot is not None:
        BOARD.free(slot)
