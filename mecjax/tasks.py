"""Named, versioned MEC tasks: ``mecjax.tasks.make("congested") -> Scenario``.

The paper's Table 1 scenario is one task among several. In it three of the
paper's ideas cannot matter by construction: a server's slot holds about 200
mean tasks, so backlogs stay empty; batteries hold 5-10 J against about
0.1 J per local task, so none runs out within the horizon; nothing couples one
slot to the next. The other tasks are presets of the same model
(``docs/model.md``) in which a forecast, a look-ahead or the choice of server
can change the outcome; ``docs/tasks.md`` gives each task's purpose, values and
sources, and ``mecjax tasks`` measures that each is what it claims
(``results/tasks.md``).

A task's name carries a version, ``paper-v0``: the version changes whenever
the task's numbers change, so a result names exactly the scenario it was
measured on. ``make("paper")`` is the latest version.

``make(name, **overrides)`` returns the task's :class:`~mecjax.Scenario` with
any field replaced (``make("congested", n_devices=100)``); for
``eua-melbourne`` the sizes and the ``topology_seed`` choose the sites and
users (:func:`mecjax.topology.eua_topology`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from mecjax.config import Scenario


@dataclasses.dataclass(frozen=True)
class Task:
    """One named task: what it is for, where its values come from, and how to build it."""

    name: str
    version: int
    purpose: str
    values: str
    sources: str
    build: Callable[..., Scenario] = dataclasses.field(repr=False)

    @property
    def id(self) -> str:
        """The versioned name, e.g. ``paper-v0``."""
        return f"{self.name}-v{self.version}"


def _scenario(**fields) -> Callable[..., Scenario]:
    def build(**overrides) -> Scenario:
        return Scenario(**{**fields, **overrides})
    return build


def _eua(**overrides) -> Scenario:
    # The topology is imported here: it reads the packaged data (host side, numpy).
    from mecjax.topology import eua_topology

    n = overrides.pop("n_devices", 50)
    m = overrides.pop("n_servers", 8)
    seed = overrides.pop("topology_seed", 0)
    topology = eua_topology(n_servers=m, n_devices=n, seed=seed)
    return Scenario(**{**topology.scenario_fields(), **overrides})


_TASKS = (
    Task("paper", 0,
         purpose="The paper's Table 1 scenario, as reproduced in results/paper_tables.md.",
         values="Scenario() defaults: N = 50, M = 3, 1 s slots, 10 GHz servers, 10 MHz "
                "per server, 5-10 J batteries, deadlines U(0.02, 0.5) s.",
         sources="Table 1 of the paper; the values it leaves open as in docs/model.md.",
         build=_scenario()),
    Task("energy-harvesting", 0,
         purpose="Batteries bind within the horizon: a device that cannot pay for its "
                 "option (local computing, or its transmission) fails its task.",
         values="battery_capacity_j = 1.0, battery_init_min = 0.2 (start at 0.2-1 J), "
                "harvest_max_j = 0.1 (U(0, 0.1) J a slot, mean 0.05 J), battery_hard = True; "
                "the rest as paper. A mean local task costs about 0.11 J, so all-local "
                "drains about 0.06 J a slot net of harvest.",
         sources="The energy-harvesting offloading setting the paper cites as [12] (Min et "
                 "al., IEEE TVT 2019: devices charged by a random harvest each slot); the "
                 "magnitudes are ours, chosen so that batteries run out within the horizon.",
         build=_scenario(battery_capacity_j=1.0, battery_init_min=0.2, harvest_max_j=0.1,
                         battery_hard=True)),
    Task("congested", 0,
         purpose="Work carries across slots: server backlogs build and devices queue "
                 "local work that overruns a slot (FIFO device queues), so a decision "
                 "changes the next slots' waits.",
         values="slot_s = 0.03 (a server serves 3e8 cycles a slot, about 6 mean tasks; a "
                "device 3e7-6e7 cycles against a mean task of about 5e7, so all-local "
                "overloads the devices while the whole system has room), device_queue = "
                "True; the rest as paper.",
         sources="Slots of tens of milliseconds as in the slotted MEC models of Mao et al. "
                 "(IEEE JSAC 2016) and Chen et al. (IEEE/ACM ToN 2016); Table 1's loads.",
         build=_scenario(slot_s=0.03, device_queue=True)),
    Task("paper-energy-scale", 0,
         purpose="Latency and energy per task on the paper's reported scale (about 100 ms "
                 "and 1 J), with cost weights that keep both terms of the cost comparable. "
                 "The paper's values are a target of scale, not of tuning: no value was "
                 "fitted to its tables.",
         values="task_cycles 3e6-3e8 (three times Table 1's), kappa = 3e-27 (a mean local "
                "task: about 100 ms and 1 J at 1.5 GHz), beta = 0.1, and the battery scaled "
                "with the energy (capacity 100 J, harvest U(0, 1) J a slot: as many tasks "
                "per charge as Table 1's); the rest as paper.",
         sources="The paper's Tables 2-3 (latency 80-210 ms, energy 0.7-1.6 J per task) as "
                 "the scale; kappa in the 1e-28..1e-26 range of the MEC literature (Mao et "
                 "al., IEEE COMST 2017 survey).",
         build=_scenario(task_cycles_min=3e6, task_cycles_max=3e8, kappa=3e-27, beta=0.1,
                         battery_capacity_j=100.0, harvest_max_j=1.0)),
    Task("heterogeneous-cloud", 0,
         purpose="The choice of server matters: edge servers of different CPU and "
                 "bandwidth, and a remote cloud with a large CPU behind a WAN delay.",
         values="M = 4: edge servers of 5, 10 and 20 GHz with 5, 10 and 20 MHz, and a "
                "cloud of 100 GHz with 10 MHz of uplink reached through each device's "
                "strongest edge site, wan_delay_s = 0.05; the rest as paper.",
         sources="Edge/cloud tiers as in EdgeCloudSim and PureEdgeSim (a WAN round trip of "
                 "tens of ms, a cloud with an order of magnitude more CPU).",
         build=_scenario(n_servers=4, server_cpu_hz=(5e9, 10e9, 20e9, 100e9),
                         bandwidth_hz=(5e6, 10e6, 20e6, 10e6),
                         wan_delay_s=(0.0, 0.0, 0.0, 0.05))),
    Task("eua-melbourne", 0,
         purpose="A real topology: edge servers at base-station sites and devices at user "
                 "positions of Melbourne's CBD (about 2 km across), channels from the real "
                 "distances.",
         values="M = 8 sites chosen by k-means over N = 50 users sampled with seed 0 "
                "(mecjax.topology.eua_topology; docs/topology.md); the rest as paper.",
         sources="The EUA dataset (Lai et al., ICSOC 2018; sites from ACMA's register), MIT "
                 "licence, packaged in mecjax/data/eua/.",
         build=_eua),
)

TASKS: dict[str, Task] = {t.name: t for t in _TASKS}


def names() -> list[str]:
    """The versioned names of every task, e.g. ``['paper-v0', 'energy-harvesting-v0', ...]``."""
    return [t.id for t in _TASKS]


def spec(name: str) -> Task:
    """The :class:`Task` called ``name`` (``"paper"`` or ``"paper-v0"``)."""
    base, _, version = name.rpartition("-v")
    if version.isdigit() and base in TASKS:
        task = TASKS[base]
        if int(version) != task.version:
            raise ValueError(f"task {name!r}: no version {version}; the current one is "
                             f"{task.id!r}")
        return task
    if name in TASKS:
        return TASKS[name]
    raise ValueError(f"unknown task {name!r}; known: {', '.join(names())}")


def make(name: str, **overrides) -> Scenario:
    """The :class:`~mecjax.Scenario` of task ``name`` with ``overrides`` applied."""
    return spec(name).build(**overrides)


__all__ = ["TASKS", "Task", "make", "names", "spec"]
