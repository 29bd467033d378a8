"""Schemathesis against a real gateway: no input gives a 5xx or a status the OpenAPI document omits.

Bounded and reproducible: a fixed seed, deterministic generation, 60 generated
examples per operation plus schemathesis' coverage cases (about 2 800 requests
in all, well under a minute), as a participant and as the organisers. One
gateway per module, on the session's real PostgreSQL and S3 in a schema and
buckets of its own. Random text rarely draws a NUL, so hooks also offer every
declared query and path parameter a control character: the inputs that used
to reach PostgreSQL and crash (a psycopg DataError, a 500).
"""

from __future__ import annotations

import uuid

import httpx
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig

from gateway.app import create_app
from tests.journey_support import T0, FakeClock, ServerThread, make_challenge, model_zip

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ADMIN = "admin-token-for-tests"
CHECKS = ("not_a_server_error", "status_code_conformance", "unsupported_method",
          "allow_header_conformance", "response_schema_conformance")
HOSTILE = ("\x00", "A\x00", "\x1b[2J", "two\nlines", "tab\there", "\x7f", "\x85")

# The document the served app gives (a test below checks they are the same); built without
# servers because pytest collects the operations before any fixture runs.
SCHEMA = schemathesis.openapi.from_dict(
    create_app(None, None, make_challenge(max_model_mb=2), admin_token=ADMIN).openapi(),
    config=SchemathesisConfig.from_dict({
        "seed": 20210701,
        # Hypothesis' generation-speed checks are about the machine, not the gateway.
        "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
        "generation": {"mode": "all", "max-examples": 60, "deterministic": True,
                       "database": "none"},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
    }))


def _with_a_control_character(values: dict | None, names: list[str]):
    """The generated values as they are, or with one declared parameter set to a hostile value."""
    if not names:
        return st.just(values)
    hostile = st.tuples(st.sampled_from(names), st.sampled_from(HOSTILE)).map(
        lambda pair: {**(values or {}), pair[0]: pair[1]})
    return st.one_of(st.just(values), hostile)


@SCHEMA.hook
def flatmap_query(context, query):
    return _with_a_control_character(query, [p.name for p in context.operation.query])


@SCHEMA.hook
def flatmap_path_parameters(context, path_parameters):
    return _with_a_control_character(path_parameters,
                                      [p.name for p in context.operation.path_parameters])


def allow_names_every_method(ctx, response, case) -> None:
    """A 405's ``Allow`` lists every documented method of the path (schemathesis' own check
    lets an empty ``Allow`` pass)."""
    if response.status_code != 405:
        return
    allow = {m.strip() for m in ",".join(response.headers.get("allow", [])).split(",")}
    documented = {m.upper() for m in SCHEMA.raw_schema["paths"][case.operation.path]}
    assert documented <= allow, f"Allow {sorted(allow)} misses {sorted(documented - allow)}"


@pytest.fixture(scope="module")
def gateway_url(servers):
    """A gateway with one participant, one submission of theirs, and the organisers' token."""
    from mfr.db.migrate import migrate
    from mfr.db.pool import make_pool
    from mfr.settings import StorageSettings
    from mfr.storage import ObjectStore

    schema = f"t_{uuid.uuid4().hex[:12]}"
    migrate(servers.database_url, schema, log=lambda _line: None)
    store = ObjectStore.from_settings(StorageSettings(
        s3_endpoint=servers.s3_endpoint, s3_access_key=servers.s3_access_key,
        s3_secret_key=servers.s3_secret_key, bucket_prefix=f"t{uuid.uuid4().hex[:10]}-"))
    store.ensure_buckets()
    pool = make_pool(servers.database_url, schema=schema, name=schema)
    pool.open(wait=True, timeout=10)
    app = create_app(pool, store, make_challenge(max_model_mb=2), clock=FakeClock(T0),
                     admin_token=ADMIN)
    try:
        with ServerThread(app) as server:
            yield server.url
    finally:
        pool.close()
        _drop(servers.database_url, schema, store)


def _drop(database_url: str, schema: str, store) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    for bucket in store.buckets.all():
        for key in store.list_keys(bucket):
            store.delete(bucket, key)
        store.client.remove_bucket(bucket)


@pytest.fixture(scope="module")
def participant_token(gateway_url) -> str:
    with httpx.Client(base_url=gateway_url, timeout=30) as client:
        token = client.post("/v1/participants", json={"name": "Fuzz"}).json()["token"]
        created = client.post("/v1/submissions", headers={"Authorization": f"Bearer {token}"},
                              data={"track": "A"}, files={"file": ("m.zip", model_zip())})
        assert created.status_code == 202, created.text
    return token


def test_the_fuzzed_document_is_the_served_one(gateway_url):
    served = httpx.get(f"{gateway_url}/openapi.json", timeout=30).json()
    assert served == SCHEMA.raw_schema


@SCHEMA.parametrize()
def test_participant_gets_no_5xx_and_no_undocumented_status(case, gateway_url, participant_token):
    case.call_and_validate(base_url=gateway_url,
                           headers={"Authorization": f"Bearer {participant_token}"},
                           additional_checks=[allow_names_every_method])


@SCHEMA.parametrize()
def test_organisers_get_no_5xx_and_no_undocumented_status(case, gateway_url):
    case.call_and_validate(base_url=gateway_url, headers={"Authorization": f"Bearer {ADMIN}"},
                           additional_checks=[allow_names_every_method])
