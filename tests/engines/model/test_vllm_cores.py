"""vLLM's CPU build on its share of the cores (engines/model/llm_vllm.py): what it starts runs there,
the vision engine's process keeps its own cores."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vlmcap.engines.model.llm_vllm import _cpu_cores

BIND = "VLLM_CPU_OMP_THREADS_BIND"
SEE = f"import json, os; print(json.dumps([sorted(os.sched_getaffinity(0)), os.environ.get('{BIND}')]))"


def started_sees() -> list:
    """What a process started now sees: its cores and the binding (vLLM starts its engine core so)."""
    return json.loads(subprocess.run([sys.executable, "-c", SEE], capture_output=True, text=True, check=True).stdout)


def test_processes_started_for_vllm_run_on_its_cores_and_the_caller_gets_its_own_back(monkeypatch) -> None:
    monkeypatch.delenv(BIND, raising=False)
    own = sorted(os.sched_getaffinity(0))
    with _cpu_cores(1):
        cores, bind = started_sees()
    assert cores == own[-1:] and bind == str(own[-1])
    assert sorted(os.sched_getaffinity(0)) == own and BIND not in os.environ
    assert started_sees() == [own, None]


@pytest.mark.parametrize("threads", [None, 1])
def test_a_binding_the_user_set_or_no_thread_count_changes_nothing(threads, monkeypatch) -> None:
    monkeypatch.setenv(BIND, "all" if threads else "0")
    if threads is None:
        monkeypatch.delenv(BIND)
    own = sorted(os.sched_getaffinity(0))
    with _cpu_cores(threads):
        assert started_sees() == [own, os.environ.get(BIND)]
