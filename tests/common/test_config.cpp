// The YAML config binder: defaults, types, ranges, enums, unknown keys with
// suggestions, includes, --set overrides, and the resolved-config round trip.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/config.h"

namespace llmrec {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

struct Inner {
  int workers = 2;
  std::vector<std::string> targets = {"query", "value"};
  template <class V>
  void visit(V& v) {
    v.field("workers", workers, "worker threads", config_range(1, 64));
    v.field("targets", targets, "module names");
  }
};

struct Sample {
  std::string mode = "fast";
  double timeout_s = 300;
  std::int64_t seed = 7;
  bool verify = true;
  Inner inner;
  template <class V>
  void visit(V& v) {
    v.field("mode", mode, "speed", config_one_of({"fast", "exact"}));
    v.field("timeout_s", timeout_s, "timeout", config_range(0.5, 1000.0));
    v.field("seed", seed, "seed");
    v.field("verify", verify, "verify");
    v.section("inner", inner, "inner section");
  }
};

class ConfigTest : public ::testing::Test {
 protected:
  fs::path dir_ = fs::temp_directory_path() / ("llmrec_config_test_" + std::to_string(::getpid()));
  void SetUp() override { fs::create_directories(dir_); }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    fs::path p = dir_ / name;
    std::ofstream(p) << text;
    return p.string();
  }
  // Loads and returns the ConfigError message ("" if it loaded).
  std::string error_of(const std::string& path, const std::vector<std::string>& sets = {}) {
    Sample s;
    try {
      load_config(path, sets, s);
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "";
  }
};

TEST_F(ConfigTest, DefaultsWhenNoFile) {
  Sample s;
  load_config("", {}, s);
  EXPECT_EQ(s.mode, "fast");
  EXPECT_EQ(s.inner.workers, 2);
  EXPECT_EQ(s.inner.targets, (std::vector<std::string>{"query", "value"}));
}

TEST_F(ConfigTest, ReadsEveryType) {
  Sample s;
  load_config(write("a.yaml",
                    "mode: exact\ntimeout_s: 2.5e1\nseed: -9000000000\nverify: false\n"
                    "inner:\n  workers: 8\n  targets: [key, dense]\n"),
              {}, s);
  EXPECT_EQ(s.mode, "exact");
  EXPECT_DOUBLE_EQ(s.timeout_s, 25.0);
  EXPECT_EQ(s.seed, -9000000000LL);
  EXPECT_FALSE(s.verify);
  EXPECT_EQ(s.inner.workers, 8);
  EXPECT_EQ(s.inner.targets, (std::vector<std::string>{"key", "dense"}));
}

TEST_F(ConfigTest, UnknownKeyNamesFileLineAndClosestKey) {
  std::string p = write("b.yaml", "mode: fast\ninner:\n  workers: 3\n  wrokers: 4\n");
  std::string e = error_of(p);
  EXPECT_THAT(e, HasSubstr(p + ":4: unknown key 'inner.wrokers'; did you mean 'inner.workers'?"));
  e = error_of(write("c.yaml", "timeout: 3\n"));
  EXPECT_THAT(e, HasSubstr("c.yaml:1: unknown key 'timeout'; did you mean 'timeout_s'?"));
  e = error_of(write("d.yaml", "zzzzzzzzzz: 3\n"));
  EXPECT_THAT(e, HasSubstr("known keys here: mode, timeout_s, seed, verify, inner"));
}

TEST_F(ConfigTest, TypeRangeAndEnumErrorsAreAllReportedTogether) {
  std::string p = write("e.yaml",
                        "mode: quick\n"            // line 1: enum
                        "timeout_s: 0.1\n"         // line 2: range
                        "seed: 1.5\n"              // line 3: type
                        "verify: yes please\n"     // line 4: type
                        "inner:\n  workers: 65\n"  // line 6: range
                        "  targets: query\n");     // line 7: type
  std::string e = error_of(p);
  EXPECT_THAT(e, HasSubstr("(6 errors)"));
  EXPECT_THAT(e, HasSubstr(":1: 'mode' must be one of: fast, exact, got 'quick'"));
  EXPECT_THAT(e, HasSubstr(":2: 'timeout_s' must be in [0.5, 1000], got '0.1'"));
  EXPECT_THAT(e, HasSubstr(":3: 'seed' must be an integer, got '1.5'"));
  EXPECT_THAT(e, HasSubstr(":4: 'verify' must be true or false"));
  EXPECT_THAT(e, HasSubstr(":6: 'inner.workers' must be in [1, 64], got '65'"));
  EXPECT_THAT(e, HasSubstr(":7: 'inner.targets' must be a list of strings"));
}

TEST_F(ConfigTest, EnumSuggestsTheClosestChoice) {
  EXPECT_THAT(error_of(write("f.yaml", "mode: exakt\n")), HasSubstr("(did you mean 'exact'?)"));
}

TEST_F(ConfigTest, StructuralErrors) {
  EXPECT_THAT(error_of(write("g.yaml", "inner: 3\n")), HasSubstr(":1: 'inner' must be a mapping of keys"));
  EXPECT_THAT(error_of(write("h.yaml", "seed:\n")), HasSubstr(":1: 'seed' has no value"));
  EXPECT_THAT(error_of(write("i.yaml", "seed: 1\nseed: 2\n")),
              HasSubstr(":2: duplicate key 'seed' (first at"));
  EXPECT_THAT(error_of(write("j.yaml", "mode: [unclosed\n")), HasSubstr("invalid YAML"));
  EXPECT_THAT(error_of(write("k.yaml", "- a\n- b\n")), HasSubstr("must be a mapping of keys"));
  EXPECT_THAT(error_of((dir_ / "missing.yaml").string()), HasSubstr("cannot open config file"));
  EXPECT_THAT(error_of(write("l.yaml", "seed: 99999999999999999999999\n")), HasSubstr("out of range"));
}

TEST_F(ConfigTest, SelfReferencingAliasIsRefusedNotRecursedForever) {
  // Whatever yaml-cpp makes of it, the result is a clear error, not a crash.
  EXPECT_THAT(error_of(write("m.yaml", "inner: &a\n  workers: *a\n")), Not(::testing::IsEmpty()));
}

TEST_F(ConfigTest, IncludeMergesBaseThenOverrides) {
  write("base.yaml", "mode: exact\nseed: 1\ninner:\n  workers: 4\n  targets: [a]\n");
  write("mid.yaml", "include: base.yaml\nseed: 2\n");
  std::string top = write("top.yaml", "include: [mid.yaml]\ninner:\n  workers: 5\n");
  Sample s;
  load_config(top, {}, s);
  EXPECT_EQ(s.mode, "exact");                                   // from base
  EXPECT_EQ(s.seed, 2);                                         // mid overrides base
  EXPECT_EQ(s.inner.workers, 5);                                // top overrides
  EXPECT_EQ(s.inner.targets, (std::vector<std::string>{"a"}));  // merged, not replaced
}

TEST_F(ConfigTest, ErrorsInAnIncludedFileNameThatFile) {
  std::string base = write("bad_base.yaml", "seed: 1\nsed: 2\n");
  std::string e = error_of(write("top2.yaml", "include: bad_base.yaml\n"));
  EXPECT_THAT(e, HasSubstr(base + ":2: unknown key 'sed'"));
}

TEST_F(ConfigTest, IncludeCycleAndMissingInclude) {
  write("x.yaml", "include: y.yaml\n");
  write("y.yaml", "include: x.yaml\n");
  EXPECT_THAT(error_of((dir_ / "x.yaml").string()), HasSubstr("include cycle"));
  EXPECT_THAT(error_of(write("z.yaml", "\ninclude: nope.yaml\n")), HasSubstr("z.yaml:2: included file"));
}

TEST_F(ConfigTest, SetOverridesWinAndAreValidated) {
  std::string p = write("n.yaml", "seed: 1\n");
  Sample s;
  load_config(p, {"seed=5", "inner.workers=9", "inner.targets=[q, k, v]", "mode=exact"}, s);
  EXPECT_EQ(s.seed, 5);
  EXPECT_EQ(s.inner.workers, 9);
  EXPECT_EQ(s.inner.targets, (std::vector<std::string>{"q", "k", "v"}));
  EXPECT_EQ(s.mode, "exact");
  EXPECT_THAT(error_of(p, {"inner.wrokers=3"}),
              HasSubstr("--set inner.wrokers=3: unknown key 'inner.wrokers'; did you mean 'inner.workers'?"));
  EXPECT_THAT(error_of(p, {"inner.workers=0"}),
              HasSubstr("--set inner.workers=0: 'inner.workers' must be in"));
  EXPECT_THAT(error_of(p, {"seed"}), HasSubstr("expected KEY=VALUE"));
  EXPECT_THAT(error_of(p, {"seed="}), HasSubstr("'seed' has no value"));
}

TEST_F(ConfigTest, ResolvedConfigRoundTrips) {
  Sample a;
  load_config("", {"mode=exact", "timeout_s=12.25", "inner.targets=[a b, 'c: d']", "seed=-3"}, a);
  std::string text = ConfigWriter::write(a);
  Sample b;
  load_config(write("resolved.yaml", text), {}, b);
  EXPECT_EQ(b.mode, "exact");
  EXPECT_DOUBLE_EQ(b.timeout_s, 12.25);
  EXPECT_EQ(b.seed, -3);
  EXPECT_EQ(b.inner.targets, (std::vector<std::string>{"a b", "c: d"}));
  EXPECT_EQ(ConfigWriter::write(b), text);
}

TEST_F(ConfigTest, SchemaListsEveryKeyWithDefaultsAndConstraints) {
  auto keys = ConfigSchema::list(Sample{});
  ASSERT_EQ(keys.size(), 7u);
  EXPECT_EQ(keys[0].key, "mode");
  EXPECT_EQ(keys[0].constraint, "one of: fast, exact");
  EXPECT_EQ(keys[5].key, "inner.workers");
  EXPECT_EQ(keys[5].default_value, "2");
  EXPECT_EQ(keys[5].constraint, "in [1, 64]");
}

TEST(EditDistance, Basics) {
  EXPECT_EQ(edit_distance("", ""), 0u);
  EXPECT_EQ(edit_distance("abc", ""), 3u);
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(edit_distance("workers", "wrokers"), 2u);
}

}  // namespace
}  // namespace llmrec

