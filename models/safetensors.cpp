// safetensors reader and writer. The header is validated completely before
// any tensor is allocated or any data byte is read, with the rules of the
// reference (Rust) implementation: known dtypes, non-negative shapes whose
// byte count cannot overflow and equals the data_offsets span, and offsets
// that tile the data region exactly (no overlap, no hole, nothing after the
// last tensor).
#include "models/safetensors.h"

#include <ATen/ATen.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>
#include <utility>
#include <vector>

#include "common/error.h"

namespace llmrec {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors data is little-endian; a big-endian host needs a byte swap here");

/// Largest header accepted (the reference implementation's cap): a hostile
/// length cannot make us allocate gigabytes before anything is checked.
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;
/// Containers nest at most root object (0) > tensor entry (1) > shape (2).
constexpr int kMaxJsonDepth = 2;
constexpr const char* kMetadataKey = "__metadata__";

struct DtypeInfo {
  const char* name;
  at::ScalarType type;
  std::uint64_t size;
};

const DtypeInfo kDtypes[] = {
    {"F64", at::kDouble, 8}, {"F32", at::kFloat, 4}, {"F16", at::kHalf, 2},  {"BF16", at::kBFloat16, 2},
    {"I64", at::kLong, 8},   {"I32", at::kInt, 4},   {"I16", at::kShort, 2}, {"I8", at::kChar, 1},
    {"U8", at::kByte, 1},    {"BOOL", at::kBool, 1},
};

const DtypeInfo* dtype_by_name(const std::string& name) {
  for (const auto& d : kDtypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

const DtypeInfo* dtype_by_type(at::ScalarType type) {
  for (const auto& d : kDtypes) {
    if (type == d.type) return &d;
  }
  return nullptr;
}

std::string known_dtypes() {
  std::string out;
  for (const auto& d : kDtypes) out += (out.empty() ? "" : ", ") + std::string(d.name);
  return out;
}

[[noreturn]] void fail(const std::string& file, const std::string& message) {
  throw IoError(fmt::format("{}: {}", file, message));
}

/// One validated header entry.
struct Entry {
  std::string name;
  const DtypeInfo* dtype;
  std::vector<std::int64_t> shape;
  std::uint64_t begin;  ///< relative to the start of the data region
  std::uint64_t end;
};

struct Header {
  std::vector<Entry> entries;  ///< sorted by data offset
  std::map<std::string, std::string> metadata;
};

std::uint64_t read_u64_le(const char* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

/// Checks the 8-byte length prefix against the file size and the cap.
void check_header_length(std::uint64_t n, std::uint64_t file_size, const std::string& file) {
  if (n > kMaxHeaderBytes) {
    fail(file, fmt::format("header length {} exceeds the {}-byte limit (not a safetensors file, or corrupt)",
                           n, kMaxHeaderBytes));
  }
  if (n > file_size - 8) {
    fail(file,
         fmt::format("header length {} runs past the end of the file ({} bytes; truncated?)", n, file_size));
  }
  if (n < 2) fail(file, fmt::format("header length {} is too short for a JSON object", n));
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

Entry parse_entry(const std::string& name, const nlohmann::json& value, const std::string& file) {
  const std::string where = fmt::format("tensor '{}'", name);
  if (!value.is_object()) fail(file, fmt::format("{}: header entry is not a JSON object", where));
  for (const auto& item : value.items()) {
    if (item.key() != "dtype" && item.key() != "shape" && item.key() != "data_offsets") {
      fail(file,
           fmt::format("{}: unknown field '{}' (expected dtype, shape, data_offsets)", where, item.key()));
    }
  }
  Entry entry;
  entry.name = name;

  auto dtype = value.find("dtype");
  if (dtype == value.end() || !dtype->is_string())
    fail(file, fmt::format("{}: missing or non-string 'dtype'", where));
  entry.dtype = dtype_by_name(dtype->get<std::string>());
  if (entry.dtype == nullptr) {
    fail(file, fmt::format("{}: unknown or unsupported dtype '{}' (supported: {})", where,
                           dtype->get<std::string>(), known_dtypes()));
  }

  auto shape = value.find("shape");
  if (shape == value.end() || !shape->is_array())
    fail(file, fmt::format("{}: missing or non-array 'shape'", where));
  std::uint64_t numel = 1;
  for (const auto& d : *shape) {
    if (!d.is_number_integer())
      fail(file, fmt::format("{}: shape {} has a non-integer dimension", where, shape->dump()));
    if (!d.is_number_unsigned())
      fail(file, fmt::format("{}: shape {} has a negative dimension", where, shape->dump()));
    std::uint64_t dim = d.get<std::uint64_t>();
    if (dim > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) ||
        __builtin_mul_overflow(numel, dim, &numel) ||
        numel > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      fail(file, fmt::format("{}: shape {} overflows the element count", where, shape->dump()));
    }
    entry.shape.push_back(static_cast<std::int64_t>(dim));
  }
  std::uint64_t nbytes = 0;
  if (__builtin_mul_overflow(numel, entry.dtype->size, &nbytes)) {
    fail(file,
         fmt::format("{}: shape {} of {} overflows the byte count", where, shape->dump(), entry.dtype->name));
  }

  auto offsets = value.find("data_offsets");
  if (offsets == value.end() || !offsets->is_array() || offsets->size() != 2) {
    fail(file, fmt::format("{}: 'data_offsets' must be an array [begin, end]", where));
  }
  for (const auto& o : *offsets) {
    if (!o.is_number_unsigned()) {
      fail(file, fmt::format("{}: data_offsets {} must be non-negative integers", where, offsets->dump()));
    }
  }
  entry.begin = (*offsets)[0].get<std::uint64_t>();
  entry.end = (*offsets)[1].get<std::uint64_t>();
  if (entry.end < entry.begin)
    fail(file, fmt::format("{}: data_offsets {} end before they begin", where, offsets->dump()));
  if (entry.end - entry.begin != nbytes) {
    fail(file,
         fmt::format("{}: data_offsets {} span {} bytes but shape {} of {} needs {}", where, offsets->dump(),
                     entry.end - entry.begin, shape_text(entry.shape), entry.dtype->name, nbytes));
  }
  return entry;
}

/// Parses and validates the JSON header; `data_size` is the number of bytes
/// after the header, which the tensors must tile exactly.
Header parse_header(const char* text, std::uint64_t n, std::uint64_t data_size, const std::string& file) {
  // Duplicate keys (which nlohmann would silently collapse) and nesting
  // depth are checked while parsing; the callback throws to stop at once.
  std::vector<std::set<std::string>> open_objects;
  auto on_event = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using Event = nlohmann::json::parse_event_t;
    if (event == Event::object_start || event == Event::array_start) {
      if (depth > kMaxJsonDepth) fail(file, "header JSON is nested deeper than a safetensors header can be");
      if (event == Event::object_start) open_objects.emplace_back();
    } else if (event == Event::object_end) {
      open_objects.pop_back();
    } else if (event == Event::key) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!open_objects.back().insert(key).second) {
        fail(file, depth == 1 ? fmt::format("duplicate tensor name '{}' in the header", key)
                              : fmt::format("duplicate field '{}' in the header", key));
      }
    }
    return true;
  };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text, text + n, on_event);
  } catch (const nlohmann::json::exception& e) {
    fail(file, fmt::format("header is not valid JSON: {}", e.what()));
  }
  if (!header.is_object()) fail(file, "header is not a JSON object");

  Header out;
  for (const auto& item : header.items()) {
    if (item.key() == kMetadataKey) {
      if (!item.value().is_object()) fail(file, "'__metadata__' is not a JSON object");
      for (const auto& m : item.value().items()) {
        if (!m.value().is_string())
          fail(file, fmt::format("'__metadata__' value of '{}' is not a string", m.key()));
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (item.key().empty()) fail(file, "a tensor has an empty name");
    out.entries.push_back(parse_entry(item.key(), item.value(), file));
  }

  for (const auto& e : out.entries) {
    if (e.end > data_size) {
      fail(file,
           fmt::format("tensor '{}': data_offsets [{}, {}] run past the data region ({} bytes; truncated?)",
                       e.name, e.begin, e.end, data_size));
    }
  }
  std::sort(out.entries.begin(), out.entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
  });
  std::uint64_t expected = 0;
  const Entry* previous = nullptr;
  for (const auto& e : out.entries) {
    if (e.begin < expected) {
      fail(file, fmt::format("tensor '{}': data_offsets [{}, {}] overlap tensor '{}' (ends at {})", e.name,
                             e.begin, e.end, previous->name, expected));
    }
    if (e.begin > expected) {
      fail(file, fmt::format("tensor '{}': data_offsets [{}, {}] leave a hole of {} bytes before it", e.name,
                             e.begin, e.end, e.begin - expected));
    }
    expected = e.end;
    previous = &e;
  }
  if (expected != data_size) {
    fail(file,
         fmt::format("{} bytes after the last tensor are not described by the header", data_size - expected));
  }
  return out;
}

