"""The HTTP side: OpenAI's /v1/models, /v1/chat/completions and /v1/completions (streamed as
server-sent events through sse-starlette, or whole), /health, elastiq's /elastiq/status and
/elastiq/budget, and the status page at /. Every answer names the option or options that
produced it, in its body (``elastiq``) and in the ``x-elastiq-options`` header."""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
from importlib import resources

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException

from elastiq.elastic.budget import parse_bytes
from elastiq.errors import InputError
from elastiq.runtime.generate import Sampling

from .engine import Job
from .protocol import (ApiError, ChatRequest, CompletionRequest, chat_logprobs, completion_logprobs, new_id, now,
                       stops)
from .service import Service

log = logging.getLogger("elastiq.serve")
OPTIONS_HEADER = "x-elastiq-options"


def create_app(service: Service, api_key: str | None = None) -> FastAPI:
    app = FastAPI(title="elastiq serve", docs_url=None, redoc_url=None, openapi_url=None)
    h = service.hosted
    tok = h.tokenizer

    # ---- errors: OpenAI's shape, a 4xx, never a traceback ------------------------------------
    @app.exception_handler(ApiError)
    async def api_error(_, e: ApiError):
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:])
        if first.get("type") == "json_invalid":
            msg = "the request body is not valid JSON"
        else:
            msg = f"{where or 'the body'}: {first.get('msg', 'invalid')}"
        return JSONResponse(ApiError(400, msg, param=where or None).body(), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(_, e: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
        return JSONResponse(ApiError(e.status_code, str(e.detail), code=code).body(), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def internal(_, e: Exception):
        log.exception("internal error")
        return JSONResponse(ApiError(500, f"internal error ({type(e).__name__})", type="server_error").body(),
                            status_code=500)

    # ---- the key -----------------------------------------------------------------------------
    def check_key(request: Request) -> None:
        if api_key is None:
            return
        auth = request.headers.get("authorization", "")
        given = auth[7:] if auth.lower().startswith("bearer ") else request.query_params.get("api_key", "")
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise ApiError(401, "invalid or missing API key: send 'Authorization: Bearer KEY'",
                           code="invalid_api_key", type="authentication_error")

    keyed = [Depends(check_key)]

    def headers(options) -> dict:
        return {OPTIONS_HEADER: ",".join(str(o) for o in options)}

    # ---- plain endpoints -----------------------------------------------------------------------
    @app.get("/health")
    def health():
        return {"status": "ok", "model": h.name}

    @app.get("/", response_class=HTMLResponse, dependencies=keyed)
    def page():
        return (resources.files(__package__) / "status.html").read_text(encoding="utf-8")

    @app.get("/v1/models", dependencies=keyed)
    def models():
        return {"object": "list", "data": [{"id": h.name, "object": "model", "created": int(service.started),
                                            "owned_by": "elastiq"}]}

    @app.get("/elastiq/status", dependencies=keyed)
    def status(history: bool = False):
        s = service.status(history)
        return JSONResponse(s, headers=headers([s["option"]]))

    @app.post("/elastiq/budget", dependencies=keyed)
    async def set_budget(request: Request):
        body = await _json(request)
        if service.budget is None:
            raise ApiError(400, f"{h.name} is a saved model with one option: there is no budget to set")
        if not isinstance(body, dict) or "budget" not in body:
            raise ApiError(400, 'send {"budget": SIZE}, SIZE in bytes or as text such as "80MiB"', param="budget")
        try:
            size = parse_bytes(body["budget"])
        except InputError as e:
            raise ApiError(400, str(e), param="budget") from None
        result = await asyncio.to_thread(service.budget.set, size)
        s = service.status()
        return JSONResponse({**s, **result}, headers=headers([s["option"]]))

    # ---- generation ----------------------------------------------------------------------------
    def check_model(name: str) -> None:
        if name != h.name:
            raise ApiError(404, f"the model {name!r} does not exist: this server hosts {h.name!r} (GET /v1/models)",
                           param="model", code="model_not_found")

    def sampling(req) -> Sampling:
        if req.n != 1:
            raise ApiError(400, f"n must be 1 (one choice per request), got {req.n}", param="n")
        return Sampling(temperature=req.temperature, top_p=req.top_p, seed=req.seed)

    def check_room(n_prompt: int, max_tokens: int | None, default_rest: bool) -> int:
        room = h.max_ctx - n_prompt
        if n_prompt == 0:
            raise ApiError(400, "the prompt is empty", param="prompt")
        if max_tokens is None:
            max_tokens = room if default_rest else 16
        if room < 0 or max_tokens > room:
            raise ApiError(400, f"the prompt's {n_prompt} tokens plus max_tokens {max_tokens} exceed the model's "
                           f"context of {h.max_ctx} tokens: shorten the prompt or lower max_tokens",
                           param="messages" if default_rest else "prompt", code="context_length_exceeded")
        return max_tokens

    async def events(job: Job):
        """The job's events as the worker sends them; a consumer that stops cancels the job."""
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()
        job.emit = lambda kind, payload: loop.call_soon_threadsafe(q.put_nowait, (kind, payload))
        service.engine.submit(job)
        try:
            while True:
                kind, payload = await q.get()
                yield kind, payload
                if kind in ("done", "error"):
                    return
        finally:
            job.cancelled.set()  # the client went away (or the job is over): drop it, or stop at its next token

    async def whole(job: Job) -> dict:
        async for kind, payload in events(job):
            if kind == "done":
                return payload
            if kind == "error":
                raise _refused(payload)
        raise ApiError(500, "the generation ended without a result", type="server_error")

    def stream(chunks, first_option):
        async def sse():
            try:
                async for chunk in chunks:
                    yield {"data": json.dumps(chunk)}
            except ApiError as e:  # the stream has begun: the error goes in it
                yield {"data": json.dumps(e.body())}
            yield {"data": "[DONE]"}

        return EventSourceResponse(sse(), ping=15, headers=headers([first_option]))

    def usage(prompt_tokens: int, completion_tokens: int) -> dict:
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}

    # ---- chat ---------------------------------------------------------------------------------
    @app.post("/v1/chat/completions", dependencies=keyed)
    async def chat(req: ChatRequest):
        check_model(req.model)
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        try:
            if tok.chat_template:
                ids = tok.encode(tok.render_chat(messages), add_special_tokens=False)
            else:  # a model without a chat template: the conversation as plain text
                ids = tok.encode("".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:")
        except ValueError as e:
            raise ApiError(400, str(e), param="messages") from None
        limit = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        if limit is not None and limit < 1:
            raise ApiError(400, f"max_tokens must be at least 1, got {limit}", param="max_tokens")
        top = req.top_logprobs or 0
        job = Job(ids, check_room(len(ids), limit, True), None, sampling(req), stops(req.stop),
                  logprobs=top if req.logprobs else None)
        cid, created = new_id("chatcmpl"), now()

        def chunk(delta: dict, finish=None, **extra) -> dict:
            return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": h.name,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish, **extra}], }

        if req.stream:
            with_usage = bool((req.stream_options or {}).get("include_usage"))

            async def chunks():
                yield {**chunk({"role": "assistant", "content": ""}), "elastiq": {"option": service.option}}
                async for kind, p in events(job):
                    if kind == "token":
                        lp = chat_logprobs(tok, p["tokens"]) if req.logprobs else None
                        yield {**chunk({"content": p["text"]}, logprobs=lp), "elastiq": {"option": p["option"]}}
                    elif kind == "error":
                        raise _refused(p)
                    else:
                        yield {**chunk({}, p["finish_reason"]), "elastiq": {"options": p["options"]}}
                        if with_usage:
                            yield {"id": cid, "object": "chat.completion.chunk", "created": created, "model": h.name,
                                   "choices": [], "usage": usage(p["prompt_tokens"], len(p["new"]))}

            return stream(chunks(), service.option)
        r = await whole(job)
        choice = {"index": 0, "message": {"role": "assistant", "content": r["text"]}, "finish_reason": r["finish_reason"],
                  "logprobs": chat_logprobs(tok, r["new"]) if req.logprobs else None}
        body = {"id": cid, "object": "chat.completion", "created": created, "model": h.name, "choices": [choice],
                "usage": usage(r["prompt_tokens"], len(r["new"])), "elastiq": {"options": r["options"]}}
        return JSONResponse(body, headers=headers(r["options"]))

    # ---- completions --------------------------------------------------------------------------
    @app.post("/v1/completions", dependencies=keyed)
    async def completions(req: CompletionRequest):
        check_model(req.model)
        p = req.prompt
        prompts = [p] if isinstance(p, str) or (p and isinstance(p[0], int)) else list(p)
        if not prompts:
            raise ApiError(400, "the prompt is empty", param="prompt")
        if req.stream and len(prompts) > 1:
            raise ApiError(400, "a streamed completion takes one prompt", param="prompt")
        if req.max_tokens is not None and (req.max_tokens < 0 or (req.max_tokens == 0 and not req.echo)):
            raise ApiError(400, f"max_tokens must be at least 1 (0 only with echo), got {req.max_tokens}",
                           param="max_tokens")
        jobs = []
        for one in prompts:
            ids = tok.encode(one) if isinstance(one, str) else list(one)
            if any(not 0 <= i < h.vocab for i in ids):
                raise ApiError(400, f"a prompt token is outside the vocabulary of {h.vocab}", param="prompt")
            jobs.append(Job(ids, check_room(len(ids), req.max_tokens, False), None, sampling(req), stops(req.stop),
                            logprobs=req.logprobs, echo=req.echo))
        cid, created = new_id("cmpl"), now()

        def prompt_part(job: Job, r: dict) -> tuple[str, list]:
            if not req.echo:
                return "", []
            rows = [(t, *(row or (None, None))) for t, row in zip(job.prompt_ids, r["prompt_rows"])]
            return tok.decode(job.prompt_ids), rows

        if req.stream:
            job = jobs[0]

            async def chunks():
                offset, text0 = 0, tok.decode(job.prompt_ids) if req.echo else ""
                if req.echo:
                    offset = len(text0)
                async for kind, p in events(job):
                    if kind == "error":
                        raise _refused(p)
                    if kind == "token":
                        lp = None
                        if req.logprobs is not None:
                            lp = completion_logprobs(tok, [(i["token"], i["logprob"], i["top"]) for i in p["tokens"]],
                                                     offset)
                        offset += len(p["text"])
                        text, text0 = text0 + p["text"], ""
                        yield {"id": cid, "object": "text_completion", "created": created, "model": h.name,
                               "choices": [{"index": 0, "text": text, "logprobs": lp, "finish_reason": None}],
                               "elastiq": {"option": p["option"]}}
                    else:
                        yield {"id": cid, "object": "text_completion", "created": created, "model": h.name,
                               "choices": [{"index": 0, "text": text0, "logprobs": None,
                                            "finish_reason": p["finish_reason"]}], "elastiq": {"options": p["options"]}}

            return stream(chunks(), service.option)
        choices, options, n_prompt, n_new = [], [], 0, 0
        for i, job in enumerate(jobs):
            r = await whole(job)
            head, rows = prompt_part(job, r)
            rows += [(x["token"], x.get("logprob"), x.get("top")) for x in r["new"]]
            choices.append({"index": i, "text": head + r["text"], "finish_reason": r["finish_reason"],
                            "logprobs": completion_logprobs(tok, rows) if req.logprobs is not None else None})
            options += [o for o in r["options"] if o not in options]
            n_prompt, n_new = n_prompt + r["prompt_tokens"], n_new + len(r["new"])
        body = {"id": cid, "object": "text_completion", "created": created, "model": h.name, "choices": choices,
                "usage": usage(n_prompt, n_new), "elastiq": {"options": options}}
        return JSONResponse(body, headers=headers(options))

    return app


def _refused(e: Exception) -> ApiError:
    """A failed generation as an API error: a refused input is the client's (400), the rest ours."""
    if isinstance(e, (InputError, ValueError)):
        return ApiError(400, str(e))
    log.error("generation failed: %s: %s", type(e).__name__, e)
    return ApiError(500, f"the generation failed ({type(e).__name__})", type="server_error")


async def _json(request: Request):
    try:
        return json.loads(await request.body() or b"null")
    except ValueError:
        raise ApiError(400, "the request body is not valid JSON") from None
