// The orthogonalization's accuracy, Gram against standard Newton-Schulz (issue #14's criteria):
// for every matrix shape of the given model lists (and golden shapes given with --shapes), on a
// Gaussian input and on the adversarial set (tools/common/ns_inputs.h), the relative error of the
// NorMuon update computed from fp32 standard NS and from fp32 Gram NS with each restart choice,
// both against float64 standard NS. Prints one JSON object per line, then a summary: per
// restart choice, the worst Gram/standard error ratio over Gaussian inputs, over adversarial
// inputs, and the worst Gram error.
//
//   bazel run -c opt //bench:gram_accuracy -- --model=gpt2-124m --restarts="none;1;2;1,3"
#include <algorithm>
#include <array>
#include <cstdio>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "kernels/newton_schulz_cpu.h"
#include "tools/common/ns_inputs.h"
#include "tools/model_shapes.h"

ABSL_FLAG(std::vector<std::string>, model, {}, "model shape lists by name (tools/models)");
ABSL_FLAG(std::vector<std::string>, shapes, {}, "more shapes: ROWSxCOLS entries");
ABSL_FLAG(std::string, restarts, "none;1;2;1,3",
          "restart choices separated by ';', each a comma list of 0-based iterations or 'none'");
ABSL_FLAG(std::string, orthogonalizer, "quintic", "quintic or polar_express");
ABSL_FLAG(bool, adversarial, true, "also run the adversarial set on every shape");

namespace {

using normuon_tools::Matrix;

std::vector<std::array<float, 3>> Coefficients(bool polar) {
  return polar ? normuon::PolarExpressCoefficients(5) : normuon::QuinticCoefficients(5);
}

struct Worst {
  double gaussian_ratio = 0.0, adversarial_ratio = 0.0, error = 0.0;
  int fallbacks = 0;
};

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const bool polar = absl::GetFlag(FLAGS_orthogonalizer) == "polar_express";
  if (!polar && absl::GetFlag(FLAGS_orthogonalizer) != "quintic") {
    std::fprintf(stderr, "--orthogonalizer=%s: use quintic or polar_express\n",
                 absl::GetFlag(FLAGS_orthogonalizer).c_str());
    return 2;
  }
  std::set<std::pair<int64_t, int64_t>> shapes;
  for (const std::string& name : absl::GetFlag(FLAGS_model)) {
    auto model = normuon_tools::LoadModel(name, argv[0]);
    if (!model.ok()) {
      std::fprintf(stderr, "--model=%s: %s\n", name.c_str(), model.status().ToString().c_str());
      return 2;
    }
    for (const auto& e : model->entries) {
      if (e.kind == normuon::ParamKind::kMatrix) shapes.insert({e.rows, e.cols});
    }
  }
  for (const std::string& s : absl::GetFlag(FLAGS_shapes)) {
    std::vector<std::string> rc = absl::StrSplit(s, 'x');
    int64_t r = 0, c = 0;
    if (rc.size() != 2 || !absl::SimpleAtoi(rc[0], &r) || !absl::SimpleAtoi(rc[1], &c) || r < 1 ||
        c < 1) {
      std::fprintf(stderr, "--shapes entry '%s' is not ROWSxCOLS\n", s.c_str());
      return 2;
    }
    shapes.insert({r, c});
  }
  if (shapes.empty()) {
    std::fprintf(stderr, "no shapes: give --model and/or --shapes\n");
    return 2;
  }
  std::vector<std::vector<int32_t>> choices;
  for (absl::string_view c : absl::StrSplit(absl::GetFlag(FLAGS_restarts), ';')) {
    std::vector<int32_t> r;
    if (c != "none") {
      for (absl::string_view x : absl::StrSplit(c, ',')) {
        int32_t v = 0;
        if (!absl::SimpleAtoi(x, &v) || v < 1 || v > 4) {
          std::fprintf(stderr, "--restarts: '%s' is not an iteration in [1, 4]\n",
                       std::string(x).c_str());
          return 2;
        }
        r.push_back(v);
      }
    }
    choices.push_back(r);
  }

