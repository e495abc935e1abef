// The run loop of rank_run.h.
#include "tools/run/rank_run.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tools/common/api_calls.h"
#include "tools/common/api_flags.h"
#include "tools/common/model_layout.h"
#include "tools/common/param_buffers.h"
#include "tools/common/random_fill.h"

namespace normuon_tools::run {
namespace {

// The random values of a piece of a rows x cols matrix: row by row, each row's values those a
// rank holding the whole matrix generates there (FillNormal's counter-based stream).
void FillPiece(float* out, const normuon::sharding::PieceRect& p, int64_t cols, float sigma,
               uint64_t seed, uint64_t stream, uint64_t sub) {
  for (int64_t a = 0; a < p.row_count; ++a) {
    FillNormal(out + a * p.col_count, p.col_count, sigma, seed, stream, sub,
               (p.row_begin + a) * cols + p.col_begin);
  }
}

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

void AddPhases(normuon_step_profile_t* into, const normuon_step_profile_t& p) {
  into->total_ms += p.total_ms;
  into->finite_check_ms += p.finite_check_ms;
  into->momentum_ms += p.momentum_ms;
  into->gather_ms += p.gather_ms;
  into->newton_schulz_ms += p.newton_schulz_ms;
  into->scatter_ms += p.scatter_ms;
  into->row_stats_ms += p.row_stats_ms;
  into->update_ms += p.update_ms;
  into->adamw_ms += p.adamw_ms;
  into->exposed_comm_ms += p.exposed_comm_ms;
}

}  // namespace

RankOutcome RunRank(const RankConfig& cfg, normuon_comm_t comm, int rank, int world) {
  RankOutcome out;
  auto fail = [&](const absl::Status& status) {
    out.error = absl::StrCat("rank ", rank, ": ", status.message());
    return out;
  };
  auto api_fail = [&](normuon_runtime_t rt, const char* call, normuon_status_t st) {
    return fail(ApiError(rt, call, st));
  };
  const std::vector<ModelShape>& entries = cfg.model->entries;
  const Clock::time_point setup_start = Clock::now();
  normuon_config_t config;
  normuon_config_init(&config);
  config.backend = cfg.backend;
  config.device = cfg.device;
  config.ns_dtype = cfg.ns_dtype;
  config.ns_method = cfg.ns_method;
  config.ns_symmetric_products = cfg.ns_symmetric_products;
  config.owner_policy = cfg.policy;
  config.schedule = cfg.schedule;
  config.bucket_bytes = cfg.bucket_bytes;
  config.lr = cfg.lr;
  config.weight_decay = cfg.weight_decay;
  normuon_runtime_t rt = 0;
  normuon_status_t st = normuon_create(&config, comm, &rt);
  if (st != NORMUON_SUCCESS) return api_fail(0, "normuon_create", st);
  const RuntimeGuard guard(rt);

  std::vector<std::unique_ptr<ParamBuffers>> buffers;
  // This rank's pieces of each entry (one, or several: --qkv_layout=separate), held back to back.
  std::vector<std::vector<normuon::sharding::PieceRect>> rows(entries.size());
  std::vector<int64_t> held(entries.size(), 0);
  int64_t largest = 1;
  for (size_t i = 0; i < entries.size(); ++i) {
    rows[i] = (*cfg.layout)[i][rank];
    for (const normuon::sharding::PieceRect& p : rows[i]) held[i] += p.row_count * p.col_count;
    largest = std::max(largest, held[i]);
  }
  // Each piece's values, packed, at its place in the entry's buffer.
  const auto fill = [&](float* out, size_t i, float sigma, uint64_t sub) {
    for (const normuon::sharding::PieceRect& p : rows[i]) {
      FillPiece(out, p, entries[i].cols, sigma, cfg.seed, i, sub);
      out += p.row_count * p.col_count;
    }
  };
  std::vector<float> staging(static_cast<size_t>(largest));
  std::vector<normuon_param_t> handles(entries.size(), -1);
  for (size_t i = 0; i < entries.size(); ++i) {
    const ModelShape& e = entries[i];
    const int64_t n = held[i];
    fill(staging.data(), i, 0.02f, 0);
    absl::StatusOr<std::unique_ptr<ParamBuffers>> b =
        ParamBuffers::Make(cfg.backend, cfg.device, n);
    if (!b.ok()) return fail(b.status());
    buffers.push_back(*std::move(b));
    absl::Status ready = buffers[i]->SetParam(staging.data(), n);
    if (ready.ok()) {
      ready = rows[i].size() == 1
                  ? RegisterPiece(rt, e, rows[i][0], buffers[i]->param(), buffers[i]->grad(),
                                  &handles[i])
                  : RegisterPieces(rt, e, rows[i], buffers[i]->param(),
                                   buffers[i]->grad(), &handles[i]);
    }
    if (!ready.ok()) return fail(ready);
  }
  st = normuon_finalize(rt);
  if (st != NORMUON_SUCCESS) return api_fail(rt, "normuon_finalize", st);
  st = normuon_memory_required(rt, &out.state_bytes);
  if (st != NORMUON_SUCCESS) return api_fail(rt, "normuon_memory_required", st);
  out.setup_ms = MsSince(setup_start);
  normuon_step_profile_init(&out.phases);

  const std::vector<int> matrix_entries = MatrixEntries(*cfg.model);
  std::vector<std::string> backward_events;  // this rank's simulated backward, for the trace
  double per_layer_ms = cfg.backward_ms_per_layer;
  const int total_steps = cfg.steps + cfg.overlap_steps;
  for (int s = 0; s < total_steps; ++s) {
    const Clock::time_point gen_start = Clock::now();
    for (size_t i = 0; i < entries.size(); ++i) {
      const int64_t n = held[i];
      if (n == 0) continue;
      // On the CPU the values go straight into the gradient (SetGrad is then a no-op).
      float* dst = buffers[i]->on_device() ? staging.data() : buffers[i]->grad();
      fill(dst, i, 1.0f, static_cast<uint64_t>(s) + 1);
      const absl::Status copied = buffers[i]->SetGrad(dst, n);
      if (!copied.ok()) return fail(copied);
    }
    out.grad_ms += MsSince(gen_start);

    Clock::time_point start = Clock::now();
    if (s >= cfg.steps) {
      // A simulated backward pass: per layer, last first, a timed wait standing for the device
      // work of that layer's backward, then its matrices' gradients are final.
      if (per_layer_ms <= 0.0) {
        double plain = 0.0;
        for (int k = 1; k < cfg.steps; ++k) plain += out.step_ms[k];
        plain = cfg.steps > 1 ? plain / (cfg.steps - 1) : out.step_ms[0];
        per_layer_ms = 2.0 * plain / std::max<size_t>(1, cfg.layers.size());
      }
      backward_events.clear();
      const Clock::time_point backward_start = Clock::now();
      for (const std::vector<int>& layer : cfg.layers) {
        const Clock::time_point t0 = Clock::now();
        std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(per_layer_ms));
        const Clock::time_point t1 = Clock::now();
        backward_events.push_back(absl::StrFormat(
            "{\"name\":\"backward layer\",\"cat\":\"trainer\",\"ph\":\"X\",\"pid\":%d,"
            "\"tid\":3,\"ts\":%.3f,\"dur\":%.3f}",
            rank, std::chrono::duration<double, std::micro>(t0.time_since_epoch()).count(),
            std::chrono::duration<double, std::micro>(t1 - t0).count()));
        std::vector<normuon_param_t> ready;
        for (int k : layer) ready.push_back(handles[matrix_entries[k]]);
        st = normuon_grad_ready(rt, ready.data(), static_cast<int32_t>(ready.size()), nullptr);
        if (st != NORMUON_SUCCESS) return api_fail(rt, "normuon_grad_ready", st);
      }
      out.backward_ms.push_back(MsSince(backward_start));
      start = Clock::now();  // the last gradient is final: what follows is exposed
    }
    st = normuon_step(rt, -1.0f, -1.0f, nullptr);
    if (st != NORMUON_SUCCESS) return api_fail(rt, "normuon_step", st);
    normuon_step_info_t info;
    normuon_step_info_init(&info);
    st = normuon_step_result(rt, &info);
    if (st != NORMUON_SUCCESS) return api_fail(rt, "normuon_step_result", st);
    const double ms = MsSince(start);
    if (s < cfg.steps) {
      out.step_ms.push_back(ms);
    } else {
      out.exposed_ms.push_back(ms);
    }
    if (info.last_skipped) {
      out.error = absl::StrCat("step ", s, " was skipped on rank ", rank);
      return out;
    }
    normuon_step_profile_t prof;
    normuon_step_profile_init(&prof);
    // Phases of the steady steps: step 0 (cuBLAS set-up, first touches) is left out when there
    // are others, as in the steady step time.
    if (s < cfg.steps && (s > 0 || cfg.steps == 1) &&
        normuon_last_step_profile(rt, &prof) == NORMUON_SUCCESS) {
      AddPhases(&out.phases, prof);
      out.have_phases = true;
    }
    if (cfg.verbose) {
      std::printf(s < cfg.steps
                      ? "step %d: %.1f ms\n"
                      : "step %d (overlapped backward): %.1f ms after the last gradient\n",
                  s, ms);
      std::fflush(stdout);
    }
  }
  if (cfg.trace) {
    uint64_t needed = 0;
    if (normuon_last_step_trace(rt, nullptr, 0, &needed) == NORMUON_SUCCESS) {
      std::string trace(needed, '\0');
      st = normuon_last_step_trace(rt, trace.data(), needed, &needed);
      if (st != NORMUON_SUCCESS) return api_fail(rt, "normuon_last_step_trace", st);
      trace.resize(needed - 1);
      out.trace = trace;
      for (const std::string& e : backward_events) absl::StrAppend(&out.trace, ",\n", e);
      if (!backward_events.empty()) {
        absl::StrAppend(&out.trace, ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":", rank,
                        ",\"tid\":3,\"args\":{\"name\":\"backward (simulated)\"}}");
      }
    }
  }

