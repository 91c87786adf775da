"""This server as replicas on a running Ray cluster (``mode=serve serve.backend=ray``, ``python -m serving --backend
ray``): one Ray Serve application whose replicas each run the single process's FastAPI app (``create_app``), with the
same endpoints, limits, API key, error bodies, /openapi.json and /docs, behind Ray Serve's HTTP proxy (whose own
429, when every replica and the proxy's queue are full, has Ray Serve's text for a body).

- ``Fleet``: where and how many (the cluster address, the application's name, fixed replicas or autoscaling bounds
  with a target of ongoing requests per replica, the CPUs a replica holds);
- ``deployment_options``: what Ray Serve is told, from the server's settings (pure): a replica is sent at most what
  its batch and queue hold (so no replica refuses a request while another has room), a batch and a queue more wait
  at the proxy, and beyond those the proxy answers 429 with Retry-After, never a 5xx; a stopping replica drains its
  requests for ``drain_s``;
- ``Replica``: loads the model in its constructor, so that Ray Serve routes to it only once it can answer, and a
  model that cannot load fails the replica with the reason; it publishes its ``/metrics`` series every ``PUBLISH_S``
  to the application's ``Board`` (a detached actor), so that ``/metrics``, from whichever replica answers it, holds
  every replica's series labelled ``replica`` (one scrape target for the fleet; a replica's own are live, the
  others' at most ``PUBLISH_S`` old; a replica silent for ``STALE_S``, killed, leaves it);
- ``deploy``: connects to the cluster, starts Ray Serve's proxy on the settings' host and port if it is not running,
  deploys (or, under the same name, rolls out: Ray Serve replaces the replicas one at a time) and waits until the
  application runs. A ``models:/name@alias`` URI is pinned to the version the alias names now, so that every replica
  (a restarted one too) serves that version and a later deploy after ``mode=promote`` is a new version to roll out.

Secrets do not travel through Ray (its dashboard shows what a deployment was given): a replica reads
``SERVING_API_KEY``, the S3 and the tracking server's credentials from the environment of ``ray start`` on its node.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from serving.http.metrics import Families, merged
from serving.http.settings import Settings

log = logging.getLogger(__name__)

DEPLOYMENT = "server"
NOT_SENT = {"api_key"}  # read from each replica's own environment
RETRY_AFTER_S = 1  # as the single process's 429 says
HEALTH_PERIOD_S = 5.0
READY_TIMEOUT_S = 900.0  # for every replica of a deploy to load its model
CONSTRUCTOR_RETRIES = 3  # a version that cannot load fails its deployment after this many tries
HEALTH_TIMEOUT_S = 30.0
PUBLISH_S = 2.0  # how often a replica sends its /metrics series to the application's board
STALE_S = 10.0  # a replica not heard from for that long (killed) leaves the fleet's /metrics
BOARD_TIMEOUT_S = 2 * PUBLISH_S  # a /metrics that waits longer for the board answers with its replica's own series
BOARD_NAMESPACE = "lifecycle"
CONNECT_TIMEOUT_S = 5.0
_USERINFO = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@]*@")


@dataclass(frozen=True)
class Fleet:
    """``replicas`` fixed, unless ``max_replicas`` is set: then Ray Serve scales between ``min_replicas`` and it,
    aiming at ``target_ongoing`` requests in flight per replica."""

    address: str
    app_name: str = "lifecycle"
    replicas: int = 1
    min_replicas: int = 1
    max_replicas: int | None = None
    target_ongoing: float = 16.0
    cpus_per_replica: float = 1.0


def deployment_options(settings: Settings, fleet: Fleet, cluster_cpus: float) -> dict[str, Any]:
    """Ray Serve's options for the server's deployment on a cluster of ``cluster_cpus``. A rollout replaces one
    replica at a time; where the cluster has the CPUs of one replica more than the fleet needs, the new replica
    starts first and an old one stops only once it is ready (so a new version that fails to start leaves every old
    replica serving), else an old one stops first. ValueError for a fleet the cluster cannot hold."""
    autoscaling = fleet.max_replicas is not None
    if autoscaling and not 1 <= fleet.min_replicas <= fleet.max_replicas:
        raise ValueError(
            f"autoscaling between {fleet.min_replicas} and {fleet.max_replicas} replicas: min must be at least 1 "
            "and at most max"
        )
    steady = fleet.min_replicas if autoscaling else fleet.replicas
    if cluster_cpus < steady * fleet.cpus_per_replica:
        raise ValueError(
            f"the cluster at {fleet.address} has {cluster_cpus:g} CPUs, and {steady} replicas of "
            f"{fleet.cpus_per_replica:g} CPUs need {steady * fleet.cpus_per_replica:g}: add nodes, or ask for fewer "
            "replicas (serve.replicas) or CPUs a replica (serve.ray.cpus_per_replica)"
        )
    scale: dict[str, Any] = (
        {
            "autoscaling_config": {
                "min_replicas": fleet.min_replicas,
                "max_replicas": fleet.max_replicas,
                "target_ongoing_requests": fleet.target_ongoing,
            }
        }
        if autoscaling
        else {"num_replicas": fleet.replicas}
    )
    spare = cluster_cpus >= (steady + 1) * fleet.cpus_per_replica
    held = settings.batch_size_for("cpu") + settings.max_queue  # what one process holds before it answers 429
    return {
        "name": DEPLOYMENT,
        **scale,
        "max_ongoing_requests": held,  # a replica is never sent more than it holds (none says 429 while one has room)
        # what waits at each proxy for a replica beyond that, then 429: as much again (a batch more than the queue,
        # as Ray Serve's own count of a replica's requests lags their answers)
        "max_queued_requests": held,
        "backpressure_config": {"status_code": 429, "retry_after_s": RETRY_AFTER_S},
        "max_surge_percent": math.ceil(100 / steady) if spare else 0,  # one replica more during a rollout
        "max_constructor_retry_count": CONSTRUCTOR_RETRIES,
        "graceful_shutdown_timeout_s": settings.drain_s,
        "graceful_shutdown_wait_loop_s": 1.0,
        "health_check_period_s": HEALTH_PERIOD_S,
        "health_check_timeout_s": HEALTH_TIMEOUT_S,
        "ray_actor_options": {"num_cpus": fleet.cpus_per_replica},
    }


def replica_settings(settings: Settings) -> dict[str, Any]:
    """What a replica is given: every setting but the secrets, as JSON values. Its queue is a batch longer than
    what Ray Serve sends it can fill: an answer goes back before its row leaves the batch at the next step, so a
    replica may be sent a new request while it still counts the old one, and the proxy alone says 429."""
    given = settings.model_dump(mode="json", exclude=NOT_SENT)
    return {**given, "max_queue": settings.max_queue + settings.batch_size_for("cpu")}


def pinned(uri: str, tracking_uri: str) -> str:
    """``models:/name@alias`` as ``models:/name/<the version the alias names now>``; other URIs unchanged."""
    match = re.match(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)$", uri)
    if not match:
        return uri
    from mlflow import MlflowClient

    version = MlflowClient(tracking_uri, tracking_uri).get_model_version_by_alias(match["name"], match["alias"])
    return f"models:/{match['name']}/{version.version}"


def environment(tracking_uri: str) -> dict[str, str]:
    """What a replica's environment gets from the deployer: the tracking server's URI (the replicas resolve
    ``models:/`` through it); ValueError for a store the replicas cannot share, or a URI that carries credentials."""
    if not tracking_uri:
        return {}
    if not tracking_uri.startswith(("http://", "https://")):
        where = (
            "a file on this machine, written by one process at a time"
            if tracking_uri.startswith("sqlite") or "://" not in tracking_uri or tracking_uri.startswith("file:")
            else "a database each replica would need the credentials of"
        )
        raise ValueError(
            f"the replicas run in Ray worker processes, on any machine of the cluster, and cannot share the tracking "
            f"store {tracking_uri}: it is {where}. Start a tracking server (mode=server-config serve.run=true) and "
            "deploy with tracking_uri=http://<its host>:<its port> (MLFLOW_TRACKING_URI for python -m serving)"
        )
    if _USERINFO.match(tracking_uri):
        raise ValueError(
            "the tracking URI carries credentials, which Ray would show in its dashboard: give it without them, and "
            "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in the environment of `ray start`"
        )
    # the registry too: a node's own MLFLOW_REGISTRY_URI (one that `ray start` inherited) must not send the
    # replicas' models:/ lookups elsewhere
    return {"MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_REGISTRY_URI": tracking_uri}


class Board:
    """The fleet's ``/metrics``: each replica's latest series, by replica (one detached actor per application,
    named by ``board_name``; a replica that stops drops its own, one killed leaves after ``STALE_S``)."""

    def __init__(self) -> None:
        self.latest: dict[str, tuple[float, Families]] = {}

    def put(self, replica: str, families: Families) -> None:
        self.latest[replica] = (time.monotonic(), families)

    def drop(self, replica: str) -> None:
        self.latest.pop(replica, None)

    def families(self) -> dict[str, Families]:
        now = time.monotonic()
        self.latest = {replica: heard for replica, heard in self.latest.items() if now - heard[0] <= STALE_S}
        return {replica: families for replica, (_, families) in self.latest.items()}


def board_name(app_name: str) -> str:
    return f"{app_name}-metrics"


class Replica:
    """One replica: the single process's app, built in the replica from the settings it was given and the
    secrets of its own environment, once its model has loaded (a model that cannot load fails the replica, and Ray
    Serve's error names the reason)."""

    async def __init__(self, settings: dict[str, Any]) -> None:
        from ray import serve

        from serving.http.state import ServingState

        given = {k: v for k, v in settings.items() if v is not None}
        self.settings = Settings.from_env(**given)
        self.state = ServingState(self.settings)
        await self.state.load()
        if self.state.error:
            raise RuntimeError(f"{self.settings.model_uri} did not load: {self.state.error}")
        context = serve.get_replica_context()
        self.name, self.app_name = context.replica_id.unique_id, context.app_name
        self.label = f'replica="{self.name}"'  # on each of this replica's samples in the fleet's /metrics
        self.board = self._board()
        self.state.fleet = self.fleet
        self.publishing = asyncio.create_task(self._publish())

    def __serve_build_asgi_app__(self):
        from serving.http.app import create_app

        return create_app(self.settings, self.state)

    async def check_health(self) -> None:
        if not self.state.ready:
            raise RuntimeError(f"model not loaded: {self.state.error}")

    def _board(self):
        import ray

        remote = ray.remote(num_cpus=0)(Board).options(
            name=board_name(self.app_name), namespace=BOARD_NAMESPACE, lifetime="detached", get_if_exists=True
        )
        return remote.remote()

    async def _publish(self) -> None:
        while True:
            try:
                await self.board.put.remote(self.name, self.state.families(self.label))
            except Exception as exc:  # the board is gone (its node died): a new one
                log.warning("replica %s could not publish its metrics (%s); starting a new board", self.name, exc)
                self.board = self._board()
            await asyncio.sleep(PUBLISH_S)

    async def fleet(self) -> Families:
        """Every replica's series, this one's live."""
        try:
            others = await asyncio.wait_for(self.board.families.remote(), BOARD_TIMEOUT_S)
        except Exception as exc:  # the board does not answer: this replica's own, rather than nothing
            log.warning("the fleet's metrics board did not answer (%s): /metrics has replica %s alone", exc, self.name)
            others = {}
        every = {**others, self.name: self.state.families(self.label)}
        return merged(*(every[name] for name in sorted(every)))

    def __del__(self) -> None:
        """Ray Serve stops the replica: its series leave the fleet's /metrics."""
        with contextlib.suppress(Exception):  # also reached at garbage collection, where Ray may be gone
            self.publishing.cancel()
            self.board.drop.remote(self.name)


def reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """RuntimeError, saying what to do, when nothing listens at the cluster's ``host:port`` (``ray.init`` would
    wait a minute and more); ``auto`` and ``local`` are left to Ray."""
    where = address.removeprefix("ray://")
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise RuntimeError(
            f"no Ray cluster answers at {address} ({exc}): start one (`ray start --head`, docs/team.md) or give the "
            "address of a running one (serve.ray.address, --ray-address or RAY_ADDRESS)"
        ) from None


@contextlib.contextmanager
def connected(address: str) -> Iterator[tuple[Any, Any]]:
    """(ray, ray.serve), connected to the cluster at ``address`` for the block."""
    import ray
    from ray import serve

    reachable(address)
    ray.init(address=address, log_to_driver=False, logging_level="warning")
    try:
        yield ray, serve
    finally:
        ray.shutdown()


def deploy(settings: Settings, fleet: Fleet, tracking_uri: str | None = None) -> str:
    """Deploy (or roll out) the application on the cluster at ``fleet.address``; returns its URL once every replica
    is ready. ``tracking_uri`` (default: MLFLOW_TRACKING_URI) resolves ``models:/`` URIs, here and in the replicas.
    ValueError for what the cluster cannot run; RuntimeError with Ray Serve's reason when the application does not
    start (an application already running under that name keeps serving with what it still has)."""
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", "") if tracking_uri is None else tracking_uri
    env = environment(tracking_uri)
    settings = settings.model_copy(update={"model_uri": pinned(settings.model_uri, tracking_uri)})
    with connected(fleet.address) as (ray, serve):
        options = deployment_options(settings, fleet, ray.cluster_resources().get("CPU", 0))
        serve.start(http_options={"host": settings.host, "port": settings.port})
        options["ray_actor_options"]["runtime_env"] = {"env_vars": env}
        ingress = serve.deployment(serve.ingress()(Replica)).options(**options)
        app = ingress.bind(replica_settings(settings))
        pool = concurrent.futures.ThreadPoolExecutor(1)  # serve.run alone may wait for ever
        running = pool.submit(serve.run, app, name=fleet.app_name, route_prefix="/")
        try:
            running.result(timeout=READY_TIMEOUT_S)
        except (RuntimeError, concurrent.futures.TimeoutError) as exc:
            why = f"{exc} {why_not_running(serve, fleet.app_name)}".strip()
            raise RuntimeError(why or f"not running after {READY_TIMEOUT_S:g} s") from None
        finally:
            pool.shutdown(wait=False)
    return f"http://{settings.host}:{settings.port}"


def undeploy(fleet: Fleet) -> bool:
    """Delete the application ``fleet.app_name`` from the cluster (its replicas drain first) and its metrics board;
    False if it was not there."""
    with connected(fleet.address) as (ray, serve):
        if fleet.app_name not in serve.status().applications:
            return False
        serve.delete(fleet.app_name)
        with contextlib.suppress(ValueError):  # no board: no replica ever loaded
            ray.kill(ray.get_actor(board_name(fleet.app_name), namespace=BOARD_NAMESPACE))
        return True


def why_not_running(serve, app_name: str) -> str:
    """What Ray Serve says of the application's deployment (a replica's error, for one that failed to start)."""
    application = serve.status().applications.get(app_name)
    deployment = application.deployments.get(DEPLOYMENT) if application else None
    return deployment.message if deployment else ""
