#include "common/hdf5.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

namespace llmrec::h5 {
namespace {

// Chunks of about this many bytes (rows rounded), a good size for both the
// checksum and hyperslab reads of a few rows.
constexpr std::uint64_t kChunkBytes = 1 << 20;

// HDF5 prints its error stack to stderr by default; we turn that off once
// and read the stack into our messages instead.
void silence_hdf5() {
  static bool done = [] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)done;
}

herr_t collect(unsigned n, const H5E_error2_t* err, void* data) {
  auto* out = static_cast<std::string*>(data);
  if (err->desc != nullptr && err->desc[0] != '\0') {
    // Innermost first (H5E_WALK_UPWARD): keep the first, most specific one.
    if (out->empty()) *out = err->desc;
  }
  (void)n;
  return 0;
}

std::string hdf5_message() {
  std::string msg;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, collect, &msg);
  H5Eclear2(H5E_DEFAULT);
  return msg.empty() ? std::string("unknown HDF5 error") : msg;
}

}  // namespace

void Handle::reset() {
  if (id_ != H5I_INVALID_HID && closer_ != nullptr) closer_(id_);
  id_ = H5I_INVALID_HID;
}

template <>
hid_t native_type<std::int32_t>() {
  return H5T_NATIVE_INT32;
}
template <>
hid_t native_type<std::int64_t>() {
  return H5T_NATIVE_INT64;
}
template <>
hid_t native_type<std::uint8_t>() {
  return H5T_NATIVE_UINT8;
}
template <>
hid_t native_type<float>() {
  return H5T_NATIVE_FLOAT;
}
template <>
hid_t native_type<double>() {
  return H5T_NATIVE_DOUBLE;
}

File File::create(const std::string& path) {
  silence_hdf5();
  File f;
  f.path_ = path;
  f.temp_path_ = path + ".tmp-" + std::to_string(::getpid());
  auto parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  // The 1.10 file format: superblock, object headers (attributes, datatypes,
  // layouts) and chunk indexes (fixed arrays, v2 B-trees) carry checksums,
  // so damaged metadata is detected like damaged data (Fletcher32), not
  // read as other values (the 1.8 format's v1 B-trees have no checksum: a
  // damaged chunk key read as "never written", i.e. zeros). h5py reads it.
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V110, H5F_LIBVER_LATEST);
  hid_t id = H5Fcreate(f.temp_path_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get());
  if (id < 0) throw IoError(fmt::format("cannot create HDF5 file {}: {}", f.temp_path_, hdf5_message()));
  f.file_ = Handle(id, H5Fclose);
  return f;
}

File File::open(const std::string& path) {
  silence_hdf5();
  File f;
  f.path_ = path;
  if (!std::filesystem::exists(path)) throw IoError(fmt::format("{}: no such file", path));
  if (H5Fis_hdf5(path.c_str()) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    throw IoError(fmt::format("{}: not an HDF5 file (truncated or another format)", path));
  }
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) throw IoError(fmt::format("{}: cannot open: {}", path, hdf5_message()));
  f.file_ = Handle(id, H5Fclose);
  return f;
}

File::~File() {
  if (!temp_path_.empty() && file_.get() != H5I_INVALID_HID) {
    // Never committed (an error happened): drop the partial file.
    file_.reset();
    std::error_code ec;
    std::filesystem::remove(temp_path_, ec);
  }
}

void File::fail(const std::string& what) const {
  throw IoError(fmt::format("{}: {}: {}", path_, what, hdf5_message()));
}

