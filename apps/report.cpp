#include "apps/report.h"

#include <fmt/format.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "common/version.h"

namespace llmrec {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Chart geometry (SVG user units).
constexpr double kWidth = 560, kHeight = 260;
constexpr double kLeft = 64, kRight = 16, kTop = 28, kBottom = 40;
const char* const kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};

std::string number(double v) {
  if (v == 0) return "0";
  const double a = std::fabs(v);
  if (a >= 1e5 || a < 1e-3) return fmt::format("{:.3g}", v);
  if (a >= 100) return fmt::format("{:.0f}", v);
  return fmt::format("{:.4g}", v);
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(fmt::format("cannot read {}", path));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

/// metrics.jsonl: one JSON object per line.
std::vector<json> read_metrics(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw IoError(fmt::format("{}: cannot read (is this a training run directory?)", path));
  std::vector<json> rows;
  std::string line;
  for (std::int64_t n = 1; std::getline(in, line); ++n) {
    if (line.empty()) continue;
    try {
      json j = json::parse(line);
      if (!j.is_object()) throw std::runtime_error("not a JSON object");
      rows.push_back(std::move(j));
    } catch (const std::exception& e) {
      throw IoError(fmt::format("{}:{}: not a metrics record: {}", path, n, e.what()));
    }
  }
  return rows;
}

/// The `key` of the records by step. A record whose step is not past the
/// previous one starts again (a fresh run appended to the same
/// metrics.jsonl, or a resume that replays steps after its checkpoint): the
/// points at or after that step are dropped, so the curve is the latest
/// history, its steps increasing.
ReportSeries series_of(const std::vector<json>& rows, const std::string& key, const std::string& name) {
  ReportSeries s;
  s.name = name;
  for (const auto& r : rows) {
    if (!r.contains("step") || !r.contains(key) || !r["step"].is_number() || !r[key].is_number()) continue;
    const double step = r["step"].get<double>();
    while (!s.x.empty() && s.x.back() >= step) {
      s.x.pop_back();
      s.y.pop_back();
    }
    s.x.push_back(step);
    s.y.push_back(r[key].get<double>());
  }
  return s;
}

/// "a.b.c" -> value rows of a JSON object, in key order.
void flatten(const json& j, const std::string& prefix,
             std::vector<std::pair<std::string, std::string>>& out) {
  if (j.is_object()) {
    for (const auto& [k, v] : j.items()) flatten(v, prefix.empty() ? k : prefix + "." + k, out);
  } else if (j.is_array() && !j.empty() && !j.front().is_primitive()) {
    for (std::size_t i = 0; i < j.size(); ++i) flatten(j[i], fmt::format("{}[{}]", prefix, i), out);
  } else {
    out.emplace_back(prefix, j.is_string() ? j.get<std::string>() : j.dump());
  }
}

std::string key_value_table(const json& j) {
  std::vector<std::pair<std::string, std::string>> rows;
  flatten(j, "", rows);
  std::string h = "<table class=\"kv\">\n";
  for (const auto& [k, v] : rows)
    h += fmt::format("<tr><th>{}</th><td>{}</td></tr>\n", report_escape(k), report_escape(v));
  return h + "</table>\n";
}

double metric(const json& group, const std::string& key) {
  return group.contains(key) && group[key].is_number() ? group[key].get<double>() : std::nan("");
}

/// NDCG@K of every scorer by history length and by the held-out item's
/// popularity (the results' "segments"); "" for results without them.
std::string segments_section(const json& eval) {
  const json& results = eval.at("results");
  if (results.empty() || !results[0].contains("segments")) return "";
  const json& first = results[0]["segments"];
  const int k = first.value("k", 10);
  std::string h = fmt::format(
      "<h2>Segments</h2>\n<p>NDCG@{} by the user's history length (events before the "
      "held-out one) and by the held-out item's training events.</p>\n",
      k);
  const std::string key = fmt::format("ndcg@{}", k);
  for (const auto& [by, title] : {std::pair<const char*, const char*>{"history_length", "history length"},
                                  {"target_popularity", "held-out item's training events"}}) {
    if (!first.contains(by)) continue;
    h += fmt::format("<table class=\"num\">\n<tr><th>{}</th><th>users</th>", title);
    for (const auto& r : results) h += "<th>" + report_escape(r.value("scorer", "?")) + "</th>";
    h += "</tr>\n";
    const json& rows = first[by];
    for (std::size_t g = 0; g < rows.size(); ++g) {
      h += fmt::format("<tr><td>{}</td><td>{}</td>", report_escape(rows[g].value("range", "?")),
                       rows[g].value("users", 0));
      for (const auto& r : results) {
        const json* seg = r.contains("segments") && r["segments"].contains(by) && r["segments"][by].size() > g
                              ? &r["segments"][by][g]
                              : nullptr;
        h += seg != nullptr && seg->contains(key) && (*seg)[key].is_number()
                 ? fmt::format("<td>{:.4f}</td>", (*seg)[key].get<double>())
                 : std::string("<td>-</td>");
      }
      h += "</tr>\n";
    }
    h += "</table>\n";
  }
  return h;
}

/// The test table and a bar chart of NDCG@10 by scorer.
std::string test_section(const json& eval) {
  const json& results = eval.at("results");
  std::string h =
      "<table class=\"num\">\n<tr><th>scorer</th><th>NDCG@10</th><th>Recall@10</th><th>NDCG@20</th>"
      "<th>MRR</th><th>coverage@10</th><th>cold users</th><th>cold NDCG@10</th><th>cold "
      "Recall@10</th></tr>\n";
  ReportSeries bars;
  for (const auto& r : results) {
    const json& all = r.at("all");
    const json& cold = r.at("cold");
    const std::string name = r.value("scorer", "?");
    h += fmt::format(
        "<tr><td>{}</td><td>{:.4f}</td><td>{:.4f}</td><td>{:.4f}</td><td>{:.4f}</td><td>{:.3f}</td>"
        "<td>{}</td><td>{:.4f}</td><td>{:.4f}</td></tr>\n",
        report_escape(name), metric(all, "ndcg@10"), metric(all, "recall@10"), metric(all, "ndcg@20"),
        metric(all, "mrr"), metric(all, "coverage@10"), cold.value("users", 0), metric(cold, "ndcg@10"),
        metric(cold, "recall@10"));
    bars.name += (bars.name.empty() ? "" : "|") + name;
    bars.y.push_back(metric(all, "ndcg@10"));
    bars.x.push_back(metric(cold, "ndcg@10"));
  }
  h += "</table>\n";
  // Bars: NDCG@10 (all users) and cold NDCG@10 per scorer.
  const std::size_t n = bars.y.size();
  double top = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (std::isfinite(bars.y[i])) top = std::max(top, bars.y[i]);
    if (std::isfinite(bars.x[i])) top = std::max(top, bars.x[i]);
  }
  if (n > 0 && top > 0) {
    const double slot = (kWidth - kLeft - kRight) / static_cast<double>(n);
    const double plot_h = kHeight - kTop - kBottom;
    std::string svg = fmt::format(
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {} {}\" "
        "width=\"{}\" height=\"{}\" role=\"img\"><title>NDCG@10 by scorer</title>\n",
        kWidth, kHeight, kWidth, kHeight);
    svg += fmt::format(
        "<text x=\"{}\" y=\"18\" class=\"t\">NDCG@10 (blue: all users, red: cold targets)</text>\n", kLeft);
    svg += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"#444\"/>\n", kLeft,
                       kHeight - kBottom, kWidth - kRight);
    svg += fmt::format("<text x=\"{}\" y=\"{}\" class=\"l\" text-anchor=\"end\">{}</text>\n", kLeft - 6,
                       kTop + 4, number(top));
    std::size_t i = 0;
    std::istringstream names(bars.name);
    for (std::string name; std::getline(names, name, '|'); ++i) {
      const double x0 = kLeft + slot * static_cast<double>(i) + slot * 0.15;
      const double w = slot * 0.35;
      const double vals[2] = {bars.y[i], bars.x[i]};
      for (int b = 0; b < 2; ++b) {
        const double v = std::isfinite(vals[b]) ? vals[b] : 0.0;
        const double bh = plot_h * v / top;
        svg += fmt::format(
            "<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\"><title>{} "
            "{}</title></rect>\n",
            x0 + w * b, kHeight - kBottom - bh, w, bh, kColours[b], report_escape(name), number(v));
      }
      svg += fmt::format("<text x=\"{:.1f}\" y=\"{}\" class=\"l\" text-anchor=\"middle\">{}</text>\n", x0 + w,
                         kHeight - kBottom + 16, report_escape(name));
    }
    h += svg + "</svg>\n";
  }
  return h;
}

