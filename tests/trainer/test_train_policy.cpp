// The training loops' pure decisions (when to validate, checkpoint and
// stop; early stopping) and the step log both loops share.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "trainer/progress.h"

namespace llmrec {
namespace {

TEST(JudgeValidation, ABetterScoreResetsTheCountAndPatienceStops) {
  ValidationVerdict v = judge_validation(0.10, 0.09, 2, 3);
  EXPECT_TRUE(v.improved);
  EXPECT_EQ(v.bad_evals, 0);
  EXPECT_FALSE(v.stop);
  v = judge_validation(0.09, 0.09, 1, 3);  // equal is not better
  EXPECT_FALSE(v.improved);
  EXPECT_EQ(v.bad_evals, 2);
  EXPECT_FALSE(v.stop);
  v = judge_validation(0.08, 0.09, 2, 3);
  EXPECT_EQ(v.bad_evals, 3);
  EXPECT_TRUE(v.stop);
  v = judge_validation(0.08, 0.09, 7, 0);  // patience 0: never stops, counts nothing
  EXPECT_FALSE(v.stop);
  EXPECT_EQ(v.bad_evals, 7);
  EXPECT_TRUE(judge_validation(0.0, -1.0, 0, 1).improved);  // the first validation always improves
}

TEST(StepEndTest, EpochEndsEvalEveryCheckpointsAndStopAfter) {
  StepSchedule s;
  s.planned_steps = 10;
  s.steps_per_epoch = 4;
  std::vector<std::int64_t> validated, checkpointed;
  for (std::int64_t done = 1; done <= 10; ++done) {
    const StepEnd e = step_end(s, done);
    if (e.validate) validated.push_back(done);
    if (e.checkpoint) checkpointed.push_back(done);
    EXPECT_EQ(e.last, done == 10);
    EXPECT_FALSE(e.stop_after);
  }
  EXPECT_EQ(validated, (std::vector<std::int64_t>{4, 8, 10}));  // each epoch's end and the last step
  EXPECT_EQ(checkpointed, (std::vector<std::int64_t>{10}));

  s.eval_every = 3;
  s.checkpoint_every = 5;
  validated.clear();
  checkpointed.clear();
  for (std::int64_t done = 1; done <= 10; ++done) {
    const StepEnd e = step_end(s, done);
    if (e.validate) validated.push_back(done);
    if (e.checkpoint) checkpointed.push_back(done);
  }
  EXPECT_EQ(validated, (std::vector<std::int64_t>{3, 6, 9, 10}));
  EXPECT_EQ(checkpointed, (std::vector<std::int64_t>{5, 10}));

  s.validates = false;
  EXPECT_FALSE(step_end(s, 3).validate);

  // stop_after counts this run's steps (from start_step), never at the last step.
  s.start_step = 4;
  s.stop_after = 3;
  EXPECT_FALSE(step_end(s, 6).stop_after);
  EXPECT_TRUE(step_end(s, 7).stop_after);
  EXPECT_TRUE(step_end(s, 7).checkpoint);
  s.stop_after = 6;
  EXPECT_FALSE(step_end(s, 10).stop_after);  // the run ends anyway
}

TEST(StepLoggerTest, OneLinePerWindowWithTheWindowMeanLoss) {
  std::ostringstream out;
  StepLogOptions o;
  o.planned_steps = 5;
  o.steps_per_epoch = 2;
  o.log_every = 2;
  o.metrics = &out;
  o.rate_key = "texts_per_s";
  StepLogger logger(o);
  for (std::int64_t done = 1; done <= 5; ++done) {
    StepRecord r;
    r.done = done;
    r.loss_sum = static_cast<double>(done) * 10;  // a token-summed loss...
    r.loss_count = 10;                            // ...over 10 tokens: the step's loss is `done`
    r.items = 8;
    r.lr = 0.5;
    r.extra = {{"allreduce_bytes_per_step", 64}};
    logger.record(r);
  }
  std::istringstream lines(out.str());
  std::vector<nlohmann::json> got;
  for (std::string line; std::getline(lines, line);) got.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(got.size(), 3u);  // after steps 2, 4 and the last (5)
  EXPECT_EQ(got[0]["step"], 2);
  EXPECT_DOUBLE_EQ(got[0]["loss"].get<double>(), 1.5);
  EXPECT_DOUBLE_EQ(got[1]["loss"].get<double>(), 3.5);
  EXPECT_DOUBLE_EQ(got[2]["loss"].get<double>(), 5.0);
  EXPECT_DOUBLE_EQ(got[2]["epoch"].get<double>(), 2.5);
  for (const auto& j : got) {
    EXPECT_TRUE(j.contains("texts_per_s"));
    EXPECT_EQ(j["allreduce_bytes_per_step"], 64);
    EXPECT_DOUBLE_EQ(j["lr"].get<double>(), 0.5);
  }
  EXPECT_GT(logger.rate(), 0.0);
}

}  // namespace
}  // namespace llmrec
