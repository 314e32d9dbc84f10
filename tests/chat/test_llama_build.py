"""The llama.cpp that `make` builds runs on any x86-64 CPU with AVX2, not only on the one that
built it: a build with the build machine's own CPU flags once segfaulted on another CPU (one with
AVX-512 and AMX), and nothing here would have noticed on a CPU without them."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import llama_cpp
import pytest

# What only a CPU beyond AVX2 runs: AVX-512's zmm and mask registers, AMX's tiles and their
# instructions (plain substrings: a regular expression over the listings takes a minute).
BEYOND_AVX2 = ("%zmm", "%tmm", "tdpb", "tileload", *(f"%k{n}" for n in range(1, 8)))


pytestmark = pytest.mark.skipif(
    platform.machine() != "x86_64", reason="the portable-build check reads x86-64 instructions"
)


def llama_libraries() -> list[Path]:
    folder = Path(llama_cpp.__file__).parent / "lib"
    return sorted({path.resolve() for path in folder.glob("*.so*")})  # each once, not per link


def instructions_beyond_avx2(binary: Path) -> list[str]:
    objdump = shutil.which("objdump")
    assert objdump, "objdump (binutils) is needed to check the llama.cpp build"
    listing = subprocess.run(
        [objdump, "-d", "--no-show-raw-insn", str(binary)], capture_output=True, text=True,
        check=True,
    ).stdout  # fmt: skip
    return [marker for marker in BEYOND_AVX2 if marker in listing]


def test_the_check_finds_avx512_where_there_is_some(tmp_path: Path) -> None:
    """The check below is only worth something if it sees AVX-512 code when there is some."""
    source = tmp_path / "sum.c"
    source.write_text(
        "void add(float *a, const float *b, int n) { for (int i = 0; i < n; i++) a[i] += b[i]; }"
    )
    built = tmp_path / "sum.o"
    subprocess.run(
        ["gcc", "-O3", "-mavx512f", "-mprefer-vector-width=512", "-c", str(source), "-o",
         str(built)], check=True,
    )  # fmt: skip
    assert any(found.startswith("%zmm") for found in instructions_beyond_avx2(built))


def test_the_build_has_no_instructions_beyond_avx2() -> None:
    libraries = llama_libraries()
    assert any("ggml-cpu" in path.name for path in libraries), libraries
    for library in libraries:
        found = instructions_beyond_avx2(library)
        assert not found, f"{library.name} was built for a newer CPU than AVX2: {found[:5]}"
