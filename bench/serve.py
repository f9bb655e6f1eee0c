"""elastiq serve against llama.cpp's server, with one client script speaking OpenAI's API.

    .venv/bin/python bench/serve.py                   # 1, 4 and 16 streaming clients, 60 s each, per server
    .venv/bin/python bench/serve.py --seconds 10 --clients 1,4

Servers, each in its own process with the same threads: `elastiq serve` on the demo's
elastic artifact of the built-in model (scripts/demo.sh builds it; the largest option is
hosted) on the native runtime, and llama.cpp's server (`python -m llama_cpp.server`,
llama-cpp-python) on the GGUF file the built-in model ships as (Q4_1). Where llama.cpp's
extra weight buffers (AMX tiles on CPUs that report them) crash a prompt of more than one
token, which bench/llama_peer.py's probe checks first, its server runs with plain buffers,
and the results say so. Its server interrupts the stream in flight
when a new request comes (`interrupt_requests`, on by default), which truncates every
stream but the last under concurrent clients; it runs with that off, so that it queues
requests as elastiq does (--llama-interrupts: as it comes). Both are found
through GET /v1/models and driven by the official `openai` client: each client streams
chat completions (greedy, --max-tokens new tokens, prompts in turn) back to back for
--seconds. Per client count and server: requests/s, new tokens/s (content chunks), time
to first token (p50, p99) and errors. Then a memory trace is replayed through POST
/elastiq/budget during a 4-client run on elastiq: the swaps, the streams, and the streams
that failed or ended without a finish reason or [DONE].

Writes bench/results/serve.json and the tables of docs/serve.md.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
ARTIFACT = Path(os.environ.get("ELASTIQ_CACHE", Path.home() / ".cache" / "elastiq")) / "elastic" / "smollm2-135m-v1"
PROMPTS = ["What is a tree?", "Write a haiku about the sea.", "Explain rain to a child.",
           "Name three colours and say why you like them.", "How do bicycles stay upright?",
           "Give me a tip for learning to cook.", "What does a librarian do?", "Describe a quiet morning."]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, body=None) -> dict:
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def start(cmd: list[str], port: int, log: Path, wait_s: float = 300, env=None) -> tuple[subprocess.Popen, str]:
    """Start a server; return it and the model id its /v1/models names."""
    p = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT,
                         env={**(env or os.environ), "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "bench")])})
    t0 = time.time()
    while time.time() - t0 < wait_s:
        if p.poll() is not None:
            raise RuntimeError(f"{cmd[:4]} exited: {log.read_text()[-1500:]}")
        try:
            return p, get(f"http://127.0.0.1:{port}/v1/models")["data"][0]["id"]
        except OSError:
            time.sleep(0.5)
    p.terminate()
    raise RuntimeError(f"{cmd[:4]} did not start in {wait_s} s")


# ---- llama.cpp's server --------------------------------------------------------------------------
def llama_server_main(argv: list[str]) -> None:
    """``python -m llama_cpp.server ARGV``, with plain weight buffers where llama_peer asks for them."""
    from llama_peer import plain_buffers_if_asked

    plain_buffers_if_asked()
    from llama_cpp.server.__main__ import main as server

    sys.argv = ["llama_cpp.server", *argv]
    server()


# ---- the client script ------------------------------------------------------------------------
async def one_stream(client, model: str, prompt: str, max_tokens: int) -> dict:
    t0 = time.perf_counter()
    first, tokens, finish, options = None, 0, None, set()
    stream = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                  max_tokens=max_tokens, temperature=0, stream=True)
    async for chunk in stream:
        extra = (chunk.model_extra or {}).get("elastiq") or {}
        if extra.get("option") is not None:
            options.add(extra["option"])
        if not chunk.choices:
            continue
        c = chunk.choices[0]
        if c.delta and c.delta.content:
            tokens += 1
            first = first or time.perf_counter() - t0
        finish = c.finish_reason or finish
    return {"ttft": first, "tokens": tokens, "finish": finish, "options": options, "seconds": time.perf_counter() - t0}


async def load(url: str, model: str, n: int, seconds: float, max_tokens: int) -> dict:
    """``n`` clients streaming back to back for ``seconds``; the requests begun before the end finish."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url + "/v1", api_key="bench", max_retries=0, timeout=600)
    done, errors = [], []
    deadline = time.perf_counter() + seconds

    async def worker(i: int):
        k = i
        while time.perf_counter() < deadline:
            try:
                r = await one_stream(client, model, PROMPTS[k % len(PROMPTS)], max_tokens)
                (done if r["finish"] in ("stop", "length") else errors).append(r)
            except Exception as e:  # counted: the server must make none
                errors.append({"error": f"{type(e).__name__}: {e}"})
            k += n

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(n)))
    wall = time.perf_counter() - t0
    await client.close()
    ttft = sorted(r["ttft"] for r in done if r["ttft"] is not None)
    return {"requests": len(done), "requests_per_s": len(done) / wall, "tokens_per_s": sum(r["tokens"] for r in done) / wall,
            "ttft_p50_s": statistics.median(ttft) if ttft else None,
            "ttft_p99_s": ttft[min(len(ttft) - 1, int(0.99 * len(ttft)))] if ttft else None,
            "errors": len(errors), "error_examples": [e.get("error", "truncated") for e in errors[:3]],
            "seconds": wall, "options": sorted(set().union(*(r["options"] for r in done))) if done else []}


