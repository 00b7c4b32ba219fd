"""smelt serve through the official `openai` client (pinned by .ci/run), the way
llama.cpp tests its server. Greedy answers of SmolLM2-135M-Instruct are those of
`smelt generate` (tests/llm.rs checks those against a NumPy forward pass); prompt token
counts are checked with the `tokenizers` package on the model's tokenizer.json."""

import http.client
import json
import threading
import time

import openai
import pytest

from conftest import DATA, NAME, KEY, Server

CHAT = [{"role": "user", "content": "What is 2+2?"}]


def chat(client, **kw):
    return client.chat.completions.create(model=NAME, messages=kw.pop("messages", CHAT), **kw)


def complete(client, prompt="The capital of France is", **kw):
    return client.completions.create(model=NAME, prompt=prompt, **kw)


def test_chat_answers_whole(client):
    r = chat(client, temperature=0, max_tokens=40)
    assert r.object == "chat.completion" and r.model == NAME
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert "4" in choice.message.content
    assert choice.finish_reason == "stop"
    u = r.usage
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert 0 < u.completion_tokens < 40 and u.prompt_tokens > 5


def test_usage_counts_prompt_tokens_as_the_tokenizers_package_does(client):
    import tokenizers
    tok = tokenizers.Tokenizer.from_file(str(DATA / "tokenizer.json"))
    prompt = "Counting tokens: the quick brown fox, 12345, naïve café!"
    r = complete(client, prompt=prompt, temperature=0, max_tokens=3)
    assert r.usage.prompt_tokens == len(tok.encode(prompt, add_special_tokens=False).ids)
    assert r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length"


