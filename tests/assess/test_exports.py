"""The public names of bastion.assess and its seams are exactly these (httpx
``tests/test_exported_members.py``)."""

from __future__ import annotations

import bastion.assess
import bastion.assess.attacks
import bastion.assess.targets


def _isort_style(name: str) -> tuple[int, str]:
    """CONSTANTS, then Classes, then functions (ruff RUF022's order)."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted_and_complete():
    for module in (bastion.assess, bastion.assess.attacks, bastion.assess.targets):
        names = module.__all__
        assert names == sorted(names, key=_isort_style)
        assert len(set(names)) == len(names)
        for name in names:
            assert hasattr(module, name), (module.__name__, name)


def test_seams_are_explicit_tuples():
    from bastion.assess.attacks import ATTACKS
    from bastion.assess.targets import TARGETS

    assert [m.model_fields["name"].default for m in ATTACKS] == [
        "fgsm",
        "pgd",
        "cw",
        "square",
        "hopskipjump",
    ]
    assert [k.name for k in TARGETS] == ["torch", "torchscript", "sklearn", "onnx", "remote"]
    assert bastion.assess.FAMILIES[0].name == "evasion"
