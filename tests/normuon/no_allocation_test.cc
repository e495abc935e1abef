// docs/ARCHITECTURE.md section 5: once finalized, a step allocates nothing. This binary counts every
// operator new of the process (the library's C++ allocations go through it) and checks that a
// step, with each schedule, on one rank and on in-process ranks, performs none after the first.
#include <atomic>
#include <cstdlib>
#include <new>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "normuon/comm.h"
#include "normuon/normuon.h"

namespace {
std::atomic<long> g_allocations{0};
std::atomic<bool> g_counting{false};
}  // namespace

void* operator new(std::size_t n) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1);
  void* p = std::malloc(n == 0 ? 1 : n);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void* operator new[](std::size_t n) { return operator new(n); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace {

struct Rank {
  normuon_runtime_t rt = 0;
  std::vector<std::vector<float>> params, grads;
};

// Registers a small model (two same-shape matrices, a tall, a wide one, a bias) on one rank.
void RegisterModel(Rank* r, const normuon_config_t& c, normuon_comm_t comm, int rank, int world) {
  ASSERT_EQ(normuon_create(&c, comm, &r->rt), NORMUON_SUCCESS) << normuon_last_error(0);
  const struct {
    const char* name;
    int64_t rows, cols;
    bool matrix;
  } specs[] = {{"a", 24, 16, true}, {"b", 24, 16, true}, {"tall", 40, 8, true},
               {"wide", 8, 40, true}, {"bias", 24, 1, false}};
  for (const auto& s : specs) {
    const int64_t chunk = (s.rows + world - 1) / world;
    const int64_t begin = std::min<int64_t>(s.rows, chunk * rank);
    const int64_t count = std::min<int64_t>(s.rows, chunk * (rank + 1)) - begin;
    r->params.emplace_back(static_cast<size_t>(count * s.cols + 1), 0.01f);
    r->grads.emplace_back(static_cast<size_t>(count * s.cols + 1), 0.5f);
    normuon_param_desc_t d;
    normuon_param_desc_init(&d);
    d.name = s.name;
    d.rows = s.rows;
    d.cols = s.cols;
    d.row_begin = begin;
    d.row_count = count;
    d.param = r->params.back().data();
    d.grad = r->grads.back().data();
    d.group = s.matrix ? NORMUON_GROUP_MATRIX_DEFAULT : NORMUON_GROUP_ADAMW_DEFAULT;
    // "wide" as two pieces of this rank, the column halves of its rows (desc.pieces), so that
    // the per-part work and the column-split exchange are counted too.
    normuon_piece_t halves[2];
    if (std::string(s.name) == "wide") {
      for (int h = 0; h < 2; ++h) {
        halves[h] = {begin, count, h * s.cols / 2, s.cols / 2, s.cols,
                     r->params.back().data() + h * s.cols / 2,
                     r->grads.back().data() + h * s.cols / 2};
      }
      d.row_begin = d.row_count = 0;
      d.param = nullptr;
      d.grad = nullptr;
      d.pieces = halves;
      d.num_pieces = 2;
    }
    normuon_param_t id;
    ASSERT_EQ(s.matrix ? normuon_register_matrix(r->rt, &d, &id)
                       : normuon_register_adamw(r->rt, &d, &id),
              NORMUON_SUCCESS)
        << normuon_last_error(r->rt);
  }
}

// (schedule, ns_method)
class NoAllocationTest
    : public ::testing::TestWithParam<std::tuple<normuon_schedule_t, normuon_ns_method_t>> {};

TEST_P(NoAllocationTest, AStepOnOneRankAllocatesNothing) {
  normuon_config_t c;
  normuon_config_init(&c);
  c.schedule = std::get<0>(GetParam());
  c.ns_method = std::get<1>(GetParam());
  c.check_finite = 1;
  Rank r;
  RegisterModel(&r, c, 0, 0, 1);
  ASSERT_EQ(normuon_finalize(r.rt), NORMUON_SUCCESS);
  ASSERT_EQ(normuon_step(r.rt, 0.02f, 0.01f, nullptr), NORMUON_SUCCESS);  // warm-up
  g_allocations = 0;
  g_counting = true;
  for (int s = 0; s < 3; ++s) ASSERT_EQ(normuon_step(r.rt, 0.02f, 0.01f, nullptr), NORMUON_SUCCESS);
  g_counting = false;
  EXPECT_EQ(g_allocations.load(), 0);
  normuon_destroy(r.rt);
}

TEST_P(NoAllocationTest, AStepOnInProcessRanksAllocatesNothing) {
  constexpr int kWorld = 3;
  normuon_config_t c;
  normuon_config_init(&c);
  c.schedule = std::get<0>(GetParam());
  c.ns_method = std::get<1>(GetParam());
  c.bucket_bytes = 1024;
  std::vector<normuon_comm_t> comms(kWorld);
  ASSERT_EQ(normuon_comm_create_inprocess_group(kWorld, 20.0, comms.data()), NORMUON_SUCCESS);
  std::vector<Rank> ranks(kWorld);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int k = 0; k < kWorld; ++k) {
    threads.emplace_back([&, k] {
      RegisterModel(&ranks[k], c, comms[k], k, kWorld);
      if (normuon_finalize(ranks[k].rt) != NORMUON_SUCCESS ||
          normuon_step(ranks[k].rt, 0.02f, 0.01f, nullptr) != NORMUON_SUCCESS) {
        ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  threads.clear();
  ASSERT_EQ(failures.load(), 0);
  // The threads start first (creating a std::thread allocates) and wait; counting covers the
  // steps only.
  std::atomic<bool> go{false};
  for (int k = 0; k < kWorld; ++k) {
    threads.emplace_back([&, k] {
      while (!go.load()) std::this_thread::yield();
      for (int s = 0; s < 3; ++s) {
        if (normuon_step(ranks[k].rt, 0.02f, 0.01f, nullptr) != NORMUON_SUCCESS) ++failures;
      }
    });
  }
  g_allocations = 0;
  g_counting = true;
  go = true;
  for (auto& t : threads) t.join();
  g_counting = false;
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(g_allocations.load(), 0);
  for (Rank& r : ranks) normuon_destroy(r.rt);
  for (normuon_comm_t cm : comms) normuon_comm_destroy(cm);
}

// AdaMuon on column pieces (two TP ranks, each holding half the columns of two matrices): the v
// messages, the owner's whole v and the pieces' own v_new were all sized at finalize.
TEST_P(NoAllocationTest, AnAdaMuonStepOnColumnPiecesAllocatesNothing) {
  constexpr int kWorld = 2;
  normuon_config_t c;
  normuon_config_init(&c);
  c.schedule = std::get<0>(GetParam());
  c.ns_method = std::get<1>(GetParam());
  c.variant = NORMUON_VARIANT_ADAMUON;
  c.bucket_bytes = 256;
  std::vector<normuon_comm_t> comms(kWorld);
  ASSERT_EQ(normuon_comm_create_inprocess_group(kWorld, 20.0, comms.data()), NORMUON_SUCCESS);
  std::vector<Rank> ranks(kWorld);
  std::atomic<int> failures{0};
  std::atomic<bool> go{false};
  std::atomic<int> warmed{0};
  std::vector<std::thread> threads;
  for (int k = 0; k < kWorld; ++k) {
    threads.emplace_back([&, k] {
      Rank& r = ranks[k];
      if (normuon_create(&c, comms[k], &r.rt) != NORMUON_SUCCESS) {
        ++failures;
        ++warmed;
        return;
      }
      const char* names[2] = {"w0", "w1"};
      r.params.assign(2, std::vector<float>(12 * 5, 0.01f));
      r.grads.assign(2, std::vector<float>(12 * 5, 0.5f));
      for (int i = 0; i < 2; ++i) {
        for (size_t e = 0; e < r.grads[i].size(); ++e) r.grads[i][e] = 0.01f * ((e * 7 + k) % 13);
        normuon_param_desc_t d;
        normuon_param_desc_init(&d);
        d.name = names[i];
        d.rows = 12;
        d.cols = 10;
        d.row_count = 12;
        d.col_begin = 5 * k;
        d.col_count = 5;
        d.param = r.params[i].data();
        d.grad = r.grads[i].data();
        normuon_param_t id;
        if (normuon_register_matrix(r.rt, &d, &id) != NORMUON_SUCCESS) ++failures;
      }
      if (normuon_finalize(r.rt) != NORMUON_SUCCESS ||
          normuon_step(r.rt, 0.02f, 0.01f, nullptr) != NORMUON_SUCCESS) {
        ++failures;
      }
      ++warmed;
      while (!go.load()) std::this_thread::yield();
      for (int s = 0; s < 3; ++s) {
        if (normuon_step(r.rt, 0.02f, 0.01f, nullptr) != NORMUON_SUCCESS) ++failures;
      }
    });
  }
  // Counting starts once both ranks took their first step (and wait).
  while (warmed.load() < kWorld) std::this_thread::yield();
  g_allocations = 0;
  g_counting = true;
  go = true;
  for (auto& t : threads) t.join();
  g_counting = false;
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(g_allocations.load(), 0);
  for (Rank& r : ranks) normuon_destroy(r.rt);
  for (normuon_comm_t cm : comms) normuon_comm_destroy(cm);
}

INSTANTIATE_TEST_SUITE_P(EveryScheduleAndNsMethod, NoAllocationTest,
                         ::testing::Combine(::testing::Values(NORMUON_SCHEDULE_SEQUENTIAL,
                                                              NORMUON_SCHEDULE_PER_MATRIX,
                                                              NORMUON_SCHEDULE_BUCKETED),
                                            ::testing::Values(NORMUON_NS_METHOD_STANDARD,
                                                              NORMUON_NS_METHOD_GRAM)));

}  // namespace
