"""vLLM's CPU build on its share of the cores (engines/runtime/llm_vllm.py): what it starts runs there,
the caller gets its own cores back, and the vision stage's thread keeps off the LLM's
(engines/batch/local_stages.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from types import SimpleNamespace

import pytest

from vlmcap.engines.batch.local_stages import _keep_off_the_llm_cores
from vlmcap.engines.runtime.llm_vllm import _cpu_cores

BIND = "VLLM_CPU_OMP_THREADS_BIND"
SEE = f"import json, os; print(json.dumps([sorted(os.sched_getaffinity(0)), os.environ.get('{BIND}')]))"


def started_sees() -> list:
    """What a process started now sees: its cores and the binding (vLLM starts its engine core so)."""
    return json.loads(subprocess.run([sys.executable, "-c", SEE], capture_output=True, text=True, check=True).stdout)


def test_processes_started_for_vllm_run_on_its_cores_and_the_caller_gets_its_own_back(monkeypatch) -> None:
    monkeypatch.delenv(BIND, raising=False)
    own = sorted(os.sched_getaffinity(0))
    with _cpu_cores(1) as llm_cores:
        cores, bind = started_sees()
    assert cores == llm_cores == own[-1:] and bind == str(own[-1])
    assert sorted(os.sched_getaffinity(0)) == own and BIND not in os.environ
    assert started_sees() == [own, None]


@pytest.mark.parametrize("threads", [None, 1])
def test_a_binding_the_user_set_or_no_thread_count_changes_nothing(threads, monkeypatch) -> None:
    monkeypatch.setenv(BIND, "all" if threads else "0")
    if threads is None:
        monkeypatch.delenv(BIND)
    own = sorted(os.sched_getaffinity(0))
    with _cpu_cores(threads) as llm_cores:
        assert started_sees() == [own, os.environ.get(BIND)] and llm_cores is None


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="keeping off a core needs a second one")
def test_the_vision_stage_computes_on_the_cores_vllm_was_not_given() -> None:
    own = sorted(os.sched_getaffinity(0))
    seen: dict[str, list[int]] = {}

    def vision_stage(name: str, llm_cores: list[int] | None) -> None:
        engines = SimpleNamespace(llm=SimpleNamespace(cores=llm_cores))
        _keep_off_the_llm_cores(engines)
        seen[name] = sorted(os.sched_getaffinity(0))

    for name, llm_cores in (("bound", own[-1:]), ("unbound", None), ("every core", own)):
        thread = threading.Thread(target=vision_stage, args=(name, llm_cores))
        thread.start()
        thread.join()
    assert seen == {"bound": own[:-1], "unbound": own, "every core": own}  # never left without a core
    assert sorted(os.sched_getaffinity(0)) == own  # the thread's own: the rest of the process keeps its cores
