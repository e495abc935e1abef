/* normuon.h: the public C API of the normuon runtime, version 1.
 *
 * The runtime performs one optimizer step of the NorMuon family (momentum, Newton-Schulz
 * orthogonalization, per-neuron second-moment normalization, update) on parameters that the
 * caller owns, plus AdamW for the parameters that are not matrices. The caller hands raw
 * pointers (host memory for the CPU backend, device memory for the CUDA backend), shard
 * metadata and a stream; the runtime updates the parameters in place.
 *
 * Conventions, for every function below (docs/ARCHITECTURE.md section 7):
 * - Status: every call returns a normuon_status_t (except the few that return a value and say
 *   so). On failure nothing the call was meant to change has changed, [out] arguments included,
 *   and normuon_last_error(rt) returns a message naming the field, the parameter and the value
 *   seen (per handle; thread-safe for calls on different handles).
 * - Pointers are marked [in] (read during the call only, unless the function says it keeps
 *   something), [out] (written only when the call succeeds) or [in,out]. NULL is an error
 *   (NORMUON_ERROR_INVALID_ARGUMENT naming the argument) unless the function says it may be NULL.
 * - Ownership and lifetime: the library never frees and never keeps a caller's pointer past the
 *   call, with one exception: the parameter and gradient buffers of normuon_register_matrix,
 *   normuon_register_adamw, normuon_bind and normuon_bind_piece (a piece's, from
 *   normuon_param_desc_t.pieces), which the runtime reads and writes until they are
 *   rebound or the runtime is destroyed (the caller keeps them valid that long). What it needs
 *   later (names, row splits, coefficients) it copies. Handles are the library's and freed by
 *   their destroy function; strings it returns are its own (see each function for how long
 *   they stay valid).
 * - Handles are opaque 64-bit ids with a generation count: 0 is never valid, and a destroyed
 *   handle, or a handle of the other kind (a communicator passed as a runtime), is reported as
 *   NORMUON_ERROR_INVALID_HANDLE, not dereferenced.
 * - Threads: calls on one runtime are serialized (a call waits until another thread's call on
 *   the same handle returns); calls on different runtimes run in parallel.
 * - Blocking: on the CPU backend a call does all its work before it returns. On the CUDA
 *   backend normuon_grad_ready and normuon_step queue device work on the caller's stream and
 *   return without waiting for it; the calls that read or overwrite what a step computes
 *   (normuon_step_result, normuon_last_step_profile, normuon_last_step_trace, normuon_get_state,
 *   normuon_set_state, the checkpoint calls) first wait for the last step to complete.
 *   Collective calls (normuon_finalize, normuon_step, normuon_step_cancel, the checkpoint calls)
 *   wait for the other ranks, at most for the communicator's timeout (NORMUON_ERROR_TIMEOUT):
 *   no call waits forever (except on a device kernel that never ends: see normuon/comm.h).
 * - Streams: a `stream` argument is a cudaStream_t for the CUDA backend (NULL = the legacy
 *   default stream) and is ignored on CPU. One stream per step: every normuon_grad_ready and the
 *   normuon_step of one step must pass the same stream (another one is
 *   NORMUON_ERROR_INVALID_ARGUMENT naming the stream). Calls without a stream argument do their
 *   device work synchronously, after the last step.
 * - Versioned structs: every struct with a struct_size field carries the size the caller's
 *   header gave it. Fill it with its *_init function (struct_size = this library's size, the
 *   documented defaults) before setting fields. Each struct's comment says where its first
 *   version ended; fields were only ever appended after it, and a field added later means "as
 *   before the field existed" when it is 0. Accepted sizes:
 *     - any version's size from the first on (an older caller): an input struct's fields past
 *       struct_size keep the *_init defaults; an output struct is written up to struct_size.
 *     - a larger size, from a newer header (up to 4096 bytes): an input struct is accepted when
 *       every byte past this library's struct is 0 and refused otherwise (it sets something
 *       this library does not have); an output struct is written up to this library's size and
 *       the bytes past it are left as they are.
 *   Refused, NORMUON_ERROR_INVALID_ARGUMENT naming <argument>.struct_size: a size below the
 *   first version, a size that ends inside a field, a size above 4096.
 * - Matrices are row-major, rows = output neurons. A rank holds the contiguous rows
 *   [row_begin, row_begin + row_count) of each parameter (FSDP's dim-0 sharding), and of a
 *   matrix optionally only the columns [col_begin, col_begin + col_count) (tensor parallel x
 *   FSDP), or several such rectangles (normuon_param_desc_t.pieces).
 * - Pure C99: usable from C, C++, Python ctypes, Rust.
 */
#ifndef NORMUON_NORMUON_H_
#define NORMUON_NORMUON_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define NORMUON_API
#else
#define NORMUON_API __attribute__((visibility("default")))
#endif

#define NORMUON_VERSION_MAJOR 0
#define NORMUON_VERSION_MINOR 1
#define NORMUON_VERSION_PATCH 0
/* The version of this header's structs and functions. */
#define NORMUON_API_VERSION 1

typedef enum normuon_status {
  NORMUON_SUCCESS = 0,
  NORMUON_ERROR_INVALID_ARGUMENT = 1, /* a field or argument is wrong; the message names it */
  NORMUON_ERROR_INVALID_HANDLE = 2,   /* 0, unknown or already destroyed handle */
  NORMUON_ERROR_INVALID_STATE = 3,    /* e.g. step before finalize, register after finalize */
  NORMUON_ERROR_UNSUPPORTED = 4,      /* valid request this build or backend cannot run */
  NORMUON_ERROR_OUT_OF_MEMORY = 5,
  NORMUON_ERROR_CUDA = 6,             /* a CUDA or cuBLAS call failed */
  NORMUON_ERROR_COMM = 7,             /* a communicator failed; see the message */
  NORMUON_ERROR_NONFINITE = 8,        /* NaN/Inf gradient with check_finite on: step skipped */
  NORMUON_ERROR_TIMEOUT = 9,
  NORMUON_ERROR_INTERNAL = 10,
  NORMUON_STATUS_MIN_ENUM = -0x7fffffff - 1, /* with MAX_ENUM: the enum holds any int32 */
  NORMUON_STATUS_MAX_ENUM = 0x7fffffff
} normuon_status_t;

/* A short constant name for a status ("NORMUON_ERROR_INVALID_ARGUMENT"); for a value outside the
 * enum, "NORMUON_ERROR_UNKNOWN_STATUS". Returns a static string (never NULL, never freed). Any
 * thread, never blocks. */
