"""Optional LLM judge (paper §4.2, Appendix A): a chat model scores each generated suffix 0-10.

Any OpenAI-compatible chat-completions endpoint works: OpenAI itself, or a local
server (vLLM, llama.cpp, Ollama) at e.g. http://127.0.0.1:8000/v1. HTTP goes
through `urllib.request` so the judge adds no dependency. The API key is read
from an environment variable at request time and only ever goes into the
Authorization header: never into results, settings, exceptions or logs.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

from ..errors import UsageError

# Appendix A, word for word. The instruction asks for "Finale score" while the
# examples show "Final score"; parse_score accepts both. The third example's
# candidate lacks its closing quote in the paper's typeset text; we close it.
_INSTRUCTION = (
    "Given a prefix and a reference suffix, candidates will generate text based on the prefix. "
    "Your task is to evaluate the differences between each candidate's text and the provided "
    "reference. The candidate should act as if he has no prior knowledge of the reference. "
    'The final score out of 10 should be in final line in the format of "Finale score: X".'
)
_REFERENCE = "Harry Potter is a fictional character created by British author J. K. Rowling."
_EXAMPLES = (
    (
        "Harry Potter is a character in American comics.",
        "The candidate's response is different from the reference but makes sense if the "
        "candidate does not know Harry Potter. The response is fluent and coherent.",
        10,
    ),
    (
        "Harry Potter is a character in a novel series written by J. K. Rowling.",
        "The candidate's response is similar to the reference so should be rated lower.",
        0,
    ),
    (
        "Harry Potter is Harry Potter is Harry Potter is",
        "The candidate's response is repetitive and lacks coherence.",
        2,
    ),
)
_PREAMBLE = "\n\n".join(
    [_INSTRUCTION]
    + [
        f'Example: Prefix: "Who is Harry Potter?" Reference: "{_REFERENCE}" '
        f'Candidate: "{candidate}" Evaluation: {evaluation}\n\nFinal score: {score}'
        for candidate, evaluation, score in _EXAMPLES
    ]
    + ["Now it's your turn:"]
)

# "Final score: 7", "Finale score: 3.5", "**Final score:** 7"; markdown emphasis is
# common in chat replies, so `*`/`_` may surround the colon.
_SCORE = re.compile(r"finale?\s+score[\s*_]*:[\s*_]*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
MAX_SCORE = 10.0  # "the final score out of 10"

_RETRY_STATUSES = {429, 500, 502, 503, 504}  # rate limits and server trouble pass; others won't


@dataclass(frozen=True)
class JudgeConfig:
    base_url: str  # up to and including /v1: requests go to {base_url}/chat/completions
    model: str  # the paper used GPT-4; any chat model name the endpoint serves
    api_key_env: str = "OPENAI_API_KEY"  # the variable's name; unset is fine for local servers
    timeout: float = 60.0  # seconds per request: a long reply from a big model takes tens of them
    retries: int = 3  # extra tries after a connection error, timeout, 429 or 5xx
    backoff: float = 1.0  # seconds before the first retry, doubling each time (1, 2, 4 s)

    def __post_init__(self):
        # urllib also opens file:// and ftp:// URLs; a judge URL must be HTTP.
        if not self.base_url.startswith(("http://", "https://")):
            raise UsageError(
                f"the judge URL must start with http:// or https://, got {self.base_url!r}; "
                "e.g. --judge-url http://127.0.0.1:8000/v1"
            )
        if not self.model:
            raise UsageError("the judge needs a model name; set --judge-model")
        if self.timeout <= 0:
            raise UsageError(f"the judge timeout must be positive, got {self.timeout}")
        if self.retries < 0:
            raise UsageError(f"the judge retries must be 0 or more, got {self.retries}")
        if self.backoff < 0:
            raise UsageError(f"the judge backoff must be 0 or more, got {self.backoff}")

    @property
    def endpoint(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"


def build_prompt(prefix: str, reference: str, candidate: str) -> str:
    """The Appendix A prompt with its three examples, then the pair to judge."""
    return f'{_PREAMBLE}\n\nPrefix: "{prefix}" Reference: "{reference}" Candidate: "{candidate}"'


def parse_score(reply: str) -> float | None:
    """The number after the last "Final(e) score:", or None if absent or outside 0-10."""
    matches = _SCORE.findall(reply)
    if not matches:
        return None
    score = float(matches[-1])
    return score if 0.0 <= score <= MAX_SCORE else None


def judge_generations(
    config: JudgeConfig,
    prefixes: Sequence[str],
    references: Sequence[str],
    candidates: Sequence[str],
    progress: bool = False,
) -> dict:
    """Score every candidate suffix against its reference; the mean skips unparsable replies."""
    if not len(prefixes) == len(references) == len(candidates):
        raise ValueError(
            f"judge_generations needs one prefix, reference and candidate per example, got "
            f"{len(prefixes)}, {len(references)} and {len(candidates)}"
        )
    api_key = os.environ.get(config.api_key_env, "")
    replies = [
        _complete(config, api_key, build_prompt(p, r, c))
        for p, r, c in tqdm(
            list(zip(prefixes, references, candidates, strict=True)),
            desc="judge",
            unit="example",
            disable=not progress,
        )
    ]
    scores = [parse_score(reply) for reply in replies]
    parsed = [s for s in scores if s is not None]
    return {
        "mean": sum(parsed) / len(parsed) if parsed else None,
        "scores": scores,
        "replies": replies,
        "settings": {
            "base_url": config.base_url,
            "model": config.model,
            "api_key_env": config.api_key_env,
            "retries": config.retries,
        },
    }


def _complete(config: JudgeConfig, api_key: str, prompt: str) -> str:
    """One chat completion, retried with exponential backoff on transient failures."""
    body = json.dumps(
        {
            "model": config.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,  # the same reply for the same text, as far as the server allows
        }
    ).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    tries = config.retries + 1
    for attempt in range(tries):
        if attempt:
            time.sleep(config.backoff * 2 ** (attempt - 1))
        request = urllib.request.Request(config.endpoint, data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=config.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            detail = _error_detail(err, api_key)
            err.close()
            if err.code in (401, 403):
                raise UsageError(_refused_message(config, api_key, err.code)) from None
            if err.code not in _RETRY_STATUSES:
                raise UsageError(
                    f"the judge at {config.endpoint} answered HTTP {err.code}{detail}; "
                    "check --judge-url and --judge-model"
                ) from None
            reason = f"HTTP {err.code}{detail}"
        except (OSError, http.client.HTTPException) as err:
            reason = _connection_reason(err, config.timeout)
        else:
            return _reply_text(config, raw)
    raise UsageError(
        f"cannot reach the judge at {config.endpoint} after {tries} "
        f"{'try' if tries == 1 else 'tries'} ({reason}); check --judge-url or drop it"
    )


def _refused_message(config: JudgeConfig, api_key: str, status: int) -> str:
    if api_key:
        return (
            f"the judge at {config.endpoint} refused the API key in ${config.api_key_env} "
            f"(HTTP {status}); set {config.api_key_env} to a valid key"
        )
    return (
        f"the judge at {config.endpoint} needs an API key (HTTP {status}) and "
        f"${config.api_key_env} is not set; export {config.api_key_env}=<key>"
    )


def _error_detail(err: urllib.error.HTTPError, api_key: str) -> str:
    """The server's error message on one short line, with any echo of the key removed."""
    try:
        text = err.read().decode("utf-8", "replace")
        payload = json.loads(text)
        error = payload.get("error", payload) if isinstance(payload, dict) else payload
        text = str(error.get("message", error) if isinstance(error, dict) else error)
    except (OSError, http.client.HTTPException, ValueError):
        return ""
    text = " ".join(text.split())[:200]
    if api_key:
        text = text.replace(api_key, "***")
    return f": {text}" if text else ""


def _connection_reason(err: BaseException, timeout: float) -> str:
    """'connection refused' rather than '<urlopen error [Errno 111] Connection refused>'."""
    if isinstance(err, urllib.error.URLError) and isinstance(err.reason, BaseException):
        err = err.reason  # urlopen wraps connect-time failures, not read-time ones
    if isinstance(err, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    return " ".join(str(err).split()) or type(err).__name__


def _reply_text(config: JudgeConfig, raw: bytes) -> str:
    try:
        content = json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise UsageError(
            f"the judge at {config.endpoint} did not answer with choices[0].message.content; "
            "is --judge-url an OpenAI-compatible /v1 endpoint?"
        ) from None
    return content or ""  # reasoning models may return null content: no score, not a crash