namespace llmrec {
namespace {

struct IntList {
  std::vector<int> k = {10, 20};
  template <class V>
  void visit(V& v) {
    v.field("k", k, "cut-offs");
  }
};

TEST(ConfigIntList, ReadsWritesAndDescribesAListOfInts) {
  IntList a;
  load_config("", {"k=[5, 1, 50]"}, a);
  EXPECT_EQ(a.k, (std::vector<int>{5, 1, 50}));
  EXPECT_EQ(format_config(a.k), "[5, 1, 50]");
  const std::string text = ConfigWriter::write(a);
  EXPECT_EQ(text, "k: [5, 1, 50]\n");
  IntList b;
  load_config("", {"k=[]"}, b);
  EXPECT_TRUE(b.k.empty());
  auto keys = ConfigSchema::list(IntList{});
  ASSERT_EQ(keys.size(), 1u);
  EXPECT_EQ(keys[0].type, "list of ints");
  EXPECT_EQ(keys[0].default_value, "[10, 20]");
  for (const char* bad : {"k=[1, x]", "k=3", "k=[1.5]", "k=[[1]]", "k=[99999999999]"}) {
    IntList c;
    try {
      load_config("", {bad}, c);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const ConfigError& e) {
      EXPECT_THAT(e.what(),
                  ::testing::HasSubstr(std::string("--set ") + bad + ": 'k' must be a list of integers"));
    }
  }
}

}  // namespace
}  // namespace llmrec
