"""elastiq serve against OpenAI's own client, on a live server (127.0.0.1) hosting a tiny
Llama's elastic artifact on the native runtime: chats and completions streamed and not,
log-probabilities against the model's own logits, errors, a client that goes away, a budget
trace replayed under 4 streaming clients, the command without torch, and the status page
in a headless Chromium."""
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from elastiq.elastic import NativeElasticModel, build

from conftest import make_byte_tokenizer, make_tiny_llama

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

from elastiq.serve import create_app, open_service  # noqa: E402  (after the skips)

TEXT = "The quick brown fox jumps over the lazy dog, and then the dog sleeps in the sun. " * 12
TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    tok = make_byte_tokenizer()
    tok.chat_template = TEMPLATE
    out = tmp_path_factory.mktemp("serve") / "tiny.elastic"
    build(make_tiny_llama(), tok, out, calib_text=TEXT, calib_tokens=128, context=64, measure=3, progress=False,
          source="tiny")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Live:
    """A server on 127.0.0.1 in a thread of this process."""

    def __init__(self, service, api_key=None):
        self.service, self.port = service, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = uvicorn.Config(create_app(service, api_key), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                break
            time.sleep(0.05)

    def close(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.service.close()


@pytest.fixture(scope="module")
def live(artifact):
    server = Live(open_service(artifact, engine="native"))
    yield server
    server.close()


@pytest.fixture
def client(live):
    return openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def raw(url, body=None, method=None, headers=None):
    """(status, parsed JSON body) of a plain HTTP request."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def model_name(live):
    return live.service.hosted.name


def test_chat_through_the_openai_client_matches_the_host(client, live, artifact):
    name = model_name(live)
    assert [m.id for m in client.models.list().data] == [name]
    live.service.budget.set(int(live.service.hosted.chooser.sizes[live.service.hosted.chooser.options[0]]))
    option = live.service.option
    r = client.chat.completions.with_raw_response.create(
        model=name, messages=[{"role": "user", "content": "The dog"}], max_tokens=12, temperature=0)
    chat = r.parse()
    want = NativeElasticModel(artifact)
    want.swap(option)
    ref = want.generate("The dog", max_new_tokens=12)
    assert chat.choices[0].message.content == ref.text
    assert chat.usage.completion_tokens == len(ref.tokens) and chat.usage.prompt_tokens == ref.prompt_tokens
    assert chat.model_extra["elastiq"]["options"] == [option] and r.headers["x-elastiq-options"] == str(option)
    chunks = list(client.chat.completions.create(model=name, messages=[{"role": "user", "content": "The dog"}],
                                                 max_tokens=12, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ref.text
    assert chunks[-2].choices[0].finish_reason == ref.finish_reason and chunks[-1].usage.completion_tokens == len(ref.tokens)
    assert {c.model_extra["elastiq"].get("option") for c in chunks[1:-2]} == {option}
    seeded = [client.chat.completions.create(model=name, messages=[{"role": "user", "content": "A"}], max_tokens=8,
                                             temperature=1.0, seed=7).choices[0].message.content for _ in range(2)]
    assert seeded[0] == seeded[1]


def test_completions_with_echo_and_logprobs_match_the_logits(client, live, artifact):
    name = model_name(live)
    prompt = "The quick brown"
    c = client.completions.create(model=name, prompt=prompt, max_tokens=3, temperature=0, echo=True, logprobs=2)
    lp = c.choices[0].logprobs
    ids = live.service.hosted.tokenizer.encode(prompt)
    assert len(lp.tokens) == len(ids) + c.usage.completion_tokens and lp.token_logprobs[0] is None
    assert c.choices[0].text.startswith(prompt)
    ref = NativeElasticModel(artifact)
    ref.swap(live.service.option)
    logits = ref.forward(ids, all_logits=True).astype(np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
    for i in range(1, len(ids)):  # each prompt token given the ones before it
        assert lp.token_logprobs[i] == pytest.approx(logp[i - 1, ids[i]], abs=1e-4)
        assert max(lp.top_logprobs[i].values()) == pytest.approx(logp[i - 1].max(), abs=1e-4)
    first_new = len(ids)  # greedy: the first new token is the most likely one, and its logprob the top one
    assert lp.token_logprobs[first_new] == pytest.approx(logp[-1].max(), abs=1e-4)
    scored = client.completions.create(model=name, prompt=prompt, max_tokens=0, echo=True, logprobs=0)
    assert scored.choices[0].logprobs.token_logprobs[1:] == pytest.approx(lp.token_logprobs[1:len(ids)], abs=1e-6)
    streamed = list(client.completions.create(model=name, prompt=prompt, max_tokens=3, temperature=0, stream=True))
    assert "".join(s.choices[0].text for s in streamed) == c.choices[0].text[len(prompt):]
    stopped = client.completions.create(model=name, prompt=prompt, max_tokens=20, temperature=0,
                                        stop=[c.choices[0].text[len(prompt) + 1:len(prompt) + 3] or "zz"])
    assert stopped.choices[0].finish_reason == "stop" or len(c.choices[0].text) <= len(prompt) + 1


def test_bad_requests_get_openai_errors(client, live):
    name = model_name(live)
    status, body = raw(live.url + "/v1/chat/completions", b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error" and "JSON" in body["error"]["message"]
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model=name, prompt="hi", max_tokens=-1)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=name, prompt="x" * 300, max_tokens=4)
    assert e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=name, messages=[], max_tokens=4)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}], temperature=5)
    for url, body in [("/elastiq/budget", {"budget": "lots"}), ("/elastiq/budget", {"size": 1}),
                      ("/v1/completions", {"model": name, "prompt": [999999]})]:
        status, got = raw(live.url + url, body)
        assert status == 400 and set(got["error"]) == {"message", "type", "param", "code"}
    status, got = raw(live.url + "/nowhere")
    assert status == 404 and "error" in got


def test_the_api_key_guards_all_but_health(artifact):
    server = Live(open_service(artifact, engine="native"), api_key="s3cret")
    try:
        assert raw(server.url + "/health")[0] == 200
        status, body = raw(server.url + "/v1/models")
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        assert raw(server.url + "/elastiq/status", headers={"Authorization": "Bearer wrong"})[0] == 401
        ok = openai.OpenAI(base_url=server.url + "/v1", api_key="s3cret", max_retries=0)
        assert ok.models.list().data[0].id == artifact.name
    finally:
        server.close()


def test_a_client_that_goes_away_frees_its_slot(live):
    """The worker is held before its first forward pass (by the host's write lock) while the
    client hangs up; released, it stops at that token instead of running to max_tokens."""
    service = live.service
    before = dict(service.engine.counts)
    body = json.dumps({"model": model_name(live), "messages": [{"role": "user", "content": "The"}], "max_tokens": 200,
                       "temperature": 0, "stream": True}).encode()
    with service.hosted.chooser._lock.write():  # no token is generated while this is held
        conn = socket.create_connection(("127.0.0.1", live.port), timeout=10)
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        got = b""
        while b"chat.completion.chunk" not in got:  # the first chunk (the role) comes before any token
            got += conn.recv(65536)
        conn.close()
        for _ in range(100):
            if service.engine.active is not None and service.engine.active.cancelled.is_set():
                break
            time.sleep(0.05)
    for _ in range(100):
        if service.engine.active is None:
            break
        time.sleep(0.05)
    assert service.engine.active is None
    assert service.engine.counts["cancelled"] == before["cancelled"] + 1
    assert service.engine.counts["completion_tokens"] == before["completion_tokens"]  # never finished
    status, body = raw(live.url + "/v1/completions", {"model": model_name(live), "prompt": "A", "max_tokens": 2})
    assert status == 200 and body["usage"]["completion_tokens"] <= 2


def test_a_trace_replayed_under_four_streaming_clients(live, client):
    service = live.service
    chooser = service.hosted.chooser
    big, small = chooser.sizes[chooser.options[0]], chooser.sizes[chooser.options[-1]]
    events = [(0.01 * i, int(big if i % 2 else small)) for i in range(1, 200)]
    swaps0 = service.budget.swaps
    results = [None] * 4

    def stream(i):
        chunks = list(client.chat.completions.create(model=model_name(live), stream=True, max_tokens=120,
                                                     messages=[{"role": "user", "content": f"story {i}"}],
                                                     temperature=0.8, seed=i))
        results[i] = chunks

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(4)]
    service.budget.replay(events)
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    whole = set(chooser.options) | set(chooser.extra_ids)
    seen = set()
    for chunks in results:
        assert chunks is not None and chunks[-1].choices[0].finish_reason in ("stop", "length")
        for c in chunks:
            option = c.model_extra["elastiq"].get("option")
            if option is not None:
                assert option in whole
                seen.add(option)
    assert service.budget.swaps - swaps0 >= 2 and len(seen) >= 2
    service.budget.set(int(big))


def test_the_serve_command_runs_without_torch(artifact):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.Popen([sys.executable, "-m", "elastiq", "serve", str(artifact), "--port", str(port), "--engine",
                          "native", "--budget", "1GiB"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        for _ in range(600):
            try:
                status, body = raw(f"http://127.0.0.1:{port}/elastiq/status")
                break
            except (urllib.error.URLError, ConnectionError):
                assert p.poll() is None, p.stdout.read().decode()[-2000:]
                time.sleep(0.1)
        assert status == 200 and body["engine"] == "native" and body["budget_source"] == "fixed"
        maps = open(f"/proc/{p.pid}/maps").read()
        assert "libtorch" not in maps, "the serving process loaded torch"
    finally:
        p.terminate()
        p.wait(timeout=20)


def test_the_command_refuses_what_it_cannot_serve(tmp_path):
    from typer.testing import CliRunner

    from elastiq.cli import app

    r = CliRunner().invoke(app, ["serve", str(tmp_path / "nowhere")])
    assert r.exit_code == 2 and "not a directory" in r.output
    r = CliRunner().invoke(app, ["serve", str(tmp_path), "--budget", "1GiB", "--available"])
    assert r.exit_code == 2 and "one budget source" in r.output
    r = CliRunner().invoke(app, ["serve", str(tmp_path)])
    assert r.exit_code == 2 and "neither elastic.json nor elastiq.json" in r.output


def browser():
    """A headless Chromium driven by selenium, or the reason there is none."""
    try:
        from selenium import webdriver
    except ImportError:
        return None, "selenium is not installed (pip install -e '.[test]')"
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        return None, "Chromium or chromedriver is missing (scripts/setup_browser.sh installs them: apt chromium chromium-driver)"
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(a)
    from selenium.webdriver.chrome.service import Service as DriverService

    return webdriver.Chrome(options=opts, service=DriverService(driver)), None


def test_the_status_page_in_a_headless_browser(live):
    driver, why = browser()
    if driver is None:
        pytest.skip(why)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    chooser = live.service.hosted.chooser
    live.service.budget.set(int(chooser.sizes[chooser.options[0]]))
    try:
        driver.get(live.url + "/")
        wait = WebDriverWait(driver, 20)
        wait.until(lambda d: d.find_element(By.ID, "model").text == model_name(live))
        assert driver.find_element(By.ID, "option").text == str(chooser.options[0])
        driver.find_element(By.ID, "chat-input").send_keys("Hello there")
        driver.find_element(By.ID, "chat-send").click()
        wait.until(lambda d: "option" in " ".join(e.text for e in d.find_elements(By.CSS_SELECTOR, "#chat-log .meta")))
        meta = driver.find_elements(By.CSS_SELECTOR, "#chat-log .meta")[-1].text
        assert meta == f"option {chooser.options[0]}", meta
        status, _ = raw(live.url + "/elastiq/budget", {"budget": int(chooser.sizes[chooser.options[-1]])})
        assert status == 200
        wait.until(lambda d: d.find_element(By.ID, "option").text == str(chooser.options[-1]))
        assert driver.execute_script("return document.getElementById('c-budget').width") > 0
    finally:
        driver.quit()


def run_job(service, ids, max_tokens):
    from elastiq.serve.engine import Job

    done = threading.Event()
    out = {}

    def emit(kind, payload):
        out[kind] = payload
        if kind in ("done", "error"):
            done.set()

    service.engine.submit(Job(ids, max_tokens, emit))
    assert done.wait(60) and "error" not in out, out.get("error")
    return out["done"]


def test_the_torch_host_and_a_saved_model_serve_too(artifact, tmp_path):
    """The torch path (a fallback for models the native runtime does not run) gives the native
    host's greedy tokens; a saved packed model is served on the native runtime with one option."""
    import elastiq

    native, torch_side = open_service(artifact, engine="native"), open_service(artifact, engine="torch")
    try:
        assert torch_side.hosted.engine == "torch"
        ids = native.hosted.tokenizer.encode("The dog")
        a, b = run_job(native, ids, 10), run_job(torch_side, ids, 10)
        assert [t["token"] for t in a["new"]] == [t["token"] for t in b["new"]] and a["options"] == b["options"]
    finally:
        native.close()
        torch_side.close()
    model = make_tiny_llama()
    elastiq.quantize(model, "int4", progress=False)
    elastiq.save(model, tmp_path / "saved", tokenizer=make_byte_tokenizer())
    saved = open_service(tmp_path / "saved")
    try:
        r = run_job(saved, saved.hosted.tokenizer.encode("The dog"), 6)
        assert len(r["new"]) == 6 and r["options"] == [None] and saved.status()["budget_source"].startswith("none")
    finally:
        saved.close()