  for (size_t i = 0; i < entries.size(); ++i) {
    const int64_t n = held[i];
    std::vector<float> values(static_cast<size_t>(n));
    const absl::Status copied = buffers[i]->GetParam(values.data(), n);
    if (!copied.ok()) return fail(copied);
    for (float v : values) {
      out.sum += v;
      out.sum_sq += static_cast<double>(v) * v;
    }
    if (cfg.keep_params) out.params.push_back(std::move(values));
  }
  return out;
}

absl::StatusOr<std::vector<RankOutcome>> RunRanks(const RankConfig& cfg, int world) {
  std::vector<RankOutcome> outcomes(world);
  if (world == 1) {
    outcomes[0] = RunRank(cfg, 0, 0, 1);
    return outcomes;
  }
  std::vector<normuon_comm_t> comms(world);
  // CUDA: the ranks share this machine's GPU and the group moves device memory.
  const normuon_status_t st = normuon_comm_create_inprocess_group_ex(
      world, 3600.0,
      cfg.backend == NORMUON_BACKEND_CUDA ? NORMUON_COMM_MEMORY_DEVICE : NORMUON_COMM_MEMORY_HOST,
      comms.data());
  if (st != NORMUON_SUCCESS) {
    return absl::InternalError(
        absl::StrCat("normuon_comm_create_inprocess_group_ex: ", normuon_comm_last_error(0)));
  }
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] { outcomes[r] = RunRank(cfg, comms[r], r, world); });
  }
  for (std::thread& t : threads) t.join();
  for (normuon_comm_t c : comms) normuon_comm_destroy(c);
  return outcomes;
}

