"""Admission control: refuse a sweep whose per-trial resources the cluster can never grant, and order the queue
fairly across owners.

Capacity comes from RDVAE_CLUSTER_CPUS / RDVAE_CLUSTER_GPUS when set, else from the Ray cluster at
RDVAE_RAY_ADDRESS (`ray status`, cached for a minute), else from this machine (each driver then starts a local Ray
with every CPU and GPU here). A trial asking for more than one node offers would wait for ever, holding a running
slot; it is refused with 422 naming `body.resources.<field>` instead. The runner's start timeout catches the rest
(a cluster that shrank after admission): see `Settings.trial_start_timeout_s`.

Fairness: queued sweeps start round-robin by owner — the owner with the fewest running sweeps goes first, then the
one whose last sweep started longest ago, each owner's own sweeps in submission order — so one owner's long queue
cannot starve the others.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from service.settings import Settings
from service.stack.embedded import executable
from workers.spec import SweepSpec

_CACHE_SECONDS = 60.0
_RESOURCE = re.compile(r"([\d.]+)/([\d.]+) (CPU|GPU)\b")


@dataclass(frozen=True)
class Capacity:
    """The most CPUs and GPUs one trial can get, and where the figures come from."""

    cpus: float
    gpus: float
    source: str


class CapacityUnknownError(RuntimeError):
    """The Ray cluster did not say what it has (unreachable): admission is skipped, the start timeout remains."""


_cache: dict[str, tuple[float, Capacity]] = {}
_cache_lock = threading.Lock()


def _local() -> Capacity:
    import torch  # already loaded by rdvae; imported here so that settings-only callers stay light

    gpus = float(torch.cuda.device_count()) if torch.cuda.is_available() else 0.0
    return Capacity(float(os.cpu_count() or 1), gpus, "this machine (each sweep's local Ray)")


def _ray(address: str) -> Capacity:
    try:
        command = [executable("ray"), "status", "--address", address]
        status = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise CapacityUnknownError(f"`ray status` failed: {error}") from error
    totals = {kind: float(total) for _used, total, kind in _RESOURCE.findall(status.stdout)}
    if status.returncode != 0 or "CPU" not in totals:
        raise CapacityUnknownError(f"`ray status --address {address}` gave no CPU count")
    return Capacity(totals["CPU"], totals.get("GPU", 0.0), f"the Ray cluster at {address}")


def capacity(settings: Settings) -> Capacity:
    """What one trial may ask for at most (settings, else Ray, else this machine); Ray's answer is cached."""
    if settings.cluster_cpus is not None and settings.cluster_gpus is not None:
        return Capacity(settings.cluster_cpus, settings.cluster_gpus, "RDVAE_CLUSTER_CPUS / RDVAE_CLUSTER_GPUS")
    key = settings.ray_address or ""
    with _cache_lock:
        cached = _cache.get(key)
        if cached is None or time.monotonic() - cached[0] > _CACHE_SECONDS:
            cached = (time.monotonic(), _ray(key) if key else _local())
            _cache[key] = cached
    found = cached[1]
    if settings.cluster_cpus is None and settings.cluster_gpus is None:
        return found
    cpus = settings.cluster_cpus if settings.cluster_cpus is not None else found.cpus
    gpus = settings.cluster_gpus if settings.cluster_gpus is not None else found.gpus
    return Capacity(cpus, gpus, "RDVAE_CLUSTER_CPUS / RDVAE_CLUSTER_GPUS")


def capacity_known(settings: Settings) -> bool:
    """Whether `capacity` answers without running `ray status` (set by settings, or cached and fresh)."""
    if settings.cluster_cpus is not None and settings.cluster_gpus is not None:
        return True
    cached = _cache.get(settings.ray_address or "")
    return cached is not None and time.monotonic() - cached[0] <= _CACHE_SECONDS


def unfit_resources(settings: Settings, spec: SweepSpec) -> tuple[str, str] | None:
    """(`resources` field, reason) when a trial of `spec` asks for more than the cluster can ever give, else None."""
    try:
        have = capacity(settings)
    except CapacityUnknownError:
        return None
    wanted = spec.resources
    for field, asked, offered in (("cpus", wanted.cpus, have.cpus), ("gpus", wanted.gpus, have.gpus)):
        if asked > offered:
            return field, f"a trial asks for {asked:g} {field.upper()[:-1]}s but {have.source} has {offered:g}"
    return None


def fair_order(queued: Sequence, running: Sequence, last_started: Mapping[str, datetime] | None = None) -> list:
    """`queued` sweeps (FIFO by `seq`) reordered round-robin by `owner`: fewest running sweeps first, then the
    owner served longest ago (`last_started`: owner → when its latest sweep started), then submission order."""
    busy = Counter(sweep.owner for sweep in running)
    served = {owner: moment.timestamp() for owner, moment in (last_started or {}).items()}
    lines: dict[str, list] = {}
    for sweep in sorted(queued, key=lambda s: s.seq):
        lines.setdefault(sweep.owner, []).append(sweep)
    order = []
    turn = max(served.values(), default=0.0)
    while lines:
        owner = min(lines, key=lambda o: (busy[o], served.get(o, float("-inf")), lines[o][0].seq))
        order.append(lines[owner].pop(0))
        busy[owner] += 1
        turn += 1.0
        served[owner] = turn  # picked now: served after everyone picked before
        if not lines[owner]:
            del lines[owner]
    return order
