// golden_make: writes golden cases for chosen shapes and hyper-parameters, computed by the float64
// re-implementation of the official NorMuon step in golden_reference.h (checked against the
// official reference file by tests/tools/golden_reference_test).
//
//   golden_make --shapes=RxC[,RxC...] [--kind=normuon|adamw] [--steps=N] [--lr=X] [--beta1=X]
//               [--beta2=X] [--weight_decay=X] [--eps=X] [--nesterov=true|false]
//               [--ns_steps=N] [--seed=S] [--prefix=NAME] [--out=FILE]
//
// Each shape becomes one case named PREFIX_KIND_RxC_I (I = its position) with N(0, 0.1)
// parameters and N(0, 1) gradients from --seed; unset hyper-parameters take the reference
// defaults of the kind (normuon: lr 0.02, beta1 0.95; adamw: lr 3e-4, beta1 0.9; both beta2
// 0.95, weight decay 0.01, eps 1e-10). Output goes to --out or stdout; files made by several
// runs can be concatenated when their prefixes differ.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tools/common/enum_flags.h"
#include "tools/golden_format.h"
#include "tools/golden_reference.h"

ABSL_FLAG(std::string, shapes, "", "comma-separated RxC shapes, one case each");
// --kind's flag type: the names of golden_format.h.
namespace normuon_tools {

bool AbslParseFlag(absl::string_view text, GoldenKind* out, std::string* error) {
  constexpr GoldenKind kKinds[] = {GoldenKind::kNormuon, GoldenKind::kAdamw};
  return ParseEnumFlag(text, "kind", kKinds, GoldenKindName, out, error);
}

std::string AbslUnparseFlag(GoldenKind kind) { return GoldenKindName(kind); }

}  // namespace normuon_tools

ABSL_FLAG(normuon_tools::GoldenKind, kind, normuon_tools::GoldenKind::kNormuon,
          "normuon or adamw");
ABSL_FLAG(int, steps, 3, "steps per case");
ABSL_FLAG(double, lr, -1.0, "learning rate (negative: the kind's default)");
ABSL_FLAG(double, beta1, -1.0, "momentum / Adam beta1 (negative: the kind's default)");
ABSL_FLAG(double, beta2, 0.95, "beta2");
ABSL_FLAG(double, weight_decay, 0.01, "decoupled weight decay");
ABSL_FLAG(double, eps, 1e-10, "eps");
ABSL_FLAG(bool, nesterov, true, "Nesterov momentum (normuon)");
ABSL_FLAG(int, ns_steps, 5, "Newton-Schulz iterations (normuon)");
ABSL_FLAG(uint64_t, seed, 1, "seed of the parameters and gradients");
ABSL_FLAG(std::string, prefix, "made", "case name prefix");
ABSL_FLAG(std::string, out, "", "output file (default stdout)");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "golden_make --shapes=RxC[,RxC...] [--kind=normuon|adamw] [--steps=N] [--out=FILE] ...\n"
      "Writes golden cases computed by the float64 re-implementation of the official step.");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() > 1 || absl::GetFlag(FLAGS_shapes).empty()) {
    std::fprintf(stderr, "usage: golden_make --shapes=RxC[,RxC...] [flags] (--help for more)\n");
    return 2;
  }
  normuon_tools::RandomCaseSpec base;
  base.kind = absl::GetFlag(FLAGS_kind);
  const std::string kind = normuon_tools::GoldenKindName(base.kind);
  if (base.kind == normuon_tools::GoldenKind::kNormuon) {
    base.lr = 0.02;
    base.beta1 = 0.95;
  } else {
    base.lr = 3e-4;
    base.beta1 = 0.9;
  }
  if (absl::GetFlag(FLAGS_lr) >= 0.0) base.lr = absl::GetFlag(FLAGS_lr);
  if (absl::GetFlag(FLAGS_beta1) >= 0.0) base.beta1 = absl::GetFlag(FLAGS_beta1);
  base.beta2 = absl::GetFlag(FLAGS_beta2);
  base.weight_decay = absl::GetFlag(FLAGS_weight_decay);
  base.eps = absl::GetFlag(FLAGS_eps);
  base.nesterov = absl::GetFlag(FLAGS_nesterov);
  base.ns_steps = absl::GetFlag(FLAGS_ns_steps);
  base.steps = absl::GetFlag(FLAGS_steps);

  std::vector<normuon_tools::GoldenCase> cases;
  int index = 0;
  for (absl::string_view shape : absl::StrSplit(absl::GetFlag(FLAGS_shapes), ',')) {
    std::vector<absl::string_view> dims = absl::StrSplit(shape, 'x');
    normuon_tools::RandomCaseSpec spec = base;
    if (dims.size() != 2 || !absl::SimpleAtoi(dims[0], &spec.rows) ||
        !absl::SimpleAtoi(dims[1], &spec.cols) || spec.rows <= 0 || spec.cols <= 0) {
      std::fprintf(stderr, "golden_make: shape '%s' is not RxC\n", std::string(shape).c_str());
      return 2;
    }
    spec.name = absl::StrCat(absl::GetFlag(FLAGS_prefix), "_", kind, "_", spec.rows, "x", spec.cols,
                             "_", index);
    spec.seed = absl::GetFlag(FLAGS_seed) * 1000003u + static_cast<uint64_t>(index);
    absl::StatusOr<normuon_tools::GoldenCase> c = normuon_tools::MakeRandomCase(spec);
    if (!c.ok()) {
      std::fprintf(stderr, "golden_make: %s\n", std::string(c.status().message()).c_str());
      return 2;
    }
    cases.push_back(*std::move(c));
    ++index;
  }
  std::string text = normuon_tools::FormatGolden(cases);
  text.insert(0,
              "# made by tools/golden_make: float64 re-implementation of the official NorMuon "
              "step (tools/golden_reference.h)\n");
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    return 0;
  }
  std::ofstream file(out, std::ios::binary);
  file << text;
  if (!file) {
    std::fprintf(stderr, "golden_make: cannot write '%s'\n", out.c_str());
    return 2;
  }
  return 0;
}
