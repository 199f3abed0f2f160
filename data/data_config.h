#pragma once
/// The `data:` section: where the raw exports are, how to read them, how to
/// validate, filter and split them, and where the dataset file goes.

#include <map>
#include <string>
#include <vector>

#include "common/config.h"

namespace llmrec {

struct InteractionColumns {
  std::string user = "user_id";
  std::string item = "item_id";
  std::string time = "timestamp";
  std::string event = "event";       ///< "" = no event column: every row has weight 1
  std::string rating = "";           ///< optional numeric column, stored per event
  std::vector<std::string> context;  ///< optional categorical columns, stored per event

  template <class V>
  void visit(V& v) {
    v.field("user", user, "User id column");
    v.field("item", item, "Item id column");
    v.field("time", time, "Timestamp column (unix seconds, unix ms or ISO 8601, see data.time_format)");
    v.field("event", event, "Event type column; its values must be keys of data.event_weights; \"\" = none");
    v.field("rating", rating, "Optional rating column (a number), stored per event; \"\" = none");
    v.field("context", context,
            "Optional categorical context columns (device, country, ...), stored per event; "
            "model.user.context_columns learns them");
  }
};

struct CatalogueColumns {
  std::string item = "item_id";
  std::vector<std::string> text = {"title", "category", "brand", "tags", "description"};
  std::string category = "category";  ///< "" = none; used for diversity metrics

  template <class V>
  void visit(V& v) {
    v.field("item", item, "Item id column of the catalogue");
    v.field("text", text,
            "Columns joined (in this order, ' ; ' between) into the item text the encoder reads");
    v.field("category", category, "Category column (for diversity and coverage figures); \"\" = none");
  }
};

struct UserProfileColumns {
  std::string user = "user_id";
  std::vector<std::string> text = {"profile"};

  template <class V>
  void visit(V& v) {
    v.field("user", user, "User id column of the user table (the ids of the interactions file)");
    v.field("text", text,
            "Columns joined (in this order, ' ; ' between) into the user's profile text (age band, "
            "region, stated interests, ...), which the item encoder reads for model.user.profile");
  }
};

struct DataConfig {
  std::string interactions;  ///< raw behaviour log
  std::string catalogue;     ///< raw product catalogue
  std::string users;         ///< optional user table (profile text); "" = none
  std::string format = "auto";
  std::string dataset = "dataset.h5";
  InteractionColumns columns;
  CatalogueColumns catalogue_columns;
  UserProfileColumns user_columns;
  std::string time_format = "auto";
  std::map<std::string, double> event_weights = {
      {"view", 1.0}, {"click", 1.0}, {"cart", 2.0}, {"purchase", 4.0}};
  std::string weight = "event";
  std::string on_error = "error";
  int show_errors = 5;
  int max_text_chars = 4000;
  int min_user_events = 3;
  int kcore = 0;
  std::string split = "leave_last_out";
  std::string cut;
  int text_len = 32;
  std::string vocab;
  int vocab_size = 8000;

  template <class V>
  void visit(V& v) {
    v.field("interactions", interactions, "Interactions file (CSV/TSV with a header, or JSONL)");
    v.field("catalogue", catalogue, "Catalogue file (CSV/TSV with a header, or JSONL)");
    v.field("users", users,
            "Optional user table (CSV/TSV with a header, or JSONL): one row per user id with profile "
            "text; \"\" = none");
    v.field("format", format, "File format; auto = by extension (.csv, .tsv/.tab, .jsonl/.ndjson)",
            config_one_of({"auto", "csv", "tsv", "jsonl"}));
    v.field("dataset", dataset, "The prepared HDF5 dataset: written by `llmrec prepare`, read by training");
    v.section("columns", columns, "Column names of the interactions file");
    v.section("catalogue_columns", catalogue_columns, "Column names of the catalogue file");
    v.section("user_columns", user_columns, "Column names of the user table (data.users)");
    v.field("time_format", time_format,
            "How timestamps are written; auto = ISO 8601, or a unix time whose unit follows from its size "
            "(below 1e11: seconds, below 1e14: milliseconds, below 1e17: microseconds, else nanoseconds)",
            config_one_of({"auto", "unix", "unix_ms", "iso8601"}));
    v.field("event_weights", event_weights, "Loss weight of each event type; other event types are bad rows");
    v.field("weight", weight,
            "Each event's loss weight r_ij: event = data.event_weights of its type (1 without an event "
            "column); rating = its rating (data.columns.rating, e.g. 1-5 stars; a row without a rating, "
            "or with a negative one, is a bad row)",
            config_one_of({"event", "rating"}));
    v.field("on_error", on_error,
            "Bad rows: error = stop at the first, naming file:line; skip = count and report",
            config_one_of({"error", "skip"}));
    v.field("show_errors", show_errors,
            "With on_error: skip, how many bad rows per reason to show with file:line",
            config_range(0, 1000));
    v.field("max_text_chars", max_text_chars,
            "Item texts (the joined text columns) longer than this many characters are cut to it and "
            "counted in the report (the model reads data.text_len tokens, far fewer)",
            config_range(16, 1000000));
    v.field("min_user_events", min_user_events,
            "Users with fewer events (after dedup and k-core) are dropped", config_range(1, 1000000));
    v.field("kcore", kcore,
            "Keep only users and items with at least k events, iterated to a fixed point; 0 = off",
            config_range(0, 1000000));
    v.field("split", split,
            "leave_last_out: valid = second last, test = last event of each user; "
            "temporal: train before data.cut, test = first event after it, valid = last before it",
            config_one_of({"leave_last_out", "temporal"}));
    v.field("cut", cut, "Cut time of the temporal split (unix seconds or ISO 8601)");
    v.field("text_len", text_len,
            "Tokens per item text, [CLS] and [SEP] included (longer texts are truncated)",
            config_range(4, 4096));
    v.field("vocab", vocab,
            "WordPiece vocab.txt (e.g. of a pretrained BERT); \"\" = build one from the catalogue");
    v.field("vocab_size", vocab_size, "Size of the vocabulary built when data.vocab is empty",
            config_range(200, 1000000));
  }
};

}  // namespace llmrec
