#include "common/planner.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace eenn::common {
namespace {

// The three ways a plan can be ranked, as (name, value) pairs in the order
// the header documents.
constexpr std::pair<PlanObjective, const char*> kObjectives[] = {
    {PlanObjective::kLatency, "latency"},
    {PlanObjective::kBytes, "bytes"},
    {PlanObjective::kDeviceCompute, "device_compute"},
};

// Costs are sums of products of measured means, so two splits that are equal
// on paper (e.g. two splits behind the same exit with equal tensors) differ in
// the last bits; ties are decided by the documented secondary keys instead.
bool Near(double a, double b) {
  return std::abs(a - b) <= 1e-9 * std::max({1.0, std::abs(a), std::abs(b)});
}

// -1 when a ranks before b, 1 when after, 0 on a tie (within Near).
int Compare(double a, double b) {
  if (Near(a, b)) return 0;
  return a < b ? -1 : 1;
}

// Lexicographic ranking by the objective's keys; the final key, the larger
// split, keeps the choice deterministic and prefers keeping work on the device.
bool RanksBefore(const SplitCandidate& a, const SplitCandidate& b, PlanObjective objective) {
  int c = 0;
  switch (objective) {
    case PlanObjective::kLatency:
      c = Compare(a.expected_ms, b.expected_ms);
      if (c == 0) c = Compare(a.bytes, b.bytes);
      break;
    case PlanObjective::kBytes:
      c = Compare(a.bytes, b.bytes);
      if (c == 0) c = Compare(a.expected_ms, b.expected_ms);
      break;
    case PlanObjective::kDeviceCompute:
      c = Compare(a.device_ms, b.device_ms);
      if (c == 0) c = Compare(a.expected_ms, b.expected_ms);
      break;
  }
  if (c != 0) return c < 0;
  return a.split > b.split;
}

absl::Status CheckSameModel(const Profile& device, const Profile& server) {
  auto mismatch = [](const char* field, const std::string& d, const std::string& s) {
    return absl::InvalidArgumentError(absl::StrCat("profiles describe different models: ", field,
                                                   " '", d, "' (device) vs '", s, "' (server)"));
  };
  if (device.model_name != server.model_name) {
    return mismatch("model_name", device.model_name, server.model_name);
  }
  if (device.model_version != server.model_version) {
    return mismatch("model_version", device.model_version, server.model_version);
  }
  if (device.architecture != server.architecture) {
    return mismatch("architecture", device.architecture, server.architecture);
  }
  if (device.num_layers() != server.num_layers()) {
    return absl::InvalidArgumentError(absl::StrCat("profiles describe different models: layers ",
                                                   device.num_layers(), " (device) vs ",
                                                   server.num_layers(), " (server)"));
  }
  if (device.num_layers() < 1) {
    return absl::InvalidArgumentError("profiles have no layers");
  }
  auto exit_layers = [](const Profile& p) {
    std::vector<int> layers;
    for (const ExitProfile& e : p.exits) layers.push_back(e.layer);
    return absl::StrJoin(layers, ",");
  };
  if (exit_layers(device) != exit_layers(server)) {
    return absl::InvalidArgumentError(
        absl::StrCat("profiles describe different models: exits at layers [", exit_layers(device),
                     "] (device) vs [", exit_layers(server), "] (server)"));
  }
  return absl::OkStatus();
}

// The cost model indexes heads by exit, so each profile must pair them up and
// the exits must be in backbone order.
absl::Status CheckExits(const Profile& p, const char* side) {
  const int n = p.num_layers();
  if (p.exits.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(side, " profile has no exits"));
  }
  if (p.heads.size() != p.exits.size()) {
    return absl::InvalidArgumentError(absl::StrCat(side, " profile has ", p.heads.size(),
                                                   " heads for ", p.exits.size(), " exits"));
  }
  for (size_t g = 0; g < p.exits.size(); ++g) {
    const int layer = p.exits[g].layer;
    if (layer < 0 || layer >= n) {
      return absl::InvalidArgumentError(
          absl::StrCat(side, " profile: exit ", g, " at layer ", layer, " outside 0..", n - 1));
    }
    if (g > 0 && layer <= p.exits[g - 1].layer) {
      return absl::InvalidArgumentError(
          absl::StrCat(side, " profile: exit layers are not ascending at exit ", g));
    }
    if (p.heads[g].layer != layer) {
      return absl::InvalidArgumentError(absl::StrCat(side, " profile: head ", g, " reads layer ",
                                                     p.heads[g].layer, " but exit ", g,
                                                     " is at layer ", layer));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckLink(const LinkEstimate& link, const PlanOptions& options) {
  if (!std::isfinite(link.bandwidth_mbps) || link.bandwidth_mbps <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("bandwidth_mbps must be positive and finite, got ", link.bandwidth_mbps));
  }
  if (!std::isfinite(link.rtt_ms) || link.rtt_ms < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("rtt_ms must be >= 0 and finite, got ", link.rtt_ms));
  }
  if (!std::isfinite(link.overhead_bytes) || link.overhead_bytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("overhead_bytes must be >= 0 and finite, got ", link.overhead_bytes));
  }
  if (!std::isfinite(options.server_speed_factor) || options.server_speed_factor <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "server_speed_factor must be positive and finite, got ", options.server_speed_factor));
  }
  if (!std::isfinite(options.server_overhead_ms) || options.server_overhead_ms < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "server_overhead_ms must be >= 0 and finite, got ", options.server_overhead_ms));
  }
  // +inf means "no bound"; NaN would silently put every split out of bounds.
  if (std::isnan(options.latency_bound_ms) || options.latency_bound_ms < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("latency_bound_ms must be >= 0, got ", options.latency_bound_ms));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<double>> ResolveShares(const Profile& device,
                                                  const PlanOptions& options) {
  const bool measured = options.exit_shares.empty();
  std::vector<double> shares = options.exit_shares;
  if (measured) {
    for (const ExitProfile& e : device.exits) shares.push_back(e.share);
  }
  const char* source = measured ? "exit shares (from the device profile)" : "exit_shares";
  if (shares.size() != device.exits.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": ", shares.size(), " values for ", device.exits.size(), " exits"));
  }
  double sum = 0;
  for (size_t g = 0; g < shares.size(); ++g) {
    if (!std::isfinite(shares[g]) || shares[g] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, "[", g, "] must be >= 0 and finite, got ", shares[g]));
    }
    sum += shares[g];
  }
  if (std::abs(sum - 1) > 1e-3) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, " sum to ", sum, ", not 1", measured ? "; pass exit_shares" : ""));
  }
  return shares;
}

