#include "common/workload.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "tests/file_util.h"

namespace eenn::common {
namespace {

double Mean(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0) / v.size(); }

std::vector<double> Gaps(const std::vector<double>& t) {
  std::vector<double> g;
  for (size_t i = 0; i < t.size(); ++i) g.push_back(t[i] - (i ? t[i - 1] : 0.0));
  return g;
}

TEST(ArrivalSpecTest, ParsesEachKind) {
  auto p = ParseArrivalSpec("poisson:250.5");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->kind, ArrivalSpec::Kind::kPoisson);
  EXPECT_DOUBLE_EQ(p->rate, 250.5);
  EXPECT_DOUBLE_EQ(p->MeanRate(), 250.5);
  auto o = ParseArrivalSpec("onoff:100,10,2,3");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->kind, ArrivalSpec::Kind::kOnOff);
  EXPECT_DOUBLE_EQ(o->rate_on, 100);
  EXPECT_DOUBLE_EQ(o->rate_off, 10);
  EXPECT_DOUBLE_EQ(o->on_s, 2);
  EXPECT_DOUBLE_EQ(o->off_s, 3);
  EXPECT_DOUBLE_EQ(o->MeanRate(), (200.0 + 30.0) / 5.0);
  EXPECT_EQ(o->ToString(), "onoff:100,10,2,3");
}

TEST(ArrivalSpecTest, RefusesBadSpecs) {
  for (const char* bad : {"poisson", "poisson:", "poisson:-3", "poisson:0", "poisson:abc", "onoff:1,2,3",
                          "onoff:1,2,3,x", "onoff:0,0,1,1", "onoff:1,1,0,0", "uniform:3", "trace:/nonexistent/x.csv"}) {
    auto s = ParseArrivalSpec(bad);
    EXPECT_FALSE(s.ok()) << bad;
  }
  auto s = ParseArrivalSpec("onoff:1,2,3,x");
  EXPECT_NE(std::string(s.status().message()).find("OFF_S"), std::string::npos) << s.status();
}

TEST(ArrivalsTest, PoissonMeanRateAndExponentialGaps) {
  ArrivalSpec spec;
  spec.rate = 200;
  const double duration = 200;  // about 40000 arrivals
  const auto t = GenerateArrivals(spec, duration, 7);
  ASSERT_GT(t.size(), 1000u);
  EXPECT_TRUE(std::is_sorted(t.begin(), t.end()));
  EXPECT_GE(t.front(), 0);
  EXPECT_LT(t.back(), duration);
  // Count ~ Poisson(40000): sd 200; 5 sd tolerance.
  EXPECT_NEAR(static_cast<double>(t.size()), spec.rate * duration, 1000);
  const auto g = Gaps(t);
  const double m = Mean(g);
  double var = 0;
  for (double x : g) var += (x - m) * (x - m);
  var /= g.size() - 1;
  EXPECT_NEAR(m, 1 / spec.rate, 0.03 / spec.rate);
  EXPECT_NEAR(std::sqrt(var) / m, 1.0, 0.03);  // coefficient of variation of an exponential
  // Memorylessness: P(gap > 2/rate) = e^-2.
  const double tail = std::count_if(g.begin(), g.end(), [&](double x) { return x > 2 / spec.rate; }) /
                      static_cast<double>(g.size());
  EXPECT_NEAR(tail, std::exp(-2.0), 0.01);
  // Deterministic for a seed, different across seeds.
  EXPECT_EQ(GenerateArrivals(spec, 5, 7), GenerateArrivals(spec, 5, 7));
  EXPECT_NE(GenerateArrivals(spec, 5, 7), GenerateArrivals(spec, 5, 8));
}

