"""The native runtime against llama.cpp and elastiq's torch path, each in a fresh process.

    .venv/bin/python bench/runtime.py                 # 512-token prompt, 128 greedy tokens, 2 threads, median of 3
    .venv/bin/python bench/runtime.py --repeats 1 --only engines

Engines: the native runtime on SmolLM2-135M packed in nxfp4 (embedding and tied head
packed too) and in int4 (same), elastiq's torch path on the same nxfp4 model, and
llama.cpp (llama-cpp-python) on the GGUF file the built-in model ships as (Q4_1). Every
engine runs the same prompt token ids. Per run: decode and prefill tokens/s, the whole
process's peak resident memory (VmHWM, from process start: interpreter, libraries,
weights, KV cache) and the time from process start to the first generated token.

The elastic part hosts the demo's artifact on the native runtime: swap times between
neighbouring options and between the extremes, and the process's resident memory before
and after a shrink (freed copies go back to the system). The host part times the whole
`elastiq host` command (start to exit, peak memory) for a 32-token answer on the
smallest option, for both engines, beside llama.cpp answering the same prompt.

The busy part measures decode with OpenMP's threads spinning and waiting passively, on the
quiet machine and beside --burners processes that keep the cores busy.

Writes bench/results/runtime.json, bench/results/runtime.png and the tables of docs/runtime.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PROMPT = "Write a short story about a robot who learns to paint."


# ---- children: each runs one engine once and prints one JSON line ---------------------------
def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def child_native(model_dir: str, ids_file: str, new_tokens: int, t_start: float) -> None:
    import numpy as np

    from elastiq.runtime import NativeLM

    ids = json.loads(Path(ids_file).read_text())
    lm = NativeLM(model_dir, nthreads=2)  # with its tokenizer, as the other engines load theirs
    lm.model.reserve(len(ids) + new_tokens)
    t0 = time.perf_counter()
    nxt = int(np.argmax(lm.model.forward(ids)))
    t1 = time.perf_counter()
    first = time.time() - t_start
    out = [nxt]
    for _ in range(new_tokens - 1):
        nxt = int(np.argmax(lm.model.forward([nxt])))
        out.append(nxt)
    t2 = time.perf_counter()
    print(json.dumps({"prefill_tps": len(ids) / (t1 - t0), "decode_tps": (new_tokens - 1) / (t2 - t1),
                      "first_token_s": first, "peak_rss_bytes": _peak_rss(), "weight_bytes": lm.model.weight_bytes,
                      "tokens": out}))


def child_torch(model_dir: str, ids_file: str, new_tokens: int, t_start: float) -> None:
    import torch

    import elastiq

    torch.set_num_threads(2)
    ids = torch.tensor([json.loads(Path(ids_file).read_text())])
    model, _ = elastiq.load(model_dir)
    with torch.no_grad():
        t0 = time.perf_counter()
        o = model(ids, use_cache=True, logits_to_keep=1)
        past, nxt = o.past_key_values, o.logits[:, -1:].argmax(-1)
        t1 = time.perf_counter()
        first = time.time() - t_start
        out = [int(nxt)]
        for _ in range(new_tokens - 1):
            o = model(nxt, past_key_values=past, use_cache=True)
            past, nxt = o.past_key_values, o.logits[:, -1:].argmax(-1)
            out.append(int(nxt))
        t2 = time.perf_counter()
    print(json.dumps({"prefill_tps": ids.shape[1] / (t1 - t0), "decode_tps": (new_tokens - 1) / (t2 - t1),
                      "first_token_s": first, "peak_rss_bytes": _peak_rss(), "weight_bytes": elastiq.weight_bytes(model),
                      "tokens": out}))


def child_llama(gguf: str, ids_file: str, new_tokens: int, t_start: float) -> None:
    from llama_peer import open_llama  # bench/, this script's folder

    ids = json.loads(Path(ids_file).read_text())
    llm = open_llama(model_path=gguf, n_ctx=len(ids) + new_tokens, n_threads=2, n_threads_batch=2, n_batch=len(ids),
                verbose=False)
    gen = llm.generate(ids, temp=0.0, top_k=1, reset=True)
    t0 = time.perf_counter()
    out = [next(gen)]  # the prompt, then the first token
    t1 = time.perf_counter()
    first = time.time() - t_start
    for _ in range(new_tokens - 1):
        out.append(next(gen))
    t2 = time.perf_counter()
    print(json.dumps({"prefill_tps": len(ids) / (t1 - t0), "decode_tps": (new_tokens - 1) / (t2 - t1),
                      "first_token_s": first, "peak_rss_bytes": _peak_rss(), "weight_bytes": Path(gguf).stat().st_size,
                      "tokens": [int(t) for t in out]}))


def child_elastic(artifact: str, repeats: int) -> None:
    """Swap times on the native host, and resident memory before and after a shrink."""
    from elastiq.elastic import NativeElasticModel

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    h = NativeElasticModel(artifact, nthreads=2, with_tokenizer=False)
    opts = h.options
    h.swap(opts[0])
    h.forward([1, 2, 3])
    big = rss()
    neighbour, extremes = [], []
    for r in range(repeats):
        k = opts[len(opts) // 2 + r]
        h.swap(k)
        neighbour.append(h.swap(opts[opts.index(k) + 1]).seconds)
    for _ in range(repeats):
        extremes.append(h.swap(opts[-1]).seconds)
        small = rss()
        extremes.append(h.swap(opts[0]).seconds)
    h.swap(opts[-1])
    print(json.dumps({"options": len(opts), "neighbour_swap_s": statistics.median(neighbour),
                      "extremes_swap_s": statistics.median(extremes), "rss_largest_bytes": big,
                      "rss_after_shrink_bytes": small, "largest_option_bytes": int(h.sizes[opts[0]]),
                      "smallest_option_bytes": int(h.sizes[opts[-1]])}))


CHILDREN = {"native": child_native, "torch": child_torch, "llama": child_llama}


def run_child(kind: str, *args, timeout: int = 900, env: dict | None = None) -> dict:
    cmd = [sys.executable, __file__, f"--_{kind}", *map(str, args)]
    if kind in CHILDREN:
        cmd.append(repr(time.time()))
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                       env={**os.environ, "OMP_NUM_THREADS": "2", **(env or {})})
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode or not lines:
        raise RuntimeError(f"{kind} run failed:\n{r.stderr[-3000:]}")
    return json.loads(lines[-1])


def timed_command(cmd: list[str]) -> dict:
    """Wall time and peak resident memory of a whole command (wait4's rusage of that child).
    ru_maxrss carries the parent's peak across fork and exec, so the caller is a small
    process of its own (--_host), not the one that loaded the model."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "2"})
    _, status, usage = os.wait4(p.pid, 0)
    seconds = time.perf_counter() - t0
    out = p.stdout.read()
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stderr.read()[-3000:]}")
    return {"seconds": seconds, "peak_rss_bytes": usage.ru_maxrss * 1024, "stdout_tail": out[-300:]}