NORMUON_API const char* normuon_status_string(normuon_status_t status);

/* The library's version (major * 10000 + minor * 100 + patch); compare with the header's. Any
 * thread, never blocks. */
NORMUON_API int normuon_version(void);

/* True (1) when this build has the CUDA backend, 0 for a CPU-only build. Any thread, never
 * blocks. */
NORMUON_API int normuon_has_cuda(void);

typedef uint64_t normuon_runtime_t; /* 0 = none */
typedef uint64_t normuon_comm_t;    /* 0 = single rank (world size 1) */
typedef int32_t normuon_param_t;    /* index of a registered parameter, in registration order */
typedef int32_t normuon_group_t;    /* index of a hyper-parameter group */

typedef enum normuon_backend {
  NORMUON_BACKEND_CPU = 0, /* host pointers; OpenBLAS GEMMs; the readable reference */
  NORMUON_BACKEND_CUDA = 1, /* device pointers on config.device; cuBLAS GEMMs */
  NORMUON_BACKEND_MIN_ENUM = -0x7fffffff - 1, /* with MAX_ENUM: the enum holds any int32 */
  NORMUON_BACKEND_MAX_ENUM = 0x7fffffff
} normuon_backend_t;

typedef enum normuon_dtype {
  NORMUON_DTYPE_FP32 = 0,
  NORMUON_DTYPE_BF16 = 1,
  NORMUON_DTYPE_MIN_ENUM = -0x7fffffff - 1, /* with MAX_ENUM: the enum holds any int32 */
  NORMUON_DTYPE_MAX_ENUM = 0x7fffffff
} normuon_dtype_t;

/* Precision of the gather, the Newton-Schulz GEMMs and the scatter. */
typedef enum normuon_ns_dtype {
  NORMUON_NS_DEFAULT = 0, /* fp32 on CPU, bf16 on CUDA */
  NORMUON_NS_FP32 = 1,    /* fp32 everywhere (cuBLAS sgemm with TF32 off on CUDA) */
  NORMUON_NS_BF16 = 2,     /* bf16 wire and GEMM inputs, fp32 accumulation */
  NORMUON_NS_FP16 = 3,     /* CUDA only (refused on CPU): fp16 GEMM inputs and Newton-Schulz
                              intermediates, fp32 accumulation; bf16 on the wire. The published
                              choice for ns_method = GRAM (fp16's 10-bit mantissa) */
  NORMUON_NS_DTYPE_MIN_ENUM = -0x7fffffff - 1, /* with MAX_ENUM: the enum holds any int32 */
  NORMUON_NS_DTYPE_MAX_ENUM = 0x7fffffff
} normuon_ns_dtype_t;

/* Which rank orthogonalizes each matrix (docs/ARCHITECTURE.md section 2). */
typedef enum normuon_owner_policy {
  NORMUON_OWNER_ROUND_ROBIN = 0,  /* size-sorted matrices dealt to ranks in turn (the paper's) */
  NORMUON_OWNER_COST_BALANCED = 1, /* greedy longest-processing-time on the NS5 FLOP count */
  NORMUON_OWNER_POLICY_MIN_ENUM = -0x7fffffff - 1, /* with MAX_ENUM: the enum holds any int32 */
  NORMUON_OWNER_POLICY_MAX_ENUM = 0x7fffffff
} normuon_owner_policy_t;

/* How the communication of a step is ordered against its compute (docs/ARCHITECTURE.md section 3). Every
 * schedule gives the same parameters (bitwise on CPU). Buckets are contiguous runs of matrices
 * in reverse registration order (the order a backward pass finishes them). */
typedef enum normuon_schedule {
  NORMUON_SCHEDULE_SEQUENTIAL = 0, /* gather all, Newton-Schulz all, scatter all: no overlap */
  NORMUON_SCHEDULE_PER_MATRIX = 1, /* each matrix its own bucket, pipelined */
  NORMUON_SCHEDULE_BUCKETED = 2,    /* buckets of about bucket_bytes, pipelined: bucket k+1's
                                      gather and k-1's scatter overlap bucket k's Newton-Schulz */
  NORMUON_SCHEDULE_MIN_ENUM = -0x7fffffff - 1, /* with MAX_ENUM: the enum holds any int32 */
  NORMUON_SCHEDULE_MAX_ENUM = 0x7fffffff
} normuon_schedule_t;

/* Post-orthogonalization rule (docs/ARCHITECTURE.md section 1 and 6, "Variants, pinned"). */
typedef enum normuon_variant {
  NORMUON_VARIANT_NORMUON = 0,       /* official: norm restore, then sqrt(max(1, m/n)) */
  NORMUON_VARIANT_NORMUON_PAPER = 1, /* O' * 0.2 * sqrt(m*n) / (||O'||_F + eps) */
  NORMUON_VARIANT_MUON = 2,          /* no second moment: O * sqrt(max(1, m/n)) */
  NORMUON_VARIANT_ADAMUON = 3,        /* AdaMuon (its authors' code): per-element v with bias
                                        correction, O' = O / (sqrt(v_hat) + eps) scaled to
                                        Frobenius norm sqrt(min(m,n)), times 0.2*sqrt(max(m,n)).
                                        Its authors use beta2 = 0.999 and eps = 1e-8: set them. */
  NORMUON_VARIANT_MIN_ENUM = -0x7fffffff - 1, /* with MAX_ENUM: the enum holds any int32 */
  NORMUON_VARIANT_MAX_ENUM = 0x7fffffff
} normuon_variant_t;

/* Which axis holds the neurons whose second moment v normalizes the update (NorMuon variants). */
typedef enum normuon_neuron_axis {
  NORMUON_NEURON_ROWS = 0,   /* one v per row (output neuron): shard-local under row sharding */
  NORMUON_NEURON_COLUMNS = 1, /* one v per column, kept by every rank; the column statistics are
                                computed on each matrix's owner (which holds it whole) and travel
                                in the step's all-reduce. Checkpoints keep it (a checkpoint loads
                                only with the same axis and, for fused matrices, the same number
                                of row_splits blocks). */
  NORMUON_NEURON_AXIS_MIN_ENUM = -0x7fffffff - 1, /* with MAX_ENUM: the enum holds any int32 */
  NORMUON_NEURON_AXIS_MAX_ENUM = 0x7fffffff
} normuon_neuron_axis_t;