TEST(ArrivalsTest, OnOffRatePerPhase) {
  auto spec = ParseArrivalSpec("onoff:400,40,1,3");
  ASSERT_TRUE(spec.ok());
  const double duration = 400;  // 100 periods
  const auto t = GenerateArrivals(*spec, duration, 3);
  int64_t on = 0, off = 0;
  for (double x : t) (std::fmod(x, 4.0) < 1.0 ? on : off)++;
  // Expected 40000 on (sd 200) and 12000 off (sd 110).
  EXPECT_NEAR(on / 100.0, 400.0, 10.0);
  EXPECT_NEAR(off / 300.0, 40.0, 2.0);
  EXPECT_TRUE(std::is_sorted(t.begin(), t.end()));
  // An off phase with rate 0 has no arrivals at all.
  auto silent = ParseArrivalSpec("onoff:100,0,0.5,0.5");
  ASSERT_TRUE(silent.ok());
  for (double x : GenerateArrivals(*silent, 50, 1)) EXPECT_LT(std::fmod(x, 1.0), 0.5) << x;
}

TEST(TraceTest, ParsesSingleColumnAndHeaderedFiles) {
  auto a = ParseArrivalTrace("# comment\n0\n0.5\n\n0.5\n2.25\n", "a.csv");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(*a, (std::vector<double>{0, 0.5, 0.5, 2.25}));
  auto b = ParseArrivalTrace("id,time,size\n1,0.1,9\n2,0.3,9\r\n3,1.5,9\n", "b.csv");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(*b, (std::vector<double>{0.1, 0.3, 1.5}));
  auto c = ParseArrivalTrace("T\n1\n2\n", "c.csv");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->size(), 2u);

  eenn::testing::TempDir dir;
  eenn::testing::WriteAll(dir.Join("t.csv"), "t\n0.25\n0.75\n1.5\n");
  auto spec = ParseArrivalSpec("trace:" + dir.Join("t.csv"));
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->kind, ArrivalSpec::Kind::kTrace);
  EXPECT_DOUBLE_EQ(spec->MeanRate(), 2.0);
  EXPECT_EQ(GenerateArrivals(*spec, 0, 1), (std::vector<double>{0.25, 0.75, 1.5}));
  EXPECT_EQ(GenerateArrivals(*spec, 1.0, 1), (std::vector<double>{0.25, 0.75}));
}

TEST(TraceTest, BadLinesNameTheLine) {
  struct Case {
    const char* text;
    const char* expect;
  } cases[] = {
      {"0\n1\nabc\n", "x.csv line 3: 'abc' is not a time"},
      {"0\n# c\n2\n1\n", "x.csv line 4: arrival time 1 is before the previous one"},
      {"0\n-1\n", "x.csv line 2: arrival time -1 is negative"},
      {"id,size\n1,2\n", "x.csv line 1: header 'id,size' has no column named t or time"},
      {"id,t\n1,0.5\n2\n", "x.csv line 3: '2' has no column 2"},
      {"t\n0.5\nnan\n", "x.csv line 3"},
      {"# nothing\n\n", "x.csv: no arrival times"},
  };
  for (const auto& c : cases) {
    auto r = ParseArrivalTrace(c.text, "x.csv");
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_NE(std::string(r.status().message()).find(c.expect), std::string::npos)
        << "got: " << r.status().message() << "\nwanted: " << c.expect;
  }
}

RequestRecord Rec(double t, RequestOutcome o, double lat = 0, bool labelled = false, bool correct = false) {
  RequestRecord r;
  r.arrival_s = t;
  r.outcome = o;
  r.latency_ms = lat;
  r.labelled = labelled;
  r.correct = correct;
  return r;
}