void File::write_raw(const std::string& name, hid_t type, const void* data,
                     const std::vector<std::uint64_t>& dims, std::size_t elem_size) {
  std::vector<hsize_t> hdims(dims.begin(), dims.end());
  if (hdims.empty()) hdims.push_back(1);
  Handle space(H5Screate_simple(static_cast<int>(hdims.size()), hdims.data(), nullptr), H5Sclose);
  if (space.get() < 0) fail("dataspace for '" + name + "'");

  // Chunked layout (needed for the checksum filter): whole rows, ~1 MiB.
  std::uint64_t row_bytes = elem_size;
  for (std::size_t i = 1; i < hdims.size(); ++i) row_bytes *= std::max<hsize_t>(hdims[i], 1);
  std::vector<hsize_t> chunk(hdims.begin(), hdims.end());
  for (auto& c : chunk) c = std::max<hsize_t>(c, 1);
  chunk[0] = std::max<hsize_t>(1, std::min<hsize_t>(std::max<hsize_t>(hdims[0], 1),
                                                    kChunkBytes / std::max<std::uint64_t>(row_bytes, 1)));
  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  if (H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()) < 0 ||
      H5Pset_fletcher32(dcpl.get()) < 0) {
    fail("dataset properties for '" + name + "'");
  }
  Handle lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  Handle ds(H5Dcreate2(file_.get(), name.c_str(), type, space.get(), lcpl.get(), dcpl.get(), H5P_DEFAULT),
            H5Dclose);
  if (ds.get() < 0) fail("creating dataset '" + name + "'");
  bool empty = false;
  for (auto d : hdims) empty = empty || d == 0;
  if (!empty && H5Dwrite(ds.get(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) {
    fail("writing dataset '" + name + "'");
  }
}

void File::write_strings(const std::string& name, const std::vector<std::string>& strings) {
  std::vector<std::uint8_t> bytes;
  std::vector<std::int64_t> offsets{0};
  offsets.reserve(strings.size() + 1);
  for (const auto& s : strings) {
    bytes.insert(bytes.end(), s.begin(), s.end());
    offsets.push_back(static_cast<std::int64_t>(bytes.size()));
  }
  write<std::uint8_t>(name + "/bytes", bytes);
  write<std::int64_t>(name + "/offsets", offsets);
}

bool File::exists(const std::string& name) const {
  // Check each component: H5Lexists fails on a missing intermediate group.
  std::size_t pos = 0;
  while (true) {
    pos = name.find('/', pos + 1);
    std::string part = name.substr(0, pos);
    if (!part.empty() && part != "/" && H5Lexists(file_.get(), part.c_str(), H5P_DEFAULT) <= 0) {
      H5Eclear2(H5E_DEFAULT);
      return false;
    }
    if (pos == std::string::npos) return true;
  }
}

std::vector<std::uint64_t> File::shape(const std::string& name) const {
  if (!exists(name)) throw IoError(fmt::format("{}: missing dataset '{}'", path_, name));
  Handle ds(H5Dopen2(file_.get(), name.c_str(), H5P_DEFAULT), H5Dclose);
  if (ds.get() < 0) fail("opening dataset '" + name + "'");
  Handle space(H5Dget_space(ds.get()), H5Sclose);
  int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0) fail("dataspace of '" + name + "'");
  std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  return {dims.begin(), dims.end()};
}

