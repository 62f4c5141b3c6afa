"""``bastion registry add | list | show | approve | promote | pull | allow-pickle``.

Commands that change the registry (add, approve, promote, allow-pickle) act as the principal of
``BASTION_API_KEY``, which must hold the permission the step needs (``model.register``,
``model.approve``, ``model.promote.staging``/``model.promote.production``/``model.archive``);
read-only ones (list, show, pull) work for the local operator without a key, or with a key
holding ``model.read``/``model.pull`` (a key limited to some models sees only those).

Exit codes: 0 done; 1 a verification failed (an unsafe file, a missing or bad signature, a
tampered store); 2 could not run (bad arguments, a refused principal, an unknown model).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from rich.console import Console

from bastion.cli.context import Context, add_format_option
from bastion.core.principals import Permission, Principal, check_model_name
from bastion.errors import BastionError, RegistryError, VerificationError

__all__ = ["register"]

_UNPRINTABLE_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_STAGES = ("staging", "production", "archived")
_PROMOTE_PERMISSION = {
    "staging": Permission.MODEL_PROMOTE_STAGING,
    "production": Permission.MODEL_PROMOTE_PRODUCTION,
    "archived": Permission.MODEL_ARCHIVE,
}


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "registry",
        help="model registry: add, list, show, approve, promote, pull",
        description="The model registry: versions that passed the scan and their signature, "
        "their stages (registered, staging, production, archived) and approvals. Changes act "
        "as the principal of BASTION_API_KEY.",
    )
    commands = parser.add_subparsers(dest="registry_command", metavar="SUBCOMMAND")
    commands.required = True

    add = commands.add_parser(
        "add",
        help="register a scanned, signed model as a new version",
        description="Register a model file or folder as a new version of NAME: it must pass "
        "'bastion scan' and verify against its signature (PATH.sig by default, as 'bastion "
        "sign' writes it); its files are then kept in the workspace's content-addressed store. "
        "Needs model.register.",
    )
    add.add_argument("name", metavar="NAME", help="model name")
    add.add_argument("path", type=Path, metavar="PATH", help="model file or folder")
    add.add_argument("--version", dest="model_version", metavar="V", help="default: next number")
    add.add_argument("--bundle", type=Path, metavar="SIG", help="signature (default: PATH.sig)")
    add.add_argument(
        "--key", type=Path, metavar="PUB", help="public key (default: the workspace key)"
    )
    add.add_argument(
        "--allow-pickle",
        action="store_true",
        help="also opt the model in to pickle-based loading (needs model.approve too)",
    )
    add_format_option(add)
    add.set_defaults(handler=run_add)

    lister = commands.add_parser(
        "list", help="list versions", description="List model versions, by model."
    )
    lister.add_argument("name", nargs="?", metavar="NAME", help="only this model")
    add_format_option(lister)
    lister.set_defaults(handler=run_list)

    show = commands.add_parser(
        "show",
        help="show one version with its files and approvals",
        description="Show one version ('latest': the last registered).",
    )
    show.add_argument("name", metavar="NAME")
    show.add_argument("version", metavar="VERSION")
    add_format_option(show)
    show.set_defaults(handler=run_show)

    approve = commands.add_parser(
        "approve",
        help="approve a version for production",
        description="Approve a version for production. Needs model.approve; the principal "
        "who registered the version cannot approve it.",
    )
    approve.add_argument("name", metavar="NAME")
    approve.add_argument("version", metavar="VERSION")
    approve.add_argument("--comment", default="", metavar="TEXT", help="why")
    add_format_option(approve)
    approve.set_defaults(handler=run_approve)

    promote = commands.add_parser(
        "promote",
        help="move a version to staging, production or archived",
        description="Move a version: registered -> staging (model.promote.staging) -> "
        "production (model.promote.production and an approval by someone other than the "
        "registrant; the previous production version is archived) -> archived "
        "(model.archive).",
    )
    promote.add_argument("name", metavar="NAME")
    promote.add_argument("version", metavar="VERSION")
    promote.add_argument("--to", required=True, choices=_STAGES, help="the new stage")
    add_format_option(promote)
    promote.set_defaults(handler=run_promote)

    pull = commands.add_parser(
        "pull",
        help="write a version's files, verified, with their signature",
        description="Write a version's files into DIR (a folder named after the model, or "
        "the single model file) with its signature beside it, after re-hashing every stored "
        "file and re-verifying the signature. Nothing is written if anything fails.",
    )
    pull.add_argument("name", metavar="NAME")
    pull.add_argument("version", metavar="VERSION")
    pull.add_argument("--out", type=Path, default=Path(), metavar="DIR", help="default: here")
    add_format_option(pull)
    pull.set_defaults(handler=run_pull)

    pickle = commands.add_parser(
        "allow-pickle",
        help="opt a model in to (or out of) pickle-based loading",
        description="Let the pickle-based versions of a model load for serving (still only "
        "after the scan, the signature and through the restricted unpickler). Needs "
        "model.approve. Audited.",
    )
    pickle.add_argument("name", metavar="NAME")
    pickle.add_argument("--off", action="store_true", help="withdraw the opt-in")
    add_format_option(pickle)
    pickle.set_defaults(handler=run_allow_pickle)


# -- helpers ---------------------------------------------------------------------------------


def _registry(ctx: Context) -> Any:
    from bastion.registry import Registry

    return Registry(ctx.workspace())


def _name(text: str) -> str:
    try:
        return check_model_name(text)
    except BastionError as exc:
        raise RegistryError(str(exc)) from exc


def _reader(ctx: Context, permission: Permission, name: str | None) -> Principal | None:
    """The key's principal for a read, or None for the local operator (no key set)."""
    if ctx.environ.get("BASTION_API_KEY"):
        return ctx.principal(permission, name)
    return None


