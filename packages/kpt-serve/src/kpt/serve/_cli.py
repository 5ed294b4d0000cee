"""kpt-serve: serve | fleet | router | bench | simulate | quality (and `worker`, started by
the fleet itself)."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from kpt.serve._config import QUANTIZATIONS
from kpt.serve._version import __version__

_HOST = "127.0.0.1"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kpt-serve", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="one worker behind the OpenAI-compatible API")
    serve.add_argument("model_dir", help="a Hugging Face model folder (config.json + safetensors)")
    serve.add_argument("--device", default="cpu", help="cpu, kpt_sim:0, cuda:1, ... (default cpu)")
    _http_args(serve)
    _engine_args(serve)

    fleet = commands.add_parser("fleet", help="API + router + one worker process per device")
    fleet.add_argument("model_dir", help="a Hugging Face model folder (config.json + safetensors)")
    fleet.add_argument(
        "--workers",
        default="cpu",
        help="comma-separated devices, one worker each: cpu,kpt_sim:0; a kpt_sim worker may "
        "name its chip profile: kpt_sim:0@h100-sxm,kpt_sim:0@mi300x",
    )
    fleet.add_argument(
        "--step-clock",
        default="wall",
        choices=["wall", "device"],
        help="route by step times on this host (wall, default) or on the engines' clocks "
        "(device: simulated time on kpt_sim, a virtual-time fleet)",
    )
    _policy_arg(fleet)
    fleet.add_argument(
        "--autoscale-max",
        type=int,
        default=None,
        help="autoscale between the listed workers and this many (default: no autoscaling)",
    )
    _launcher_args(fleet, default="local")
    _network_args(fleet)
    _http_args(fleet)
    _engine_args(fleet)

    router = commands.add_parser("router", help="API + router + the workers of a fleet.toml")
    router.add_argument("--config", required=True, help="fleet.toml (see docs/serve-fleet.md)")
    _launcher_args(router, default=None)
    _network_args(router)
    _http_args(router)

    bench = commands.add_parser("bench", help="load test an OpenAI-compatible server")
    bench.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000")
    bench.add_argument("--model", default=None, help="model to ask for (default: the first served)")
    bench.add_argument(
        "--max-concurrency", type=int, default=None, help="requests in flight at most (no limit)"
    )
    _load_args(bench, "seconds")

    simulate = commands.add_parser(
        "simulate",
        help="a bench scenario on a fleet of simulated chips, in virtual time (router + workers)",
    )
    simulate.add_argument("model_dir", help="a Hugging Face model folder (config.json + ...)")
    simulate.add_argument(
        "--workers",
        default="kpt_sim:0@h100-sxm,kpt_sim:0@mi300x",
        help="comma-separated kpt_sim workers with their chip profiles "
        "(default kpt_sim:0@h100-sxm,kpt_sim:0@mi300x)",
    )
    _policy_arg(simulate)
    simulate.add_argument(
        "--timing-only",
        action="store_true",
        help="the chips compute no values (KPT_SIM_NUMERICS=0): models far larger than this "
        "host's memory, tokens meaningless",
    )
    simulate.add_argument(
        "--ready-timeout", type=float, default=300.0, help="seconds to wait for workers to load"
    )
    _load_args(simulate, "virtual seconds")
    _engine_args(simulate)

    quality = commands.add_parser(
        "quality", help="variants' next-token accuracy against a reference (kpt.abtest)"
    )
    quality.add_argument("model_dir", help="a Hugging Face model folder")
    quality.add_argument(
        "--variants",
        default="float32,bfloat16",
        help="forms to compare: dtypes, quantizations or both (float32,bfloat16,bfloat16/int8)",
    )
    quality.add_argument("--reference", default="float32", help="the variant measured against")
    quality.add_argument("--device", default="cpu", help="cpu, kpt_sim:0, cuda:0, ... (cpu)")
    quality.add_argument("--num-sequences", type=int, default=24, help="held-out sequences (24)")
    quality.add_argument("--length", type=int, default=40, help="tokens per sequence (40)")
    quality.add_argument("--margin", type=float, default=0.02, help="non-inferiority margin")
    quality.add_argument("--json", default=None, help="also write the report to this file")

    # Started by the fleet itself (a launcher), not by hand: left out of the command list.
    worker = commands.add_parser("worker")
    worker.add_argument("model_dir", help="a Hugging Face model folder")
    worker.add_argument("--device", default="cpu", help="the worker's device (default cpu)")
    worker.add_argument("--router", required=True, help="the router's inbox endpoint")
    worker.add_argument("--worker-id", required=True, help="the id the router knows it by")
    worker.add_argument("--model-name", required=True, help="the model name clients ask for")
    worker.add_argument("--variant", default="default", help="the variant it serves")
    worker.add_argument("--heartbeat-s", type=float, default=None, help="seconds between stats")
    _network_args(worker)  # the fleet's key pair comes in its environment (FleetKeys.from_env)
    worker.add_argument(
        "--also-model", action="append", default=[], help="NAME=DIR: another model it may serve"
    )
    worker.add_argument(
        "--memory-budget-mb", type=float, default=None, help="weights + KV pools of its models"
    )
    worker.add_argument(
        "--step-clock",
        default="wall",
        choices=["wall", "device", "virtual"],
        help="what step times use",
    )
    _engine_args(worker)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    return {
        "serve": _serve,
        "fleet": _fleet,
        "router": _router,
        "bench": _bench,
        "simulate": _simulate,
        "quality": _quality,
        "worker": _worker,
    }[args.command](args)


def _http_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=_HOST, help="default 127.0.0.1 (loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="8000; 0 picks a free port")
    parser.add_argument(
        "--model-name", default=None, help="the name clients ask for (default: the folder's)"
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=300.0, help="seconds to wait for workers to load"
    )


def _launcher_args(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument(
        "--launcher",
        default=default,
        choices=["local", "ray"],
        help="start workers as child processes (local) or as Ray actors placed by their "
        "devices (ray: the `ray` extra)" + ("" if default else "; default: the config's"),
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        help="the Ray cluster to join, e.g. auto (default: RAY_ADDRESS, else a new local Ray)",
    )


def _policy_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--policy", default="predicted", help="routing: predicted (default), p2c, round_robin"
    )


def _load_args(parser: argparse.ArgumentParser, seconds: str) -> None:
    """The scenario: what `bench` sends and `simulate` sends in virtual time."""
    parser.add_argument(
        "--dataset", default="random", help='random, or a JSONL file of {"prompt", "max_tokens"}'
    )
    parser.add_argument(
        "--request-rate",
        type=float,
        default=float("inf"),
        help="requests/s with Poisson arrivals; inf (default) sends all at once (Offline)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help=f"{seconds} of arrivals, cycling the prompts (default: --num-prompts requests)",
    )
    parser.add_argument("--num-prompts", type=int, default=100, help="requests to send (100)")
    parser.add_argument("--input-len", type=int, default=32, help="random prompts' tokens (32)")
    parser.add_argument("--output-len", type=int, default=32, help="tokens to generate (32)")
    parser.add_argument("--slo-ttft-ms", type=float, default=None, help="goodput's TTFT target")
    parser.add_argument("--slo-tpot-ms", type=float, default=None, help="goodput's TPOT target")
    parser.add_argument("--seed", type=int, default=0, help="seed of prompts and arrivals (0)")
    parser.add_argument(
        "--gate-ttft-p99-ms",
        type=float,
        default=None,
        help="MLPerf-style gate: exit 1 unless TTFT p99 is at most this (and nothing failed)",
    )
    parser.add_argument(
        "--gate-tpot-p99-ms", type=float, default=None, help="the same gate on TPOT p99"
    )
    parser.add_argument("--json", default=None, help="also write the results to this file")


def _engine_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dtype", default=None, help="float32, bfloat16, ... (default: the checkpoint's)"
    )
    parser.add_argument(
        "--num-kv-blocks", type=int, default=None, help="KV blocks (default: from free memory)"
    )
    parser.add_argument(
        "--max-num-seqs", type=int, default=None, help="requests in a batch at most (256)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per worker")
    parser.add_argument(
        "--quantization",
        default=None,
        choices=list(QUANTIZATIONS),
        help="int8: int8 weight-only; fp8: float8 weights and activations (where offered)",
    )
    parser.add_argument(
        "--load-format",
        default=None,
        choices=["safetensors", "dummy"],
        help="dummy: random weights of the config's shapes, no checkpoint read (timing runs)",
    )


def _specs(args, devices: list[str]):
    from kpt.serve.fleet import WorkerSpec

    name = getattr(args, "model_name", None) or Path(args.model_dir).resolve().name
    specs = []
    for entry in devices:
        device, _, profile = entry.strip().partition("@")
        if not device:
            continue
        specs.append(
            WorkerSpec(
                model=name,
                model_dir=str(Path(args.model_dir).resolve()),
                device=device,
                dtype=args.dtype,
                quantization=args.quantization,
                num_kv_blocks=args.num_kv_blocks,
                max_num_seqs=args.max_num_seqs,
                threads=args.threads,
                profile=profile or None,
                step_clock=getattr(args, "step_clock", "wall"),
                load_format=args.load_format,
            )
        )
    return specs


def _launcher(name: str, address: str | None, placement_timeout_s: float | None = None):
    """The Fleet's launcher factory for `--launcher NAME`."""
    from kpt.serve.fleet import LocalLauncher

    if name == "local":
        return LocalLauncher
    try:
        from kpt.serve.fleet import RayLauncher
    except ImportError as exc:  # Ray is the optional `ray` extra: the message names it
        raise SystemExit(f"kpt-serve: {exc}") from None

    options = {"address": address}
    if placement_timeout_s is not None:
        options["placement_timeout_s"] = placement_timeout_s
    return functools.partial(RayLauncher, **options)


