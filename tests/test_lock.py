"""One trainer per run directory (RUN/.lock, ``attnseq.run.lock``): a live holder is refused by PID, a stale
lock is taken over with a warning, the lock appears whole (also without hard links) and goes with its holder."""
import errno
import json
import os
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager

import pytest
from helpers import finish, start_cli

import attnseq.run.lock as lockmod
from attnseq.cli import main
from attnseq.errors import ConfigError
from attnseq.run.lock import RunLock
from attnseq.run.rundir import RunDir

# one epoch of 24 steps of a tiny model
ARGS = ["--tokenizer", "char", "--epochs", "1", "--hidden-size", "16", "--wordvec-size", "8", "--batch-size", "64",
        "--lr", "0.01", "--no-plot", "--examples", "0"]


def _cmd(data, out, *extra):
    return ["train", "--data", str(data), "--out", str(out), *ARGS, *extra]


@contextmanager
def _sleeper():
    """A live process of this user for a minute at most, killed on leaving."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _lock(run, pid, **extra):
    run.mkdir(parents=True, exist_ok=True)
    (run / ".lock").write_text(json.dumps(dict(pid=pid, host=socket.gethostname(), **extra)))


def test_a_second_trainer_is_refused_naming_the_pid(tiny_data, tmp_path, capsys):
    run = tmp_path / "busy"
    with _sleeper() as holder:
        _lock(run, holder.pid, started=lockmod._process_start(holder.pid))
        assert main(["train", "--data", str(tiny_data), "--out", str(run), *ARGS]) == 1
        err = capsys.readouterr().err
        assert err == (f"attnseq train: error: {run} is in use by another attnseq train (pid {holder.pid}); "
                       f"wait for it or stop it (if none runs, delete {run / '.lock'})\n")
        assert json.loads((run / ".lock").read_text())["pid"] == holder.pid        # left alone
        assert not (run / "last").exists()


def test_a_live_trainer_holds_the_lock(tiny_data, tmp_path):
    """A real trainer, paused mid-epoch: a second one on its directory is refused; the first then finishes."""
    run = tmp_path / "two"
    first = start_cli(_cmd(tiny_data, run), "train-step:5:STOP")
    os.waitpid(first.pid, os.WUNTRACED)
    try:
        rc, _, err = finish(start_cli(_cmd(tiny_data, run, "--resume")))
        assert rc == 1 and f"in use by another attnseq train (pid {first.pid})" in err and err.count("\n") == 1
    finally:
        first.send_signal(signal.SIGCONT)
    rc, _, err = finish(first)
    assert rc == 0, err
    assert (run / "result.json").exists() and not (run / ".lock").exists()


@pytest.mark.parametrize("reused", [False, True])
def test_a_stale_lock_is_taken_over_with_a_warning(tiny_data, tmp_path, capsys, reused):
    """The PID of a process that ended, or a live PID whose start time differs (reused): stale."""
    run = tmp_path / "stale"
    with _sleeper() as proc:
        if not reused:
            proc.kill()
            proc.wait()
        _lock(run, proc.pid, started=-5 if reused else lockmod._process_start(os.getpid()))
        if reused and lockmod._process_start(proc.pid) is None:
            pytest.skip("no /proc start times here")
        assert main(["train", "--data", str(tiny_data), "--out", str(run), *ARGS]) == 0
        err = capsys.readouterr().err
        assert f"attnseq train: warning: {run}: the lock of pid {proc.pid} is stale" in err
        assert (run / "result.json").exists() and not (run / ".lock").exists()


def test_the_lock_is_released_when_setting_up_fails(tmp_path, capsys):
    run = tmp_path / "bad"
    assert main(["train", "--train", str(tmp_path / "missing.tsv"), "--valid", str(tmp_path / "missing.tsv"),
                 "--out", str(run)]) == 1
    assert "missing.tsv: no such file" in capsys.readouterr().err
    assert run.is_dir() and not (run / ".lock").exists()


def test_lock_and_unlock(tmp_path):
    a, b = RunDir(tmp_path / "r"), RunDir(tmp_path / "r")
    a.lock()
    holder = json.loads((tmp_path / "r" / ".lock").read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    with pytest.raises(ConfigError, match=f"pid {os.getpid()}"):
        b.lock()                                            # another trainer in this very process
    a.unlock()
    assert not (tmp_path / "r" / ".lock").exists()
    b.lock()
    a.unlock()                                              # a does not hold it: nothing happens
    assert (tmp_path / "r" / ".lock").exists()
    del b                                                   # dropped without unlock: released anyway
    import gc
    gc.collect()
    assert not (tmp_path / "r" / ".lock").exists()


def test_the_lock_appears_whole(tmp_path, monkeypatch):
    """The lock is written to .lock.tmp-PID and linked into place, so .lock never exists empty (an empty
    or garbled one is only ever a crashed writer's); a crashed writer's temporary blocks nothing and
    prepare removes it."""
    run = tmp_path / "r"
    run.mkdir()
    (run / ".lock.tmp-999999").write_text("")                    # a writer killed before its link
    at_link, real = [], os.link

    def link(src, dst):
        at_link.append((os.path.exists(dst), json.loads(open(src).read())))
        return real(src, dst)
    monkeypatch.setattr(lockmod.os, "link", link)
    rd = RunDir(run)
    rd.lock()
    holder = json.loads((run / ".lock").read_text())
    assert at_link == [(False, holder)] and holder["pid"] == os.getpid()
    assert not (run / f".lock.tmp-{os.getpid()}").exists()
    rd.prepare(resume=False)
    assert sorted(p.name for p in run.iterdir()) == [".lock"]
    rd.unlock()


def test_the_lock_without_hard_links(tmp_path, monkeypatch):
    """A filesystem without hard links (FAT: EPERM): the lock is created in place, as before."""
    def no_link(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(lockmod.os, "link", no_link)
    a, b = RunDir(tmp_path / "r"), RunDir(tmp_path / "r")
    a.lock()
    assert json.loads((tmp_path / "r" / ".lock").read_text())["pid"] == os.getpid()
    with pytest.raises(ConfigError, match=f"pid {os.getpid()}"):
        b.lock()
    a.unlock()
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == []


def test_a_lock_of_another_host_is_never_taken_over(tmp_path):
    """Whether a process on another host runs cannot be told from here: its lock is refused, naming the host."""
    run = tmp_path / "shared"
    run.mkdir()
    (run / ".lock").write_text(json.dumps(dict(pid=1, host="elsewhere.example", started=5)))
    with pytest.raises(ConfigError, match=r"in use by another attnseq train \(pid 1 on elsewhere.example\)"):
        RunLock(run).acquire()
    assert json.loads((run / ".lock").read_text())["host"] == "elsewhere.example"


@pytest.mark.parametrize("text", ["", "{not json", '{"pid": "x"}'])
def test_an_empty_or_garbled_lock_is_stale(tmp_path, text):
    """A crashed writer's lock (empty or garbled; a whole one is linked into place) is taken over with a warning."""
    run = tmp_path / "garbled"
    run.mkdir()
    (run / ".lock").write_text(text)
    lock = RunLock(run)
    with pytest.warns(UserWarning, match="the lock of pid -1 is stale"):
        lock.acquire()
    assert lock.held and json.loads((run / ".lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert not (run / ".lock").exists() and not lock.held
