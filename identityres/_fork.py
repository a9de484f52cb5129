"""What a forked child inherits from threads it does not have (docs/storage.md, "Fork").

``os.fork()`` copies the whole process but only the thread that called it. A lock that
another thread held at that moment stays held in the child, by nobody: the child would wait
for it forever. The modules that own locks (the stores, the graph) register an
``os.register_at_fork(after_in_child=...)`` hook that calls :func:`release_orphaned` on each
of their live locks, and treats what such a lock guarded as possibly half-written.
"""

from __future__ import annotations

import threading

__all__ = ["release_orphaned"]


def release_orphaned(lock: threading.RLock) -> bool:
    """In a forked child: whether ``lock`` was held by another thread of the parent when it
    forked. Such a lock is made free again, in place, so that every object caching it keeps
    working; a lock the forking thread holds itself is left as it is (that thread releases
    it as usual)."""
    if lock._is_owned():  # type: ignore[attr-defined]
        return False
    if lock.acquire(blocking=False):
        lock.release()
        return False
    # ``_at_fork_reinit`` is what the standard library's own at-fork hooks use (3.9+).
    lock._at_fork_reinit()  # type: ignore[attr-defined]
    return True
