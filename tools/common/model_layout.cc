// The layouts of model_layout.h.
#include "tools/common/model_layout.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace normuon_tools {

absl::StatusOr<std::vector<std::vector<normuon::sharding::RowShard>>> Fsdp2Layout(
    const ModelShapes& model, int world) {
  std::vector<std::vector<normuon::sharding::RowShard>> layout;
  layout.reserve(model.entries.size());
  for (const ModelShape& e : model.entries) {
    absl::StatusOr<std::vector<normuon::sharding::RowShard>> shards =
        normuon::sharding::Fsdp2Split(e.rows, world);
    if (!shards.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(e.name, ": ", shards.status().message()));
    }
    layout.push_back(*std::move(shards));
  }
  return layout;
}

bool RowParallel(absl::string_view name) {
  for (absl::string_view part : {"c_proj", "o_proj", "out_proj", "down_proj", "dense_4h_to_h",
                                 "wo", "w2"}) {
    size_t at = name.find(part);
    while (at != absl::string_view::npos) {
      const size_t end = at + part.size();
      const bool starts = at == 0 || name[at - 1] == '.';
      const bool ends = end == name.size() || name[end] == '.';
      if (starts && ends) return true;
      at = name.find(part, at + 1);
    }
  }
  return false;
}

absl::StatusOr<std::vector<std::vector<normuon::sharding::PieceRect>>> MegatronLayout(
    const ModelShapes& model, int tp, int world) {
  using normuon::sharding::PieceRect;
  using normuon::sharding::RowShard;
  if (tp < 1 || world < 1 || world % tp != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor parallel size ", tp, " must be >= 1 and divide ", world, " ranks"));
  }
  const int dp = world / tp;
  std::vector<std::vector<PieceRect>> layout;
  for (const ModelShape& e : model.entries) {
    std::vector<PieceRect> pieces(world);
    if (e.kind != normuon::ParamKind::kMatrix) {
      absl::StatusOr<std::vector<RowShard>> rows = normuon::sharding::Fsdp2Split(e.rows, world);
      if (!rows.ok()) return absl::InvalidArgumentError(absl::StrCat(e.name, ": ", rows.status().message()));
      for (int r = 0; r < world; ++r) pieces[r] = {(*rows)[r].row_begin, (*rows)[r].row_count, 0, e.cols};
    } else {
      const bool by_cols = RowParallel(e.name);
      absl::StatusOr<std::vector<RowShard>> t =
          normuon::sharding::Fsdp2Split(by_cols ? e.cols : e.rows, tp);
      if (!t.ok()) return absl::InvalidArgumentError(absl::StrCat(e.name, ": ", t.status().message()));
      for (int a = 0; a < tp; ++a) {
        const RowShard& c = (*t)[a];
        const PieceRect piece = by_cols ? PieceRect{0, e.rows, c.row_begin, c.row_count}
                                        : PieceRect{c.row_begin, c.row_count, 0, e.cols};
        absl::StatusOr<std::vector<RowShard>> d =
            normuon::sharding::Fsdp2Split(piece.col_count > 0 ? piece.row_count : 0, dp);
        if (!d.ok()) return absl::InvalidArgumentError(absl::StrCat(e.name, ": ", d.status().message()));
        for (int k = 0; k < dp; ++k) {
          PieceRect r{piece.row_begin + (*d)[k].row_begin, (*d)[k].row_count, piece.col_begin,
                      piece.col_count};
          if (r.row_count == 0 || r.col_count == 0) r = PieceRect{0, 0, 0, 0};
          pieces[a * dp + k] = r;
        }
      }
    }
    layout.push_back(std::move(pieces));
  }
  return layout;
}

namespace {

// True when `part` is a whole '.'-separated part of name.
bool HasPart(absl::string_view name, absl::string_view part) {
  size_t at = name.find(part);
  while (at != absl::string_view::npos) {
    const size_t end = at + part.size();
    if ((at == 0 || name[at - 1] == '.') && (end == name.size() || name[end] == '.')) return true;
    at = name.find(part, at + 1);
  }
  return false;
}

}  // namespace

