#!/usr/bin/env python3
"""Generates data/unicode_tables.cpp: the Unicode character data that the
WordPiece normalizer (data/wordpiece.cpp, Hugging Face BertNormalizer +
BertPreTokenizer semantics) needs, from Python's own `unicodedata`, so the
project depends on no Unicode library.

    python3 tools/gen_unicode_tables.py            # rewrites data/unicode_tables.cpp
    python3 tools/gen_unicode_tables.py --check    # exit 1 if the checked-in file differs

The output depends only on the Unicode version of the Python that runs it
(printed in the file's header); the same Python gives the same bytes.

Tables (all sorted by code point, looked up by binary search):
  kFlagRuns        (first << 8 | flags): the flags hold from `first` up to
                   the next run's first code point; see unicode_tables.h for
                   the flag bits (BERT control, whitespace, punctuation, Mn,
                   has-decomposition, has-lowercase, nonzero combining class).
  kCombiningRuns   (first << 8 | ccc): canonical combining class, in runs.
  kDecompositions  full canonical decomposition (NFD of the single code
                   point) of every code point that has one, except the Hangul
                   syllables, which are decomposed algorithmically.
  kLowercase       full lowercase mapping (Python str.lower() of the single
                   code point, which is Rust char::to_lowercase: unconditional
                   SpecialCasing included, no final-sigma context).
  kMappingData     the code points the two mapping tables point into.
"""
import argparse
import os
import sys
import unicodedata

MAX_CP = 0x110000
HANGUL_FIRST, HANGUL_LAST = 0xAC00, 0xD7A3

# Flag bits; keep in sync with data/unicode_tables.h.
CONTROL = 1 << 0
WHITESPACE = 1 << 1
PUNCTUATION = 1 << 2
MARK_NONSPACING = 1 << 3
HAS_DECOMPOSITION = 1 << 4
HAS_LOWERCASE = 1 << 5
COMBINING = 1 << 6

# Rust's char::is_whitespace is the White_Space property, which is exactly
# the space separators (Zs) plus these (PropList.txt, stable since Unicode 6.3).
WHITE_SPACE_EXTRA = {0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x85, 0x2028, 0x2029}


def is_ascii_punctuation(cp):
    return 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126


def flags_of(cp):
    ch = chr(cp)
    cat = unicodedata.category(ch)
    f = 0
    # BertNormalizer deletes "other" chars: the Rust crate it uses counts
    # Cc, Cf and Co; Cs cannot occur in valid UTF-8 (kept here for safety);
    # unassigned code points (Cn) are kept. \t \n \r count as whitespace.
    if cat in ('Cc', 'Cf', 'Co', 'Cs') and cp not in (0x09, 0x0A, 0x0D):
        f |= CONTROL
    if cat == 'Zs' or cp in WHITE_SPACE_EXTRA:
        f |= WHITESPACE
    if cat.startswith('P') or is_ascii_punctuation(cp):
        f |= PUNCTUATION
    if cat == 'Mn':
        f |= MARK_NONSPACING
    if not HANGUL_FIRST <= cp <= HANGUL_LAST and unicodedata.normalize('NFD', ch) != ch:
        f |= HAS_DECOMPOSITION
    if ch.lower() != ch:
        f |= HAS_LOWERCASE
    if unicodedata.combining(ch) != 0:
        f |= COMBINING
    return f


def runs(values):
    """[(first, value)] where value changes; the first run starts at 0."""
    out = []
    prev = None
    for cp, v in enumerate(values):
        if v != prev:
            out.append((cp, v))
            prev = v
    return out


def check_assumptions(decomp, lower):
    for cp, parts in decomp.items():
        assert 1 <= len(parts) <= 4, hex(cp)
        assert not any(HANGUL_FIRST <= p <= HANGUL_LAST for p in parts), hex(cp)
    for cp, parts in lower.items():
        assert 1 <= len(parts) <= 3, hex(cp)
    for cp in range(MAX_CP):
        ch = chr(cp)
        # The normalizer sorts combining marks before lowercasing: that is only
        # the same as lowercasing first if no mark has a lowercase mapping.
        if unicodedata.combining(ch):
            assert ch.lower() == ch, hex(cp)
    assert max(v for v in (unicodedata.combining(chr(c)) for c in range(MAX_CP))) < 256


