#pragma once
// Multi-rank tests: rank 0 writes a small synthetic dataset (with the shop's
// `device` context column; with `profiles` its users.csv as data.users),
// every rank gets its path (broadcast). Deleted by dataset_helper_cleanup().
#include <ATen/ATen.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "data/prepare.h"
#include "data/synth.h"
#include "distributed/broadcast_string.h"
#include "distributed/communicator.h"

namespace llmrec::testing {

inline std::string make_test_dataset(Communicator& comm, const std::string& tag, std::int64_t items,
                                     std::int64_t users, double mean_history, int text_len,
                                     bool profiles = false) {
  namespace fs = std::filesystem;
  std::string path;
  if (comm.rank() == 0) {
    fs::path dir = fs::temp_directory_path() / ("llmrec_" + tag + "_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    SynthOptions o;
    o.items = items;
    o.users = users;
    o.mean_history = mean_history;
    write_synth_shop(o, (dir / "shop").string());
    DataConfig cfg;
    cfg.catalogue = (dir / "shop" / "catalogue.csv").string();
    cfg.interactions = (dir / "shop" / "interactions.csv").string();
    cfg.dataset = (dir / "dataset.h5").string();
    cfg.vocab_size = 400;
    cfg.columns.context = {"device"};  // the synthetic shop's context column
    cfg.text_len = text_len;
    if (profiles) {
      cfg.users = (dir / "shop" / "users.csv").string();
      cfg.user_columns.text = {"age", "region", "interests", "price"};
    }
    prepare_dataset(cfg, "");
    path = cfg.dataset;
  }
  return broadcast_string(comm, path);
}

inline void dataset_helper_cleanup(Communicator& comm, const std::string& path) {
  comm.barrier();
  if (comm.rank() == 0) std::filesystem::remove_all(std::filesystem::path(path).parent_path());
}

}  // namespace llmrec::testing