def _network_args(parser) -> None:
    parser.add_argument(
        "--bind-host",
        default=None,
        help="where the router and workers listen (default loopback); 0.0.0.0 or an address "
        "for workers on other hosts: the fleet then makes a CURVE key pair and admits only "
        "its own processes",
    )
    parser.add_argument(
        "--advertise-host",
        default=None,
        help="the name other hosts reach a wildcard bind by (default: this host's name)",
    )


def _network(args, config=None):
    """A FleetNetwork for a bind beyond loopback (the flag, else fleet.toml's), else None."""
    from kpt.serve.fleet._network import FleetNetwork

    bind_host = args.bind_host or (config.bind_host if config else None)
    if bind_host is None or FleetNetwork(bind_host).is_loopback:
        return None
    advertise_host = args.advertise_host or (config.advertise_host if config else None)
    return FleetNetwork.on(bind_host, advertise_host)


def _serve(args) -> int:
    return _run_fleet(args, _specs(args, [args.device]), "predicted", None)


def _fleet(args) -> int:
    from kpt.serve.fleet import ScalingPolicy

    specs = _specs(args, args.workers.split(","))
    scaling = None
    if args.autoscale_max is not None:
        scaling = ScalingPolicy(min_workers=len(specs), max_workers=args.autoscale_max)
    launcher = _launcher(args.launcher, args.ray_address)
    return _run_fleet(args, specs, args.policy, scaling, launcher=launcher, network=_network(args))