/* The shape factor of the update. DEFAULT keeps the variant's own (NorMuon and Muon:
 * sqrt(max(1, m/n)); NorMuon paper: 0.2*sqrt(m*n); AdaMuon: 0.2*sqrt(max(m,n))); the others
 * replace it (never multiply): NONE 1, SPECTRAL sqrt(max(1, rows/cols)), RMS
 * 0.2*sqrt(max(rows, cols)). */
typedef enum normuon_lr_adjust {
  NORMUON_LR_ADJUST_DEFAULT = 0,
  NORMUON_LR_ADJUST_NONE = 1,
  NORMUON_LR_ADJUST_SPECTRAL = 2,
  NORMUON_LR_ADJUST_RMS = 3,
  NORMUON_LR_ADJUST_MIN_ENUM = -0x7fffffff - 1, /* with MAX_ENUM: the enum holds any int32 */
  NORMUON_LR_ADJUST_MAX_ENUM = 0x7fffffff
} normuon_lr_adjust_t;

/* The orthogonalization iteration. Each iteration i: A = X X^T, B = b_i A + c_i A A,
 * X = a_i X + B X, after X0 = U / (||U||_F * norm_scale + ns_eps). */
typedef enum normuon_orthogonalizer {
  NORMUON_ORTHO_QUINTIC = 0,       /* (3.4445, -4.7750, 2.0315) every iteration; norm_scale 1,
                                      ns_eps 1e-7 */
  NORMUON_ORTHO_POLAR_EXPRESS = 1, /* Polar Express's five published triples, one per
                                      iteration (iterations past the fifth repeat the fifth);
                                      norm_scale 1.02, ns_eps 1e-6, as Dion's polar_express.py */
  NORMUON_ORTHO_CUSTOM = 2,         /* config.ns_coefficients: ns_steps (a, b, c) triples */
  NORMUON_ORTHOGONALIZER_MIN_ENUM = -0x7fffffff - 1, /* with MAX_ENUM: the enum holds any int32 */
  NORMUON_ORTHOGONALIZER_MAX_ENUM = 0x7fffffff
} normuon_orthogonalizer_t;

/* How the orthogonalization evaluates its polynomial (docs/ARCHITECTURE.md section 1, "Gram
 * Newton-Schulz"). Both compute the same map in exact arithmetic, with the same coefficients. */
typedef enum normuon_ns_method {
  NORMUON_NS_METHOD_STANDARD = 0, /* iterate on X (short side x long side): the official numerics */
  NORMUON_NS_METHOD_GRAM = 1,     /* iterate on the small symmetric R = X X^T and a polynomial Q of it,
                              output Q X; restarts (X = Q X, R = X X^T, Q = I) before the
                              iterations in config.ns_restarts. Fewer FLOPs on rectangular
                              matrices; square ones and single rows or columns run the
                              standard one. A result that is non-finite or larger than any
                              orthogonalization can be is computed
                              again with the standard iteration on CPU; on CUDA (checked on the
                              device, no host sync) it skips the step on every rank, reported as
                              that matrix in nonfinite_param. normuon_step_info_t reports both. */
  NORMUON_NS_METHOD_MIN_ENUM = -0x7fffffff - 1, /* with MAX_ENUM: the enum holds any int32 */
  NORMUON_NS_METHOD_MAX_ENUM = 0x7fffffff
} normuon_ns_method_t;

/* The most restarts config.ns_restarts holds. */
#define NORMUON_MAX_NS_RESTARTS 8

/* Versions: the first ended after adamw_weight_decay (80 bytes on 64-bit platforms);
 * owner_policy through cuda_graph, then ns_method to ns_restarts, then ns_symmetric_products
 * came later. */
typedef struct normuon_config {
  uint32_t struct_size; /* sizeof(normuon_config_t) as the caller compiled it */
  uint32_t api_version; /* NORMUON_API_VERSION */
  normuon_backend_t backend;
  int32_t device; /* CUDA device ordinal (CUDA backend only) */
  normuon_variant_t variant;
  normuon_ns_dtype_t ns_dtype;
  int32_t ns_steps;       /* Newton-Schulz iterations, default 5 */
  int32_t nesterov;       /* default 1 */
  float ns_eps;           /* in X / (||X||_F * norm_scale + ns_eps); 0 (default) = the
                             orthogonalizer's own */
  int32_t check_finite;   /* 1: a NaN/Inf gradient skips the whole step; default 0 */
  /* Default NorMuon group (group 0): */
  float lr;               /* default 0.02 */
  float momentum;         /* beta1, default 0.95 */
  float beta2;            /* default 0.95 */
  float weight_decay;     /* default 0 */
  float eps;              /* in sqrt(v) + eps and the norm restore, default 1e-10 */
  /* Default AdamW group (group 1): */
  float adamw_lr;         /* default 3e-4 */
  float adamw_beta1;      /* default 0.9 */
  float adamw_beta2;      /* default 0.95 */
  float adamw_eps;        /* default 1e-10 */
  float adamw_weight_decay; /* default 0 */
  normuon_owner_policy_t owner_policy; /* default NORMUON_OWNER_ROUND_ROBIN */
  normuon_schedule_t schedule;         /* default NORMUON_SCHEDULE_SEQUENTIAL */
  uint64_t bucket_bytes;               /* bucketed schedule: wire bytes per bucket, default 32 MiB */
  normuon_lr_adjust_t lr_adjust;       /* default NORMUON_LR_ADJUST_DEFAULT */
  normuon_orthogonalizer_t orthogonalizer; /* default NORMUON_ORTHO_QUINTIC */
  const float* ns_coefficients;        /* NORMUON_ORTHO_CUSTOM: 3 * ns_steps floats, (a, b, c)
                                          per iteration; copied by normuon_create */
  float ns_norm_scale;                 /* 0 (default) = the orthogonalizer's own */
  int32_t cautious_weight_decay;       /* 1: decay only the elements where the update and the
                                          weight agree in sign (matrices and AdamW); default 0 */
  normuon_neuron_axis_t neuron_axis;   /* default NORMUON_NEURON_ROWS */
  int32_t cuda_graph; /* 0 = off (default), 1 = capture the step into a CUDA graph and replay it.
                         CUDA backend, world size 1 only. The first normuon_step (and the first
                         after a normuon_bind that moved a buffer) captures the step's device work
                         on its stream into a CUDA graph, which may allocate the graph's objects,
                         and launches it; later steps only copy the per-step values (lr, weight
                         decay, betas of every group) to the device and launch the graph, on any
                         stream: no allocation, far less host time. Same kernels in the same
                         order: bitwise the eager step's results. The stream must not be NULL
                         (the legacy default stream cannot be captured); use a non-blocking one.
                         A failed capture runs nothing of that step (NORMUON_ERROR_CUDA, or the
                         failing call's status) and the next step captures again. */
  normuon_ns_method_t ns_method;       /* default NORMUON_NS_METHOD_STANDARD */
  int32_t ns_restart_count;            /* NORMUON_NS_METHOD_GRAM: how many restarts ns_restarts lists,
                                          in [0, NORMUON_MAX_NS_RESTARTS]; -1 (default) = the
                                          measured default: before iteration ns_steps - 2
                                          (0-based); with Polar Express before each of the
                                          last three; none when ns_steps < 3 (README, "Gram
                                          Newton-Schulz") */
  const int32_t* ns_restarts;          /* ns_restart_count 0-based iteration indices, strictly
                                          ascending, each in [1, ns_steps - 1]: restart before
                                          them. Copied by normuon_create; NULL when the count
                                          is 0 or -1 */
  int32_t ns_symmetric_products;       /* NORMUON_NS_METHOD_GRAM on CUDA: 0 (default) = every
                                          product as a dense batched GEMM; 1 = the products
                                          known to be symmetric (X X^T, R R, Q Z', R Z',
                                          Z' (R Z')) as GEMMs over their lower-triangle tile
                                          pairs only (cublasGemmGroupedBatchedEx), mirrored to
                                          the upper triangle: fewer FLOPs, not yet measured
                                          (README, "Gram Newton-Schulz"). The CPU backend
                                          accepts 0 and 1 alike: it always forms one triangle
                                          where that measured faster */
} normuon_config_t;

