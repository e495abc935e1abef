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