def median_row(runs: list[dict]) -> dict:
    row = {k: statistics.median(r[k] for r in runs) for k in ("prefill_tps", "decode_tps", "first_token_s",
                                                             "peak_rss_bytes", "weight_bytes")}
    row["runs"] = len(runs)
    row["tokens"] = runs[0]["tokens"]
    return row


def memcpy_bandwidth() -> float:
    """This machine's memory-copy bandwidth (bytes/s), numpy copying 256 MiB, best of 5."""
    import numpy as np

    a = np.ones(256 << 20, np.uint8)
    b = np.empty_like(a)
    best = min(_time(lambda: np.copyto(b, a)) for _ in range(5))
    return 2 * a.nbytes / best  # read + write


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--only", default="engines,elastic,host,busy", help="comma-separated parts")
    ap.add_argument("--burners", type=int, default=2, help="busy part: processes that keep the cores busy")
    ap.add_argument("--busy-tokens", type=int, default=16, help="busy part: tokens decoded per run (128-token prompt)")
    ap.add_argument("--busy-repeats", type=int, default=1, help="busy part: runs per row")
    ap.add_argument("--artifact", default=None, help="the elastic artifact (default: the demo's, in the cache)")
    ap.add_argument("--work", default=None, help="where the packed models are kept (default: the cache)")
    a = ap.parse_args()
    only = set(a.only.split(","))
    from rich.console import Console

    from elastiq.cache import cache_dir
    from elastiq.models import BUILTIN
    from llama_peer import PLAIN_BUFFERS, child_env

    console = Console()
    work = Path(a.work) if a.work else cache_dir() / "bench-runtime"
    work.mkdir(parents=True, exist_ok=True)
    out_file = RESULTS / "runtime.json"
    res = json.loads(out_file.read_text()) if out_file.is_file() else {}
    os.environ.update(child_env(BUILTIN["smollm2-135m"].gguf_path()))  # every child that runs llama.cpp inherits it
    res["llama_cpp_extra_buffers"] = os.environ[PLAIN_BUFFERS] == "0"
    res["protocol"] = {"prompt_tokens": a.prompt_tokens, "new_tokens": a.new_tokens, "threads": 2,
                       "repeats": a.repeats, "statistic": "median"}
    if "engines" in only:
        res.update(engines(a, work, console))
    if "busy" in only:
        res["busy"] = {"burners": a.burners, "tokens": a.busy_tokens, "prompt_tokens": 128, "rows": busy(a, work, console)}
    if "elastic" in only or "host" in only:
        art = Path(a.artifact) if a.artifact else cache_dir() / "elastic" / "smollm2-135m-v1"
        if not (art / "native.json").is_file():
            console.print(f"[red]{art} is not an artifact with native tables: run scripts/demo.sh first[/]")
        else:
            if "elastic" in only:
                res["elastic_native"] = run_child("elastic", art, a.repeats)
                console.print(res["elastic_native"])
            if "host" in only:
                gguf = BUILTIN["smollm2-135m"].gguf_path()
                res["host"] = run_child("host", art, gguf, a.repeats)
                console.print(res["host"])
    RESULTS.mkdir(exist_ok=True)
    out_file.write_text(json.dumps(res, indent=1))
    write_docs(res)
    console.print(f"wrote {out_file.relative_to(ROOT)} and docs/runtime.md")