Handle File::open_rows(const std::string& name, hid_t type, std::size_t elem_size, std::uint64_t start,
                       std::uint64_t count, std::uint64_t& row_elems) const {
  auto dims = shape(name);
  Handle ds(H5Dopen2(file_.get(), name.c_str(), H5P_DEFAULT), H5Dclose);
  if (ds.get() < 0) fail("opening dataset '" + name + "'");
  Handle stored(H5Dget_type(ds.get()), H5Tclose);
  if (H5Tget_class(stored.get()) != H5Tget_class(type) || H5Tget_size(stored.get()) != elem_size) {
    throw IoError(fmt::format("{}: dataset '{}' has another element type than expected ({} bytes)", path_,
                              name, elem_size));
  }
  const std::uint64_t rows = dims.empty() ? 1 : dims[0];
  if (start > rows || count > rows - start) {
    throw IoError(fmt::format("{}: rows [{}, {}) of dataset '{}' are out of range (it has {})", path_, start,
                              start + count, name, rows));
  }
  row_elems = 1;
  for (std::size_t i = 1; i < dims.size(); ++i) row_elems *= dims[i];
  // Damaged chunk indexes read as "not written" (the fill value, silently):
  // every element must be stored, under a checksum.
  if (rows * row_elems > 0) {
    // (H5Dget_space_status says "partly allocated" for complete filtered
    // datasets; the stored size, summed over the chunk index, is reliable.)
    if (H5Dget_storage_size(ds.get()) < rows * row_elems * elem_size) {
      H5Eclear2(H5E_DEFAULT);
      throw IoError(fmt::format("{}: dataset '{}' is damaged: not all of its data is stored", path_, name));
    }
    Handle dcpl(H5Dget_create_plist(ds.get()), H5Pclose);
    unsigned flags = 0;
    std::size_t nelmts = 0;
    if (H5Pget_filter_by_id2(dcpl.get(), H5Z_FILTER_FLETCHER32, &flags, &nelmts, nullptr, 0, nullptr,
                             nullptr) < 0) {
      H5Eclear2(H5E_DEFAULT);
      throw IoError(
          fmt::format("{}: dataset '{}' has no checksum (Fletcher32): not written by llmrec", path_, name));
    }
  }
  return ds;
}

void File::read_selected(const Handle& ds, const std::string& name, hid_t type, std::uint64_t start,
                         std::uint64_t count, std::uint64_t row_elems, void* buf) const {
  if (count == 0 || row_elems == 0) return;
  Handle fspace(H5Dget_space(ds.get()), H5Sclose);
  int rank = H5Sget_simple_extent_ndims(fspace.get());
  std::vector<hsize_t> dims(static_cast<std::size_t>(std::max(rank, 1)), 1);
  if (rank > 0) H5Sget_simple_extent_dims(fspace.get(), dims.data(), nullptr);
  std::vector<hsize_t> offset(dims.size(), 0), extent(dims);
  offset[0] = start;
  extent[0] = count;
  if (rank > 0 &&
      H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, offset.data(), nullptr, extent.data(), nullptr) < 0) {
    fail("selecting rows of '" + name + "'");
  }
  Handle mspace(H5Screate_simple(static_cast<int>(extent.size()), extent.data(), nullptr), H5Sclose);
  if (H5Dread(ds.get(), type, mspace.get(), fspace.get(), H5P_DEFAULT, buf) < 0) {
    fail(fmt::format("reading dataset '{}' (rows {}..{})", name, start, start + count));
  }
}

std::vector<std::string> File::read_strings(const std::string& name) const {
  auto bytes = read<std::uint8_t>(name + "/bytes");
  auto offsets = read<std::int64_t>(name + "/offsets");
  std::vector<std::string> out;
  if (offsets.empty() || offsets[0] != 0)
    throw IoError(fmt::format("{}: '{}/offsets' must start at 0", path_, name));
  out.reserve(offsets.size() - 1);
  for (std::size_t i = 1; i < offsets.size(); ++i) {
    if (offsets[i] < offsets[i - 1] || static_cast<std::uint64_t>(offsets[i]) > bytes.size()) {
      throw IoError(
          fmt::format("{}: '{}/offsets' entry {} is out of order or past the data", path_, name, i));
    }
    out.emplace_back(reinterpret_cast<const char*>(bytes.data()) + offsets[i - 1],
                     static_cast<std::size_t>(offsets[i] - offsets[i - 1]));
  }
  return out;
}

void File::set_attr(const std::string& object, const std::string& key, const std::string& value) {
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), std::max<std::size_t>(value.size(), 1));
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  if (H5Aexists_by_name(file_.get(), object.c_str(), key.c_str(), H5P_DEFAULT) > 0) {
    H5Adelete_by_name(file_.get(), object.c_str(), key.c_str(), H5P_DEFAULT);
  }
  Handle attr(H5Acreate_by_name(file_.get(), object.c_str(), key.c_str(), type.get(), space.get(),
                                H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
              H5Aclose);
  std::string padded = value.empty() ? std::string(1, '\0') : value;
  if (attr.get() < 0 || H5Awrite(attr.get(), type.get(), padded.data()) < 0) {
    fail("writing attribute '" + key + "' of '" + object + "'");
  }
}

