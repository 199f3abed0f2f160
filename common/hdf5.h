#pragma once
/// A small RAII layer over the HDF5 C API (serial), for the dataset,
/// checkpoint and export files.
///
/// Every dataset written is chunked with a Fletcher32 checksum, so a flipped
/// byte is detected on read. Errors are IoError naming the file, the object
/// and HDF5's innermost message. Files are created under a temporary name
/// and renamed into place by commit(), so a crash never leaves a half file
/// under the final name.
///
///   auto f = h5::File::create("data.h5");
///   f.write<int32_t>("items/tokens", tokens.data(), {n_items, 32});
///   f.set_attr("/", "format", "llmrec-dataset");
///   f.commit();
///   auto g = h5::File::open("data.h5");
///   auto rows = g.read_rows<int32_t>("items/tokens", 100, 10);  // hyperslab

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"

namespace llmrec::h5 {

/// Owns one hid_t and closes it with the matching H5*close.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  ~Handle() { reset(); }
  Handle(Handle&& o) noexcept : id_(o.id_), closer_(o.closer_) { o.id_ = H5I_INVALID_HID; }
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = o.id_;
      closer_ = o.closer_;
      o.id_ = H5I_INVALID_HID;
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  hid_t get() const { return id_; }
  void reset();

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer closer_ = nullptr;
};

/// The HDF5 memory type of T (int32, int64, uint8, float, double).
template <class T>
hid_t native_type();
template <>
hid_t native_type<std::int32_t>();
template <>
hid_t native_type<std::int64_t>();
template <>
hid_t native_type<std::uint8_t>();
template <>
hid_t native_type<float>();
template <>
hid_t native_type<double>();

class File {
 public:
  /// Creates `path` (through a temporary file; call commit() when done).
  static File create(const std::string& path);
  /// Opens an existing file read-only; IoError if it is not HDF5.
  static File open(const std::string& path);

  File(File&&) noexcept = default;
  File& operator=(File&&) noexcept = default;
  ~File();

  const std::string& path() const { return path_; }

  /// Writes an n-dimensional dataset (row-major), creating parent groups.
  template <class T>
  void write(const std::string& name, const T* data, const std::vector<std::uint64_t>& dims) {
    write_raw(name, native_type<T>(), data, dims, sizeof(T));
  }
  template <class T>
  void write(const std::string& name, const std::vector<T>& data) {
    write<T>(name, data.data(), {data.size()});
  }
  /// Strings as a byte blob `name/bytes` plus `name/offsets` (n+1 int64):
  /// checksummed like every other dataset.
  void write_strings(const std::string& name, const std::vector<std::string>& strings);

  bool exists(const std::string& name) const;
  std::vector<std::uint64_t> shape(const std::string& name) const;

  /// Reads a whole dataset; checks the element type and the rank.
  template <class T>
  std::vector<T> read(const std::string& name) const {
    auto dims = shape(name);
    std::uint64_t rows = dims.empty() ? 1 : dims[0];
    return read_rows<T>(name, 0, rows);
  }
  /// Reads rows [start, start + count) along the first dimension (a
  /// hyperslab: only those bytes are read).
  template <class T>
  std::vector<T> read_rows(const std::string& name, std::uint64_t start, std::uint64_t count) const {
    std::vector<T> out;
    read_rows_raw(name, native_type<T>(), sizeof(T), start, count, [&](std::size_t n) {
      out.resize(n);
      return static_cast<void*>(out.data());
    });
    return out;
  }
  std::vector<std::string> read_strings(const std::string& name) const;

  void set_attr(const std::string& object, const std::string& key, const std::string& value);
  void set_attr(const std::string& object, const std::string& key, std::int64_t value);
  std::string attr_string(const std::string& object, const std::string& key) const;
  std::int64_t attr_int(const std::string& object, const std::string& key) const;
  bool has_attr(const std::string& object, const std::string& key) const;

  /// Flushes, fsyncs and renames the temporary file to its final name.
  void commit();

 private:
  File() = default;
  void write_raw(const std::string& name, hid_t type, const void* data,
                 const std::vector<std::uint64_t>& dims, std::size_t elem_size);
  template <class Alloc>
  void read_rows_raw(const std::string& name, hid_t type, std::size_t elem_size, std::uint64_t start,
                     std::uint64_t count, Alloc alloc) const {
    std::uint64_t row_elems = 0;
    Handle ds = open_rows(name, type, elem_size, start, count, row_elems);
    void* buf = alloc(static_cast<std::size_t>(count * row_elems));
    read_selected(ds, name, type, start, count, row_elems, buf);
  }
  Handle open_rows(const std::string& name, hid_t type, std::size_t elem_size, std::uint64_t start,
                   std::uint64_t count, std::uint64_t& row_elems) const;
  void read_selected(const Handle& ds, const std::string& name, hid_t type, std::uint64_t start,
                     std::uint64_t count, std::uint64_t row_elems, void* buf) const;
  [[noreturn]] void fail(const std::string& what) const;

  std::string path_;       // final name
  std::string temp_path_;  // where it is written until commit(); empty when opened
  Handle file_;
};

}  // namespace llmrec::h5