const char* const kStyle = R"(body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ddd;padding:3px 8px;font-size:0.9em}
table.num td{text-align:right}table.num td:first-child{text-align:left}table.kv th{text-align:left;font-weight:normal;color:#555}
pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:0.8em;max-height:40em}
.charts{display:flex;flex-wrap:wrap;gap:1em}svg.chart{background:#fff;border:1px solid #eee}
svg .axis{stroke:#444;stroke-width:1}svg .grid{stroke:#eee}svg .t{font-size:13px;font-weight:bold}
svg .l{font-size:11px;fill:#444}.missing{color:#a00})";

}  // namespace

std::string report_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string report_svg_line_chart(const std::string& title, const std::string& x_label,
                                  const std::vector<ReportSeries>& series) {
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo, y_lo = x_lo, y_hi = -x_lo;
  std::size_t points = 0;
  for (const auto& s : series) {
    for (std::size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      x_lo = std::min(x_lo, s.x[i]);
      x_hi = std::max(x_hi, s.x[i]);
      y_lo = std::min(y_lo, s.y[i]);
      y_hi = std::max(y_hi, s.y[i]);
      ++points;
    }
  }
  if (points == 0) return "";
  if (x_hi == x_lo) x_hi = x_lo + 1;
  if (y_hi == y_lo) {
    y_hi += std::max(1e-9, std::fabs(y_hi) * 0.05);
    y_lo -= std::max(1e-9, std::fabs(y_lo) * 0.05);
  }
  const double pw = kWidth - kLeft - kRight, ph = kHeight - kTop - kBottom;
  auto px = [&](double x) { return kLeft + pw * (x - x_lo) / (x_hi - x_lo); };
  auto py = [&](double y) { return kTop + ph * (1.0 - (y - y_lo) / (y_hi - y_lo)); };
  std::string svg = fmt::format(
      "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {} {}\" "
      "width=\"{}\" height=\"{}\" role=\"img\"><title>{}</title>\n",
      kWidth, kHeight, kWidth, kHeight, report_escape(title));
  svg += fmt::format("<text x=\"{}\" y=\"18\" class=\"t\">{}</text>\n", kLeft, report_escape(title));
  for (int g = 0; g <= 4; ++g) {  // horizontal grid lines with their values
    const double y = y_lo + (y_hi - y_lo) * g / 4.0;
    svg += fmt::format(
        "<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" stroke=\"#e4e4e4\"/>"
        "<text x=\"{3}\" y=\"{4:.1f}\" class=\"l\" text-anchor=\"end\">{5}</text>\n",
        kLeft, py(y), kWidth - kRight, kLeft - 6, py(y) + 4, number(y));
  }
  svg += fmt::format(
      "<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"#444\"/>"
      "<line x1=\"{0}\" y1=\"{2}\" x2=\"{3}\" y2=\"{2}\" stroke=\"#444\"/>\n",
      kLeft, kTop, kHeight - kBottom, kWidth - kRight);
  svg += fmt::format(
      "<text x=\"{}\" y=\"{}\" class=\"l\">{}</text><text x=\"{}\" y=\"{}\" class=\"l\" "
      "text-anchor=\"end\">{}</text><text x=\"{}\" y=\"{}\" class=\"l\" text-anchor=\"middle\">{}</text>\n",
      kLeft, kHeight - kBottom + 14, number(x_lo), kWidth - kRight, kHeight - kBottom + 14, number(x_hi),
      kLeft + pw / 2, kHeight - 8, report_escape(x_label));
  for (std::size_t k = 0; k < series.size(); ++k) {
    const auto& s = series[k];
    const char* colour = kColours[k % (sizeof kColours / sizeof kColours[0])];
    std::string pts;
    for (std::size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      pts += fmt::format("{}{:.1f},{:.1f}", pts.empty() ? "" : " ", px(s.x[i]), py(s.y[i]));
    }
    if (pts.empty()) continue;
    svg += fmt::format(
        "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"><title>{}</title>"
        "</polyline>\n",
        colour, pts, report_escape(s.name));
    if (series.size() > 1) {
      svg += fmt::format("<text x=\"{}\" y=\"{}\" class=\"l\" fill=\"{}\" text-anchor=\"end\">{}</text>\n",
                         kWidth - kRight, kTop + 14.0 * static_cast<double>(k + 1), colour,
                         report_escape(s.name));
    }
  }
  return svg + "</svg>\n";
}

namespace {

/// The training curves of metrics.jsonl, one chart each.
std::string curves_section(const std::vector<json>& metrics) {
  std::string html;
  html += "<h2>Training</h2>\n<div class=\"charts\">\n";
  const std::pair<const char*, const char*> curves[] = {
      {"loss", "training loss (mean over the logging window)"},
      {"valid_ndcg@10", "validation NDCG@10"},
      {"lr", "learning rate"},
      {"examples_per_s", "examples per second (all ranks)"},
      {"comm_share", "share of the step waiting for all-reduce"},
      {"grad_norm", "gradient norm (before clipping)"}};
  for (const auto& [key, title] : curves) {
    const std::string chart = report_svg_line_chart(title, "optimizer step", {series_of(metrics, key, key)});
    html += chart.empty() ? fmt::format("<p class=\"missing\">no {} in metrics.jsonl</p>\n", key) : chart;
  }
  html += "</div>\n";

  return html;
}

/// The test split's table and segments from eval_test.json (null when the
/// run has not finished).
std::string test_split_section(const fs::path& dir, json& eval) {
  std::string html;
  const fs::path eval_path = dir / "eval_test.json";
  if (fs::exists(eval_path)) {
    try {
      eval = json::parse(read_text(eval_path.string()));
      html += "<h2>Test split</h2>\n" + test_section(eval);
      html += segments_section(eval);
    } catch (const json::exception& e) {
      throw IoError(fmt::format("{}: not an evaluation result: {}", eval_path.string(), e.what()));
    }
  } else {
    html += "<h2>Test split</h2>\n<p class=\"missing\">no eval_test.json (the run has not finished)</p>\n";
  }

  return html;
}

/// The dataset's preparation report, found via data.dataset of the
/// resolved config (`config_text`).
std::string dataset_section(const fs::path& config_path, const std::string& config_text) {
  std::string html = "<h2>Dataset</h2>\n";
  std::string dataset;
  try {
    if (!config_text.empty()) {
      const YAML::Node c = YAML::Load(config_text);
      if (c["data"] && c["data"]["dataset"]) dataset = c["data"]["dataset"].as<std::string>();
    }
  } catch (const YAML::Exception& e) {
    throw IoError(fmt::format("{}: {}", config_path.string(), e.what()));
  }
  const std::string dataset_report = dataset + ".report.json";
  if (!dataset.empty() && fs::exists(dataset_report)) {
    try {
      html += fmt::format("<p><code>{}</code>: every row in and out</p>\n", report_escape(dataset_report)) +
              key_value_table(json::parse(read_text(dataset_report)));
    } catch (const json::exception& e) {
      throw IoError(fmt::format("{}: not a dataset report: {}", dataset_report, e.what()));
    }
  } else {
    html += fmt::format("<p class=\"missing\">no dataset report{}</p>\n",
                        dataset.empty() ? std::string() : " at " + report_escape(dataset_report));
  }
  return html;
}

}  // namespace

std::string write_report(const std::string& run_dir) {
  const fs::path dir(run_dir);
  const std::vector<json> metrics = read_metrics((dir / "metrics.jsonl").string());

  std::string html = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>llmrec run " +
                     report_escape(run_dir) + "</title>\n<style>" + kStyle + "</style></head><body>\n";
  html += fmt::format(
      "<h1>llmrec run <code>{}</code></h1>\n<p>{}; {} metrics records.</p>\n", report_escape(run_dir),
      report_escape(fmt::format("llmrec {} ({})", version_string(), version_git_revision())), metrics.size());

  html += curves_section(metrics);
  json eval;
  html += test_split_section(dir, eval);
  const fs::path config_path = dir / "config.yaml";
  std::string config_text;
  if (fs::exists(config_path)) config_text = read_text(config_path.string());
  html += dataset_section(config_path, config_text);
  if (!eval.is_null() && eval.contains("protocol")) {
    html += "<h2>Protocol</h2>\n" + key_value_table(eval["protocol"]);
  }
  html += "<h2>Configuration</h2>\n";
  html += config_text.empty() ? "<p class=\"missing\">no config.yaml</p>\n"
                              : "<pre>" + report_escape(config_text) + "</pre>\n";
  html += "</body></html>\n";

  const fs::path out = dir / "report.html";
  const fs::path tmp = dir / fmt::format(".report.html.{}", ::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << html;
    if (!f.flush()) throw IoError(fmt::format("cannot write {}", tmp.string()));
  }
  fs::rename(tmp, out);
  return out.string();
}

}  // namespace llmrec