void File::set_attr(const std::string& object, const std::string& key, std::int64_t value) {
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  if (H5Aexists_by_name(file_.get(), object.c_str(), key.c_str(), H5P_DEFAULT) > 0) {
    H5Adelete_by_name(file_.get(), object.c_str(), key.c_str(), H5P_DEFAULT);
  }
  Handle attr(H5Acreate_by_name(file_.get(), object.c_str(), key.c_str(), H5T_STD_I64LE, space.get(),
                                H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
              H5Aclose);
  if (attr.get() < 0 || H5Awrite(attr.get(), H5T_NATIVE_INT64, &value) < 0) {
    fail("writing attribute '" + key + "' of '" + object + "'");
  }
}

bool File::has_attr(const std::string& object, const std::string& key) const {
  htri_t r = H5Aexists_by_name(file_.get(), object.c_str(), key.c_str(), H5P_DEFAULT);
  H5Eclear2(H5E_DEFAULT);
  return r > 0;
}

std::string File::attr_string(const std::string& object, const std::string& key) const {
  if (!has_attr(object, key))
    throw IoError(fmt::format("{}: missing attribute '{}' on '{}'", path_, key, object));
  Handle attr(H5Aopen_by_name(file_.get(), object.c_str(), key.c_str(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  Handle type(H5Aget_type(attr.get()), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_STRING) {
    throw IoError(fmt::format("{}: attribute '{}' on '{}' is not a string", path_, key, object));
  }
  std::string out;
  if (H5Tis_variable_str(type.get()) > 0) {
    char* s = nullptr;
    Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mem.get(), H5T_VARIABLE);
    if (H5Aread(attr.get(), mem.get(), &s) < 0) fail("reading attribute '" + key + "'");
    out = s != nullptr ? s : "";
    H5free_memory(s);
    return out;
  }
  std::size_t size = H5Tget_size(type.get());
  out.assign(size, '\0');
  if (H5Aread(attr.get(), type.get(), out.data()) < 0) fail("reading attribute '" + key + "'");
  out.resize(std::strlen(out.c_str()));
  return out;
}

std::int64_t File::attr_int(const std::string& object, const std::string& key) const {
  if (!has_attr(object, key))
    throw IoError(fmt::format("{}: missing attribute '{}' on '{}'", path_, key, object));
  Handle attr(H5Aopen_by_name(file_.get(), object.c_str(), key.c_str(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  Handle type(H5Aget_type(attr.get()), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_INTEGER) {
    throw IoError(fmt::format("{}: attribute '{}' on '{}' is not an integer", path_, key, object));
  }
  std::int64_t v = 0;
  if (H5Aread(attr.get(), H5T_NATIVE_INT64, &v) < 0) fail("reading attribute '" + key + "'");
  return v;
}

void File::commit() {
  if (temp_path_.empty()) throw IoError(fmt::format("{}: commit() on a file opened for reading", path_));
  if (H5Fflush(file_.get(), H5F_SCOPE_GLOBAL) < 0) fail("flushing");
  file_.reset();
  int fd = ::open(temp_path_.c_str(), O_RDONLY);
  bool synced = fd >= 0 && ::fsync(fd) == 0;
  if (fd >= 0) ::close(fd);
  if (!synced) throw IoError(fmt::format("{}: fsync failed: {}", temp_path_, std::strerror(errno)));
  std::error_code ec;
  std::filesystem::rename(temp_path_, path_, ec);
  if (ec) throw IoError(fmt::format("cannot rename {} to {}: {}", temp_path_, path_, ec.message()));
  temp_path_.clear();
  // Make the rename itself durable.
  auto dir = std::filesystem::path(path_).parent_path();
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace llmrec::h5