def _print(console: Console, line: str) -> None:
    # Escaped, never raw: a value planted in the database must not drive the terminal.
    line = _UNPRINTABLE_RE.sub(lambda m: m.group().encode("unicode_escape").decode(), line)
    console.print(line, markup=False, highlight=False)


def _render_version(console: Console, version: Any, *, files: bool = True) -> None:
    data = version.to_dict()
    _print(
        console,
        f"{data['name']} {data['version']}  [{data['stage']}]  {data['format']}  {data['digest']}",
    )
    _print(console, f"  registered  {data['registered_at']} by {data['registered_by']}")
    _print(console, f"  signed by   key {data['signer_key_id'][:16]}")
    _print(console, f"  stage       since {data['stage_changed_at']} by {data['stage_changed_by']}")
    if data["allow_pickle"]:
        _print(console, "  pickle      allowed (per-model opt-in)")
    for approval in data["approvals"]:
        comment = f": {approval['comment']}" if approval["comment"] else ""
        _print(
            console,
            f"  approved    {approval['approved_at']} by {approval['approver']}{comment}",
        )
    if files:
        for item in data["files"]:
            _print(console, f"  file        {item['path']} ({item['size']} bytes) {item['digest']}")


# -- commands --------------------------------------------------------------------------------


def run_add(ctx: Context) -> int:
    from bastion.core.keys import load_public_key

    args = ctx.args
    name = _name(args.name)
    principal = ctx.principal(Permission.MODEL_REGISTER, name)
    key = load_public_key(args.key) if args.key is not None else None
    registry = _registry(ctx)
    try:
        version = registry.add(
            name,
            args.path,
            principal=principal,
            version=args.model_version,
            bundle=args.bundle,
            public_key=key,
            allow_pickle=bool(args.allow_pickle),
        )
    except VerificationError as exc:
        if ctx.format == "json":
            ctx.emit_json(
                {
                    "registered": False,
                    "name": name,
                    "error": str(exc),
                    "problems": list(exc.problems),
                }
            )
        raise
    payload = {"registered": True, "model": version.to_dict()}

    def text(console: Console) -> None:
        _print(console, f"Registered {name} {version.version} (stage registered).")
        _render_version(console, version)
        if version.allow_pickle:
            _print(console, "WARNING: this model may load pickle-based versions (opt-in).")

    ctx.emit(payload, text)
    return 0


