"""One trainer per run directory: ``RUN/.lock``, across processes.

The lock file holds the holder's PID, host and process start time (JSON). It is written whole to
``.lock.tmp-PID`` and hard-linked to ``.lock``, which fails if that exists, so no trainer ever reads
a lock half-written. A lock whose process no longer runs on this host (a killed run; or a reused
PID, told apart by its start time) is stale: it is renamed aside and taken over, with a warning.
A lock of another host is always assumed live. On a filesystem without hard links (FAT, some
network shares) the lock is created in place with O_EXCL.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import time
import warnings
import weakref
from pathlib import Path

from ..errors import ConfigError

NAME = ".lock"
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}


def _process_start(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _running(holder: dict) -> bool:
    """Whether the process a lock file names still runs: always assumed for another host."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname():
        return True
    if not isinstance(pid, int) or pid <= 0:
        return False                                # garbage: no process holds it
    if pid == os.getpid():
        return True                                 # another trainer in this process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:                         # alive, another user's
        return True
    started = holder.get("started")
    return started is None or _process_start(pid) in (None, started)     # else the pid was reused


def _read_lock(path: Path) -> dict | None:
    """The holder a lock file names ({"pid", "host", "started"}), or None when it is gone.
    An empty or garbled lock is a crashed writer's (``RunLock._create`` links the lock into place
    whole), so stale; read again a few times first, for a filesystem without hard links, where a
    lock being created is empty for an instant."""
    for _ in range(3):
        try:
            holder = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(holder, dict) and isinstance(holder.get("pid"), int):
                return holder
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return {"pid": -1, "host": socket.gethostname()}    # garbage, not a live trainer's lock: stale


def _unlink_if_ours(path: Path, pid: int) -> None:
    holder = _read_lock(path)
    if holder is not None and holder.get("pid") == pid and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


def _cannot_write(run: Path, e: OSError) -> ConfigError:
    return ConfigError(f"--out {run}: cannot write there ({e.strerror or e})")


class RunLock:
    """``RUN/.lock`` of run directory ``run`` (which must exist): ``acquire``, ``release``.

    Released at the latest when this object is dropped or the process exits.
    """

    def __init__(self, run: str | Path):
        self.run = Path(run)
        self.path = self.run / NAME
        self._release = None            # set while this object holds the lock

    @property
    def held(self) -> bool:
        return self._release is not None

    def acquire(self) -> None:
        """Take the lock. Held by a running process: ConfigError naming its PID. Left by a process
        that no longer runs on this host: taken over, with a warning."""
        if self._release is not None:
            return
        for _ in range(3):
            if self._create():
                self._release = weakref.finalize(self, _unlink_if_ours, self.path, os.getpid())
                return
            holder = _read_lock(self.path)
            if holder is None:
                continue                            # released meanwhile: try again
            if _running(holder):
                where = f" on {holder.get('host')}" if holder.get("host") != socket.gethostname() else ""
                raise ConfigError(f"{self.run} is in use by another attnseq train (pid {holder['pid']}{where}); "
                                  f"wait for it or stop it (if none runs, delete {self.path})")
            self._take_over(holder)
        raise ConfigError(f"{self.run}: could not take {self.path}; other trainers keep starting there")

    def release(self) -> None:
        """Remove the lock if this object holds it."""
        if self._release is not None:
            self._release()
            self._release = None

    def _create(self) -> bool:
        """Create the lock file holding this process, whole: written to ``.lock.tmp-PID``, then hard-linked
        to ``.lock`` (which fails if that exists), so no trainer ever reads a lock half-written.
        -> False if the lock exists (or our temporary was removed by the holder's ``prepare`` meanwhile)."""
        me = json.dumps(dict(pid=os.getpid(), host=socket.gethostname(), started=_process_start(os.getpid())))
        tmp = self.path.with_name(f"{NAME}.tmp-{os.getpid()}")
        try:
            tmp.write_text(me, encoding="utf-8")
            return self._link(tmp, me)
        except OSError as e:
            raise _cannot_write(self.run, e) from None
        finally:
            tmp.unlink(missing_ok=True)

    def _link(self, tmp: Path, me: str) -> bool:
        try:
            os.link(tmp, self.path)
        except (FileExistsError, FileNotFoundError):    # held, or the holder's prepare removed our temporary
            return False
        except OSError as e:
            if e.errno not in _NO_HARD_LINKS:
                raise
            return self._create_in_place(me)
        return True

    def _create_in_place(self, me: str) -> bool:
        """``_create`` on a filesystem without hard links (FAT, some network shares): the lock is
        created with O_EXCL and then written, so it is empty for an instant (``_read_lock`` waits that out)."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as e:
            raise _cannot_write(self.run, e) from None
        try:
            os.write(fd, me.encode())
        except OSError as e:
            self.path.unlink(missing_ok=True)
            raise _cannot_write(self.run, e) from None
        finally:
            os.close(fd)
        return True

    def _take_over(self, holder: dict) -> None:
        """Remove a stale lock. It is renamed away first, so of two trainers taking it over at once
        only one removes it; a lock that turns out to be another's fresh one is put back."""
        path = self.path
        aside = path.with_name(f"{NAME}.stale-{os.getpid()}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        moved = _read_lock(aside)
        if moved is not None and moved.get("pid") != holder.get("pid"):
            try:
                os.link(aside, path)
            except OSError:
                pass
        else:
            warnings.warn(f"{path.parent}: the lock of pid {holder['pid']} is stale (that process no longer "
                          "runs: a killed run?); taking it over", stacklevel=4)
        aside.unlink(missing_ok=True)
