"""The exception tree of bastion (stable API).

Every error bastion raises on purpose derives from :class:`BastionError`; the CLI catches that
root only, prints its one-line message and exits with :attr:`BastionError.exit_code`::

    BastionError                    could not run (exit 2)
    ├── ConfigError                 bastion.toml or a BASTION_* variable is invalid
    ├── WorkspaceError              no workspace, or a damaged one
    ├── StorageError                the database could not be opened, migrated or written
    ├── KeyMaterialError            a key file is unreadable, malformed or the passphrase is wrong
    ├── ScanError                   the scanner could not run at all (not: a file is unsafe)
    ├── SigningError                a signature could not be produced
    ├── AuditError                  the audit log could not be written or read
    ├── AccessError                 a principal was refused
    │   ├── AuthenticationError     no key, or an unknown, revoked or expired one
    │   └── AuthorizationError      the principal's role or scope does not allow the action
    ├── RegistryError               registry operations
    ├── GatewayError                the serving gateway
    │   └── ServiceUnavailableError a backing service (Redis, the database) is unreachable
    ├── PolicyError                 a policy file is invalid
    ├── AssessmentError             an assessment could not run
    └── VerificationError           a security check ran and failed (exit 1)
        ├── SignatureError          a signature, key or bundle does not verify
        └── AuditChainError         the audit log's chain or a checkpoint does not verify

A *finding* (an unsafe model file, a modified file) is not an exception: scans return reports.
A *failed verification* is one, by design (style rule 5): callers cannot mistake it for success.
"""

from __future__ import annotations

__all__ = [
    "AccessError",
    "AssessmentError",
    "AuditChainError",
    "AuditError",
    "AuthenticationError",
    "AuthorizationError",
    "BastionError",
    "ConfigError",
    "GatewayError",
    "KeyMaterialError",
    "PolicyError",
    "RegistryError",
    "ScanError",
    "ServiceUnavailableError",
    "SignatureError",
    "SigningError",
    "StorageError",
    "VerificationError",
    "WorkspaceError",
]


class BastionError(Exception):
    """Root of every error bastion raises deliberately.

    Attributes:
        exit_code: what the command line exits with when this error ends a command.
    """

    exit_code: int = 2


class ConfigError(BastionError):
    """The configuration (bastion.toml or a BASTION_* variable) is invalid."""


class WorkspaceError(BastionError):
    """No workspace was found, or it is damaged."""


class StorageError(BastionError):
    """The database could not be opened, migrated, read or written."""


class KeyMaterialError(BastionError):
    """A key file is unreadable or malformed, or its passphrase is wrong."""


class ScanError(BastionError):
    """The scanner could not run at all (a missing path, say); unsafe files are findings."""


class SigningError(BastionError):
    """A signature could not be produced."""


class AuditError(BastionError):
    """The audit log could not be written or read."""


class AccessError(BastionError):
    """A principal was refused.

    Attributes:
        reason: why, for the audit log only: clients are told no more than the message,
            which never says whether a key exists.
    """

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class AuthenticationError(AccessError):
    """No API key was given, or it is unknown, revoked or expired."""


class AuthorizationError(AccessError):
    """The principal's role or model scope does not allow the action."""


class RegistryError(BastionError):
    """A registry operation could not be carried out."""


class GatewayError(BastionError):
    """The serving gateway could not start or run."""


class ServiceUnavailableError(GatewayError):
    """A service the gateway depends on (Redis, the database) cannot be reached.

    The gateway answers ``503`` while it lasts (it fails closed) and recovers by itself.
    """


class PolicyError(BastionError):
    """A policy file is invalid."""


class AssessmentError(BastionError):
    """An assessment could not run."""


class VerificationError(BastionError):
    """A security check ran and failed: a bad signature, a broken chain, a modified file.

    Attributes:
        problems: one line per problem found, in a stable order, for reports.
    """

    exit_code = 1

    def __init__(self, message: str, problems: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems: tuple[str, ...] = tuple(problems)


class SignatureError(VerificationError):
    """A signature, key or signature bundle does not verify."""


class AuditChainError(VerificationError):
    """The audit log's hash chain or one of its checkpoints does not verify.

    Attributes:
        sequence: the sequence number of the first bad record, when one can be named.
    """

    def __init__(
        self,
        message: str,
        problems: list[str] | tuple[str, ...] = (),
        *,
        sequence: int | None = None,
    ) -> None:
        super().__init__(message, problems)
        self.sequence = sequence
