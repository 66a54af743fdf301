"""scikit-learn pipelines fitted on a pandas DataFrame: one V2 input per column (as
MLServer's pandas codec has it), called with the official Triton client."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skops.io
import tritonclient.http as triton_http
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from maas.client import Client
from tests.integration.server import RunningServer

pd = pytest.importorskip("pandas", reason="DataFrame models need pandas (the [pandas] extra)")


@pytest.fixture(scope="module")
def customers() -> tuple[object, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame(
        {
            "age": rng.uniform(18, 80, n),
            "visits": rng.integers(0, 20, n),
            "city": rng.choice(["paris", "lyon", "nice"], n),
            "plan": rng.choice(["free", "pro"], n),
        }
    )
    churned = ((frame.visits < 5) | (frame.plan == "free") & (frame.city == "nice")).to_numpy()
    return frame, churned.astype(int)


@pytest.fixture(scope="module")
def churn_model(customers: tuple[object, np.ndarray]) -> Pipeline:
    frame, labels = customers
    columns = ColumnTransformer(
        [
            ("numbers", StandardScaler(), ["age", "visits"]),
            (
                "words",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")
                ),
                ["city", "plan"],
            ),
        ]
    )
    return Pipeline([("columns", columns), ("model", LogisticRegression())]).fit(frame, labels)


def _input(name: str, values: np.ndarray, datatype: str) -> triton_http.InferInput:
    tensor = triton_http.InferInput(name, [len(values), 1], datatype)
    tensor.set_data_from_numpy(values.reshape(-1, 1))
    return tensor


def test_a_dataframe_pipeline_takes_one_input_per_column(
    fresh_server: RunningServer,
    churn_model: Pipeline,
    customers: tuple[object, np.ndarray],
    tmp_path: Path,
) -> None:
    path = tmp_path / "churn.skops"
    skops.io.dump(churn_model, path)
    with Client(fresh_server.url, api_key=fresh_server.api_key) as client:
        client.push(path, "churn")
    triton = fresh_server.triton()
    inputs = triton.get_model_metadata("churn")["inputs"]
    assert inputs == [
        {"name": "age", "datatype": "FP64", "shape": [-1, 1]},
        {"name": "visits", "datatype": "FP64", "shape": [-1, 1]},
        {"name": "city", "datatype": "BYTES", "shape": [-1, 1]},
        {"name": "plan", "datatype": "BYTES", "shape": [-1, 1]},
    ]
    frame, _ = customers
    rows = frame.iloc[:25]  # type: ignore[attr-defined]
    answer = triton.infer(
        "churn",
        [
            _input("age", rows["age"].to_numpy(np.float64), "FP64"),
            _input("visits", rows["visits"].to_numpy(np.float64), "FP64"),
            _input("city", rows["city"].to_numpy(object).astype(np.bytes_).astype(object), "BYTES"),
            _input("plan", rows["plan"].to_numpy(object).astype(np.bytes_).astype(object), "BYTES"),
        ],
    )
    np.testing.assert_array_equal(answer.as_numpy("predict"), churn_model.predict(rows))
    np.testing.assert_allclose(
        answer.as_numpy("predict_proba"), churn_model.predict_proba(rows), rtol=1e-9
    )


def test_a_column_of_the_wrong_kind_is_a_400(
    fresh_server: RunningServer, churn_model: Pipeline, tmp_path: Path
) -> None:
    path = tmp_path / "churn.skops"
    skops.io.dump(churn_model, path)
    with Client(fresh_server.url, api_key=fresh_server.api_key) as client:
        client.push(path, "churn")
    column = {"datatype": "FP64", "shape": [1, 1], "data": [1.0]}
    body = {
        "inputs": [
            {"name": "age", **column},
            {"name": "visits", **column},
            {"name": "city", **column},  # numbers where the model takes words
            {"name": "plan", "datatype": "BYTES", "shape": [1, 1], "data": ["pro"]},
        ]
    }
    with fresh_server.client() as http:
        response = http.post("/v2/models/churn/infer", json=body)
        assert response.status_code == 400, response.text
        assert "city" in response.json()["error"]
        city = {"name": "city", "datatype": "BYTES", "shape": [1, 1], "data": ["nice"]}
        inputs = [*body["inputs"][:2], city]
        missing = http.post("/v2/models/churn/infer", json={"inputs": inputs})
        assert missing.status_code == 400 and "plan" in missing.json()["error"]


def test_a_numpy_fitted_model_keeps_its_single_matrix_input(
    fresh_server: RunningServer, iris_skops: Path
) -> None:
    with Client(fresh_server.url, api_key=fresh_server.api_key) as client:
        client.push(iris_skops, "iris-plain")
        metadata = client.model_metadata("iris-plain")
        assert metadata["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}]
        answer = client.predict("iris-plain", np.array([[5.1, 3.5, 1.4, 0.2]]))
        assert answer["predict"].tolist() == [0]
