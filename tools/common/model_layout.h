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

// Megatron-style tensor parallelism on `world` ranks, tp of them per TP group (tp divides
// world; rank r = t * (world / tp) + d is TP rank t, data-parallel rank d): a matrix is split
// over the TP ranks as torch.chunk splits it, by rows when it is column-parallel (attention QKV,
// MLP up and gate projections, embeddings, the head) and by columns when it is row-parallel
// (RowParallel: attention output and MLP down projections); FSDP2 then splits each TP piece's
// rows over the data-parallel ranks. AdamW entries are FSDP2 rows over all ranks. A rank with
// no piece gets an empty rectangle. [entry][rank]. tp = 1 is Fsdp2Layout with every column.
absl::StatusOr<std::vector<std::vector<normuon::sharding::PieceRect>>> MegatronLayout(
    const ModelShapes& model, int tp, int world);

// Every rank's pieces of every entry: [entry][rank][piece] (a rank may hold several rectangles of
// one matrix: normuon_param_desc_t.pieces).
using PieceLists = std::vector<std::vector<std::vector<normuon::sharding::PieceRect>>>;

// MegatronLayout as lists (one piece per rank), or with separate_qkv a fused attention QKV
// (FusedQkv, rows divisible by 3) laid out without interleaving: its rows are three equal blocks
// q, k, v, TP rank t holds its torch.chunk share of each block (three row ranges), and FSDP2
// splits each of them over the data-parallel ranks (three pieces per rank; an empty share is
// left out).
absl::StatusOr<PieceLists> MegatronPieces(const ModelShapes& model, int tp, int world,
                                          bool separate_qkv);

// Whether a matrix is a fused attention QKV projection, by its name: GPT-2's "c_attn", or
// "qkv", "query_key_value", "Wqkv" as a name part.
bool FusedQkv(absl::string_view name);

// Whether a matrix is row-parallel under Megatron's layout, by its name: GPT-2's "attn.c_proj"
// and "mlp.c_proj", Llama's "o_proj" and "down_proj" (also "out_proj", "dense_4h_to_h", "wo",
// "w2" as the last name parts).
bool RowParallel(absl::string_view name);

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
