"""Fine-tuning the bundled MiniLM for sequence classification, on CPU, a few steps."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest

from maas.protocols.jobs import JobEvent, JobInfo
from tests.integration.jobs_helpers import sdk
from tests.integration.server import start_server
from tests.jobs_data import tickets_csv


@pytest.mark.timeout(300)
def test_minilm_finetune_reports_loss_and_registers_a_transformers_version(
    tmp_path: Path,
) -> None:
    server = start_server(tmp_path / "home", env={"MAAS_JOBS__THREADS_PER_JOB": "2"})
    try:
        with sdk(server) as client:
            client.push_dataset(tickets_csv(tmp_path / "tickets.csv", n=48), "tickets")
            job = client.submit_job(
                {
                    "kind": "finetune",
                    "model": "tickets-minilm",
                    "dataset": "tickets",
                    "max_steps": 3,
                    "batch_size": 8,
                    "max_length": 24,
                    "eval_every": 2,
                    "learning_rate": 1e-4,
                }
            )
            seen = list(client.follow_job(job.id))
            final = seen[-1]
            assert isinstance(final, JobInfo)
            assert final.state == "succeeded", (final.error, client.job_logs(job.id))
            steps = [
                e.data
                for e in seen
                if isinstance(e, JobEvent) and e.type == "progress" and "step" in e.data
            ]
            assert [s["step"] for s in steps] == [1, 2, 3]
            assert final.progress["fraction"] == 1.0  # not the 0.95 of its last report
            logged = [
                str(e.data.get("line")) for e in seen if isinstance(e, JobEvent) and e.type == "log"
            ]
            noise = [
                line
                for line in logged
                if "LOAD REPORT" in line or "MISSING" in line or "\x1b[" in line
            ]
            assert not noise, logged
            assert all(s["loss"] > 0 for s in steps) and "eval" in steps[1]
            metrics = final.result["metrics"]
            assert 0 <= metrics["accuracy"] <= 1 and "f1_macro" in metrics
            (number,) = final.result["versions"]
            version = client.get_version("tickets-minilm", number)
            assert version.framework == "transformers" and version.filename == "model.tar"
            assert version.metadata["labels"] == ["electrical", "hydraulic", "software"]
            assert version.metrics["accuracy"] == metrics["accuracy"]
            assert version.lineage["job"] == job.id
            served = client.predict(
                f"tickets-minilm:{number}", np.array([b"pump leak near the valve"], dtype=object)
            )
            assert served["label"][0].decode() in version.metadata["labels"]

            optimize = client.submit_job(
                {
                    "kind": "optimize",
                    "model": "tickets-minilm",
                    "version": number,
                    "method": "quantize_int8",
                    "dataset": "tickets",
                    "text_column": "text",
                    "target": "label",
                    "max_rows": 16,
                    "latency_budget_s": 0.2,
                }
            )
            optimized = client.wait_job(optimize.id)
            assert optimized.state == "succeeded", (optimized.error, client.job_logs(optimize.id))
            report = optimized.result["report"]
            assert report["size_bytes"]["after"] < 0.35 * report["size_bytes"]["before"]
            assert report["quality"]["metric"] == "accuracy" and report["quality"]["cosine"] > 0.9
            torch_int8 = report["alternatives"]["torch_dynamic_int8"]
            assert torch_int8["size_bytes"] < report["size_bytes"]["before"]
            assert 0 <= report["quality"]["agreement"] <= 1
            (int8,) = optimized.result["versions"]
            onnx = client.get_version("tickets-minilm", int8)
            assert onnx.framework == "onnx-text"  # a drop-in replacement: text in, labels out
            assert onnx.signature == version.signature
            assert onnx.metadata["labels"] == version.metadata["labels"]
            texts = np.array([b"pump leak near the valve", b"breaker fuse short"], dtype=object)
            served_int8 = client.predict(f"tickets-minilm:{int8}", texts)
            assert {label.decode() for label in served_int8["label"]} <= set(
                version.metadata["labels"]
            )
            np.testing.assert_allclose(served_int8["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
    finally:
        assert server.stop() in (0, -signal.SIGTERM), "".join(server.output)
