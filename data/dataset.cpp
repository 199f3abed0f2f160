#include "data/dataset.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/hdf5.h"

namespace llmrec {

void write_dataset(const std::string& path, const DatasetArrays& d, const std::string& config_yaml,
                   const std::string& report_json, const std::string& split) {
  const auto n_items = static_cast<std::uint64_t>(d.items.ids.size());
  auto f = h5::File::create(path);
  f.set_attr("/", "format", kDatasetFormat);
  f.set_attr("/", "version", kDatasetVersion);
  f.set_attr("/", "config", config_yaml);
  f.set_attr("/", "report", report_json);
  f.set_attr("/", "split", split);
  f.set_attr("/", "text_len", static_cast<std::int64_t>(d.text_len));
  f.set_attr("/", "event_types", nlohmann::json(d.event_types).dump());
  f.write_strings("vocab", d.vocab);

  f.write_strings("items/id", d.items.ids);
  f.write_strings("items/category", d.items.categories);
  f.write_strings("items/text", d.items.texts);
  f.write<std::int32_t>("items/tokens", d.items.tokens.data(),
                        {n_items, static_cast<std::uint64_t>(d.text_len)});
  f.write("items/length", d.items.length);
  f.write("items/train_count", d.items.train_count);
  f.write("items/cold", d.items.cold);

  f.write_strings("users/id", d.users.ids);
  f.write("users/offsets", d.users.offsets);
  f.write("users/train_end", d.users.train_end);
  f.write("users/valid", d.users.valid);
  f.write("users/test", d.users.test);
  if (d.has_profiles) {
    f.write_strings("users/profile_text", d.users.profile_texts);
    f.write<std::int32_t>(
        "users/profile_tokens", d.users.profile_tokens.data(),
        {static_cast<std::uint64_t>(d.users.ids.size()), static_cast<std::uint64_t>(d.text_len)});
    f.write("users/profile_length", d.users.profile_length);
  }

  f.write("events/item", d.events.item);
  f.write("events/time", d.events.time);
  f.write("events/type", d.events.type);
  f.write("events/weight", d.events.weight);
  if (d.has_rating) f.write("events/rating", d.events.rating);
  f.set_attr("/", "context_columns", nlohmann::json(d.context_names).dump());
  for (std::size_t k = 0; k < d.context_names.size(); ++k) {
    const std::string base = "events/context/" + d.context_names[k];
    f.write(base + "/code", d.events.context[k]);
    f.write_strings(base + "/values", d.context_values[k]);
  }
  f.commit();
}

std::vector<std::int32_t> context_codes_by_event(const EventTable& events) {
  const std::size_t C = events.context.size();
  std::vector<std::int32_t> out(events.item.size() * C);
  for (std::size_t c = 0; c < C; ++c) {
    for (std::size_t j = 0; j < events.item.size(); ++j) out[j * C + c] = events.context[c][j];
  }
  return out;
}

struct DatasetFile::Impl {
  h5::File file;
};

DatasetFile::DatasetFile(const std::string& path) : impl_(new Impl{h5::File::open(path)}) {
  const h5::File& f = impl_->file;
  if (!f.has_attr("/", "format") || f.attr_string("/", "format") != kDatasetFormat) {
    throw IoError(
        fmt::format("{}: not an llmrec dataset (attribute 'format' is not '{}'); make one with "
                    "`llmrec prepare`",
                    path, kDatasetFormat));
  }
  const std::int64_t version = f.attr_int("/", "version");
  if (version != kDatasetVersion) {
    throw IoError(
        fmt::format("{}: dataset format version {} is not supported (this llmrec reads version {}); "
                    "prepare it again",
                    path, version, kDatasetVersion));
  }
  text_len_ = static_cast<int>(f.attr_int("/", "text_len"));
  auto offsets_shape = f.shape("users/offsets");
  auto tokens_shape = f.shape("items/tokens");
  num_users_ = static_cast<std::int64_t>(offsets_shape.at(0)) - 1;
  num_items_ = static_cast<std::int64_t>(tokens_shape.at(0));
  num_events_ = static_cast<std::int64_t>(f.shape("events/item").at(0));
  auto check = [&](const std::string& name, std::int64_t want) {
    auto s = f.shape(name);
    if (s.empty() || static_cast<std::int64_t>(s[0]) != want) {
      throw IoError(
          fmt::format("{}: dataset '{}' has {} rows, expected {}", path, name, s.empty() ? 0 : s[0], want));
    }
  };
  if (num_users_ < 0 || tokens_shape.size() != 2 || static_cast<int>(tokens_shape[1]) != text_len_) {
    throw IoError(fmt::format("{}: inconsistent dataset shapes (users/offsets, items/tokens vs text_len {})",
                              path, text_len_));
  }
  for (const char* n : {"items/length", "items/train_count", "items/cold"}) check(n, num_items_);
  for (const char* n : {"users/train_end", "users/valid", "users/test"}) check(n, num_users_);
  for (const char* n : {"events/time", "events/type", "events/weight"}) check(n, num_events_);
  check("items/id/offsets", num_items_ + 1);
  check("users/id/offsets", num_users_ + 1);
  has_profiles_ = f.exists("users/profile_tokens");
  if (has_profiles_) {
    const auto shape = f.shape("users/profile_tokens");
    if (shape.size() != 2 || static_cast<std::int64_t>(shape[0]) != num_users_ ||
        static_cast<int>(shape[1]) != text_len_) {
      throw IoError(fmt::format("{}: users/profile_tokens must be [{} users, text_len {}]", path, num_users_,
                                text_len_));
    }
    check("users/profile_length", num_users_);
  }
}

DatasetFile::~DatasetFile() = default;
DatasetFile::DatasetFile(DatasetFile&&) noexcept = default;
DatasetFile& DatasetFile::operator=(DatasetFile&&) noexcept = default;

const std::string& DatasetFile::path() const {
  return impl_->file.path();
}
std::string DatasetFile::split() const {
  return impl_->file.attr_string("/", "split");
}
std::string DatasetFile::config_yaml() const {
  return impl_->file.attr_string("/", "config");
}
std::string DatasetFile::report_json() const {
  return impl_->file.attr_string("/", "report");
}
std::vector<std::string> DatasetFile::vocab() const {
  return impl_->file.read_strings("vocab");
}

std::vector<std::string> DatasetFile::event_types() const {
  auto j = nlohmann::json::parse(impl_->file.attr_string("/", "event_types"), nullptr, false);
  if (j.is_discarded() || !j.is_array())
    throw IoError(fmt::format("{}: bad 'event_types' attribute", path()));
  return j.get<std::vector<std::string>>();
}

ItemTable DatasetFile::read_items() const {
  const h5::File& f = impl_->file;
  ItemTable t;
  t.ids = f.read_strings("items/id");
  t.categories = f.read_strings("items/category");
  t.texts = f.read_strings("items/text");
  t.tokens = f.read<std::int32_t>("items/tokens");
  t.length = f.read<std::int32_t>("items/length");
  t.train_count = f.read<std::int64_t>("items/train_count");
  t.cold = f.read<std::uint8_t>("items/cold");
  for (auto n : t.length) {
    if (n < 0 || n > text_len_)
      throw IoError(fmt::format("{}: items/length value {} outside [0, {}]", path(), n, text_len_));
  }
  return t;
}

std::vector<std::int64_t> DatasetFile::read_train_end() const {
  return impl_->file.read<std::int64_t>("users/train_end");
}

std::vector<std::string> DatasetFile::read_user_ids() const {
  return impl_->file.read_strings("users/id");
}

std::vector<std::string> DatasetFile::context_names() const {
  if (!impl_->file.has_attr("/", "context_columns")) return {};  // prepared before the attribute
  auto j = nlohmann::json::parse(impl_->file.attr_string("/", "context_columns"), nullptr, false);
  if (j.is_discarded() || !j.is_array() ||
      !std::all_of(j.begin(), j.end(), [](const auto& v) { return v.is_string(); }))
    throw IoError(fmt::format("{}: bad 'context_columns' attribute", path()));
  return j.get<std::vector<std::string>>();
}

namespace {

/// The dataset path of a context column's values; IoError when the file
/// has no such column.
std::string context_values_path(const h5::File& f, const std::string& column) {
  std::string name = "events/context/" + column + "/values";
  if (column.empty() || column.find('/') != std::string::npos || !f.exists(name)) {
    throw IoError(
        fmt::format("{}: no context column '{}' (prepare the dataset with it in data.columns.context)",
                    f.path(), column));
  }
  return name;
}

}  // namespace

std::vector<std::string> DatasetFile::context_values(const std::string& column) const {
  return impl_->file.read_strings(context_values_path(impl_->file, column));
}

UserSlice DatasetFile::read_users(std::int64_t begin, std::int64_t end,
                                  const std::vector<std::string>& context_columns) const {
  if (begin < 0 || end < begin || end > num_users_) {
    throw IoError(fmt::format("{}: user slice [{}, {}) outside [0, {})", path(), begin, end, num_users_));
  }
  const h5::File& f = impl_->file;
  const auto b = static_cast<std::uint64_t>(begin);
  const auto n = static_cast<std::uint64_t>(end - begin);
  UserSlice s;
  s.begin = begin;
  s.end = end;
  auto offsets = f.read_rows<std::int64_t>("users/offsets", b, n + 1);
  const std::int64_t e0 = offsets.front();
  const std::int64_t e1 = offsets.back();
  if (e0 < 0 || e1 < e0 || e1 > num_events_) {
    throw IoError(fmt::format("{}: users/offsets of users [{}, {}) point outside the {} events", path(),
                              begin, end, num_events_));
  }
  for (auto& o : offsets) {
    if (o < e0 || o > e1) throw IoError(fmt::format("{}: users/offsets is not sorted", path()));
    o -= e0;
  }
  s.users.offsets = std::move(offsets);
  s.first_event = e0;
  s.users.train_end = f.read_rows<std::int64_t>("users/train_end", b, n);
  s.users.valid = f.read_rows<std::int64_t>("users/valid", b, n);
  s.users.test = f.read_rows<std::int64_t>("users/test", b, n);
  if (has_profiles_) {
    s.users.profile_tokens = f.read_rows<std::int32_t>("users/profile_tokens", b, n);
    s.users.profile_length = f.read_rows<std::int32_t>("users/profile_length", b, n);
    for (const std::int32_t len : s.users.profile_length) {
      if (len < 0 || len > text_len_)
        throw IoError(
            fmt::format("{}: users/profile_length value {} outside [0, {}]", path(), len, text_len_));
    }
  }
  for (std::uint64_t u = 0; u < n; ++u) {
    const std::int64_t lo = s.users.offsets[u], hi = s.users.offsets[u + 1];
    if (hi < lo || s.users.train_end[u] < 0 || s.users.train_end[u] > hi - lo) {
      throw IoError(fmt::format("{}: user {} has inconsistent offsets/train_end", path(),
                                begin + static_cast<std::int64_t>(u)));
    }
    for (auto* idx : {&s.users.valid[u], &s.users.test[u]}) {
      if (*idx >= 0) {
        *idx -= e0;
        if (*idx < lo || *idx >= hi) {
          throw IoError(fmt::format("{}: user {} has a valid/test index outside its events", path(),
                                    begin + static_cast<std::int64_t>(u)));
        }
      }
    }
  }
  const auto eb = static_cast<std::uint64_t>(e0), en = static_cast<std::uint64_t>(e1 - e0);
  s.events.item = f.read_rows<std::int32_t>("events/item", eb, en);
  s.events.time = f.read_rows<std::int64_t>("events/time", eb, en);
  s.events.type = f.read_rows<std::uint8_t>("events/type", eb, en);
  s.events.weight = f.read_rows<float>("events/weight", eb, en);
  for (auto it : s.events.item) {
    if (it < 0 || it >= num_items_)
      throw IoError(fmt::format("{}: events/item value {} is not an item id", path(), it));
  }
  for (const std::string& column : context_columns) {
    // The number of values from the strings' offsets, without reading the strings.
    const std::string offsets = context_values_path(f, column) + "/offsets";
    const auto shape = f.shape(offsets);
    if (shape.size() != 1 || shape[0] < 1)
      throw IoError(fmt::format("{}: {} is not a list of offsets", path(), offsets));
    const auto values = static_cast<std::int64_t>(shape[0]) - 1;
    const std::string name = "events/context/" + column + "/code";
    s.events.context.push_back(f.read_rows<std::int32_t>(name, eb, en));
    for (const std::int32_t code : s.events.context.back()) {
      if (code < 0 || code >= values)
        throw IoError(
            fmt::format("{}: {} value {} is not an index into its {} values", path(), name, code, values));
    }
  }
  return s;
}

}  // namespace llmrec
