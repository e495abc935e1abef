// normuon_memory_required against what the runtime really allocates: the step layout's total
// before finalize must equal the bytes finalize then holds, at world sizes 1-4, on every
// schedule, for even and ragged rows, row blocks, AdamW parameters and every variant's state; and
// the step allocates nothing more.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "comm/inprocess_group.h"
#include "gtest/gtest.h"
#include "runtime/runtime.h"
#include "tests/testing/forwarding_backend.h"
#include "tests/testing/row_layouts.h"

namespace normuon {
namespace {

// The CPU backend, counting the bytes it holds.
class CountingBackend final : public testing::ForwardingBackend {
 public:
  CountingBackend() : ForwardingBackend(MakeCpuBackend()) {}
  absl::StatusOr<void*> Alloc(size_t bytes) override {
    absl::StatusOr<void*> p = inner().Alloc(bytes);
    if (p.ok()) {
      live_ += bytes;
      sizes_.push_back({*p, bytes});
    }
    return p;
  }
  void Free(void* p) override {
    for (auto& [ptr, bytes] : sizes_) {
      if (ptr == p) {
        live_ -= bytes;
        ptr = nullptr;
        break;
      }
    }
    inner().Free(p);
  }
  uint64_t live() const { return live_; }

 private:
  uint64_t live_ = 0;
  std::vector<std::pair<void*, uint64_t>> sizes_;
};

struct Spec {
  const char* name;
  int64_t rows, cols;
  bool matrix;
  std::vector<int64_t> splits;
};

const std::vector<Spec>& Model() {
  static const auto* m = new std::vector<Spec>{
      {"tall", 40, 12, true, {}}, {"bias", 30, 1, false, {}},   {"qkv", 24, 8, true, {8, 8, 8}},
      {"wide", 12, 40, true, {}}, {"sq.a", 16, 16, true, {}},   {"sq.b", 16, 16, true, {}},
      {"row", 1, 9, true, {}},    {"emb", 21, 4, false, {}},
  };
  return *m;
}

struct Outcome {
  uint64_t before = 0, after = 0, held = 0, held_after_steps = 0;
  std::string error;
};

std::vector<Outcome> RunRanks(int world, normuon_schedule_t schedule, normuon_variant_t variant,
                         normuon_neuron_axis_t axis, const testing::Split& split,
                         normuon_ns_method_t ns_method = NORMUON_NS_METHOD_STANDARD,
                         bool strided_pieces = false) {
  absl::StatusOr<std::vector<std::shared_ptr<InProcessRank>>> group =
      CreateInProcessGroup(world, 30.0);
  EXPECT_TRUE(group.ok());
  std::vector<Outcome> out(world);
  auto rank_main = [&](int rank) {
    Outcome& o = out[rank];
    normuon_config_t c;
    normuon_config_init(&c);
    c.schedule = schedule;
    c.bucket_bytes = 1500;
    c.variant = variant;
    c.neuron_axis = axis;
    c.ns_method = ns_method;
    auto backend = std::make_unique<CountingBackend>();
    CountingBackend* counter = backend.get();
    absl::StatusOr<std::unique_ptr<Runtime>> rt = Runtime::Create(c, (*group)[rank], std::move(backend));
    if (!rt.ok()) {
      o.error = std::string(rt.status().message());
      return;
    }
    std::vector<std::vector<float>> p(Model().size()), g(Model().size());
    std::vector<std::vector<normuon_piece_t>> lists(Model().size());
    for (size_t i = 0; i < Model().size(); ++i) {
      const Spec& s = Model()[i];
      if (strided_pieces && s.matrix) {
        // Several pieces (normuon_param_desc_t.pieces): FSDP2's strided rows, pairs of rows
        // dealt to the ranks in turn; "wide" also in column halves (column-split).
        const int64_t halves = s.cols == 40 ? 2 : 1, width = s.cols / halves;
        int64_t elements = 0;
        for (int64_t pair = rank; 2 * pair < s.rows; pair += world) {
          elements += std::min<int64_t>(2, s.rows - 2 * pair) * s.cols;
        }
        p[i] = testing::Random(static_cast<size_t>(std::max<int64_t>(1, elements)), 11 + i, 0.1f);
        g[i] = testing::Random(p[i].size(), 23 + i, 1.0f);
        int64_t at = 0;
        for (int64_t pair = rank; 2 * pair < s.rows; pair += world) {
          const int64_t rows = std::min<int64_t>(2, s.rows - 2 * pair);
          for (int64_t h = 0; h < halves; ++h) {
            lists[i].push_back({2 * pair, rows, h * width, halves > 1 ? width : 0, 0,
                                p[i].data() + at, g[i].data() + at});
            at += rows * width;
          }
        }
        normuon_param_desc_t d;
        normuon_param_desc_init(&d);
        d.name = s.name;
        d.rows = s.rows;
        d.cols = s.cols;
        d.group = NORMUON_GROUP_MATRIX_DEFAULT;
        d.row_splits = s.splits.empty() ? nullptr : s.splits.data();
        d.num_row_splits = static_cast<int32_t>(s.splits.size());
        d.pieces = lists[i].data();
        d.num_pieces = static_cast<int32_t>(lists[i].size());
        absl::StatusOr<int32_t> id = (*rt)->RegisterMatrix(d);
        if (!id.ok()) {
          o.error = std::string(id.status().message());
          return;
        }
        continue;
      }
      const testing::Range r = split(s.rows, world)[rank];
      p[i] = testing::Random(static_cast<size_t>(r.count * s.cols), 11 + i, 0.1f);
      g[i] = testing::Random(static_cast<size_t>(r.count * s.cols), 23 + i, 1.0f);
      normuon_param_desc_t d;
      normuon_param_desc_init(&d);
      d.name = s.name;
      d.rows = s.rows;
      d.cols = s.cols;
      d.row_begin = r.begin;
      d.row_count = r.count;
      d.param = r.count ? p[i].data() : nullptr;
      d.grad = r.count ? g[i].data() : nullptr;
      d.group = s.matrix ? NORMUON_GROUP_MATRIX_DEFAULT : NORMUON_GROUP_ADAMW_DEFAULT;
      d.row_splits = s.splits.empty() ? nullptr : s.splits.data();
      d.num_row_splits = static_cast<int32_t>(s.splits.size());
      absl::StatusOr<int32_t> id = s.matrix ? (*rt)->RegisterMatrix(d) : (*rt)->RegisterAdamW(d);
      if (!id.ok()) {
        o.error = std::string(id.status().message());
        return;
      }
    }
    o.before = (*rt)->MemoryRequired();
    const absl::Status f = (*rt)->Finalize();
    if (!f.ok()) {
      o.error = std::string(f.message());
      return;
    }
    o.after = (*rt)->MemoryRequired();
    o.held = counter->live() + counter->NsWorkspaceHeld();
    for (int s = 0; s < 2; ++s) {
      const absl::Status st = (*rt)->Step(0.02f, 0.01f, nullptr);
      if (!st.ok()) {
        o.error = std::string(st.message());
        return;
      }
    }
    o.held_after_steps = counter->live() + counter->NsWorkspaceHeld();
  };
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) threads.emplace_back(rank_main, r);
  for (std::thread& t : threads) t.join();
  return out;
}

TEST(MemoryQueryTest, TheQueryBeforeFinalizeIsWhatFinalizeAllocatesOnEveryScheduleAndWorld) {
  for (int world = 1; world <= 4; ++world) {
    for (normuon_schedule_t schedule : {NORMUON_SCHEDULE_SEQUENTIAL, NORMUON_SCHEDULE_PER_MATRIX,
                                        NORMUON_SCHEDULE_BUCKETED}) {
      for (const auto& [split, split_name] :
           std::vector<std::pair<testing::Split, const char*>>{{testing::Fsdp2, "fsdp2"},
                                                               {testing::Ragged(3), "ragged"}}) {
        const std::vector<Outcome> out =
            RunRanks(world, schedule, NORMUON_VARIANT_NORMUON, NORMUON_NEURON_ROWS, split);
        for (int r = 0; r < world; ++r) {
          const std::string what = "world " + std::to_string(world) + " schedule " +
                                   std::to_string(schedule) + " " + split_name + " rank " +
                                   std::to_string(r);
          ASSERT_EQ(out[r].error, "") << what;
          EXPECT_GT(out[r].held, 0u) << what;
          EXPECT_EQ(out[r].before, out[r].held) << what;
          EXPECT_EQ(out[r].after, out[r].held) << what;
          EXPECT_EQ(out[r].held_after_steps, out[r].held) << what;
        }
      }
    }
  }
}

TEST(MemoryQueryTest, SeveralPiecesPerRankAreCountedExactly) {
  for (int world = 1; world <= 4; ++world) {
    for (normuon_neuron_axis_t axis : {NORMUON_NEURON_ROWS, NORMUON_NEURON_COLUMNS}) {
      const std::vector<Outcome> out =
          RunRanks(world, NORMUON_SCHEDULE_BUCKETED, NORMUON_VARIANT_NORMUON, axis,
                   testing::Fsdp2, NORMUON_NS_METHOD_STANDARD, /*strided_pieces=*/true);
      for (int r = 0; r < world; ++r) {
        const std::string what = "world " + std::to_string(world) + " axis " +
                                 std::to_string(axis) + " rank " + std::to_string(r);
        ASSERT_EQ(out[r].error, "") << what;
        EXPECT_EQ(out[r].before, out[r].held) << what;
        EXPECT_EQ(out[r].after, out[r].held) << what;
        EXPECT_EQ(out[r].held_after_steps, out[r].held) << what;
      }
    }
  }
}

TEST(MemoryQueryTest, EveryVariantsStateIsCounted) {
  for (const auto& [variant, axis] :
       std::vector<std::pair<normuon_variant_t, normuon_neuron_axis_t>>{
           {NORMUON_VARIANT_ADAMUON, NORMUON_NEURON_ROWS},
           {NORMUON_VARIANT_MUON, NORMUON_NEURON_ROWS},
           {NORMUON_VARIANT_NORMUON, NORMUON_NEURON_COLUMNS}}) {
    const std::vector<Outcome> out =
        RunRanks(3, NORMUON_SCHEDULE_BUCKETED, variant, axis, testing::Fsdp2);
    for (int r = 0; r < 3; ++r) {
      ASSERT_EQ(out[r].error, "") << variant << " rank " << r;
      EXPECT_EQ(out[r].before, out[r].held) << variant << " rank " << r;
      EXPECT_EQ(out[r].after, out[r].held) << variant << " rank " << r;
    }
  }
}

// Gram Newton-Schulz's extra workspace (R, Q, Q', R Z per owned batch's largest shape) is
// allocated at finalize and counted by the query, before and after finalize.
TEST(MemoryQueryTest, GramWorkspaceIsCountedBeforeAndAfterFinalize) {
  for (int world : {1, 3}) {
    const std::vector<Outcome> gram =
        RunRanks(world, NORMUON_SCHEDULE_BUCKETED, NORMUON_VARIANT_NORMUON, NORMUON_NEURON_ROWS,
                 testing::Fsdp2, NORMUON_NS_METHOD_GRAM);
    const std::vector<Outcome> standard =
        RunRanks(world, NORMUON_SCHEDULE_BUCKETED, NORMUON_VARIANT_NORMUON, NORMUON_NEURON_ROWS,
                 testing::Fsdp2);
    uint64_t extra = 0;
    for (int r = 0; r < world; ++r) {
      ASSERT_EQ(gram[r].error, "") << "rank " << r;
      EXPECT_EQ(gram[r].before, gram[r].held) << "world " << world << " rank " << r;
      EXPECT_EQ(gram[r].after, gram[r].held) << "world " << world << " rank " << r;
      EXPECT_EQ(gram[r].held_after_steps, gram[r].held) << "world " << world << " rank " << r;
      EXPECT_GE(gram[r].held, standard[r].held);
      extra += gram[r].held - standard[r].held;
    }
    EXPECT_GT(extra, 0u) << "world " << world;  // some rank owns a rectangular matrix
  }
}

}  // namespace
}  // namespace normuon
