#include "data/vocab_builder.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <queue>
#include <tuple>
#include <utility>

#include "common/error.h"

namespace llmrec {
namespace {

/// The special tokens, in id order.
constexpr std::string_view kSpecialTokens[] = {kPadToken, kUnkToken, kClsToken, kSepToken, kMaskToken};
constexpr int kSpecialCount = static_cast<int>(std::size(kSpecialTokens));

/// The UTF-8 code points of a (valid UTF-8) word, as strings. UTF-8 byte
/// order is code point order, so sorting these sorts by code point.
std::vector<std::string_view> split_code_points(std::string_view word) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  for (std::size_t i = 1; i <= word.size(); ++i) {
    if (i == word.size() || (static_cast<unsigned char>(word[i]) & 0xC0) != 0x80) {
      out.push_back(word.substr(start, i - start));
      start = i;
    }
  }
  return out;
}

using PairKey = std::uint64_t;
inline PairKey pair_key(std::int32_t left, std::int32_t right) {
  return static_cast<PairKey>(static_cast<std::uint32_t>(left)) << 32 | static_cast<std::uint32_t>(right);
}
inline std::int32_t pair_left(PairKey k) {
  return static_cast<std::int32_t>(k >> 32);
}
inline std::int32_t pair_right(PairKey k) {
  return static_cast<std::int32_t>(k & 0xFFFFFFFFu);
}

/// A candidate merge. The heap's top is the highest count, then the smallest
/// (left id, right id): a total order, so the result is deterministic.
struct Candidate {
  std::int64_t count;
  PairKey pair;
};
struct CandidateLess {
  bool operator()(const Candidate& a, const Candidate& b) const {
    if (a.count != b.count) return a.count < b.count;
    return a.pair > b.pair;  // (left, right) compare as the packed key
  }
};

struct Word {
  std::vector<std::int32_t> symbols;
  std::int64_t count;
};

/// The BPE state: pair counts over all words, which words hold each pair.
class MergeLearner {
 public:
  MergeLearner(std::vector<Word> words, std::vector<std::string>& vocab,
               std::unordered_map<std::string, std::int32_t>& ids)
      : words_(std::move(words)), vocab_(vocab), ids_(ids), stamp_(words_.size(), -1) {
    for (std::size_t w = 0; w < words_.size(); ++w) {
      const auto& s = words_[w].symbols;
      for (std::size_t i = 0; i + 1 < s.size(); ++i) add(pair_key(s[i], s[i + 1]), words_[w].count, w);
    }
    for (const auto& [pair, count] : counts_) heap_.push({count, pair});
  }

  void run(std::size_t vocab_size, std::int64_t min_frequency) {
    for (int step = 0; vocab_.size() < vocab_size && !heap_.empty(); ++step) {
      const Candidate top = heap_.top();
      heap_.pop();
      auto it = counts_.find(top.pair);
      const std::int64_t current = it == counts_.end() ? 0 : it->second;
      if (current != top.count) {  // stale: counts only fall, re-queue at the current one
        if (current > 0) heap_.push({current, top.pair});
        continue;
      }
      if (current < min_frequency) break;
      merge(top.pair, step);
    }
  }

 private:
  void add(PairKey pair, std::int64_t delta, std::size_t word) {
    counts_[pair] += delta;
    if (delta > 0) {
      auto& holders = holders_[pair];
      if (holders.empty() || holders.back() != static_cast<std::int32_t>(word)) {
        holders.push_back(static_cast<std::int32_t>(word));
      }
      touched_.push_back(pair);
    }
  }

  void merge(PairKey pair, int step) {
    const std::int32_t a = pair_left(pair), b = pair_right(pair);
    const std::string& right = vocab_[static_cast<std::size_t>(b)];
    std::string token = vocab_[static_cast<std::size_t>(a)];
    token.append(right, right.compare(0, 2, kWordPieceContinuation) == 0 ? 2 : 0, std::string::npos);
    auto [it, inserted] = ids_.emplace(token, static_cast<std::int32_t>(vocab_.size()));
    if (inserted) vocab_.push_back(token);
    const std::int32_t m = it->second;

    std::vector<std::int32_t> holders = std::move(holders_[pair]);
    holders_.erase(pair);
    touched_.clear();
    std::vector<std::int32_t> merged;
    for (std::int32_t w : holders) {
      if (stamp_[static_cast<std::size_t>(w)] == step) continue;
      stamp_[static_cast<std::size_t>(w)] = step;
      Word& word = words_[static_cast<std::size_t>(w)];
      const auto& s = word.symbols;
      const std::int64_t c = word.count;
      merged.clear();
      for (std::size_t i = 0; i < s.size();) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          if (!merged.empty()) {
            add(pair_key(merged.back(), a), -c, w);
            add(pair_key(merged.back(), m), c, w);
          }
          if (i + 2 < s.size()) {
            add(pair_key(b, s[i + 2]), -c, w);
            add(pair_key(m, s[i + 2]), c, w);
          }
          add(pair, -c, w);
          merged.push_back(m);
          i += 2;
        } else {
          merged.push_back(s[i]);
          ++i;
        }
      }
      word.symbols.assign(merged.begin(), merged.end());
    }
    counts_.erase(pair);  // every occurrence is merged
    std::sort(touched_.begin(), touched_.end());
    touched_.erase(std::unique(touched_.begin(), touched_.end()), touched_.end());
    for (PairKey p : touched_) {
      const std::int64_t count = counts_[p];
      if (count > 0) heap_.push({count, p});
    }
  }

  std::vector<Word> words_;
  std::vector<std::string>& vocab_;
  std::unordered_map<std::string, std::int32_t>& ids_;
  std::vector<int> stamp_;  ///< last merge step that updated each word
  std::unordered_map<PairKey, std::int64_t> counts_;
  std::unordered_map<PairKey, std::vector<std::int32_t>> holders_;  ///< may list words that lost the pair
  std::priority_queue<Candidate, std::vector<Candidate>, CandidateLess> heap_;
  std::vector<PairKey> touched_;  ///< pairs whose count rose during the current merge
};

}  // namespace

