// Runtime: creation, registration, Finalize (the step layout allocated and bound) and the state
// API. The step itself is step.cc; validation is config.cc; what goes where is step_layout.cc.
#include "runtime/runtime.h"

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "sharding/buckets.h"
#include "sharding/pipeline_order.h"

extern "C" void openblas_set_num_threads(int num_threads);

namespace normuon {
namespace {

absl::Status Invalid(absl::string_view what) { return absl::InvalidArgumentError(what); }

// p advanced by `rows` rows of `cols` elements of dtype d; null stays null.
template <typename T>
T* OffsetRows(T* p, int64_t rows, int64_t cols, DType d) {
  if (p == nullptr) return nullptr;
  using Byte = std::conditional_t<std::is_const_v<T>, const char, char>;
  return reinterpret_cast<Byte*>(p) + rows * cols * static_cast<int64_t>(SizeOf(d));
}

// Each peer's region in a bucket's send and receive messages, back to back in peer order as
// `plan` sizes them; returns the two totals (send, receive) in bytes.
std::pair<int64_t, int64_t> PeerOffsets(const sharding::RankPlan& plan, int world,
                                        std::vector<int64_t>* send, std::vector<int64_t>* recv) {
  send->assign(world, 0);
  recv->assign(world, 0);
  int64_t send_total = 0, recv_total = 0;
  for (int p = 0; p < world; ++p) {
    (*send)[p] = send_total;
    (*recv)[p] = recv_total;
    send_total += plan.gather_send_bytes[p];
    recv_total += plan.gather_recv_bytes[p];
  }
  return {send_total, recv_total};
}

}  // namespace

absl::StatusOr<std::unique_ptr<Runtime>> Runtime::Create(const normuon_config_t& config,
                                                         std::shared_ptr<Communicator> comm,
                                                         std::unique_ptr<Backend> backend) {
  if (comm == nullptr) return Invalid("comm is null");
  NORMUON_ASSIGN_OR_RETURN(ResolvedConfig resolved, ResolveConfig(config, *comm));
  if (backend != nullptr) {
    // A stand-in given by a test.
  } else if (resolved.config.backend == NORMUON_BACKEND_CPU) {
    backend = MakeCpuBackend();
  } else {
    NORMUON_ASSIGN_OR_RETURN(backend, MakeCudaBackend(resolved.config.device));
  }
  return std::unique_ptr<Runtime>(
      new Runtime(std::move(resolved), std::move(backend), std::move(comm)));
}

Runtime::Runtime(ResolvedConfig resolved, std::unique_ptr<Backend> backend,
                 std::shared_ptr<Communicator> comm)
    : config_(resolved.config),
      backend_(std::move(backend)),
      comm_(std::move(comm)),
      rank_(comm_->rank()),
      world_(comm_->world_size()),
      ns_dtype_(resolved.ns_dtype),
      coefficients_(std::move(resolved.coefficients)),
      ns_method_(resolved.ns_method),
      ns_restarts_(std::move(resolved.restarts)),
      ns_symmetric_(resolved.symmetric) {
  groups_.push_back(Group{resolved.matrix_group});
  groups_.push_back(Group{resolved.adamw_group});
}

Runtime::~Runtime() {
  // The pipeline's workers may be inside a stage (a step begun by grad_ready and never taken):
  // stop and join them before anything they touch is freed.
  pipeline_.reset();
  if (backend_ == nullptr) return;
  if (stepped_) backend_->WaitStep().IgnoreError();
  for (void* p : allocations_) backend_->Free(p);
}

absl::StatusOr<int32_t> Runtime::AddGroup(const normuon_group_desc_t& desc) {
  if (finalized_) return absl::FailedPreconditionError("add_group after finalize");
  NORMUON_RETURN_IF_ERROR(ValidateGroup(desc, "group"));
  groups_.push_back(Group{desc});
  return static_cast<int32_t>(groups_.size() - 1);
}

absl::Status Runtime::SetGroupLr(int32_t group, float lr, float weight_decay) {
  if (group < 0 || group >= static_cast<int32_t>(groups_.size())) {
    return Invalid(absl::StrCat("group = ", group, " is not a group (", groups_.size(), " exist)"));
  }
  NORMUON_RETURN_IF_ERROR(ValidateLrAndWeightDecay(lr, weight_decay));
  groups_[group].desc.lr = lr;
  groups_[group].desc.weight_decay = weight_decay;
  return absl::OkStatus();
}

absl::Status Runtime::ValidatePointers(const Param& p, void* param_ptr, const void* grad_ptr,
                                       int64_t rows, const std::string& what) {
  const std::string who = absl::StrCat("parameter '", p.name, "'", what);
  if (rows == 0) return absl::OkStatus();  // no rows here: pointers are not used
  if (param_ptr == nullptr) {
    return Invalid(absl::StrCat(who, ": param is null but this rank holds ", rows, " rows"));
  }
  const size_t pa = SizeOf(p.param_dtype), ga = SizeOf(p.grad_dtype);
  if (reinterpret_cast<uintptr_t>(param_ptr) % pa != 0) {
    return Invalid(absl::StrCat(who, ": param pointer ", reinterpret_cast<uintptr_t>(param_ptr),
                                " is not aligned to ", pa, " bytes"));
  }
  if (grad_ptr != nullptr && reinterpret_cast<uintptr_t>(grad_ptr) % ga != 0) {
    return Invalid(absl::StrCat(who, ": grad pointer ", reinterpret_cast<uintptr_t>(grad_ptr),
                                " is not aligned to ", ga, " bytes"));
  }
  NORMUON_RETURN_IF_ERROR(backend_->CheckPointer(param_ptr, absl::StrCat(who, ": param")));
  if (grad_ptr != nullptr) {
    NORMUON_RETURN_IF_ERROR(backend_->CheckPointer(grad_ptr, absl::StrCat(who, ": grad")));
  }
  return absl::OkStatus();
}

absl::StatusOr<int32_t> Runtime::Register(Kind kind, const normuon_param_desc_t& d) {
  const char* what = kind == Kind::kMatrix ? "register_matrix" : "register_adamw";
  if (finalized_) return absl::FailedPreconditionError(absl::StrCat(what, " after finalize"));
  std::vector<normuon_group_kind_t> group_kinds;
  for (const Group& g : groups_) group_kinds.push_back(g.desc.kind);
  NORMUON_ASSIGN_OR_RETURN(ParamSpec spec, ValidateParamDesc(kind, d, group_kinds));
  for (const Param& p : params_) {
    if (p.name == spec.name) {
      return Invalid(absl::StrCat("desc.name: parameter '", spec.name, "' is already registered"));
    }
  }
  Param p;
  static_cast<ParamSpec&>(p) = std::move(spec);
  NORMUON_RETURN_IF_ERROR(ValidatePointers(p, p.param, p.grad));
  for (size_t j = 0; j < p.pieces.size(); ++j) {
    const PieceSpec& q = p.pieces[j];
    NORMUON_RETURN_IF_ERROR(ValidatePointers(p, q.param, q.grad, q.row_count,
                                             absl::StrCat(", desc.pieces[", j, "]")));
  }
  params_.push_back(std::move(p));
  return static_cast<int32_t>(params_.size() - 1);
}

absl::StatusOr<int32_t> Runtime::RegisterMatrix(const normuon_param_desc_t& desc) {
  return Register(Kind::kMatrix, desc);
}

absl::StatusOr<int32_t> Runtime::RegisterAdamW(const normuon_param_desc_t& desc) {
  return Register(Kind::kAdamW, desc);
}

absl::Status Runtime::CheckParam(int32_t param) const {
  if (param < 0 || param >= static_cast<int32_t>(params_.size())) {
    return Invalid(absl::StrCat("param = ", param, " is not a registered parameter (",
                                params_.size(), " registered)"));
  }
  return absl::OkStatus();
}

uint64_t Runtime::SecondStateCount(const Param& p) const {
  return StateFloatsOfLocal(p.kind, config_.variant, config_.neuron_axis, p.cols,
                            static_cast<int64_t>(p.splits.size()), LocalRows(p), LocalElements(p))
      .state_second;
}

absl::StatusOr<StepLayout> Runtime::Layout(std::vector<char> column_split) const {
  std::vector<LayoutParam> params;
  params.reserve(params_.size());
  for (const Param& p : params_) {
    LayoutParam lp{p.kind, p.name, p.rows, p.cols, p.row_begin, p.row_count, p.splits};
    lp.col_begin = p.col_begin;
    lp.col_count = p.col_count;
    lp.columns_given = p.columns_given;
    for (const PieceSpec& q : p.pieces) {
      lp.pieces.push_back({q.row_begin, q.row_count, q.col_begin, q.col_count});
    }
    params.push_back(std::move(lp));
  }
  LayoutOptions o;
  o.world = world_;
  o.rank = rank_;
  o.ns_dtype = ns_dtype_;
  o.schedule = config_.schedule;
  o.bucket_bytes = config_.bucket_bytes;
  o.owner_policy = config_.owner_policy;
  o.variant = config_.variant;
  o.neuron_axis = config_.neuron_axis;
  o.groups = static_cast<int32_t>(groups_.size());
  o.column_split = std::move(column_split);
  if (ns_method_ == NsMethod::kGram) {  // the owners' weights: Gram's FLOPs (sharding/ns_cost.h)
    o.ns_cost.method = ns_method_;
    o.ns_cost.restarts.assign(ns_restarts_.begin(), ns_restarts_.end());
    // CPU: its triangle products; CUDA: as config.ns_symmetric_products says.
    o.ns_cost.symmetric =
        config_.backend == NORMUON_BACKEND_CPU || ns_symmetric_ == SymmetricProducts::kTiles;
  }
  o.ns_cost.steps = config_.ns_steps;
  return MakeStepLayout(params, o);
}

uint64_t Runtime::MemoryRequired() const {
  if (finalized_) return allocated_bytes_ + backend_->NsWorkspaceBytes(batches_);
  absl::StatusOr<StepLayout> layout = Layout();
  if (!layout.ok()) return 0;
  // The workspace of every same-shape batch, as if this rank owned them all.
  std::vector<NsBatch> batches;
  for (const BatchLayout& bl : layout->batches) {
    NsBatch b;
    b.rows = bl.rows;
    b.cols = bl.cols;
    b.count = static_cast<int64_t>(bl.matrices.size());
    b.dtype = ns_dtype_;
    b.method = ns_method_;
    b.symmetric = ns_symmetric_;
    batches.push_back(b);
  }
  return layout->total_bytes + backend_->NsWorkspaceBytes(batches);
}

absl::Status Runtime::AllGatherHostBytes(const void* in, void* out, size_t bytes) {
  if (!comm_->UsesDeviceMemory()) return comm_->AllGather(in, out, bytes, nullptr);
  // A device communicator moves device memory: stage through a scratch buffer, freed here (set-up
  // only; the step never allocates). The collective runs on the default stream, which the
  // backend's synchronous copies also use.
  const size_t total = bytes * static_cast<size_t>(world_ + 1);
  NORMUON_ASSIGN_OR_RETURN(void* scratch, backend_->Alloc(total));
  char* dev_out = static_cast<char*>(scratch);
  char* dev_in = dev_out + bytes * static_cast<size_t>(world_);
  absl::Status s = backend_->CopyFromHost(dev_in, in, bytes);
  if (s.ok()) s = comm_->AllGather(dev_in, dev_out, bytes, nullptr);
  if (s.ok()) s = backend_->CopyToHost(out, dev_out, bytes * static_cast<size_t>(world_));
  backend_->Free(scratch);
  return s;
}

absl::Status Runtime::ExchangeHostBytes(const std::vector<P2p>& sends,
                                        const std::vector<P2p>& recvs) {
  if (!comm_->UsesDeviceMemory()) return comm_->Exchange(sends, recvs, nullptr);
  // Sends, then receives, back to back in one scratch buffer, freed here (never in a step).
  size_t total = 0;
  for (const P2p& p : sends) total += static_cast<size_t>(p.bytes);
  for (const P2p& p : recvs) total += static_cast<size_t>(p.bytes);
  NORMUON_ASSIGN_OR_RETURN(void* scratch, backend_->Alloc(total));
  char* at = static_cast<char*>(scratch);
  std::vector<P2p> dev_sends, dev_recvs;
  absl::Status s;
  for (const P2p& p : sends) {
    if (s.ok() && p.bytes > 0) s = backend_->CopyFromHost(at, p.buf, static_cast<size_t>(p.bytes));
    dev_sends.push_back({p.peer, at, p.bytes});
    at += p.bytes;
  }
  for (const P2p& p : recvs) {
    dev_recvs.push_back({p.peer, at, p.bytes});
    at += p.bytes;
  }
  // The exchange happens even after a failed copy, so that no peer waits for this rank.
  const absl::Status exchanged = comm_->Exchange(dev_sends, dev_recvs, nullptr);
  if (s.ok()) s = exchanged;
  for (size_t i = 0; s.ok() && i < recvs.size(); ++i) {
    if (recvs[i].bytes > 0) {
      s = backend_->CopyToHost(recvs[i].buf, dev_recvs[i].buf, static_cast<size_t>(recvs[i].bytes));
    }
  }
  backend_->Free(scratch);
  return s;
}

absl::StatusOr<std::vector<std::vector<sharding::PieceRect>>> Runtime::AgreeOnRegistrations(
    const StepLayout& layout, std::vector<std::vector<sharding::RankPiece>>* extra,
    std::vector<std::vector<sharding::RankPiece>>* every) {
  const std::string mine = sharding::EncodeRegistration(layout.records, layout.extra_records);
  // Headers first (fixed size): the record counts must agree before the records can be
  // gathered; the extra pieces' counts may differ, so every encoding is padded to the longest.
  const size_t hb = sharding::kRegistrationHeaderBytes;
  std::string headers(hb * world_, '\0');
  NORMUON_RETURN_IF_ERROR(AllGatherHostBytes(mine.data(), headers.data(), hb));
  std::vector<std::string> per_rank(world_);
  for (int r = 0; r < world_; ++r) per_rank[r] = headers.substr(r * hb, hb);
  NORMUON_RETURN_IF_ERROR(sharding::CheckRegistrationHeadersAgree(per_rank));
  std::vector<size_t> lengths(world_);
  size_t longest = 0;
  for (int r = 0; r < world_; ++r) {
    NORMUON_ASSIGN_OR_RETURN(const uint64_t n, sharding::EncodedRegistrationBytes(per_rank[r]));
    lengths[r] = static_cast<size_t>(n);
    longest = std::max(longest, lengths[r]);
  }
  std::string padded = mine;
  padded.resize(longest, '\0');
  std::string all(longest * world_, '\0');
  NORMUON_RETURN_IF_ERROR(AllGatherHostBytes(padded.data(), all.data(), longest));
  for (int r = 0; r < world_; ++r) per_rank[r] = all.substr(r * longest, lengths[r]);
  NORMUON_RETURN_IF_ERROR(sharding::CheckRegistrationsAgree(per_rank));
  const size_t nmat = layout.matrix_records.size();
  std::vector<std::vector<sharding::PieceRect>> pieces(
      nmat, std::vector<sharding::PieceRect>(world_));
  extra->assign(nmat, {});
  every->assign(nmat, {});
  std::vector<int32_t> matrix_of(layout.records.size(), -1);  // record index -> matrix k
  for (size_t k = 0; k < nmat; ++k) matrix_of[layout.matrix_records[k]] = static_cast<int32_t>(k);
  bool any_extra = false;
  for (int r = 0; r < world_; ++r) {
    NORMUON_ASSIGN_OR_RETURN(std::vector<sharding::DecodedRecord> decoded,
                             sharding::DecodeRegistration(per_rank[r]));
    for (size_t k = 0; k < nmat; ++k) {
      const sharding::RegistrationRecord& x = decoded[layout.matrix_records[k]].record;
      pieces[k][r] = sharding::RecordPiece(x);
      (*every)[k].push_back(sharding::RankPiece{r, pieces[k][r], x.piece});
    }
    for (size_t e = layout.records.size(); e < decoded.size(); ++e) {
      const sharding::RegistrationRecord& x = decoded[e].record;
      const int32_t k = matrix_of[static_cast<size_t>(x.extra_of)];
      if (k < 0) return absl::InternalError("finalize: an extra piece of an AdamW parameter");
      (*extra)[k].push_back(sharding::RankPiece{r, sharding::RecordPiece(x), x.piece});
      (*every)[k].push_back((*extra)[k].back());
      any_extra = true;
    }
  }
  if (!any_extra) extra->clear();
  return pieces;
}

absl::StatusOr<Runtime::BufferCursor> Runtime::AllocateBuffers() {
  std::vector<void*> buffers;
  buffers.reserve(layout_.buffers.size());
  for (const BufferLayout& b : layout_.buffers) {
    NORMUON_ASSIGN_OR_RETURN(void* p, backend_->Alloc(static_cast<size_t>(b.bytes)));
    allocations_.push_back(p);
    allocated_bytes_ += b.bytes;
    buffers.push_back(p);
  }
  return BufferCursor(layout_, std::move(buffers));
}

absl::Status Runtime::Finalize() {
  if (finalized_) return absl::FailedPreconditionError("finalize called twice");
  absl::Status s = Wire();
  if (!s.ok()) Unwire();  // all or nothing: a failed finalize leaves the registrations only
  return s;
}

absl::Status Runtime::Wire() {
  NORMUON_ASSIGN_OR_RETURN(layout_, Layout());
  // Every rank must agree on what was registered (blocks included), and the rows of every unit
  // must be covered exactly; CheckRegistrationsAgree checks both.
  std::vector<std::vector<sharding::RankPiece>> extra;
  NORMUON_ASSIGN_OR_RETURN(auto pieces, AgreeOnRegistrations(layout_, &extra, &pieces_of_));
  // Two-dimensional pieces: a block is column-split when any rank holds less than all its
  // columns; every rank decides from the same records, and the layout is remade with the verdict
  // (its slot and v all-reduce lengths must be the same on every rank).
  std::vector<char> column_split(pieces.size(), 0);
  for (size_t k = 0; k < pieces.size(); ++k) {
    for (const sharding::RankPiece& q : pieces_of_[k]) {
      const sharding::PieceRect& r = q.rect;
      if (r.row_count > 0 && r.col_count > 0 && r.col_count < layout_.shapes[k].cols) {
        column_split[k] = 1;
      }
    }
  }
  NORMUON_ASSIGN_OR_RETURN(layout_, Layout(column_split));
  if (world_ > 1 && config_.backend == NORMUON_BACKEND_CPU) {
    // N ranks share this machine's cores: one BLAS thread each (docs/ARCHITECTURE.md section 6,
    // "Machine limits").
    openblas_set_num_threads(1);
  }
  NORMUON_ASSIGN_OR_RETURN(BufferCursor buffers, AllocateBuffers());
  control_ = buffers.Take<StepControl>(BufferRole::kControl);
  dev_scalars_ = buffers.Take<GroupScalars>(BufferRole::kScalars);
  host_scalars_.resize(groups_.size());
  slots_local_ = buffers.Take<float>(BufferRole::kSlotsLocal);
  // One rank: its slots are the complete ones.
  slots_total_ = world_ > 1 ? buffers.Take<float>(BufferRole::kSlotsTotal) : slots_local_;
  NORMUON_RETURN_IF_ERROR(WireBuckets(pieces, extra, buffers));
  WireMatrices(buffers);
  WireAdamW(buffers);
  if (layout_.vsync_floats > 0) {
    vsync_local_ = buffers.Take<float>(BufferRole::kVSyncLocal);
    vsync_total_ = buffers.Take<float>(BufferRole::kVSyncTotal);
  }
  NORMUON_RETURN_IF_ERROR(WireElementV(pieces, extra, buffers));
  if (!buffers.Done()) {
    return absl::InternalError("finalize: the wiring does not follow the step layout's buffers");
  }
  const StepControl init{kNoParam, 0, 0, 0, kNoParam, 0, 0};
  NORMUON_RETURN_IF_ERROR(backend_->CopyFromHost(control_, &init, sizeof(init)));

  grad_ready_.assign(params_.size(), 0);
  bucket_pending_.resize(buckets_.size());
  skip_momentum_.assign(buckets_.size(), 0);
  ResetReady();
  NORMUON_RETURN_IF_ERROR(backend_->Prepare(batches_));
  if (config_.cuda_graph) {
    NORMUON_RETURN_IF_ERROR(backend_->PrepareGraph(sizeof(GroupScalars) * groups_.size()));
  }
  // An asynchronous backend overlaps the exchanges with Newton-Schulz on two streams, driven by
  // the same two-thread pipeline as the CPU (which then only queues work).
  two_streams_ = !backend_->IsSynchronous() && world_ > 1 &&
                 config_.schedule != NORMUON_SCHEDULE_SEQUENTIAL && !buckets_.empty();
  const int32_t nb = static_cast<int32_t>(buckets_.size());
  if (two_streams_) NORMUON_RETURN_IF_ERROR(backend_->PrepareCommStream(4 * nb + 1));
  NORMUON_RETURN_IF_ERROR(timing_.Prepare(backend_.get(), nb, two_streams_));
  NORMUON_RETURN_IF_ERROR(MakePipeline());
  finalized_ = true;
  return absl::OkStatus();
}

void Runtime::Unwire() {
  pipeline_.reset();
  for (void* p : allocations_) backend_->Free(p);
  allocations_.clear();
  allocated_bytes_ = 0;
  buckets_.clear();
  matrices_.clear();
  more_parts_.clear();
  pieces_of_.clear();
  adamw_.clear();
  batches_.clear();
  owner_u_.clear();
  owner_o_.clear();
  owner_v_.clear();
  v_out_.clear();
  for (Param& p : params_) {
    p.momentum = p.second = p.v_new = nullptr;
    p.work = -1;
    p.blocks.clear();
  }
  control_ = nullptr;
  dev_scalars_ = nullptr;
  slots_local_ = slots_total_ = nullptr;
  vsync_local_ = vsync_total_ = nullptr;
  adamw_steps_ = nullptr;
  two_streams_ = false;
  layout_ = StepLayout();
}

// Per bucket: its segment plan from every rank's rows, its message buffers, one region per peer
// as the plan lays them out, and the owner's U and O per batch.
absl::Status Runtime::WireBuckets(const std::vector<std::vector<sharding::PieceRect>>& pieces,
                                  const std::vector<std::vector<sharding::RankPiece>>& extra,
                                  BufferCursor& buffers) {
  const int64_t ns = static_cast<int64_t>(SizeOf(ns_dtype_));
  sharding::PlanInputs in;
  in.shapes = layout_.shapes;
  in.pieces = pieces;
  in.extra_pieces = extra;
  in.world = world_;
  in.rank = rank_;
  in.wire_bytes_per_element = ns;
  for (const MatrixUnit& u : layout_.matrices) in.owners.push_back(u.owner);
  const size_t nmat = layout_.matrices.size();
  owner_u_.assign(nmat, nullptr);
  owner_o_.assign(nmat, nullptr);
  for (const BucketLayout& bl : layout_.buckets) {
    Bucket b;
    b.matrices = bl.matrices;
    NORMUON_ASSIGN_OR_RETURN(b.plan, sharding::MakeRankPlanForMatrices(
                                         in, std::vector<int>(bl.matrices.begin(), bl.matrices.end())));
    const auto [send_total, recv_total] =
        PeerOffsets(b.plan, world_, &b.send_offset, &b.recv_offset);
    // The layout sized these from this rank's rows alone; the plan from every rank's.
    if (send_total != bl.send_bytes || recv_total != bl.recv_bytes ||
        b.plan.batches.size() != bl.batches.size()) {
      return absl::InternalError(absl::StrCat(
          "finalize: the step layout and the plan disagree on a bucket (send ", bl.send_bytes,
          " vs ", send_total, " bytes, receive ", bl.recv_bytes, " vs ", recv_total, ")"));
    }
    b.send_buf = buffers.Take<char>(BufferRole::kSend);
    b.recv_buf = buffers.Take<char>(BufferRole::kRecv);
    // The scatter sends from the gather's receive layout and receives into its send layout.
    for (int p = 0; p < world_; ++p) {
      const uint64_t out = static_cast<uint64_t>(b.plan.gather_send_bytes[p]);
      const uint64_t back = static_cast<uint64_t>(b.plan.gather_recv_bytes[p]);
      if (out > 0) {
        b.gather_sends.push_back({p, b.send_buf + b.send_offset[p], out});
        b.scatter_recvs.push_back({p, b.send_buf + b.send_offset[p], out});
      }
      if (back > 0) {
        b.gather_recvs.push_back({p, b.recv_buf + b.recv_offset[p], back});
        b.scatter_sends.push_back({p, b.recv_buf + b.recv_offset[p], back});
      }
    }
    b.batches = bl.batches;
    buckets_.push_back(std::move(b));
  }
  // The owner's full U and O, one pair of buffers per same-shape batch of owned matrices.
  for (const BatchLayout& bl : layout_.batches) {
    const int64_t elems = bl.rows * bl.cols;
    char* u = buffers.Take<char>(BufferRole::kBatchU);
    char* o = buffers.Take<char>(BufferRole::kBatchO);
    NsBatch b;
    b.rows = bl.rows;
    b.cols = bl.cols;
    b.count = static_cast<int64_t>(bl.matrices.size());
    b.u = u;
    b.o = o;
    b.dtype = ns_dtype_;
    b.ns_eps = config_.ns_eps;
    b.ns_norm_scale = config_.ns_norm_scale;
    b.coefficients = coefficients_;
    b.method = ns_method_;
    b.restarts = ns_restarts_;
    b.symmetric = ns_symmetric_;
    b.control = control_;
    for (size_t j = 0; j < bl.matrices.size(); ++j) {
      b.params.push_back(layout_.matrices[bl.matrices[j]].param);
      owner_u_[bl.matrices[j]] = u + static_cast<int64_t>(j) * elems * ns;
      owner_o_[bl.matrices[j]] = o + static_cast<int64_t>(j) * elems * ns;
    }
    batches_.push_back(b);
  }
  return absl::OkStatus();
}

void Runtime::PointPart(int32_t k, size_t j, MatrixWork* w) const {
  const UnitPart& part = layout_.matrices[k].parts[j];
  const Param& p = params_[layout_.matrices[k].param];
  const PieceSpec q = PieceOf(p, static_cast<size_t>(part.piece));  // no allocation: bind
  w->ld = q.ld;
  w->param = part.mine.row_count > 0 || p.pieces.empty()
                 ? OffsetRows(q.param, part.piece_row, q.ld, p.param_dtype)
                 : nullptr;
  w->grad = part.mine.row_count > 0 || p.pieces.empty()
                ? OffsetRows(q.grad, part.piece_row, q.ld, p.grad_dtype)
                : nullptr;
}

void Runtime::WireMatrices(BufferCursor& buffers) {
  const int64_t ns = static_cast<int64_t>(SizeOf(ns_dtype_));
  const bool column_axis = config_.neuron_axis == NORMUON_NEURON_COLUMNS;
  more_parts_.assign(layout_.matrices.size(), {});
  for (int32_t k = 0; k < static_cast<int32_t>(layout_.matrices.size()); ++k) {
    const MatrixUnit& u = layout_.matrices[k];
    Param& p = params_[u.param];
    if (p.blocks.empty()) {  // the parameter's state; its blocks point inside it
      p.momentum = buffers.Take<float>(BufferRole::kMomentum);
      p.second = buffers.Take<float>(BufferRole::kSecond);
      p.v_new = buffers.Take<float>(BufferRole::kVNew);
      p.work = k;
    }
    p.blocks.push_back(k);
    float* scale = buffers.Take<float>(BufferRole::kScale);
    for (size_t j = 0; j < u.parts.size(); ++j) {
      const UnitPart& part = u.parts[j];
      MatrixWork w;
      w.index = u.param;
      w.rows = u.rows;
      w.cols = u.cols;
      w.row_begin = part.mine.row_begin;
      w.row_count = part.mine.row_count;
      // The part's columns; param and grad step its piece's ld elements per row (p.cols for
      // whole rows).
      w.col_begin = part.col_begin;
      w.col_count = part.col_count;
      PointPart(k, j, &w);
      w.param_dtype = p.param_dtype;
      w.grad_dtype = p.grad_dtype;
      w.momentum = p.momentum + part.state_offset;
      w.v = p.second + part.v_offset;
      w.v_new = p.v_new + part.v_offset;
      // This rank's rows of U are written where they travel from: inside the owner's full
      // buffer when this rank owns the matrix, else into the message to the owner. O comes back
      // to the same place. A column piece owned here is written into the full U at its place
      // (rows of p.cols).
      char* rows_at = nullptr;
      if (u.owner == rank_) {
        const int64_t at = (w.row_begin * p.cols + part.col_begin) * ns;
        rows_at = owner_u_[k] + at;
        w.o_rows = owner_o_[k] + at;
        w.u_ld = p.cols;
      } else if (part.mine.row_count > 0) {
        const bool whole = part.col_begin == 0 && part.col_count == u.cols;
        const Bucket& bucket = buckets_[u.bucket];
        for (const sharding::Segment& seg : bucket.plan.gather_sends[u.owner]) {
          if (seg.matrix == k && seg.row_begin == part.mine.row_begin &&
              (whole ? seg.col_count == 0 : seg.col_begin == part.col_begin)) {
            rows_at = bucket.send_buf + bucket.send_offset[u.owner] + seg.offset;
          }
        }
        w.o_rows = rows_at;
      }
      w.u_rows = rows_at;
      w.row_slots = slots_local_ + u.slot_offset;
      w.row_slots_total = slots_total_ + u.slot_offset;
      w.column_axis = column_axis;
      w.scale = scale;
      w.scalars = dev_scalars_ + p.group;
      w.variant = static_cast<Variant>(config_.variant);
      w.nesterov = config_.nesterov != 0;
      w.ns_dtype = ns_dtype_;
      w.shape_factor =
          static_cast<float>(ShapeFactor(config_.variant, config_.lr_adjust, w.rows, w.cols));
      w.cautious_wd = config_.cautious_weight_decay != 0;
      w.control = control_;
      if (j == 0) {
        matrices_.push_back(w);
      } else {
        more_parts_[k].push_back(w);
      }
    }
  }
}

// AdaMuon's column-split blocks: per bucket that has any, a plan over them alone with fp32
// elements (the v pieces travel as the U pieces do, to the same owners), its message buffers and
// exchange lists; then each owned block's whole v, and where each piece of v goes.
absl::Status Runtime::WireElementV(const std::vector<std::vector<sharding::PieceRect>>& pieces,
                                   const std::vector<std::vector<sharding::RankPiece>>& extra,
                                   BufferCursor& buffers) {
  const size_t nmat = layout_.matrices.size();
  owner_v_.assign(nmat, nullptr);
  v_out_.assign(nmat, {});
  sharding::PlanInputs in;
  in.shapes = layout_.shapes;
  in.pieces = pieces;
  in.extra_pieces = extra;
  in.world = world_;
  in.rank = rank_;
  in.wire_bytes_per_element = 4;
  for (const MatrixUnit& u : layout_.matrices) in.owners.push_back(u.owner);
  for (size_t bi = 0; bi < buckets_.size(); ++bi) {
    Bucket& b = buckets_[bi];
    std::vector<int> split;
    for (int32_t k : b.matrices) {
      if (layout_.matrices[k].element_v_split) split.push_back(k);
    }
    if (split.empty()) continue;
    NORMUON_ASSIGN_OR_RETURN(b.vplan, sharding::MakeRankPlanForMatrices(in, split));
    const auto [send_total, recv_total] =
        PeerOffsets(b.vplan, world_, &b.vsend_offset, &b.vrecv_offset);
    const BucketLayout& bl = layout_.buckets[bi];
    if (send_total != bl.v_send_bytes || recv_total != bl.v_recv_bytes) {
      return absl::InternalError(absl::StrCat(
          "finalize: the step layout and the plan disagree on a bucket's v message (send ",
          bl.v_send_bytes, " vs ", send_total, " bytes, receive ", bl.v_recv_bytes, " vs ",
          recv_total, ")"));
    }
    b.vsend_buf = buffers.Take<char>(BufferRole::kVSend);
    b.vrecv_buf = buffers.Take<char>(BufferRole::kVRecv);
    for (int p = 0; p < world_; ++p) {
      const uint64_t out = static_cast<uint64_t>(b.vplan.gather_send_bytes[p]);
      const uint64_t in_bytes = static_cast<uint64_t>(b.vplan.gather_recv_bytes[p]);
      if (out > 0) b.vgather_sends.push_back({p, b.vsend_buf + b.vsend_offset[p], out});
      if (in_bytes > 0) b.vgather_recvs.push_back({p, b.vrecv_buf + b.vrecv_offset[p], in_bytes});
    }
  }
  for (size_t k = 0; k < nmat; ++k) {
    const MatrixUnit& u = layout_.matrices[k];
    if (u.element_v_split && u.owner == rank_) owner_v_[k] = buffers.Take<float>(BufferRole::kVFull);
  }
  for (size_t k = 0; k < nmat; ++k) {
    const MatrixUnit& u = layout_.matrices[k];
    if (!u.element_v_split) continue;
    v_out_[k].assign(u.parts.size(), nullptr);
    for (size_t j = 0; j < u.parts.size(); ++j) {
      const UnitPart& part = u.parts[j];
      if (part.mine.row_count == 0) continue;
      if (u.owner == rank_) {
        v_out_[k][j] = owner_v_[k] + part.mine.row_begin * u.cols + part.col_begin;
        continue;
      }
      // The part's segment of the v message, found as WireMatrices finds its U segment.
      const bool whole = part.col_begin == 0 && part.col_count == u.cols;
      const Bucket& b = buckets_[u.bucket];
      for (const sharding::Segment& seg : b.vplan.gather_sends[u.owner]) {
        if (seg.matrix == static_cast<int>(k) && seg.row_begin == part.mine.row_begin &&
            (whole ? seg.col_count == 0 : seg.col_begin == part.col_begin)) {
          v_out_[k][j] =
              reinterpret_cast<float*>(b.vsend_buf + b.vsend_offset[u.owner] + seg.offset);
        }
      }
      if (v_out_[k][j] == nullptr) {
        return absl::InternalError(
            absl::StrCat("finalize: no v message segment for '", u.name, "' part ", j));
      }
    }
  }
  return absl::OkStatus();
}

void Runtime::WireAdamW(BufferCursor& buffers) {
  adamw_steps_ = buffers.Take<int64_t>(BufferRole::kAdamWSteps);
  for (int32_t i : layout_.adamw_params) {
    Param& p = params_[i];
    p.momentum = buffers.Take<float>(BufferRole::kMomentum);
    p.second = buffers.Take<float>(BufferRole::kSecond);
    AdamWWork w;
    w.index = i;
    w.count = p.row_count * p.cols;
    w.param = p.param;
    w.param_dtype = p.param_dtype;
    w.grad = p.grad;
    w.grad_dtype = p.grad_dtype;
    w.exp_avg = p.momentum;
    w.exp_avg_sq = p.second;
    w.step = adamw_steps_ + adamw_.size();
    w.scalars = dev_scalars_ + p.group;
    w.cautious_wd = config_.cautious_weight_decay != 0;
    p.work = static_cast<int32_t>(adamw_.size());
    adamw_.push_back(w);
  }
}

absl::Status Runtime::MakePipeline() {
  if (config_.schedule == NORMUON_SCHEDULE_SEQUENTIAL ||
      !(backend_->IsSynchronous() || two_streams_)) {
    return absl::OkStatus();
  }
  BucketPipeline::Stages stages;
  if (!two_streams_) {
    stages.momentum = [this](int b) { return MomentumBucket(b); };
    stages.gather = [this](int b) { return GatherBucket(b); };
    stages.newton_schulz = [this](int b) { return NewtonSchulzBucket(b); };
    stages.scatter = [this](int b) { return ScatterBucket(b); };
    stages.row_stats = [this](int b) { return RowStatsBucket(b); };
  } else {
    stages.momentum = [this](int b) { return TwoStreamStage(kStageMomentum, b); };
    stages.gather = [this](int b) { return TwoStreamStage(kStageGather, b); };
    stages.newton_schulz = [this](int b) { return TwoStreamStage(kStageNewtonSchulz, b); };
    stages.scatter = [this](int b) { return TwoStreamStage(kStageScatter, b); };
    stages.row_stats = [this](int b) { return TwoStreamStage(kStageRowStats, b); };
  }
  // After a failure: the bare exchanges (two streams: on the communication stream, without the
  // hand-off waits; what they move is never committed).
  stages.drain = [this](int b, bool gather) { return gather ? GatherBucket(b) : ScatterBucket(b); };
  std::vector<int64_t> counts;
  for (const Bucket& b : buckets_) counts.push_back(static_cast<int64_t>(b.matrices.size()));
  pipeline_ = std::make_unique<BucketPipeline>(static_cast<int>(buckets_.size()), stages,
                                               sharding::PipelineOrder(counts, world_));
  return absl::OkStatus();
}

absl::Status Runtime::Bind(int32_t param, void* param_ptr, const void* grad_ptr) {
  NORMUON_RETURN_IF_ERROR(CheckParam(param));
  if (!params_[param].pieces.empty()) {
    return Invalid(absl::StrCat("param = ", param, " ('", params_[param].name, "') was registered "
                                "with ", params_[param].pieces.size(), " pieces "
                                "(desc.pieces): bind each with normuon_bind_piece"));
  }
  return BindBuffers(param, -1, param_ptr, grad_ptr);
}

absl::Status Runtime::BindPiece(int32_t param, int32_t piece, void* param_ptr,
                                const void* grad_ptr) {
  NORMUON_RETURN_IF_ERROR(CheckParam(param));
  const Param& p = params_[param];
  if (p.pieces.empty()) {
    return Invalid(absl::StrCat("param = ", param, " ('", p.name, "') was registered without "
                                "desc.pieces: bind it with normuon_bind"));
  }
  if (piece < 0 || piece >= static_cast<int32_t>(p.pieces.size())) {
    return Invalid(absl::StrCat("piece = ", piece, " is not a piece of '", p.name, "' (",
                                p.pieces.size(), " registered)"));
  }
  return BindBuffers(param, piece, param_ptr, grad_ptr);
}

absl::Status Runtime::BindBuffers(int32_t param, int32_t piece, void* param_ptr,
                                  const void* grad_ptr) {
  Param& p = params_[param];
  // Inside a step begun by grad_ready, a matrix already marked may be in flight on the
  // pipeline's threads; the others (and AdamW parameters) are read only at step.
  if (step_begun_ && p.kind == Kind::kMatrix && grad_ready_[param]) {
    return absl::FailedPreconditionError(absl::StrCat(
        "bind of '", p.name,
        "' after its normuon_grad_ready in this step: its buffers are in use until step"));
  }
  void** param_at = piece < 0 ? &p.param : &p.pieces[piece].param;
  const void** grad_at = piece < 0 ? &p.grad : &p.pieces[piece].grad;
  NORMUON_RETURN_IF_ERROR(
      piece < 0 ? ValidatePointers(p, param_ptr, grad_ptr)
                : ValidatePointers(p, param_ptr, grad_ptr, p.pieces[piece].row_count,
                                   absl::StrCat(", piece ", piece)));
  // Graph mode: the captured graph holds the old pointers; the next step captures again.
  if (finalized_ && (*param_at != param_ptr || *grad_at != grad_ptr)) backend_->DropGraph();
  *param_at = param_ptr;
  *grad_at = grad_ptr;
  if (finalized_) {
    if (p.kind == Kind::kMatrix) {
      for (int32_t k : p.blocks) {
        const std::vector<UnitPart>& parts = layout_.matrices[k].parts;
        for (size_t j = 0; j < parts.size(); ++j) {
          if (piece >= 0 && parts[j].piece != piece) continue;
          PointPart(k, j, j == 0 ? &matrices_[k] : &more_parts_[k][j - 1]);
        }
      }
    } else {
      adamw_[p.work].param = param_ptr;
      adamw_[p.work].grad = grad_ptr;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Runtime::StateSize(int32_t param, normuon_state_kind_t kind) const {
  NORMUON_RETURN_IF_ERROR(CheckParam(param));
  const Param& p = params_[param];
  return StateBytesLocal(p.kind, config_.variant, config_.neuron_axis, p.cols,
                         static_cast<int64_t>(p.splits.size()), LocalRows(p), LocalElements(p),
                         kind);
}

absl::StatusOr<void*> Runtime::StateBuffer(int32_t param, normuon_state_kind_t kind,
                                           uint64_t bytes, const void* host,
                                           absl::string_view host_name) {
  if (!finalized_) return absl::FailedPreconditionError("state access before finalize");
  // A begun step has read the state (momentum, v) of its ready buckets and commits from it at
  // step: writing it now would mix two states in one step. Reading is safe: nothing writes state
  // before the commit.
  if (step_begun_ && host_name == "src") {
    return absl::FailedPreconditionError(
        "set_state inside a step that normuon_grad_ready began: call normuon_step or "
        "normuon_step_cancel first");
  }
  NORMUON_ASSIGN_OR_RETURN(uint64_t size, StateSize(param, kind));
  const Param& p = params_[param];
  if (size == 0) {
    return Invalid(absl::StrCat("kind = ", static_cast<int>(kind), " does not apply to parameter '",
                                p.name, "'"));
  }
  if (bytes != size) {
    return Invalid(absl::StrCat("bytes = ", bytes, " but the state of '", p.name, "' is ", size));
  }
  if (host == nullptr) return Invalid(absl::StrCat(host_name, " is null"));
  switch (kind) {
    case NORMUON_STATE_MOMENTUM:
    case NORMUON_STATE_EXP_AVG:
      return p.momentum;
    case NORMUON_STATE_SECOND_MOMENT:
    case NORMUON_STATE_EXP_AVG_SQ:
      return p.second;
    case NORMUON_STATE_STEP:
      return adamw_[p.work].step;
    case NORMUON_STATE_KIND_MIN_ENUM:
    case NORMUON_STATE_KIND_MAX_ENUM:
      break;
  }
  return absl::InternalError("unreachable state kind");
}

absl::Status Runtime::GetState(int32_t param, normuon_state_kind_t kind, void* dst,
                               uint64_t bytes) {
  NORMUON_ASSIGN_OR_RETURN(void* buffer, StateBuffer(param, kind, bytes, dst, "dst"));
  return backend_->CopyToHost(dst, buffer, bytes);
}

absl::Status Runtime::SetState(int32_t param, normuon_state_kind_t kind, const void* src,
                               uint64_t bytes) {
  NORMUON_ASSIGN_OR_RETURN(void* buffer, StateBuffer(param, kind, bytes, src, "src"));
  if (kind == NORMUON_STATE_STEP) {
    int64_t value;
    std::memcpy(&value, src, sizeof(value));
    if (value < 0) return Invalid(absl::StrCat("step count = ", value, " must be >= 0"));
  }
  return backend_->CopyFromHost(buffer, src, bytes);
}

}  // namespace normuon
