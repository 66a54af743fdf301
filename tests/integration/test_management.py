"""Management with the SDK and CLI against a real server: push, alias, delete, refuse.
What the API refuses is checked in process (``tests/inprocess/test_management.py``)."""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
import tritonclient.http as triton
from sklearn.linear_model import LogisticRegression

import maas.errors
from maas.client import Client
from tests.conftest import POSTGRES_URL, require_service
from tests.demo_home import copy_home
from tests.integration.server import RunningServer, cli, start_server


def test_onnx_model_pushed_with_cli_is_served_like_the_demo(
    fresh_server: RunningServer,
    iris_onnx: Path,
    iris: tuple[np.ndarray, np.ndarray],
    iris_model: LogisticRegression,
) -> None:
    pushed = cli(
        fresh_server, "models", "push", str(iris_onnx), "--name", "flowers", "--alias", "production"
    )
    assert pushed.returncode == 0, pushed.stderr
    assert "flowers:1" in pushed.stdout

    features = iris[0]
    data = triton.InferInput("float_input", list(features.shape), "FP32")
    data.set_data_from_numpy(features.astype(np.float32))
    result = fresh_server.triton().infer("flowers", [data])
    np.testing.assert_array_equal(result.as_numpy("label"), iris_model.predict(features))

    listed = cli(fresh_server, "models", "list")
    assert listed.returncode == 0 and "flowers" in listed.stdout
    predicted = cli(
        fresh_server, "predict", "flowers:production", "--data", "[[5.1, 3.5, 1.4, 0.2]]"
    )
    assert predicted.returncode == 0, predicted.stderr
    assert '"label"' in predicted.stdout


def test_sdk_push_alias_predict_and_lifecycle(
    fresh_server: RunningServer, iris_skops: Path, iris_onnx: Path, iris_model: LogisticRegression
) -> None:
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    with Client(fresh_server.url, api_key=fresh_server.api_key) as client:
        first = client.push(iris_skops, "iris", description="iris", metadata={"team": "qa"})
        assert (first.version, first.framework) == (1, "sklearn")
        assert first.digest.startswith("sha256:") and first.size_bytes == iris_skops.stat().st_size
        assert first.metadata["team"] == "qa"
        assert [s.name for s in first.signature.outputs] == ["predict", "predict_proba"]

        second = client.push(iris_skops, "iris", alias="staging")
        assert second.version == 2 and second.digest == first.digest  # deduplicated content
        assert second.aliases == ["staging"]

        client.set_alias("iris", "production", 1)
        out = client.predict("iris:production", rows)
        np.testing.assert_array_equal(out["predict"], iris_model.predict(rows))
        assert client.predict("iris:2", rows)["predict_proba"].shape == (2, 3)

        with pytest.raises(maas.errors.VersionInUse):
            client.delete_version("iris", 1)
        client.set_alias("iris", "production", 2)
        client.delete_version("iris", 1)
        with pytest.raises(maas.errors.VersionNotFound):
            client.get_version("iris", 1)
        # The shared artifact survives: version 2 still loads and answers.
        assert client.predict("iris", rows)["predict"].tolist() == [0, 2]

        third = client.push(iris_skops, "iris")
        assert third.version == 3  # numbers are never reused

        model = client.get_model("iris")
        assert model.latest_version == 3 and model.aliases == {"production": 2, "staging": 2}
        client.delete_alias("iris", "staging")
        assert {a.alias for a in client.list_aliases("iris")} == {"production"}

        client.delete_model("iris")
        with pytest.raises(maas.errors.ModelNotFound):
            client.get_model("iris")
        assert client.list_models() == []


