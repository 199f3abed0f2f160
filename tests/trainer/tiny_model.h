#pragma once
// A recommender small enough for exact multi-step tests.
#include "models/model_config.h"

namespace llmrec::testing {

inline ModelConfig tiny_model_config(int vocab_size) {
  ModelConfig m;
  m.dim = 16;
  m.text_len = 10;
  m.bert.layers = 1;
  m.bert.hidden = 32;
  m.bert.heads = 2;
  m.bert.intermediate = 64;
  m.bert.max_positions = 16;
  m.bert.vocab_size = vocab_size;
  m.lora.r = 4;
  m.user.history = 4;
  m.user.heads = 2;
  m.item_id_embedding = true;
  m.id_dropout = 0.0;
  return m;
}

}  // namespace llmrec::testing
