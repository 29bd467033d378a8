"""k8s/overlays/dev, run from the built CPU image, against the suite's PostgreSQL and S3.

Every container of every workload that uses the platform's image runs its
manifest's command, args and environment inside ``localhost/mfr-platform:VERSION``
(built by ``make images-cpu``) as the pod's user: the migrate Job exits 0,
each Deployment reaches its readiness probe's answer (gRPC health SERVING,
``/healthz`` 200), one submission goes from upload to the leaderboard with
every platform process running from the image, its scores are exactly
``mfr score``'s on the same features, every process stops cleanly on SIGTERM,
and none wrote to the image's root filesystem (read-only in the manifests).

The organiser's steps are the documented ones (docs/operations-upkeep.md): the
buckets, the test set uploaded, ``MFR_TESTSET_ID`` set, a challenge mounted at
/etc/mfr/challenge as the ``challenge`` component does (the built-in one's
window closed in 2021). Tier ``images``: ``.ci/run`` builds the image, then runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import urllib3

from tests.images import pods
from tests.journey_support import challenge_toml

pytestmark = pytest.mark.images

REPOSITORY = "mfr-platform"
USER_UID = 10001
MODEL = "synth-lda-400"


def _image() -> str:
    version = tomllib.loads((pods.ROOT / "pyproject.toml").read_text())["project"]["version"]
    return f"localhost/{REPOSITORY}:{version}"


@pytest.fixture(scope="module")
def image() -> str:
    # .ci/run builds the image first and sets MFR_IMAGES_REQUIRED: there a missing
    # image is a failure, not a skip.
    required = os.environ.get("MFR_IMAGES_REQUIRED") == "1"
    tag = _image()
    if shutil.which("buildah") is None:
        message = "buildah is not installed (apt-get install buildah)"
    elif subprocess.run(["buildah", "inspect", "--type", "image", tag],
                        capture_output=True, check=False).returncode != 0:
        message = f"{tag} is not built: run `make images-cpu`"
    else:
        return tag
    if required:
        pytest.fail(message)
    pytest.skip(message)


def _point_at_this_machine(cluster: pods.Cluster, servers, database_url: str) -> None:
    """The dev Secrets re-pointed at the suite's servers; the Services' names at 127.0.0.1.

    Cluster DNS is what a cluster has and this machine has not: /etc/hosts serves
    glibc, but gRPC's resolvers in these containers did not find the names there,
    so the ConfigMap's `service:port` addresses name 127.0.0.1 directly."""
    for name, data in cluster.secrets.items():
        if name.startswith("mfr-database-"):
            data["url"] = database_url
        elif name.startswith("mfr-s3-"):
            data.update({"endpoint": servers.s3_endpoint, "secure": "false",
                         "access-key": servers.s3_access_key,
                         "secret-key": servers.s3_secret_key})
    config = cluster.config_maps["mfr-config"]
    for key, value in config.items():
        name, _, port = value.partition(":")
        if name in cluster.services and port.isdigit():
            config[key] = f"127.0.0.1:{port}"


def _as_the_organiser(cluster: pods.Cluster, servers, root: Path) -> tuple[Path, Path]:
    """The documented steps: buckets, the test set uploaded and named in the
    ConfigMap, a challenge (open now) for /etc/mfr/challenge. Returns both paths."""
    from cli.stack.testsets import default_testset, upload_testset
    from mfr.settings import StorageSettings
    from mfr.storage import ObjectStore

    config = cluster.config_maps["mfr-config"]
    store = ObjectStore.from_settings(StorageSettings(
        s3_endpoint=servers.s3_endpoint, s3_access_key=servers.s3_access_key,
        s3_secret_key=servers.s3_secret_key, bucket_prefix=config["MFR_BUCKET_PREFIX"]))
    store.ensure_buckets()
    testset = default_testset(0.001)
    config["MFR_TESTSET_ID"] = upload_testset(store, testset)
    challenge = root / "challenge" / "challenge.toml"
    challenge.parent.mkdir()
    now = datetime.now(UTC)
    challenge.write_text(challenge_toml(opens=now - timedelta(days=1),
                                        closes=now + timedelta(days=1)))
    return testset, challenge


