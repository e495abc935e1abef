// The step layout (docs/ARCHITECTURE.md section 4, "The runtime in three parts"): a pure
// function of the registrations, this rank's place and the config that returns every unit of
// the step (matrix row blocks, buckets, batches, AdamW parameters), every offset into the slot
// vectors and state, and every buffer the runtime allocates, with its size. Finalize allocates
// exactly `allocations`, in order; normuon_memory_required is `total_bytes`.
//
// The layout needs only this rank's rows: what crosses ranks is sized from them. Given an exact
// cover of every matrix (which finalize checks across ranks), this rank sends its rows of each
// matrix another rank owns and receives the other rows of each matrix it owns, so the message
// totals are known before the other ranks' rows are; finalize builds the segment plans from all
// ranks' rows and checks they agree with the layout. The memory query is therefore exact both
// before and after finalize.
#ifndef NORMUON_RUNTIME_STEP_LAYOUT_H_
#define NORMUON_RUNTIME_STEP_LAYOUT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "base/param_kind.h"
#include "kernels/backend.h"
#include "normuon/normuon.h"
#include "sharding/ns_cost.h"
#include "sharding/registration.h"
#include "sharding/shard.h"

namespace normuon {

// One registered parameter as the layout sees it (a ParamSpec without the pointers).
struct LayoutParam {
  ParamKind kind = ParamKind::kMatrix;
  std::string name;
  int64_t rows = 0, cols = 0, row_begin = 0, row_count = 0;
  std::vector<int64_t> splits;  // matrices: row blocks summing to rows (one block when unsplit)
  // The piece's columns (ParamSpec's; col_count 0 also means every column), and whether
  // the descriptor gave them (the registration record then carries them).
  int64_t col_begin = 0, col_count = 0;
  bool columns_given = false;
  // Several pieces on this rank (normuon_param_desc_t.pieces), in the caller's order, columns
  // resolved; empty: the one piece of the fields above.
  std::vector<sharding::PieceRect> pieces;
};

// What the layout depends on besides the parameters.
struct LayoutOptions {
  int world = 1;
  int rank = 0;
  DType ns_dtype = DType::kF32;
  normuon_schedule_t schedule = NORMUON_SCHEDULE_SEQUENTIAL;
  uint64_t bucket_bytes = 0;
  normuon_owner_policy_t owner_policy = NORMUON_OWNER_ROUND_ROBIN;
  normuon_variant_t variant = NORMUON_VARIANT_NORMUON;
  normuon_neuron_axis_t neuron_axis = NORMUON_NEURON_ROWS;
  int32_t groups = 2;
  // How the step orthogonalizes: the cost-balanced owner policy weighs matrices by its FLOPs.
  sharding::NsCost ns_cost;
  // Per matrix unit k (in layout order): 1 when some rank holds less than all of its columns
  // (finalize knows it from every rank's records). Empty (before finalize): judged from this
  // rank's own pieces.
  std::vector<char> column_split;
};

// The state-size rule, in floats, of one parameter's state on this rank (row_count x cols local
// elements, `row_blocks` row blocks). AdamW: `momentum` = exp_avg, `second` = exp_avg_sq.
// Matrices: `momentum`; `second` = v, one float per local element (AdaMuon), per column of each
// row block (neuron axis = columns, replicated on every rank), else per local row; `v_new` the
// same as v. `state_second` is what the state API and checkpoints see of v: none for Muon (it
// keeps v's buffer but never reads it).
struct StateFloats {
  uint64_t momentum = 0, second = 0, v_new = 0, state_second = 0;
};
// `local_cols` is the piece's columns (-1: cols, the row-only layout): momentum and per-element
// state are row_count x local_cols; the column axis's v stays per global column.
StateFloats StateFloatsOf(ParamKind kind, normuon_variant_t variant,
                          normuon_neuron_axis_t neuron_axis, int64_t row_count, int64_t cols,
                          int64_t row_blocks, int64_t local_cols = -1);
// The same rule for a rank holding `local_rows` rows and `local_elements` elements in all (several
// pieces: their sums; the state of the pieces lies back to back in piece order).
StateFloats StateFloatsOfLocal(ParamKind kind, normuon_variant_t variant,
                               normuon_neuron_axis_t neuron_axis, int64_t cols, int64_t row_blocks,
                               int64_t local_rows, int64_t local_elements);

// Bytes of one state buffer as normuon_state_size and checkpoints see it (0: the kind does not
// apply to this parameter); InvalidArgument naming `kind` for an unknown state kind.
absl::StatusOr<uint64_t> StateBytes(ParamKind kind, normuon_variant_t variant,
                                    normuon_neuron_axis_t neuron_axis, int64_t row_count,
                                    int64_t cols, int64_t row_blocks, normuon_state_kind_t state,
                                    int64_t local_cols = -1);
absl::StatusOr<uint64_t> StateBytesLocal(ParamKind kind, normuon_variant_t variant,
                                         normuon_neuron_axis_t neuron_axis, int64_t cols,
                                         int64_t row_blocks, int64_t local_rows,
                                         int64_t local_elements, normuon_state_kind_t state);

// This rank's part of a matrix unit: one of its pieces of the parameter cut to the block's rows.
// A rank holding one piece has one part per block (an empty one when it holds none of the block's
// rows); with several pieces (normuon_param_desc_t.pieces) one per piece that meets the block, or
// one empty part when none does.
struct UnitPart {
  int32_t piece = 0;           // index into the parameter's pieces (PiecesOf order; 0: the one)
  sharding::RowShard mine;     // the part's rows, relative to the block
  int64_t col_begin = 0, col_count = 0;  // its columns (resolved: every column is 0, cols)
  int64_t piece_row = 0;       // its first row within its piece (param/grad: + piece_row * ld)
  int64_t state_offset = 0;    // floats into the parameter's momentum (and per-element v)
  int64_t v_offset = 0;        // floats into the parameter's v and v_new
};

// "Matrix k": one row block of a matrix parameter, the unit of gather, Newton-Schulz and scatter.
struct MatrixUnit {
  int32_t param = 0;          // the parameter (registration index)
  std::string name;           // the parameter's name, with "[rows first+count]" for a block
  int64_t first_row = 0;      // the block's first global row in its parameter
  int64_t rows = 0, cols = 0;
  sharding::RowShard mine;    // this rank's rows of the block, relative to the block
  int64_t local_row = 0;      // the block's first row within this rank's rows of the parameter
  int64_t v_offset = 0;       // floats into the parameter's v and v_new
  int32_t owner = 0;          // the rank that orthogonalizes the block
  int32_t bucket = 0;
  int64_t slot_offset = 0;    // floats into the slot vectors: 2 * rows (+ cols, column axis)
  // Two-dimensional pieces: this rank's columns of the block (the parameter's piece's), and
  // whether some rank holds less than all columns of it ("column-split"). A column-split block's
  // row statistics are made by its owner over the whole O (docs/ARCHITECTURE.md section 2,
  // "Two-dimensional pieces"): NorMuon's per-row v then travels to the owner in the step's v
  // all-reduce (rows floats at vsync_offset, written by the piece holding column 0 of each row)
  // and v_new comes back in the slot all-reduce (rows floats at vnew_slot, written by the owner);
  // both are -1 when unused.
  int64_t col_begin = 0, col_count = 0;
  bool column_split = false;
  int64_t vsync_offset = -1;
  int64_t vnew_slot = -1;
  // AdaMuon (one v per element) on a column-split block: every piece's v travels to the owner
  // with the gather, in a message of its own (BucketLayout::v_send_bytes, v_recv_bytes); the owner
  // makes the row slots from the whole O and the whole v, and each piece holder its own v_new.
  bool element_v_split = false;
  // Every part of this rank (at least one); parts[0] is what mine, local_row, col_begin,
  // col_count and v_offset above describe.
  std::vector<UnitPart> parts;
};

struct BucketLayout {
  std::vector<int32_t> matrices;  // matrix indices k, in work order
  int64_t send_bytes = 0;         // this rank's rows of the bucket's matrices others own
  int64_t recv_bytes = 0;         // the other ranks' rows of the bucket's matrices it owns
  // The v message of element_v_split blocks (fp32): this rank's pieces' v for other owners, the
  // other pieces' v of the blocks it owns.
  int64_t v_send_bytes = 0, v_recv_bytes = 0;
  std::vector<int32_t> batches;   // indices into StepLayout::batches
};

// Owned matrices of one shape in one bucket, orthogonalized as one batched call; their full U and
// O lie back to back in the batch's two buffers, in `matrices` order.
struct BatchLayout {
  int64_t rows = 0, cols = 0;
  std::vector<int32_t> matrices;
};

// Every buffer the runtime allocates at finalize, in order.
enum class BufferRole : int32_t {
  kControl,     // StepControl
  kScalars,     // GroupScalars per group
  kSlotsLocal,  // the slot vector this rank writes
  kSlotsTotal,  // its all-reduce (world > 1 only; one rank reads its own)
  kSend,        // per bucket: gather send / scatter receive
  kRecv,        // per bucket: gather receive / scatter send
  kBatchU,      // per batch: the owner's full U of its matrices
  kBatchO,      // per batch: the owner's full O
  kMomentum,    // per parameter: momentum (matrix) or exp_avg (AdamW)
  kSecond,      // per parameter: v (matrix) or exp_avg_sq (AdamW)
  kVNew,        // per matrix parameter: v's scratch
  kScale,       // per matrix block: the update's multiplier
  kAdamWSteps,  // one int64 per AdamW parameter (at least one)
  kVSyncLocal,  // column-split blocks' v rows, as this rank holds them (only when there are any)
  kVSyncTotal,  // their all-reduce
  kVSend,       // per bucket with element_v_split blocks: v gather send
  kVRecv,       // per such bucket: v gather receive
  kVFull,       // per owned element_v_split block: the whole v (rows x cols floats)
};
const char* BufferRoleName(BufferRole role);

struct BufferLayout {
  BufferRole role;
  int32_t index;   // bucket, batch, parameter or matrix block; -1 for the single buffers
  uint64_t bytes;
};

struct StepLayout {
  std::vector<MatrixUnit> matrices;      // every row block of every matrix, registration order
  std::vector<BucketLayout> buckets;     // in issue order (reverse registration order)
  std::vector<BatchLayout> batches;      // bucket by bucket
  std::vector<int32_t> adamw_params;     // the AdamW parameters, registration order
  std::vector<StateFloats> state;        // per parameter
  // The registration records finalize agrees on: every matrix block, then AdamW parameters, in
  // registration order; matrix_records[k] is matrix k's index among them.
  std::vector<sharding::RegistrationRecord> records;
  std::vector<int32_t> matrix_records;
  // The records of the parts after the first of each block (several pieces), extra_of set.
  std::vector<sharding::RegistrationRecord> extra_records;
  std::vector<sharding::MatrixShape> shapes;  // per matrix k
  int64_t slot_floats = 0;   // the slot vectors' length: row (and column) slots, then flags
  int64_t flag_base = 0;     // index of the step flags (kStepFlagsPerRank * world floats)
  int64_t vsync_floats = 0;  // length of the v all-reduce of column-split blocks (0: none)
  std::vector<BufferLayout> buffers;
  uint64_t total_bytes = 0;  // the sum of buffers[].bytes
};

// Fails with InvalidArgument on inputs the registration checks let through but the layout cannot
// place (a bucket rule failure, an overflow).
absl::StatusOr<StepLayout> MakeStepLayout(const std::vector<LayoutParam>& params,
                                          const LayoutOptions& options);

}  // namespace normuon

#endif  // NORMUON_RUNTIME_STEP_LAYOUT_H_
