// BertModel against shared/golden/tiny-bert-forward.json (HF semantics,
// computed by PyTorch): every case, every position (padded ones too),
// last_hidden_state and pooler_output, for the three weight files of
// shared/golden/tiny-bert/ (plain, `bert.`-prefixed, legacy gamma/beta names
// with extras), in float64 (to 1e-10) and float32 (to 1e-5).
//
// The goldens come from LLMREC_SHARED_DIR (set by CTest); without that folder
// the tests skip loudly (tests/shared_data.h); when it or a file is
// missing the test fails: a silently skipped golden test proves nothing.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "models/hf_loader.h"
#include "tests/shared_data.h"

namespace llmrec {
namespace {

namespace fs = std::filesystem;

/// float64: the README asks for 1e-10 (an independent re-derivation agrees
/// to ~2e-15; the smallest wiring bug in its table, tanh-GELU, moves the
/// output by 2e-6). float32: 1e-5 (float32 vs float64 differ by 1.4e-6).
constexpr double kTolFloat64 = 1e-10;
constexpr double kTolFloat32 = 1e-5;

struct Golden {
  fs::path model_dir;
  nlohmann::json doc;
};

/// Loads the golden file, or records a failure saying what is missing.
bool load_golden(Golden& golden) {
  const char* shared = std::getenv("LLMREC_SHARED_DIR");
  if (shared == nullptr || *shared == '\0') {
    ADD_FAILURE() << "LLMREC_SHARED_DIR is not set: run through ctest, or export "
                     "LLMREC_SHARED_DIR=<checkout>/../shared (the folder holding golden/)";
    return false;
  }
  const fs::path root = fs::path(shared) / "golden";
  const fs::path forward = root / "tiny-bert-forward.json";
  golden.model_dir = root / "tiny-bert";
  for (const fs::path& p :
       {forward, golden.model_dir / "config.json", golden.model_dir / "model.safetensors",
        golden.model_dir / "model_prefixed.safetensors", golden.model_dir / "model_legacy.safetensors"}) {
    if (!fs::exists(p)) {
      ADD_FAILURE() << "golden file missing: " << p.string() << " (LLMREC_SHARED_DIR=" << shared
                    << "; regenerate with shared/golden/make_tiny_bert.py)";
      return false;
    }
  }
  std::ifstream in(forward);
  golden.doc = nlohmann::json::parse(in);
  return true;
}

torch::Tensor int_tensor(const nlohmann::json& rows) {
  std::vector<std::int64_t> flat;
  for (const auto& row : rows) {
    for (const auto& v : row) flat.push_back(v.get<std::int64_t>());
  }
  return torch::tensor(flat, torch::kLong).reshape({static_cast<std::int64_t>(rows.size()), -1});
}

torch::Tensor golden_tensor(const nlohmann::json& block) {
  std::vector<std::int64_t> shape = block.at("shape").get<std::vector<std::int64_t>>();
  std::vector<double> data = block.at("data").get<std::vector<double>>();
  return torch::tensor(data, torch::kDouble).reshape(shape);
}

struct Errors {
  double max_abs = 0;
  double max_rel = 0;  ///< |diff| / max(|ref|, 1e-3)
};

Errors compare(const torch::Tensor& got, const torch::Tensor& want) {
  EXPECT_EQ(got.sizes(), want.sizes());
  if (got.sizes() != want.sizes()) return {1e300, 1e300};
  torch::Tensor diff = (got.to(torch::kDouble) - want).abs();
  Errors e;
  e.max_abs = diff.max().item<double>();
  e.max_rel = (diff / want.abs().clamp_min(1e-3)).max().item<double>();
  return e;
}

class BertGoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(BertGoldenTest, ReproducesHfForward) {
  LLMREC_SKIP_WITHOUT_SHARED();
  Golden golden;
  if (!load_golden(golden)) return;
  const std::string weights = GetParam();
  for (auto [dtype, tag, tol] :
       {std::tuple<c10::ScalarType, const char*, double>{torch::kDouble, "float64", kTolFloat64},
        {torch::kFloat, "float32", kTolFloat32}}) {
    HfBertLoadOptions options;
    options.dtype = dtype;
    options.weights_file = weights;
    HfBert bert = load_hf_bert(golden.model_dir.string(), options);
    bert.model->eval();
    EXPECT_EQ(bert.vocab_path, (golden.model_dir / "vocab.txt").string());
    torch::NoGradGuard no_grad;
    Errors hidden_worst;
    Errors pooled_worst;
    for (const auto& c : golden.doc.at("cases")) {
      SCOPED_TRACE(fmt::format("{} {} {}", weights, tag, c.at("name").get<std::string>()));
      BertOutput out = bert.model->forward(int_tensor(c.at("input_ids")), int_tensor(c.at("attention_mask")),
                                           int_tensor(c.at("token_type_ids")));
      ASSERT_EQ(out.last_hidden_state.scalar_type(), dtype);
      ASSERT_TRUE(out.pooler_output.defined());
      const auto& ref = c.at(tag);
      Errors h = compare(out.last_hidden_state, golden_tensor(ref.at("last_hidden_state")));
      Errors p = compare(out.pooler_output, golden_tensor(ref.at("pooler_output")));
      EXPECT_LE(h.max_abs, tol) << "last_hidden_state";
      EXPECT_LE(p.max_abs, tol) << "pooler_output";
      if (dtype == torch::kFloat) {
        // The float32 run also stays within tolerance of the exact (float64) answer.
        EXPECT_LE(
            compare(out.last_hidden_state, golden_tensor(c.at("float64").at("last_hidden_state"))).max_abs,
            tol);
        EXPECT_LE(compare(out.pooler_output, golden_tensor(c.at("float64").at("pooler_output"))).max_abs,
                  tol);
      }
      hidden_worst.max_abs = std::max(hidden_worst.max_abs, h.max_abs);
      hidden_worst.max_rel = std::max(hidden_worst.max_rel, h.max_rel);
      pooled_worst.max_abs = std::max(pooled_worst.max_abs, p.max_abs);
      pooled_worst.max_rel = std::max(pooled_worst.max_rel, p.max_rel);
    }
    std::printf(
        "[golden] %-28s %s: last_hidden_state max abs %.3e rel %.3e | pooler_output max abs %.3e rel %.3e\n",
        weights.c_str(), tag, hidden_worst.max_abs, hidden_worst.max_rel, pooled_worst.max_abs,
        pooled_worst.max_rel);
    RecordProperty(fmt::format("{}_hidden_max_abs", tag), fmt::format("{:.3e}", hidden_worst.max_abs));
    RecordProperty(fmt::format("{}_pooler_max_abs", tag), fmt::format("{:.3e}", pooled_worst.max_abs));
  }
}

INSTANTIATE_TEST_SUITE_P(WeightFiles, BertGoldenTest,
                         ::testing::Values("model.safetensors", "model_prefixed.safetensors",
                                           "model_legacy.safetensors"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param.substr(0, info.param.find('.'));
                           return name;
                         });

/// The golden is sensitive enough to catch a wiring bug here: a model whose
/// attention ignores the mask (all ones) misses the padded cases by far more
/// than the tolerance. Guards against a comparison that cannot fail.
TEST(BertGolden, DetectsAnIgnoredMask) {
  LLMREC_SKIP_WITHOUT_SHARED();
  Golden golden;
  if (!load_golden(golden)) return;
  HfBertLoadOptions options;
  options.dtype = torch::kDouble;
  HfBert bert = load_hf_bert(golden.model_dir.string(), options);
  bert.model->eval();
  torch::NoGradGuard no_grad;
  for (const auto& c : golden.doc.at("cases")) {
    if (c.at("name") != "batch3_padded") continue;
    torch::Tensor ids = int_tensor(c.at("input_ids"));
    BertOutput out = bert.model->forward(ids, torch::ones_like(ids));
    EXPECT_GT(compare(out.last_hidden_state, golden_tensor(c.at("float64").at("last_hidden_state"))).max_abs,
              1e-3);
    return;
  }
  FAIL() << "case batch3_padded not in the golden file";
}

}  // namespace
}  // namespace llmrec
