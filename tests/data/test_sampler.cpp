// Sharded sampling across W = 1, 2, 3 ranks: every training example seen
// exactly once per epoch, equal step counts, determinism, exact resume,
// correct history windows.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <numeric>
#include <set>

#include "data/sampler.h"
#include "distributed/local_communicator.h"
#include "tests/mpi_test_main.h"
#include "tests/test_dataset_helper.h"

namespace llmrec {
namespace {

namespace fs = std::filesystem;
using ::llmrec::testing::launched;
using ::llmrec::testing::on_every_rank;
using ::llmrec::testing::test_comm;

/// Collective: every rank's `mine`, concatenated and sorted.
std::vector<std::int64_t> gathered_sorted(Communicator& comm, const std::vector<std::int64_t>& mine) {
  std::vector<std::int64_t> got;
  for (const auto& part : comm.all_gather_v(at::tensor(mine, at::kLong)))
    got.insert(got.end(), part.data_ptr<std::int64_t>(), part.data_ptr<std::int64_t>() + part.numel());
  std::sort(got.begin(), got.end());
  return got;
}

TEST(ShardUsers, ContiguousCompleteAndBalanced) {
  std::vector<std::int64_t> train_end = {0, 1, 5, 9, 2, 2, 30, 1, 4, 4, 4, 7};
  std::int64_t total = 0;
  for (auto t : train_end) total += examples_of_user(t);
  for (int w = 1; w <= 5; ++w) {
    auto shards = shard_users(train_end, w);
    ASSERT_EQ(static_cast<int>(shards.size()), w);
    std::int64_t at = 0, sum = 0;
    for (const auto& s : shards) {
      EXPECT_EQ(s.user_begin, at);
      EXPECT_LE(s.user_begin, s.user_end);
      at = s.user_end;
      std::int64_t ex = 0;
      for (auto u = s.user_begin; u < s.user_end; ++u)
        ex += examples_of_user(train_end[static_cast<std::size_t>(u)]);
      EXPECT_EQ(ex, s.examples);
      sum += ex;
    }
    EXPECT_EQ(at, static_cast<std::int64_t>(train_end.size()));
    EXPECT_EQ(sum, total);
  }
}

/// The suite's dataset is written once: under mpirun by the job (collective),
/// in process by a world of one; the test bodies run on every rank
/// (on_every_rank: under mpirun once per process, else at world sizes 1-4
/// with the ranks as threads).
class SamplerTest : public ::testing::Test {
 protected:
  static std::string dataset_;

  static Communicator& setup_comm() {
    if (launched()) return test_comm();
    static auto one = create_local_communicators(1, CommConfig{});
    return *one.front();
  }
  static void SetUpTestSuite() {
    dataset_ = testing::make_test_dataset(setup_comm(), "sampler", 150, 97, 9, 12);
  }
  static void TearDownTestSuite() { testing::dataset_helper_cleanup(setup_comm(), dataset_); }

