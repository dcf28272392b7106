"""The task registry: names, versions, documentation, and each task's defining values."""

import dataclasses

import pytest

from mecjax import tasks
from mecjax.config import Scenario, per_server, remote_servers

SIX = ("paper", "energy-harvesting", "congested", "paper-energy-scale", "heterogeneous-cloud",
       "eua-melbourne")


def test_names_are_versioned_and_cover_the_six_tasks():
    names = tasks.names()
    assert len(names) == len(set(names)) >= 6
    for name in SIX:
        task = tasks.spec(name)
        assert f"{name}-v{task.version}" in names and tasks.spec(task.id) is task
        # every task documents its purpose, its values and their sources
        for text in (task.purpose, task.values, task.sources):
            assert isinstance(text, str) and len(text) > 40


def test_unknown_names_and_versions_are_refused_naming_what_exists():
    with pytest.raises(ValueError, match="unknown task 'nope'; known: paper-v0"):
        tasks.make("nope")
    with pytest.raises(ValueError, match="'congested-v7': no version 7; the current one is "
                                         "'congested-v0'"):
        tasks.make("congested-v7")


def test_paper_is_table_1_and_overrides_apply():
    assert tasks.make("paper") == Scenario.default() == tasks.make("paper-v0")
    assert tasks.make("congested", n_devices=100).n_devices == 100
    with pytest.raises(TypeError):
        tasks.make("paper", no_such_field=1)


def test_each_task_sets_what_makes_it_that_task():
    paper = Scenario.default()
    eh = tasks.make("energy-harvesting")
    assert eh.battery_hard and eh.battery_capacity_j < paper.battery_capacity_j
    # harvest cannot keep up with all-local: a mean local task costs more than a mean harvest
    mean_local_j = eh.kappa * ((eh.device_cpu_min_hz + eh.device_cpu_max_hz) / 2) ** 2 * (
        (eh.task_cycles_min + eh.task_cycles_max) / 2)
    assert mean_local_j > eh.harvest_max_j / 2
    cg = tasks.make("congested")
    assert cg.device_queue and cg.slot_s < paper.slot_s
    # a server's slot holds only a few mean tasks (Table 1's holds about 200)
    assert cg.server_cpu_hz * cg.slot_s < 20 * (cg.task_cycles_min + cg.task_cycles_max) / 2
    es = tasks.make("paper-energy-scale")
    mean_cycles = (es.task_cycles_min + es.task_cycles_max) / 2
    assert 0.5 < es.kappa * 1.5e9**2 * mean_cycles < 2.0          # about 1 J per local task
    assert 0.05 < mean_cycles / 1.5e9 < 0.2                        # about 100 ms
    hc = tasks.make("heterogeneous-cloud")
    assert len(set(per_server(hc.server_cpu_hz, hc.n_servers))) == hc.n_servers
    assert any(remote_servers(hc)) and not all(remote_servers(hc))
    eua = tasks.make("eua-melbourne")
    assert eua.server_xy is not None and len(eua.device_xy) == eua.n_devices == 50
    assert eua.n_servers == 8 and eua.area_m > 1500     # Melbourne's CBD, about 2 km
    assert tasks.make("eua-melbourne", n_devices=120).n_devices == 120


def test_tasks_are_frozen_records():
    task = tasks.spec("paper")
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.version = 1