def _router(args) -> int:
    from kpt.serve.fleet import load_fleet_config

    config = load_fleet_config(args.config)
    launcher = _launcher(
        args.launcher or config.launcher,
        args.ray_address or config.ray_address,
        config.ray_placement_timeout_s,
    )
    return _run_fleet(
        args,
        config.workers,
        config.policy,
        config.autoscale,
        config.autoscale_spec,
        config.heartbeat_s,
        launcher=launcher,
        network=_network(args, config),
    )


def _run_fleet(
    args, specs, policy, scaling, scale_spec=None, heartbeat_s=None, launcher=None, network=None
) -> int:
    from kpt.serve.fleet import Fleet, WorkerStartError
    from kpt.serve.fleet._api import FleetApi, serve_http

    options = {} if heartbeat_s is None else {"heartbeat_s": heartbeat_s}
    if launcher is not None:
        options["launcher"] = launcher
    if network is not None:
        options["network"] = network
    fleet = Fleet(specs, policy=policy, autoscale=scaling, autoscale_spec=scale_spec, **options)
    # Until uvicorn installs its own handlers, SIGTERM must still run the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        try:
            fleet.start()  # a Ray launcher places each worker here, or says why it cannot
            fleet.wait_ready(timeout=args.ready_timeout)
        except (WorkerStartError, TimeoutError) as exc:
            print(f"kpt-serve: {exc}", file=sys.stderr)
            return 1
        api = FleetApi(fleet.router, fleet.metrics, fleet.model_dirs)

        def listening(url: str) -> None:
            print(f"kpt-serve: listening on {url}", flush=True)

        serve_http(api.app, args.host, args.port, listening)
    finally:
        fleet.close()
    return 0


def _bench(args) -> int:
    from kpt.serve.fleet._bench import run_bench

    config = _bench_config(args, url=args.url, model=args.model)
    return _report(run_bench(config), args.json)