def run_list(ctx: Context) -> int:
    name = _name(ctx.args.name) if ctx.args.name is not None else None
    principal = _reader(ctx, Permission.MODEL_READ, name)
    versions = _registry(ctx).list(name)
    if principal is not None and principal.models is not None:
        versions = [v for v in versions if v.name in principal.models]
    payload = {"count": len(versions), "versions": [v.to_dict() for v in versions]}

    def text(console: Console) -> None:
        if not versions:
            _print(console, "No model versions.")
            return
        header = ("MODEL", "VERSION", "STAGE", "FORMAT", "APPROVALS", "REGISTERED BY")
        rows = [header] + [
            (
                v.name,
                v.version,
                str(v.stage),
                v.format,
                str(len(v.approvals)),
                v.registered_by,
            )
            for v in versions
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            _print(console, "  ".join([*cells, row[-1]]))

    ctx.emit(payload, text)
    return 0


def run_show(ctx: Context) -> int:
    name = _name(ctx.args.name)
    _reader(ctx, Permission.MODEL_READ, name)
    version = _registry(ctx).show(name, ctx.args.version)
    ctx.emit({"model": version.to_dict()}, lambda console: _render_version(console, version))
    return 0


def run_approve(ctx: Context) -> int:
    name = _name(ctx.args.name)
    principal = ctx.principal(Permission.MODEL_APPROVE, name)
    version = _registry(ctx).approve(
        name, ctx.args.version, principal=principal, comment=ctx.args.comment
    )

    def text(console: Console) -> None:
        _print(console, f"Approved {name} {version.version} as {principal.name}.")
        _render_version(console, version, files=False)

    ctx.emit({"model": version.to_dict()}, text)
    return 0


def run_promote(ctx: Context) -> int:
    name = _name(ctx.args.name)
    target = ctx.args.to
    principal = ctx.principal(_PROMOTE_PERMISSION[target], name)
    registry = _registry(ctx)
    before = {v.version for v in registry.production() if v.name == name}
    version = registry.promote(name, ctx.args.version, to=target, principal=principal)
    archived = sorted(before - {version.version}) if target == "production" else []
    payload = {"model": version.to_dict(), "archived": archived}

    def text(console: Console) -> None:
        _print(console, f"Moved {name} {version.version} to {target}.")
        for old in archived:
            _print(console, f"Archived {name} {old} (the previous production version).")
        _render_version(console, version, files=False)

    ctx.emit(payload, text)
    return 0


def run_pull(ctx: Context) -> int:
    from bastion.artifacts.verification import default_signature_path

    args = ctx.args
    name = _name(args.name)
    principal = _reader(ctx, Permission.MODEL_PULL, name)
    registry = _registry(ctx)
    version = registry.show(name, args.version)
    try:
        path = registry.pull(name, version.version, args.out, principal=principal)
    except VerificationError as exc:
        if ctx.format == "json":
            ctx.emit_json(
                {
                    "pulled": False,
                    "name": name,
                    "error": str(exc),
                    "problems": list(exc.problems),
                }
            )
        raise
    signature = default_signature_path(path)
    payload = {
        "pulled": True,
        "path": str(path),
        "signature": str(signature),
        "model": version.to_dict(),
    }

    def text(console: Console) -> None:
        _print(
            console,
            f"Pulled {name} {version.version} into {path} (digests and signature verified).",
        )
        _print(console, f"  signature   {signature}")

    ctx.emit(payload, text)
    return 0


def run_allow_pickle(ctx: Context) -> int:
    name = _name(ctx.args.name)
    principal = ctx.principal(Permission.MODEL_APPROVE, name)
    allowed = _registry(ctx).allow_pickle(name, principal=principal, allowed=not ctx.args.off)
    payload = {"name": name, "allow_pickle": allowed}

    def text(console: Console) -> None:
        if allowed:
            _print(
                console,
                f"Model {name} may now load pickle-based versions (scan, signature and the "
                "restricted unpickler still apply).",
            )
        else:
            _print(console, f"Model {name} no longer loads pickle-based versions.")

    ctx.emit(payload, text)
    return 0
