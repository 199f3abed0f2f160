// The learning-rate schedule (trainer/optimizer.h) that train and pretrain
// follow: linear warm-up (a share of the steps or a count), then cosine,
// linear or constant decay to lr x min_lr_ratio at the last step.
#include <gtest/gtest.h>

#include <cmath>

#include "trainer/optimizer.h"

namespace llmrec {
namespace {

TrainConfig schedule(const std::string& kind, double warmup, double min_ratio = 0.0) {
  TrainConfig t;
  t.lr = 1e-3;
  t.schedule = kind;
  t.warmup = warmup;
  t.min_lr_ratio = min_ratio;
  return t;
}

TEST(Schedule, WarmupIsLinearFromLrOverWarmupToLr) {
  const TrainConfig t = schedule("constant", 10);  // 10 steps
  EXPECT_EQ(warmup_steps(t, 1000), 10);
  EXPECT_DOUBLE_EQ(learning_rate(t, 0, 1000), 1e-4);
  EXPECT_DOUBLE_EQ(learning_rate(t, 4, 1000), 5e-4);
  EXPECT_DOUBLE_EQ(learning_rate(t, 9, 1000), 1e-3);
  EXPECT_DOUBLE_EQ(learning_rate(t, 500, 1000), 1e-3);
  EXPECT_EQ(warmup_steps(schedule("constant", 0.05), 1000), 50);  // a share of the steps
  EXPECT_EQ(warmup_steps(schedule("constant", 0.0), 1000), 0);
  EXPECT_DOUBLE_EQ(learning_rate(schedule("constant", 0.0), 0, 1000), 1e-3);
}

TEST(Schedule, DecaysReachTheFloorAtTheLastStep) {
  for (const char* kind : {"cosine", "linear"}) {
    const TrainConfig t = schedule(kind, 10, 0.1);
    EXPECT_DOUBLE_EQ(learning_rate(t, 10, 111), 1e-3) << kind;     // first step after warm-up
    EXPECT_NEAR(learning_rate(t, 110, 111), 1e-4, 1e-15) << kind;  // the last step: lr x min_lr_ratio
    double previous = 1.0;
    for (std::int64_t s = 10; s < 111; ++s) {
      const double lr = learning_rate(t, s, 111);
      EXPECT_LE(lr, previous) << kind << " rose at step " << s;
      previous = lr;
    }
  }
  // Halfway: cosine at the mean of lr and the floor, linear too.
  EXPECT_NEAR(learning_rate(schedule("cosine", 0, 0.0), 50, 101), 5e-4, 1e-12);
  EXPECT_NEAR(learning_rate(schedule("linear", 0, 0.0), 50, 101), 5e-4, 1e-12);
  // A quarter: cosine above linear.
  EXPECT_NEAR(learning_rate(schedule("cosine", 0, 0.0), 25, 101), 1e-3 * 0.5 * (1 + std::cos(M_PI / 4)),
              1e-12);
  EXPECT_NEAR(learning_rate(schedule("linear", 0, 0.0), 25, 101), 7.5e-4, 1e-12);
}

}  // namespace
}  // namespace llmrec