def prepare(work: Path, prompt_tokens: int) -> tuple[Path, dict[str, Path]]:
    """The prompt ids (a file) and the packed models (built once into ``work``) that the
    engine and busy parts run."""
    import copy

    import elastiq
    from elastiq.data import load_text, tokenize

    model, tok = elastiq.load("smollm2-135m")
    ids_file = work / f"prompt-{prompt_tokens}.json"
    ids_file.write_text(json.dumps(tokenize(tok, load_text("wiki-calib"))[:prompt_tokens].tolist()))
    dirs = {}
    for name, fmt in [("nxfp4_emb", "nxfp4"), ("int4", "int4")]:
        d = work / f"smollm2-{name}"
        if not (d / "native.json").is_file():
            packed = elastiq.quantize(copy.deepcopy(model), fmt, embedding="same", progress=False)
            elastiq.save(packed, d, tokenizer=tok, overwrite=True)
            del packed
        dirs[name] = d
    return ids_file, dirs


def engines(a, work: Path, console) -> dict:
    """Run every engine on the prepared models and prompt."""
    from elastiq.models import BUILTIN

    ids_file, dirs = prepare(work, a.prompt_tokens)
    gguf = BUILTIN["smollm2-135m"].gguf_path()
    plan = [("native_nxfp4_emb", "native", dirs["nxfp4_emb"]), ("native_int4", "native", dirs["int4"]),
            ("torch_nxfp4_emb", "torch", dirs["nxfp4_emb"]), ("llama_cpp", "llama", gguf)]
    runs: dict[str, list] = {name: [] for name, _, _ in plan}
    for r in range(a.repeats):  # interleaved, so a noisy spell hits every engine alike
        for name, kind, path in plan:
            runs[name].append(run_child(kind, path, ids_file, a.new_tokens))
            console.print(f"run {r + 1}/{a.repeats} {name}: decode {runs[name][-1]['decode_tps']:.1f} tok/s, "
                          f"prefill {runs[name][-1]['prefill_tps']:.0f} tok/s, "
                          f"peak {runs[name][-1]['peak_rss_bytes'] / 2**20:.0f} MiB, "
                          f"first token {runs[name][-1]['first_token_s']:.2f} s")
    out = {name: median_row(rs) for name, rs in runs.items()}
    n, ll = out["native_nxfp4_emb"], out["llama_cpp"]
    bw = memcpy_bandwidth()
    for name in ("native_nxfp4_emb", "native_int4", "torch_nxfp4_emb"):
        out[name]["decode_bandwidth_share"] = out[name]["weight_bytes"] * out[name]["decode_tps"] / bw
    agree = sum(a_ == b_ for a_, b_ in zip(n["tokens"], out["torch_nxfp4_emb"]["tokens"]))
    return {**out, "memcpy_bandwidth_bytes_per_s": bw,
            "native_torch_same_tokens": agree, "decode_vs_llama_cpp": n["decode_tps"] / ll["decode_tps"],
            "prefill_vs_llama_cpp": n["prefill_tps"] / ll["prefill_tps"],
            "rss_vs_llama_cpp": n["peak_rss_bytes"] / ll["peak_rss_bytes"],
            "first_token_vs_llama_cpp": n["first_token_s"] / ll["first_token_s"],
            "decode_int4_vs_llama_cpp": out["native_int4"]["decode_tps"] / ll["decode_tps"]}


