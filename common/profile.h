// A machine's profile of one bundle: per-layer and per-head batch-1 times,
// the size and codec cost of every layer's output under each wire encoding,
// parameter bytes, single-exit latencies and the share of samples leaving at
// each exit. eenn-profile measures it (on the device and on the server side);
// the planner reads it. Torch-free.
//
// profile_summary.json holds the reference implementation's keys (times in
// seconds with its eight statistics) and an "eenn" section with everything
// the planner needs (times in milliseconds, with percentiles). Only the
// "eenn" section is read back.
#ifndef EENN_COMMON_PROFILE_H_
#define EENN_COMMON_PROFILE_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tensor_codec.h"

namespace eenn::common {

// Statistics of a sample of durations. mean/std/var/min/max and
// log_mean/log_std/log_var as the reference computes them (population std
// and var; the logs of values clamped to >= 1e-20), plus percentiles.
struct TimeStats {
  int64_t n = 0;
  double mean = 0, std = 0, var = 0, min = 0, max = 0;
  double log_mean = 0, log_std = 0, log_var = 0;
  double p50 = 0, p90 = 0, p99 = 0;
};
TimeStats ComputeTimeStats(std::vector<double> values);
// The same statistics for values multiplied by `factor` (ms -> s: 1e-3).
TimeStats ScaleTimeStats(const TimeStats& s, double factor);

// "fp32", "fp16", "int8", with "+zstd" when compressed.
std::string WireKey(WireEncoding encoding, WireCompression compression);
// Inverse of WireKey; InvalidArgument for anything else.
absl::StatusOr<std::pair<WireEncoding, WireCompression>> ParseWireKey(const std::string& key);
// Every key WireKey can produce, in a fixed order.
std::vector<std::string> AllWireKeys();

// Cost of shipping one sample's tensor in one wire format.
struct WireCost {
  double bytes = 0;      // mean encoded payload bytes (Tensor.data)
  double encode_ms = 0;  // mean time to encode it on this machine
  double decode_ms = 0;  // mean time to decode it on this machine
};

struct LayerProfile {
  int index = 0;
  std::string class_name;            // e.g. "BasicBlock", "Conv2d"
  std::string key;                   // reference key: layer_<i>_<Class>_<k>
  TimeStats ms;                      // batch-1 execution time
  std::vector<int64_t> output_shape; // one sample's output (C, H, W) or (F)
  int64_t param_bytes = 0;           // parameters and buffers
  std::map<std::string, WireCost> wire;  // cost of sending this layer's output, by WireKey
};

struct HeadProfile {
  int exit_index = 0;
  int layer = 0;    // backbone layer it reads
  std::string key;  // reference key: gate_<g>_layer_<L>_ClassifierHead_1
  TimeStats ms;
};

struct ExitProfile {
  int exit_index = 0;
  int layer = 0;
  float threshold = 0;    // the bundle's threshold when the shares were measured
  TimeStats single_ms;    // single exit: layers 0..layer, the head and argmax
  double share = 0;       // share of calibration samples that leave here
  double accuracy = -1;   // accuracy of the samples leaving here (-1: no labels)
};

struct Profile {
  std::string model_name, model_version, architecture;
  std::string host;     // where it was measured
  int threads = 0;      // intra-op threads used
  std::string created;  // UTC, ISO 8601
  int64_t samples = 0;              // timed samples
  int64_t calibration_samples = 0;  // samples behind the exit shares
  TimeStats preprocess_ms;          // image decode, resize and normalise
  std::vector<int64_t> input_shape;
  int64_t num_classes = 0;
  std::map<std::string, WireCost> input_wire;  // the input tensor (split 0)
  std::vector<LayerProfile> layers;
  std::vector<HeadProfile> heads;
  std::vector<ExitProfile> exits;
  TimeStats full_ms;  // whole network, final exit only
  TimeStats eenn_ms;  // whole network with the bundle's thresholds

  int num_layers() const { return static_cast<int>(layers.size()); }
  // Wire cost of the tensor sent at split s (the input of layer s): the input
  // for s = 0, else layer s-1's output. NotFound for an unknown key or split.
  absl::StatusOr<WireCost> SplitWire(int split, const std::string& wire_key) const;
};

// profile_summary.json: the reference's keys (execution_time, backbone_execution_time,
// backbone_output_memory, gate_execution_time, execution_time_gate_<g>_layer_<L>;
// seconds, bytes) and the "eenn" section.
std::string ProfileToJson(const Profile& p);
// Reads the "eenn" section back. InvalidArgument (naming the field) when it
// is missing or inconsistent.
absl::StatusOr<Profile> ProfileFromJson(const std::string& text);
// NotFound / InvalidArgument with the path in the message.
absl::StatusOr<Profile> ReadProfile(const std::string& path);

}  // namespace eenn::common

#endif  // EENN_COMMON_PROFILE_H_