def trace_events(status: dict, seconds: float, step_s: float) -> list[tuple[float, int]]:
    """A staircase from the largest option's size down to the smallest and back, one step per ``step_s``."""
    big, small = status["largest_option_bytes"], status["smallest_option_bytes"]
    levels = [big, int(big * 0.85 + small * 0.15), int(big * 0.6 + small * 0.4), int(big * 0.3 + small * 0.7), small,
              int(small * 0.8)]  # the last is below the smallest option: the host holds the smallest
    ladder = levels + levels[-2:0:-1]
    return [(i * step_s, ladder[i % len(ladder)]) for i in range(int(seconds / step_s))]


async def replay_during_load(url: str, model: str, seconds: float, max_tokens: int, step_s: float) -> dict:
    before = get(url + "/elastiq/status")
    events = trace_events(before, seconds, step_s)

    async def replay():
        t0 = time.perf_counter()
        for t, b in events:
            await asyncio.sleep(max(0.0, t - (time.perf_counter() - t0)))
            await asyncio.to_thread(get, url + "/elastiq/budget", {"budget": b})

    r, _ = await asyncio.gather(load(url, model, 4, seconds, max_tokens), replay())
    after = get(url + "/elastiq/status")
    get(url + "/elastiq/budget", {"budget": before["largest_option_bytes"]})
    return {"swaps": after["swaps"] - before["swaps"], "streams": r["requests"] + r["errors"],
            "failed_streams": r["errors"], "budget_events": len(events), "step_s": step_s,
            "options_seen": r["options"], "tokens_per_s": r["tokens_per_s"], "error_examples": r["error_examples"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifact", type=Path, default=ARTIFACT, help="the elastic artifact (scripts/demo.sh builds it)")
    ap.add_argument("--seconds", type=float, default=60.0, help="seconds per client count and server")
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--trace-step", type=float, default=2.0, help="seconds between the trace's budget changes")
    ap.add_argument("--llama-interrupts", action="store_true",
                    help="run llama.cpp's server as it comes: a new request interrupts the stream in flight")
    ap.add_argument("--out", type=Path, default=RESULTS / "serve.json")
    a = ap.parse_args()
    if not (a.artifact / "elastic.json").is_file():
        sys.exit(f"{a.artifact} is not an elastic artifact: run scripts/demo.sh (it builds one there) or pass --artifact")
    from elastiq.models.builtin import BUILTIN

    gguf = BUILTIN["smollm2-135m"].gguf_path()
    counts = [int(x) for x in a.clients.split(",")]
    RESULTS.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="elastiq-bench-serve-"))  # the servers' output, for when one fails
    sys.path.insert(0, str(ROOT / "bench"))
    from llama_peer import PLAIN_BUFFERS, child_env

    llama_env = child_env(gguf)
    extra_bufts = llama_env[PLAIN_BUFFERS] == "0"
    if not extra_bufts:
        print("llama.cpp's extra weight buffers crash a many-token prompt here: its server loads plain ones", flush=True)
    ours_port, peer_port = free_port(), free_port()
    ours, ours_id = start([sys.executable, "-m", "elastiq", "serve", str(a.artifact), "--port", str(ours_port),
                           "--engine", "native", "--threads", str(a.threads)], ours_port, logs / "elastiq.log")
    try:
        peer, peer_id = start([sys.executable, __file__, "--_llama_server", "--model", str(gguf), "--host", "127.0.0.1",
                               "--port", str(peer_port), "--n_ctx", "2048", "--n_threads", str(a.threads),
                               "--n_threads_batch", str(a.threads), "--verbose", "False",
                               "--interrupt_requests", str(a.llama_interrupts)],  # False: queue, as elastiq does
                              peer_port, logs / "llama_cpp.log", env=llama_env)
    except Exception:
        ours.terminate()
        raise
    servers = {"elastiq": (f"http://127.0.0.1:{ours_port}", ours_id), "llama_cpp": (f"http://127.0.0.1:{peer_port}", peer_id)}
    try:
        status = get(servers["elastiq"][0] + "/elastiq/status")
        rows = []
        for n in counts:
            row = {"n": n}
            for name, (url, model) in servers.items():
                print(f"{n} client(s) against {name} for {a.seconds:g} s ...", flush=True)
                row[name] = asyncio.run(load(url, model, n, a.seconds, a.max_tokens))
                print(f"  {json.dumps({k: v for k, v in row[name].items() if k != 'options'})}", flush=True)
            rows.append(row)
        print(f"trace replay: 4 clients for {a.seconds:g} s against elastiq ...", flush=True)
        trace = asyncio.run(replay_during_load(*servers["elastiq"], a.seconds, a.max_tokens, a.trace_step))
        print(f"  {json.dumps(trace)}", flush=True)
    finally:
        for p in (ours, peer):
            p.terminate()
            p.wait(timeout=30)
    import llama_cpp

    res = {"meta": {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "threads": a.threads, "seconds": a.seconds, "max_tokens": a.max_tokens,
                    "artifact": a.artifact.name, "elastiq_option": status["option"],
                    "elastiq_weight_bytes": status["weight_bytes"], "options": status["options"],
                    "gguf": gguf.name, "gguf_bytes": gguf.stat().st_size, "llama_cpp_python": llama_cpp.__version__,
                    "llama_cpp_extra_bufts": extra_bufts, "llama_cpp_interrupts": a.llama_interrupts,
                    "command": "python bench/serve.py " + " ".join(sys.argv[1:])},
           "clients": rows, "trace": trace}
    a.out.write_text(json.dumps(res, indent=1))
    write_docs(res)
    print(f"wrote {a.out} and docs/serve.md")


