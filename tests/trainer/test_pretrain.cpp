// `llmrec pretrain`'s loop (trainer/pretrain.h) on a small synthetic shop:
// it learns (held-out loss down, accuracy up), W = 2 ranks x b texts step as
// one process x 2b texts, a stopped and resumed run is bitwise the
// uninterrupted one, the HF directory it writes is what fine-tuning loads
// (and a vocabulary other than the dataset's is refused there), and the
// models that cannot pre-train are refused by name.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "models/recommender.h"
#include "tests/mpi_test_main.h"
#include "tests/test_dataset_helper.h"
#include "tests/trainer/eval_test_util.h"
#include "tests/trainer/tiny_model.h"
#include "trainer/checkpoint.h"
#include "trainer/pretrain.h"
#include "trainer/trainer.h"

namespace llmrec {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

class Pretrain : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dataset_ = new std::string(
        ::llmrec::testing::make_test_dataset(::llmrec::testing::test_comm(), "pretrain", 120, 40, 6.0, 12));
  }
  static void TearDownTestSuite() {
    ::llmrec::testing::dataset_helper_cleanup(::llmrec::testing::test_comm(), *dataset_);
    delete dataset_;
  }
  static std::string run_dir(const std::string& name) {
    return (fs::path(*dataset_).parent_path() /
            (name + "_w" + std::to_string(::llmrec::testing::test_comm().size())))
        .string();
  }
  static PretrainSetup setup(const std::string& dir) {
    PretrainSetup s;
    s.bert = ::llmrec::testing::tiny_model_config(0).bert;
    s.bert.dropout = 0.1;  // dropout draws from the RNG the checkpoint saves
    s.pretrain.batch_size = 8;
    s.pretrain.max_steps = 8;
    s.pretrain.lr = 3e-3;
    s.pretrain.warmup = 2;
    s.pretrain.log_every = 100;
    s.pretrain.eval_every = 3;
    s.pretrain.progress = false;
    s.pretrain.holdout = 0.1;
    s.pretrain.seed = 11;
    s.dataset = *dataset_;
    s.run_dir = dir;
    s.run_config_yaml = "run: {}\n";
    return s;
  }
  static void expect_same(BertForMaskedLMImpl& a, BertForMaskedLMImpl& b, double tolerance,
                          const std::string& what) {
    auto pa = a.named_parameters(), pb = b.named_parameters();
    ASSERT_EQ(pa.size(), pb.size());
    double worst = 0;
    std::string worst_name;
    for (const auto& p : pa) {
      const double d = (p.value() - pb[p.key()]).abs().max().item<double>();
      if (d > worst) {
        worst = d;
        worst_name = p.key();
      }
    }
    EXPECT_LE(worst, tolerance) << what << ": largest difference in " << worst_name;
  }
  static std::string* dataset_;
};
std::string* Pretrain::dataset_ = nullptr;

TEST(PretrainTexts, HeldOutTextsAreASeededDisjointShareAndEmptyTextsAreCounted) {
  ItemTable items;
  const int len = 4;
  for (int i = 0; i < 40; ++i) {
    items.ids.push_back("i" + std::to_string(i));
    const bool empty = i % 10 == 0;  // [CLS] [SEP] only
    for (std::int32_t t :
         empty ? std::vector<std::int32_t>{2, 3, 0, 0} : std::vector<std::int32_t>{2, 5, 6, 3}) {
      items.tokens.push_back(t);
    }
    items.length.push_back(empty ? 2 : 4);
  }
  std::vector<std::string> vocab = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"};
  const MlmVocab v = MlmVocab::from(vocab, "test");
  PretrainTexts t = pretrain_split_texts(items, len, v, 0.25, 7);
  EXPECT_EQ(t.empty, 4);
  EXPECT_EQ(t.heldout.size(), 9u);  // round(0.25 x 36)
  EXPECT_EQ(t.train.size(), 27u);
  std::set<std::int64_t> all(t.train.begin(), t.train.end());
  for (auto i : t.heldout) EXPECT_TRUE(all.insert(i).second) << "item " << i << " is in both";
  EXPECT_EQ(all.size(), 36u);
  EXPECT_EQ(pretrain_split_texts(items, len, v, 0.25, 7).heldout, t.heldout);
  EXPECT_NE(pretrain_split_texts(items, len, v, 0.25, 8).heldout, t.heldout);
  EXPECT_EQ(pretrain_split_texts(items, len, v, 0.0, 7).heldout.size(), 0u);
}

