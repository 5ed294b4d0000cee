"""The OpenAI-compatible HTTP API (Starlette on uvicorn) in front of a Router.

The router calls back on its own threads; each HTTP request bridges those callbacks into an
asyncio queue. A client that goes away mid-stream has its request aborted on its worker.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from kpt.serve.fleet._chat import ChatTemplate
from kpt.serve.fleet._metrics import CONTENT_TYPE, FleetMetrics
from kpt.serve.fleet._openai import (
    BadRequest,
    Options,
    completion_choice,
    envelope,
    error_body,
    parse_options,
    parse_prompts,
    usage,
)
from kpt.serve.fleet._requests import Delta, FleetRequest
from kpt.serve.fleet._router import NoWorkerError, Router


class _Failed(Exception):
    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse(error_body(message, kind, status), status_code=status)


class FleetApi:
    """The routes; `app` is the ASGI application."""

    def __init__(
        self, router: Router, metrics: FleetMetrics, model_dirs: dict[str, str | Path]
    ) -> None:
        self.router = router
        self.metrics = metrics
        self.templates = {name: ChatTemplate.from_folder(path) for name, path in model_dirs.items()}
        self.app = Starlette(
            routes=[
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
                Route("/v1/models", self.list_models, methods=["GET"]),
                Route("/v1/fleet", self.fleet, methods=["GET"]),
                Route("/health", self.health, methods=["GET"]),
                Route("/metrics", self.prometheus, methods=["GET"]),
            ]
        )

    # --- routes --------------------------------------------------------------------------

    async def completions(self, http: Request) -> Response:
        try:
            body = await _json_body(http)
            options = parse_options(body)
            if "prompt" not in body:
                raise BadRequest("prompt is missing: give text or a list of token ids")
            prompts = parse_prompts(body["prompt"])
            model = self._model(options)
        except BadRequest as exc:
            return _error(400, str(exc), "invalid_request_error")
        except _Failed as exc:
            return _error(exc.status, exc.message, exc.kind)
        return await self._respond(model, prompts, options, chat=False)

    async def chat_completions(self, http: Request) -> Response:
        try:
            body = await _json_body(http)
            options = parse_options(body)
            model = self._model(options)
            template = self.templates.get(model.partition(":")[0])
            if template is None:
                raise BadRequest(
                    f"model {model!r} has no chat template (tokenizer_config.json chat_template); "
                    "use /v1/completions"
                )
            messages = body.get("messages")
            prompt = template.render(messages if isinstance(messages, list) else [])
        except (BadRequest, ValueError) as exc:
            return _error(400, str(exc), "invalid_request_error")
        except _Failed as exc:
            return _error(exc.status, exc.message, exc.kind)
        return await self._respond(model, [prompt], options, chat=True)

    async def list_models(self, http: Request) -> Response:
        data = []
        for name, info in sorted(self.router.models().items()):
            entry = {"id": name, "object": "model", "owned_by": "kpt", **info}
            entry["chat"] = self.templates.get(name) is not None
            data.append(entry)
        return JSONResponse({"object": "list", "data": data})

    async def fleet(self, http: Request) -> Response:
        workers = [w.describe() for w in self.router.workers()]
        return JSONResponse(
            {
                "policy": self.router.policy.name,
                "workers": sorted(workers, key=lambda w: w["id"]),
                "queue_depth": self.router.queue_depth(),
                "failovers": self.router.num_failovers,
            }
        )

    async def health(self, http: Request) -> Response:
        models = self.router.models()
        missing = sorted(set(self.templates) - set(models))
        if missing or not models:
            return JSONResponse({"status": "unavailable", "models_without_workers": missing}, 503)
        return JSONResponse({"status": "ok", "workers": len(self.router.workers())})

    async def prometheus(self, http: Request) -> Response:
        return Response(self.metrics.render(self.router.queue_depth()), media_type=CONTENT_TYPE)

    # --- helpers -------------------------------------------------------------------------

    def _model(self, options: Options) -> str:
        if options.model:
            return options.model
        served = sorted(self.templates) or sorted(self.router.models())
        if len(served) == 1:
            return served[0]
        raise BadRequest(f"model is missing; this fleet serves {', '.join(served)}")

    async def _respond(self, model: str, prompts: list, options: Options, chat: bool) -> Response:
        kind = "chat.completion" if chat else "text_completion"
        info = self.router.models().get(model.partition(":")[0], {})
        with_ids = options.return_token_ids or not info.get("has_tokenizer", False)
        if options.stream:
            if len(prompts) != 1:
                return _error(400, "stream takes one prompt per request", "invalid_request_error")
            try:
                request, deltas = self._submit(model, prompts[0], options)
            except _Failed as exc:
                return _error(exc.status, exc.message, exc.kind)
            events = self._sse(request, deltas, model, kind, with_ids, options, chat)
            return StreamingResponse(events, media_type="text/event-stream")
        runs: list[tuple[FleetRequest, AsyncIterator[Delta]]] = []
        try:
            for prompt in prompts:
                runs.append(self._submit(model, prompt, options))
            await asyncio.gather(*(_drain(request, deltas) for request, deltas in runs))
        except _Failed as exc:
            for request, _ in runs:
                self.router.abort(request)
            return _error(exc.status, exc.message, exc.kind)
        requests = [request for request, _ in runs]
        body = envelope(kind, requests[0].request_id, model)
        body["choices"] = [completion_choice(i, r, with_ids, chat) for i, r in enumerate(requests)]
        body["usage"] = usage(requests)
        # Where each choice ran, with its TTFT/TPOT on that worker's clock (simulated time
        # on a simulated chip); "workers" kept as before: the workers each choice tried.
        body["kpt"] = {
            "workers": [r.workers_tried for r in requests],
            "choices": [r.served_by() for r in requests],
        }
        return JSONResponse(body)

    def _submit(
        self, model: str, prompt, options: Options
    ) -> tuple[FleetRequest, AsyncIterator[Delta]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Delta] = asyncio.Queue()
        try:
            request = self.router.submit(
                model,
                prompt,
                options.params,
                lambda delta: loop.call_soon_threadsafe(queue.put_nowait, delta),
                priority=options.priority,
                slo=options.slo,
            )
        except NoWorkerError as exc:
            raise _Failed(404, str(exc), "not_found_error") from None
        return request, _deltas(self.router, request, queue)

    async def _sse(
        self, request, deltas, model, kind, with_ids, options, chat
    ) -> AsyncIterator[str]:
        try:
            async for event in self._events(request, deltas, model, kind, with_ids, options, chat):
                yield event
        finally:  # the client left: close the deltas now, which aborts the request's work
            await deltas.aclose()

    async def _events(self, request, deltas, model, kind, with_ids, options, chat):
        chunk_kind = "chat.completion.chunk" if chat else kind
        first = True
        async for delta in deltas:
            if delta.error is not None:
                yield _event({"error": {"message": delta.error, "type": delta.error_code}})
                break
            choice: dict[str, Any] = {
                "index": 0,
                "finish_reason": delta.finish_reason if delta.finished else None,
            }
            if chat:
                choice["delta"] = {
                    "content": delta.text,
                    **({"role": "assistant"} if first else {}),
                }
            else:
                choice["text"] = delta.text
            if with_ids:
                choice["token_ids"] = delta.new_token_ids
            first = False
            chunk = {**envelope(chunk_kind, request.request_id, model), "choices": [choice]}
            if delta.finished:
                chunk["kpt"] = request.served_by()
            yield _event(chunk)
        if options.include_usage and request.error is None:
            yield _event(
                {
                    **envelope(chunk_kind, request.request_id, model),
                    "choices": [],
                    "usage": usage([request]),
                }
            )
        yield "data: [DONE]\n\n"


async def _deltas(
    router: Router, request: FleetRequest, queue: asyncio.Queue
) -> AsyncIterator[Delta]:
    try:
        while True:
            delta = await queue.get()
            yield delta
            if delta.finished:
                return
    finally:  # the client left (or the stream ended): free the worker's seat
        if not request.finished:
            router.abort(request)


async def _drain(request: FleetRequest, deltas: AsyncIterator[Delta]) -> None:
    async for delta in deltas:
        if delta.error is not None:
            status = 400 if delta.error_code == "invalid_request" else 503
            kind = "invalid_request_error" if status == 400 else "service_unavailable"
            raise _Failed(status, delta.error, kind)


async def _json_body(http: Request) -> dict[str, Any]:
    raw = await http.body()
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, got {type(body).__name__}")
    return body


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def serve_http(
    app: Any, host: str, port: int, on_listening: Callable[[str], None] | None = None
) -> None:
    """Run uvicorn until SIGINT/SIGTERM; binds first so that port 0 can report the real one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    bound = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    if on_listening is not None:
        on_listening(f"http://{host}:{bound}")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


class BackgroundHttp:
    """uvicorn on a thread of this process (benchmarks, notebooks): `.url`, then `close()`."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((host, port))
        self._sock.listen(2048)
        self.url = f"http://{host}:{self._sock.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            time.sleep(0.01)

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()
