// Histogram bucket boundaries shared by both daemons' Prometheus metrics.
#ifndef EENN_COMMON_LATENCY_BUCKETS_H_
#define EENN_COMMON_LATENCY_BUCKETS_H_

#include <vector>

namespace eenn::common {

// Seconds, 100 us to 10 s, about 2.5x apart: wide enough for one layer on a
// server and for a whole offload over a slow link.
inline std::vector<double> LatencyBucketsSeconds() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,   0.1,     0.25,   0.5,   1.0,    2.5,   5.0,  10.0};
}

}  // namespace eenn::common

#endif  // EENN_COMMON_LATENCY_BUCKETS_H_