// Wire costs of the tensor sent at every split that sends one (0..N-1).
absl::StatusOr<std::vector<WireCost>> SplitWires(const Profile& p, const char* side,
                                                 const std::string& wire) {
  std::vector<WireCost> costs;
  for (int s = 0; s < p.num_layers(); ++s) {
    absl::StatusOr<WireCost> cost = p.SplitWire(s, wire);
    if (!cost.ok()) {
      std::vector<std::string> have;
      for (const auto& [key, unused] : s == 0 ? p.input_wire : p.layers[s - 1].wire) {
        have.push_back(key);
      }
      return absl::InvalidArgumentError(absl::StrCat(
          "wire '", wire, "' missing from the ", side, " profile at split ", s, " (has: ",
          have.empty() ? "none" : absl::StrJoin(have, ", "), "): ", cost.status().message()));
    }
    costs.push_back(*cost);
  }
  return costs;
}

std::string FormatMs(double ms) { return absl::StrFormat("%.3f", ms); }

std::string EscapeXml(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// The smallest of 1, 2, 5 x 10^k that is >= x (x > 0).
double NiceStep(double x) {
  const double decade = std::pow(10.0, std::floor(std::log10(x)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * decade >= x * (1 - 1e-12)) return m * decade;
  }
  return 10 * decade;
}

}  // namespace

