"""``bastion keygen | sign | verify``: signing keys, and signatures over model files and folders."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from bastion.artifacts.bundle import SignedStatement, public_key_hint
from bastion.artifacts.manifest import Serialization, SerializationMethod
from bastion.artifacts.provenance import Provenance, format_time, git_head, parse_parameters
from bastion.artifacts.signing import SignOptions, sign
from bastion.artifacts.verification import default_signature_path, verify
from bastion.cli.context import Context, add_format_option
from bastion.config import SigningSettings, load_settings
from bastion.core.digests import HashAlgorithm
from bastion.core.keys import (
    KeyAlgorithm,
    algorithm_of,
    generate_key,
    key_id,
    load_private_key,
    load_public_key,
    write_keypair,
)
from bastion.core.workspace import Workspace, current_actor, key_passphrase
from bastion.errors import KeyMaterialError, SignatureError, WorkspaceError

__all__ = ["register"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive integer")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a non-negative integer")
    return value


def register(subparsers: Any) -> None:
    keygen: argparse.ArgumentParser = subparsers.add_parser(
        "keygen",
        help="create a signing key pair (PREFIX.key, PREFIX.pub)",
        description="Create a signing key pair: PREFIX.key (mode 0600, encrypted with "
        "$BASTION_KEY_PASSPHRASE when it is set) and PREFIX.pub.",
    )
    keygen.add_argument("--out", required=True, type=Path, metavar="PREFIX", help="file prefix")
    keygen.add_argument(
        "--algorithm",
        choices=[a.value for a in KeyAlgorithm],
        default=KeyAlgorithm.ED25519.value,
        help="ed25519 (default) or ecdsa-p256 (verifiable by OpenSSF model-signing)",
    )
    keygen.add_argument("--force", action="store_true", help="overwrite existing key files")
    add_format_option(keygen)
    keygen.set_defaults(handler=run_keygen)

    signer: argparse.ArgumentParser = subparsers.add_parser(
        "sign",
        help="sign a model file or folder, with provenance",
        description="Sign a model file or folder: a Sigstore bundle (DSSE, in-toto statement "
        "in OpenSSF model-signing's format) with the digest of every file and the provenance "
        "given. Written atomically to PATH.sig unless --output says otherwise.",
    )
    signer.add_argument("path", type=Path, metavar="PATH", help="model file or folder")
    signer.add_argument(
        "--key", type=Path, metavar="FILE", help="private key (default: the workspace key)"
    )
    signer.add_argument(
        "--output", type=Path, metavar="SIG", help="signature file (default: PATH.sig)"
    )
    signer.add_argument(
        "--hash",
        choices=[h.value for h in HashAlgorithm],
        help="digest algorithm (default: signing.hash_algorithm, sha256)",
    )
    signer.add_argument(
        "--serialization",
        choices=[m.value for m in SerializationMethod],
        help="hash whole files, or fixed-size shards in parallel (default: shards for sha256, "
        "files for blake3)",
    )
    signer.add_argument(
        "--shard-size",
        type=_positive_int,
        metavar="BYTES",
        help="shard size (default: signing.shard_bytes, 256 MiB)",
    )
    signer.add_argument(
        "--workers", type=_count, metavar="N", help="hashing threads (default: one per core)"
    )
    signer.add_argument(
        "--data",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="training data file or folder whose digest is recorded (repeatable)",
    )
    signer.add_argument(
        "--code-revision",
        metavar="REV",
        help="training code revision (default: git HEAD of the current folder, if any)",
    )
    signer.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="training parameter to record (repeatable)",
    )
    signer.add_argument(
        "--reuse",
        type=Path,
        metavar="SIG",
        help="previous signature (same key): keep digests of files whose size and times "
        "are unchanged",
    )
    add_format_option(signer)
    signer.set_defaults(handler=run_sign)

    verifier: argparse.ArgumentParser = subparsers.add_parser(
        "verify",
        help="verify a model file or folder against its signature",
        description="Verify a model against its signature: exit 0 when every file matches, "
        "1 listing each modified, added, removed or renamed file, or a wrong signature or key.",
    )
    verifier.add_argument("path", type=Path, metavar="PATH", help="model file or folder")
    verifier.add_argument(
        "--key", type=Path, metavar="PUB", help="public key (default: the workspace key)"
    )
    verifier.add_argument(
        "--signature", type=Path, metavar="SIG", help="signature file (default: PATH.sig)"
    )
    verifier.add_argument(
        "--workers", type=_count, metavar="N", help="hashing threads (default: one per core)"
    )
    add_format_option(verifier)
    verifier.set_defaults(handler=run_verify)


# -- helpers ---------------------------------------------------------------------------------


def _settings(ctx: Context, workspace: Workspace | None) -> SigningSettings:
    if workspace is not None:
        return workspace.settings.signing
    return load_settings(None, ctx.environ).signing


def _audit(workspace: Workspace | None, action: str, subject: str, details: Any) -> None:
    if workspace is not None:
        workspace.audit().append(action, subject, details)


@contextmanager
def _hash_progress(ctx: Context, total: int | None) -> Iterator[Callable[[int], None] | None]:
    if not ctx.show_progress():
        yield None
        return
    with ctx.progress("hashing", total) as advance:
        yield advance


def _serialization_json(serialization: Serialization) -> dict[str, Any]:
    return {
        "method": serialization.method.value,
        "hash": serialization.hash_type.value,
        "shard_size": serialization.shard_size,
        "ignore_paths": list(serialization.ignore_paths),
    }


def _provenance_json(provenance: Provenance | None) -> dict[str, Any] | None:
    if provenance is None:
        return None
    return {
        "signer": {
            "key_id": provenance.key_id,
            "algorithm": provenance.algorithm,
            "actor": provenance.actor,
        },
        "signed_at": format_time(provenance.signed_at),
        "code_revision": provenance.code_revision,
        "training_data": [
            {
                "path": d.path,
                "kind": d.kind,
                "algorithm": d.algorithm.value,
                "digest": d.digest,
                "files": d.files,
                "bytes": d.bytes,
            }
            for d in provenance.training_data
        ],
        "parameters": dict(provenance.parameters),
    }


def _print_provenance(console: Console, provenance: Provenance | None) -> None:
    if provenance is None:
        console.print("  provenance  none (not a bastion signature)")
        return
    console.print(
        f"  signer      key {provenance.key_id[:16]} ({provenance.algorithm}), "
        f"{escape(provenance.actor)}, {format_time(provenance.signed_at)}"
    )
    if provenance.code_revision:
        console.print(f"  code        {escape(provenance.code_revision)}")
    for data in provenance.training_data:
        console.print(
            f"  data        {escape(data.path)} ({data.kind}, {data.files} files) "
            f"{data.algorithm.value}:{data.digest}"
        )
    for name, value in provenance.parameters:
        console.print(f"  param       {escape(name)}={escape(value)}")


# -- keygen ----------------------------------------------------------------------------------


def run_keygen(ctx: Context) -> int:
    prefix: Path = ctx.args.out
    algorithm = KeyAlgorithm(ctx.args.algorithm)
    private_path = prefix.with_name(prefix.name + ".key")
    public_path = prefix.with_name(prefix.name + ".pub")
    if not ctx.args.force:
        for existing in (private_path, public_path):
            if existing.exists() or existing.is_symlink():
                raise KeyMaterialError(
                    f"{existing} exists: refusing to overwrite a key (--force to replace it)"
                )
    passphrase = key_passphrase(ctx.environ)
    key = generate_key(algorithm)
    write_keypair(prefix, key, passphrase, overwrite=bool(ctx.args.force))
    workspace = ctx.optional_workspace()
    identifier = key_id(key)
    _audit(
        workspace,
        "key.generate",
        str(public_path.resolve()),
        {"key_id": identifier, "algorithm": algorithm.value, "encrypted": bool(passphrase)},
    )
    payload = {
        "private_key": str(private_path),
        "public_key": str(public_path),
        "algorithm": algorithm.value,
        "key_id": identifier,
        "public_key_hint": public_key_hint(key),
        "encrypted": bool(passphrase),
    }

    def text(console: Console) -> None:
        console.print(f"Created {algorithm.value} key {identifier[:16]}")
        console.print(
            f"  private  {escape(str(private_path))} (0600"
            + (", encrypted)" if passphrase else ", not encrypted)")
        )
        console.print(f"  public   {escape(str(public_path))}")

    ctx.emit(payload, text)
    return 0


# -- sign ------------------------------------------------------------------------------------


def run_sign(ctx: Context) -> int:
    args = ctx.args
    path: Path = args.path
    workspace = ctx.optional_workspace()
    settings = _settings(ctx, workspace)
    if args.key is not None:
        key = load_private_key(args.key, key_passphrase(ctx.environ))
    elif workspace is not None:
        key = workspace.signing_key()
    else:
        raise WorkspaceError("no --key given and no workspace: run 'bastion init' or pass --key")
    parameters = parse_parameters(args.param)
    options = SignOptions(
        hash_algorithm=HashAlgorithm(args.hash or settings.hash_algorithm),
        method=SerializationMethod(args.serialization) if args.serialization else None,
        shard_bytes=args.shard_size or settings.shard_bytes,
        workers=settings.workers if args.workers is None else args.workers,
    )
    code_revision = args.code_revision or git_head(ctx.cwd)
    actor = workspace.actor() if workspace is not None else current_actor(ctx.environ)
    output = args.output or default_signature_path(path)
    with _hash_progress(ctx, None) as advance:
        result = sign(
            path,
            key,
            output=output,
            options=options,
            actor=actor,
            code_revision=code_revision,
            training_data=args.data,
            parameters=parameters,
            reuse=args.reuse,
            progress=advance,
        )
    _audit(
        workspace,
        "model.sign",
        str(path.resolve()),
        {
            "signature": str(result.signature.resolve()),
            "key_id": result.provenance.key_id,
            "digest": result.subject_digest,
            "files": result.files,
            "bytes": result.bytes,
            "hash": result.serialization.hash_type.value,
            "reused_files": result.reused_files,
        },
    )
    payload = {
        "path": str(path),
        "signature": str(result.signature),
        "subject": {"name": result.subject_name, "digest": {"sha256": result.subject_digest}},
        "key_id": result.provenance.key_id,
        "algorithm": algorithm_of(key).value,
        "serialization": _serialization_json(result.serialization),
        "files": result.files,
        "bytes": result.bytes,
        "hashed_files": result.hashed_files,
        "reused_files": result.reused_files,
        "provenance": _provenance_json(result.provenance),
    }

    def text(console: Console) -> None:
        reused = f", {result.reused_files} reused" if result.reused_files else ""
        console.print(
            f"Signed {escape(str(path))}: {result.files} files, {result.bytes} bytes "
            f"({result.serialization.hash_type.value}, {result.serialization.method.value}"
            f"{reused})"
        )
        console.print(f"  signature   {escape(str(result.signature))}")
        console.print(f"  digest      sha256:{result.subject_digest}")
        _print_provenance(console, result.provenance)

    ctx.emit(payload, text)
    return 0


# -- verify ----------------------------------------------------------------------------------


def run_verify(ctx: Context) -> int:
    args = ctx.args
    path: Path = args.path
    workspace = ctx.optional_workspace()
    settings = _settings(ctx, workspace)
    if args.key is not None:
        public = load_public_key(args.key)
    elif workspace is not None:
        public = workspace.public_key()
    else:
        raise WorkspaceError("no --key given and no workspace: run 'bastion init' or pass --key")
    signature = args.signature or default_signature_path(path)
    identifier = key_id(public)
    workers = settings.workers if args.workers is None else args.workers
    try:
        with _hash_progress(ctx, None) as advance:
            verified = verify(path, public, signature, workers=workers, progress=advance)
    except SignatureError as exc:
        _audit(
            workspace,
            "model.verify",
            str(path.resolve()),
            {
                "ok": False,
                "signature": str(signature.resolve()),
                "key_id": identifier,
                "error": str(exc),
                "problems": list(exc.problems[:100]),
            },
        )
        if ctx.format == "json":
            ctx.emit_json(
                {
                    "path": str(path),
                    "signature": str(signature),
                    "verified": False,
                    "key_id": identifier,
                    "error": str(exc),
                    "problems": list(exc.problems),
                }
            )
        raise
    statement: SignedStatement = verified.statement
    _audit(
        workspace,
        "model.verify",
        str(path.resolve()),
        {
            "ok": True,
            "signature": str(signature.resolve()),
            "key_id": identifier,
            "digest": statement.subject_digest.hex(),
            "files": verified.files,
        },
    )
    payload = {
        "path": str(path),
        "signature": str(signature),
        "verified": True,
        "key_id": identifier,
        "subject": {
            "name": statement.subject_name,
            "digest": {"sha256": statement.subject_digest.hex()},
        },
        "serialization": _serialization_json(statement.serialization),
        "files": verified.files,
        "bytes": verified.bytes,
        "provenance": _provenance_json(statement.provenance),
        "problems": [],
    }

    def text(console: Console) -> None:
        console.print(
            f"Verified {escape(str(path))}: {verified.files} files, {verified.bytes} bytes "
            f"match {escape(str(signature))} (key {identifier[:16]})"
        )
        _print_provenance(console, statement.provenance)

    ctx.emit(payload, text)
    return 0
