"""OpenAI's request and response shapes, as far as the server speaks them: the request
bodies (extra fields are accepted and ignored, as OpenAI's clients send some), the error
body, and the log-probabilities of the completions and chat APIs."""
from __future__ import annotations

import time
import uuid
from typing import Optional, Union

from pydantic import BaseModel, ConfigDict, Field


class ApiError(Exception):
    """A request refused with OpenAI's error body and a 4xx status."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    max_tokens: Optional[int] = None
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = 1
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = None
    stream: bool = False
    stream_options: Optional[dict] = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: Union[str, list[dict], None] = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: the text ones
            return "".join(p.get("text", "") for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatRequest(_Request):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: Optional[int] = None
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)


class CompletionRequest(_Request):
    prompt: Union[str, list[str], list[int], list[list[int]]]
    max_tokens: Optional[int] = 16  # OpenAI's default for completions
    echo: bool = False
    logprobs: Optional[int] = Field(None, ge=0, le=5)


def stops(value) -> tuple[str, ...]:
    s = (value,) if isinstance(value, str) else tuple(value or ())
    if len(s) > 4:
        raise ApiError(400, f"stop takes at most 4 sequences, got {len(s)}", param="stop")
    return s


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def completion_logprobs(tok, rows: list, offset: int = 0) -> dict:
    """The completions API's log-probabilities of ``rows`` (token, logprob, top): text per token,
    its offset in the returned text, and the top alternatives as {text: logprob}."""
    out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for token, lp, top in rows:
        text = tok.decode([token])
        out["tokens"].append(text)
        out["token_logprobs"].append(lp)
        out["top_logprobs"].append(None if top is None else {tok.decode([i]): v for i, v in top})
        out["text_offset"].append(offset)
        offset += len(text)
    return out


def chat_logprobs(tok, infos: list[dict]) -> dict:
    """The chat API's log-probabilities: per token its text, bytes, logprob and top alternatives."""
    def entry(token, lp):
        text = tok.decode([token])
        return {"token": text, "logprob": lp, "bytes": list(text.encode())}

    return {"content": [{**entry(i["token"], i["logprob"]), "top_logprobs": [entry(t, v) for t, v in i["top"]]}
                        for i in infos]}