@pytest.fixture(scope="module")
def platform(image, servers, tmp_path_factory):
    """The dev overlay's platform workloads, started from the image; stopped after."""
    import psycopg

    root = tmp_path_factory.mktemp("images")
    cluster = pods.Cluster.from_docs(pods.render("k8s/overlays/dev"))
    containers = cluster.of_image(REPOSITORY)
    config = pods.image_config(image)
    # One network for every pod here: the manifests' fixed ports must be free.
    held = pods.busy(pods.listening_ports(containers))
    assert not held, f"ports the overlay's pods listen on are taken (run the tier alone): {held}"
    database = f"mfr_images_{uuid.uuid4().hex[:8]}"  # empty: the migrate Job's to fill
    with psycopg.connect(servers.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    _point_at_this_machine(cluster, servers,
                           servers.database_url.rsplit("/", 1)[0] + f"/{database}")
    testset, challenge = _as_the_organiser(cluster, servers, root)
    hosts = root / "hosts"
    hosts.write_text("".join(f"127.0.0.1 {name}\n" for name in ["localhost", *cluster.services]))
    logs = root / "logs"
    logs.mkdir()

    def launch(container: pods.Container, run=pods.start, **wait) -> pods.ImageProcess:
        scratch = root / "scratch" / container.workload  # the emptyDir, owned as fsGroup makes it
        scratch.mkdir(parents=True)
        os.chown(scratch, USER_UID, USER_UID)
        env = container.env(cluster.config_maps, cluster.secrets)
        env["MFR_CHALLENGE"] = "/etc/mfr/challenge/challenge.toml"  # the challenge component
        return run(container.workload, image,
                   container.argv(config.get("Entrypoint") or [], config.get("Cmd") or []),
                   env, container.user(), scratch, hosts, logs,
                   mounts={challenge.parent: "/etc/mfr/challenge"}, **wait)

    started: list[pods.ImageProcess] = []
    state = {"cluster": cluster, "root": root, "testset": testset, "challenge": challenge,
             "processes": started, "config": config, "jobs": {}, "deployments": {}}
    try:
        for job in (c for c in containers if c.kind == "Job"):
            started.append(launch(job, pods.run_to_end, timeout_s=120))
            state["jobs"][job.workload] = started[-1]
        for container in (c for c in containers if c.kind == "Deployment"):
            started.append(launch(container))
            state["deployments"][container.workload] = (container, started[-1])
        yield state
    finally:
        for process in started:
            process.stop()
        pods.remove(started)
        with psycopg.connect(servers.database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def test_the_image_is_labelled_and_runs_as_the_manifests_user(platform):
    config = platform["config"]
    labels = config.get("Labels") or {}
    assert labels.get("org.opencontainers.image.version") == _image().rsplit(":", 1)[1]
    revision = labels.get("org.opencontainers.image.revision", "")
    assert len(revision.removesuffix("-dirty")) == 40, revision
    assert config["User"] == f"{USER_UID}:{USER_UID}"
    for container in platform["cluster"].of_image(REPOSITORY):
        assert container.user() == config["User"], container.workload
        assert container.spec["securityContext"]["readOnlyRootFilesystem"] is True


def test_every_workload_of_the_overlay_that_uses_the_image_is_run(platform):
    ran = set(platform["jobs"]) | set(platform["deployments"])
    expected = {"migrate", "validator", "embedder", "embedder-worker", "scorer",
                "scorer-worker", "ranker", "dispatcher", "gateway"}
    assert ran == expected


def test_the_migrate_job_exits_0(platform):
    job = platform["jobs"]["migrate"]
    assert job.exit_code == 0, job.tail()


def test_every_deployment_reaches_its_readiness(platform):
    from mfr.rpc.client import health_status

    http = urllib3.PoolManager(retries=False, timeout=5)
    waiting = dict(platform["deployments"])
    deadline = time.monotonic() + max(c.startup_budget_s() for c, _ in waiting.values())
    answers = {}
    while waiting and time.monotonic() < deadline:
        for name, (container, process) in list(waiting.items()):
            assert process.alive(), f"{name} exited:\n{process.tail()}"
            probe, port, target = container.ready_check()
            if probe == "grpc":
                answers[name] = health_status(f"127.0.0.1:{port}", target)
                ready = answers[name] == "SERVING"
            else:
                try:
                    answers[name] = http.request("GET", f"http://127.0.0.1:{port}{target}").status
                except urllib3.exceptions.HTTPError as error:
                    answers[name] = repr(error)
                ready = answers[name] == 200
            if ready:
                del waiting[name]
        time.sleep(1)
    assert not waiting, {name: (answers.get(name), p.tail(1500)) for name, (_, p) in
                         waiting.items()}


def test_a_submission_goes_from_upload_to_the_leaderboard(platform):
    from cli.client import GatewayClient, zip_model
    from mfr.baselines.build import build_baselines

    root = platform["root"]
    container, _ = platform["deployments"]["gateway"]
    url = f"http://127.0.0.1:{container.ready_check()[1]}"
    build_baselines(root / "baselines")
    onnx = root / "baselines" / f"{MODEL}.onnx"
    client = GatewayClient(url, GatewayClient(url).signup("Image Lab")["token"])
    submitted = client.submit(zip_model(onnx, root / "model.zip"), "A")
    done = client.follow(submitted["id"], interval=1, timeout=600)
    logs = {name: p.tail(800) for name, (_, p) in platform["deployments"].items()}
    assert done["state"] == "scored", (done, logs)
    entry = next(e for e in client.leaderboard("A")["entries"]
                 if e["submission_id"] == done["id"])
    assert entry["participant"] == "Image Lab"

    # Exactly what `mfr score` says on the same features, made here from the same model.
    testset, features = platform["testset"], root / "features.npy"
    subprocess.run([sys.executable, "-m", "cli.main", "embed", "--model", str(onnx),
                    "--testset", str(testset), "--out", str(features)], check=True,
                   capture_output=True)
    offline = json.loads(subprocess.run(
        [sys.executable, "-m", "cli.main", "score", "--challenge", str(platform["challenge"]),
         "--manifest", str(testset / "manifest.csv"), "--features", str(features), "--json"],
        check=True, capture_output=True, text=True).stdout)
    assert set(done["scores"]) == set(offline["protocols"])
    for pid, expected in offline["protocols"].items():
        assert done["scores"][pid]["tar"] == expected["tar"], pid
        assert done["scores"][pid]["threshold"] == expected["threshold"], pid
    assert done["ranking_score"] == offline["ranking_score"]
    assert entry["ranking_score"] == offline["ranking_score"]


def test_every_process_stops_on_sigterm_and_wrote_nothing_to_the_root_filesystem(platform):
    for name, (container, process) in platform["deployments"].items():
        grace = container.pod.get("terminationGracePeriodSeconds", 30)
        assert process.stop(grace_s=grace) == 0, f"{name}:\n{process.tail()}"
    # The check reads each container's own layer: it must have found it.
    assert all(p.upper_dir is not None and p.upper_dir.is_dir() for p in platform["processes"])
    written = {p.name: pods.written_to_root(p) for p in platform["processes"]}
    assert not any(written.values()), written
