"""The demo's registry act: least-privilege keys, registration and a two-person promotion.

Four API keys are created, one per role the story needs (a data scientist, an ML engineer, an
SRE and a client application limited to the demo model). The data scientist registers the
signed model (it is scanned and verified again on the way in), then tries to approve their own
version, which the registry refuses (separation of duties); the ML engineer moves it to
staging and approves it; the SRE puts it in production. Each outcome is a :class:`DemoStep`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bastion.core.principals import KeyStore, Principal, Role
from bastion.core.workspace import Workspace
from bastion.demo import DemoStep
from bastion.errors import AuthorizationError
from bastion.registry import Registry, Stage

__all__ = ["DEMO_MODEL_NAME", "DemoKeys", "register_and_promote"]

DEMO_MODEL_NAME = "digits"


@dataclass(frozen=True, slots=True)
class DemoKeys:
    """The demo's principals, and the client's secret (the gateway act calls with it)."""

    data_scientist: Principal
    ml_engineer: Principal
    sre: Principal
    client: Principal
    client_secret: str
    sre_secret: str


def _create_keys(workspace: Workspace) -> DemoKeys:
    store = KeyStore(workspace.database, workspace.audit())
    actor = workspace.actor()
    made = {
        role: store.create(
            name,
            role,
            actor=actor,
            models=[DEMO_MODEL_NAME] if role is Role.CLIENT else None,
        )
        for name, role in (
            ("dana", Role.DATA_SCIENTIST),
            ("eli", Role.ML_ENGINEER),
            ("sam", Role.SRE),
            ("shop-frontend", Role.CLIENT),
        )
    }
    return DemoKeys(
        data_scientist=made[Role.DATA_SCIENTIST].key.principal(),
        ml_engineer=made[Role.ML_ENGINEER].key.principal(),
        sre=made[Role.SRE].key.principal(),
        client=made[Role.CLIENT].key.principal(),
        client_secret=made[Role.CLIENT].secret,
        sre_secret=made[Role.SRE].secret,
    )


def register_and_promote(
    workspace: Workspace, model_dir: Path, report: Callable[[DemoStep], None]
) -> DemoKeys:
    """Create the keys, register ``model_dir`` (signed already), approve and promote it."""
    keys = _create_keys(workspace)
    report(
        DemoStep(
            "Created one API key per role (secrets shown once, only hashes stored)",
            "each person and application gets the least privilege its job needs",
            True,
            tuple(
                f"{p.role:<15} {p.name:<14} key {p.key_id}"
                + ("  (model digits only)" if p.models else "")
                for p in (keys.data_scientist, keys.ml_engineer, keys.sre, keys.client)
            ),
        )
    )

    registry = Registry(workspace)
    version = registry.add(DEMO_MODEL_NAME, model_dir, principal=keys.data_scientist)
    report(
        DemoStep(
            "Registered the signed model as the data scientist",
            "the registry scanned it and verified its signature again before storing it "
            "by content digest",
            version.stage is Stage.REGISTERED,
            (
                f"{version.name} v{version.version}  {version.format}  stage {version.stage}",
                f"digest {version.digest[:40]}...",
            ),
        )
    )

    refusals: list[str] = []
    attempts: tuple[tuple[Principal, Callable[[], object]], ...] = (
        (
            keys.data_scientist,
            lambda: registry.approve(
                DEMO_MODEL_NAME, version.version, principal=keys.data_scientist
            ),
        ),
        (
            keys.ml_engineer,
            lambda: registry.approve(
                DEMO_MODEL_NAME,
                registry.add(DEMO_MODEL_NAME, model_dir, principal=keys.ml_engineer).version,
                principal=keys.ml_engineer,
            ),
        ),
    )
    for who, attempt in attempts:
        try:
            attempt()
        except AuthorizationError as exc:
            refusals.append(f"{who.name} ({who.role}) refused: {exc}")
        else:
            refusals.append(f"{who.name} ({who.role}) was NOT refused")
    report(
        DemoStep(
            "The data scientist tried to approve the model; the ML engineer tried to "
            "approve a version he had registered himself",
            "least privilege and separation of duties: approving needs the role, and "
            "nobody approves their own work",
            all("refused:" in line for line in refusals),
            tuple(refusals),
        )
    )

    registry.promote(DEMO_MODEL_NAME, version.version, to=Stage.STAGING, principal=keys.ml_engineer)
    registry.approve(
        DEMO_MODEL_NAME,
        version.version,
        principal=keys.ml_engineer,
        comment="accuracy and scan reviewed",
    )
    promoted = registry.promote(
        DEMO_MODEL_NAME, version.version, to=Stage.PRODUCTION, principal=keys.sre
    )
    report(
        DemoStep(
            "The ML engineer staged and approved it; the SRE promoted it to production",
            "a model reaches production only through two other people's hands, each "
            "step in the audit log",
            promoted.stage is Stage.PRODUCTION,
            (
                *(f"approved by {a.approver}" for a in promoted.approvals),
                f"stage {promoted.stage} by {promoted.stage_changed_by}",
            ),
        )
    )
    return keys
