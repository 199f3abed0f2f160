// Training checkpoints: resuming is exact (2N steps == N, stop, resume, N
// more: bitwise, with dropout, validation and early-stopping state in
// play, and with AdaLoRA's allocator in the middle of its pruning), a checkpoint loads on another world size,
// damaged checkpoints are skipped for the previous good one, a changed model is reported key by key, and only
// the newest keep_checkpoints files are kept.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>

#include "common/hdf5.h"
#include "tests/mpi_test_main.h"
#include "tests/test_dataset_helper.h"
#include "tests/trainer/eval_test_util.h"
#include "tests/trainer/tiny_model.h"
#include "trainer/checkpoint.h"
#include "trainer/trainer.h"

namespace llmrec {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

class Resume : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dataset_ = new std::string(
        ::llmrec::testing::make_test_dataset(::llmrec::testing::test_comm(), "resume", 60, 40, 8.0, 10));
  }
  static void TearDownTestSuite() {
    ::llmrec::testing::dataset_helper_cleanup(::llmrec::testing::test_comm(), *dataset_);
    delete dataset_;
  }

  /// A run directory next to the dataset (same path on every rank).
  static std::string run_dir(const std::string& name) {
    return (fs::path(*dataset_).parent_path() /
            (name + "_w" + std::to_string(::llmrec::testing::test_comm().size())))
        .string();
  }

  static TrainerSetup setup(const std::string& dir) {
    TrainerSetup s;
    s.model = ::llmrec::testing::tiny_model_config(0);
    s.model.bert.dropout = 0.1;  // dropout draws from the RNG the checkpoint saves
    s.model.id_dropout = 0.3;
    s.model.lora.dropout = 0.1;
    s.train.batch_size = 8;
    s.train.max_steps = 8;
    s.train.lr = 1e-2;
    s.train.warmup = 2;
    s.train.eval_every = 3;
    s.train.log_every = 100;
    s.train.progress = false;
    s.train.negatives = "global";
    s.train.seed = 11;
    s.dataset = *dataset_;
    s.run_dir = dir;
    s.run_config_yaml = "run: {}\n";
    return s;
  }

  /// A deterministic "validation score" of the weights that goes up and
  /// down, so that the best model and the patience counter both matter.
  static double fake_validation(Recommender& m) {
    double s = 0;
    for (const auto& p : m->parameters()) s += p.to(torch::kDouble).sum().item<double>();
    return std::sin(1000.0 * s);
  }

  static void expect_same(Recommender& a, Recommender& b, const std::string& what) {
    auto pa = a->named_parameters(), pb = b->named_parameters();
    ASSERT_EQ(pa.size(), pb.size());
    for (const auto& p : pa) EXPECT_TRUE(torch::equal(p.value(), pb[p.key()])) << what << ": " << p.key();
    auto ba = a->named_buffers(), bb = b->named_buffers();
    ASSERT_EQ(ba.size(), bb.size());
    for (const auto& p : ba) EXPECT_TRUE(torch::equal(p.value(), bb[p.key()])) << what << ": " << p.key();
  }

  /// 2N steps == N, stop, resume, N more: bitwise (the last and the best
  /// weights and buffers, the loss, the best step and score), for the
  /// setup `change` gives.
  static void expect_resume_is_bitwise(const std::string& name,
                                       const std::function<void(TrainerSetup&)>& change) {
    Communicator& comm = ::llmrec::testing::test_comm();
    const std::string dir_a = run_dir(name + "full"), dir_b = run_dir(name + "sliced");
    TrainerSetup sa = setup(dir_a);
    change(sa);
    Trainer a(sa, comm);
    TrainResult ra = a.run(fake_validation);
    ASSERT_EQ(ra.steps, 8);

    TrainerSetup sb = setup(dir_b);
    change(sb);
    sb.stop_after = 4;
    TrainResult rb;
    {
      Trainer b(sb, comm);
      rb = b.run(fake_validation);
    }
    EXPECT_TRUE(rb.stopped_after);
    EXPECT_EQ(rb.steps, 4);
    ASSERT_EQ(rb.last_checkpoint, checkpoint_path(checkpoint_dir(dir_b), 4));

    TrainerSetup sc = setup(dir_b);
    change(sc);
    sc.resume = rb.last_checkpoint;
    Trainer c(sc, comm);
    TrainResult rc = c.run(fake_validation);
    EXPECT_EQ(rc.resumed_step, 4);
    EXPECT_EQ(rc.steps, 8);
    EXPECT_EQ(rc.last_loss, ra.last_loss);
    EXPECT_EQ(rc.best_step, ra.best_step);
    EXPECT_EQ(rc.best_score, ra.best_score);
    expect_same(a.last_model(), c.last_model(), "final weights");
    expect_same(a.model(), c.model(), "best weights");
  }

  /// The tables of kept item features in the step-4 checkpoint of
  /// expect_resume_is_bitwise(name, ...) (call on rank 0).
  static std::uint64_t kept_tables(const std::string& name) {
    const auto f = h5::File::open(checkpoint_path(checkpoint_dir(run_dir(name + "sliced")), 4));
    const std::vector<std::uint64_t> table = f.shape("item_features/table");
    EXPECT_EQ(table.size(), 3U);
    if (table.size() != 3) return 0;
    EXPECT_EQ(f.shape("item_features/kept"), (std::vector<std::uint64_t>{table[0], table[1]}));
    return table[0];
  }

  static std::string* dataset_;
};
std::string* Resume::dataset_ = nullptr;

