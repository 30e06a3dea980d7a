"""A busy machine: the trainer uses the cores other processes leave free (ganx/train/cores.py)."""
import os

import pytest
import torch

from ganx.train import Trainer, cores
from ganx.train.config import TrainConfig
from ganx.train.cores import ThreadGovernor


class FakeMachine:
    """/proc/stat and this process's CPU time as a script: each tick of `seconds`, the other
    processes use `others` cores and this one `own` cores."""

    def __init__(self):
        self.t = 0.0
        self.busy = 1000.0
        self.own_s = 0.0

    def advance(self, seconds, others, own=1.0):
        self.t += seconds
        self.busy += (others + own) * seconds
        self.own_s += own * seconds

    def governor(self, cores=2, **kw):
        kw.setdefault("running", lambda: 1)  # only the caller's thread runs at the start
        return ThreadGovernor(interval=1.0, read=lambda: (self.busy, 1e9), own=lambda: self.own_s,
                              clock=lambda: self.t, cores=cores, **kw)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_a_quiet_machine_keeps_every_thread(two_threads):
    m = FakeMachine()
    g = m.governor()
    for _ in range(10):
        m.advance(1.0, others=0.1, own=2.0)
        assert g.poll() == 2
    assert g.changes == [] and torch.get_num_threads() == 2


def test_other_processes_holding_a_core_lower_the_threads_and_a_quiet_machine_raises_them(two_threads):
    m, said = FakeMachine(), []
    g = m.governor(log=said.append)
    m.advance(1.0, others=1.0)
    assert g.poll() == 2  # one reading is not enough (hysteresis)
    m.advance(1.0, others=1.0)
    assert g.poll() == 1 and torch.get_num_threads() == 1
    assert "1.0 of 2 cores: 2 -> 1 CPU threads" in said[-1]
    m.advance(1.0, others=0.0)
    m.advance(0.5, others=0.0)
    assert g.poll() == 1  # polled before the interval passed: nothing measured
    m.advance(1.0, others=0.0)
    assert g.poll() == 2 and torch.get_num_threads() == 2
    assert [n for _, n, _ in g.changes] == [1, 2]


def test_a_short_burst_does_not_flip_the_threads(two_threads):
    m = FakeMachine()
    g = m.governor()
    for others in (1.5, 0.0, 1.5, 0.0, 1.5, 0.0):
        m.advance(1.0, others=others, own=1.5)
        assert g.poll() == 2
    assert g.changes == []


@pytest.mark.parametrize("running,threads", [(1, 2), (2, 1), (3, 1), (9, 1)])
def test_the_first_choice_comes_from_the_threads_running_at_the_start(two_threads, running, threads):
    m = FakeMachine()
    g = m.governor(running=lambda: running)
    assert g.threads == threads == torch.get_num_threads()
    g.close()


def test_running_now_reads_proc_loadavg(tmp_path):
    f = tmp_path / "loadavg"
    f.write_text("0.50 0.40 0.30 3/120 4567\n")
    assert cores.running_now(str(f), gap=0) == 3
    f.write_text("nonsense\n")
    assert cores.running_now(str(f), gap=0) is None
    assert cores.running_now(str(tmp_path / "missing"), gap=0) is None


def test_close_gives_back_the_thread_count_it_found(two_threads):
    m = FakeMachine()
    g = m.governor()
    for _ in range(3):
        m.advance(1.0, others=2.0)
        g.poll()
    assert torch.get_num_threads() == 1
    g.close()
    assert torch.get_num_threads() == 2
    m.advance(1.0, others=2.0)
    assert g.poll() == 2  # closed: does nothing more


def test_never_more_threads_than_it_started_with():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        m = FakeMachine()
        g = m.governor(cores=8)
        assert not g.active  # one thread: nothing to lower
        m.advance(1.0, others=0.0)
        assert g.poll() == 1
    finally:
        torch.set_num_threads(before)


def test_without_proc_stat_it_does_nothing(two_threads, tmp_path):
    assert cores.cpu_times(str(tmp_path / "missing")) is None
    (tmp_path / "stat").write_text("garbage\n")
    assert cores.cpu_times(str(tmp_path / "stat")) is None
    g = ThreadGovernor(read=lambda: None)
    assert not g.active and g.poll() == 2


def test_proc_stat_is_read_where_linux_has_it():
    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc/stat here")
    busy, total = cores.cpu_times()
    assert 0 < busy <= total


def _tiny(tmp_path, name, **kw):
    base = dict(image_size=16, latent_dim=8, g_width=8, d_width=8, batch_size=16, steps=40, log_every=10,
                checkpoint_every=100, progress=False, metrics=False, sample_every=0, device="cpu",
                out=str(tmp_path / name))
    base.update(kw)
    return TrainConfig(**base)


def test_the_trainer_lowers_its_threads_on_a_busy_machine_and_gives_them_back(tmp_path, two_threads, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    m = FakeMachine()
    seen = []

    class Scripted(ThreadGovernor):
        def __init__(self, **kw):
            super().__init__(interval=1.0, read=lambda: (m.busy, 1e9), own=lambda: m.own_s,
                             clock=lambda: m.t, cores=2, running=lambda: 1, **kw)

        def poll(self):
            m.advance(1.0, others=2.0)  # every step: 2 other processes busy
            n = super().poll()
            seen.append(torch.get_num_threads())
            return n

    monkeypatch.setattr("ganx.train.trainer.ThreadGovernor", Scripted)
    t = Trainer(_tiny(tmp_path, "busy", steps=6))
    t.fit(tensorboard=False)
    assert seen[:2] == [2, 1] and set(seen[2:]) == {1}
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("how", ["threads", "env", "deterministic"])
def test_a_thread_count_the_user_chose_is_kept(tmp_path, two_threads, monkeypatch, how):
    made = []
    real = ThreadGovernor

    def spy(**kw):
        g = real(**kw)
        made.append(g)
        return g

    monkeypatch.setattr("ganx.train.trainer.ThreadGovernor", spy)
    if how == "env":
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        cfg = _tiny(tmp_path, how, steps=2)
    else:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        cfg = _tiny(tmp_path, how, steps=2, **({"threads": 2} if how == "threads" else {"deterministic": True}))
    Trainer(cfg).fit(tensorboard=False)
    assert made and not made[0].active