absl::StatusOr<PlanObjective> ParsePlanObjective(const std::string& name) {
  std::vector<std::string> names;
  for (const auto& [objective, objective_name] : kObjectives) {
    if (name == objective_name) return objective;
    names.push_back(objective_name);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown plan objective '", name, "' (choose one of: ", absl::StrJoin(names, ", "), ")"));
}

std::string PlanObjectiveName(PlanObjective o) {
  for (const auto& [objective, objective_name] : kObjectives) {
    if (o == objective) return objective_name;
  }
  return "unknown";
}

absl::StatusOr<Plan> PlanSplits(const Profile& device, const Profile& server,
                                const LinkEstimate& link, const PlanOptions& options) {
  if (absl::Status s = CheckSameModel(device, server); !s.ok()) return s;
  if (absl::Status s = CheckExits(device, "device"); !s.ok()) return s;
  if (absl::Status s = CheckExits(server, "server"); !s.ok()) return s;
  if (absl::Status s = CheckLink(link, options); !s.ok()) return s;
  absl::StatusOr<std::vector<double>> shares = ResolveShares(device, options);
  if (!shares.ok()) return shares.status();
  absl::StatusOr<std::vector<WireCost>> device_wire = SplitWires(device, "device", options.wire);
  if (!device_wire.ok()) return device_wire.status();
  absl::StatusOr<std::vector<WireCost>> server_wire = SplitWires(server, "server", options.wire);
  if (!server_wire.ok()) return server_wire.status();

  const int n = device.num_layers();
  const int num_exits = static_cast<int>(device.exits.size());
  // reach[i]: share of samples that run layer i (reach[n]: that pass the last
  // layer without leaving, ~0). Clamped because the shares only sum to 1
  // within the validation tolerance.
  std::vector<double> reach(n + 1);
  double left = 0;
  for (int i = 0, g = 0; i <= n; ++i) {
    while (g < num_exits && device.exits[g].layer < i) left += (*shares)[g++];
    reach[i] = std::clamp(1 - left, 0.0, 1.0);
  }

  const double preprocess = options.include_preprocess ? device.preprocess_ms.mean : 0;
  Plan plan;
  plan.objective = options.objective;
  plan.link = link;
  plan.wire = options.wire;
  for (int s = 0; s <= n; ++s) {
    SplitCandidate c;
    c.split = s;
    double device_ms = preprocess, server_ms = 0;
    for (int i = 0; i < n; ++i) {
      (i < s ? device_ms : server_ms) += reach[i] * (i < s ? device : server).layers[i].ms.mean;
    }
    for (int g = 0; g < num_exits; ++g) {
      const int layer = device.exits[g].layer;
      (layer < s ? device_ms : server_ms) +=
          reach[layer] * (layer < s ? device : server).heads[g].ms.mean;
    }
    c.device_ms = device_ms;
    c.server_ms = server_ms * options.server_speed_factor;
    if (s < n) {
      c.offload_share = reach[s];
      c.tensor_bytes = (*device_wire)[s].bytes;
      c.bytes = c.offload_share * c.tensor_bytes;
      const double transfer_ms =
          (c.tensor_bytes + link.overhead_bytes) * 8 / (link.bandwidth_mbps * 1000);
      c.link_ms = c.offload_share * (link.rtt_ms + transfer_ms + (*device_wire)[s].encode_ms +
                                     (*server_wire)[s].decode_ms + options.server_overhead_ms);
    }
    c.expected_ms = c.device_ms + c.link_ms + c.server_ms;
    c.within_bound = c.expected_ms <= options.latency_bound_ms;
    plan.candidates.push_back(c);
  }

  int best = -1;
  for (const SplitCandidate& c : plan.candidates) {
    if (!c.within_bound) continue;
    if (best < 0 || RanksBefore(c, plan.candidates[best], options.objective)) best = c.split;
  }
  plan.bound_met = best >= 0;
  if (!plan.bound_met) {
    for (const SplitCandidate& c : plan.candidates) {
      if (best < 0 || RanksBefore(c, plan.candidates[best], PlanObjective::kLatency)) {
        best = c.split;
      }
    }
  }
  plan.best_split = best;
  return plan;
}

std::string FormatPlanTable(const Plan& plan) {
  const int n = static_cast<int>(plan.candidates.size()) - 1;
  std::string out = absl::StrFormat("  %5s | %11s | %11s | %9s | %9s | %9s | %12s | %9s\n", "split",
                                    "server from", "expected ms", "device ms", "link ms",
                                    "server ms", "bytes/sample", "offload %");
  for (const SplitCandidate& c : plan.candidates) {
    const std::string from = c.split < n ? absl::StrCat(c.split) : "-";
    absl::StrAppendFormat(&out,
                          "%c %5d | %11s | %11.3f | %9.3f | %9.3f | %9.3f | %12.1f | %9.1f%s\n",
                          c.split == plan.best_split ? '*' : ' ', c.split, from, c.expected_ms,
                          c.device_ms, c.link_ms, c.server_ms, c.bytes, 100 * c.offload_share,
                          c.within_bound ? "" : "  over bound");
  }
  if (plan.best_split < 0 || plan.best_split > n) {
    absl::StrAppend(&out, "best split: none\n");
    return out;
  }
  const SplitCandidate& best = plan.best();
  std::string where;
  if (best.split == n) {
    where = "all-on-device";
  } else if (best.split == 0) {
    where = "all-on-server";
  } else {
    where =
        absl::StrCat("device runs layers 0..", best.split - 1, ", server from layer ", best.split);
  }
  const std::string sent = best.split == n ? "nothing sent"
                                           : absl::StrFormat("%.1f bytes/sample, %.1f%% offloaded",
                                                             best.bytes, 100 * best.offload_share);
  absl::StrAppend(&out, "best split: ", best.split, " (", where, "; expected ",
                  FormatMs(best.expected_ms), " ms, ", sent, "; objective ",
                  PlanObjectiveName(plan.objective), ")\n");
  if (!plan.bound_met) {
    absl::StrAppend(&out,
                    "note: no split meets the latency bound; this is the lowest-latency split\n");
  }
  return out;
}

std::string PlanToJson(const Plan& plan) {
  nlohmann::json candidates = nlohmann::json::array();
  for (const SplitCandidate& c : plan.candidates) {
    candidates.push_back({{"split", c.split},
                          {"expected_ms", c.expected_ms},
                          {"bytes", c.bytes},
                          {"offload_share", c.offload_share},
                          {"device_ms", c.device_ms},
                          {"link_ms", c.link_ms},
                          {"server_ms", c.server_ms},
                          {"tensor_bytes", c.tensor_bytes}});
  }
  nlohmann::json j = {{"best_split", plan.best_split},
                      {"objective", PlanObjectiveName(plan.objective)},
                      {"bandwidth_mbps", plan.link.bandwidth_mbps},
                      {"rtt_ms", plan.link.rtt_ms},
                      {"wire", plan.wire},
                      {"bound_met", plan.bound_met},
                      {"candidates", std::move(candidates)}};
  return j.dump();
}

std::string PlotPlansSvg(const std::vector<std::pair<std::string, Plan>>& series,
                         const std::string& title) {
  constexpr double kWidth = 860, kHeight = 480;
  constexpr double kLeft = 80, kRight = 640, kTop = 50, kBottom = 420;  // plot area
  constexpr const char* kColours[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                      "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  constexpr int kNumColours = sizeof(kColours) / sizeof(kColours[0]);

  int max_split = 1;
  double y_min = std::numeric_limits<double>::infinity(), y_max = 0;
  for (const auto& [label, plan] : series) {
    max_split = std::max(max_split, static_cast<int>(plan.candidates.size()) - 1);
    for (const SplitCandidate& c : plan.candidates) {
      if (!std::isfinite(c.expected_ms)) continue;
      y_max = std::max(y_max, c.expected_ms);
      if (c.expected_ms > 0) y_min = std::min(y_min, c.expected_ms);
    }
  }
  // A log axis only pays off when slow links dwarf the rest; otherwise a
  // linear axis from 0 keeps differences between splits readable.
  const bool log_scale = std::isfinite(y_min) && y_max / y_min > 50;
  double axis_lo = 0, axis_hi = 1;
  std::vector<double> y_ticks;
  if (log_scale) {
    const int lo_exp = static_cast<int>(std::floor(std::log10(y_min)));
    int hi_exp = static_cast<int>(std::ceil(std::log10(y_max)));
    if (hi_exp <= lo_exp) hi_exp = lo_exp + 1;
    axis_lo = std::pow(10.0, lo_exp);
    axis_hi = std::pow(10.0, hi_exp);
    for (int e = lo_exp; e <= hi_exp; ++e) y_ticks.push_back(std::pow(10.0, e));
  } else {
    const double step = y_max > 0 ? NiceStep(y_max / 5) : 0.2;
    const int steps = std::max(1, static_cast<int>(std::ceil(y_max / step - 1e-9)));
    axis_hi = steps * step;
    for (int k = 0; k <= steps; ++k) y_ticks.push_back(k * step);
  }
  auto x_of = [&](double split) { return kLeft + (kRight - kLeft) * split / max_split; };
  auto y_of = [&](double ms) {
    const double f = log_scale ? (std::log10(std::max(ms, axis_lo)) - std::log10(axis_lo)) /
                                     (std::log10(axis_hi) - std::log10(axis_lo))
                               : (ms - axis_lo) / (axis_hi - axis_lo);
    return kBottom - (kBottom - kTop) * f;
  };

  std::string svg = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
      "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
      kWidth, kHeight, kWidth, kHeight);
  absl::StrAppendFormat(
      &svg, "<text x=\"%.1f\" y=\"28\" text-anchor=\"middle\" font-size=\"16\">%s</text>\n",
      kWidth / 2, EscapeXml(title));

  // Grid, ticks and tick labels.
  for (double t : y_ticks) {
    const double y = y_of(t);
    absl::StrAppendFormat(
        &svg,
        "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#dddddd\"/>\n"
        "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n"
        "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
        kLeft, y, kRight, y, kLeft - 5, y, kLeft, y, kLeft - 8, y + 4, absl::StrFormat("%g", t));
  }
  const int x_step = std::max(1, (max_split + 19) / 20);
  for (int s = 0; s <= max_split; s += x_step) {
    const double x = x_of(s);
    absl::StrAppendFormat(
        &svg,
        "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n"
        "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%d</text>\n",
        x, kBottom, x, kBottom + 5, x, kBottom + 19, s);
  }
  absl::StrAppendFormat(
      &svg,
      "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n"
      "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n",
      kLeft, kBottom, kRight, kBottom, kLeft, kTop, kLeft, kBottom);
  absl::StrAppendFormat(&svg,
                        "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">split (0 = all on "
                        "server, %d = all on device)</text>\n",
                        (kLeft + kRight) / 2, kBottom + 40, max_split);
  absl::StrAppendFormat(&svg,
                        "<text x=\"20\" y=\"%.1f\" text-anchor=\"middle\" "
                        "transform=\"rotate(-90 20 %.1f)\">expected latency (ms%s)</text>\n",
                        (kTop + kBottom) / 2, (kTop + kBottom) / 2, log_scale ? ", log scale" : "");

  // One line per series, its best split circled, and its legend entry.
  for (size_t k = 0; k < series.size(); ++k) {
    const auto& [label, plan] = series[k];
    const char* colour = kColours[k % kNumColours];
    // Past ten series the colours repeat; a dash pattern tells them apart.
    const std::string dash =
        k < static_cast<size_t>(kNumColours) ? "" : " stroke-dasharray=\"6 3\"";
    std::vector<std::string> points;
    for (const SplitCandidate& c : plan.candidates) {
      if (!std::isfinite(c.expected_ms)) continue;
      points.push_back(absl::StrFormat("%.1f,%.1f", x_of(c.split), y_of(c.expected_ms)));
    }
    absl::StrAppendFormat(&svg,
                          "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s "
                          "points=\"%s\"/>\n",
                          colour, dash, absl::StrJoin(points, " "));
    const bool has_best = plan.best_split >= 0 &&
                          plan.best_split < static_cast<int>(plan.candidates.size()) &&
                          std::isfinite(plan.best().expected_ms);
    if (has_best) {
      absl::StrAppendFormat(
          &svg, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"%s\" stroke=\"black\"/>\n",
          x_of(plan.best_split), y_of(plan.best().expected_ms), colour);
    }
    const double ly = kTop + 10 + 20 * k;
    absl::StrAppendFormat(&svg,
                          "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                          "stroke-width=\"2\"%s/>\n"
                          "<text x=\"%.1f\" y=\"%.1f\">%s%s</text>\n",
                          kRight + 20, ly, kRight + 45, ly, colour, dash, kRight + 52, ly + 4,
                          EscapeXml(label),
                          has_best ? absl::StrCat(" (best ", plan.best_split, ")") : "");
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace eenn::common