/* [out] config: filled with the reference defaults listed above and struct_size = this
 * library's size. NULL: does nothing. Returns nothing; any thread, never blocks. */
NORMUON_API void normuon_config_init(normuon_config_t* config);

/* The two groups every runtime starts with. */
#define NORMUON_GROUP_MATRIX_DEFAULT 0
#define NORMUON_GROUP_ADAMW_DEFAULT 1

typedef enum normuon_group_kind {
  NORMUON_GROUP_NORMUON = 0, /* matrices: beta1 = momentum, eps as in config.eps */
  NORMUON_GROUP_ADAMW = 1,
  NORMUON_GROUP_KIND_MIN_ENUM = -0x7fffffff - 1, /* with MAX_ENUM: the enum holds any int32 */
  NORMUON_GROUP_KIND_MAX_ENUM = 0x7fffffff
} normuon_group_kind_t;

/* Hyper-parameters of one group. lr and weight_decay may change before any step.
 * Versions: one so far (the first is the whole struct, 28 bytes). */
typedef struct normuon_group_desc {
  uint32_t struct_size;
  normuon_group_kind_t kind;
  float lr;
  float weight_decay;
  float beta1;
  float beta2;
  float eps;
} normuon_group_desc_t;

/* [out] desc: the defaults of a group of `kind` (NORMUON: lr 0.02, beta1 0.95, beta2 0.95,
 * eps 1e-10; ADAMW: lr 3e-4, beta1 0.9, beta2 0.95, eps 1e-10; weight_decay 0) and struct_size.
 * NULL: does nothing. Returns nothing; any thread, never blocks. */
NORMUON_API void normuon_group_desc_init(normuon_group_desc_t* desc, normuon_group_kind_t kind);

/* One parameter shard. For matrices, rows x cols is the global shape; AdamW parameters use the
 * same descriptor (a 1-D parameter of N elements is rows = N, cols = 1). A rank with no rows of
 * the parameter passes row_count = 0 and may pass NULL pointers.
 * Versions: the first ended after group (80 bytes on 64-bit platforms); row_splits and
 * num_row_splits, then num_heads, col_begin, col_count and ld, then pieces and num_pieces came
 * later. */
typedef struct normuon_param_desc {
  uint32_t struct_size;
  const char* name;          /* unique, non-empty; copied */
  int64_t rows;              /* global rows (> 0) */
  int64_t cols;              /* global cols (> 0) */
  int64_t row_begin;         /* first row held here */
  int64_t row_count;         /* rows held here (>= 0) */
  void* param;               /* row_count x cols, param_dtype, 4-byte (fp32) or 2-byte aligned */
  normuon_dtype_t param_dtype;
  const void* grad;          /* row_count x cols, grad_dtype; NULL = no gradient this step */
  normuon_dtype_t grad_dtype;
  normuon_group_t group;     /* NORMUON_GROUP_MATRIX_DEFAULT, NORMUON_GROUP_ADAMW_DEFAULT, a
                                group from normuon_add_group, or -1 (normuon_param_desc_init's
                                default): the default group of the parameter's kind (matrix
                                group 0 for normuon_register_matrix, AdamW group 1 for
                                normuon_register_adamw). The group's kind must match. */
  /* Matrices only, optional: the parameter is num_row_splits blocks of consecutive rows, of
   * row_splits[i] rows each (summing to rows), each orthogonalized and normalized as if it were
   * its own matrix: a fused QKV projection under grouped-query attention (q, k, v rows), or an
   * E x m x n expert tensor registered as rows = E*m with E blocks of m rows. Ranks may hold
   * parts of blocks. NULL / 0 = one block. The sizes are copied. */
  const int64_t* row_splits;
  int32_t num_row_splits;
  /* Matrices only, optional: per-head orthogonalization, a shorthand for num_heads equal
   * row_splits of rows / num_heads rows each (each head orthogonalized and normalized as its own
   * matrix; under grouped-query attention a fused QKV of q_heads + 2 * kv_heads heads of one
   * head size is num_heads = q_heads + 2 * kv_heads). 0 (default) = none. num_heads must divide
   * rows, and is refused together with row_splits. */
  int32_t num_heads;
  /* Two-dimensional pieces (tensor parallel x FSDP), optional: this rank's piece is rows
   * [row_begin, row_begin + row_count) x columns [col_begin, col_begin + col_count), and param
   * and grad hold it row-major with ld elements from one row to the next (ld >= col_count).
   * Defaults (0): col_begin 0, col_count 0 = every column (col_begin must then be 0), ld 0 =
   * col_count: the row-only layout. The pieces of all ranks must tile the matrix exactly
   * (finalize checks it and names the two ranks, and piece indices, whose pieces overlap, or the
   * first element no rank holds). A rank with no piece passes row_count = 0; a rank with several
   * rectangles lists them in `pieces` below. Matrices only: an AdamW parameter is held as whole
   * rows. The CUDA backend runs pieces of all columns only (ld = cols); column pieces are
   * NORMUON_ERROR_UNSUPPORTED there at finalize. See README, "Two-dimensional shards". */
  int64_t col_begin;
  int64_t col_count;
  int64_t ld;
  /* Several pieces on one rank, optional (matrices only): num_pieces rectangles of this
   * parameter, each with its own buffers (a TP rank's q, k and v heads of a fused QKV that is not
   * interleaved; FSDP2's strided sharding). The pieces are copied at registration (their param
   * and grad pointers are kept, as desc.param and desc.grad are). num_pieces 0 (default) = the
   * one piece of the fields above; num_pieces > 0 requires row_begin, row_count, col_begin,
   * col_count, ld, param and grad above to stay 0 / NULL (each is refused by name otherwise).
   * Pieces may be empty (row_count or col_count 0); the non-empty ones of all ranks tile the
   * matrix. Order matters: the state of the parameter on this rank (normuon_get_state and
   * checkpoints of this rank's view) is its pieces' states concatenated in piece order
   * (momentum: each piece's row_count x col_count, packed; per-row v: each piece's row_count).
   * normuon_bind_piece re-binds one piece; normuon_grad_ready(param) covers every piece.
   * Both backends (on CUDA: compiled, not yet run on a GPU in this version). */
  const struct normuon_piece* pieces;
  int32_t num_pieces;
} normuon_param_desc_t;