TEST_F(Resume, StopAndResumeIsBitwiseTheUninterruptedRun) {
  expect_resume_is_bitwise("", [](TrainerSetup&) {});
}

// train.item_cache_refresh: the kept item features are in the checkpoint,
// so a run stopped between two refreshes (3 and 6) scores the other
// candidates from the same stale rows after the resume.
TEST_F(Resume, KeptItemFeaturesResumeBetweenRefreshes) {
  expect_resume_is_bitwise("kept", [](TrainerSetup& s) {
    s.train.item_cache_refresh = 3;
    s.model.loss.negatives = "all";  // candidates beyond the batch's own items
    s.train.negatives = "local";
  });
  if (::llmrec::testing::test_comm().rank() == 0) {
    EXPECT_EQ(kept_tables("kept"), 1U);  // every rank encoded every item after the refresh: one table
  }
}

// With the batch's own items as the only candidates each rank keeps the
// rows its own batches needed, encoded at the step they first did: the
// checkpoint holds every rank's table (one when they are the same), and
// each rank resumes from its own.
TEST_F(Resume, EachRanksKeptItemFeaturesResume) {
  expect_resume_is_bitwise("kept_ranks", [](TrainerSetup& s) { s.train.item_cache_refresh = 3; });
  Communicator& comm = ::llmrec::testing::test_comm();
  if (comm.rank() == 0) {
    EXPECT_EQ(kept_tables("kept_ranks"), static_cast<std::uint64_t>(comm.size()));  // one table a rank
  }
}

// AdaLoRA's allocator state (smoothed importance, kept triplets) is in the
// checkpoint: stopped in the middle of the pruning, the run goes on exactly.
TEST_F(Resume, AdaLoraResumesMidPruning) {
  expect_resume_is_bitwise("adalora", [](TrainerSetup& s) {
    s.model.lora.adaptive.enabled = true;
    s.model.lora.adaptive.target_r = 2;
    s.model.lora.adaptive.tfinal = 2;  // steps 1-5 prune, 6 is final, 7-8 keep the pattern
  });
}

