// libFuzzer target: the safetensors parser (models/safetensors.cpp).
// The input is a whole file: the u64 header length, the JSON header, the
// data. parse_safetensors() shares its header checks with read_safetensors().
#include <ATen/ATen.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "fuzz/fuzz_util.h"
#include "models/safetensors.h"

using namespace llmrec;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  fuzz::expect_clean([&] {
    SafetensorsFile file = parse_safetensors(bytes, "fuzz.safetensors");
    // What was accepted is consistent: the tensors tile the data region, so
    // together they hold no more bytes than the input, and every BOOL is 0/1.
    std::uint64_t total = 0;
    for (const auto& [name, t] : file.tensors) {
      if (name.empty() || name == "__metadata__") fuzz::fuzz_fail("accepted a tensor named '" + name + "'");
      if (!t.is_contiguous()) fuzz::fuzz_fail("tensor '" + name + "' is not contiguous");
      const auto nbytes =
          static_cast<std::uint64_t>(t.numel()) * static_cast<std::uint64_t>(t.element_size());
      total += nbytes;
      if (t.scalar_type() == at::kBool && nbytes > 0) {
        const auto* p = static_cast<const unsigned char*>(t.data_ptr());
        for (std::uint64_t i = 0; i < nbytes; ++i) {
          if (p[i] > 1) fuzz::fuzz_fail("tensor '" + name + "': accepted a BOOL byte other than 0 or 1");
        }
      }
    }
    if (total + 8 > size) fuzz::fuzz_fail("the tensors hold more bytes than the file");
  });
  return 0;
}
