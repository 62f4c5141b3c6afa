"""7z archives: recognised, not opened, so they fail closed.

7z is how the nullifAI models reached Hugging Face (a "PyTorch model" that was a 7z holding a
pickle that breaks right after its payload): ``torch.load`` cannot open one, but people and
pipelines unpack them and load what is inside. Reading 7z means parsing its (possibly
compressed and encrypted) header and LZMA2/BCJ/... streams; bastion does not, so a 7z archive is
a finding that makes the file unsafe rather than a silent skip.
"""

from __future__ import annotations

from bastion.artifacts.scanners.interface import ScanContext

__all__ = ["SEVEN_ZIP_SIGNATURE", "SevenZipScanner"]

SEVEN_ZIP_SIGNATURE = b"7z\xbc\xaf\x27\x1c"


class SevenZipScanner:
    """7z archives (signature ``7z\\xbc\\xaf\\x27\\x1c``): fail closed."""

    name = "7z"
    strong = True

    def matches(self, data: memoryview) -> bool:
        return data[: len(SEVEN_ZIP_SIGNATURE)] == SEVEN_ZIP_SIGNATURE

    def scan(self, data: memoryview, ctx: ScanContext) -> str:
        ctx.incomplete(
            "7z archive: bastion does not open 7z, so its members were not examined",
            rule_id="ARCHIVE-UNSUPPORTED",
        )
        return self.name
