"""The bundle format, and every way a hostile bundle is refused without a crash."""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.artifacts.bundle import (
    BUNDLE_MEDIA_TYPE,
    MAX_BUNDLE_BYTES,
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    FileStat,
    decode_bundle,
    decode_statement,
    encode_bundle,
    encode_statement,
    pae,
    public_key_hint,
    verify_envelope,
)
from bastion.artifacts.manifest import Resource, Serialization, SerializationMethod
from bastion.artifacts.provenance import DataDigest, Provenance
from bastion.core.digests import HashAlgorithm
from bastion.core.keys import KeyAlgorithm, PrivateKey, generate_key, key_id
from bastion.errors import SignatureError

NOW = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
D1 = hashlib.sha256(b"one").digest()
D2 = hashlib.sha256(b"two").digest()


@pytest.fixture(scope="module")
def ed_key() -> PrivateKey:
    return generate_key(KeyAlgorithm.ED25519)


@pytest.fixture(scope="module")
def ec_key() -> PrivateKey:
    return generate_key(KeyAlgorithm.ECDSA_P256)


def make_payload(key: PrivateKey, method: str = "files") -> bytes:
    if method == "files":
        serialization = Serialization(SerializationMethod.FILES, HashAlgorithm.SHA256)
        resources = [
            Resource("a", None, None, "sha256", D1),
            Resource("b/c", None, None, "sha256", D2),
        ]
        files = [FileStat("a", 3, 1, 2), FileStat("b/c", 3, 1, 2)]
    else:
        serialization = Serialization(
            SerializationMethod.SHARDS, HashAlgorithm.SHA256, shard_size=4
        )
        algorithm = serialization.resource_algorithm
        resources = [Resource("a", 0, 4, algorithm, D1), Resource("a", 4, 6, algorithm, D2)]
        files = [FileStat("a", 6, 1, 2), FileStat("empty", 0, 1, 2)]
    provenance = Provenance(
        key_id=key_id(key),
        algorithm="ed25519",
        actor="tester",
        signed_at=NOW,
        code_revision="0" * 40,
        training_data=(DataDigest("data", "folder", HashAlgorithm.SHA256, "ab" * 32, 2, 10),),
        parameters=(("epochs", "3"), ("lr", "0.1")),
    )
    return encode_statement(
        model_name="model",
        serialization=serialization,
        resources=resources,
        files=files,
        provenance=provenance,
    )


def statement_of(payload: bytes) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(payload)
    return document


def reencode(document: Any) -> bytes:
    return json.dumps(document).encode()


def fix_root(document: dict[str, Any]) -> dict[str, Any]:
    """Recompute the subject digest after the resources were edited."""
    hasher = hashlib.sha256()
    for resource in document["predicate"]["resources"]:
        hasher.update(bytes.fromhex(resource["digest"]))
    document["subject"][0]["digest"]["sha256"] = hasher.hexdigest()
    return document


def test_round_trip(ed_key: PrivateKey) -> None:
    payload = make_payload(ed_key)
    data = encode_bundle(payload, ed_key)
    outer = json.loads(data)
    assert outer["mediaType"] == BUNDLE_MEDIA_TYPE
    assert outer["verificationMaterial"] == {
        "publicKey": {"hint": public_key_hint(ed_key)},
        "tlogEntries": [],
    }
    assert outer["dsseEnvelope"]["payloadType"] == PAYLOAD_TYPE
    envelope = decode_bundle(data)
    assert envelope.payload == payload
    assert envelope.keyid == key_id(ed_key)
    verify_envelope(envelope, ed_key.public_key())
    statement = decode_statement(envelope.payload)
    assert statement.subject_name == "model"
    assert [r.name for r in statement.resources] == ["a", "b/c"]
    assert statement.files == (FileStat("a", 3, 1, 2), FileStat("b/c", 3, 1, 2))
    assert statement.provenance is not None
    assert statement.provenance.signed_at == NOW
    assert statement.provenance.parameters == (("epochs", "3"), ("lr", "0.1"))
    assert statement.provenance.training_data[0].digest == "ab" * 32
    document = statement_of(payload)
    assert document["predicateType"] == PREDICATE_TYPE
    assert document["predicate"]["bastion"]["provenance"]["signed_at"] == (
        "2026-01-02T03:04:05.678901Z"
    )


def test_pae_and_hint_are_model_signings(ec_key: PrivateKey) -> None:
    from cryptography.hazmat.primitives import serialization
    from model_signing._signing import sign_sigstore_pb

    assert pae(PAYLOAD_TYPE, b'{"x": 1}') == sign_sigstore_pb.pae(b'{"x": 1}')
    pem = ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert public_key_hint(ec_key) == hashlib.sha256(pem).hexdigest()