def test_chat_streams_the_same_text(client):
    whole = chat(client, temperature=0, max_tokens=40).choices[0].message.content
    chunks = list(chat(client, temperature=0, max_tokens=40, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_include_usage_adds_a_last_chunk(client):
    chunks = list(complete(client, temperature=0, max_tokens=6, stream=True,
                           stream_options={"include_usage": True}))
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens == 6
    assert chunks[-2].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks[:-1])


def test_completion_continues_the_prompt(client):
    r = complete(client, temperature=0, max_tokens=4)
    assert r.object == "text_completion"
    assert r.choices[0].text.startswith(" Paris")


def test_stop_strings_end_the_text_before_them(client):
    for stop in [".", ["\n", "."]]:
        r = complete(client, temperature=0, max_tokens=30, stop=stop)
        assert r.choices[0].text == " Paris" and r.choices[0].finish_reason == "stop"
    streamed = list(complete(client, temperature=0, max_tokens=30, stop=".", stream=True))
    assert "".join(c.choices[0].text for c in streamed) == " Paris"
    assert streamed[-1].choices[0].finish_reason == "stop"


def test_max_tokens_ends_with_length(client):
    for field in ["max_tokens", "max_completion_tokens"]:
        r = chat(client, temperature=0, **{field: 2})
        assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 2


def test_a_seed_repeats_its_sample(client):
    draw = lambda seed: complete(client, prompt="Once upon a time", temperature=1.0,
                                 max_tokens=24, seed=seed).choices[0].text
    assert draw(42) == draw(42)
    assert draw(42) != draw(43)


def test_n_choices(client):
    r = complete(client, prompt="My favourite colour is", temperature=1.0, max_tokens=12,
                 n=3, seed=7)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert len({c.text for c in r.choices}) > 1
    greedy = chat(client, temperature=0, max_tokens=20, n=2)
    assert greedy.choices[0].message.content == greedy.choices[1].message.content
    one = chat(client, temperature=0, max_tokens=20)
    assert greedy.usage.completion_tokens == 2 * one.usage.completion_tokens


def test_logprobs(client):
    r = chat(client, temperature=0, max_tokens=5, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3
        tops = [x.logprob for x in t.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        # Greedy: the chosen token is the most likely one.
        assert abs(tops[0] - t.logprob) < 1e-6 and t.top_logprobs[0].token == t.token
    legacy = complete(client, temperature=0, max_tokens=3, logprobs=2)
    lp = legacy.choices[0].logprobs
    assert len(lp.tokens) == 3 and len(lp.top_logprobs[0]) == 2
    assert "".join(lp.tokens) == legacy.choices[0].text


def test_penalties_change_a_greedy_answer(client):
    plain = complete(client, prompt="one one one one one", temperature=0, max_tokens=8)
    penalised = complete(client, prompt="one one one one one", temperature=0, max_tokens=8,
                         frequency_penalty=2.0, presence_penalty=2.0)
    assert plain.choices[0].text != penalised.choices[0].text


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == [NAME]
    conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=10)
    conn.request("GET", "/health")
    assert conn.getresponse().status == 200


def test_errors_are_openai_errors(server, client):
    with pytest.raises(openai.AuthenticationError):
        chat(server.client(key="wrong"), max_tokens=2)
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4", messages=CHAT, max_tokens=2)
    assert e.value.body["code"] == "model_not_found"
    for bad in [{"temperature": 5}, {"top_p": 0}, {"n": 0}, {"max_tokens": 0},
                {"stop": ["a", "b", "c", "d", "e"]}, {"top_logprobs": 3}]:
        with pytest.raises(openai.BadRequestError):
            chat(client, **bad)
    with pytest.raises(openai.BadRequestError) as e:
        complete(client, prompt="word " * 9000, max_tokens=2)
    assert e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as e:
        complete(client, max_tokens=10**6)
    assert e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": 7}])


def raw(server, body, headers=None):
    conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=30)
    conn.request("POST", "/v1/chat/completions", body=body,
                 headers={"Authorization": f"Bearer {KEY}", **(headers or {})})
    r = conn.getresponse()
    return r.status, json.loads(r.read())


@pytest.mark.parametrize("body", [b"{", b"[]", b"\xff\xfe", b'{"model": 3}',
                                  b'{"model": "x", "messages": "hi"}', b""])
def test_malformed_bodies_get_400(server, body):
    status, reply = raw(server, body)
    assert status == 400 and reply["error"]["type"] == "invalid_request_error"


def test_an_oversized_body_gets_413(server):
    status, reply = raw(server, b'{"pad": "' + b"x" * 70000 + b'"}')
    assert status == 413 and "error" in reply


def wait_for(predicate, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_client_that_leaves_frees_its_sequence(server, client):
    before = server.metric("generated_tokens_total")
    stream = complete(client, prompt="Tell me a long story.", temperature=0, max_tokens=2000,
                      stream=True)
    for i, _ in enumerate(stream):
        if i == 2:
            break
    stream.close()
    assert wait_for(lambda: server.metric("running_sequences") == 0)
    # It stopped well before its 2000 tokens.
    assert server.metric("generated_tokens_total") - before < 500


def test_concurrent_requests_get_what_each_gets_alone(client):
    prompts = ["The capital of France is", "1, 2, 3, 4,", "Water boils at",
               "The opposite of hot is", "Once upon a time"]
    alone = [complete(client, prompt=p, temperature=0, max_tokens=12).choices[0].text
             for p in prompts]
    together = [None] * len(prompts)

    def run(i):
        together[i] = complete(client, prompt=prompts[i], temperature=0,
                               max_tokens=12).choices[0].text

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    [t.start() for t in threads]
    [t.join(120) for t in threads]
    assert together == alone


def test_metrics_count_requests_and_tokens(server, client):
    complete(client, temperature=0, max_tokens=3)
    for name in ["requests_total", "prompt_tokens_total", "generated_tokens_total",
                 "queue_length", "batch_size", "kv_cache_blocks_used", "kv_cache_blocks_total",
                 "time_to_first_token_seconds_count", "inter_token_latency_seconds_count"]:
        assert server.metric(name) >= 0
    assert server.metric("generated_tokens_total") >= 3
    assert server.metric("time_to_first_token_seconds_count") >= 1


def test_a_full_queue_answers_429():
    s = Server("--parallel", "1", "--queue", "1", exit_after=300)
    try:
        c = s.client()
        first = complete(c, prompt="1, 2, 3, 4,", temperature=0, max_tokens=400, stream=True)
        next(iter(first))  # the first request holds the only place
        waiting = threading.Thread(target=lambda: complete(c, temperature=0, max_tokens=2))
        waiting.start()
        assert wait_for(lambda: s.metric("queue_length") == 1)
        with pytest.raises(openai.RateLimitError) as e:
            complete(c, temperature=0, max_tokens=2)
        assert e.value.body["code"] == "rate_limit_exceeded"
        first.close()
        waiting.join(60)
        assert s.metric("requests_rejected_total") == 1
    finally:
        assert s.stop() == 0


def test_sigterm_finishes_running_streams_then_exits_0():
    s = Server("--parallel", "2", "--grace", "60", exit_after=300)
    stream = complete(s.client(), prompt="Count to ten:", temperature=0, max_tokens=40,
                      stream=True)
    chunks = [next(iter(stream))]
    s.proc.send_signal(__import__("signal").SIGTERM)
    chunks += list(stream)
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")
    assert s.stop() == 0
    log = s.log_path.read_text()
    assert "SIGTERM" in log and "stopped" in log


def test_requests_wait_for_kv_cache_blocks_and_give_them_back():
    # 10 blocks of 16 positions; each request reserves ceil((prompt + 60) / 16) = 5,
    # so two run at once and the third waits for blocks, not for a place.
    s = Server("--parallel", "4", "--ctx", "160", exit_after=300)
    try:
        c = s.client()
        assert s.metric("kv_cache_blocks_total") == 10
        results, peak = [None] * 3, {"queued": 0, "used": 0}

        def run(i):
            results[i] = complete(c, prompt=f"{i} apples and", temperature=0, max_tokens=60,
                                  extra_body={"ignore_eos": True})

        threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
        [t.start() for t in threads]
        while any(t.is_alive() for t in threads):
            peak["queued"] = max(peak["queued"], s.metric("queue_length"))
            peak["used"] = max(peak["used"], s.metric("kv_cache_blocks_used"))
            assert s.metric("kv_cache_blocks_reserved") <= 10
            time.sleep(0.02)
        assert all(r.usage.completion_tokens == 60 for r in results)
        assert peak["queued"] >= 1 and 0 < peak["used"] <= 10
        assert s.metric("kv_cache_blocks_used") == 0
        # The pool never outgrows its 160 positions (30 layers × 2 × 3 heads × 64 × 4 bytes each).
        assert s.metric("kv_cache_bytes") <= 160 * 30 * 2 * 3 * 64 * 4
    finally:
        assert s.stop() == 0
