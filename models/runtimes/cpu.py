"""What this CPU is, as far as the answers depend on it: /proc/cpuinfo's model name and the
instruction sets that decide int8 arithmetic.

CTranslate2's int8 matrix multiply sums byte products in 16 bits on a CPU without dot-product
instructions (AVX2's vpmaddubsw), where pairs can saturate; with AVX-512 VNNI, AVX-VNNI or AMX it
sums in 32 bits. The shipped Transformer answers 90% of interpolate questions on the first kind and
100% on the second (benchmarks/REPORT.md, serving speed), so an int8 accuracy belongs
to a kernel class, not to the weights alone.
"""
from pathlib import Path

# the flags benchmark results record (the ones that decide int8 arithmetic), in this order
INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
# any one of these gives an int8 multiply that sums in 32 bits
INT8_DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpuinfo_field(name: str) -> str | None:
    """The first /proc/cpuinfo line's value for `name` (e.g. "model name", "flags"), or None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == name:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags() -> list[str]:
    """Which of INT8_FLAGS this CPU reports, in that order."""
    present = set((cpuinfo_field("flags") or "").split())
    return [flag for flag in INT8_FLAGS if flag in present]


def int8_kernel(flags=None) -> str:
    """The int8 kernel class of a CPU with these flags (default: this one's): "vnni" (a dot-product
    instruction, sums in 32 bits), "avx2" (pairs summed in 16 bits) or "other" (neither known)."""
    flags = set(cpu_flags() if flags is None else flags)
    if flags & set(INT8_DOT_PRODUCT_FLAGS):
        return "vnni"
    return "avx2" if "avx2" in flags else "other"