# -- the outer bundle ------------------------------------------------------------------------


def bundle_dict(key: PrivateKey) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(encode_bundle(make_payload(key), key))
    return result


BUNDLE_CASES: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "wrong media type": (
        lambda b: b.update(mediaType="application/json"),
        "unsupported bundle media type",
    ),
    "media type not a string": (lambda b: b.update(mediaType=5), "mediaType"),
    "no envelope": (lambda b: b.pop("dsseEnvelope"), "no DSSE envelope"),
    "message signature": (
        lambda b: (b.pop("dsseEnvelope"), b.update(messageSignature={"signature": "AA=="})),
        "messageSignature is not supported",
    ),
    "certificate instead of key": (
        lambda b: b["verificationMaterial"].update(certificate={"rawBytes": "AA=="}),
        "certificate",
    ),
    "transparency log entries": (
        lambda b: b["verificationMaterial"].update(tlogEntries=[{"logIndex": "1"}]),
        "tlogEntries",
    ),
    "two signatures": (
        lambda b: b["dsseEnvelope"]["signatures"].append(b["dsseEnvelope"]["signatures"][0]),
        "2 signatures",
    ),
    "no signature": (lambda b: b["dsseEnvelope"].update(signatures=[]), "signatures"),
    "payload not base64": (
        lambda b: b["dsseEnvelope"].update(payload="not base64!"),
        "payload is not valid base64",
    ),
    "signature not base64": (
        lambda b: b["dsseEnvelope"]["signatures"][0].update(sig="%%%"),
        "signature is not valid base64",
    ),
    "payload wrong type": (lambda b: b["dsseEnvelope"].update(payload=[1, 2]), "payload"),
    "unknown field": (lambda b: b.update(extra=1), "extra"),
    "signatures not a list": (lambda b: b["dsseEnvelope"].update(signatures="x"), "signatures"),
}


@pytest.mark.parametrize("case", sorted(BUNDLE_CASES))
def test_malformed_bundles_are_signature_errors(ed_key: PrivateKey, case: str) -> None:
    mutate, message = BUNDLE_CASES[case]
    document = bundle_dict(ed_key)
    mutate(document)
    with pytest.raises(SignatureError, match=message):
        decode_bundle(json.dumps(document).encode())


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"null",
        b"[]",
        b'"bundle"',
        b"\xff\xfe",
        b'{"mediaType": "' + BUNDLE_MEDIA_TYPE.encode() + b'"',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    ],
    ids=[
        "empty",
        "brace",
        "null",
        "list",
        "string",
        "binary",
        "truncated",
        "deep-list",
        "deep-obj",
    ],
)
def test_garbage_is_a_signature_error(data: bytes) -> None:
    with pytest.raises(SignatureError, match="not a valid bundle"):
        decode_bundle(data)