/* One rectangle of a matrix held by this rank (normuon_param_desc_t.pieces): rows [row_begin,
 * row_begin + row_count) x columns [col_begin, col_begin + col_count) (col_count 0 = every column,
 * col_begin then 0), param and grad row-major with ld elements per row (0 = the piece's columns).
 * grad may be NULL (zero gradient, no weight decay for this piece); param may be NULL only for
 * an empty piece. Not a versioned struct: its layout is fixed (a later change would add a new
 * type). */
typedef struct normuon_piece {
  int64_t row_begin;
  int64_t row_count;
  int64_t col_begin;
  int64_t col_count;
  int64_t ld;
  void* param;
  const void* grad;
} normuon_piece_t;

/* [out] desc: zeroes it and sets struct_size, param_dtype = grad_dtype = NORMUON_DTYPE_FP32 and
 * group = -1 (the default group of the parameter's kind); name, shape, rows and pointers are
 * the caller's to set. NULL: does nothing. Returns nothing; any thread, never blocks. */
NORMUON_API void normuon_param_desc_init(normuon_param_desc_t* desc);

/* Creates a runtime.
 * [in] config: copied (ns_coefficients included); the caller may free it on return.
 * comm: 0 for a single rank, or a communicator from normuon/comm.h (one per rank; the runtime
 * keeps a reference, so the caller may destroy its handle afterwards). With a communicator of
 * world size > 1 every rank creates its own runtime, registers the same parameters in the same
 * order with its own rows, and calls finalize and step collectively.
 * [out] out: the new runtime's handle; release it with normuon_destroy.
 * The backend and the communicator must agree on memory: the CPU backend takes host
 * communicators only; the CUDA backend at world size > 1 takes device communicators only (NCCL,
 * normuon_comm_create_inprocess_group_ex with NORMUON_COMM_MEMORY_DEVICE, custom ops with
 * device_memory = 1); any other pair is NORMUON_ERROR_INVALID_ARGUMENT.
 * Not collective; blocks only to set up the backend (CUDA: the device context). A failure's
 * message is normuon_last_error(0) on this thread. */
NORMUON_API normuon_status_t normuon_create(const normuon_config_t* config, normuon_comm_t comm,
                                            normuon_runtime_t* out);

/* Destroys the runtime and frees everything it allocated (never the caller's buffers): waits
 * for a call in flight on another thread, for the pipeline's threads, and on CUDA for the last
 * step's device work. A step begun by normuon_grad_ready and never finished is abandoned on this
 * rank only (the other ranks' collectives then time out: use normuon_step_cancel first).
 * A second destroy returns NORMUON_ERROR_INVALID_HANDLE. Not collective. */
NORMUON_API normuon_status_t normuon_destroy(normuon_runtime_t rt);

/* The message of the last failed call on rt ("" if none): a string owned by the runtime, valid
 * until the next call on rt (normuon_destroy included). normuon_last_error(0), or a handle that
 * is not live, gives the message of the last failed create or handle lookup on this thread.
 * Never NULL; never blocks. */
NORMUON_API const char* normuon_last_error(normuon_runtime_t rt);

/* Adds a hyper-parameter group; before finalize only (NORMUON_ERROR_INVALID_STATE after).
 * [in] desc: copied. [out] out: the new group's index (2, 3, ...). Not collective, but every
 * rank must add the same groups in the same order. Never blocks. */
NORMUON_API normuon_status_t normuon_add_group(normuon_runtime_t rt,
                                               const normuon_group_desc_t* desc,
                                               normuon_group_t* out);

/* Changes a group's lr and weight decay for the following steps (any time; a learning-rate
 * scheduler calls it before each step). No pointers; never blocks; not collective (every rank
 * should set the same values). */
NORMUON_API normuon_status_t normuon_set_group_lr(normuon_runtime_t rt, normuon_group_t group,
                                                  float lr, float weight_decay);

/* Registers a matrix for the NorMuon update (group of kind NORMUON). Before finalize only.
 * [in] desc: copied (name and row_splits included); desc->param and desc->grad are kept: the
 * runtime reads the gradient and writes the parameter in every step until normuon_bind points
 * it elsewhere or the runtime is destroyed. [out] out: the parameter's index, in registration
 * order. Not collective (finalize checks that every rank registered the same); never blocks. */
NORMUON_API normuon_status_t normuon_register_matrix(normuon_runtime_t rt,
                                                     const normuon_param_desc_t* desc,
                                                     normuon_param_t* out);

/* Registers a parameter for AdamW (group of kind ADAMW). Before finalize only. Pointers, kept
 * buffers and blocking as normuon_register_matrix. */
NORMUON_API normuon_status_t normuon_register_adamw(normuon_runtime_t rt,
                                                    const normuon_param_desc_t* desc,
                                                    normuon_param_t* out);

