"""``bastion serve``: the hardened inference gateway over HTTP.

Serves the production version of each registered model (or of the models named with
``--models``), each checked out through the registry (digests and signature re-verified) and
loaded safely, behind every guard of :mod:`bastion.gateway`. It binds ``127.0.0.1`` by
default. A named model that has no production version or fails verification stops it before
it starts (exit 2, one line); without ``--models``, such models are left out with a warning.
SIGINT or SIGTERM stop it gracefully: requests in flight finish, then every audit record
accepted is written.
"""

from __future__ import annotations

import argparse
import ipaddress
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from bastion.cli.context import Context, add_format_option
from bastion.errors import BastionError, GatewayError

if TYPE_CHECKING:
    from bastion.gateway.models import ModelSet, Refusal

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="the hardened inference gateway (Open Inference Protocol v2 over HTTP)",
        description="Serve the production version of registered models behind the gateway's "
        "guards: API keys, rate limits, request limits, extraction detection, execution limits, "
        "output hardening and an audit record of every request. Exit 2: a requested model has "
        "no production version or fails verification, or the address cannot be bound.",
    )
    parser.add_argument(
        "--host", help="address to bind (default: gateway.host, 127.0.0.1: this machine only)"
    )
    parser.add_argument(
        "--port", type=_port, help="port to bind, 0 for any free one (default: gateway.port)"
    )
    parser.add_argument(
        "--models",
        metavar="M1,M2",
        help="serve only these models (default: every model with a production version)",
    )
    add_format_option(parser)
    parser.set_defaults(handler=_serve)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port number (0 to 65535)")
    return value


def _names(text: str | None) -> list[str] | None:
    from bastion.core.principals import check_model_name

    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise BastionError("--models names no model")
    return [check_model_name(name) for name in names]


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


def _serve(ctx: Context) -> int:
    from bastion.core.principals import KeyStore
    from bastion.gateway.app import create_app
    from bastion.gateway.models import Refusal, load_production_models
    from bastion.gateway.server import GatewayServer
    from bastion.registry import Registry

    args = ctx.args
    workspace = ctx.workspace()
    settings = workspace.settings.gateway
    host = args.host if args.host is not None else settings.host
    port = args.port if args.port is not None else settings.port
    names = _names(args.models)
    audit = workspace.audit()
    models, refusals = load_production_models(Registry(workspace), names, audit=audit)
    if names is not None and refusals:
        first = refusals[0]
        raise GatewayError(f"cannot serve model {first.name}: {_one_line(first.reason)}")
    for refusal in refusals:
        ctx.warn(f"not serving model {refusal.name}: {_one_line(refusal.reason)}")
    if not models:
        raise GatewayError(
            "no model to serve: promote a version to production first "
            "('bastion registry promote NAME VERSION --to production')"
        )
    if not _is_loopback(host):
        ctx.warn(f"listening on {host}: clients from other machines can reach the gateway")
    app = create_app(
        settings,
        KeyStore(workspace.database, None).snapshot,
        models,
        audit,
        redis_url=workspace.settings.redis_url,
    )

    def listening(bound_host: str, bound_port: int) -> None:
        # After the gateway's startup: a model whose probe failed there is refused too.
        refused = refusals + [Refusal(n, None, reason) for n, reason in app.refused.items()]
        url = f"http://{_url_host(bound_host)}:{bound_port}"
        payload = _payload(url, bound_host, bound_port, app.models, refused)
        ctx.emit(payload, lambda console: _render(console, payload))
        ctx.stdout.flush()

    server = GatewayServer(
        app,
        host,
        port,
        on_listening=listening,
        graceful_seconds=settings.timeout_seconds + 5.0,
    )
    server.run()
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _payload(
    url: str, host: str, port: int, models: ModelSet, refusals: list[Refusal]
) -> dict[str, Any]:
    return {
        "url": url,
        "host": host,
        "port": port,
        "models": [
            {"name": e.name, "version": e.version, "digest": e.digest, "platform": e.model.platform}
            for e in models.values()
        ],
        "refused": [
            {"name": r.name, "version": r.version, "reason": _one_line(r.reason)} for r in refusals
        ],
    }


def _render(console: Console, payload: dict[str, Any]) -> None:
    served = ", ".join(f"{m['name']} v{m['version']}" for m in payload["models"])
    console.print(f"bastion serve: {escape(served)} on {payload['url']} (Ctrl-C to stop)")
    console.print(
        f"  infer:   POST {payload['url']}/v2/models/NAME/infer "
        "(Authorization: Bearer <key> or X-API-Key)"
    )
    console.print(
        f"  health:  {payload['url']}/v2/health/ready   metrics: {payload['url']}/metrics"
    )
