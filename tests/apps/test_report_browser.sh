#!/usr/bin/env bash
# The run report in a real browser: a short training run, its
# metrics.jsonl then holding a second run appended (what a fresh run in the
# same directory leaves), `llmrec report`, and headless Chromium renders the
# page. Checks: every curve's steps increase (the latest run only), the
# screenshot is not blank (the charts drew: many colours, blue curve
# pixels), and the browser logged no console error. Skips loudly without
# Chromium (make deps installs it).
# Usage: test_report_browser.sh LLMREC_BIN SOURCE_DIR
set -uo pipefail
bin=$(realpath "$1")
src=$(realpath "$2")
. "$src/tests/apps/cli_lib.sh"
browser=$(command -v chromium || command -v chromium-browser || true)
if [[ -z $browser ]]; then
  echo "SKIP report in a browser: chromium not found (make deps installs it)"
  echo "report browser: 0 passed, 0 failed, 1 skipped"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
tiny_setup "$work"
"$bin" train -c tiny.yaml --set run.dir=run --set train.max_steps=30 --set train.log_every=3 --set train.eval_every=10 \
  --set "eval.baselines=[popularity]" --set "eval.fusion.weights={}" --set 'eval.oracle_dir=""' >train.txt 2>&1 \
  || fail "train" train.txt
cat run/metrics.jsonl run/metrics.jsonl >m2 && mv m2 run/metrics.jsonl  # a second run appended
"$bin" report run >report.txt 2>&1 && ok "llmrec report" || fail "llmrec report" report.txt

timeout 120 "$browser" --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1200,2600 \
  --enable-logging=stderr --v=0 --screenshot="$work/shot.png" "file://$work/run/report.html" >browser.txt 2>&1
rc=$?
[[ $rc -eq 0 && -s shot.png ]] && ok "Chromium rendered the report" || fail "Chromium exit $rc, no screenshot" browser.txt
if grep -E 'CONSOLE|Uncaught' browser.txt >console.txt; then
  fail "the browser logged console messages" console.txt
else
  ok "no console error"
fi

python3 - run/report.html shot.png >pixels.txt 2>&1 <<'PY' && ok "$(cat pixels.txt)" || fail "report pixels and curves" pixels.txt
import re, struct, sys, zlib
h = open(sys.argv[1], encoding="utf-8").read()
curves = re.findall(r'<polyline[^>]* points="([^"]+)"', h)
assert len(curves) >= 5, "curves: %d" % len(curves)
for pts in curves:
    xs = [float(p.split(",")[0]) for p in pts.split()]
    assert all(b > a for a, b in zip(xs, xs[1:])), "a curve goes back: " + pts[:120]
# Decode the PNG (8-bit RGB or RGBA, non-interlaced) and count its colours.
data = open(sys.argv[2], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat, w = 8, b"", 0
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        w, hgt, depth, ctype = struct.unpack(">IIBB", body[:10])
        assert depth == 8 and ctype in (2, 6), "PNG depth %d colour type %d" % (depth, ctype)
        bpp = 3 if ctype == 2 else 4
    elif kind == b"IDAT":
        idat += body
    pos += 12 + n
raw = zlib.decompress(idat)
stride = w * bpp
prev = bytearray(stride)
colours, blue = set(), 0
for y in range(hgt):
    f = raw[y * (stride + 1)]
    line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for x in range(stride):
        a = line[x - bpp] if x >= bpp else 0
        b = prev[x]
        c = prev[x - bpp] if x >= bpp else 0
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + b) & 255
        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    for x in range(0, stride, bpp):
        r, g, bl = line[x], line[x + 1], line[x + 2]
        colours.add((r, g, bl))
        blue += bl > 150 and r < 100 and g < 160  # the curves' and bars' blue
    prev = line
assert len(colours) > 50, "a blank page: %d colours" % len(colours)
assert blue > 500, "no curve drawn: %d blue pixels" % blue
print("%d curves with increasing steps; screenshot %dx%d, %d colours, %d blue pixels" % (len(curves), w, hgt, len(colours), blue))
PY

echo "report browser: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