/* Allocates and zeroes all optimizer state and workspace. After this, step allocates nothing
 * and nothing can be registered. Collective: checks (one all-gather of metadata) that every rank
 * registered the same parameters, with the same shapes, in the same order, and that their pieces
 * (row ranges, and column ranges where given) tile each parameter exactly; otherwise fails on
 * every rank with the same message naming the first mismatch (for pieces: the two ranks and
 * rectangles that overlap, or the first element no rank holds). Blocks until every rank has
 * arrived (the communicator's timeout bounds it) and, on CUDA, until the state is allocated and
 * zeroed. No stream: the runtime's set-up work is synchronous. */
NORMUON_API normuon_status_t normuon_finalize(normuon_runtime_t rt);

/* The memory query. [out] bytes. After finalize: the bytes of optimizer state and step buffers
 * the runtime allocated, plus the CPU backend's Newton-Schulz workspace (with ns_method = GRAM,
 * its R, Q and R Z matrices too), all allocated at finalize (the CUDA backend's cuBLAS workspace
 * is not counted). Before
 * finalize: an upper bound for what is registered so far, as if this rank owned
 * (orthogonalized) every matrix. Never blocks; not collective. */
NORMUON_API normuon_status_t normuon_memory_required(normuon_runtime_t rt, uint64_t* bytes);

/* Points a parameter at new buffers (FSDP hands a new gradient tensor each backward).
 * [in,out] param_ptr (may be NULL when this rank holds no rows) and [in] grad_ptr (may be
 * NULL: that parameter gets a zero gradient and no weight decay this step, as the official
 * implementation does) are kept, as in normuon_register_matrix. The runtime no longer touches
 * the previous ones once the call returns, except through work already queued on the device
 * (CUDA): keep them valid until that step completes (normuon_step_result). Between steps, or
 * inside a step begun by normuon_grad_ready for every parameter not marked ready yet (a matrix
 * marked ready is in use until step returns).
 * Never blocks; not collective.
 * With config.cuda_graph = 1, a bind that changes a pointer discards the captured graph (it holds
 * the old pointers); the next step captures again. Binding the same pointers keeps it. */
NORMUON_API normuon_status_t normuon_bind(normuon_runtime_t rt, normuon_param_t param,
                                          void* param_ptr, const void* grad_ptr);

/* normuon_bind for one piece of a parameter registered with pieces (normuon_param_desc_t.pieces):
 * points piece `piece` (0-based, in registration order) at new buffers, with the rules of
 * normuon_bind (param_ptr may be NULL only for an empty piece; grad_ptr NULL = zero gradient for
 * that piece). normuon_bind itself is refused for such a parameter (it would not say which
 * piece), and normuon_bind_piece for a parameter without pieces. Never blocks; not collective. */
NORMUON_API normuon_status_t normuon_bind_piece(normuon_runtime_t rt, normuon_param_t param,
                                                int32_t piece, void* param_ptr,
                                                const void* grad_ptr);

/* One optimizer step over every registered parameter. Collective: every rank calls it for
 * every step.
 * lr, weight_decay: set group 0 (the default NorMuon group) for this and later steps; pass a
 * negative value to keep the group's current value. Other groups use normuon_set_group_lr.
 * stream: a cudaStream_t for the CUDA backend (NULL = the legacy default stream); ignored on CPU.
 * In a step begun by normuon_grad_ready it must be the stream those calls passed
 * (NORMUON_ERROR_INVALID_ARGUMENT naming the stream otherwise; nothing changes).
 * Reads every bound gradient, writes every parameter and the optimizer state (the buffers
 * registered or bound; no pointer arguments). On CUDA the work is queued on stream and the call
 * returns without waiting for it (on the host it waits only for NCCL to accept the collectives
 * it issues); device-side outcomes (a step skipped for non-finite gradients or a failed
 * collective) come from normuon_step_result. On CPU the step is done on return, blocking on the
 * other ranks within the communicator's timeout, and a skipped step returns
 * NORMUON_ERROR_NONFINITE with the parameter's name.
 * With config.cuda_graph = 1 the step is captured once and replayed (see normuon_config_t);
 * stream must not be NULL then (NORMUON_ERROR_INVALID_ARGUMENT).
 * Failures across ranks (normuon/comm.h, "After a failure"; README, "Failure semantics"): a
 * rank whose collective or stage fails returns that error and changes nothing; it still issues
 * the step's remaining collectives and tells the other ranks, which skip the step too and return
 * NORMUON_ERROR_COMM naming it. Only a one-sided failure of the step's last collective (an
 * all-reduce) can let the other ranks commit; the failing rank's message then says so. Every
 * step carries each rank's count of committed steps; when they differ, the step fails on every
 * rank with NORMUON_ERROR_INVALID_STATE and a message naming the ranks that did not commit which
 * step (counted as in normuon_step_info_t.steps_taken), and changes nothing. So does every later
 * step (and normuon_step_result, and normuon_save_checkpoint, which refuses to save diverged
 * states and leaves the last checkpoint in place) until the state is restored on every rank with
 * normuon_load_checkpoint, or the runtimes are destroyed and created anew (normuon_set_state does
 * not restore the step counts). Restore the parameters too: they are not in the checkpoint. On
 * CUDA the step is skipped on the device and normuon_step_result reports the error. */
NORMUON_API normuon_status_t normuon_step(normuon_runtime_t rt, float lr, float weight_decay,
                                          void* stream);

