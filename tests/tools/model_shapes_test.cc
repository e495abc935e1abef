// model_shapes_test: the shape-list parser (good and bad lines) and finding the canonical model
// lists by name through the runfiles and $NORMUON_MODELS_DIR.
#include "tools/model_shapes.h"

#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "sharding/shard.h"
#include "tools/common/model_layout.h"

namespace normuon_tools {
namespace {

#define EXPECT_CONTAINS(haystack, needle)                          \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) \
      << "expected to find \"" << (needle) << "\" in: " << (haystack)

std::string ParseError(const std::string& text) {
  absl::StatusOr<ModelShapes> shapes = ParseModelShapes(text, "m.txt");
  EXPECT_FALSE(shapes.ok()) << "parsed without error:\n" << text;
  if (shapes.ok()) return "";
  return std::string(shapes.status().message());
}

TEST(ModelShapesTest, ParsesEntries) {
  absl::StatusOr<ModelShapes> shapes = ParseModelShapes(
      "# a model\n"
      "\n"
      "wte.weight 512x64 adamw\n"
      "  h.0.ln.bias 64 adamw   # trailing comment\n"
      "h.0.attn.weight\t192x64\tmatrix\r\n"
      "head 1x7 matrix\n",
      "m.txt");
  ASSERT_TRUE(shapes.ok()) << shapes.status();
  ASSERT_EQ(shapes->entries.size(), 4u);
  const ModelShape& e0 = shapes->entries[0];
  EXPECT_EQ(e0.name, "wte.weight");
  EXPECT_EQ(e0.rows, 512);
  EXPECT_EQ(e0.cols, 64);
  EXPECT_EQ(e0.kind, normuon::ParamKind::kAdamW);
  EXPECT_FALSE(e0.one_dim);
  EXPECT_EQ(e0.line, 3);
  const ModelShape& e1 = shapes->entries[1];
  EXPECT_EQ(e1.name, "h.0.ln.bias");
  EXPECT_EQ(e1.rows, 64);
  EXPECT_EQ(e1.cols, 1);
  EXPECT_TRUE(e1.one_dim);
  EXPECT_EQ(shapes->entries[2].kind, normuon::ParamKind::kMatrix);
  EXPECT_EQ(shapes->entries[2].rows, 192);
  EXPECT_EQ(shapes->entries[3].rows, 1);
  EXPECT_EQ(shapes->entries[3].cols, 7);
  EXPECT_EQ(shapes->num_matrices(), 2);
  EXPECT_EQ(shapes->num_adamw(), 2);
  EXPECT_EQ(shapes->matrix_elements(), 192 * 64 + 7);
  EXPECT_EQ(shapes->total_elements(), 512 * 64 + 64 + 192 * 64 + 7);
  EXPECT_STREQ(normuon::ParamKindName(normuon::ParamKind::kMatrix), "matrix");
}

TEST(ModelShapesTest, BadLinesNameTheLine) {
  EXPECT_CONTAINS(ParseError("a 2x2 matrix\nb 2x2\n"), "m.txt:2:");
  EXPECT_CONTAINS(ParseError("a 2x2 matrix extra\n"), "m.txt:1:");
  EXPECT_CONTAINS(ParseError("a 2x2 sgd\n"), "kind 'sgd'");
  EXPECT_CONTAINS(ParseError("a 2x0 matrix\n"), "m.txt:1:");
  EXPECT_CONTAINS(ParseError("a 0 adamw\n"), "m.txt:1:");
  EXPECT_CONTAINS(ParseError("a -3 adamw\n"), "m.txt:1:");
  EXPECT_CONTAINS(ParseError("a 2x3x4 matrix\n"), "m.txt:1:");
  EXPECT_CONTAINS(ParseError("a 2*3 matrix\n"), "m.txt:1:");
  EXPECT_CONTAINS(ParseError("a x3 matrix\n"), "m.txt:1:");
  EXPECT_CONTAINS(ParseError("\n\nbias 64 matrix\n"), "m.txt:3:");
  EXPECT_CONTAINS(ParseError("\n\nbias 64 matrix\n"), "only 2-D");
  EXPECT_CONTAINS(ParseError("a 2x2 matrix\na 4 adamw\n"), "duplicate parameter name 'a'");
  EXPECT_CONTAINS(ParseError("a 99999999999x99999999999 matrix\n"), "too large");
  EXPECT_CONTAINS(ParseError("# nothing\n"), "no parameters");
}

TEST(ModelShapesTest, MissingFile) {
  absl::StatusOr<ModelShapes> shapes = ReadModelShapesFile("/nonexistent/m.txt");
  ASSERT_FALSE(shapes.ok());
  EXPECT_EQ(shapes.status().code(), absl::StatusCode::kNotFound);
}

// The canonical lists ship in tools/models and are found by name through the runfiles.
TEST(ModelShapesTest, FindsCanonicalModels) {
  struct Expected {
    const char* name;
    int64_t params;
    int64_t elements;
    int64_t matrix_elements;
  };
  // Counts from the lists' own header comments.
  const Expected expected[] = {
      {"tiny", 28, 141056, 98304},
      {"gpt2-124m", 148, 124439808, 84934656},
      {"gpt2-350m", 292, 354823168, 301989888},
      {"llama-1b-layer", 9, 60821504, 60817408},
      {"llama-1b", 146, 1235814400, 973078528},
      {"llama-8b-layer", 9, 218112000, 218103808},
      {"llama-8b", 291, 8030261248, 6979321856},
  };
  for (const Expected& e : expected) {
    absl::StatusOr<ModelShapes> shapes = LoadModel(e.name, "");
    ASSERT_TRUE(shapes.ok()) << e.name << ": " << shapes.status();
    EXPECT_EQ(static_cast<int64_t>(shapes->entries.size()), e.params) << e.name;
    EXPECT_EQ(shapes->total_elements(), e.elements) << e.name;
    EXPECT_EQ(shapes->matrix_elements(), e.matrix_elements) << e.name;
  }
  absl::StatusOr<std::string> path = FindModelFile("tiny.txt", "");
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_CONTAINS(*path, "tools/models/tiny.txt");
}

TEST(ModelShapesTest, UnknownModelListsSearchedDirs) {
  absl::StatusOr<ModelShapes> shapes = LoadModel("no-such-model", "/some/bin/normuon_run");
  ASSERT_FALSE(shapes.ok());
  EXPECT_EQ(shapes.status().code(), absl::StatusCode::kNotFound);
  const std::string msg(shapes.status().message());
  EXPECT_CONTAINS(msg, "no-such-model.txt");
  EXPECT_CONTAINS(msg, "/some/bin/normuon_run.runfiles/normuon/tools/models");
  EXPECT_CONTAINS(msg, "NORMUON_MODELS_DIR");
  EXPECT_FALSE(LoadModel("../tools/models/tiny", "").ok());
  EXPECT_FALSE(LoadModel("", "").ok());
}

TEST(ModelShapesTest, EnvironmentDirectoryComesFirst) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  ASSERT_NE(tmp, nullptr);
  const std::string dir = absl::StrCat(tmp, "/models");
  ASSERT_EQ(system(absl::StrCat("mkdir -p ", dir).c_str()), 0);
  {
    std::ofstream out(dir + "/tiny.txt");
    out << "only 3x5 matrix\n";
  }
  ASSERT_EQ(setenv("NORMUON_MODELS_DIR", dir.c_str(), 1), 0);
  absl::StatusOr<ModelShapes> shapes = LoadModel("tiny", "");
  unsetenv("NORMUON_MODELS_DIR");
  ASSERT_TRUE(shapes.ok()) << shapes.status();
  ASSERT_EQ(shapes->entries.size(), 1u);
  EXPECT_EQ(shapes->entries[0].name, "only");
  EXPECT_NE(ModelSearchDirs("")[0], dir) << "the variable is searched only while set";
}

// --qkv_layout=separate (tools/common/model_layout.h, MegatronPieces): a fused QKV's q, k and v
// blocks each split over the TP ranks, then over the DP ranks: three row ranges per rank, which
// together with the other ranks' tile the matrix; other matrices keep MegatronLayout's piece.
TEST(ModelLayoutTest, SeparateQkvGivesEachRankThreeRowRanges) {
  absl::StatusOr<ModelShapes> shapes =
      ParseModelShapes("h.0.attn.c_attn.weight 48x8 matrix\nh.0.attn.c_proj.weight 8x16 matrix\n",
                       "m.txt");
  ASSERT_TRUE(shapes.ok()) << shapes.status();
  absl::StatusOr<PieceLists> lists = MegatronPieces(*shapes, 2, 4, /*separate_qkv=*/true);
  ASSERT_TRUE(lists.ok()) << lists.status();
  // q rows 0..15, k 16..31, v 32..47; TP rank 1 holds rows 8..15 of each block, DP rank 0 of it
  // (rank 2) the first 4 of those.
  const auto& rank2 = (*lists)[0][2];
  ASSERT_EQ(rank2.size(), 3u);
  EXPECT_EQ(rank2[0].row_begin, 8);
  EXPECT_EQ(rank2[1].row_begin, 24);
  EXPECT_EQ(rank2[2].row_begin, 40);
  for (const auto& p : rank2) {
    EXPECT_EQ(p.row_count, 4);
    EXPECT_EQ(p.col_count, 8);
  }
  std::vector<normuon::sharding::RankPiece> all;
  for (int r = 0; r < 4; ++r) {
    for (const auto& p : (*lists)[0][r]) all.push_back({r, p});
  }
  EXPECT_TRUE(normuon::sharding::ValidateTiling({"qkv", 48, 8}, all).ok());
  EXPECT_EQ((*lists)[1][2].size(), 1u);  // c_proj: one column piece per rank
  // Interleaved (the default): one piece per rank, MegatronLayout's.
  absl::StatusOr<PieceLists> one = MegatronPieces(*shapes, 2, 4, /*separate_qkv=*/false);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ((*one)[0][2].size(), 1u);
  EXPECT_TRUE(FusedQkv("h.0.attn.c_attn.weight"));
  EXPECT_FALSE(FusedQkv("h.0.attn.c_proj.weight"));
}

}  // namespace
}  // namespace normuon_tools
