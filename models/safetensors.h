#pragma once
/// safetensors reader and writer (F32, F16, BF16; F64, I64, I32, I16, I8, U8
/// and BOOL too, e.g. for buffers such as `position_ids`).
///
/// Format: u64 little-endian header length N, N bytes of JSON
/// {"__metadata__": {...}, name: {"dtype", "shape", "data_offsets": [b, e]}},
/// then the raw little-endian data; offsets are relative to the end of the
/// header. The parser is bounds-checked: a truncated, malformed or hostile
/// file gives IoError naming the file and the tensor, never a crash or an
/// out-of-bounds read. Nothing is ever unpickled.
///
///   auto file = read_safetensors("model.safetensors");
///   at::Tensor w = file.tensors.at("embeddings.word_embeddings.weight");
///   write_safetensors("out.safetensors", {{"w", w}}, {{"format", "pt"}});

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

namespace llmrec {

struct SafetensorsFile {
  std::map<std::string, at::Tensor> tensors;    ///< CPU tensors, dtype as stored
  std::map<std::string, std::string> metadata;  ///< "__metadata__" (string values)
};

/// Reads every tensor of `path`. Throws IoError naming `path` (and the
/// tensor, where one is at fault) on any inconsistency. Checks (as the
/// reference implementation): header length within the file and at most
/// 100 MB; the header a JSON object without duplicate keys; every dtype
/// known; shapes non-negative with an overflow-checked byte count equal to
/// the data_offsets span; the offsets tiling the data region exactly (no
/// overlap, no hole, no trailing bytes); BOOL bytes 0 or 1.
SafetensorsFile read_safetensors(const std::string& path);

/// Parses an in-memory file (same checks); `name` is used in messages.
SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& name);

/// Writes tensors (contiguous copies, stored in name order) and metadata.
/// Supported dtypes: float32, float16, bfloat16, float64, int64, int32,
/// int16, int8, uint8, bool. The header is space-padded to a multiple of 8
/// bytes. Written atomically (temporary file `<path>.tmp.<pid>`, then
/// rename); throws IoError naming `path` (and the tensor) on failure.
void write_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace llmrec
