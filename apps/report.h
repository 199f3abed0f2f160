#pragma once
// The run report: one self-contained HTML file (inline SVG charts, no
// script, no network) from what a training run leaves in its directory.
//
//   std::string path = write_report("runs/x");   // -> runs/x/report.html
//
// Reads <run>/metrics.jsonl (required: the curves), <run>/eval_test.json
// (the test table, cold items, the protocol), <run>/config.yaml (the
// resolved config, and data.dataset for the dataset report
// <dataset>.report.json). A missing optional file is said in the page; a
// malformed one is an IoError naming the file and line.
#include <string>
#include <vector>

namespace llmrec {

/// One chart series: (x, y) points in x order.
struct ReportSeries {
  std::string name;
  std::vector<double> x, y;
};

/// Pure: an SVG line chart (axes with min/max labels, one polyline per
/// series, a legend); non-finite points are left out; "" when no series
/// has a point.
std::string report_svg_line_chart(const std::string& title, const std::string& x_label,
                                  const std::vector<ReportSeries>& series);

/// Pure: HTML text escaping (& < > " ').
std::string report_escape(const std::string& text);

/// Writes <run_dir>/report.html (atomically) and returns its path.
std::string write_report(const std::string& run_dir);

}  // namespace llmrec
