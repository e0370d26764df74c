"""The LLM judge against a stub OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from icu_unlearn.errors import UsageError
from icu_unlearn.metrics.judge import JudgeConfig, build_prompt, judge_generations, parse_score

KEY = "sk-test-0123456789-secret"
ENV = "ICU_TEST_JUDGE_KEY"


def _chat(content: str | None) -> tuple[int, dict]:
    return 200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}


class _Stub:
    """Answers POSTs with scripted (status, JSON body) pairs, the last one repeating."""

    def __init__(self, script: list[tuple[int, dict]], delay: float = 0.0):
        self.script = script
        self.delay = delay
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                status, payload = stub.script[min(len(stub.requests), len(stub.script)) - 1]
                if stub.delay:
                    time.sleep(stub.delay)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client timed out and hung up

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # urllib honours *_proxy variables; the stub must be reached directly.
    for name in (
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def stub():
    servers: list[_Stub] = []

    def start(script, delay=0.0):
        servers.append(_Stub(script, delay))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _config(url: str, **kwargs) -> JudgeConfig:
    return JudgeConfig(base_url=url, model="judge-model", api_key_env=ENV, **kwargs)


def _no_key_in(exc: BaseException) -> None:
    text = "".join(traceback.format_exception(exc))
    assert KEY not in text


# --- parsing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("The candidate diverges.\n\nFinal score: 7", 7.0),
        ("Evaluation: similar.\nFinale score: 3.5", 3.5),
        ("final SCORE:10", 10.0),
        ("**Final score:** 4", 4.0),
        # The last occurrence wins: the model restates the format, then answers.
        ('Format is "Final score: X". Earlier I said Final score: 2.\nFinal score: 8', 8.0),
        ("Final score: 0", 0.0),
        ("Final score: 11", None),  # out of 0-10: not a valid answer
        ("Final score: 9\nFinal score: 12", None),  # the last one counts, even when invalid
        ("I would give it a 7 out of 10.", None),
        ("Final score: X", None),
        ("", None),
    ],
)
def test_parse_score(reply, score):
    assert parse_score(reply) == score


# --- prompt ----------------------------------------------------------------


def test_prompt_is_appendix_a_with_examples_then_the_pair():
    prompt = build_prompt("PRE fix", "REF suffix", "CAND text")
    assert prompt.startswith(
        "Given a prefix and a reference suffix, candidates will generate text based on the prefix."
    )
    assert 'in final line in the format of "Finale score: X".' in prompt
    assert prompt.count('Example: Prefix: "Who is Harry Potter?" Reference:') == 3
    examples = [
        'Candidate: "Harry Potter is a character in American comics."',
        "Final score: 10",
        'Candidate: "Harry Potter is a character in a novel series written by J. K. Rowling."',
        "Final score: 0",
        'Candidate: "Harry Potter is Harry Potter is Harry Potter is" Evaluation: '
        "The candidate's response is repetitive and lacks coherence.",
        "Final score: 2",
        "Now it's your turn:",
    ]
    positions = [prompt.index(text) for text in examples]
    assert positions == sorted(positions)
    assert prompt.endswith(
        'Now it\'s your turn:\n\nPrefix: "PRE fix" Reference: "REF suffix" Candidate: "CAND text"'
    )


# --- requests --------------------------------------------------------------


def test_request_carries_prompt_and_key_and_result_does_not(stub, monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    server = stub([_chat("Evaluation: it differs.\n\nFinal score: 7")])
    result = judge_generations(_config(server.url), ["My prefix"], ["the ref"], ["a candidate"])

    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    body = request["body"]
    assert body["model"] == "judge-model"
    assert body["temperature"] == 0
    (message,) = body["messages"]
    assert message["role"] == "user"
    assert message["content"] == build_prompt("My prefix", "the ref", "a candidate")
    assert (
        "The candidate should act as if he has no prior knowledge of the reference."
        in (message["content"])
    )
    assert message["content"].endswith(
        'Prefix: "My prefix" Reference: "the ref" Candidate: "a candidate"'
    )

    assert result == {
        "mean": 7.0,
        "scores": [7.0],
        "replies": ["Evaluation: it differs.\n\nFinal score: 7"],
        "settings": {
            "base_url": server.url,
            "model": "judge-model",
            "api_key_env": ENV,
            "retries": 3,
        },
    }
    assert KEY not in json.dumps(result)


def test_no_key_sends_no_authorization(stub, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    server = stub([_chat("Final score: 5")])
    judge_generations(_config(server.url + "/"), ["p"], ["r"], ["c"])
    assert "Authorization" not in server.requests[0]["headers"]
    assert server.requests[0]["path"] == "/v1/chat/completions"  # trailing slash tolerated


def test_mean_skips_unparsable_replies_and_keeps_them(stub):
    # Replies in request order: 7, unparsable, 3.5, null content -> mean (7 + 3.5) / 2 = 5.25.
    server = stub(
        [
            _chat("Final score: 7"),
            _chat("I refuse to grade this."),
            _chat("Finale score: 3.5"),
            _chat(None),
        ]
    )
    result = judge_generations(_config(server.url), ["a", "b", "c", "d"], ["r"] * 4, ["x"] * 4)
    assert result["scores"] == [7.0, None, 3.5, None]
    assert result["mean"] == 5.25
    assert result["replies"][1] == "I refuse to grade this."
    assert result["replies"][3] == ""
    assert [r["body"]["messages"][0]["content"][-30:] for r in server.requests] == [
        build_prompt(p, "r", "x")[-30:] for p in "abcd"
    ]


def test_no_parsable_reply_gives_mean_none(stub):
    server = stub([_chat("no idea")])
    result = judge_generations(_config(server.url), ["p"], ["r"], ["c"])
    assert result["mean"] is None and result["scores"] == [None]
    json.dumps(result)  # still JSON-serialisable


def test_mismatched_lengths_raise(stub):
    with pytest.raises(ValueError, match="got 2, 1 and 1"):
        judge_generations(_config("http://127.0.0.1:1/v1"), ["a", "b"], ["r"], ["c"])


# --- failures --------------------------------------------------------------


def test_server_errors_are_retried(stub):
    error = (500, {"error": {"message": "overloaded"}})
    server = stub([error, error, _chat("Final score: 6")])
    result = judge_generations(_config(server.url, backoff=0.01), ["p"], ["r"], ["c"])
    assert result["scores"] == [6.0]
    assert len(server.requests) == 3


def test_backoff_doubles_between_tries(stub, monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)  # the judge's sleeps, recorded not slept
    server = stub([(503, {})])
    with pytest.raises(UsageError, match="after 4 tries"):
        judge_generations(_config(server.url, backoff=0.5), ["p"], ["r"], ["c"])
    assert len(server.requests) == 4  # retries=3: one try and three retries
    assert waits == [0.5, 1.0, 2.0]


def test_rate_limit_then_give_up_names_endpoint(stub, monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    server = stub([(429, {"error": {"message": f"slow down, {KEY}"}})])
    with pytest.raises(UsageError) as info:
        judge_generations(_config(server.url, retries=2, backoff=0.01), ["p"], ["r"], ["c"])
    message = str(info.value)
    assert len(server.requests) == 3
    assert "\n" not in message
    assert f"{server.url}/chat/completions after 3 tries" in message
    assert "HTTP 429: slow down, ***" in message  # the echoed key is masked
    _no_key_in(info.value)


def test_refused_key_names_the_variable_not_the_value(stub, monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    server = stub([(401, {"error": {"message": f"Incorrect API key provided: {KEY}"}})])
    with pytest.raises(UsageError) as info:
        judge_generations(_config(server.url), ["p"], ["r"], ["c"])
    message = str(info.value)
    assert len(server.requests) == 1  # a refused key is not retried
    assert "\n" not in message
    assert ENV in message and "refused the API key" in message and "401" in message
    _no_key_in(info.value)


def test_missing_key_on_403_says_to_set_it(stub, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    server = stub([(403, {"error": "forbidden"})])
    with pytest.raises(UsageError, match=f"{ENV} is not set"):
        judge_generations(_config(server.url), ["p"], ["r"], ["c"])


def test_client_error_is_not_retried_and_shows_server_message(stub):
    server = stub([(404, {"error": {"message": "The model `judge-model` does not exist."}})])
    with pytest.raises(UsageError, match="HTTP 404: The model `judge-model` does not exist"):
        judge_generations(_config(server.url), ["p"], ["r"], ["c"])
    assert len(server.requests) == 1


def test_non_openai_answer_is_a_usage_error(stub):
    server = stub([(200, {"result": "7"})])
    with pytest.raises(UsageError, match=r"choices\[0\]\.message\.content"):
        judge_generations(_config(server.url), ["p"], ["r"], ["c"])


def test_unreachable_endpoint_fails_fast_on_one_line(monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    with socket.socket() as sock:  # a port that was just free and is now closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    start = time.monotonic()
    with pytest.raises(UsageError) as info:
        judge_generations(_config(url, timeout=1.0, retries=2, backoff=0.01), ["p"], ["r"], ["c"])
    assert time.monotonic() - start < 3.0
    message = str(info.value)
    assert message == (
        f"cannot reach the judge at {url}/chat/completions after 3 tries "
        "(connection refused); check --judge-url or drop it"
    )
    _no_key_in(info.value)


def test_slow_server_times_out(stub):
    server = stub([_chat("Final score: 1")], delay=0.5)
    with pytest.raises(UsageError, match=r"after 2 tries \(timed out after 0.1 s\)"):
        judge_generations(
            _config(server.url, timeout=0.1, retries=1, backoff=0.0), ["p"], ["r"], ["c"]
        )
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    ("kwargs", "fix"),
    [
        ({"base_url": "file:///etc/passwd"}, "must start with http:// or https://"),
        ({"model": ""}, "--judge-model"),
        ({"timeout": 0.0}, "timeout must be positive"),
        ({"retries": -1}, "retries must be 0 or more"),
    ],
)
def test_config_validation(kwargs, fix):
    with pytest.raises(UsageError, match=fix):
        JudgeConfig(**{"base_url": "http://127.0.0.1:8000/v1", "model": "m", **kwargs})
