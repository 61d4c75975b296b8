import pytest
import ray


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray for the in-process round tests (the driver reuses an initialised Ray)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False,
             object_store_memory=128 * 1024 * 1024, logging_level="WARNING")
    yield
    ray.shutdown()