WAIT_POLICIES = {"spin": {"GOMP_SPINCOUNT": "300000"},  # libgomp's default when nothing is set
                 "passive": {"OMP_WAIT_POLICY": "PASSIVE"}}


def busy(a, work: Path, console) -> list[dict]:
    """Decode speed with OpenMP threads spinning or waiting passively at their barriers, on the
    quiet machine and beside --burners processes that keep the cores busy (a device whose
    other programs are running). The same environment for both engines."""
    from elastiq.models import BUILTIN

    ids_file, dirs = prepare(work, 128)
    engines_ = (("native_nxfp4_emb", "native", dirs["nxfp4_emb"]),
                ("llama_cpp", "llama", BUILTIN["smollm2-135m"].gguf_path()))
    rows = []
    for burners in (0, a.burners):
        procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(burners)]
        try:
            for policy, env in WAIT_POLICIES.items():
                for name, kind, path in engines_:
                    runs = [run_child(kind, path, ids_file, a.busy_tokens, env=env)["decode_tps"]
                            for _ in range(a.busy_repeats)]
                    rows.append({"engine": name, "wait": policy, "burners": burners,
                                 "decode_tps": statistics.median(runs), "runs": len(runs)})
                    console.print(rows[-1])
        finally:
            for p in procs:
                p.kill()
    return rows


def child_host(art: str, gguf: str, repeats: int) -> None:
    """`elastiq host` start to exit for a 32-token answer on the smallest option, both engines,
    and llama.cpp answering the same chat prompt; run from a small process (see timed_command)."""
    art = Path(art)
    from elastiq.elastic.chain import Chain, Family

    m = json.loads((art / "elastic.json").read_text())
    smallest = int(Chain.from_dict(m["chain"]).option_bytes()[max(Family.from_dict(m["family"]).options)])
    exe = str(Path(sys.executable).with_name("elastiq"))
    rows = {}
    for engine in ("native", "torch"):
        cmd = [exe, "host", str(art), "--budget", str(smallest), "--prompt", PROMPT, "--max-new-tokens", "32",
               "--engine", engine, "--threads", "2"]
        runs = [timed_command(cmd) for _ in range(repeats)]
        rows[engine] = {"seconds": statistics.median(r["seconds"] for r in runs),
                        "peak_rss_bytes": statistics.median(r["peak_rss_bytes"] for r in runs)}
    code = ("import sys; sys.path.insert(0, 'bench'); from llama_peer import open_llama; "
            "llm = open_llama(model_path=sys.argv[1], n_ctx=512, n_threads=2, verbose=False); "
            "print(llm.create_chat_completion([{'role': 'user', 'content': sys.argv[2]}], max_tokens=32, "
            "temperature=0.0, top_k=1)['choices'][0]['message']['content'])")
    runs = [timed_command([sys.executable, "-c", code, gguf, PROMPT]) for _ in range(repeats)]
    rows["llama_cpp"] = {"seconds": statistics.median(r["seconds"] for r in runs),
                         "peak_rss_bytes": statistics.median(r["peak_rss_bytes"] for r in runs)}
    print(json.dumps(rows))


def write_docs(res: dict) -> None:
    """The tables of docs/runtime.md, between its markers."""
    sys.path.insert(0, str(ROOT / "bench"))
    from markdown import replace_between, runtime_table

    replace_between(ROOT / "docs" / "runtime.md", "<!-- runtime-table -->", "<!-- /runtime-table -->", runtime_table(res))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("--_"):
        kind, args = sys.argv[1][3:], sys.argv[2:]
        if kind == "elastic":
            child_elastic(args[0], int(args[1]))
        elif kind == "host":
            child_host(args[0], args[1], int(args[2]))
        else:
            CHILDREN[kind](args[0], args[1], int(args[2]), float(args[3]))
    else:
        main()