TEST_F(Resume, CheckpointLoadsOnAnotherWorldSize) {
  Communicator& comm = ::llmrec::testing::test_comm();
  if (comm.size() != 2) GTEST_SKIP() << "needs 2 ranks";
  const std::string dir = run_dir("world");
  TrainerSetup s = setup(dir);
  s.stop_after = 4;
  Trainer b(s, comm);
  TrainResult rb = b.run(fake_validation);
  ASSERT_TRUE(rb.stopped_after);
  comm.barrier();
  if (comm.rank() == 0) {
    ::llmrec::testing::LocalCommunicator one;
    // Resume on world size 1 with nothing left to do: exactly the weights saved.
    TrainerSetup s1 = setup(dir);
    s1.resume = rb.last_checkpoint;
    s1.train.max_steps = 4;
    s1.run_dir = dir + "_one";
    Trainer same(s1, one);
    TrainResult r1 = same.run(fake_validation);
    EXPECT_EQ(r1.resumed_step, 4);
    EXPECT_EQ(r1.steps, 4);
    expect_same(b.last_model(), same.last_model(), "weights after loading on world size 1");
    // And train on from there.
    s1.train.max_steps = 8;
    s1.run_dir = dir + "_one_more";
    Trainer more(s1, one);
    TrainResult r2 = more.run(fake_validation);
    EXPECT_EQ(r2.steps, 8);
    EXPECT_TRUE(std::isfinite(r2.last_loss));
  }
  comm.barrier();
}

TEST_F(Resume, DamagedCheckpointsAreSkippedAndOnlyTheNewestKept) {
  Communicator& comm = ::llmrec::testing::test_comm();
  const std::string dir = run_dir("damaged");
  TrainerSetup s = setup(dir);
  s.train.max_steps = 6;
  s.train.checkpoint_every = 2;
  s.train.keep_checkpoints = 2;
  {
    Trainer t(s, comm);
    t.run(fake_validation);
  }
  comm.barrier();
  if (comm.rank() != 0) return;
  const std::string cdir = checkpoint_dir(dir);
  const std::string c4 = checkpoint_path(cdir, 4), c6 = checkpoint_path(cdir, 6);
  EXPECT_EQ(checkpoint_list(cdir), (std::vector<std::string>{c6, c4}));  // step 2 pruned

  std::string bytes;
  {
    std::ifstream in(c6, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::ofstream(c6, std::ios::binary) << bytes.substr(0, bytes.size() / 2);  // truncated
  std::vector<std::string> skipped;
  EXPECT_EQ(checkpoint_latest_valid(cdir, &skipped), c4);
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_THAT(skipped[0], HasSubstr(c6));

  // Damage a byte inside tensor data: the checksum refuses it.
  std::string damaged = bytes;
  for (std::size_t at = damaged.size() / 3; at < damaged.size() * 2 / 3; at += damaged.size() / 30) {
    damaged[at] = static_cast<char>(damaged[at] ^ 0x5a);
  }
  std::ofstream(c6, std::ios::binary) << damaged;
  skipped.clear();
  EXPECT_EQ(checkpoint_latest_valid(cdir, &skipped), c4);
  EXPECT_EQ(skipped.size(), 1u);

  // A config that changes the model's shape is reported key by key.
  ::llmrec::testing::LocalCommunicator one;
  TrainerSetup changed = setup(dir + "_changed");
  changed.model.dim = 32;
  changed.model.user.heads = 4;
  changed.resume = c4;
  Trainer t(changed, one);
  try {
    t.run(fake_validation);
    ADD_FAILURE() << "a changed model must be refused";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("model.dim: checkpoint 16, config 32"));
    EXPECT_THAT(e.what(), HasSubstr("model.user.heads: checkpoint 2, config 4"));
    EXPECT_THAT(e.what(), HasSubstr(c4));
  }
}

TEST(ModelConfigDiff, ListsEveryDifferentKey) {
  ModelConfig a = ::llmrec::testing::tiny_model_config(100), b = a;
  EXPECT_TRUE(model_config_diff(a, b).empty());
  b.lora.r = 8;
  b.lora.targets = {"query"};
  auto d = model_config_diff(a, b);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_THAT(d[0], HasSubstr("model.lora.r: checkpoint 4, config 8"));
  EXPECT_THAT(d[1], HasSubstr("model.lora.targets"));
}

}  // namespace
}  // namespace llmrec