absl::StatusOr<double> MaxDifferenceFromOneRank(const RunSetup& setup,
                                                const std::vector<RankOutcome>& outcomes) {
  absl::StatusOr<PieceLists> whole = MegatronPieces(setup.shapes, 1, 1, false);
  if (!whole.ok()) return whole.status();
  RankConfig single = setup.rank;
  single.layout = &*whole;
  single.keep_params = true;
  single.verbose = false;
  single.steps = setup.rank.steps + setup.rank.overlap_steps;  // the same updates
  single.overlap_steps = 0;
  single.trace = false;
  if (setup.check_against == CheckAgainst::kCpu) {
    // The CPU reference in the same Newton-Schulz precision as the run it checks.
    single.backend = NORMUON_BACKEND_CPU;
    single.ns_dtype = EffectiveNsDtype(setup.rank.backend, setup.rank.ns_dtype);
  }
  const RankOutcome ref = RunRank(single, 0, 0, 1);
  if (!ref.error.empty()) return absl::InternalError(ref.error);
  double max_diff = 0.0;
  for (int r = 0; r < setup.ranks; ++r) {
    for (size_t i = 0; i < setup.shapes.entries.size(); ++i) {
      const std::vector<float>& mine = outcomes[r].params[i];
      const int64_t cols = setup.shapes.entries[i].cols;
      int64_t at = 0;  // the pieces lie back to back
      for (const normuon::sharding::PieceRect& p : setup.layout[i][r]) {
        for (int64_t a = 0; a < p.row_count; ++a) {
          for (int64_t b = 0; b < p.col_count; ++b) {
            const float want = ref.params[i][(p.row_begin + a) * cols + p.col_begin + b];
            const float got = mine[at + a * p.col_count + b];
            max_diff = std::max(max_diff, static_cast<double>(std::fabs(got - want)));
          }
        }
        at += p.row_count * p.col_count;
      }
    }
  }
  return max_diff;
}

}  // namespace normuon_tools::run