  static SamplerOptions options() {
    SamplerOptions o;
    o.batch_size = 8;
    o.history = 4;
    o.seed = 99;
    return o;
  }
};
std::string SamplerTest::dataset_;

TEST_F(SamplerTest, EveryTrainingExampleExactlyOncePerEpochOnEqualSteps) {
  on_every_rank([&](Communicator& comm) {
    DatasetFile f(dataset_);
    BatchSampler sampler(f, comm.rank(), comm.size(), options());
    at::Tensor steps = comm.all_gather(at::tensor({sampler.steps_per_epoch()}, at::kLong));
    EXPECT_TRUE(at::equal(steps, at::full_like(steps, sampler.steps_per_epoch())));

    for (std::int64_t epoch = 0; epoch < 2; ++epoch) {
      std::vector<std::int64_t> seen;
      for (std::int64_t s = 0; s < sampler.steps_per_epoch(); ++s) {
        Batch b = sampler.batch({epoch, s});
        EXPECT_LE(b.size(), 8);
        for (std::int64_t k = 0; k < b.size(); ++k) seen.push_back(b.example_event[k].item<std::int64_t>());
      }
      const std::vector<std::int64_t> got = gathered_sorted(comm, seen);
      if (comm.rank() != 0) continue;
      // Expected: for each user, training events 1 .. train_end-1 (absolute).
      UserSlice everyone = f.read_users(0, f.num_users());
      std::vector<std::int64_t> want;
      for (std::int64_t u = 0; u < f.num_users(); ++u) {
        for (std::int64_t j = 1; j < everyone.users.train_end[static_cast<std::size_t>(u)]; ++j) {
          want.push_back(everyone.users.offsets[static_cast<std::size_t>(u)] + j);
        }
      }
      EXPECT_EQ(got, want) << "epoch " << epoch << " with " << comm.size() << " ranks";
      EXPECT_EQ(static_cast<std::int64_t>(got.size()), sampler.global_examples());
    }
  });
}

TEST_F(SamplerTest, SameSeedSameBatchesOtherEpochOtherOrder) {
  on_every_rank([&](Communicator& comm) {
    DatasetFile f(dataset_);
    BatchSampler a(f, comm.rank(), comm.size(), options());
    BatchSampler b(f, comm.rank(), comm.size(), options());
    Batch x = a.batch({0, 1}), y = b.batch({0, 1}), z = a.batch({1, 1});
    EXPECT_TRUE(at::equal(x.example_event, y.example_event));
    EXPECT_TRUE(at::equal(x.item_tokens, y.item_tokens));
    EXPECT_TRUE(at::equal(x.history, y.history));
    if (a.local_examples() > 16) {
      EXPECT_FALSE(at::equal(x.example_event, z.example_event));
    }
  });
}

TEST_F(SamplerTest, BatchContentsMatchTheDataset) {
  on_every_rank([&](Communicator& comm) {
    DatasetFile f(dataset_);
    BatchSampler sampler(f, comm.rank(), comm.size(), options());
    UserSlice everyone = f.read_users(0, f.num_users());
    ItemTable items = f.read_items();
    Batch b = sampler.batch({0, 0});
    ASSERT_GT(b.size(), 0);
    // Item rows: unique, sorted, tokens and masks from the item table.
    auto ids = b.item_ids;
    EXPECT_TRUE(at::equal(std::get<0>(at::sort(ids)), ids));
    EXPECT_EQ(std::get<0>(at::_unique(ids)).numel(), ids.numel());
    for (std::int64_t r = 0; r < ids.numel(); ++r) {
      auto item = static_cast<std::size_t>(ids[r].item<std::int64_t>());
      for (int k = 0; k < f.text_len(); ++k) {
        EXPECT_EQ(b.item_tokens[r][k].item<std::int64_t>(),
                  items.tokens[item * static_cast<std::size_t>(f.text_len()) + static_cast<std::size_t>(k)]);
        EXPECT_EQ(b.item_mask[r][k].item<std::int64_t>(), k < items.length[item] ? 1 : 0);
      }
    }
    for (std::int64_t k = 0; k < b.size(); ++k) {
      const auto user = static_cast<std::size_t>(b.example_user[k].item<std::int64_t>());
      const std::int64_t target = b.example_event[k].item<std::int64_t>();
      const std::int64_t first = everyone.users.offsets[user];
      ASSERT_GT(target, first);
      ASSERT_LT(target, first + everyone.users.train_end[user]);
      EXPECT_EQ(ids[b.target[k].item<std::int64_t>()].item<std::int64_t>(),
                everyone.events.item[static_cast<std::size_t>(target)]);
      EXPECT_FLOAT_EQ(b.weight[k].item<float>(), everyone.events.weight[static_cast<std::size_t>(target)]);
      // Right-aligned history: slot T-1 is the event just before the target.
      for (int slot = 3, j = static_cast<int>(target) - 1; slot >= 0; --slot, --j) {
        std::int64_t row = b.history[k][slot].item<std::int64_t>();
        if (j < first) {
          EXPECT_EQ(row, -1);
        } else {
          ASSERT_GE(row, 0);
          EXPECT_EQ(ids[row].item<std::int64_t>(), everyone.events.item[static_cast<std::size_t>(j)]);
        }
      }
    }
  });
}

TEST(SequenceWindows, CountAsTheSasrecCut) {
  // T = 4, stride 2: targets 1..n-1; the first window ends at min(4, n-1),
  // each next one 2 later.
  EXPECT_EQ(windows_of_user(0, 4), 0);
  EXPECT_EQ(windows_of_user(1, 4), 0);
  EXPECT_EQ(windows_of_user(2, 4), 1);
  EXPECT_EQ(windows_of_user(5, 4), 1);  // targets 1..4
  EXPECT_EQ(windows_of_user(6, 4), 2);  // ... then 5
  EXPECT_EQ(windows_of_user(7, 4), 2);  // ... then 5..6
  EXPECT_EQ(windows_of_user(8, 4), 3);
  EXPECT_EQ(windows_of_user(30, 1), 29);  // stride 1
}

TEST_F(SamplerTest, SequenceWindowsPredictEveryTargetOnceFromItsPrefix) {
  on_every_rank([&](Communicator& comm) {
    DatasetFile f(dataset_);
    SamplerOptions o = options();
    o.sequences = true;
    const std::int64_t t_len = o.history;
    BatchSampler sampler(f, comm.rank(), comm.size(), o);
    UserSlice everyone = f.read_users(0, f.num_users());
    at::Tensor steps = comm.all_gather(at::tensor({sampler.steps_per_epoch()}, at::kLong));
    EXPECT_TRUE(at::equal(steps, at::full_like(steps, sampler.steps_per_epoch())));
    std::int64_t windows = 0;
    for (std::int64_t u = sampler.shard().user_begin; u < sampler.shard().user_end; ++u) {
      windows += windows_of_user(everyone.users.train_end[static_cast<std::size_t>(u)], t_len);
    }
    EXPECT_EQ(sampler.local_rows(), windows);
    EXPECT_GT(sampler.local_rows(), 0);
    EXPECT_LT(sampler.local_rows(), sampler.local_examples());  // several targets per window

    std::vector<std::int64_t> seen;
    for (std::int64_t step = 0; step < sampler.steps_per_epoch(); ++step) {
      Batch b = sampler.batch({0, step});
      EXPECT_LE(b.rows(), 8);
      ASSERT_TRUE(b.target_slot.defined());
      ASSERT_EQ(b.target_slot.numel(), b.size());
      for (std::int64_t k = 0; k < b.size(); ++k) {
        const auto user = static_cast<std::size_t>(b.example_user[k].item<std::int64_t>());
        const std::int64_t target = b.example_event[k].item<std::int64_t>();
        const std::int64_t first = everyone.users.offsets[user];
        seen.push_back(target);
        ASSERT_GT(target, first);
        EXPECT_EQ(b.item_ids[b.target[k].item<std::int64_t>()].item<std::int64_t>(),
                  everyone.events.item[static_cast<std::size_t>(target)]);
        // The slot just before the target holds event target-1, and at least
        // min(T/2, all) of the events before the target are in the window.
        const std::int64_t slot = b.target_slot[k].item<std::int64_t>();
        const std::int64_t row = slot / t_len;
        const std::int64_t at = slot % t_len;
        ASSERT_LT(row, b.rows());
        const std::int64_t need = std::min(t_len / 2, target - first);
        ASSERT_GE(at + 1, need) << "target " << target;
        for (std::int64_t i = 1; i <= need; ++i) {
          const std::int64_t r = b.history[row][at - (i - 1)].item<std::int64_t>();
          ASSERT_GE(r, 0);
          EXPECT_EQ(b.item_ids[r].item<std::int64_t>(),
                    everyone.events.item[static_cast<std::size_t>(target - i)]);
        }
        // Slots after the predicting one hold later events of the window only.
        if (at + 1 < t_len) {
          const std::int64_t r = b.history[row][at + 1].item<std::int64_t>();
          ASSERT_GE(r, 0);
          EXPECT_EQ(b.item_ids[r].item<std::int64_t>(),
                    everyone.events.item[static_cast<std::size_t>(target)]);
        }
      }
    }
    const std::vector<std::int64_t> got = gathered_sorted(comm, seen);
    if (comm.rank() != 0) return;
    std::vector<std::int64_t> want;
    for (std::int64_t u = 0; u < f.num_users(); ++u) {
      for (std::int64_t j = 1; j < everyone.users.train_end[static_cast<std::size_t>(u)]; ++j) {
        want.push_back(everyone.users.offsets[static_cast<std::size_t>(u)] + j);
      }
    }
    EXPECT_EQ(got, want) << "every training target exactly once per epoch, " << comm.size() << " ranks";
    EXPECT_EQ(static_cast<std::int64_t>(got.size()), sampler.global_examples());
  });
}

TEST_F(SamplerTest, TimeAndContextFeaturesOfEverySlotAndTargetAreTheirEvents) {
  on_every_rank([&](Communicator& comm) {
    DatasetFile f(dataset_);
    ASSERT_EQ(f.context_names(), std::vector<std::string>{"device"});
    const std::vector<std::string> devices = f.context_values("device");
    ASSERT_EQ(devices.size(), 2u);  // mobile, desktop
    EXPECT_THROW(f.context_values("country"), IoError);
    SamplerOptions o = options();
    o.sequences = true;
    o.context.time = parse_time_features({"gap", "weekday", "hour"});
    o.context.column_values = {2};
    o.context_columns = {"device"};
    const std::int64_t t_len = o.history;
    BatchSampler sampler(f, comm.rank(), comm.size(), o);
    UserSlice everyone = f.read_users(0, f.num_users(), {"device"});
    const auto& time = everyone.events.time;
    auto expected = [&](std::int64_t event, std::int64_t first) {
      std::vector<std::int64_t> v(4);
      const auto e = static_cast<std::size_t>(event);
      time_feature_values(o.context.time, time[e], event > first ? time[e - 1] : kUnknownTime, v.data());
      v[3] = everyone.events.context[0][e] + 1;  // the device's code + 1
      return v;
    };
    auto row_of = [](const at::Tensor& t) {
      const at::Tensor c = t.contiguous();
      return std::vector<std::int64_t>(c.data_ptr<std::int64_t>(), c.data_ptr<std::int64_t>() + c.numel());
    };
    std::int64_t checked = 0;
    for (std::int64_t step = 0; step < sampler.steps_per_epoch(); ++step) {
      Batch b = sampler.batch({0, step});
      ASSERT_EQ(b.history_context.sizes(), (std::vector<std::int64_t>{b.rows(), t_len, 4}));
      ASSERT_EQ(b.query_context.sizes(), (std::vector<std::int64_t>{b.size(), 4}));
      // Padded slots carry no value.
      EXPECT_TRUE(b.history_context.masked_select((b.history < 0).unsqueeze(-1)).eq(0).all().item<bool>());
      for (std::int64_t k = 0; k < b.size(); ++k) {
        const auto user = static_cast<std::size_t>(b.example_user[k].item<std::int64_t>());
        const std::int64_t first = everyone.users.offsets[user];
        const std::int64_t target = b.example_event[k].item<std::int64_t>();
        // The query is the target's moment; the predicting slot holds event target-1.
        EXPECT_EQ(row_of(b.query_context[k]), expected(target, first)) << "target " << target;
        const std::int64_t slot = b.target_slot[k].item<std::int64_t>();
        EXPECT_EQ(row_of(b.history_context[slot / t_len][slot % t_len]), expected(target - 1, first))
            << "slot before target " << target;
        ++checked;
      }
    }
    EXPECT_EQ(checked, sampler.local_examples());
    // Without time features the batch has none.
    BatchSampler plain(f, comm.rank(), comm.size(), options());
    EXPECT_FALSE(plain.batch({0, 0}).history_context.defined());
  });
}

TEST_F(SamplerTest, SampledNegativesAndLogQ) {
  on_every_rank([&](Communicator& comm) {
    DatasetFile f(dataset_);
    SamplerOptions o = options();
    o.sampled_negatives = 7;
    BatchSampler sampler(f, comm.rank(), comm.size(), o);
    ItemTable items = f.read_items();
    double total = static_cast<double>(items.ids.size());
    for (auto c : items.train_count) total += static_cast<double>(c);
    Batch a = sampler.batch({0, 0}), b = sampler.batch({0, 0}), c = sampler.batch({0, 1});
    if (a.size() == 0) return;  // an empty first batch on this rank
    ASSERT_EQ(a.negatives.numel(), 7);
    EXPECT_TRUE(at::equal(a.negatives, b.negatives));  // a pure function of the cursor
    if (c.size() > 0) {
      EXPECT_FALSE(
          at::equal(a.item_ids.index_select(0, a.negatives), c.item_ids.index_select(0, c.negatives)));
    }
    // Negatives are rows of the batch's items; log q is each item's smoothed share of training events.
    EXPECT_TRUE((a.negatives >= 0).all().item<bool>());
    EXPECT_TRUE((a.negatives < a.item_ids.numel()).all().item<bool>());
    for (std::int64_t r = 0; r < a.item_ids.numel(); ++r) {
      auto item = static_cast<std::size_t>(a.item_ids[r].item<std::int64_t>());
      EXPECT_NEAR(a.item_log_q[r].item<float>(),
                  std::log((static_cast<double>(items.train_count[item]) + 1) / total), 1e-5);
    }
  });
}

TEST_F(SamplerTest, LoaderResumesAtACursorWithTheSameRemainingBatches) {
  on_every_rank([&](Communicator& comm) {
    DatasetFile f(dataset_);
    auto sampler = std::make_shared<BatchSampler>(f, comm.rank(), comm.size(), options());
    const std::int64_t steps = sampler->steps_per_epoch();
    ASSERT_GE(steps, 3);
    // Run 1: from the start, through the end of epoch 1.
    std::vector<Batch> full;
    {
      BatchLoader loader(sampler, {0, 0});
      for (std::int64_t i = 0; i < 2 * steps; ++i) full.push_back(loader.next());
    }
    // Run 2: stop after 3 steps, save the cursor, resume in a new loader.
    Cursor saved;
    {
      BatchLoader loader(sampler, {0, 0});
      for (int i = 0; i < 3; ++i) loader.next();
      saved = loader.cursor();
    }
    EXPECT_EQ(saved, (Cursor{0, 3}));
    BatchLoader resumed(sampler, saved);
    for (std::int64_t i = 3; i < 2 * steps; ++i) {
      Batch b = resumed.next();
      EXPECT_EQ(b.cursor, full[static_cast<std::size_t>(i)].cursor);
      EXPECT_TRUE(at::equal(b.example_event, full[static_cast<std::size_t>(i)].example_event))
          << "batch " << i;
      EXPECT_TRUE(at::equal(b.history, full[static_cast<std::size_t>(i)].history));
    }
    EXPECT_EQ(resumed.cursor(), (Cursor{2, 0}));
  });
}

}  // namespace
}  // namespace llmrec
