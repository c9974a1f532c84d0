"""Where debootstrap fetches from: the host's own apt configuration, or an override."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

# The guests' releases: Debian 12 and Debian 13 (the current stable).
SUITES = ("bookworm", "trixie")
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def _deb822_paragraphs(text: str) -> Iterator[dict[str, str]]:
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        last = ""
        for line in block.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and last:
                fields[last] += " " + line.strip()
            elif ":" in line:
                last, _, value = line.partition(":")
                last = last.strip().lower()
                fields[last] = value.strip()
        if fields:
            yield fields


def apt_mirror(suite: str) -> str:
    """The Debian mirror to debootstrap `suite` from.

    ``EC2NET_SYSTEST_MIRROR`` wins; otherwise the first non-security ``deb`` source in
    the host's apt configuration that carries ``main`` of a guest release (a Debian
    mirror serves every release, so a bookworm host's mirror also has trixie), the
    asked-for suite's first; else deb.debian.org.
    """
    wanted = (suite, *(s for s in SUITES if s != suite))
    env = os.environ.get("EC2NET_SYSTEST_MIRROR")
    if env:
        return env
    apt = Path("/etc/apt")
    candidates: list[str] = []
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        for para in _deb822_paragraphs(path.read_text(errors="replace")):
            if para.get("enabled", "yes").lower() == "no":
                continue
            if "deb" not in para.get("types", "").split():
                continue
            if not set(wanted) & set(para.get("suites", "").split()):
                continue
            if "main" not in para.get("components", "").split():
                continue
            candidates.extend(para.get("uris", "").split())
    lists = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]
    for path in lists:
        if not path.is_file():
            continue
        for raw in path.read_text(errors="replace").splitlines():
            words = re.sub(r"\[[^]]*\]", " ", raw.split("#", 1)[0]).split()
            if len(words) >= 4 and words[0] == "deb" and words[2] in wanted and "main" in words:
                candidates.append(words[1])
    for uri in candidates:
        if "security" not in uri:
            return uri.rstrip("/")
    return DEFAULT_MIRROR
