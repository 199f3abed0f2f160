#pragma once
/// safetensors reader and writer (F32, F16, BF16; I64 and other integer
/// dtypes are read too, for buffers such as `position_ids`).
///
/// Format: u64 little-endian header length N, N bytes of JSON
/// {"__metadata__": {...}, name: {"dtype", "shape", "data_offsets": [b, e]}},
/// then the raw little-endian data; offsets are relative to the end of the
/// header. The parser is bounds-checked: a truncated, malformed or hostile
/// file gives IoError naming the file and the tensor, never a crash or an
/// out-of-bounds read. Nothing is ever unpickled.
///
///   auto file = safetensors_read("model.safetensors");
///   at::Tensor w = file.tensors.at("embeddings.word_embeddings.weight");
///   safetensors_write("out.safetensors", {{"w", w}}, {{"format", "pt"}});

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

namespace llmrec {

struct SafetensorsFile {
  std::map<std::string, at::Tensor> tensors;        ///< CPU tensors, dtype as stored
  std::map<std::string, std::string> metadata;      ///< "__metadata__" (string values)
};

/// Reads every tensor of `path`. Throws IoError naming `path` (and the
/// tensor, where one is at fault) on any inconsistency.
SafetensorsFile safetensors_read(const std::string& path);

/// Parses an in-memory file (same checks); `name` is used in messages.
SafetensorsFile safetensors_parse(const std::string& bytes, const std::string& name);

/// Writes tensors (contiguous copies, stored in name order) and metadata.
/// Supported dtypes: float32, float16, bfloat16, float64, int64, int32,
/// int8, uint8, bool. Written atomically (temporary file, then rename).
void safetensors_write(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace llmrec
