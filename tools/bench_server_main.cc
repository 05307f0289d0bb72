// eenn-bench-server: offload throughput and gRPC overhead of a running
// eenn-server, as N concurrent devices see it.
//
//   eenn-bench-server --server 127.0.0.1:50051 --bundle models/cifar10-resnet18
//       --images ../shared/datasets/cifar10/test --split 5 --concurrency 1,4,16
//
// The split tensors are real: the bundle's first `split` layers run locally
// (exits off) on --samples images, and each tensor is encoded once. Then, for
// each concurrency level, that many devices (threads, each with its own
// connection) send closed-loop unary Resume calls of one sample for
// --seconds after --warmup_s. Per level: samples/s; the RPC time; the
// server's own time (decode + queue + compute, from the reply's timings); and
// the gRPC overhead per offload = RPC time - server time (serialisation,
// transport and scheduling on both ends).
//
// Prints one JSON object: {"split", "encoding", "bytes_per_offload",
// "levels": [{"concurrency", "samples", "seconds", "samples_per_s",
// "rpc_ms", "server_ms", "overhead_ms", "batch_size_mean", "errors"}]},
// each *_ms a statistics object (mean, p50, p90, p99, ...).
#include <grpcpp/grpcpp.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/bundle.h"
#include "common/cli.h"
#include "common/image.h"
#include "common/profile.h"
#include "common/tls_flags.h"
#include "common/tensor_codec.h"
#include "common/tensor_image.h"
#include "common/threads.h"
#include "proto/eenn.grpc.pb.h"
#include "proto/wire.h"

ABSL_FLAG(std::string, server, "", "eenn-server address (host:port).");
ABSL_FLAG(std::string, bundle, "", "The server's bundle: the split tensors are computed from it.");
ABSL_FLAG(std::string, images, "", "Images (files or folders) for the split tensors.");
ABSL_FLAG(int, samples, 64, "Distinct split tensors (images used).");
ABSL_FLAG(int, split, 5, "Split layer: the server resumes here.");
ABSL_FLAG(std::string, encoding, "fp32", "Wire encoding: fp32, fp16 or int8.");
ABSL_FLAG(std::string, compression, "none", "none or zstd.");
ABSL_FLAG(std::string, concurrency, "1,4,16", "Concurrent devices, one level per entry.");
ABSL_FLAG(double, seconds, 5, "Measured seconds per level.");
ABSL_FLAG(double, warmup_s, 1, "Unmeasured seconds before each level.");
ABSL_FLAG(int, threads, 1, "LibTorch threads for computing the split tensors.");

namespace {

using Clock = std::chrono::steady_clock;

int Fail(const std::string& what) {
  std::cerr << "eenn-bench-server: " << what << "\n";
  return 2;
}

struct Sample {
  double rpc_ms, server_ms;
  int batch_size;
};

}  // namespace