# The lookups over the tables above (the API of data/unicode_tables.h).
LOOKUP_CODE = r"""
namespace {

// The value of the run holding `cp` in a (first << 8 | value) run table whose
// first run starts at code point 0.
std::uint8_t run_value(const std::uint32_t* runs, std::size_t count, char32_t cp) {
  const std::uint32_t key = static_cast<std::uint32_t>(cp) << 8 | 0xFFu;
  std::size_t lo = 0, hi = count;  // first run with key < runs[i]
  while (lo < hi) {
    std::size_t mid = (lo + hi) / 2;
    if (runs[mid] <= key) lo = mid + 1;
    else hi = mid;
  }
  return static_cast<std::uint8_t>(runs[lo - 1] & 0xFFu);
}

int mapping_lookup(const detail::Mapping* table, std::size_t count, char32_t cp, char32_t* out) {
  std::size_t lo = 0, hi = count;
  while (lo < hi) {
    std::size_t mid = (lo + hi) / 2;
    if (table[mid].cp < cp) lo = mid + 1;
    else hi = mid;
  }
  if (lo == count || table[lo].cp != cp) {
    out[0] = cp;
    return 1;
  }
  for (int i = 0; i < table[lo].length; ++i) out[i] = detail::kMappingData[table[lo].offset + i];
  return table[lo].length;
}

// Hangul syllable decomposition (Unicode 3.12, "Conjoining Jamo Behavior").
constexpr char32_t kHangulFirst = 0xAC00, kJamoL = 0x1100, kJamoV = 0x1161, kJamoT = 0x11A7;
constexpr char32_t kHangulCount = 11172, kJamoVCount = 21, kJamoTCount = 28;

}  // namespace

namespace detail {
std::uint8_t char_flags_slow(char32_t cp) {
  if (cp >= 0x110000) return 0;
  return run_value(kFlagRuns, kFlagRunCount, cp);
}
}  // namespace detail

std::uint8_t char_combining_class(char32_t cp) {
  if (cp >= 0x110000) return 0;
  return run_value(detail::kCombiningRuns, detail::kCombiningRunCount, cp);
}

int char_decompose(char32_t cp, char32_t* out) {
  if (cp >= kHangulFirst && cp < kHangulFirst + kHangulCount) {
    const char32_t s = cp - kHangulFirst;
    out[0] = kJamoL + s / (kJamoVCount * kJamoTCount);
    out[1] = kJamoV + (s % (kJamoVCount * kJamoTCount)) / kJamoTCount;
    if (s % kJamoTCount == 0) return 2;
    out[2] = kJamoT + s % kJamoTCount;
    return 3;
  }
  return mapping_lookup(detail::kDecompositions, detail::kDecompositionCount, cp, out);
}

int char_lowercase(char32_t cp, char32_t* out) {
  if (cp < 0x80) {
    out[0] = (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
    return 1;
  }
  return mapping_lookup(detail::kLowercase, detail::kLowercaseCount, cp, out);
}
"""


def fmt_list(items, per_line):
    lines = []
    for i in range(0, len(items), per_line):
        lines.append('    ' + ', '.join(items[i:i + per_line]) + ',')
    return '\n'.join(lines)


