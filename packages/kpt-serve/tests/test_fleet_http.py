"""The fleet over real HTTP: `kpt-serve router --config` with two models and three worker
processes on loopback; completions equal LLM.generate, streaming, chat, errors, metrics."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from conftest import VOCAB, make_gpt2, make_llama, random_prompts
from fleet_helpers import add_tokenizer, start_server, stop_server

from kpt.serve import LLM, SamplingParams

httpx = pytest.importorskip("httpx")
parser = pytest.importorskip("prometheus_client.parser")

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet-models")
    plain = make_gpt2(root / "plain", layers=1, width=32)
    chatty = add_tokenizer(make_llama(root / "chatty", layers=1, width=32))
    return {"plain": plain, "chatty": chatty}


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    config = tmp_path_factory.mktemp("fleet-config") / "fleet.toml"
    config.write_text(
        f"""
policy = "predicted"
heartbeat_s = 1.0
[[workers]]
model = "plain"
path = "{models["plain"]}"
device = "cpu"
threads = 1
num_kv_blocks = 64
count = 2
[[workers]]
model = "chatty"
path = "{models["chatty"]}"
device = "cpu"
threads = 1
num_kv_blocks = 64
"""
    )
    process, url = start_server(["router", "--config", str(config)])
    pids = []
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            pids = [w["pid"] for w in client.get("/v1/fleet").json()["workers"]]
            yield client
    finally:
        stop_server(process, pids)


def _greedy(max_tokens):
    return {"max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True}


def test_completions_equal_llm_generate_for_greedy(server, models):
    prompts = random_prompts(6, 3, 40, seed=5)
    reply = server.post("/v1/completions", json={"model": "plain", "prompt": prompts, **_greedy(6)})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    llm = LLM(models["plain"], device="cpu", num_kv_blocks=64)
    expected = llm.generate(prompts, SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True))
    # No tokenizer in the folder: token ids come back without being asked for.
    assert [c["token_ids"] for c in body["choices"]] == [o.token_ids for o in expected]
    assert body["usage"]["completion_tokens"] == 36
    assert body["usage"]["prompt_tokens"] == sum(len(p) for p in prompts)


def test_streaming_sends_each_token_as_it_comes(server):
    prompt = random_prompts(1, 10, 10, seed=1)[0]
    full = server.post("/v1/completions", json={"prompt": prompt, "model": "plain", **_greedy(5)})
    body = {"model": "plain", "prompt": prompt, "stream": True, **_greedy(5)}
    body["stream_options"] = {"include_usage": True}
    chunks = []
    with server.stream("POST", "/v1/completions", json=body) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        for line in reply.iter_lines():
            if line.startswith("data: "):
                chunks.append(line[6:])
    assert chunks[-1] == "[DONE]"
    events = [json.loads(c) for c in chunks[:-1]]
    tokens = [t for e in events for choice in e["choices"] for t in choice["token_ids"]]
    assert tokens == full.json()["choices"][0]["token_ids"]
    assert sum(1 for e in events if e["choices"]) == 5  # one event per token
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    assert events[-1]["usage"]["completion_tokens"] == 5


def test_a_client_that_leaves_mid_stream_frees_its_worker(server):
    body = {"model": "plain", "prompt": [3, 4, 5], "stream": True, **_greedy(200)}
    with server.stream("POST", "/v1/completions", json=body) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: "):
                break  # one token, then hang up
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        load = [w["load"]["inflight"] for w in server.get("/v1/fleet").json()["workers"]]
        if sum(load) == 0:
            break
        time.sleep(0.1)
    assert sum(load) == 0, f"requests still in flight after the client left: {load}"


def test_text_and_chat_on_a_model_with_a_tokenizer(server):
    reply = server.post(
        "/v1/completions", json={"model": "chatty", "prompt": "w3 w4 w5", **_greedy(4)}
    )
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    assert "token_ids" not in choice and len(choice["text"].split()) == 4
    asked = server.post(
        "/v1/completions",
        json={"model": "chatty", "prompt": "w3 w4 w5", "return_token_ids": True, **_greedy(4)},
    )
    assert asked.json()["choices"][0]["text"] == choice["text"]
    assert len(asked.json()["choices"][0]["token_ids"]) == 4
    messages = [{"role": "user", "content": "w3 w4 w5"}]
    chat = server.post(
        "/v1/chat/completions", json={"model": "chatty", "messages": messages, **_greedy(3)}
    )
    assert chat.status_code == 200, chat.text
    message = chat.json()["choices"][0]["message"]
    assert message["role"] == "assistant" and len(message["content"].split()) == 3
    # The template is "user : w3 w4 w5 assistant :": the same text as a completion, same tokens.
    same = server.post(
        "/v1/completions",
        json={"model": "chatty", "prompt": "user : w3 w4 w5 assistant :", **_greedy(3)},
    )
    assert same.json()["choices"][0]["text"] == message["content"]


def test_stop_strings_end_a_request_and_cut_its_text(server):
    body = {"model": "chatty", "prompt": "w3 w4 w5", "return_token_ids": True, **_greedy(8)}
    full = server.post("/v1/completions", json=body).json()["choices"][0]
    words = full["text"].split()
    stop = words[2]
    cut = server.post("/v1/completions", json={**body, "stop": stop}).json()["choices"][0]
    assert cut["finish_reason"] == "stop" and stop not in cut["text"]
    assert full["text"].startswith(cut["text"]) and len(cut["token_ids"]) < 8


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"model": "plain", "prompt": "text"}, 400, "no tokenizer.json"),
        ({"model": "plain", "prompt": [VOCAB + 5]}, 400, "outside the vocabulary"),
        ({"model": "plain", "prompt": [3, 4], "temperature": -1}, 400, "temperature"),
        ({"model": "plain", "prompt": [3, 4], "max_tokens": 0}, 400, "max_tokens"),
        ({"model": "plain"}, 400, "prompt is missing"),
        ({"model": "plain", "prompt": [3], "stop": ["x"]}, 400, "stop_token_ids"),
        ({"model": "plain", "prompt": [3], "stop": 7}, 400, "list of strings"),
        ({"model": "nope", "prompt": [3]}, 404, "plain"),
        ({"model": "plain", "prompt": [3] * 300}, 400, "shorten it"),
    ],
)
def test_malformed_requests_get_4xx_and_harm_nobody(server, body, status, words):
    reply = server.post("/v1/completions", json=body)
    assert reply.status_code == status, reply.text
    assert words in reply.json()["error"]["message"]
    ok = server.post("/v1/completions", json={"model": "plain", "prompt": [3, 4], **_greedy(2)})
    assert ok.status_code == 200


def test_chat_without_a_template_and_bad_json_are_refused(server):
    reply = server.post("/v1/chat/completions", json={"model": "plain", "messages": []})
    assert reply.status_code == 400 and "no chat template" in reply.json()["error"]["message"]
    reply = server.post("/v1/completions", content=b"{not json")
    assert reply.status_code == 400 and "not JSON" in reply.json()["error"]["message"]


def test_router_prefers_the_worker_holding_the_prefix(server):
    prefix = random_prompts(1, 48, 48, seed=9)[0]
    first = server.post(
        "/v1/completions", json={"model": "plain", "prompt": [*prefix, 7], **_greedy(2)}
    )
    holder = first.json()["kpt"]["workers"][0][-1]
    for tail in ([8], [9, 10], [11, 12, 13]):
        reply = server.post(
            "/v1/completions", json={"model": "plain", "prompt": prefix + tail, **_greedy(2)}
        )
        assert reply.json()["kpt"]["workers"][0][-1] == holder


def test_models_fleet_and_health(server):
    models = {m["id"]: m for m in server.get("/v1/models").json()["data"]}
    assert set(models) == {"plain", "chatty"}
    assert models["chatty"]["chat"] and not models["plain"]["chat"]
    assert models["plain"]["vocab_size"] == VOCAB
    fleet = server.get("/v1/fleet").json()
    workers = fleet["workers"]
    assert sorted(w["model"] for w in workers) == ["chatty", "plain", "plain"]
    for worker in workers:
        assert worker["device"] == "cpu:0" and worker["state"] == "ready" and worker["pid"] > 0
        assert {"running", "waiting", "kv_usage", "inflight"} <= set(worker["load"])
    assert server.get("/health").json()["status"] == "ok"


def test_metrics_parse_and_count_requests(server):
    server.post("/v1/completions", json={"model": "plain", "prompt": [3, 4, 5], **_greedy(3)})
    families = {
        f.name: f for f in parser.text_string_to_metric_families(server.get("/metrics").text)
    }
    ttft = families["kpt_serve_time_to_first_token_seconds"]
    counts = [
        s.value for s in ttft.samples if s.name.endswith("_count") and s.labels["model"] == "plain"
    ]
    assert sum(counts) >= 1
    for name in (
        "kpt_serve_time_per_output_token_seconds",
        "kpt_serve_inter_token_latency_seconds",
        "kpt_serve_e2e_request_latency_seconds",
    ):
        assert families[name].samples
    workers = {s.labels["worker"] for s in families["kpt_serve_kv_cache_usage_ratio"].samples}
    assert len(workers) == 3
    assert "kpt_serve_prefix_cache_hit_rate" in families
    assert "kpt_serve_num_requests_waiting" in families


def test_bench_runs_briefly_against_the_fleet(server, tmp_path):
    out = tmp_path / "bench.json"
    url = str(server.base_url).rstrip("/")
    done = subprocess.run(
        [
            sys.executable, "-m", "kpt.serve._cli", "bench", "--url", url, "--model", "plain",
            "--num-prompts", "8", "--request-rate", "40", "--input-len", "8", "--output-len", "4",
            "--slo-ttft-ms", "60000", "--json", str(out), "--gate-ttft-p99-ms", "60000",
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["completed"] == 8 and result["failed"] == 0
    assert result["output_throughput"] > 0 and result["goodput"] > 0
    assert 0 < result["ttft_ms"]["median"] <= result["e2e_ms"]["p99"]
    assert "TTFT (ms)" in done.stdout
    assert result["scenario"] == "server" and result["valid"]
    assert result["gates"]["ttft_p99_ms"]["passed"]
    # MLPerf-style: a p99 gate the run cannot meet makes it invalid, and the exit code says so.
    failed = subprocess.run(
        [
            sys.executable, "-m", "kpt.serve._cli", "bench", "--url", url, "--model", "plain",
            "--num-prompts", "4", "--input-len", "8", "--output-len", "4",
            "--gate-tpot-p99-ms", "0.000001", "--json", str(out),
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert failed.returncode == 1, failed.stderr
    result = json.loads(out.read_text())
    assert result["scenario"] == "offline" and not result["valid"]
    assert result["completed"] == 4 and not result["gates"]["tpot_p99_ms"]["passed"]
    assert "INVALID" in failed.stdout
