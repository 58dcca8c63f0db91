"""A VLM-judge reward over an OpenAI-compatible chat-completions endpoint (as vLLM serves one).

Each image goes to the judge with the prompt template (its `{prompt}` filled in) and must come back
as a bare number in [0, max_score], or a JSON object {"score": number}; anything else is a parse
failure. The reward is score / max_score, in [0, 1].

Failure policy: a timeout, a connection error, HTTP 429 / 5xx or an unparsable answer is retried
`retries` times with exponential backoff; HTTP 4xx (a wrong model name, a bad key) is not. After
that, on_failure="raise" raises VLMJudgeError and on_failure="nan" scores the image NaN, which the
selector quarantines and counts, as for the remote reward.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import torch
from PIL import Image

from solrl.rewards.images import to_uint8

DEFAULT_TEMPLATE = (
    "You are grading an image generated for the text prompt: \"{prompt}\".\n"
    "Rate how well the image matches the prompt, from 0 (not at all) to 10 (perfectly), considering "
    "objects, counts, colours, positions and overall quality.\n"
    "Answer with the number only."
)
_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*$")


class VLMJudgeError(RuntimeError):
    """The judge could not score an image; the message says why."""


def parse_score(text: str, max_score: float) -> float:
    """A bare number or {"score": number} in [0, max_score]; anything else raises ValueError."""
    match = _NUMBER.match(text)
    if match:
        value = float(match.group(1))
    else:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError(f"judge answered {text[:80]!r}, not a number or {{\"score\": number}}") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("score"), (int, float)) or isinstance(obj.get("score"), bool):
            raise ValueError(f"judge answered {text[:80]!r}, not a number or {{\"score\": number}}")
        value = float(obj["score"])
    if not math.isfinite(value) or not 0 <= value <= max_score:
        raise ValueError(f"judge score {value} is outside [0, {max_score}]")
    return value


def png_data_url(arr) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class VLMJudge:
    """Scores (image, prompt) pairs with a VLM behind an OpenAI-compatible API."""

    def __init__(
        self,
        base_url: str,
        model: str,
        template: str = DEFAULT_TEMPLATE,
        max_score: float = 10.0,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        on_failure: Literal["raise", "nan"] = "raise",
        concurrency: int = 8,
    ):
        if "{prompt}" not in template:
            raise ValueError("the judge template must contain {prompt}, where the image's prompt goes")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.template, self.max_score = model, template, max_score
        self.api_key = os.environ.get(api_key_env)
        self.timeout_s, self.retries, self.backoff_s, self.on_failure = timeout_s, retries, backoff_s, on_failure
        self.concurrency = concurrency
        self.failed = 0
        self.name = f"vlm_judge({model})"

    def _request(self, data_url: str, prompt: str) -> dict:
        return {
            "model": self.model,
            "temperature": 0,
            "max_tokens": 16,
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": self.template.format(prompt=prompt)},
                {"type": "image_url", "image_url": {"url": data_url}},
            ]}],
        }

    def _post(self, body: dict) -> str:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            payload = json.loads(resp.read())
        try:
            return payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"response is not a chat completion: {str(payload)[:120]}") from None

    def score_one(self, data_url: str, prompt: str) -> float:
        """The judge's score of one image in [0, 1], after retries; NaN or raise per on_failure."""
        body, last = self._request(data_url, prompt), ""
        for attempt in range(self.retries + 1):
            try:
                return parse_score(self._post(body), self.max_score) / self.max_score
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}: {exc.read()[:200].decode(errors='replace')}"
                if exc.code != 429 and exc.code < 500:
                    raise VLMJudgeError(f"judge at {self.url} refused the request ({last}); check model={self.model!r} and the API key") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, ValueError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2**attempt)
        if self.on_failure == "nan":
            self.failed += 1
            return float("nan")
        raise VLMJudgeError(f"judge at {self.url} failed {self.retries + 1} attempts (last: {last})")

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images but {len(prompts)} prompts; pass one prompt per image")
        urls = [png_data_url(a) for a in to_uint8(images)]
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            scores = list(pool.map(self.score_one, urls, prompts))
        return torch.tensor(scores, dtype=torch.float32)
