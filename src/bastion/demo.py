"""``bastion demo``: the model supply chain end to end, on the embedded default (stable API).

No server and no download: a small classifier is trained on scikit-learn's digits, saved as
safetensors, scanned, signed and verified; a tampered copy fails verification; a malicious
pickle (harmless payload, never loaded) is caught by the scanner; the model is registered and
promoted under separation of duties (:mod:`bastion.demo_registry`), then served by the gateway
in process on loopback, called and attacked over HTTP, and assessed through it as a black box
(:mod:`bastion.demo_gateway`); the audit log records every step and verifies. Each step
reports what it proved through ``on_step``; the CLI renders them.
"""

from __future__ import annotations

import os
import pickletools
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

from bastion.artifacts.findings import ScanStatus
from bastion.artifacts.scan import scan_paths
from bastion.artifacts.signing import sign
from bastion.artifacts.verification import verify
from bastion.core.audit import AuditEvent
from bastion.core.keys import key_id
from bastion.core.workspace import Workspace, init_workspace
from bastion.demo_model import train_demo_model, write_model_folder
from bastion.errors import BastionError, SignatureError

__all__ = ["DemoStep", "malicious_pickle", "run_demo"]


@dataclass(frozen=True, slots=True)
class DemoStep:
    """One step of the demo.

    Attributes:
        title: what was done.
        proved: what it showed.
        ok: whether the outcome was the expected one.
        details: supporting lines (paths, digests, findings).
    """

    title: str
    proved: str
    ok: bool
    details: tuple[str, ...] = field(default_factory=tuple)


def malicious_pickle(command: str = "echo bastion-demo-payload") -> bytes:
    """A protocol-2 pickle that would call ``os.system(command)`` if anyone unpickled it.

    Built opcode by opcode; bastion never loads it. The payload is harmless by design.
    """
    encoded = command.encode()
    if len(encoded) > 255:
        raise BastionError("demo payload command too long")
    body = (
        b"\x80\x02"  # PROTO 2
        + b"cos\nsystem\n"  # GLOBAL os.system
        + b"U"  # SHORT_BINSTRING
        + bytes([len(encoded)])
        + encoded
        + b"\x85"  # TUPLE1
        + b"R"  # REDUCE: os.system(command)
        + b"."  # STOP
    )
    # Self-check with the standard disassembler (it parses, never executes).
    list(pickletools.genops(body))
    return body


def run_demo(
    workdir: Path,
    *,
    on_step: Callable[[DemoStep], None],
    environ: Mapping[str, str] | None = None,
) -> bool:
    """Run every step in ``workdir`` (created; must be empty or absent).

    Returns:
        Whether every step had the expected outcome.

    Raises:
        BastionError: a step could not run at all.
    """
    env = dict(os.environ if environ is None else environ)
    env["BASTION_HOME"] = str(workdir / "workspace")
    env.setdefault("BASTION_ACTOR", "demo@bastion")
    if workdir.exists() and any(workdir.iterdir()):
        raise BastionError(f"{workdir} is not empty: the demo needs a fresh folder")
    workdir.mkdir(parents=True, exist_ok=True)
    workspace, _ = init_workspace(workdir, env)
    try:
        return _steps(workspace, workdir, on_step)
    finally:
        workspace.close()


