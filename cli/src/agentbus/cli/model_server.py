"""A local OpenAI-compatible Chat Completions server that answers from a script, for tests and demos."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import math
import re
import socket
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, Self

import typer
import uvicorn
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

DEMO_SCRIPT = Path(__file__).resolve().parent / "scripts" / "refund_demo.toml"
CLASSIFY_FUNCTION = "classify_ticket"
SCRIPT_ENDED = "(script ended)"
# Only identifiers count as placeholders, so JSON or other braces in a reply pass through untouched.
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}

log = logging.getLogger("agentbus.model_server")


class ScriptError(ValueError):
    """A script that cannot be used; the message names the source, the scenario and the problem."""


def _check_regexes(patterns: list[str]) -> list[str]:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"regex {pattern!r} does not compile ({exc})") from exc
    return patterns


class Turn(BaseModel):
    """One reply to a planning request: a tool call, malformed arguments, content, a delay, an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    call: str | None = Field(
        None, min_length=1, description="tool name as in the registry (orders.get_order)"
    )
    args: dict[str, JsonValue] | None = None
    raw_args: str | None = Field(None, description="arguments string sent verbatim, e.g. malformed JSON")
    content: str | None = None
    delay_s: float = Field(0.0, ge=0)
    status: int | None = Field(None, ge=400, le=599)
    times: int | None = Field(None, ge=1, description="status/delay_s apply to the first N attempts only")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        answers = self.call is not None or self.raw_args is not None or self.content is not None
        if self.args is not None and self.raw_args is not None:
            raise ValueError("'args' and 'raw_args' exclude each other")
        if self.args is not None and self.call is None:
            raise ValueError("'args' needs 'call'")
        if self.status is not None and answers and self.times is None:
            raise ValueError(
                "a 'status' turn without 'times' fails on every attempt, so its reply is never sent"
            )
        if self.times is not None and self.status is None and not self.delay_s:
            raise ValueError("'times' limits 'status' and 'delay_s', and this turn has neither")
        if not answers and self.status is None and not self.delay_s:
            raise ValueError("empty turn: give call, raw_args, content, status or delay_s")
        return self


class Scenario(BaseModel):
    """Replies for the conversations whose user messages match: classification, drafting, planning."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    match: str | None = Field(None, description="regex that selects the scenario; none = the fallback")
    match_tool: str | None = Field(
        None,
        description="regex searched in tool results: once found, this scenario takes the conversation over "
        "from its next turn (a model that obeys an instruction injected into a tool's output)",
    )
    capture: list[str] = Field(
        default_factory=list,
        description="regexes searched in system and user messages; named groups found fill placeholders",
    )
    vars: dict[str, JsonValue] = Field(default_factory=dict, description="placeholder defaults")
    classify: dict[str, JsonValue] | None = None
    draft: str | None = None
    turn: list[Turn] = Field(default_factory=list)

    @field_validator("capture", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("match", "match_tool")
    @classmethod
    def _match_compiles(cls, value: str | None) -> str | None:
        return value if value is None else _check_regexes([value])[0]

    @field_validator("capture")
    @classmethod
    def _capture_compiles(cls, value: list[str]) -> list[str]:
        return _check_regexes(value)

    @property
    def fallback(self) -> bool:
        return self.match is None and self.match_tool is None

    def matches(self, user_text: str) -> dict[str, str] | None:
        """Named groups of `match` in the user messages; None when it is not found there."""
        if self.match is None:
            return {}
        m = re.search(self.match, user_text)
        return None if m is None else {k: v for k, v in m.groupdict().items() if v is not None}

    def captured(self, text: str) -> dict[str, str]:
        found: dict[str, str] = {}
        for pattern in self.capture:
            if m := re.search(pattern, text):
                found.update({k: v for k, v in m.groupdict().items() if v is not None})
        return found


class Script(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario: list[Scenario]

    def select(self, user_text: str, tool_text: str = "") -> tuple[Scenario, dict[str, str]] | None:
        """The first scenario whose `match_tool` is found in the tool results, else the first whose
        `match` is found in the user messages, else the fallback, with the match's named groups."""
        for scenario in self.scenario:
            if scenario.match_tool is not None and (m := re.search(scenario.match_tool, tool_text)):
                return scenario, {k: v for k, v in m.groupdict().items() if v is not None}
        for scenario in self.scenario:
            if scenario.match is not None and (groups := scenario.matches(user_text)) is not None:
                return scenario, groups
        for scenario in self.scenario:
            if scenario.fallback:
                return scenario, {}
        return None