TEST(WindowsTest, AggregatesByArrivalTime) {
  using O = RequestOutcome;
  std::vector<RequestRecord> recs = {
      // window [0, 1): 4 answered in time (3 labelled, 2 correct), 1 late, 1 rejected
      Rec(0.0, O::kAnswered, 10, true, true), Rec(0.2, O::kAnswered, 20, true, false),
      Rec(0.4, O::kAnswered, 30, true, true), Rec(0.5, O::kAnswered, 40), Rec(0.6, O::kAnswered, 150),
      Rec(0.9, O::kRejected),
      // window [1, 2): 1 deadline, 1 failed, 1 rejected, 1 answered
      Rec(1.0, O::kDeadline), Rec(1.5, O::kFailed), Rec(1.7, O::kRejected), Rec(1.99, O::kAnswered, 5),
      // window [2, 2.5): nothing
      // at/after the duration: into the last window
      Rec(2.6, O::kRejected)};
  const auto w = AggregateWindows(recs, 1.0, 2.5, 100.0);
  ASSERT_EQ(w.size(), 3u);
  EXPECT_DOUBLE_EQ(w[0].start_s, 0);
  EXPECT_DOUBLE_EQ(w[0].end_s, 1);
  EXPECT_EQ(w[0].arrivals, 6);
  EXPECT_EQ(w[0].answered, 4);
  EXPECT_EQ(w[0].missed, 1);  // the 150 ms answer is past the 100 ms deadline
  EXPECT_EQ(w[0].rejected, 1);
  EXPECT_EQ(w[0].replies, 5);
  EXPECT_DOUBLE_EQ(w[0].LossRatio(), 2.0 / 6.0);
  EXPECT_EQ(w[0].labelled, 3);
  EXPECT_DOUBLE_EQ(w[0].Accuracy(), 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(w[0].p50_ms, 30);   // nearest rank of {10,20,30,40,150}
  EXPECT_DOUBLE_EQ(w[0].p99_ms, 150);
  EXPECT_EQ(w[1].arrivals, 4);
  EXPECT_EQ(w[1].answered, 1);
  EXPECT_EQ(w[1].missed, 1);
  EXPECT_EQ(w[1].failed, 1);
  EXPECT_EQ(w[1].rejected, 1);
  EXPECT_DOUBLE_EQ(w[1].LossRatio(), 0.5);  // failures are not losses
  EXPECT_LT(w[1].Accuracy(), 0);            // nothing labelled
  EXPECT_DOUBLE_EQ(w[2].start_s, 2);
  EXPECT_DOUBLE_EQ(w[2].end_s, 2.5);
  EXPECT_EQ(w[2].arrivals, 1);
  EXPECT_DOUBLE_EQ(w[2].LossRatio(), 1.0);

  const WindowStats all = AggregateAll(recs, 2.5, 100.0);
  EXPECT_EQ(all.arrivals, 11);
  EXPECT_EQ(all.answered + all.rejected + all.missed + all.failed, all.arrivals);
  EXPECT_DOUBLE_EQ(all.LossRatio(), (3.0 + 2.0) / 11.0);
  int64_t sum = 0;
  for (const auto& x : w) sum += x.arrivals;
  EXPECT_EQ(sum, all.arrivals);

  const std::string csv = WindowsCsv(w);
  EXPECT_EQ(csv.substr(0, csv.find('\n')),
            "start_s,end_s,arrivals,answered,rejected,missed,failed,loss_ratio,accuracy,labelled,p50_ms,p99_ms");
  EXPECT_NE(csv.find("\n0,1,6,4,1,1,0,0.333333,0.666667,3,30.0000,150.0000\n"), std::string::npos) << csv;
  EXPECT_NE(csv.find("\n1,2,4,1,1,1,1,0.500000,,0,5.0000,5.0000\n"), std::string::npos) << csv;
}

TEST(WindowsTest, NoDurationCoversTheLastArrival) {
  std::vector<RequestRecord> recs = {Rec(0.1, RequestOutcome::kAnswered, 1), Rec(3.0, RequestOutcome::kRejected)};
  const auto w = AggregateWindows(recs, 1.0, 0, 1000);
  ASSERT_EQ(w.size(), 4u);
  EXPECT_EQ(w[3].arrivals, 1);
  EXPECT_EQ(w[3].rejected, 1);
  EXPECT_TRUE(AggregateWindows({}, 1.0, 0, 1000).empty());
}

}  // namespace
}  // namespace eenn::common
