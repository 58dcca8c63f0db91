"""The VLM-judge reward against a small local OpenAI-compatible HTTP server: the request carries
the filled template and the PNG, answers are parsed strictly, 5xx and unparsable answers are
retried, 4xx is not, and the failure policy holds."""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from PIL import Image

from solrl.config import ConfigError, load_config
from solrl.rewards.registry import build_one, reward_spec
from solrl.rewards.vlm_judge import VLMJudge, VLMJudgeError, parse_score


class Judge(BaseHTTPRequestHandler):
    """Scores an image by its mean brightness (0..10); scripted failures come first."""

    script: list = []  # per request: None (answer), an int HTTP status, or a literal answer string
    seen: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Judge.seen.append((self.path, self.headers.get("Authorization"), body))
        step = Judge.script.pop(0) if Judge.script else None
        if isinstance(step, int):
            self.send_response(step)
            self.end_headers()
            self.wfile.write(b"scripted failure")
            return
        if step is None:
            url = body["messages"][0]["content"][1]["image_url"]["url"]
            png = base64.b64decode(url.removeprefix("data:image/png;base64,"))
            mean = np.asarray(Image.open(io.BytesIO(png))).mean() / 255
            step = f"{round(mean * 10)}"
        out = json.dumps({"choices": [{"message": {"role": "assistant", "content": step}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_url():
    Judge.script, Judge.seen = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def grey(levels):
    return torch.stack([torch.full((3, 8, 8), v) for v in levels])


def test_scores_and_request_shape(judge_url, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "k-123")
    judge = VLMJudge(judge_url, "qwen-vl", api_key_env="JUDGE_KEY", concurrency=2)
    scores = judge(grey([0.0, 0.5, 1.0]), ["a cat", "a dog", "a cow"])
    torch.testing.assert_close(scores, torch.tensor([0.0, 0.5, 1.0]))
    path, auth, body = Judge.seen[0]
    assert path == "/v1/chat/completions" and auth == "Bearer k-123" and body["model"] == "qwen-vl" and body["temperature"] == 0
    texts = sorted(m["messages"][0]["content"][0]["text"] for _, _, m in Judge.seen)
    assert any('"a dog"' in t for t in texts)


def test_strict_parsing():
    assert parse_score(" 7 ", 10) == 7 and parse_score('{"score": 3.5}', 10) == 3.5
    for bad in ["7 out of 10", "Score: 7", "", "eleven", '{"score": "7"}', "11", "-1", '{"score": true}']:
        with pytest.raises(ValueError):
            parse_score(bad, 10)


def test_retries_then_policy(judge_url):
    Judge.script = [503, "I'd say 7", None]  # a 5xx and an unparsable answer are retried
    assert VLMJudge(judge_url, "m", retries=2, backoff_s=0.01)(grey([1.0]), ["x"]).item() == 1.0
    Judge.script = [404, None]  # a 4xx is not
    with pytest.raises(VLMJudgeError, match="HTTP 404"):
        VLMJudge(judge_url, "m", retries=3, backoff_s=0.01)(grey([1.0]), ["x"])
    Judge.script = ["no idea"] * 3
    with pytest.raises(VLMJudgeError, match="failed 2 attempts"):
        VLMJudge(judge_url, "m", retries=1, backoff_s=0.01)(grey([1.0]), ["x"])
    Judge.script = [500] * 2
    lenient = VLMJudge(judge_url, "m", retries=1, backoff_s=0.01, on_failure="nan", concurrency=1)
    scores = lenient(grey([1.0, 1.0]), ["x", "y"])
    assert torch.isnan(scores[0]) and scores[1] == 1.0 and lenient.failed == 1


def test_unreachable_judge_and_config():
    with pytest.raises(VLMJudgeError, match="URLError|ConnectionRefused"):
        VLMJudge("http://127.0.0.1:9/v1", "m", retries=0, timeout_s=2)(grey([0.5]), ["x"])
    with pytest.raises(ConfigError, match="judge_model"):
        load_config(overrides=["reward={name: vlm_judge, address: 'http://h:8000/v1'}"])
    with pytest.raises(ValueError, match="\\{prompt\\}"):
        VLMJudge("http://h/v1", "m", template="no placeholder")
    judge = build_one(reward_spec(name="vlm_judge", address="http://h:8000/v1", judge_model="m", max_score=5))
    assert judge.url == "http://h:8000/v1/chat/completions" and judge.max_score == 5