def _describe(error: ErrorDetails) -> str:
    loc = list(error["loc"])
    where = ""
    if len(loc) >= 2 and loc[0] == "turn" and isinstance(loc[1], int):
        where, loc = f"turn {loc[1] + 1}: ", loc[2:]
    if error["type"] == "extra_forbidden" and loc:
        return f"{where}unknown key {loc[-1]!r}"
    message = error["msg"].removeprefix("Value error, ")
    field = ".".join(str(part) for part in loc)
    return f"{where}{field + ': ' if field else ''}{message}"


def parse_script(data: Any, source: str = "script") -> Script:
    """Validate a script's data; a ScriptError names the source, scenario, turn and key at fault."""
    if not isinstance(data, Mapping):
        raise ScriptError(f"{source}: a script is a table of [[scenario]] entries, not {type(data).__name__}")
    for key in data:
        if key != "scenario":
            raise ScriptError(f"{source}: unknown top-level key {key!r} (a script has only [[scenario]])")
    raw = data.get("scenario")
    if not isinstance(raw, list) or not raw:
        raise ScriptError(f"{source}: no [[scenario]] entries")
    scenarios: list[Scenario] = []
    for number, item in enumerate(raw, 1):
        name = item.get("name") if isinstance(item, Mapping) else None
        label = f"scenario {name!r}" if isinstance(name, str) else f"scenario #{number}"
        try:
            scenarios.append(Scenario.model_validate(item))
        except ValidationError as exc:
            problems = "; ".join(_describe(e) for e in exc.errors())
            raise ScriptError(f"{source}: {label}: {problems}") from None
    names = Counter(s.name for s in scenarios)
    if twice := [n for n, count in names.items() if count > 1]:
        raise ScriptError(f"{source}: scenario {twice[0]!r} is defined more than once")
    fallbacks = [s.name for s in scenarios if s.fallback]
    if len(fallbacks) > 1:
        raise ScriptError(
            f"{source}: scenarios {fallbacks} all lack 'match' and 'match_tool'; only one fallback is allowed"
        )
    return Script(scenario=scenarios)


def load_script(source: Script | Mapping[str, Any] | Path | str) -> Script:
    """A script from data, or from a .toml or .json file."""
    if isinstance(source, Script):
        return source
    if isinstance(source, Mapping):
        return parse_script(source)
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScriptError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ScriptError(f"{path}: a script is a .toml or .json file")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ScriptError(f"{path}: not valid {path.suffix[1:].upper()} ({exc})") from exc
    return parse_script(data, source=str(path))


class ReplyError(Exception):
    """A request the script cannot answer; sent to the client as an HTTP 400 OpenAI-style error."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]
    delay_s: float
    summary: str  # one line for the server log


def error_body(message: str, status: int) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _texts(messages: list[dict[str, Any]], *roles: str) -> str:
    return "\n".join(_text(m.get("content")) for m in messages if m.get("role") in roles)


def _json_object(text: str) -> dict[str, Any] | None:
    """The JSON object in text, also when a prompt wraps it (e.g. in a data fence)."""
    for candidate in (text, text[text.find("{") : text.rfind("}") + 1]):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _tool_results(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Top-level fields of the tool results that are JSON objects, later ones winning: the script
    can use what the tools answered (an order's amount, a refund id) as a model would."""
    found: dict[str, Any] = {}
    for message in messages:
        if message.get("role") == "tool" and (result := _json_object(_text(message.get("content")))):
            found.update(result)
    return found