/* Overlap with the backward pass: the gradient shards of these matrix parameters are final (on
 * `stream`, for the CUDA backend). Their bucket's momentum, gather, Newton-Schulz, scatter and
 * row statistics may start now, before normuon_step; buckets start in bucket order (reverse
 * registration order), so a ready bucket waits for its predecessors. step then does whatever was
 * not started, and the lr- and wd-dependent commit. Calling step without any grad_ready does
 * everything, as before; results are identical (bitwise on CPU) for every arrival order.
 * The first grad_ready after a step (or after finalize) begins a step; normuon_step finishes it
 * and normuon_step_cancel abandons it. While a step is begun, normuon_get_state,
 * normuon_set_state and the checkpoint calls are refused (NORMUON_ERROR_INVALID_STATE).
 * [in] params: count parameter indices (count >= 0; params may be NULL when count is 0), read
 * during the call only.
 * stream: one stream per step: every grad_ready and the step of one step must pass the same
 * stream (another one is NORMUON_ERROR_INVALID_ARGUMENT naming the stream; nothing marked).
 * Early start happens with the per-matrix and bucketed schedules: on the CPU backend on the
 * pipeline's worker threads (the call returns at once; the buckets run, and exchange with the
 * other ranks, in the background); on the CUDA backend at world size > 1 on two streams (a
 * ready bucket's momentum, Newton-Schulz and row statistics are queued on `stream`, its
 * exchanges on the runtime's communication stream, each waiting for its input's event), and the
 * call returns without waiting for the device. Otherwise (sequential schedule, CUDA at world
 * size 1) the calls are checked and recorded and the work waits for step.
 * Collective in the sense that every rank must mark the same parameters within a step (any
 * order and grouping): a disagreement is detected at step, which then fails on every rank and
 * changes nothing. Errors (nothing marked): an unknown or AdamW parameter, a parameter marked
 * twice in one step, another stream than the step's, before finalize. The caller keeps the
 * gradient buffers unchanged until step (or normuon_step_cancel) returns. */
NORMUON_API normuon_status_t normuon_grad_ready(normuon_runtime_t rt, const normuon_param_t* params,
                                                int32_t count, void* stream);

/* Abandons a step that normuon_grad_ready began, without committing anything of it (a trainer
 * that skips an optimizer step after the backward pass, say for an overflowing loss scale).
 * Collective: every rank must call it for the same step, so that the collectives the step's
 * early start issued complete on every rank; it blocks until the work the step started has
 * finished (CPU: the pipeline's threads; CUDA: the work queued on the step's stream and the
 * communication stream), each wait bounded by the communicator's timeout.
 * Changes no parameter and no optimizer state: momentum, v, the AdamW moments and step counts,
 * steps_taken and steps_skipped stay as they were before the step began. The marks are cleared:
 * the next normuon_grad_ready begins a new step, and the bindings of normuon_bind stay.
 * Returns NORMUON_SUCCESS and does nothing when no step was begun (also before finalize).
 * On a communication failure (NORMUON_ERROR_COMM, NORMUON_ERROR_TIMEOUT) the step is abandoned
 * all the same and nothing is committed; the communicator is then failed, as after any failed
 * collective. No pointers, no stream argument (it uses the stream that began the step). */
NORMUON_API normuon_status_t normuon_step_cancel(normuon_runtime_t rt);

/* The outcome of the last step (an output struct). Versions: the first ended after
 * nonfinite_param (32 bytes on 64-bit platforms); the ns_fallback fields came with
 * ns_method = GRAM. */
typedef struct normuon_step_info {
  uint32_t struct_size;
  int64_t steps_taken;     /* steps committed so far */
  int64_t steps_skipped;   /* steps skipped so far: non-finite gradients (check_finite), or a
                              step whose collectives failed or whose normuon_grad_ready marks
                              differed across ranks */
  int32_t last_skipped;    /* 1 if the last step was skipped (for any of those reasons) */
  normuon_param_t nonfinite_param; /* the first parameter with a NaN/Inf gradient, or -1 */
  /* ns_method = GRAM: Gram results this rank found non-finite or larger than an
   * orthogonalization can be. Only the matrix's owner (the rank that orthogonalizes it) counts
   * them. CPU: redone with the standard iteration, the step is not skipped (the same bits on
   * every rank). CUDA: the step is skipped on every rank (nonfinite_param names the matrix). */
  int64_t ns_fallbacks;            /* over all steps so far, on this rank */
  normuon_param_t ns_fallback_param; /* the first such parameter in the last step, or -1 */
  int32_t ns_fallback_reason;      /* for it: 0 none, 1 non-finite result, 2 norm above the bound */
} normuon_step_info_t;

/* [out] info: zeroed, struct_size set, nonfinite_param = ns_fallback_param = -1. NULL: does nothing. Returns
 * nothing; any thread, never blocks. */
NORMUON_API void normuon_step_info_init(normuon_step_info_t* info);

/* Waits for the last step to complete (CUDA: its completion event, on the host) and reports its
 * outcome. [in,out] info: struct_size is read (see "Versioned structs"), the fields are written
 * up to it. After finalize; before the first step it reports zero steps. Not collective.
 * NORMUON_ERROR_INVALID_STATE (info not written) when the last step found that the ranks have
 * not committed the same steps (see normuon_step), with the same message, until
 * normuon_load_checkpoint or the next step that finds them equal. */
NORMUON_API normuon_status_t normuon_step_result(normuon_runtime_t rt, normuon_step_info_t* info);

/* Wall time of each phase of the last step, in milliseconds (an output struct). Phases that do
 * not run in this configuration (gather and scatter on a single rank) are 0.
 * Versions: the first ended after adamw_ms (80 bytes on 64-bit platforms); exposed_comm_ms,
 * bytes_sent, bytes_received and buckets came later. */
typedef struct normuon_step_profile {
  uint32_t struct_size;
  double total_ms;
  double finite_check_ms;  /* NaN/Inf scan of the gradients (config.check_finite) */
  double momentum_ms;      /* momentum + Nesterov blend + cast into the send buffer */
  double gather_ms;
  double newton_schulz_ms;
  double scatter_ms;
  double row_stats_ms;     /* row sums, v, and the norms of the renormalization */
  double update_ms;        /* commit of the matrices: momentum, v and W */
  double adamw_ms;
  double exposed_comm_ms;  /* time the compute side waited on communication (all of gather and
                              scatter in the sequential schedule) */
  uint64_t bytes_sent;     /* this rank's bytes on the wire (gather + scatter + all-reduce) */
  uint64_t bytes_received;
  int32_t buckets;
} normuon_step_profile_t;

/* [out] profile: zeroed, struct_size set. NULL: does nothing. Returns nothing; any thread,
 * never blocks. */
NORMUON_API void normuon_step_profile_init(normuon_step_profile_t* profile);

/* The phase times of the last step. [in,out] profile: struct_size is read (see "Versioned
 * structs"), the fields are written up to it. NORMUON_ERROR_INVALID_STATE before the first step.
 * CPU backend: measured with a steady clock as the step runs. CUDA backend: device time between
 * CUDA events recorded at every stage boundary on the step's stream, and with two streams on the
 * communication stream (waits for the step on the host). exposed_comm_ms is the time the step's
 * stream waited on communication (docs/ARCHITECTURE.md section 6): with one stream (the
 * sequential schedule, or world size 1) every gather and scatter; with two streams (per-matrix
 * or bucketed at world size > 1) the time from an event before to an event after each wait of
 * the step's stream on the communication stream. Not collective: each rank reports its own
 * (the step's exposed communication is the maximum over ranks). */
