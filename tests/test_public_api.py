"""The public namespace is pinned: adding or removing a name is a deliberate change."""

import epcsim
import epcsim.kernel


def test_epcsim_all() -> None:
    assert sorted(epcsim.__all__) == [
        "EngineMismatchError",
        "EpcsimError",
        "EpcsimUsageError",
        "Host",
        "HostConfigError",
        "Result",
        "Scenario",
        "ScenarioError",
        "__version__",
        "check_invariants",
        "list_builtins",
        "load_scenario",
        "run",
    ]
    for name in epcsim.__all__:
        assert hasattr(epcsim, name)


def test_kernel_all() -> None:
    assert sorted(epcsim.kernel.__all__) == [
        "ERESTARTSYS",
        "Host",
        "InvariantError",
        "RoundRobin",
        "Task",
        "check_invariants",
        "drive",
        "oom_kill_task",
        "send_signal",
        "task_exit",
    ]
    assert epcsim.kernel.ERESTARTSYS == 512