  normuon::NsCpuOptions standard;
  standard.coefficients = Coefficients(polar);
  standard.ns_eps = polar ? 1e-6f : 1e-7f;
  standard.norm_scale = polar ? 1.02f : 1.0f;
  std::vector<Worst> worst(choices.size());
  normuon::NsCpuWorkspace ws;
  for (const auto& [rows, cols] : shapes) {
    std::vector<normuon_tools::NamedMatrix> inputs;
    inputs.push_back({"gaussian", normuon_tools::GaussianMatrix(rows, cols, 1)});
    if (absl::GetFlag(FLAGS_adversarial)) {
      for (auto& m : normuon_tools::AdversarialMatrices(rows, cols)) inputs.push_back(std::move(m));
    }
    for (const auto& in : inputs) {
      const Matrix& m = in.m;
      const auto update = [&](const std::vector<double>& o) {
        return normuon_tools::NorMuonUpdate(o, rows, cols);
      };
      std::vector<double> ref64(m.v.size());
      normuon::NewtonSchulzCpuF64(m.v.data(), ref64.data(), rows, cols, standard, true);
      const std::vector<double> ref = update(ref64);
      const std::vector<float> u(m.v.begin(), m.v.end());
      std::vector<float> o(u.size());
      normuon::NewtonSchulzCpu(u.data(), o.data(), rows, cols, standard, &ws);
      const double e_std =
          normuon_tools::RelativeError(update(std::vector<double>(o.begin(), o.end())), ref);
      std::vector<std::string> fields;
      for (size_t k = 0; k < choices.size(); ++k) {
        normuon::NsCpuOptions gram = standard;
        gram.method = normuon::NsMethod::kGram;
        gram.restarts = choices[k];
        const normuon::NsFallback why =
            normuon::NewtonSchulzCpu(u.data(), o.data(), rows, cols, gram, &ws);
        const double e =
            normuon_tools::RelativeError(update(std::vector<double>(o.begin(), o.end())), ref);
        const double ratio = e_std > 0.0 ? e / e_std : (e > 0.0 ? 1e30 : 1.0);
        Worst& w = worst[k];
        if (in.name == "gaussian") {
          w.gaussian_ratio = std::max(w.gaussian_ratio, ratio);
        } else {
          w.adversarial_ratio = std::max(w.adversarial_ratio, ratio);
        }
        w.error = std::max(w.error, e);
        w.fallbacks += why != normuon::NsFallback::kNone;
        fields.push_back(absl::StrCat("\"restarts ", absl::StrJoin(choices[k], ","), "\": {\"error\": ",
                                      e, ", \"ratio\": ", ratio, ", \"fallback\": ",
                                      static_cast<int>(why), "}"));
      }
      std::printf("{\"shape\": \"%lldx%lld\", \"input\": \"%s\", \"standard_error\": %.4g, %s}\n",
                  static_cast<long long>(rows), static_cast<long long>(cols), in.name.c_str(),
                  e_std, absl::StrJoin(fields, ", ").c_str());
      std::fflush(stdout);
    }
  }
  std::printf("# %s; worst over %zu shapes\n", polar ? "polar_express" : "quintic", shapes.size());
  std::printf("# restarts | gaussian gram/standard | adversarial gram/standard | worst gram error | "
              "fallbacks\n");
  for (size_t k = 0; k < choices.size(); ++k) {
    std::printf("# %-8s | %.3f | %.3f | %.3g | %d\n",
                choices[k].empty() ? "none" : absl::StrJoin(choices[k], ",").c_str(),
                worst[k].gaussian_ratio, worst[k].adversarial_ratio, worst[k].error,
                worst[k].fallbacks);
  }
  return 0;
}