bool FusedQkv(absl::string_view name) {
  for (absl::string_view part : {"c_attn", "qkv", "query_key_value", "Wqkv"}) {
    if (HasPart(name, part)) return true;
  }
  return false;
}

absl::StatusOr<PieceLists> MegatronPieces(const ModelShapes& model, int tp, int world,
                                          bool separate_qkv) {
  using normuon::sharding::PieceRect;
  using normuon::sharding::RowShard;
  absl::StatusOr<std::vector<std::vector<PieceRect>>> one = MegatronLayout(model, tp, world);
  if (!one.ok()) return one.status();
  const int dp = world / tp;
  PieceLists lists;
  for (size_t i = 0; i < model.entries.size(); ++i) {
    const ModelShape& e = model.entries[i];
    std::vector<std::vector<PieceRect>> ranks(world);
    if (!separate_qkv || e.kind != normuon::ParamKind::kMatrix || !FusedQkv(e.name) ||
        e.rows % 3 != 0) {
      for (int r = 0; r < world; ++r) ranks[r] = {(*one)[i][r]};
      lists.push_back(std::move(ranks));
      continue;
    }
    const int64_t block = e.rows / 3;
    absl::StatusOr<std::vector<RowShard>> t = normuon::sharding::Fsdp2Split(block, tp);
    if (!t.ok()) return absl::InvalidArgumentError(absl::StrCat(e.name, ": ", t.status().message()));
    for (int a = 0; a < tp; ++a) {
      for (int64_t q = 0; q < 3; ++q) {  // q, k, v
        const RowShard& share = (*t)[a];
        absl::StatusOr<std::vector<RowShard>> d =
            normuon::sharding::Fsdp2Split(share.row_count, dp);
        if (!d.ok()) return absl::InvalidArgumentError(absl::StrCat(e.name, ": ", d.status().message()));
        for (int k = 0; k < dp; ++k) {
          if ((*d)[k].row_count == 0) continue;
          ranks[a * dp + k].push_back(PieceRect{q * block + share.row_begin + (*d)[k].row_begin,
                                                (*d)[k].row_count, 0, e.cols});
        }
      }
    }
    lists.push_back(std::move(ranks));
  }
  return lists;
}

int LayerOf(absl::string_view name) {
  for (absl::string_view prefix : {absl::string_view("h."), absl::string_view("layers.")}) {
    const size_t at = name.find(prefix);
    if (at == absl::string_view::npos) continue;
    if (at != 0 && name[at - 1] != '.') continue;
    size_t i = at + prefix.size();
    int layer = 0;
    bool digits = false;
    while (i < name.size() && name[i] >= '0' && name[i] <= '9' && layer < 100000000) {
      layer = layer * 10 + (name[i++] - '0');
      digits = true;
    }
    if (digits) return layer;
  }
  return -1;
}

std::vector<std::vector<int>> BackwardLayers(const ModelShapes& model) {
  int max_layer = -1;
  for (const ModelShape& e : model.entries) max_layer = std::max(max_layer, LayerOf(e.name));
  std::vector<std::vector<int>> layers(static_cast<size_t>(max_layer + 2));
  int k = 0;
  for (const ModelShape& e : model.entries) {
    if (e.kind != normuon::ParamKind::kMatrix) continue;
    const int l = LayerOf(e.name);
    layers[l < 0 ? layers.size() - 1 : static_cast<size_t>(max_layer - l)].push_back(k++);
  }
  if (layers.back().empty()) layers.pop_back();
  return layers;
}

std::vector<int> MatrixEntries(const ModelShapes& model) {
  std::vector<int> entries;
  for (size_t i = 0; i < model.entries.size(); ++i) {
    if (model.entries[i].kind == normuon::ParamKind::kMatrix) {
      entries.push_back(static_cast<int>(i));
    }
  }
  return entries;
}

}  // namespace normuon_tools
