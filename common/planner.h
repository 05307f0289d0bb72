// Split-point planner: expected end-to-end latency of every split of an
// early-exit network between a device and a server, from the two machines'
// profiles, the exit statistics, the link and the wire format. Torch-free.
//
// Split s (0 <= s <= N, N = number of backbone layers): the device runs
// layers [0, s) with the exits among them; a sample no exit took by then is
// sent (the input of layer s) and the server runs layers [s, N) with the
// remaining exits. s = 0 is all-on-server (the preprocessed input is sent),
// s = N is all-on-device (nothing is sent).
//
// Cost model, with share_g the probability of leaving at exit g (layer L_g)
// and reach(i) = 1 - sum of share_g over exits with L_g < i:
//   device  = preprocess + sum_{i<s} reach(i) * dev.layer[i]
//                        + sum_{g: L_g<s} reach(L_g) * dev.head[g]
//   offload = reach(s) for s < N, 0 for s = N
//   link    = offload * (rtt + (bytes(s) + overhead) * 8 / bandwidth
//                        + dev.encode(s) + srv.decode(s) + server_overhead)
//   server  = sum_{i>=s} reach(i) * srv.layer[i] + sum_{g: L_g>=s} reach(L_g) * srv.head[g]
//   expected = device + link + server
// Samples that leave before the split never transmit.
#ifndef EENN_COMMON_PLANNER_H_
#define EENN_COMMON_PLANNER_H_

#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/profile.h"

namespace eenn::common {

struct LinkEstimate {
  double bandwidth_mbps = 100;  // payload rate, Mbit/s (10^6 bit/s)
  double rtt_ms = 1;            // request-reply round trip without payload
  double overhead_bytes = 300;  // per offload: protobuf, gRPC and HTTP/2 framing, both ways
};

enum class PlanObjective {
  kLatency,        // minimise expected end-to-end latency
  kBytes,          // minimise expected bytes sent, subject to latency_bound_ms
  kDeviceCompute,  // minimise expected device compute, subject to latency_bound_ms
};
absl::StatusOr<PlanObjective> ParsePlanObjective(const std::string& name);  // latency|bytes|device_compute
std::string PlanObjectiveName(PlanObjective o);

struct PlanOptions {
  std::string wire = "fp32";  // WireKey of the offloaded tensor
  PlanObjective objective = PlanObjective::kLatency;
  double latency_bound_ms = std::numeric_limits<double>::infinity();
  // Per-exit leave probabilities (final exit included, summing to 1);
  // empty = the device profile's measured shares.
  std::vector<double> exit_shares;
  // Extra per-offload server time (queueing, measured live); 0 offline.
  double server_overhead_ms = 0;
  // Scales the server profile's compute (live: measured / profiled); 1 offline.
  double server_speed_factor = 1;
  bool include_preprocess = true;  // add the device's preprocessing time
};

struct SplitCandidate {
  int split = 0;
  double expected_ms = 0;    // device + link + server
  double device_ms = 0;      // expected device compute (with preprocessing when included)
  double link_ms = 0;        // expected transfer, RTT and codec time
  double server_ms = 0;      // expected server compute
  double bytes = 0;          // expected bytes sent per sample (offload share x message)
  double tensor_bytes = 0;   // payload bytes of one offload at this split (0 at s = N)
  double offload_share = 0;  // share of samples sent to the server
  bool within_bound = true;  // expected_ms <= latency_bound_ms
};

struct Plan {
  int best_split = 0;
  // True when some split met the latency bound; otherwise best_split is the
  // lowest-latency split.
  bool bound_met = true;
  PlanObjective objective = PlanObjective::kLatency;
  LinkEstimate link;
  std::string wire;
  std::vector<SplitCandidate> candidates;  // every split 0..N, ascending
  const SplitCandidate& best() const { return candidates.at(best_split); }
};

// InvalidArgument when the profiles describe different models (name,
// version, architecture, layers or exits), the wire key is missing from a
// profile, the shares are malformed (wrong count, negative, not summing to 1
// within 1e-3) or the link is not positive.
absl::StatusOr<Plan> PlanSplits(const Profile& device, const Profile& server, const LinkEstimate& link,
                                const PlanOptions& options);

// The candidate table as text: split, first server layer, expected ms,
// device / link / server ms, bytes per sample, offload share; '*' on the best.
std::string FormatPlanTable(const Plan& plan);

// {"best_split", "objective", "bandwidth_mbps", "rtt_ms", "wire", "bound_met",
//  "candidates": [{"split", "expected_ms", "bytes", "offload_share", "device_ms",
//  "link_ms", "server_ms", "tensor_bytes"}]}
std::string PlanToJson(const Plan& plan);

// SVG line chart of expected latency versus split, one line per plan
// (labelled, e.g. "10 Mbit/s"), with each plan's best split marked.
std::string PlotPlansSvg(const std::vector<std::pair<std::string, Plan>>& series,
                         const std::string& title);

}  // namespace eenn::common

#endif  // EENN_COMMON_PLANNER_H_