def test_pickle_is_refused_without_trust_and_served_with_it(
    tmp_path: Path, fresh_server: RunningServer, iris_model: LogisticRegression
) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(iris_model))
    with Client(fresh_server.url, api_key=fresh_server.api_key) as client:
        with pytest.raises(maas.errors.UntrustedArtifact):
            client.push(path, "pickled")
        assert client.list_models() == []  # nothing half-registered

    trusting = start_server(tmp_path / "trusting", "--trust-pickle")
    try:
        with Client(trusting.url, api_key=trusting.api_key) as client:
            version = client.push(path, "pickled", alias="production")
            assert version.framework == "pickle"
            out = client.predict("pickled", np.array([[5.1, 3.5, 1.4, 0.2]]))
            assert out["predict"].tolist() == [0]
    finally:
        trusting.stop()


# -- odd references, on both registry backends (the API's answers: tests/inprocess) ------

HUGE = "99999999999999999999"  # past SQLite's 64-bit integers


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def demo_on(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, demo_template: Path
) -> Iterator[RunningServer]:
    """A demo server on each registry backend: they overflow at different numbers, and
    PostgreSQL refuses NUL in any text, even one it only compares."""
    env, schema = {}, None
    if request.param == "postgresql":
        require_service("PostgreSQL", "127.0.0.1", 5432)
        schema = f"it_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        env["MAAS_DATABASE_URL"] = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    home = tmp_path_factory.mktemp(f"odd-{request.param}")
    if schema is None:  # on SQLite, the demo's registry can be the session's copy
        copy_home(demo_template, home)
    server = start_server(home, "--demo", env=env)
    yield server
    server.stop()
    if schema is not None:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_sdk_references_past_the_version_range(demo_on: RunningServer) -> None:
    rows = np.array([[5.1, 3.5, 1.4, 0.2]])
    with Client(demo_on.url, api_key=demo_on.api_key) as client:
        with pytest.raises(maas.errors.VersionNotFound):
            client.predict(f"iris:{HUGE}", rows)  # the V2 path /v2/models/iris/versions/…
        with pytest.raises(maas.errors.VersionNotFound):
            client.get_version("iris", 2**40)
        with pytest.raises(maas.errors.InvalidName):
            client.predict("iris:³", rows)
        assert client.predict("iris:1", rows)["predict"].tolist() == [0]


def test_least_recently_used_version_unloads_past_the_limit(
    tmp_path: Path, iris_skops: Path
) -> None:
    server = start_server(tmp_path / "home", "--max-loaded-models", "1")
    try:
        rows = np.array([[5.1, 3.5, 1.4, 0.2]])
        with Client(server.url, api_key=server.api_key) as client, server.client() as http:
            client.push(iris_skops, "first")
            client.push(iris_skops, "second")
            client.predict("first", rows)
            assert http.get("/v2/models/first/ready").status_code == 200
            client.predict("second", rows)
            assert http.get("/v2/models/second/ready").status_code == 200
            assert http.get("/v2/models/first/ready").status_code == 503
            # Used again, it loads again.
            assert client.predict("first", rows)["predict"].tolist() == [0]
    finally:
        server.stop()


def test_registry_on_postgresql_serves_the_same(
    tmp_path: Path, postgres_schema_url: str, iris_skops: Path
) -> None:
    server = start_server(
        tmp_path / "home", "--demo", env={"MAAS_DATABASE_URL": postgres_schema_url}
    )
    try:
        with Client(server.url, api_key=server.api_key) as client:
            assert {m.name for m in client.list_models()} == {"iris", "iris-onnx"}
            version = client.push(iris_skops, "iris", alias="staging")
            assert version.version == 2
            assert client.predict("iris:staging", np.array([[6.7, 3.0, 5.2, 2.3]]))[
                "predict"
            ].tolist() == [2]
    finally:
        server.stop()
    # A restart finds everything again and loads the aliased versions.
    again = start_server(tmp_path / "home", env={"MAAS_DATABASE_URL": postgres_schema_url})
    try:
        with Client(again.url, api_key=again.api_key) as client:
            assert client.get_model("iris").aliases == {"production": 1, "staging": 2}
    finally:
        again.stop()