int main(int argc, char** argv) {
  eenn::common::ParseFlags(argc, argv,
      "Offload throughput and gRPC overhead of a running eenn-server.\n"
      "  eenn-bench-server --server HOST:PORT --bundle DIR --images DIR [--split K]");
  if (absl::GetFlag(FLAGS_server).empty() || absl::GetFlag(FLAGS_bundle).empty() ||
      absl::GetFlag(FLAGS_images).empty()) {
    return Fail("usage: eenn-bench-server --server HOST:PORT --bundle DIR --images DIR [--split K]");
  }
  eenn::common::ConfigureAllocator();
  if (auto s = eenn::common::ConfigureThreads({absl::GetFlag(FLAGS_threads), 1}); !s.ok()) {
    return Fail(s.ToString());
  }
  auto bundle = eenn::common::LoadBundle(absl::GetFlag(FLAGS_bundle));
  if (!bundle.ok()) return Fail(bundle.status().ToString());
  const int split = absl::GetFlag(FLAGS_split);
  if (split < 1 || split >= bundle->model->num_layers()) {
    return Fail(absl::StrCat("--split must be in [1, ", bundle->model->num_layers(), ")"));
  }
  auto enc = eenn::common::ParseEncoding(absl::GetFlag(FLAGS_encoding));
  if (!enc.ok()) return Fail(enc.status().ToString());
  auto comp = eenn::common::ParseCompression(absl::GetFlag(FLAGS_compression));
  if (!comp.ok()) return Fail(comp.status().ToString());
  std::vector<int> levels;
  for (absl::string_view c : absl::StrSplit(absl::GetFlag(FLAGS_concurrency), ',', absl::SkipEmpty())) {
    int v = 0;
    if (!absl::SimpleAtoi(c, &v) || v < 1) return Fail("--concurrency: positive integers, comma-separated");
    levels.push_back(v);
  }

  // Real split tensors, encoded once.
  auto files = eenn::common::ListImageFiles({absl::GetFlag(FLAGS_images)});
  if (!files.ok()) return Fail(files.status().ToString());
  if (files->empty()) return Fail("no images under --images");
  const size_t want = static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_samples)));
  const size_t stride = std::max<size_t>(1, files->size() / want);  // spread over the classes
  std::vector<eenn::v1::ResumeRequest> requests;
  eenn::common::ExitPolicy off = bundle->policy;
  off.thresholds.assign(off.thresholds.size(), -1.0f);
  int64_t bytes = 0;
  for (size_t i = 0; i < files->size() && requests.size() < want; i += stride) {
    auto img = eenn::common::ReadImageFile((*files)[i]);
    if (!img.ok()) return Fail(img.status().ToString());
    auto x = eenn::common::ImagesToTensor({*img}, bundle->manifest.input);
    if (!x.ok()) return Fail(x.status().ToString());
    auto part = bundle->model->Run(*x, 0, split, off);
    if (!part.ok()) return Fail(part.status().ToString());
    torch::Tensor t = part->pending_input.contiguous();
    std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
    auto e = eenn::common::EncodeTensor(t.data_ptr<float>(), shape, {*enc, *comp});
    if (!e.ok()) return Fail(e.status().ToString());
    eenn::v1::ResumeRequest req;
    req.set_model_name(bundle->manifest.model_name);
    req.set_model_version(bundle->manifest.model_version);
    req.set_split_layer(split);
    eenn::wire::ToProto(*std::move(e), req.mutable_tensor());
    bytes += req.tensor().data().size();
    requests.push_back(std::move(req));
  }

  nlohmann::json out = {{"split", split},
                        {"encoding", absl::GetFlag(FLAGS_encoding)},
                        {"compression", absl::GetFlag(FLAGS_compression)},
                        {"bytes_per_offload", static_cast<double>(bytes) / requests.size()},
                        {"levels", nlohmann::json::array()}};
  const eenn::common::TlsOptions tls = eenn::common::TlsFromFlags();
  for (int level : levels) {
    std::vector<std::unique_ptr<eenn::v1::OffloadService::Stub>> stubs;
    for (int d = 0; d < level; ++d) {
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // one connection per device
      args.SetMaxSendMessageSize(64 << 20);
      auto credentials = eenn::common::MakeChannelCredentials(tls, &args);
      if (!credentials.ok()) return Fail(credentials.status().ToString());
      stubs.push_back(eenn::v1::OffloadService::NewStub(
          grpc::CreateCustomChannel(absl::GetFlag(FLAGS_server), *credentials, args)));
    }
    std::atomic<bool> measuring{false}, stop{false};
    std::atomic<int64_t> errors{0};
    std::mutex mu;
    std::vector<Sample> samples;
    std::vector<std::thread> devices;
    for (int d = 0; d < level; ++d) {
      devices.emplace_back([&, d] {
        std::vector<Sample> mine;
        size_t next = static_cast<size_t>(d);
        while (!stop.load()) {
          const eenn::v1::ResumeRequest& req = requests[next++ % requests.size()];
          grpc::ClientContext ctx;
          ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
          eenn::v1::ResumeReply reply;
          const auto t0 = Clock::now();
          grpc::Status s = stubs[d]->Resume(&ctx, req, &reply);
          const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
          if (!s.ok()) {
            errors.fetch_add(1);
            continue;
          }
          if (measuring.load()) {
            const auto& t = reply.timings();
            mine.push_back({ms, (t.decode_us() + t.queue_us() + t.compute_us()) / 1000.0,
                            t.batch_size()});
          }
        }
        std::lock_guard<std::mutex> lock(mu);
        samples.insert(samples.end(), mine.begin(), mine.end());
      });
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(absl::GetFlag(FLAGS_warmup_s)));
    errors.store(0);
    measuring.store(true);
    const auto start = Clock::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(absl::GetFlag(FLAGS_seconds)));
    measuring.store(false);
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    stop.store(true);
    for (auto& t : devices) t.join();
    std::vector<double> rpc, server, overhead;
    double batch_sum = 0;
    for (const Sample& s : samples) {
      rpc.push_back(s.rpc_ms);
      server.push_back(s.server_ms);
      overhead.push_back(s.rpc_ms - s.server_ms);
      batch_sum += s.batch_size;
    }
    auto stats = [](const std::vector<double>& v) {
      const auto s = eenn::common::ComputeTimeStats(v);
      return nlohmann::json{{"n", s.n},     {"mean", s.mean}, {"p50", s.p50}, {"p90", s.p90},
                            {"p99", s.p99}, {"min", s.min},   {"max", s.max}};
    };
    out["levels"].push_back({{"concurrency", level},
                             {"samples", samples.size()},
                             {"seconds", secs},
                             {"samples_per_s", samples.size() / secs},
                             {"rpc_ms", stats(rpc)},
                             {"server_ms", stats(server)},
                             {"overhead_ms", stats(overhead)},
                             {"batch_size_mean", samples.empty() ? 0.0 : batch_sum / samples.size()},
                             {"errors", errors.load()}});
    std::cerr << "concurrency " << level << ": " << samples.size() / secs << " samples/s, "
              << errors.load() << " errors\n";
  }
  std::cout << out.dump() << "\n";
  return 0;
}