at::Tensor empty_for(const Entry& e) {
  return at::empty(e.shape, at::TensorOptions().dtype(e.dtype->type));
}

/// A BOOL byte other than 0 or 1 would be an invalid C++ bool.
void check_bool_bytes(const at::Tensor& t, const Entry& e, const std::string& file) {
  if (e.dtype->type != at::kBool) return;
  const auto* p = static_cast<const unsigned char*>(t.data_ptr());
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    if (p[i] > 1)
      fail(file, fmt::format("tensor '{}': BOOL byte {} is {}, not 0 or 1", e.name, i, int{p[i]}));
  }
}

}  // namespace

SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& name) {
  if (bytes.size() < 8) {
    fail(name, fmt::format("{} bytes: too short for the 8-byte header length (not a safetensors file)",
                           bytes.size()));
  }
  const std::uint64_t n = read_u64_le(bytes.data());
  check_header_length(n, bytes.size(), name);
  const std::uint64_t data_start = 8 + n;
  Header header = parse_header(bytes.data() + 8, n, bytes.size() - data_start, name);

  SafetensorsFile out;
  out.metadata = std::move(header.metadata);
  for (const auto& e : header.entries) {
    at::Tensor t = empty_for(e);
    if (e.end > e.begin) std::memcpy(t.data_ptr(), bytes.data() + data_start + e.begin, e.end - e.begin);
    check_bool_bytes(t, e, name);
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

SafetensorsFile read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open for reading");
  in.seekg(0, std::ios::end);
  const std::streamoff size_off = in.tellg();
  if (size_off < 0) fail(path, "cannot determine the file size");
  const auto file_size = static_cast<std::uint64_t>(size_off);
  in.seekg(0, std::ios::beg);
  if (file_size < 8) {
    fail(path,
         fmt::format("{} bytes: too short for the 8-byte header length (not a safetensors file)", file_size));
  }
  char prefix[8];
  if (!in.read(prefix, 8)) fail(path, "cannot read the header length");
  const std::uint64_t n = read_u64_le(prefix);
  check_header_length(n, file_size, path);
  std::string text(n, '\0');
  if (!in.read(text.data(), static_cast<std::streamsize>(n)))
    fail(path, "cannot read the header (file changed?)");
  const std::uint64_t data_start = 8 + n;
  Header header = parse_header(text.data(), n, file_size - data_start, path);

  // Tensors are read straight into their storage, in file order.
  SafetensorsFile out;
  out.metadata = std::move(header.metadata);
  for (const auto& e : header.entries) {
    at::Tensor t = empty_for(e);
    if (e.end > e.begin) {
      in.seekg(static_cast<std::streamoff>(data_start + e.begin), std::ios::beg);
      if (!in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(e.end - e.begin))) {
        fail(path, fmt::format("tensor '{}': cannot read its {} bytes (file changed while reading?)", e.name,
                               e.end - e.begin));
      }
    }
    check_bool_bytes(t, e, path);
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

void write_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    auto& m = header[kMetadataKey];
    m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
  }
  std::vector<at::Tensor> data;
  std::uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name.empty() || name == kMetadataKey)
      fail(path, fmt::format("cannot write a tensor named '{}'", name));
    if (!tensor.defined()) fail(path, fmt::format("tensor '{}' is undefined", name));
    const DtypeInfo* dtype = dtype_by_type(tensor.scalar_type());
    if (dtype == nullptr) {
      fail(path, fmt::format("tensor '{}': dtype {} cannot be stored (supported: {})", name,
                             c10::toString(tensor.scalar_type()), known_dtypes()));
    }
    at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
    const std::uint64_t nbytes = static_cast<std::uint64_t>(t.numel()) * dtype->size;
    auto& entry = header[name];
    entry["dtype"] = dtype->name;
    entry["shape"] = t.sizes().vec();
    entry["data_offsets"] = {offset, offset + nbytes};
    offset += nbytes;
    data.push_back(std::move(t));
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    fail(path,
         fmt::format("cannot encode the header (tensor names and metadata must be UTF-8): {}", e.what()));
  }
  text.append((8 - text.size() % 8) % 8, ' ');

  char prefix[8];
  std::uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<char>((n >> (8 * i)) & 0xff);

  const std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail(path, fmt::format("cannot create the temporary file {}", tmp));
    out.write(prefix, 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& t : data) {
      out.write(static_cast<const char*>(t.data_ptr()),
                static_cast<std::streamsize>(t.numel() * t.element_size()));
    }
    out.flush();
    if (!out) {
      out.close();
      std::error_code ignored;
      std::filesystem::remove(tmp, ignored);
      fail(path, fmt::format("write to {} failed (disk full?)", tmp));
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    fail(path, fmt::format("cannot rename {} into place: {}", tmp, ec.message()));
  }
}

}  // namespace llmrec