def table(res: dict) -> str:
    sys.path.insert(0, str(ROOT / "bench"))
    from markdown import _num

    m = res["meta"]
    out = [f"{m['date']}, {m['cores']} cores ({m['threads']} threads per server), {m['seconds']:g} s per row, "
           f"{m['max_tokens']} new tokens per request, greedy. elastiq: `{m['artifact']}`, option {m['elastiq_option']} "
           f"({m['elastiq_weight_bytes'] / 2**20:.1f} MiB of weights, the largest of {m['options']}); llama.cpp "
           f"(llama-cpp-python {m['llama_cpp_python']}): `{m['gguf']}` ({m['gguf_bytes'] / 2**20:.1f} MiB)"
           + ("" if m["llama_cpp_extra_bufts"] else ", plain weight buffers (its extra ones crash a many-token prompt on "
              "this machine)") + (", interrupting" if m.get("llama_cpp_interrupts") else ", queueing requests") + ". "
           f"Command: `{m['command'].strip()}`.", "",
           "| clients | server | requests/s | tokens/s | TTFT p50 s | TTFT p99 s | errors |", "|---|---|---|---|---|---|---|"]
    for row in res["clients"]:
        for name in ("elastiq", "llama_cpp"):
            r = row[name]
            out.append(f"| {row['n']} | {name} | {r['requests_per_s']:.2f} | {r['tokens_per_s']:.1f} | "
                       f"{_num(r['ttft_p50_s'], '.3f')} | {_num(r['ttft_p99_s'], '.3f')} | {r['errors']} |")
    t = res["trace"]
    out += ["", f"Trace replay (4 clients, {t['budget_events']} budget changes {t['step_s']:g} s apart through "
                f"POST /elastiq/budget): **{t['swaps']} swaps, {t['streams']} streams, {t['failed_streams']} failed "
                f"or truncated**; options seen by the clients: {', '.join(map(str, t['options_seen']))}; "
                f"{t['tokens_per_s']:.1f} tokens/s."]
    return "\n".join(out)


def write_docs(res: dict) -> None:
    from markdown import replace_between  # bench/markdown.py (bench/ is this script's folder)

    replace_between(ROOT / "docs" / "serve.md", "<!-- serve-table -->", "<!-- /serve-table -->", table(res))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_llama_server":
        llama_server_main(sys.argv[2:])
    else:
        main()
