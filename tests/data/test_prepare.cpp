// `llmrec prepare`: every bad-input case gives its clear error or counted
// skip; prepare -> read round trip; formats; filters; splits; checksums.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data/csv.h"
#include "data/dataset.h"
#include "data/prepare.h"
#include "data/synth.h"
#include "data/text.h"
#include "data/wordpiece.h"

namespace llmrec {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr const char* kCatalogue =
    "item_id,title,category,brand,tags,description\n"
    "a,Red Running Shoes,sports > shoes,Acme,red;light,\"Light, fast shoes\"\n"
    "b,Blue Jacket,clothing > jacket,Bolt,blue,\"A warm jacket\nwith two lines\"\n"  // quoted newline: lines
                                                                                     // 3-4
    "c,Green Tea,grocery > tea,Cha,green,Loose leaves\n"
    "d,Old Lamp,home > lamp,Lux,vintage,Never bought\n";  // line 6: no events -> cold

class PrepareTest : public ::testing::Test {
 protected:
  fs::path dir_ =
      fs::temp_directory_path() / ("llmrec_prepare_" + std::to_string(::getpid()) + "_" +
                                   ::testing::UnitTest::GetInstance()->current_test_info()->name());
  DataConfig cfg_;

  void SetUp() override {
    fs::create_directories(dir_);
    cfg_.catalogue = write("catalogue.csv", kCatalogue);
    cfg_.dataset = (dir_ / "dataset.h5").string();
    cfg_.vocab_size = 300;
    cfg_.text_len = 16;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name, std::ios::binary) << text;
    return (dir_ / name).string();
  }
  // Three good users: u1 (a, b, c), u2 (c, a, b), u3 (b, c, a); times out of order on purpose.
  std::string good_rows() {
    return "u1,a,100,view,\nu1,c,300,purchase,5\nu1,b,200,click,\n"
           "u2,c,100,view,\nu2,a,200,cart,\nu2,b,300,view,\n"
           "u3,b,1970-01-01T00:01:40Z,view,\nu3,c,1970-01-01T00:03:20Z,view,\nu3,a,1970-01-01T00:05:00Z,view,"
           "\n";
  }
  std::string error_of(const std::string& interactions) {
    cfg_.interactions = write("interactions.csv", "user_id,item_id,timestamp,event,rating\n" + interactions);
    try {
      prepare_dataset(cfg_, "");
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
};

TEST_F(PrepareTest, RoundTripSortsSplitsAndTokenizes) {
  cfg_.columns.rating = "rating";
  cfg_.interactions = write("interactions.csv", "user_id,item_id,timestamp,event,rating\n" + good_rows());
  PrepareReport r = prepare_dataset(cfg_, "the: config\n");
  EXPECT_EQ(r.catalogue.rows_read, 4);
  EXPECT_EQ(r.interactions.rows_read, 9);
  EXPECT_EQ(r.interactions.rows_kept, 9);
  EXPECT_EQ(r.users, 3);
  EXPECT_EQ(r.items, 4);
  EXPECT_EQ(r.cold_items, 1);  // d: never seen (a, b, c each are some user's one training event)
  EXPECT_EQ(r.train_events + r.valid_events + r.test_events, 9);

  DatasetFile f(cfg_.dataset);
  EXPECT_EQ(f.num_users(), 3);
  EXPECT_EQ(f.num_items(), 4);
  EXPECT_EQ(f.num_events(), 9);
  EXPECT_EQ(f.text_len(), 16);
  EXPECT_EQ(f.split(), "leave_last_out");
  EXPECT_EQ(f.config_yaml(), "the: config\n");
  ItemTable items = f.read_items();
  EXPECT_EQ(items.ids, (std::vector<std::string>{"a", "b", "c", "d"}));
  EXPECT_EQ(items.texts[1], "Blue Jacket ; clothing > jacket ; Bolt ; blue ; A warm jacket\nwith two lines");
  EXPECT_EQ(items.categories[3], "home > lamp");
  EXPECT_EQ(items.tokens[0], 2);  // [CLS] of the built vocabulary ([PAD] [UNK] [CLS] [SEP] [MASK])
  EXPECT_EQ(items.cold[3], 1);

  UserSlice all = f.read_users(0, 3);
  // u1's events sorted by time: a(100) b(200) c(300): train a, valid b, test c.
  EXPECT_EQ(all.users.offsets, (std::vector<std::int64_t>{0, 3, 6, 9}));
  EXPECT_EQ(all.events.item[0], 0);
  EXPECT_EQ(all.events.item[1], 1);
  EXPECT_EQ(all.events.item[2], 2);
  EXPECT_EQ(all.events.time[2], 300);
  EXPECT_EQ(all.users.train_end[0], 1);
  EXPECT_EQ(all.users.valid[0], 1);
  EXPECT_EQ(all.users.test[0], 2);
  EXPECT_FLOAT_EQ(all.events.weight[2], 4.0f);  // purchase
  EXPECT_EQ(all.events.time[6], 100);           // ISO 8601 parsed
  // A slice reads only its users, with slice-relative indices.
  UserSlice one = f.read_users(1, 2);
  EXPECT_EQ(one.first_event, 3);
  EXPECT_EQ(one.users.offsets, (std::vector<std::int64_t>{0, 3}));
  EXPECT_EQ(one.events.item, (std::vector<std::int32_t>{2, 0, 1}));
  EXPECT_EQ(one.users.test[0], 2);
}

TEST_F(PrepareTest, EachBadInteractionRowNamesFileLineAndReason) {
  const std::string good = good_rows();  // lines 2-10
  EXPECT_THAT(error_of(good + "u4,zz,100,view,\n"),
              HasSubstr("interactions.csv:11: unknown item id: 'zz' is not in the catalogue"));
  EXPECT_THAT(error_of(good + "u4,a,yesterday,view,\n"), HasSubstr(":11: bad timestamp: 'yesterday'"));
  EXPECT_THAT(error_of(good + "u4,a,2024-02-30T00:00:00Z,view,\n"), HasSubstr(":11: bad timestamp"));
  EXPECT_THAT(error_of(good + "u4,,100,view,\n"), HasSubstr(":11: missing field: column 'item_id' is empty"));
  EXPECT_THAT(error_of(good + "u4,a,100\n"), HasSubstr(":11: expected 5 fields, got 3"));
  EXPECT_THAT(error_of(good + "u4\xff,a,100,view,\n"), HasSubstr(":11: invalid UTF-8: in column 'user_id'"));
  EXPECT_THAT(error_of(good + "u1,a,100,view,\n"),
              HasSubstr(":11: duplicate event: same user, item, time and event as line 2"));
  EXPECT_THAT(
      error_of(good + "u4,a,100,wishlist,\n"),
      HasSubstr(":11: unknown event type: 'wishlist' (data.event_weights has: cart, click, purchase, view)"));
  EXPECT_THAT(error_of(good + "u4,a,1\"00,view,\n"),
              HasSubstr(":11: malformed csv: quote inside an unquoted field"));
  EXPECT_THAT(error_of(good + "u4,a,100,view,\"5\n"),
              HasSubstr(":11: malformed csv: unterminated quoted field"));
  cfg_.columns.rating = "rating";
  EXPECT_THAT(error_of(good + "u4,a,100,view,five\n"), HasSubstr(":11: bad rating: 'five' is not a number"));
}

TEST_F(PrepareTest, RatingWeightsTheLossOfEachEvent) {
  cfg_.columns.rating = "rating";
  cfg_.weight = "rating";
  const std::string rated =
      "u1,a,100,view,1\nu1,c,300,purchase,5\nu1,b,200,click,2.5\n"
      "u2,c,100,view,4\nu2,a,200,cart,3\nu2,b,300,view,0\n";
  cfg_.interactions = write("interactions.csv", "user_id,item_id,timestamp,event,rating\n" + rated);
  prepare_dataset(cfg_, "");
  UserSlice all = DatasetFile(cfg_.dataset).read_users(0, 2);
  // In time order: u1 a b c, u2 c a b; the weight is the rating, not the event type's.
  EXPECT_EQ(all.events.weight, (std::vector<float>{1.0f, 2.5f, 5.0f, 4.0f, 3.0f, 0.0f}));

  EXPECT_THAT(error_of(rated + "u4,a,100,view,\n"),
              HasSubstr(":8: missing rating: column 'rating' is empty and data.weight is 'rating'"));
  EXPECT_THAT(error_of(rated + "u4,a,100,view,-2\n"),
              HasSubstr(":8: negative rating: -2 cannot be a loss weight"));
  cfg_.columns.rating = "";
  EXPECT_THAT(error_of(rated), HasSubstr("data.weight is 'rating' but data.columns.rating is empty"));
}

TEST_F(PrepareTest, BadCatalogueRows) {
  auto catalogue_error = [&](const std::string& extra) {
    cfg_.catalogue = write("catalogue.csv", std::string(kCatalogue) + extra);
    return error_of(good_rows());
  };
  EXPECT_THAT(catalogue_error("a,Dup,x,y,z,w\n"),
              HasSubstr("catalogue.csv:7: duplicate item id: 'a' first defined at line 2"));
  EXPECT_THAT(catalogue_error(",No id,x,y,z,w\n"), HasSubstr("catalogue.csv:7: missing item id"));
  EXPECT_THAT(catalogue_error("e,,,,,\n"), HasSubstr("catalogue.csv:7: missing item text"));
  cfg_.catalogue = write("catalogue.tsv.csv",
                         "item_id\ttitle\n"
                         "a\tx\n");
  EXPECT_THAT(error_of(good_rows()), HasSubstr("set data.format: tsv"));
  EXPECT_THAT(catalogue_error("e,Caf\xc3\x28,x,y,z,w\n"),
              HasSubstr("catalogue.csv:7: invalid UTF-8: in column 'title'"));
  cfg_.catalogue_columns.item = "sku";
  EXPECT_THAT(catalogue_error(""),
              HasSubstr("catalogue.csv:1: no column 'sku' in the header (columns: item_id, title"));
  EXPECT_THAT(catalogue_error(""), HasSubstr("set data.catalogue_columns.item"));
}

TEST_F(PrepareTest, UserProfilesAreTokenizedPerDatasetUserAndEveryRowIsAccounted) {
  cfg_.interactions = write("interactions.csv", "user_id,item_id,timestamp,event,rating\n" + good_rows());
  // u1 and u3 have profiles (two text columns joined), u2 none; u9 is not in the interactions.
  cfg_.users = write("users.csv",
                     "user_id,age,interests\n"
                     "u3,25-34,green tea\n"
                     "u9,18-24,lamps\n"
                     "u1,,running shoes\n");
  cfg_.user_columns.text = {"age", "interests"};
  PrepareReport r = prepare_dataset(cfg_, "");
  EXPECT_EQ(r.user_table.rows_read, 3);
  EXPECT_EQ(r.user_table.rows_kept, 3);
  EXPECT_EQ(r.users_with_profile, 2);
  EXPECT_EQ(r.profiles_of_other_users, 1);
  EXPECT_THAT(r.to_text(),
              HasSubstr("profiles: 2 of 3 users have one (1 without); 1 profile rows name users"));
  EXPECT_EQ(nlohmann::json::parse(r.to_json())["users_with_profile"], 2);

  DatasetFile f(cfg_.dataset);
  ASSERT_TRUE(f.has_profiles());
  const UserSlice all = f.read_users(0, f.num_users());
  const std::vector<std::string> ids = f.read_user_ids();
  ASSERT_EQ(ids.size(), 3u);
  ASSERT_EQ(all.users.profile_length.size(), 3u);
  ASSERT_EQ(all.users.profile_tokens.size(), 3u * 16);
  const std::vector<std::string> vocab = f.vocab();
  const WordPieceTokenizer tok = WordPieceTokenizer::from_tokens(vocab);
  for (std::size_t u = 0; u < 3; ++u) {
    const std::string& id = ids[u];
    const std::string text = id == "u1" ? "running shoes" : id == "u3" ? "25-34 ; green tea" : "";
    std::vector<std::int32_t> want;
    if (!text.empty()) tok.encode_into(text, want, 16);
    ASSERT_EQ(all.users.profile_length[u], static_cast<std::int32_t>(want.size())) << id;
    for (std::size_t k = 0; k < 16; ++k) {
      const std::int32_t got = all.users.profile_tokens[u * 16 + k];
      EXPECT_EQ(got, k < want.size() ? want[k] : tok.pad_id()) << id << " token " << k;
    }
  }
  // Without data.users: no profiles in the file.
  cfg_.users.clear();
  prepare_dataset(cfg_, "");
  EXPECT_FALSE(DatasetFile(cfg_.dataset).has_profiles());
  EXPECT_TRUE(DatasetFile(cfg_.dataset).read_users(0, 3).users.profile_length.empty());
}

TEST_F(PrepareTest, BadUserTableRowsNameFileLineAndReason) {
  cfg_.interactions = write("interactions.csv", "user_id,item_id,timestamp,event,rating\n" + good_rows());
  auto error_with = [&](const std::string& table) {
    cfg_.users = write("users.csv", table);
    try {
      prepare_dataset(cfg_, "");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_THAT(error_with("user_id,profile\nu1,runner\nu1,again\n"),
              HasSubstr("users.csv:3: duplicate user id: 'u1' first defined at line 2"));
  EXPECT_THAT(error_with("user_id,profile\n,runner\n"), HasSubstr("users.csv:2: missing user id"));
  EXPECT_THAT(error_with("user_id,profile\nu1,\n"), HasSubstr("users.csv:2: missing profile text"));
  EXPECT_THAT(
      error_with("user_id,bio\nu1,x\n"),
      HasSubstr("no column 'profile' in the header (columns: user_id, bio); set data.user_columns.text"));
  // Skipped and counted under on_error: skip.
  cfg_.on_error = "skip";
  cfg_.users = write("users.csv", "user_id,profile\nu1,runner\nu1,again\n,x\nu2,\"unclosed\n");
  PrepareReport r = prepare_dataset(cfg_, "");
  EXPECT_EQ(r.user_table.rows_kept, 1);
  EXPECT_EQ(r.user_table.skipped.at("duplicate user id"), 1);
  EXPECT_EQ(r.user_table.skipped.at("missing user id"), 1);
  EXPECT_EQ(r.users_with_profile, 1);
  EXPECT_THAT(r.to_text(), HasSubstr("user table "));
}

TEST_F(PrepareTest, SkipPolicyCountsEveryRowByReason) {
  cfg_.on_error = "skip";
  cfg_.show_errors = 1;
  cfg_.interactions =
      write("interactions.csv", "user_id,item_id,timestamp,event,rating\n" + good_rows() +
                                    "u4,zz,100,view,\nu5,zz,100,view,\nu4,a,never,view,\nu1,a,100,view,\n");
  PrepareReport r = prepare_dataset(cfg_, "");
  EXPECT_EQ(r.interactions.rows_read, 13);
  EXPECT_EQ(r.interactions.rows_kept, 9);
  EXPECT_EQ(r.interactions.skipped.at("unknown item id"), 2);
  EXPECT_EQ(r.interactions.skipped.at("bad timestamp"), 1);
  EXPECT_EQ(r.interactions.skipped.at("duplicate event"), 1);
  ASSERT_EQ(r.interactions.examples.at("unknown item id").size(), 1u);  // show_errors: 1
  EXPECT_THAT(r.interactions.examples.at("unknown item id")[0], HasSubstr("interactions.csv:11: 'zz'"));
  std::string text = r.to_text();
  EXPECT_THAT(text, HasSubstr("13 rows read, 9 kept, 4 skipped"));
  EXPECT_THAT(text, HasSubstr("e.g. "));
}

TEST_F(PrepareTest, MinUserEventsAndKcoreAreCounted) {
  cfg_.interactions = write("interactions.csv", "user_id,item_id,timestamp,event,rating\n" + good_rows() +
                                                    "u4,a,100,view,\nu4,b,200,view,\n");
  PrepareReport r = prepare_dataset(cfg_, "");
  EXPECT_EQ(r.min_events_users_removed, 1);
  EXPECT_EQ(r.min_events_events_removed, 2);
  EXPECT_EQ(r.users, 3);
  // k-core 3: item d has no events, u4 has 2: removed; a, b, c keep >= 3.
  cfg_.kcore = 3;
  r = prepare_dataset(cfg_, "");
  EXPECT_EQ(r.kcore_events_removed, 2);
  EXPECT_EQ(r.kcore_users_removed, 1);
  EXPECT_EQ(r.users, 3);
  EXPECT_EQ(r.events, 9);
}

TEST_F(PrepareTest, TemporalSplit) {
  cfg_.split = "temporal";
  cfg_.cut = "250";
  cfg_.min_user_events = 1;
  cfg_.interactions = write("interactions.csv",
                            "user_id,item_id,timestamp,event,rating\n" + good_rows() + "u4,a,260,view,\n");
  PrepareReport r = prepare_dataset(cfg_, "");
  EXPECT_EQ(r.no_train_users_removed, 1);  // u4: nothing before the cut
  DatasetFile f(cfg_.dataset);
  UserSlice all = f.read_users(0, f.num_users());
  // u1: a(100) b(200) | c(300): train [a], valid b, test c.
  EXPECT_EQ(all.users.train_end[0], 1);
  EXPECT_EQ(all.users.valid[0], 1);
  EXPECT_EQ(all.users.test[0], 2);
  // u3: b(100) c(200) | a(300).
  EXPECT_EQ(all.users.test[2], 8);
  cfg_.cut = "not a time";
  EXPECT_THROW(prepare_dataset(cfg_, ""), ConfigError);
  // A cut before every event leaves nobody: the error says why, with the
  // data's range and the whole report.
  cfg_.cut = "1970-01-01T00:00:50Z";
  try {
    prepare_dataset(cfg_, "");
    ADD_FAILURE() << "an empty dataset was written";
  } catch (const IoError& e) {
    EXPECT_THAT(e.what(),
                HasSubstr("data.cut '1970-01-01T00:00:50Z' = 1970-01-01T00:00:50Z) is at or before every "
                          "user's first event (the events span 1970-01-01T00:01:40Z .. "));
    EXPECT_THAT(e.what(), HasSubstr("rows read"));
  }
}

TEST_F(PrepareTest, JsonlAndTsvGiveTheSameDataset) {
  cfg_.interactions = write("interactions.csv", "user_id,item_id,timestamp,event,rating\n" + good_rows());
  prepare_dataset(cfg_, "");
  auto csv = DatasetFile(cfg_.dataset).read_users(0, 3);

  std::string jsonl, tsv = "user_id\titem_id\ttimestamp\tevent\trating\n";
  std::istringstream rows(good_rows());
  std::string line;
  while (std::getline(rows, line)) {
    std::vector<std::string> f;
    std::stringstream ss(line);
    std::string x;
    while (std::getline(ss, x, ',')) f.push_back(x);
    bool numeric = f[2].find('-') == std::string::npos;
    jsonl += "{\"user_id\": \"" + f[0] + "\", \"item_id\": \"" + f[1] +
             "\", \"timestamp\": " + (numeric ? f[2] : "\"" + f[2] + "\"") + ", \"event\": \"" + f[3] +
             "\"}\n";
    tsv += f[0] + "\t" + f[1] + "\t" + f[2] + "\t" + f[3] + "\t\n";
  }
  for (const auto& [name, text] : {std::pair<std::string, std::string>{"i.jsonl", jsonl}, {"i.tsv", tsv}}) {
    cfg_.interactions = write(name, text);
    prepare_dataset(cfg_, "");
    auto other = DatasetFile(cfg_.dataset).read_users(0, 3);
    EXPECT_EQ(other.events.item, csv.events.item) << name;
    EXPECT_EQ(other.events.time, csv.events.time) << name;
    EXPECT_EQ(other.users.offsets, csv.users.offsets) << name;
  }
  cfg_.interactions = write("bad.jsonl", "{\"user_id\": \"u1\"\n");
  try {
    prepare_dataset(cfg_, "");
    FAIL();
  } catch (const IoError& e) {
    EXPECT_THAT(e.what(), HasSubstr("bad.jsonl:1: malformed jsonl"));
  }
}

TEST_F(PrepareTest, SynthProfilesStateTheLatentTastesWithNoise) {
  SynthOptions o;
  o.items = 300;
  o.users = 1000;
  write_synth_shop(o, (dir_ / "shop").string());
  auto rows = [&](const std::string& name) {
    CsvReader csv((dir_ / "shop" / name).string(), ',');
    std::vector<std::vector<std::string>> out;
    std::vector<std::string> fields;
    std::int64_t line = 0;
    std::string reason;
    while (csv.next(fields, line, reason) == CsvReader::Status::kRecord) out.push_back(fields);
    return out;
  };
  const auto profiles = rows("users.csv");
  const auto latent = rows("latent_users.csv");
  ASSERT_EQ(profiles.front(), (std::vector<std::string>{"user_id", "age", "region", "interests", "price"}));
  const auto n = static_cast<double>(profiles.size() - 1);
  EXPECT_NEAR(n / 1000.0, 0.85, 0.04);       // 85% of the users have a row
  std::map<std::string, std::string> liked;  // user -> its liked leaves ("a;b")
  for (std::size_t r = 1; r < latent.size(); ++r) liked[latent[r][0]] = latent[r][1];
  // Each liked leaf is stated with probability 0.6: most profiles name one
  // of the user's leaves, and an unliked leaf is named far less often.
  std::int64_t names_liked = 0;
  for (std::size_t r = 1; r < profiles.size(); ++r) {
    const std::string& interests = profiles[r][3];
    std::stringstream leaves(liked.at(profiles[r][0]));
    bool hit = false;
    for (std::string leaf; std::getline(leaves, leaf, ';');)
      hit = hit || interests.find(leaf) != std::string::npos;
    names_liked += hit;
    EXPECT_FALSE(profiles[r][1].empty());  // an age band and a region on every row
    EXPECT_FALSE(profiles[r][2].empty());
  }
  EXPECT_GT(static_cast<double>(names_liked) / n, 0.6);
  EXPECT_LT(static_cast<double>(names_liked) / n, 0.95);  // not every time: the text is noisy
}

TEST_F(PrepareTest, AFlippedByteIsDetectedByTheChecksum) {
  SynthOptions o;
  o.items = 300;
  o.users = 400;
  write_synth_shop(o, (dir_ / "shop").string());
  cfg_.catalogue = (dir_ / "shop" / "catalogue.csv").string();
  cfg_.interactions = (dir_ / "shop" / "interactions.csv").string();
  cfg_.columns.rating = "rating";
  PrepareReport r = prepare_dataset(cfg_, "");
  EXPECT_EQ(r.interactions.rows_read, r.interactions.rows_kept);
  EXPECT_GT(r.test_events_on_cold_items, 0);

  // Flip one byte in the middle of the largest dataset's raw data.
  std::string bytes;
  {
    std::ifstream in(cfg_.dataset, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  // events/time values are 8-byte little-endian unix times: find a run of them.
  std::size_t at = bytes.size() / 2;
  bytes[at] = static_cast<char>(bytes[at] ^ 0x5a);
  std::ofstream(cfg_.dataset, std::ios::binary) << bytes;
  try {
    DatasetFile f(cfg_.dataset);
    auto items = f.read_items();
    auto users = f.read_users(0, f.num_users());
    FAIL() << "a flipped byte went unnoticed";
  } catch (const IoError& e) {
    EXPECT_THAT(e.what(), HasSubstr(cfg_.dataset));
    EXPECT_THAT(e.what(),
                ::testing::AnyOf(HasSubstr("checksum"), HasSubstr("dataset '"), HasSubstr("attribute")));
  }
}

TEST_F(PrepareTest, NotADatasetFile) {
  write("junk.h5", "not hdf5 at all");
  try {
    DatasetFile f((dir_ / "junk.h5").string());
    FAIL();
  } catch (const IoError& e) {
    EXPECT_THAT(e.what(), HasSubstr("junk.h5: not an HDF5 file"));
  }
}

// Regression tests of what fuzz/fuzz_rows found (docs/reliability.md,
// "Fuzzing and sanitizers"); each input once crashed or was undefined.

// A timestamp of 25 digits overflowed int64 in the decimal path of
// parse_timestamp (UBSan: float-cast-overflow); it is a bad timestamp.
TEST_F(PrepareTest, TimestampsBeyondInt64AreBadRows) {
  EXPECT_THAT(error_of(good_rows() + "u4,a,6666666666666666666666666,view,\n"),
              HasSubstr(":11: bad timestamp"));
  EXPECT_THAT(error_of(good_rows() + "u4,a,-99999999999999999999.5,view,\n"),
              HasSubstr(":11: bad timestamp"));
  for (const char* format : {"auto", "unix", "unix_ms"}) {
    EXPECT_FALSE(parse_timestamp("6666666666666666666666666", format).has_value()) << format;
  }
  EXPECT_FALSE(parse_timestamp("9223372036854775808.5", "unix").has_value());
  EXPECT_TRUE(parse_timestamp("9223372036854775808.5", "unix_ms").has_value());  // ~9.2e15 s: in range
  EXPECT_EQ(parse_timestamp("9223372036854775807", "unix"), std::int64_t{9223372036854775807});
  EXPECT_EQ(parse_timestamp("-1.5", "unix"), -2);
  EXPECT_EQ(parse_timestamp("1500.9", "unix_ms"), 1);
}

// A text over data.max_text_chars is cut at a character boundary and
// counted, not a bad row (Amazon has descriptions over 40,000 characters).
TEST_F(PrepareTest, LongTextsAreCutAndCounted) {
  const std::string long_text = std::string(30, 'x') + "\xc3\xa9\xc3\xa9\xc3\xa9" + std::string(50000, 'y');
  const std::string path = write("long.csv", "item_id,category,title\na,c," + long_text + "\nb,c,short\n");
  cfg_.catalogue_columns.item = "item_id";
  cfg_.catalogue_columns.category = "category";
  cfg_.catalogue_columns.text = {"title"};
  cfg_.max_text_chars = 32;
  PrepareReport::Source report;
  Catalogue c = read_catalogue(path, cfg_, report);
  ASSERT_EQ(c.texts.size(), 2u);
  EXPECT_EQ(c.texts[0], std::string(30, 'x') + "\xc3\xa9\xc3\xa9");  // 32 characters, 34 bytes
  EXPECT_EQ(c.texts[1], "short");
  EXPECT_EQ(report.rows_kept, 2);
  EXPECT_EQ(report.texts_cut, 1);
  EXPECT_EQ(utf8_prefix_bytes("ab", 5), 2u);
}

// time_format auto never reads a millisecond (or finer) clock as seconds.
TEST(ParseTimestamp, AutoTakesTheUnitFromTheMagnitude) {
  const std::int64_t t = 1700000000;  // 2023-11-14T22:13:20Z
  EXPECT_EQ(parse_timestamp("1700000000", "auto"), t);
  EXPECT_EQ(parse_timestamp("1700000000123", "auto"), t);
  EXPECT_EQ(parse_timestamp("1700000000123456", "auto"), t);
  EXPECT_EQ(parse_timestamp("1700000000123456789", "auto"), t);
  EXPECT_EQ(parse_timestamp("1700000000.5", "auto"), t);
  EXPECT_EQ(parse_timestamp("86400", "auto"), 86400);  // small numbers stay seconds
  EXPECT_EQ(parse_timestamp("2023-11-14T22:13:20Z", "auto"), t);
  EXPECT_EQ(parse_timestamp("1700000000123", "unix"), std::int64_t{1700000000123});  // explicit: as written
}

// A duplicate item id longer than 60 bytes was cut inside a UTF-8
// character for the report's example; writing the report's JSON then threw
// nlohmann's type_error (not an llmrec error) at the end of `llmrec prepare`.
TEST_F(PrepareTest, ReportsStayValidUtf8WhenLongIdsAreCut) {
  cfg_.on_error = "skip";
  const std::string x56(56, 'x');
  const std::string id = x56 + "\xc3\xa9" + "tail";  // the 57-byte cut falls inside the 'é'
  cfg_.catalogue =
      write("catalogue.csv", std::string(kCatalogue) + id + ",One,x,y,z,w\n" + id + ",Two,x,y,z,w\n");
  cfg_.interactions = write("interactions.csv", "user_id,item_id,timestamp,event,rating\n" + good_rows());
  PrepareReport r = prepare_dataset(cfg_, "");
  ASSERT_EQ(r.catalogue.skipped.at("duplicate item id"), 1);
  EXPECT_THAT(r.catalogue.examples.at("duplicate item id").at(0),
              HasSubstr("'" + x56 + "...' first defined at line 7"));
  const auto j = nlohmann::json::parse(r.to_json());
  EXPECT_EQ(j["catalogue"]["rows_kept"], 5);
}

// Blank lines were skipped by recursion, one stack frame each: a file with
// a million of them overflowed the stack (ASan: stack-overflow).
TEST_F(PrepareTest, MillionsOfBlankLinesDoNotExhaustTheStack) {
  const std::string path = write(
      "catalogue.csv", std::string(kCatalogue) + std::string(1'000'000, '\n') + "e,Late item,x,y,z,w\n\n");
  PrepareReport::Source report;
  Catalogue c = read_catalogue(path, cfg_, report);
  EXPECT_EQ(report.rows_read, 5);
  ASSERT_EQ(c.ids.size(), 5u);
  EXPECT_EQ(c.ids[4], "e");
  EXPECT_EQ(c.lines[4], 1'000'007);
}

}  // namespace
}  // namespace llmrec
