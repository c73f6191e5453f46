#!/usr/bin/python3
"""Copies the committed benchmark tables into README.md, between its marker comments.

    bench/readme_tables.py        # after shmdict_peers and shmdict_bench wrote docs/

The README then quotes exactly what docs/bench/peers.md and docs/bench-core.txt hold, so a
figure in the README is never hand-edited.
"""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent


def peers_summary() -> str:
    text = (root / "docs/bench/peers.md").read_text()
    section = text.split("## Summary", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    meta = [line for line in text.splitlines() if line.startswith(("- **date**", "- **machine**",
                                                                   "- **CPU**", "- **git commit**"))]
    return "\n".join(table) + "\n\n" + "\n".join(meta)


def core_bench() -> str:
    lines = (root / "docs/bench-core.txt").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("operation"))
    end = next(i for i in range(start, len(lines)) if not lines[i].strip())
    return "```\n" + "\n".join(lines[start:end]) + "\n```"


def replace(readme: str, marker: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {marker}:begin -->\n).*?(<!-- {marker}:end -->)", re.S)
    if not pattern.search(readme):
        sys.exit(f"README.md has no {marker} markers")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), readme)


readme_path = root / "README.md"
readme = readme_path.read_text()
readme = replace(readme, "peers-summary", peers_summary())
readme = replace(readme, "core-bench", core_bench())
readme_path.write_text(readme)
