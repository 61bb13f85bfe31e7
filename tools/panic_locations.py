"""Print the file:line:column of every panic location left in a 32-bit little-endian ELF.

Used by tools/check_no_panic.sh on an image built with `--features locate`: rustc stores each
panic site as a `core::panic::Location` (pointer to the path, its length, line, column).
"""

from __future__ import annotations

import struct
import sys


def locations(path: str) -> list[tuple[str, int, int]]:
    with open(path, "rb") as f:
        data = f.read()
    shoff = struct.unpack_from("<I", data, 0x20)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x2E)
    secs = [struct.unpack_from("<IIIIII", data, shoff + i * shentsize) for i in range(shnum)]
    names_off = secs[shstrndx][4]
    found: list[tuple[str, int, int]] = []
    for name, _typ, _flags, addr, off, size in secs:
        if data[names_off + name : data.index(b"\0", names_off + name)] != b".rodata":
            continue
        blob = data[off : off + size]
        i = blob.find(b".rs")
        while i != -1:
            start = max(
                blob.rfind(b"/work", 0, i), blob.rfind(b"/usr", 0, i), blob.rfind(b"\0", 0, i) + 1
            )
            pat = struct.pack("<II", addr + start, i + 3 - start)
            j = blob.find(pat)
            while j != -1:
                line, col = struct.unpack_from("<II", blob, j + 8)
                found.append((blob[start : i + 3].decode(errors="replace"), line, col))
                j = blob.find(pat, j + 1)
            i = blob.find(b".rs", i + 1)
    return sorted(set(found))


def main() -> None:
    for path, line, col in locations(sys.argv[1]):
        print(f"{path}:{line}:{col}")


if __name__ == "__main__":
    main()
