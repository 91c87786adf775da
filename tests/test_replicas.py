"""What serving.replicas tells Ray Serve, and what it refuses, without a cluster (features/replicas.feature runs
the replicas on a real one)."""

from __future__ import annotations

import pytest

from serving.http.settings import Settings
from serving.replicas import Fleet, deployment_options, environment, pinned, replica_settings


def settings(**overrides) -> Settings:
    return Settings(model_uri="models:/m@champion", **overrides)


def test_a_replica_is_sent_what_it_holds_and_the_proxy_says_429_beyond_its_queue():
    options = deployment_options(settings(max_batch_size=8, max_queue=4), Fleet("h:1", replicas=2), cluster_cpus=2)
    assert options["num_replicas"] == 2 and "autoscaling_config" not in options
    assert options["max_ongoing_requests"] == 12
    assert options["max_queued_requests"] == 12
    assert options["backpressure_config"]["status_code"] == 429 and options["backpressure_config"]["retry_after_s"]
    assert options["graceful_shutdown_timeout_s"] == 30.0  # SERVING_DRAIN_S
    assert options["ray_actor_options"] == {"num_cpus": 1.0}


def test_a_rollout_starts_the_new_replica_first_only_where_the_cluster_has_room_for_it():
    fleet = Fleet("h:1", replicas=2, cpus_per_replica=1)
    assert deployment_options(settings(), fleet, cluster_cpus=3)["max_surge_percent"] == 50  # one replica of two
    assert deployment_options(settings(), fleet, cluster_cpus=2)["max_surge_percent"] == 0  # stop one first


def test_autoscaling_bounds_replace_the_fixed_count():
    fleet = Fleet("h:1", min_replicas=1, max_replicas=4, target_ongoing=8)
    options = deployment_options(settings(), fleet, cluster_cpus=4)
    assert "num_replicas" not in options
    assert options["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8}


@pytest.mark.parametrize(
    ("fleet", "cpus", "says"),
    [
        (Fleet("h:1", replicas=3), 2, "has 2 CPUs, and 3 replicas of 1 CPUs need 3"),
        (Fleet("h:1", min_replicas=3, max_replicas=2), 8, "min must be at least 1 and at most max"),
    ],
)
def test_a_fleet_the_cluster_cannot_hold_is_refused_with_what_to_change(fleet, cpus, says):
    with pytest.raises(ValueError, match=says):
        deployment_options(settings(), fleet, cluster_cpus=cpus)


def test_replicas_get_no_secret_and_a_queue_a_batch_longer():
    given = replica_settings(settings(api_key="s3cret", max_batch_size=8, max_queue=4))
    assert "api_key" not in given and "s3cret" not in repr(given)
    assert given["max_queue"] == 12 and given["max_batch_size"] == 8
    assert Settings(**given).model_uri == "models:/m@champion"


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("sqlite:////srv/mlflow.db", "a file on this machine"),
        ("/srv/mlruns", "a file on this machine"),
        ("postgresql://db:5432/mlflow", "a database each replica would need the credentials of"),
        ("https://user:pw@mlflow.example.com", "carries credentials"),
    ],
)
def test_a_tracking_store_the_replicas_cannot_share_is_refused(uri, says):
    with pytest.raises(ValueError, match=says):
        environment(uri)


def test_the_replicas_resolve_models_through_the_tracking_server():
    given = environment("http://mlflow:5050")
    assert given == {"MLFLOW_TRACKING_URI": "http://mlflow:5050", "MLFLOW_REGISTRY_URI": "http://mlflow:5050"}
    assert environment("") == {}  # a model folder needs none


@pytest.mark.parametrize("uri", ["models:/m/3", "runs:/abc/model", "/srv/models/smollm2"])
def test_only_an_alias_is_pinned(uri):
    assert pinned(uri, "http://unused:1") == uri


def test_the_fleets_metrics_hold_one_family_a_name_with_a_sample_per_replica():
    from collections import Counter

    from serving.engine.scheduler import Stats
    from serving.http.metrics import Metrics, exposition, merged

    stats = Stats(batch_sizes=Counter({4: 2}), running=1, steps=2, tokens=7, generate_s=2.0)
    metrics = Metrics()
    metrics.record("/ask", 200, 0.2)
    fleet = exposition(
        merged(metrics.families(stats, 1, None, 'replica="a"'), metrics.families(None, 0, None, 'replica="b"'))
    )
    lines = fleet.splitlines()
    types = [line for line in lines if line.startswith("# TYPE")]
    assert len(types) == len(set(types))  # each family once
    tokens = lines.index("# TYPE serving_tokens_generated_total counter")
    assert lines[tokens + 1 : tokens + 3] == [
        'serving_tokens_generated_total{replica="a"} 7',
        'serving_tokens_generated_total{replica="b"} 0',
    ]
    assert 'serving_request_duration_seconds_count{replica="a",path="/ask"} 1' in lines
    assert 'serving_batch_size_bucket{replica="b",le="+Inf"} 0' in lines


def test_the_board_forgets_a_replica_that_stopped_or_went_silent(monkeypatch):
    import serving.replicas as replicas

    clock = [100.0]
    monkeypatch.setattr(replicas.time, "monotonic", lambda: clock[0])
    board = replicas.Board()
    board.put("a", [("x", "counter", ['x{replica="a"} 1'])])
    board.put("b", [("x", "counter", ['x{replica="b"} 2'])])
    board.put("c", [])
    board.drop("c")  # stopped by Ray Serve
    clock[0] += replicas.STALE_S - 1
    board.put("b", [("x", "counter", ['x{replica="b"} 3'])])
    assert set(board.families()) == {"a", "b"}
    clock[0] += 2  # a killed: not heard from for longer than STALE_S
    assert board.families() == {"b": [("x", "counter", ['x{replica="b"} 3'])]}


def test_a_cluster_address_where_nothing_listens_is_refused_at_once_saying_what_to_do():
    from devservices.ports import free_port
    from serving.replicas import reachable

    for address in (f"127.0.0.1:{free_port()}", f"ray://127.0.0.1:{free_port()}"):
        with pytest.raises(RuntimeError, match=r"no Ray cluster answers at .*ray start --head"):
            reachable(address, timeout_s=2)
    reachable("auto")  # left to Ray
