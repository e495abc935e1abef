// model_layout.h: how the tools lay a model's shape list (model_shapes.h) out for a run: the
// FSDP2 rows of every rank and the layers a simulated backward pass releases. normuon_run, the
// planner and the step benchmark all use these, so a planned run and a measured one shard and
// release a model the same way.
#ifndef NORMUON_TOOLS_COMMON_MODEL_LAYOUT_H_
#define NORMUON_TOOLS_COMMON_MODEL_LAYOUT_H_

#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "sharding/shard.h"
#include "tools/model_shapes.h"

namespace normuon_tools {

// FSDP2's dim-0 layout of every entry on `world` ranks (sharding::Fsdp2Split: ceil(rows/world)
// rows per rank, trailing ranks short or empty): [entry][rank]. world >= 1.
absl::StatusOr<std::vector<std::vector<normuon::sharding::RowShard>>> Fsdp2Layout(
    const ModelShapes& model, int world);

// The layer of a parameter name: the number after "h." or "layers." (GPT-2, Llama naming) at the
// start of the name or after a '.', else -1.
int LayerOf(absl::string_view name);

// The matrices per layer in the order a backward pass finishes them: the last numbered layer
// first, matrices outside numbered layers (embeddings, a head) last. Numbered layers without
// matrices stay, empty (their backward still takes time). A matrix is named by its ordinal among
// the model's `matrix` entries (registration order); MatrixEntries maps ordinals to entries.
std::vector<std::vector<int>> BackwardLayers(const ModelShapes& model);

// The entry index of each matrix ordinal.
std::vector<int> MatrixEntries(const ModelShapes& model);

}  // namespace normuon_tools

#endif  // NORMUON_TOOLS_COMMON_MODEL_LAYOUT_H_
