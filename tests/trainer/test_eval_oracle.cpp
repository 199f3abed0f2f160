// The oracle of the synthetic shop: it reproduces the generator's choice
// model, beats popularity, is far above every baseline on cold items,
// refuses a dataset from another shop, and names file:line for bad rows.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "common/error.h"
#include "tests/mpi_test_main.h"
#include "tests/trainer/eval_test_util.h"
#include "trainer/baselines.h"
#include "trainer/evaluation.h"
#include "trainer/oracle.h"

namespace llmrec {
namespace {

namespace fs = std::filesystem;
using ::llmrec::testing::test_comm;
using ::testing::HasSubstr;

class OracleTest : public ::testing::Test {
 protected:
  static std::string path_;
  Communicator& comm_ = test_comm();
  static void SetUpTestSuite() {
    SynthOptions o;
    o.items = 500;
    o.users = 900;
    o.mean_history = 15;
    o.seed = 21;
    path_ = ::llmrec::testing::make_synth_dataset(test_comm(), "oracle", o);
  }
  static void TearDownTestSuite() { ::llmrec::testing::remove_dataset_dir(test_comm(), path_); }
  std::string shop() const { return ::llmrec::testing::shop_dir_of(path_); }

  // A copy of the shop with `file` rewritten by `edit` (rank-local directory).
  std::string edited_shop(const std::string& file, const std::function<std::string(std::string)>& edit) {
    fs::path dir = fs::temp_directory_path() /
                   ("llmrec_oracle_edit_" + std::to_string(::getpid()) + "_" + std::to_string(comm_.rank()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    for (const char* f : {"synth.json", "latent_items.csv", "latent_users.csv"}) {
      fs::copy_file(fs::path(shop()) / f, dir / f);
    }
    std::stringstream ss;
    ss << std::ifstream(dir / file).rdbuf();
    std::ofstream(dir / file, std::ios::trunc) << edit(ss.str());
    return dir.string();
  }
  std::string error_of(const std::string& dir) {
    try {
      DatasetFile f(path_);
      OracleScorer::open(dir, f);
    } catch (const IoError& e) {
      return e.what();
    }
    return "";
  }
};
std::string OracleTest::path_;

TEST_F(OracleTest, ScoresAreBetaLogPopularityPlusTheMatchOfTheGenerator) {
  DatasetFile f(path_);
  SynthTruth truth = read_synth_truth(shop());
  EXPECT_DOUBLE_EQ(truth.beta, 1.0);
  EXPECT_DOUBLE_EQ(truth.w_leaf, 2.5);
  EXPECT_DOUBLE_EQ(truth.w_department, 0.8);
  EXPECT_DOUBLE_EQ(truth.w_brand, 1.2);
  EXPECT_DOUBLE_EQ(truth.w_style, 0.8);
  EXPECT_DOUBLE_EQ(truth.w_price_band_distance, -0.5);
  ASSERT_EQ(truth.items.size(), 500u);
  ASSERT_EQ(truth.users.size(), 900u);
  auto oracle = OracleScorer::open(shop(), f);
  ItemTable items = f.read_items();
  std::vector<std::string> user_ids = f.read_user_ids();
  ScoreRequest r;
  for (std::int64_t u : {0, 5, 17}) r.add_user(u, nullptr, nullptr, 0, truth.cut_time + 1);
  r.add_user(5, nullptr, nullptr, 0, truth.cut_time - 1);  // before the cut: cold items impossible
  at::Tensor s = oracle->score(r);
  ASSERT_EQ(s.size(1), f.num_items());
  auto item_row = [&](const std::string& id) {
    for (const auto& it : truth.items) {
      if (it.id == id) return &it;
    }
    throw Error("no latent item " + id);
  };
  auto user_row = [&](const std::string& id) {
    for (const auto& u : truth.users) {
      if (u.id == id) return &u;
    }
    throw Error("no latent user " + id);
  };
  std::int64_t cold_seen = 0;
  for (std::int64_t b = 0; b < r.size(); ++b) {
    const auto& u = *user_row(user_ids[static_cast<std::size_t>(r.users[static_cast<std::size_t>(b)])]);
    for (std::int64_t i = 0; i < f.num_items(); ++i) {
      const auto& it = *item_row(items.ids[static_cast<std::size_t>(i)]);
      const float got = s[b][i].item<float>();
      if (it.cold && b == 3) {
        EXPECT_EQ(got, -std::numeric_limits<float>::infinity());
        ++cold_seen;
        continue;
      }
      EXPECT_FLOAT_EQ(got, static_cast<float>(std::log(it.popularity) + truth.match(u, it))) << "item " << i;
    }
  }
  EXPECT_GT(cold_seen, 0);
}

TEST_F(OracleTest, BeatsPopularityAndIsFarAboveEveryBaselineOnColdItems) {
  DatasetFile f(path_);
  EvalConfig c;
  c.oracle_dir = shop();
  auto scorers = create_baseline_scorers({"popularity", "itemknn", "bpr", "oracle"}, f, comm_, c);
  Evaluator ev(f, comm_, "test", c);
  std::vector<EvalResult> r;
  for (auto& s : scorers) r.push_back(ev.evaluate(*s));
  const EvalResult& oracle = r[3];
  ASSERT_GT(oracle.cold.users, 30);
  EXPECT_GT(oracle.all.ndcg[0], r[0].all.ndcg[0] + 0.05);
  EXPECT_GT(oracle.all.recall[0], r[0].all.recall[0]);
  EXPECT_GT(oracle.all.mrr, r[0].all.mrr);
  EXPECT_GT(oracle.cold.ndcg[0], 0.15);
  for (int k = 0; k < 3; ++k) {
    EXPECT_GT(oracle.all.ndcg[0], r[static_cast<std::size_t>(k)].all.ndcg[0])
        << r[static_cast<std::size_t>(k)].scorer;
    EXPECT_GT(oracle.cold.ndcg[0], 5 * r[static_cast<std::size_t>(k)].cold.ndcg[0] + 0.1)
        << r[static_cast<std::size_t>(k)].scorer;
  }
  if (comm_.rank() == 0) std::fputs(eval_results_table(r).c_str(), stdout);
}

TEST_F(OracleTest, RefusesADatasetFromAnotherShop) {
  // Same ids (i000000.., u000000..), other seed: the categories disagree.
  std::string other;
  if (comm_.rank() == 0) {
    SynthOptions o;
    o.items = 500;
    o.users = 900;
    o.mean_history = 15;
    o.seed = 22;
    other = (fs::temp_directory_path() / ("llmrec_oracle_other_" + std::to_string(::getpid()))).string();
    write_synth_shop(o, other);
  }
  other = ::llmrec::testing::broadcast_string(comm_, other);
  EXPECT_THAT(error_of(other), HasSubstr("latent_items.csv says"));
  EXPECT_THAT(error_of(other), HasSubstr("was not prepared from the synthetic shop in " + other));
  comm_.barrier();
  if (comm_.rank() == 0) fs::remove_all(other);
  // Fewer users in the latent file than in the dataset.
  std::string dir = edited_shop("latent_users.csv", [](const std::string& s) {
    auto second = s.find('\n', s.find('\n') + 1);
    return s.substr(0, s.find('\n') + 1) + s.substr(second + 1);  // drop the first user
  });
  std::string json = dir + "/synth.json";
  std::stringstream ss;
  ss << std::ifstream(json).rdbuf();
  std::string text = ss.str();
  for (auto at = text.find("\"users\": 900"); at != std::string::npos; at = text.find("\"users\": 900")) {
    text.replace(at, 12, "\"users\": 899");
  }
  std::ofstream(json, std::ios::trunc) << text;
  EXPECT_THAT(error_of(dir), HasSubstr("user 'u000000' (dataset user 0) is not in latent_users.csv"));
  fs::remove_all(dir);
}

TEST_F(OracleTest, BadLatentFilesNameFileLineAndColumn) {
  auto replace_line = [](int line, const std::string& with) {
    return [line, with](const std::string& s) {
      std::size_t b = 0;
      for (int k = 1; k < line; ++k) b = s.find('\n', b) + 1;
      return s.substr(0, b) + with + s.substr(s.find('\n', b));
    };
  };
  std::string dir =
      edited_shop("latent_items.csv", replace_line(4, "i000002,home,lamp,Norvik,x,classic,0.5,0,3"));
  EXPECT_THAT(error_of(dir),
              HasSubstr("latent_items.csv:4: column 'price_band' is 'x', expected an integer"));
  dir = edited_shop("latent_items.csv", replace_line(3, "i000001,home,lamp,Norvik,1,classic,-2,0,3"));
  EXPECT_THAT(error_of(dir),
              HasSubstr("latent_items.csv:3: column 'popularity' is '-2', expected a positive number"));
  dir = edited_shop("latent_items.csv", replace_line(5, "i000003,home,lamp"));
  EXPECT_THAT(error_of(dir), HasSubstr("latent_items.csv:5: 3 fields, the header has 9"));
  dir = edited_shop("latent_items.csv",
                    replace_line(1, "item_id,department,leaf,brand,price_band,style,popularity,cold"));
  EXPECT_THAT(error_of(dir), HasSubstr("latent_items.csv:1: no column 'brand_id'"));
  dir = edited_shop("latent_users.csv", replace_line(2, "u000000,lamp,Norvik,classic,2,x7,home"));
  EXPECT_THAT(error_of(dir), HasSubstr("latent_users.csv:2: column 'brand_ids' has 'x7'"));
  dir = edited_shop("latent_users.csv", replace_line(3, "u000000,lamp,Norvik,classic,2,7,home"));
  EXPECT_THAT(error_of(dir), HasSubstr("latent_users.csv:3: user 'u000000' again (first on line 2)"));
  dir = edited_shop("synth.json", [](std::string s) {
    return s.replace(s.find("\"brand\": 1.2"), 12, "\"brand\": \"x\"");
  });
  EXPECT_THAT(error_of(dir), HasSubstr("synth.json: key 'match.brand' is \"x\", expected a number"));
  fs::remove_all(dir);
  EXPECT_THAT(error_of("/nonexistent/shop"), HasSubstr("cannot open /nonexistent/shop/synth.json"));
}

}  // namespace
}  // namespace llmrec
