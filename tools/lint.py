#!/usr/bin/env python3
"""`make lint`: the tree's C++ formatting and static checks, as CI runs them.

1. clang-format (.clang-format) over every tracked .h/.cpp file except the
   generated ones below: any difference fails (`--fix` rewrites in place).
2. clang-tidy (.clang-tidy: bugprone-*, performance-*, the naming rules,
   the function size) over every translation unit of the build's
   compile_commands.json, the tests' included; the project headers a unit
   includes are checked with it. Any diagnostic fails.

clang-tidy parses LibTorch's headers for each unit (30-40 s a unit), so its
verdicts are cached: the key is the clang-tidy version, the .clang-tidy files
that apply to the unit (its folder's and those above it), the unit's compile
flags and its preprocessed text (`clang++ -E`, which covers every header it
reads), all with the checkout's path replaced by a placeholder, so a clean
clone elsewhere finds the same entries. A change to any input re-checks
exactly the units it reaches. Cache:
$LLMREC_LINT_CACHE, else $XDG_CACHE_HOME/llmrec-lint, else ~/.cache/llmrec-lint.

Usage: tools/lint.py [--build DIR] [--fix] [--jobs N] [--no-tidy] [FILE...]
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Generated code keeps its generator's layout (data/unicode_tables.cpp:
# tools/gen_unicode_tables.py).
GENERATED = {"data/unicode_tables.cpp"}
PLACEHOLDER = "@LLMREC_ROOT@"


def tracked_sources():
    out = subprocess.check_output(["git", "ls-files", "*.h", "*.cpp"], cwd=ROOT, text=True)
    return [f for f in out.split() if f not in GENERATED]


def run_format(files, fix):
    if fix:
        subprocess.check_call(["clang-format", "-i", *files], cwd=ROOT)
        return 0
    r = subprocess.run(["clang-format", "--dry-run", "--Werror", *files], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        shown = r.stderr.splitlines()
        print("\n".join(shown[:60]))
        bad = sorted({m.group(1) for m in re.finditer(r"^(\S+?):\d+:\d+: (?:error|warning)", r.stderr, re.M)})
        print(f"lint: clang-format: {len(bad)} file(s) differ from .clang-format "
              f"({', '.join(bad[:10])}{' ...' if len(bad) > 10 else ''}); `make lint-fix` rewrites them")
        return 1
    print(f"lint: clang-format: {len(files)} files formatted")
    return 0


def unit_flags(entry):
    """The unit's compiler arguments without the compiler, output, -c and the
    GCC precompiled header (clang cannot read it; the unit's own includes
    stand on their own)."""
    args = entry["arguments"] if "arguments" in entry else shlex.split(entry["command"])
    out, skip = [], False
    for i, a in enumerate(args[1:]):
        if skip:
            skip = False
            continue
        if a in ("-o", "-include") and i + 2 < len(args):
            nxt = args[i + 2]
            if a == "-o" or nxt.endswith("cmake_pch.hxx"):
                skip = True
                continue
        if a in ("-c", "-Winvalid-pch") or a == entry["file"]:
            continue
        out.append(a)
    return out


def normalise(text):
    return text.replace(str(ROOT), PLACEHOLDER)


def unit_config(src):
    """The .clang-tidy files that apply to `src`: its folder's and every one
    above it up to the root, as clang-tidy finds them (the key of its verdict)."""
    parts, d = [], Path(src).resolve().parent
    while True:
        f = d / ".clang-tidy"
        if f.exists():
            parts.append(normalise(str(f)) + "\n" + f.read_text())
        if d == ROOT or d == d.parent:
            return "".join(reversed(parts))
        d = d.parent


def tidy_unit(entry, version, cache):
    src = entry["file"]
    config = unit_config(src)
    flags = unit_flags(entry)
    pre = subprocess.run(["clang++", *flags, "-E", src], cwd=entry["directory"], capture_output=True)
    if pre.returncode != 0:
        return src, f"lint: clang++ -E failed for {src}:\n{pre.stderr.decode(errors='replace')}", 1
    key = hashlib.sha256()
    for part in (version, config, normalise(" ".join(flags)), normalise(src)):
        key.update(part.encode())
        key.update(b"\0")
    key.update(normalise(pre.stdout.decode(errors="surrogateescape")).encode(errors="surrogateescape"))
    path = cache / key.hexdigest()
    if path.exists():
        rc, text = path.read_text().split("\n", 1)
        return src, text.replace(PLACEHOLDER, str(ROOT)), int(rc)
    r = subprocess.run(["clang-tidy", "--quiet", src, "--", *flags],
                       cwd=entry["directory"], capture_output=True, text=True)
    if r.returncode < 0:  # stopped by a signal (a lint interrupted): no verdict, so nothing cached
        return src, f"lint: clang-tidy was stopped by signal {-r.returncode} on {src}", 1
    diags = "\n".join(l for l in r.stdout.splitlines() if l.strip())
    rc = 1 if (r.returncode != 0 or re.search(r": (warning|error):", diags)) else 0
    if r.returncode != 0 and not diags:
        diags = r.stderr
    # A name of its own per writer: two units can share a key (the same file in
    # two targets with the same flags) and run at once in this process's threads.
    with tempfile.NamedTemporaryFile("w", dir=cache, prefix=path.name + ".", suffix=".tmp", delete=False) as tmp:
        tmp.write(f"{rc}\n{normalise(diags)}")
    os.replace(tmp.name, path)
    return src, diags, rc


def run_tidy(build, jobs, only):
    db = Path(build) / "compile_commands.json"
    if not db.exists():
        print(f"lint: {db} not found: configure the build first (make build)")
        return 1
    # The project's own units (not the build's generated precompiled-header units).
    build_dir = str(Path(build).resolve())
    entries = [e for e in json.loads(db.read_text())
               if e["file"].startswith(str(ROOT)) and not e["file"].startswith(build_dir)]
    if only:
        wanted = {str((ROOT / f).resolve()) for f in only}
        entries = [e for e in entries if e["file"] in wanted]
    version = subprocess.check_output(["clang-tidy", "--version"], text=True)
    cache = Path(os.environ.get("LLMREC_LINT_CACHE")
                 or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llmrec-lint")
    cache.mkdir(parents=True, exist_ok=True)
    seen, failed = set(), []
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        for src, diags, rc in pool.map(lambda e: tidy_unit(e, version, cache), entries):
            if rc:
                failed.append(os.path.relpath(src, ROOT))
            # A header's findings repeat in every unit that includes it: once.
            for block in re.split(r"\n(?=\S+:\d+:\d+: (?:warning|error|note):)", diags):
                if block.strip() and block not in seen:
                    seen.add(block)
                    print(block)
    if failed:
        print(f"lint: clang-tidy: findings in {len(failed)} of {len(entries)} units: {', '.join(failed[:10])}"
              f"{' ...' if len(failed) > 10 else ''}")
        return 1
    print(f"lint: clang-tidy: {len(entries)} units clean")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default="build")
    p.add_argument("--fix", action="store_true", help="reformat in place (clang-tidy is not run)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--no-tidy", action="store_true")
    p.add_argument("files", nargs="*", help="only these (default: every file / unit)")
    a = p.parse_args()
    files = a.files or tracked_sources()
    rc = run_format([f for f in files if f.endswith((".h", ".cpp")) and f not in GENERATED], a.fix)
    if a.fix or a.no_tidy:
        return rc
    return run_tidy(a.build, a.jobs, a.files) or rc


if __name__ == "__main__":
    sys.exit(main())