def test_truncated_real_bundle(ed_key: PrivateKey) -> None:
    data = encode_bundle(make_payload(ed_key), ed_key)
    for cut in (1, len(data) // 2, len(data) - 1):
        with pytest.raises(SignatureError):
            decode_bundle(data[:cut])


def test_oversized_bundle_is_refused() -> None:
    with pytest.raises(SignatureError, match="larger than"):
        decode_bundle(b" " * (MAX_BUNDLE_BYTES + 1))


# -- the signature ---------------------------------------------------------------------------


def test_wrong_key_same_algorithm(ed_key: PrivateKey) -> None:
    envelope = decode_bundle(encode_bundle(make_payload(ed_key), ed_key))
    other = generate_key(KeyAlgorithm.ED25519)
    with pytest.raises(SignatureError, match="signed by a different key"):
        verify_envelope(envelope, other.public_key())


def test_other_algorithm_key_without_hint(ed_key: PrivateKey, ec_key: PrivateKey) -> None:
    document = bundle_dict(ed_key)
    del document["verificationMaterial"]["publicKey"]["hint"]
    envelope = decode_bundle(json.dumps(document).encode())
    with pytest.raises(SignatureError, match="does not verify"):
        verify_envelope(envelope, ec_key.public_key())
    verify_envelope(envelope, ed_key.public_key())  # no hint: the signature alone decides


def test_altered_payload_does_not_verify(ec_key: PrivateKey) -> None:
    document = bundle_dict(ec_key)
    statement = statement_of(base64.b64decode(document["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["digest"] = D2.hex()
    document["dsseEnvelope"]["payload"] = base64.b64encode(reencode(fix_root(statement))).decode()
    envelope = decode_bundle(json.dumps(document).encode())
    with pytest.raises(SignatureError, match="does not verify"):
        verify_envelope(envelope, ec_key.public_key())


def test_payload_type_is_signed_and_checked(ed_key: PrivateKey) -> None:
    from bastion.core.keys import sign_bytes

    payload = make_payload(ed_key)
    document = bundle_dict(ed_key)
    document["dsseEnvelope"]["payloadType"] = "text/plain"
    document["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(
        sign_bytes(ed_key, pae("text/plain", payload))
    ).decode()
    envelope = decode_bundle(json.dumps(document).encode())
    with pytest.raises(SignatureError, match="unsupported DSSE payload type"):
        verify_envelope(envelope, ed_key.public_key())
    document["dsseEnvelope"]["payloadType"] = PAYLOAD_TYPE  # signature was over text/plain
    with pytest.raises(SignatureError, match="does not verify"):
        verify_envelope(decode_bundle(json.dumps(document).encode()), ed_key.public_key())


# -- the statement ---------------------------------------------------------------------------


def edit(key: PrivateKey, change: Callable[[dict[str, Any]], Any], method: str = "files") -> bytes:
    document = copy.deepcopy(statement_of(make_payload(key, method)))
    change(document)
    return reencode(document)


def resources(document: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = document["predicate"]["resources"]
    return result


def rename(index: int, name: str) -> Callable[[dict[str, Any]], Any]:
    def change(document: dict[str, Any]) -> None:
        resources(document)[index]["name"] = name
        document["predicate"]["bastion"]["files"][index]["name"] = name

    return change


STATEMENT_CASES: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "wrong _type": (lambda d: d.update(_type="https://in-toto.io/Statement/v0.1"), "_type"),
    "wrong predicate type": (
        lambda d: d.update(predicateType="https://slsa.dev/provenance/v1"),
        "unsupported predicate type",
    ),
    "two subjects": (lambda d: d["subject"].append(d["subject"][0]), "2 subjects"),
    "no subject": (lambda d: d.update(subject=[]), "subject"),
    "subject digest not hex": (
        lambda d: d["subject"][0]["digest"].update(sha256="xyz"),
        "sha256",
    ),
    "root digest mismatch": (
        lambda d: d["subject"][0]["digest"].update(sha256="0" * 64),
        "do not hash to the subject",
    ),
    "duplicate resource": (
        lambda d: (resources(d).append(resources(d)[0]), fix_root(d)),
        "listed twice",
    ),
    "parent path": (lambda d: (rename(0, "../../etc/passwd")(d), fix_root(d)), "'..' component"),
    "absolute path": (lambda d: (rename(0, "/etc/passwd")(d), fix_root(d)), "absolute path"),
    "backslash": (lambda d: (rename(0, "..\\..\\x")(d), fix_root(d)), "backslash"),
    "NUL": (lambda d: (rename(0, "a\x00b")(d), fix_root(d)), "NUL"),
    "dot in a folder": (lambda d: (rename(1, "b/./c")(d), fix_root(d)), "'.' component"),
    "algorithm mismatch": (
        lambda d: (resources(d)[0].update(algorithm="md5"), fix_root(d)),
        "has algorithm 'md5'",
    ),
    "unsupported hash": (
        lambda d: d["predicate"]["serialization"].update(hash_type="blake2"),
        "unsupported hash 'blake2'",
    ),
    "unknown method": (
        lambda d: d["predicate"]["serialization"].update(method="tensors"),
        "method",
    ),
    "shard size on files": (
        lambda d: d["predicate"]["serialization"].update(shard_size=4),
        "shard_size goes with shards only",
    ),
    "ignore path escapes": (
        lambda d: d["predicate"]["serialization"].update(ignore_paths=["."]),
        "ignore path",
    ),
    "resources not a list": (lambda d: d["predicate"].update(resources={"a": 1}), "resources"),
    "digest wrong type": (lambda d: resources(d)[0].update(digest=5), "digest"),
    "unknown statement field": (lambda d: d.update(evil=True), "evil"),
    "unknown resource field": (lambda d: resources(d)[0].update(uri="file:///etc"), "uri"),
    "file missing from resources": (
        lambda d: d["predicate"]["bastion"]["files"].append(
            {"name": "ghost", "size": 1, "mtime_ns": 0, "ctime_ns": 0}
        ),
        "has no resource",
    ),
    "resource missing from files": (
        lambda d: d["predicate"]["bastion"]["files"].pop(),
        "is not among the files",
    ),
    "file escapes": (
        lambda d: d["predicate"]["bastion"]["files"][0].update(name="../x"),
        "'..' component",
    ),
    "negative size": (
        lambda d: d["predicate"]["bastion"]["files"][0].update(size=-1),
        "size",
    ),
    "absurd time": (
        lambda d: d["predicate"]["bastion"]["files"][0].update(mtime_ns=10**40),
        "mtime_ns",
    ),
    "bad signing time": (
        lambda d: d["predicate"]["bastion"]["provenance"].update(signed_at="yesterday"),
        "bad signing time",
    ),
    "extension version": (lambda d: d["predicate"]["bastion"].update(version=2), "version"),
}


@pytest.mark.parametrize("case", sorted(STATEMENT_CASES))
def test_malformed_statements_are_signature_errors(ed_key: PrivateKey, case: str) -> None:
    change, message = STATEMENT_CASES[case]
    payload = edit(ed_key, change)
    with pytest.raises(SignatureError) as caught:
        decode_statement(payload)
    assert message in str(caught.value) + " ".join(caught.value.problems)


SHARD_CASES: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "gap": (lambda d: resources(d)[1].update(name="a:5:6"), "do not tile"),
    "overlap": (lambda d: resources(d)[1].update(name="a:3:6"), "do not tile"),
    "larger than shard": (lambda d: resources(d)[1].update(name="a:4:9"), "do not tile"),
    "short shard first": (
        lambda d: (
            resources(d)[0].update(name="a:0:2"),
            resources(d)[1].update(name="a:2:6"),
        ),
        "short shard",
    ),
    "absurd end": (lambda d: resources(d)[1].update(name="a:4:" + "9" * 30), "path:start:end"),
    "not numbers": (lambda d: resources(d)[1].update(name="a:x:y"), "path:start:end"),
    "no colons": (lambda d: resources(d)[1].update(name="a"), "path:start:end"),
    "sizes disagree": (
        lambda d: d["predicate"]["bastion"]["files"][0].update(size=7),
        "size disagrees",
    ),
    "empty file with shards": (
        lambda d: d["predicate"]["bastion"]["files"][1].update(name="a2", size=5),
        "has no resource",
    ),
}


@pytest.mark.parametrize("case", sorted(SHARD_CASES))
def test_malformed_shards_are_signature_errors(ed_key: PrivateKey, case: str) -> None:
    change, message = SHARD_CASES[case]
    payload = edit(ed_key, lambda d: (change(d), fix_root(d)), method="shards")
    with pytest.raises(SignatureError) as caught:
        decode_statement(payload)
    assert message in str(caught.value) + " ".join(caught.value.problems)


def test_shards_statement_and_model_signings_float_shard_size(ed_key: PrivateKey) -> None:
    statement = decode_statement(make_payload(ed_key, "shards"))
    assert statement.serialization.shard_size == 4
    assert statement.files is not None
    assert statement.files[1] == FileStat("empty", 0, 1, 2)
    # model-signing writes numbers through protobuf Struct: 4 becomes 4.0.
    payload = edit(
        ed_key, lambda d: d["predicate"]["serialization"].update(shard_size=4.0), "shards"
    )
    assert decode_statement(payload).serialization.shard_size == 4
    payload = edit(
        ed_key, lambda d: d["predicate"]["serialization"].update(shard_size=4.5), "shards"
    )
    with pytest.raises(SignatureError, match="shard_size"):
        decode_statement(payload)


def test_unknown_predicate_fields_are_ignored_as_model_signing_requires(ed_key: PrivateKey) -> None:
    payload = edit(ed_key, lambda d: d["predicate"].update(model_card={"any": ["thing"]}))
    assert decode_statement(payload).subject_name == "model"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b'{"_type": 1, "_type": 2}', "repeats the key '_type'"),
        (b"[" * 5000 + b"]" * 5000, "not valid JSON"),
        (b'{"a": ' + b"9" * 5000 + b"}", "not valid JSON"),
        (b"\xff", "not valid JSON"),
        (b'{"a": NaN', "not valid JSON"),
        (b"[]", "malformed"),
    ],
    ids=["duplicate-key", "deep", "huge-int", "binary", "truncated", "not-object"],
)
def test_hostile_payload_json(payload: bytes, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        decode_statement(payload)


def test_duplicate_keys_nested_are_refused(ed_key: PrivateKey) -> None:
    text = make_payload(ed_key).decode()
    doubled = text.replace('"resources":[', '"resources":[],"resources":[', 1)
    with pytest.raises(SignatureError, match="repeats the key 'resources'"):
        decode_statement(doubled.encode())


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "_type",
                    "subject",
                    "predicateType",
                    "predicate",
                    "serialization",
                    "resources",
                    "name",
                    "digest",
                    "sha256",
                    "method",
                    "hash_type",
                    "shard_size",
                    "allow_symlinks",
                    "bastion",
                    "files",
                    "x",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None)
@given(JSON_VALUES)
def test_any_json_statement_is_parsed_or_refused_never_a_crash(document: Any) -> None:
    with contextlib.suppress(SignatureError):
        decode_statement(json.dumps(document).encode())


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_parsed_or_refused_never_a_crash(data: bytes) -> None:
    for parse in (decode_bundle, decode_statement):
        with contextlib.suppress(SignatureError):
            parse(data)