def _conversation(body: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """The request's messages and the names of the functions it offers, checked."""
    if not isinstance(body, dict):
        raise ReplyError("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ReplyError("'messages' must be a list of message objects")
    if not isinstance(body.get("model"), str):
        raise ReplyError("'model' must be a string")
    if body.get("stream"):
        raise ReplyError("the scripted model server does not stream; send stream=false")
    tools = body.get("tools") or []
    names: list[str] = []
    for tool in tools if isinstance(tools, list) else [None]:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ReplyError("'tools' must be a list of {type: function, function: {name, ...}} objects")
        names.append(function["name"])
    return messages, names


def fill(value: Any, context: Mapping[str, Any]) -> Any:
    """Strings with {placeholders} filled; a string that is one placeholder keeps the value's type."""
    if isinstance(value, dict):
        return {k: fill(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, context) for v in value]
    if not isinstance(value, str):
        return value

    def lookup(name: str) -> Any:
        if name not in context:
            known = ", ".join(sorted(context)) or "none"
            raise ReplyError(f"no value for placeholder {{{name}}} (known: {known})")
        return context[name]

    if whole := PLACEHOLDER.fullmatch(value):
        return lookup(whole[1])
    return PLACEHOLDER.sub(
        lambda m: v if isinstance(v := lookup(m[1]), str) else json.dumps(v, ensure_ascii=False), value
    )


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


class ScriptedModel:
    """Chooses the scripted reply to a Chat Completions request; knows nothing of HTTP."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self._attempts: Counter[tuple[str, int, str]] = Counter()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def set_script(self, script: Script) -> None:
        with self._lock:
            self.script = script
            self._attempts.clear()

    def reset(self) -> None:
        with self._lock:
            self._attempts.clear()

    def reply(self, body: Any) -> Reply:
        try:
            return self._reply(body)
        except ReplyError as exc:
            return Reply(400, error_body(str(exc), 400), 0.0, f"error 400: {exc}")

    def _reply(self, body: Any) -> Reply:
        messages, functions = _conversation(body)
        user_text = _texts(messages, "user")
        chosen = self.script.select(user_text, _texts(messages, "tool"))
        if chosen is None:
            names = ", ".join(s.name for s in self.script.scenario)
            raise ReplyError(
                f"no scenario matches the user messages and the script has no fallback ({names})"
            )
        scenario, groups = chosen
        captured = scenario.captured(_texts(messages, "system", "user"))
        context = {**scenario.vars, **captured, **groups, **_tool_results(messages)}

        def filled(value: Any, where: str) -> Any:
            try:
                return fill(value, context)
            except ReplyError as exc:
                raise ReplyError(f"scenario {scenario.name!r} {where}: {exc}") from None

        if CLASSIFY_FUNCTION in functions:
            if scenario.classify is None:
                raise ReplyError(f"scenario {scenario.name!r} has no 'classify' reply for a classification")
            arguments = json.dumps(filled(scenario.classify, "classify"), ensure_ascii=False)
            return self._answer(body, scenario, "classify", call=(CLASSIFY_FUNCTION, arguments))
        if not functions:
            if scenario.draft is None:
                raise ReplyError(
                    f"scenario {scenario.name!r} has no 'draft' reply for a request without tools"
                )
            return self._answer(body, scenario, "draft", content=filled(scenario.draft, "draft"))

        index = sum(1 for m in messages if m.get("role") == "assistant")
        where = f"turn {index + 1}"
        if index >= len(scenario.turn):
            return self._answer(body, scenario, where, content=SCRIPT_ENDED)
        turn = scenario.turn[index]
        # Retries resend the same conversation, so `times` counts attempts per conversation.
        conversation = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()
        with self._lock:
            self._attempts[scenario.name, index, conversation] += 1
            attempt = self._attempts[scenario.name, index, conversation]
        limited = turn.times is None or attempt <= turn.times
        delay_s = turn.delay_s if limited else 0.0
        if turn.status is not None and limited:
            message = f"scripted error {turn.status} (scenario {scenario.name!r} {where})"
            summary = f"{scenario.name} {where}: status {turn.status}"
            return Reply(turn.status, error_body(message, turn.status), delay_s, summary)
        call = None
        if turn.call is not None or turn.raw_args is not None:
            # Without `call`, malformed arguments go to the first tool the request offers.
            name = (turn.call or functions[0]).replace(".", "__")
            if turn.raw_args is not None:
                call = (name, turn.raw_args)
            else:
                call = (name, json.dumps(filled(turn.args or {}, where), ensure_ascii=False))
        content = filled(turn.content, where) if turn.content is not None else None
        if call is None and content is None:
            content = ""  # a turn of delay_s alone
        return self._answer(body, scenario, where, content=content, call=call, delay_s=delay_s)

    def _answer(
        self,
        body: dict[str, Any],
        scenario: Scenario,
        where: str,
        content: str | None = None,
        call: tuple[str, str] | None = None,
        delay_s: float = 0.0,
    ) -> Reply:
        what = f"{call[0]}({call[1]})" if call else f"content {json.dumps(content)[:80]}"
        completion = self._completion(body, scenario.name, where, content, call)
        return Reply(200, completion, delay_s, f"{scenario.name} {where}: {what}")

    def _completion(
        self,
        body: dict[str, Any],
        scenario: str,
        where: str,
        content: str | None,
        call: tuple[str, str] | None,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
        if call is not None:
            digest = hashlib.sha256(f"{scenario}\0{where}\0{call[0]}\0{call[1]}".encode()).hexdigest()
            message["tool_calls"] = [
                {
                    "id": f"call_{digest[:24]}",
                    "type": "function",
                    "function": {"name": call[0], "arguments": call[1]},
                }
            ]
        prompt = json.dumps({"messages": body["messages"], "tools": body.get("tools") or []}, sort_keys=True)
        completion = json.dumps(message, sort_keys=True)
        usage = {"prompt_tokens": _tokens(prompt), "completion_tokens": _tokens(completion)}
        with self._lock:
            number = next(self._ids)
        return {
            "id": f"chatcmpl-scripted-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "agentbus-scripted",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if call else "stop",
                }
            ],
            "usage": {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]},
        }


class RequestLog:
    """Every request body the server received, in memory and optionally appended to an NDJSON file."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._bodies: list[Any] = []
        self._lock = threading.Lock()

    def add(self, body: Any) -> None:
        with self._lock:
            self._bodies.append(body)
            if self.path is not None:
                with self.path.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(body, ensure_ascii=False) + "\n")

    def bodies(self) -> list[Any]:
        with self._lock:
            return list(self._bodies)

    def clear(self) -> int:
        with self._lock:
            count = len(self._bodies)
            self._bodies.clear()
            return count


async def _pause(request: Request, seconds: float, closing: threading.Event) -> None:
    """Sleep before answering, but stop early once the client gave up or the server is stopping, so
    a long scripted delay holds neither a connection nor shutdown."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        if closing.is_set() or await request.is_disconnected():
            return
        await asyncio.sleep(min(left, 0.05))


def create_app(
    model: ScriptedModel, requests: RequestLog, closing: threading.Event | None = None
) -> Starlette:
    closing = closing or threading.Event()

    async def chat_completions(request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            return JSONResponse(error_body(f"the request body is not JSON ({exc})", 400), status_code=400)
        requests.add(body)
        reply = model.reply(body)
        log.info("%s", reply.summary)
        if reply.delay_s:
            await _pause(request, reply.delay_s, closing)
        return JSONResponse(reply.body, status_code=reply.status)

    async def models(request: Request) -> JSONResponse:
        card = {"id": "scripted", "object": "model", "created": 0, "owned_by": "agentbus"}
        return JSONResponse({"object": "list", "data": [card]})

    async def recorded(request: Request) -> JSONResponse:
        if request.method == "DELETE":
            model.reset()
            return JSONResponse({"cleared": requests.clear()})
        return JSONResponse(requests.bodies())

    async def script(request: Request) -> JSONResponse:
        if request.method == "PUT":
            try:
                model.set_script(parse_script(json.loads(await request.body()), source="PUT /_script"))
            except (ValueError, ScriptError) as exc:
                return JSONResponse(error_body(str(exc), 400), status_code=400)
        return JSONResponse(model.script.model_dump(mode="json", exclude_defaults=True))

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/_requests", recorded, methods=["GET", "DELETE"]),
            Route("/_script", script, methods=["GET", "PUT"]),
        ]
    )


class ScriptedModelServer:
    """The scripted model server on a background thread, for tests (port 0 = any free port)."""

    def __init__(
        self,
        script: Script | Mapping[str, Any] | Path | str,
        host: str = "127.0.0.1",
        port: int = 0,
        log: Path | None = None,
    ) -> None:
        self.model = ScriptedModel(load_script(script))
        self.request_log = RequestLog(log)
        self.host = host
        self.port = port
        self._closing = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    @property
    def requests(self) -> list[Any]:
        return self.request_log.bodies()

    def clear_requests(self) -> None:
        self.request_log.clear()
        self.model.reset()

    def set_script(self, script: Script | Mapping[str, Any] | Path | str) -> None:
        self.model.set_script(load_script(script))

    def start(self, timeout: float = 10.0) -> Self:
        """Serve in a background thread; returns once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("the scripted model server is already started")
        # Binding here makes a busy port fail in the caller and tells port 0's choice up front.
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self.port = sock.getsockname()[1]
        self._closing.clear()
        config = uvicorn.Config(
            create_app(self.model, self.request_log, self._closing),
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="scripted-model-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the scripted model server did not start on {self.base_url}")
            time.sleep(0.01)
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._closing.set()
            self._server.should_exit = True
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()  # uvicorn closes it when it served; not when it failed to start
        self._server = self._thread = self._socket = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def command(
    script: Annotated[
        Path,
        typer.Option("--script", help=f"scenarios as TOML or JSON; the refund demo is {DEMO_SCRIPT}"),
    ],
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 8765,
    log_file: Annotated[
        Path | None, typer.Option("--log", help="append every request body to this file as NDJSON")
    ] = None,
) -> None:
    """Serve an OpenAI-compatible Chat Completions API on 127.0.0.1 that answers from a script."""
    try:
        server = ScriptedModelServer(script, port=port, log=log_file)
        server.start()
    except ScriptError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        typer.secho(f"error: cannot listen on 127.0.0.1:{port} ({exc.strerror or exc})", fg="red", err=True)
        raise typer.Exit(2) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    names = ", ".join(s.name for s in server.model.script.scenario)
    typer.echo(f"scripted model server: {server.base_url} (scenarios: {names}); Ctrl-C stops it")
    try:
        while server.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