def generate():
    flags = [flags_of(cp) for cp in range(MAX_CP)]
    ccc = [unicodedata.combining(chr(cp)) for cp in range(MAX_CP)]
    decomp = {}
    lower = {}
    for cp in range(MAX_CP):
        ch = chr(cp)
        if flags[cp] & HAS_DECOMPOSITION:
            decomp[cp] = [ord(c) for c in unicodedata.normalize('NFD', ch)]
        if flags[cp] & HAS_LOWERCASE:
            lower[cp] = [ord(c) for c in ch.lower()]
    check_assumptions(decomp, lower)

    data = []
    index = {}

    def intern(parts):
        key = tuple(parts)
        if key not in index:
            index[key] = len(data)
            data.extend(parts)
        return index[key]

    decomp_rows = [(cp, intern(p), len(p)) for cp, p in sorted(decomp.items())]
    lower_rows = [(cp, intern(p), len(p)) for cp, p in sorted(lower.items())]
    assert len(data) < 1 << 16
    flag_runs = runs(flags)
    ccc_runs = runs(ccc)

    out = []
    w = out.append
    w('// GENERATED by tools/gen_unicode_tables.py from Python %d.%d unicodedata, Unicode %s.'
      % (sys.version_info[0], sys.version_info[1], unicodedata.unidata_version))
    w('// Do not edit: rerun the generator (`python3 tools/gen_unicode_tables.py`).')
    w('// %d flag runs, %d combining-class runs, %d decompositions, %d lowercase mappings.'
      % (len(flag_runs), len(ccc_runs), len(decomp_rows), len(lower_rows)))
    w('#include "data/unicode_tables.h"')
    w('')
    w('namespace llmrec::unicode {')
    w('')
    w('const char* const kUnicodeVersion = "%s";' % unicodedata.unidata_version)
    w('')
    w('namespace detail {')
    w('')
    w('const std::uint8_t kAsciiFlags[128] = {')
    w(fmt_list(['%d' % flags[cp] for cp in range(128)], 16))
    w('};')
    w('')
    w('const std::uint32_t kFlagRuns[] = {')
    w(fmt_list(['0x%08x' % (cp << 8 | f) for cp, f in flag_runs], 8))
    w('};')
    w('const std::size_t kFlagRunCount = sizeof(kFlagRuns) / sizeof(kFlagRuns[0]);')
    w('')
    w('const std::uint32_t kCombiningRuns[] = {')
    w(fmt_list(['0x%08x' % (cp << 8 | c) for cp, c in ccc_runs], 8))
    w('};')
    w('const std::size_t kCombiningRunCount = sizeof(kCombiningRuns) / sizeof(kCombiningRuns[0]);')
    w('')
    w('const char32_t kMappingData[] = {')
    w(fmt_list(['0x%x' % c for c in data], 10))
    w('};')
    w('')
    w('const Mapping kDecompositions[] = {')
    w(fmt_list(['{0x%x, %d, %d}' % r for r in decomp_rows], 5))
    w('};')
    w('const std::size_t kDecompositionCount = sizeof(kDecompositions) / sizeof(kDecompositions[0]);')
    w('')
    w('const Mapping kLowercase[] = {')
    w(fmt_list(['{0x%x, %d, %d}' % r for r in lower_rows], 5))
    w('};')
    w('const std::size_t kLowercaseCount = sizeof(kLowercase) / sizeof(kLowercase[0]);')
    w('')
    w('}  // namespace detail')
    w(LOOKUP_CODE)
    w('}  // namespace llmrec::unicode')
    return '\n'.join(out) + '\n'


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.normpath(os.path.join(here, '..', 'data', 'unicode_tables.cpp'))
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--output', default=default_out)
    ap.add_argument('--check', action='store_true', help='compare with --output instead of writing it')
    args = ap.parse_args()
    text = generate()
    if args.check:
        with open(args.output, encoding='utf-8') as f:
            same = f.read() == text
        print('%s is %s' % (args.output, 'up to date' if same else 'OUT OF DATE'))
        return 0 if same else 1
    tmp = args.output + '.tmp'
    with open(tmp, 'w', encoding='utf-8', newline='\n') as f:
        f.write(text)
    os.replace(tmp, args.output)
    print('wrote %s (Unicode %s)' % (args.output, unicodedata.unidata_version))
    return 0


if __name__ == '__main__':
    sys.exit(main())