def _simulate(args) -> int:
    from kpt.serve.fleet import Fleet, WorkerStartError
    from kpt.serve.fleet._virtual_bench import run_virtual

    timing_only = {"KPT_SIM_NUMERICS": "0"} if args.timing_only else {}
    specs = [
        dataclasses.replace(spec, step_clock="virtual", env={**spec.env, **timing_only})
        for spec in _specs(args, args.workers.split(","))
    ]
    if not specs or any(not spec.device.startswith("kpt_sim") for spec in specs):
        print("kpt-serve simulate: --workers must all be kpt_sim devices", file=sys.stderr)
        return 2
    with Fleet(specs, policy=args.policy) as fleet:
        try:
            fleet.wait_ready(timeout=args.ready_timeout)
        except (WorkerStartError, TimeoutError) as exc:
            print(f"kpt-serve: {exc}", file=sys.stderr)
            return 1
        config = _bench_config(args, url="", model=specs[0].model, max_concurrency=None)
        result = run_virtual(fleet.router, config)
    print(f"{'Wall time (s):':<34}{result['wall_s']:.1f}  (the times below are virtual)")
    return _report(result, args.json)


def _bench_config(args, **fields):
    from kpt.serve.fleet._bench import BenchConfig

    return BenchConfig(
        dataset=args.dataset, request_rate=args.request_rate, duration_s=args.duration,
        num_prompts=args.num_prompts, input_len=args.input_len, output_len=args.output_len,
        slo_ttft_ms=args.slo_ttft_ms, slo_tpot_ms=args.slo_tpot_ms, seed=args.seed,
        gate_ttft_p99_ms=args.gate_ttft_p99_ms, gate_tpot_p99_ms=args.gate_tpot_p99_ms,
        max_concurrency=fields.pop("max_concurrency", args.__dict__.get("max_concurrency")),
        **fields,
    )  # fmt: skip


def _report(result, json_path) -> int:
    from kpt.serve.fleet._bench import format_report

    print(format_report(result))
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2))
    return 0 if result["completed"] and result["valid"] else 1


def _quality(args) -> int:
    if args.device != "cpu":
        import kpt.hal as hal

        hal.devices()  # loads the adapters' plugins, so that torch knows "kpt_sim", ...
    from kpt.serve.fleet.quality import format_quality, variant_quality

    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    report = variant_quality(
        args.model_dir, {name: name for name in names}, reference=args.reference,
        device=args.device, num_sequences=args.num_sequences, length=args.length,
        margin=args.margin,
    )  # fmt: skip
    print(format_quality(report, args.reference))
    if args.json:
        Path(args.json).write_text(
            json.dumps({k: v.to_dict() for k, v in report.items()}, indent=2, default=str)
        )
    return 0


def _worker(args) -> int:
    _exit_with_parent()
    import torch

    from kpt.serve import Engine, EngineConfig
    from kpt.serve.fleet import ModelSet, Worker
    from kpt.serve.fleet._messages import HEARTBEAT_S
    from kpt.serve.fleet._network import FleetKeys, FleetNetwork

    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.device.startswith("cpu"):
        import kpt.hal as hal

        hal.devices()  # loads the adapters' plugins, so that torch knows "kpt_sim", ...
    catalog = {args.model_name: args.model_dir}
    for entry in args.also_model:
        name, _, folder = entry.partition("=")
        if not name or not folder:
            print(f"kpt-serve worker: --also-model {entry!r}: use NAME=DIR", file=sys.stderr)
            return 2
        catalog[name] = folder
    dtype = getattr(torch, args.dtype) if args.dtype else None
    budget = None if args.memory_budget_mb is None else int(args.memory_budget_mb * 2**20)
    models = ModelSet(
        catalog, lambda name, folder: Engine(folder, args.device, config),
        budget_bytes=budget, dtype=dtype or torch.float32, num_kv_blocks=args.num_kv_blocks,
        quantization=args.quantization,
    )  # fmt: skip
    fields = {
        "num_kv_blocks": models.kv_blocks or args.num_kv_blocks,
        "max_num_seqs": args.max_num_seqs,
        "dtype": dtype,
        "load_format": args.load_format,
        "quantization": args.quantization,
    }
    config = EngineConfig(**{k: v for k, v in fields.items() if v is not None})
    worker = Worker(
        models, worker_id=args.worker_id, router_endpoint=args.router, variant=args.variant,
        heartbeat_s=args.heartbeat_s or HEARTBEAT_S, step_clock=args.step_clock,
        endpoint=FleetNetwork(args.bind_host or "127.0.0.1").endpoint(), keys=FleetKeys.from_env(),
        advertise_host=args.advertise_host,
    )  # fmt: skip
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    worker.start()
    try:
        worker.wait()
    finally:
        worker.close()
    return 0


def _exit_with_parent() -> None:
    """A worker must not outlive the fleet that started it, even one killed with SIGKILL."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(3)
            time.sleep(0.5)

    threading.Thread(target=watch, name="kpt-serve-parent-watch", daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