VocabBuilder::VocabBuilder(VocabBuilderOptions options) : options_(options) {
  if (options_.vocab_size < kSpecialCount) {
    throw Error(fmt::format("vocab_size must be >= {} (the special tokens), got {}", kSpecialCount,
                            options_.vocab_size));
  }
  if (options_.min_frequency < 1) {
    throw Error(fmt::format("min_frequency must be >= 1, got {}", options_.min_frequency));
  }
  if (options_.normalization.max_input_chars_per_word < 1) {
    throw Error(fmt::format("max_input_chars_per_word must be >= 1, got {}",
                            options_.normalization.max_input_chars_per_word));
  }
}

void VocabBuilder::add_text(std::string_view text) {
  for (std::string& w : wordpiece_words(text, options_.normalization)) {
    ++words_[std::move(w)];
    ++word_total_;
  }
}

std::vector<std::string> VocabBuilder::build() const {
  // Words in byte order, so that nothing below depends on hash order.
  std::vector<std::pair<std::string_view, std::int64_t>> words(words_.begin(), words_.end());
  std::sort(words.begin(), words.end());

  // The alphabet: plain code points (anywhere), "##" ones (after a start).
  std::map<std::string_view, std::int64_t> plain, inner;
  std::vector<std::vector<std::string_view>> chars(words.size());
  for (std::size_t w = 0; w < words.size(); ++w) {
    chars[w] = split_code_points(words[w].first);
    for (std::size_t i = 0; i < chars[w].size(); ++i) {
      plain[chars[w][i]] += words[w].second;
      if (i > 0) inner[chars[w][i]] += words[w].second;
    }
  }
  struct Letter {
    std::string_view cp;
    std::int64_t count;
    bool inner;
  };
  std::vector<Letter> letters;
  for (const auto& [cp, count] : plain) letters.push_back({cp, count, false});
  for (const auto& [cp, count] : inner) letters.push_back({cp, count, true});
  const std::size_t room = static_cast<std::size_t>(options_.vocab_size - kSpecialCount);
  if (letters.size() > room) {  // keep the most frequent
    std::stable_sort(letters.begin(), letters.end(),
                     [](const Letter& x, const Letter& y) { return x.count > y.count; });
    letters.resize(room);
    std::sort(letters.begin(), letters.end(), [](const Letter& x, const Letter& y) {
      return std::tie(x.inner, x.cp) < std::tie(y.inner, y.cp);
    });
  }

  std::vector<std::string> vocab;
  std::unordered_map<std::string, std::int32_t> ids;
  auto add_token = [&](std::string token) {
    ids.emplace(token, static_cast<std::int32_t>(vocab.size()));
    vocab.push_back(std::move(token));
  };
  for (std::string_view special : kSpecialTokens) add_token(std::string(special));
  for (const Letter& l : letters) {
    add_token(l.inner ? std::string(kWordPieceContinuation) + std::string(l.cp) : std::string(l.cp));
  }

  // Words as symbol ids; a word with a dropped letter cannot be tokenized
  // by this vocabulary anyway and teaches no merges.
  std::vector<Word> symbol_words;
  for (std::size_t w = 0; w < words.size(); ++w) {
    Word word{{}, words[w].second};
    bool complete = true;
    for (std::size_t i = 0; i < chars[w].size() && complete; ++i) {
      auto it = ids.find(i == 0 ? std::string(chars[w][i])
                                : std::string(kWordPieceContinuation) + std::string(chars[w][i]));
      if (it == ids.end())
        complete = false;
      else
        word.symbols.push_back(it->second);
    }
    if (complete && word.symbols.size() > 1) symbol_words.push_back(std::move(word));
  }

  MergeLearner learner(std::move(symbol_words), vocab, ids);
  learner.run(static_cast<std::size_t>(options_.vocab_size), options_.min_frequency);
  return vocab;
}

void write_vocab(const std::vector<std::string>& tokens, const std::string& path) {
  for (std::size_t id = 0; id < tokens.size(); ++id) {
    const std::string& t = tokens[id];
    if (t.empty() || t.find_first_of("\n\r") != std::string::npos || t.back() == ' ' || t.back() == '\t' ||
        t.back() == '\v' || t.back() == '\f') {
      throw Error(
          fmt::format("{}: token {} ('{}') is empty, holds a line break or ends in whitespace; "
                      "it would not read back",
                      path, id, t));
    }
  }
  const std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) throw IoError(fmt::format("cannot write {}: {}", tmp, std::strerror(errno)));
  bool ok = true;
  for (const std::string& t : tokens) {
    ok = ok && std::fwrite(t.data(), 1, t.size(), f) == t.size() && std::fputc('\n', f) != EOF;
  }
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) {
    const int err = errno;
    std::remove(tmp.c_str());
    throw IoError(fmt::format("cannot write {}: {}", tmp, std::strerror(err)));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    throw IoError(fmt::format("cannot rename {} to {}: {}", tmp, path, std::strerror(err)));
  }
}

}  // namespace llmrec