def _steps(workspace: Workspace, workdir: Path, on_step: Callable[[DemoStep], None]) -> bool:
    audit = workspace.audit()
    all_ok = True
    key = workspace.signing_key()
    audit.append("workspace.init", str(workspace.root), {"key_id": key_id(key)})

    def report(step: DemoStep) -> None:
        nonlocal all_ok
        all_ok = all_ok and step.ok
        on_step(step)

    report(
        DemoStep(
            "Created a workspace",
            "settings, a SQLite database (WAL), an artifact store and a signing key "
            "exist with no server",
            True,
            (f"workspace  {workspace.root}", f"signing key id {key_id(key)[:16]}"),
        )
    )

    model, _, _ = train_demo_model()
    model_dir = write_model_folder(model, workdir / "digits-model")
    audit.append("model.train", str(model_dir), {"test_accuracy": model.test_accuracy})
    report(
        DemoStep(
            "Trained a classifier on scikit-learn's digits and saved it as safetensors",
            "a model can be shipped in a format that holds only tensors, never code",
            True,
            (f"model      {model_dir}", f"accuracy   {model.test_accuracy:.3f} on held-out"),
        )
    )

    settings = workspace.settings.scan
    scanned = scan_paths([model_dir], settings)
    clean = not scanned.unsafe and any(
        r.status is ScanStatus.CLEAN and r.format == "safetensors" for r in scanned.results
    )
    audit.append(
        "scan", str(model_dir), {"files": len(scanned.results), "unsafe": len(scanned.unsafe)}
    )
    report(
        DemoStep(
            "Scanned the model folder without loading it",
            "no file in it can run code when loaded; files in no model format are "
            "listed as skipped",
            clean,
            tuple(f"{r.status.value:<8} {r.format:<12} {r.path}" for r in scanned.results),
        )
    )

    signed = sign(model_dir, key, actor=workspace.actor(), training_data=())
    audit.append(
        "model.sign", str(model_dir), {"signature": str(signed.signature), "files": signed.files}
    )
    report(
        DemoStep(
            "Signed the model folder with the workspace key",
            "a Sigstore bundle (DSSE, in-toto statement) now binds every file's digest "
            "and the provenance to the signer",
            True,
            (f"signature  {signed.signature}", f"digest     {signed.subject_digest[:32]}..."),
        )
    )

    verified = verify(model_dir, workspace.public_key(), signed.signature)
    audit.append("model.verify", str(model_dir), {"verified": True, "files": verified.files})
    report(
        DemoStep(
            "Verified the signature",
            "the files on disk are exactly the ones that were signed, by this key",
            True,
            (f"{verified.files} files, {verified.bytes} bytes checked",),
        )
    )

    tampered = workdir / "digits-model-tampered"
    shutil.copytree(model_dir, tampered)
    weights = tampered / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))
    try:
        verify(tampered, workspace.public_key(), signed.signature)
    except SignatureError as exc:
        audit.append("model.verify", str(tampered), {"verified": False, "reason": str(exc)})
        report(
            DemoStep(
                "Flipped one bit of one weight in a copy and verified it against the signature",
                "tampering is detected and the changed file is named",
                True,
                (str(exc), *exc.problems),
            )
        )
    else:
        report(
            DemoStep(
                "Flipped one bit of one weight in a copy and verified it against the signature",
                "tampering should have been detected but was not",
                False,
            )
        )

    evil = workdir / "downloaded-model.bin"
    evil.write_bytes(malicious_pickle())
    caught = scan_paths([evil], settings)
    result = caught.results[0]
    audit.append("scan", str(evil), {"files": 1, "unsafe": len(caught.unsafe)})
    report(
        DemoStep(
            "Scanned a malicious pickle disguised as model.bin (harmless payload)",
            "the code-execution payload is found statically, before anything loads the file",
            result.status is ScanStatus.UNSAFE,
            tuple(f"{f.severity.label:<8} {f.rule_id}: {f.message}" for f in result.findings[:3]),
        )
    )

    # Imported here: the registry and serving acts build on this module's DemoStep.
    from bastion.demo_gateway import serve_and_attack
    from bastion.demo_registry import register_and_promote

    keys = register_and_promote(workspace, model_dir, report)
    serve_and_attack(workspace, keys, report, workdir)

    audit.checkpoint()
    summary = audit.verify()
    events = audit.events()
    report(
        DemoStep(
            "Checkpointed and verified the audit log",
            "every step above is in a hash-chained log whose head the workspace key signed",
            True,
            (
                *_event_lines(events),
                f"{summary.events} events, {summary.checkpoints} checkpoint(s): chain verified",
            ),
        )
    )
    return all_ok


def _event_lines(events: Sequence[AuditEvent]) -> list[str]:
    """One line per event; a run of alike events (action, subject, actor) on one line."""
    lines = []
    for (action, subject, actor), group in groupby(
        events, lambda e: (e.action, e.subject, e.actor)
    ):
        run = list(group)
        seqs = f"#{run[0].seq}" + (f"-{run[-1].seq}" if len(run) > 1 else "")
        count = f"  ({len(run)} events)" if len(run) > 1 else ""
        lines.append(f"{seqs:<8} {action:<18} {subject}  by {actor}{count}")
    return lines
