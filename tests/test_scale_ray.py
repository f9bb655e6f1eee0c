"""The same on Ray: a local cluster (ray.init(num_cpus=2), no network), started once for
this module and shut down after it."""
import pytest

from test_scale import KW, kill_mid_build, reference  # noqa: F401  (a fixture)
from conftest import make_tiny_llama

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a Ray cluster takes seconds to start; its workers import torch


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="error")
    yield
    ray.shutdown()


def busy_ray_workers():
    """Ray workers running a job (ray::_call) or a pool's actor (ray::_Holder)."""
    import psutil

    return [p for p in psutil.Process().children(recursive=True) if p.name().startswith(("ray::_call", "ray::_Holder"))]


def test_ray_builds_the_same_artifact_even_when_a_worker_dies(cluster, reference, tmp_path, byte_tokenizer):  # noqa: F811
    from elastiq.elastic import build
    from elastiq.elastic.artifact import differences
    from elastiq.executors import make_executor

    ex = make_executor("ray", workers=2)
    killed = kill_mid_build(ex, busy_ray_workers)
    out = build(make_tiny_llama(), byte_tokenizer, tmp_path / "r", executor=ex, **KW)
    ex.close()  # the session is the fixture's: closing leaves it running
    assert len(killed) == 2 and ray.is_initialized()  # a task's worker and an actor
    assert differences(reference, out) == []


def test_the_search_ranks_plans_the_same_on_ray(cluster):
    from elastiq.executors import make_executor
    from elastiq.labs.planning.search import search

    serial = search("llama-2-7b", "a100-80gb", 16, 64)
    spread = search("llama-2-7b", "a100-80gb", 16, 64, executor=make_executor("ray"), plans_per_job=8)
    assert [(r.parallel, r.micro_batch, r.iteration_s) for r in spread.ranked] == \
           [(r.parallel, r.micro_batch, r.iteration_s) for r in serial.ranked]