TEST_F(Pretrain, LearnsAndWritesWhatFineTuningLoads) {
  Communicator& comm = ::llmrec::testing::test_comm();
  const std::string dir = run_dir("learns");
  PretrainSetup s = setup(dir);
  s.bert.dropout = 0.0;
  s.pretrain.max_steps = 150;
  s.pretrain.eval_every = 0;
  s.pretrain.holdout = 0.25;
  Pretrainer p(s, comm);
  const auto [loss0, acc0] = p.evaluate_heldout();
  PretrainResult r = p.run();
  EXPECT_EQ(r.steps, 150);
  EXPECT_LT(r.heldout_loss, loss0 - 1.0) << "held-out loss " << loss0 << " -> " << r.heldout_loss;
  EXPECT_GT(r.heldout_accuracy, acc0 + 0.05) << "held-out accuracy " << acc0 << " -> " << r.heldout_accuracy;
  ASSERT_EQ(r.out_dir, dir + "/pretrained");
  comm.barrier();
  // Fine-tuning from it: the item tower's BERT holds exactly these weights.
  ModelConfig m = ::llmrec::testing::tiny_model_config(0);
  m.bert.pretrained = r.out_dir;
  DatasetFile f(*dataset_);
  Recommender rec(RecommenderOptions(m).id_items(f.num_items()));
  auto mine = p.model()->bert->named_parameters();
  for (const auto& q : rec->bert->named_parameters()) {
    if (q.key().find("lora_") != std::string::npos) continue;
    EXPECT_TRUE(torch::equal(q.value(), mine[q.key()])) << q.key();
  }
  // metrics.jsonl: loss lines and held-out lines.
  if (comm.rank() == 0) {
    std::ifstream in(dir + "/pretrain/metrics.jsonl");
    std::string line, all;
    while (std::getline(in, line)) all += line + "\n";
    EXPECT_THAT(all, HasSubstr("\"heldout_accuracy\""));
    EXPECT_THAT(all, HasSubstr("\"texts_per_s\""));
  }
  // Training from it with another vocabulary is refused, naming both.
  comm.barrier();
  if (comm.rank() == 0) {
    std::ofstream(r.out_dir + "/vocab.txt", std::ios::app) << "extra\n";
    ::llmrec::testing::LocalCommunicator one;
    TrainerSetup ts;
    ts.model = m;
    ts.dataset = *dataset_;
    ts.run_dir = dir + "_train";
    try {
      Trainer t(ts, one);
      FAIL() << "a pre-trained encoder with another vocabulary was accepted";
    } catch (const ConfigError& e) {
      EXPECT_THAT(e.what(), HasSubstr("vocab.txt"));
      EXPECT_THAT(e.what(), HasSubstr("data.vocab"));
    }
  }
  comm.barrier();
}

TEST_F(Pretrain, TwoRanksStepAsOneProcessWithTheirTexts) {
  Communicator& comm = ::llmrec::testing::test_comm();
  if (comm.size() != 2) GTEST_SKIP() << "needs 2 ranks";
  PretrainSetup s = setup(run_dir("two"));
  s.bert.dropout = 0.0;  // dropout draws differ per rank
  s.pretrain.max_steps = 5;
  s.pretrain.holdout = 0.0;
  Pretrainer two(s, comm);
  two.run();
  comm.barrier();
  if (comm.rank() == 0) {
    ::llmrec::testing::LocalCommunicator local;
    PretrainSetup s1 = setup(run_dir("one"));
    s1.bert.dropout = 0.0;
    s1.pretrain.max_steps = 5;
    s1.pretrain.holdout = 0.0;
    s1.pretrain.batch_size = 16;
    Pretrainer one(s1, local);
    one.run();
    expect_same(*two.model(), *one.model(), 2e-5, "W=2 x 8 texts against W=1 x 16 texts");
    // Not vacuous: the weights moved.
    torch::manual_seed(11);
    BertForMaskedLM fresh(two.model()->config());
    double moved = 0;
    auto f = fresh->named_parameters();
    for (const auto& p : one.model()->named_parameters()) {
      moved = std::max(moved, (p.value() - f[p.key()]).abs().max().item<double>());
    }
    EXPECT_GT(moved, 1e-3);
  }
  comm.barrier();
}

TEST_F(Pretrain, StopAndResumeIsBitwiseTheUninterruptedRun) {
  Communicator& comm = ::llmrec::testing::test_comm();
  PretrainSetup sa = setup(run_dir("full"));
  Pretrainer a(sa, comm);
  PretrainResult ra = a.run();
  ASSERT_EQ(ra.steps, 8);

  PretrainSetup sb = setup(run_dir("sliced"));
  sb.stop_after = 4;
  PretrainResult rb;
  {
    Pretrainer b(sb, comm);
    rb = b.run();
  }
  EXPECT_TRUE(rb.stopped_after);
  EXPECT_TRUE(rb.out_dir.empty()) << "an unfinished run writes no HF directory";
  ASSERT_EQ(rb.last_checkpoint, checkpoint_path(pretrain_checkpoint_dir(sb.run_dir), 4));
  verify_pretrain_checkpoint(rb.last_checkpoint);

  PretrainSetup sc = setup(run_dir("sliced"));
  sc.resume = rb.last_checkpoint;
  Pretrainer c(sc, comm);
  PretrainResult rc = c.run();
  EXPECT_EQ(rc.resumed_step, 4);
  EXPECT_EQ(rc.steps, 8);
  EXPECT_EQ(rc.last_loss, ra.last_loss);
  EXPECT_EQ(rc.heldout_loss, ra.heldout_loss);
  expect_same(*a.model(), *c.model(), 0.0, "final weights");

  // A checkpoint of another encoder is refused with both configurations.
  PretrainSetup sd = setup(run_dir("other"));
  sd.bert.hidden = 16;
  sd.resume = rb.last_checkpoint;
  Pretrainer d(sd, comm);
  try {
    d.run();
    FAIL() << "a checkpoint of another encoder was loaded";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr(rb.last_checkpoint));
    EXPECT_THAT(e.what(), HasSubstr("another encoder"));
  }
  comm.barrier();
}

TEST_F(Pretrain, ModelsThatCannotPretrainAreRefusedByName) {
  Communicator& comm = ::llmrec::testing::test_comm();
  PretrainSetup s = setup(run_dir("refused"));
  s.bert.layers = 0;
  try {
    Pretrainer p(s, comm);
    FAIL() << "a BERT without layers was accepted";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("model.bert.layers"));
  }
  s = setup(run_dir("refused"));
  s.pretrain.batch_size = 1000;
  try {
    Pretrainer p(s, comm);
    FAIL() << "a batch larger than the texts was accepted";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("pretrain.batch_size"));
  }
  s = setup(run_dir("refused"));
  s.bert.vocab_size = 17;
  try {
    Pretrainer p(s, comm);
    FAIL() << "another vocabulary size was accepted";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("model.bert.vocab_size"));
  }
}

}  // namespace
}  // namespace llmrec