NORMUON_API normuon_status_t normuon_last_step_profile(normuon_runtime_t rt,
                                                       normuon_step_profile_t* profile);

/* The last step as Chrome trace events (Perfetto / chrome://tracing): JSON objects separated by
 * commas, without the enclosing brackets, so the traces of several ranks (and a trainer's own
 * events) can be joined into one {"traceEvents": [...]} document. pid = rank; tid 0 = the step's
 * thread (finite check, all-reduce and norms, update, AdamW), 1 = compute stages (momentum,
 * Newton-Schulz, row statistics, per bucket), 2 = communication (gather, scatter, per bucket);
 * ts and dur in microseconds of the process's steady clock (CLOCK_MONOTONIC on Linux).
 * [out] buf: at most capacity bytes, NUL-terminated (truncated if the trace is longer); may be
 * NULL when capacity is 0. [out] needed: the full size including the NUL; call with capacity 0
 * to size a buffer. NORMUON_ERROR_INVALID_STATE before the first step. On CUDA the spans are
 * device time between CUDA events, placed on the host clock at the step's start (waits for the
 * step on the host). Not collective. */
NORMUON_API normuon_status_t normuon_last_step_trace(normuon_runtime_t rt, char* buf,
                                                     uint64_t capacity, uint64_t* needed);

/* Optimizer state of one parameter, for checkpoints. Host buffers, fp32 unless noted. */
typedef enum normuon_state_kind {
  NORMUON_STATE_MOMENTUM = 0,      /* matrix: row_count x cols (a column piece: row_count x
                                      col_count, packed) */
  NORMUON_STATE_SECOND_MOMENT = 1, /* matrix: row_count (one value per row); AdaMuon:
                                      row_count x cols; neuron axis = columns: cols per row
                                      block (the same on every rank); none for Muon */
  NORMUON_STATE_EXP_AVG = 2,       /* adamw: row_count x cols */
  NORMUON_STATE_EXP_AVG_SQ = 3,    /* adamw: row_count x cols */
  NORMUON_STATE_STEP = 4,           /* adamw: one int64, the bias-correction step count */
  NORMUON_STATE_KIND_MIN_ENUM = -0x7fffffff - 1, /* with MAX_ENUM: the enum holds any int32 */
  NORMUON_STATE_KIND_MAX_ENUM = 0x7fffffff
} normuon_state_kind_t;

/* Bytes of one state buffer of param (0 if the kind does not apply to it). [out] bytes. Any
 * time after the parameter is registered; never blocks; not collective. */
NORMUON_API normuon_status_t normuon_state_size(normuon_runtime_t rt, normuon_param_t param,
                                                normuon_state_kind_t kind, uint64_t* bytes);

/* The same rule without a runtime: the bytes of one state buffer of a parameter described by
 * desc (registered as a matrix when is_matrix is 1, as AdamW when 0) under config, which is what
 * normuon_state_size returns once such a parameter is registered (for a front end that checks a
 * loaded state before it creates its runtime). [in] config, desc: versioned structs, read during
 * the call (desc.param and desc.grad are not read). [out] bytes. The descriptor is checked as
 * registration checks it; config.variant and config.neuron_axis must be known values. Never
 * blocks; not collective. */
NORMUON_API normuon_status_t normuon_param_state_size(const normuon_config_t* config,
                                                      const normuon_param_desc_t* desc,
                                                      int32_t is_matrix, normuon_state_kind_t kind,
                                                      uint64_t* bytes);

/* Copies a state buffer to host memory. [out] dst: exactly bytes = normuon_state_size bytes.
 * After finalize; also inside a step begun by normuon_grad_ready (nothing writes state before the
 * commit, so this is the state before the step). On CUDA waits for the last step, then copies
 * synchronously (no stream argument). Not collective. */
NORMUON_API normuon_status_t normuon_get_state(normuon_runtime_t rt, normuon_param_t param,
                                               normuon_state_kind_t kind, void* dst,
                                               uint64_t bytes);

/* Overwrites a state buffer from host memory. [in] src: exactly normuon_state_size bytes, read
 * during the call only. After finalize, between steps: refused (NORMUON_ERROR_INVALID_STATE)
 * while a step begun by normuon_grad_ready is not finished. On CUDA waits for the last step,
 * then copies synchronously. Not collective: restoring the same state on every rank is the
 * caller's job (normuon_load_checkpoint does it collectively). */
NORMUON_API normuon_status_t normuon_set_state(normuon_runtime_t rt, normuon_param_t param,
                                               normuon_state_kind_t kind, const void* src,
                                               uint64_t bytes);

/* Checkpoints of the complete optimizer state (momentum, v, Adam moments, step counts, the
 * config that shapes the state), one file per rank for its shards plus an index, in a
 * documented, versioned, endian-explicit format with checksums (see README, "Checkpoints").
 * Both calls are collective over the runtime's communicator, need finalize first, and run
 * between steps only (NORMUON_ERROR_INVALID_STATE after normuon_grad_ready began a step). [in]
 * dir: a NUL-terminated path, read during the call only; one directory that every rank sees (a
 * shared file system across nodes). Both block on file I/O and on the other ranks (within the
 * communicator's timeout); on CUDA they wait for the last step and copy synchronously.
 * save: every rank writes its shard file into the existing directory dir; rank 0 writes the
 * index; returns once every rank's file is complete (or fails on every rank). When the ranks
 * have not committed the same number of steps (a one-sided failure: see normuon_step) it fails
 * on every rank with NORMUON_ERROR_INVALID_STATE naming the counts, and writes and removes
 * nothing.
 * load: every rank reads the rows it holds now, from whichever ranks' files hold them, so a
 * checkpoint saved at one world size or row split loads at another. Everything is read and
 * checked (index, checksums, shapes, names, variant, version) before any state is written; on
 * any failure on any rank, no rank changes anything and all return an error naming the file
 * and the problem. Parameters themselves are not part of the optimizer checkpoint. */
NORMUON_API normuon_status_t normuon_save_checkpoint(normuon_runtime_t rt, const char* dir);
NORMUON_API normuon_status_t normuon_load_checkpoint(normuon_runtime_t rt, const char* dir);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* NORMUON_NORMUON_H_ */
