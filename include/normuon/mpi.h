/* mpi.h: a normuon communicator over MPI, for C and C++ trainers whose ranks are processes.
 *
 *   #include <mpi.h>
 *   #include "normuon/mpi.h"
 *   ...
 *   MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
 *   normuon_comm_t comm;
 *   char why[512];
 *   if (normuon_comm_create_mpi(MPI_COMM_WORLD, 60.0, &comm, why, sizeof why) != NORMUON_SUCCESS)
 *     fprintf(stderr, "normuon MPI communicator: %s\n", why);
 *   normuon_create(&config, comm, &rt);   (then register, finalize, step as with any comm)
 *
 * Why a header of static functions. libnormuon.so links no MPI (docs/ARCHITECTURE.md section
 * 6, "Communicators"): MPI has no common ABI (MPI_Comm is a pointer in Open MPI and an int in
 * MPICH), so the adapter must be compiled by the trainer, against the trainer's own mpi.h and
 * libmpi. Everything below is `static inline` and compiled into the translation unit that
 * includes this header: nothing to build or install besides the header, any MPI-3 library
 * works, and a C99 or C++ compiler takes it (mpicc, mpicxx, or the flags of
 * `mpicc --showme:compile`). Each including translation unit gets its own private copy; a
 * communicator made in one unit is used only through the function pointers it registered, so
 * copies never mix. Link the program with the trainer's MPI and with libnormuon.
 *
 * What it does. normuon_comm_create_mpi duplicates the caller's communicator (MPI_Comm_idup:
 * normuon's messages never match the trainer's), sets MPI_ERRORS_RETURN on the duplicate (an
 * MPI error becomes a status, not an abort), and registers host-memory callbacks with
 * normuon_comm_create_custom. It serves the CPU backend (host buffers); the CUDA backend at
 * world size > 1 needs a device communicator (NCCL).
 *
 * The transport, per collective (every call bounded by timeout_seconds, see "Failure" below):
 * - exchange: one MPI_Irecv per listed receive and one MPI_Isend per listed send, all on one
 *   tag per collective; MPI's non-overtaking order matches the i-th send from rank a to rank b
 *   with the i-th receive on b from a, as comm.h requires. Transfers to the calling rank itself
 *   are local copies. A byte count that disagrees with the peer's fails the collective on the
 *   receiving side (MPI_ERR_TRUNCATE when the message is longer; for a shorter one, found from
 *   the status, the message names both counts), naming the peer; nothing is truncated
 *   silently. Transfers above INT_MAX bytes travel as one message of a derived datatype.
 * - all_reduce_sum_f32: a reduce-scatter and an all-gather over point-to-point messages. The
 *   vector is cut into world_size contiguous chunks; the rank that owns chunk c receives chunk c
 *   of every rank and sums each element in rank order (rank 0's value, plus rank 1's, ..., as
 *   the in-process group does), then sends the sums to every rank. Each element is computed
 *   once, by one rank, in a fixed order, and copied everywhere else: every rank gets the
 *   bitwise-same result, whatever the MPI library. (MPI_Allreduce promises no such thing; the
 *   runtime's slot vectors have one non-zero contributor per slot and would survive any order,
 *   but the other floats it reduces, such as the step's failure flags, need not.) Traffic per
 *   rank: about 2 * count floats, as a ring all-reduce.
 * - all_gather: one MPI_Isend of this rank's block to every other rank and one MPI_Irecv from
 *   each (the runtime gathers only small metadata, at finalize and checkpoints).
 * Messages of different collectives carry different tags (a sequence number and the kind of
 * collective), so a late or mismatched message never completes the wrong collective. Point-to-
 * point only: unlike a nonblocking collective, every request can be cancelled (see "Failure").
 *
 * Waiting. A call posts its requests and polls them (MPI_Testsome), sleeping between polls with
 * a back-off from 20 microseconds to 1 millisecond once the first 50 microseconds have passed,
 * so a waiting rank leaves the cores to computing threads. The sleep needs POSIX nanosleep:
 * compile in the default GNU mode, as C++, or with _POSIX_C_SOURCE >= 199309L; under a strict
 * -std=c99 without it the wait polls without sleeping (correct, but it occupies a core).
 *
 * Failure (as the in-process group's, docs/ARCHITECTURE.md section 6, "Blocking"). No call
 * blocks without bound. A collective that has not completed timeout_seconds after it was
 * called returns NORMUON_ERROR_TIMEOUT, with a message naming the ranks whose transfers did not
 * complete; an MPI error returns NORMUON_ERROR_COMM with MPI's message and the peer. The
 * runtime then commits nothing on this rank; every surviving rank gets its own error within
 * its timeout (plus up to one second, below), since its peers no longer arrive. The first
 * failure ends the communicator: every later collective returns NORMUON_ERROR_COMM at once. On
 * failure the call cancels its pending requests (MPI_Cancel) and waits up to one second (at
 * most the timeout) for the cancellations. A request that cannot be cancelled (Open MPI cannot
 * cancel a large send that a dead or late peer never received) may still be read or written by
 * MPI later, and it points into the runtime's buffers; the message then says so.
 * What the caller must do after a failure: call normuon_comm_abort, save what it needs, and end
 * the job (MPI_Abort, or exit), without destroying the runtime first (normuon_destroy would
 * free buffers that MPI may still access; the communicator's own buffers are never freed while
 * a request is pending). MPI cannot cancel everything in flight, MPI_Finalize may wait for a
 * dead peer in some MPI libraries, and the ranks may disagree on which step they reached: the
 * parameters of the failed step are unchanged on every rank that reported the failure, so
 * restart the job from a checkpoint. Not detected: a peer that runs the same collectives with
 * different arguments of equal byte counts.
 *
 * Failures of processes, as tested over real mpirun processes (tests/mpi):
 * - a rank killed (SIGKILL) in the middle of a step, or one that exits: MPI cannot tell the
 *   survivors, whose pending transfers never complete; each survivor's normuon_step returns
 *   NORMUON_ERROR_TIMEOUT after timeout_seconds, naming the rank it waited on, with nothing
 *   committed. With Open MPI, keep the survivors alive with `mpirun --enable-recovery` (by
 *   default mpirun kills the whole job when one rank dies), and end them without MPI_Finalize,
 *   which may wait on the dead rank;
 * - a rank that stops calling step: the same, on every rank that did call it;
 * - a rank started with another shape or another parameter order: normuon_finalize fails at
 *   once on every rank with the same message, naming the rank, the parameter and both
 *   registrations; nothing is pending then, so destroy the runtime and the communicator and
 *   finalize MPI as usual;
 * - a checkpoint (normuon_save_checkpoint) written by one set of processes loads in a job of
 *   another world size (normuon_load_checkpoint reshards), exactly.
 *
 * abort (normuon_comm_abort) only marks the communicator: a call waiting on another thread
 * notices within a millisecond, cancels its requests and returns NORMUON_ERROR_COMM; every later
 * call fails at once. It makes no MPI call, so it is safe from any thread at any time.
 *
 * Threads. The runtime calls the collectives of one communicator from one thread at a time, but
 * not always from the same thread: the per-matrix and bucketed schedules (and
 * normuon_grad_ready) run exchanges on a worker thread. MPI must therefore be initialized with
 * MPI_THREAD_SERIALIZED or MPI_THREAD_MULTIPLE (MPI_Init_thread); normuon_comm_create_mpi
 * checks MPI_Query_thread and refuses a lower level. With MPI_THREAD_SERIALIZED the trainer
 * must make no MPI call of its own while a normuon call is running, nor between its first
 * normuon_grad_ready of a step and the return of normuon_step (the worker thread may be inside
 * MPI then); a trainer that overlaps its own MPI traffic with the step needs
 * MPI_THREAD_MULTIPLE. Destroy normuon's runtimes and communicators before MPI_Finalize (a
 * communicator destroyed after it leaks its duplicate instead of freeing it).
 *
 * NCCL over MPI. normuon_comm_create_nccl_mpi makes an NCCL communicator (device buffers, the
 * CUDA backend) over the processes of an MPI_Comm in one call: MPI carries only the NCCL unique
 * id from rank 0 to the others, with rank 0's failure instead when it cannot make one.
 *
 * Requires MPI 3.0 or newer (MPI_Comm_idup, MPI_Get_elements_x). C99 or C++.
 */
#ifndef NORMUON_MPI_H_
#define NORMUON_MPI_H_

#include <limits.h>
#include <mpi.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm.h"

#if !defined(MPI_VERSION) || MPI_VERSION < 3
#error "normuon/mpi.h needs MPI 3.0 or newer (MPI_Comm_idup, MPI_Get_elements_x)"
#endif

/* A transfer of more than NORMUON_MPI_MAX_COUNT bytes travels as one message of a derived
 * datatype made of NORMUON_MPI_BLOCK_BYTES-byte blocks and a remainder (MPI counts are int).
 * Tests define smaller values to exercise that path; callers leave them alone. */
#ifndef NORMUON_MPI_MAX_COUNT
#define NORMUON_MPI_MAX_COUNT INT_MAX
#endif
#ifndef NORMUON_MPI_BLOCK_BYTES
#define NORMUON_MPI_BLOCK_BYTES (1 << 30)
#endif

#if defined(_POSIX_C_SOURCE) && _POSIX_C_SOURCE >= 199309L
#define NORMUON_MPI_HAVE_NANOSLEEP_ 1
#else
#define NORMUON_MPI_HAVE_NANOSLEEP_ 0
#endif

/* The abort flag is written by any thread and read by the one inside a collective. */
#if defined(__GNUC__) || defined(__clang__)
#define NORMUON_MPI_LOAD_(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define NORMUON_MPI_STORE_(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#else
#define NORMUON_MPI_LOAD_(p) (*(p))
#define NORMUON_MPI_STORE_(p, v) (*(p) = (v))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Creates this rank's normuon communicator over `comm` (an intra-communicator; every rank of it
 * must call this, as for any MPI collective). comm is duplicated (MPI_Comm_idup, bounded by the
 * timeout), never used directly, and stays the caller's. timeout_seconds (> 0, <= 1e7, finite)
 * bounds this call and every later collective. On success writes *out (destroy it with
 * normuon_comm_destroy, before MPI_Finalize). On failure writes a message naming the problem
 * to error[0..error_size) (NUL-terminated, truncated to fit; error may be NULL when error_size
 * is 0) and leaves *out alone:
 *   NORMUON_ERROR_INVALID_ARGUMENT  out NULL, a bad timeout, comm MPI_COMM_NULL or an
 *                                   inter-communicator, error NULL with error_size > 0;
 *   NORMUON_ERROR_INVALID_STATE     MPI not initialized, already finalized, or initialized
 *                                   below MPI_THREAD_SERIALIZED (see "Threads" above);
 *   NORMUON_ERROR_TIMEOUT           not every rank of comm joined the duplication in time (the
 *                                   pending duplicate cannot be cancelled: end the job);
 *   NORMUON_ERROR_COMM              an MPI call failed (MPI's message);
 *   NORMUON_ERROR_OUT_OF_MEMORY, or the status of normuon_comm_create_custom. */
static inline normuon_status_t normuon_comm_create_mpi(MPI_Comm comm, double timeout_seconds,
                                                       normuon_comm_t* out, char* error,
                                                       size_t error_size);

/* Creates this rank's rank of a new NCCL communicator (comm.h, "NCCL") over the ranks of
 * `comm`, for the CUDA backend of a trainer whose processes MPI already joins: no channel of
 * its own is needed for the NCCL unique id. Collective over comm (an intra-communicator; every
 * rank calls it, as for any MPI collective, and no other call on comm may be in flight): rank 0
 * of comm makes the id (normuon_nccl_get_unique_id) and broadcasts it with its status
 * (MPI_Ibcast, polled and bounded by timeout_seconds); then every rank calls
 * normuon_comm_create_nccl(id, its rank in comm, comm's size, device, timeout_seconds, out).
 * NCCL's rank r is comm's rank r. If rank 0 cannot make the id (no NCCL, a CPU-only build of
 * libnormuon, NCCL failing), it still broadcasts, with the failure instead of an id: every rank
 * returns rank 0's status, and a message that says rank 0 failed and why, within the timeout;
 * no rank waits for an id that will never come. MPI only carries the id: MPI needs no thread
 * level beyond MPI_THREAD_SINGLE for this call, and the communicator made uses no MPI.
 * device: as for normuon_comm_create_nccl (-1: the device current on the calling thread).
 * timeout_seconds (> 0, <= 1e7, finite) bounds the broadcast, then the NCCL creation, and every
 * later collective of the NCCL communicator. On success writes *out (destroy it with
 * normuon_comm_destroy). On failure writes a message to error[0..error_size) (as
 * normuon_comm_create_mpi) and leaves *out alone:
 *   NORMUON_ERROR_INVALID_ARGUMENT  out NULL, a bad timeout or device, comm MPI_COMM_NULL or an
 *                                   inter-communicator, error NULL with error_size > 0 (this
 *                                   rank alone: its peers then time out in the broadcast);
 *   NORMUON_ERROR_INVALID_STATE     MPI not initialized, or already finalized;
 *   NORMUON_ERROR_TIMEOUT           not every rank of comm joined the broadcast in time (the
 *                                   pending broadcast cannot be cancelled: end the job), or not
 *                                   every rank joined the NCCL communicator in time;
 *   NORMUON_ERROR_COMM              an MPI call failed (MPI's message);
 *   otherwise the status of normuon_nccl_get_unique_id on rank 0 (NORMUON_ERROR_UNSUPPORTED
 *   without a usable NCCL or in a CPU-only build, NORMUON_ERROR_COMM), or of
 *   normuon_comm_create_nccl on this rank. */
static inline normuon_status_t normuon_comm_create_nccl_mpi(MPI_Comm comm, int32_t device,
                                                            double timeout_seconds,
                                                            normuon_comm_t* out, char* error,
                                                            size_t error_size);

/* ---- Implementation. Everything below is private to this header (names end in '_'). ---- */

enum {
  NORMUON_MPI_KIND_EXCHANGE_ = 0,
  NORMUON_MPI_KIND_REDUCE_SCATTER_ = 1,
  NORMUON_MPI_KIND_REDUCE_GATHER_ = 2,
  NORMUON_MPI_KIND_ALL_GATHER_ = 3
};

typedef struct normuon_mpi_ctx_ {
  MPI_Comm comm; /* the duplicate */
  int rank;
  int world;
  int tag_period; /* tags are (sequence mod tag_period) * 4 + kind */
  double timeout_s;
  int aborted;      /* set by abort() from any thread (atomic) */
  int failed;       /* the first failure ended the communicator */
  long leaked;      /* requests that could not be cancelled: their buffers are never freed */
  int64_t sequence; /* collectives called so far */
  /* The requests of the collective in flight, with what each one is. */
  MPI_Request* reqs;
  MPI_Status* statuses;
  int* indices;
  int* req_peer;
  int* req_is_recv;
  uint64_t* req_bytes;
  int req_count;
  int req_capacity;
  char* peer_mark; /* world bytes, for naming the ranks a timeout waited on */
  float* scratch;  /* the reduce-scatter's received chunks */
  uint64_t scratch_floats;
  char message[1536];
  char first_failure[1024];
} normuon_mpi_ctx_;

static inline void normuon_mpi_vformat_(char* buf, size_t size, const char* fmt, va_list ap) {
  if (size == 0) return;
  vsnprintf(buf, size, fmt, ap);
}

static inline void normuon_mpi_format_(char* buf, size_t size, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  normuon_mpi_vformat_(buf, size, fmt, ap);
  va_end(ap);
}

/* Appends to ctx->message. */
static inline void normuon_mpi_append_(normuon_mpi_ctx_* ctx, const char* fmt, ...) {
  const size_t used = strlen(ctx->message);
  va_list ap;
  if (used + 1 >= sizeof ctx->message) return;
  va_start(ap, fmt);
  normuon_mpi_vformat_(ctx->message + used, sizeof ctx->message - used, fmt, ap);
  va_end(ap);
}

static inline void normuon_mpi_error_text_(int code, char* buf, size_t size) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS || len <= 0) {
    normuon_mpi_format_(buf, size, "MPI error code %d", code);
    return;
  }
  text[len < MPI_MAX_ERROR_STRING ? len : MPI_MAX_ERROR_STRING - 1] = '\0';
  normuon_mpi_format_(buf, size, "%s (MPI error code %d)", text, code);
}

static inline void normuon_mpi_pause_(long nanoseconds) {
#if NORMUON_MPI_HAVE_NANOSLEEP_
  struct timespec ts;
  ts.tv_sec = 0;
  ts.tv_nsec = nanoseconds;
  nanosleep(&ts, NULL);
#else
  (void)nanoseconds;
#endif
}

static inline const char* normuon_mpi_kind_name_(int kind) {
  switch (kind) {
    case NORMUON_MPI_KIND_EXCHANGE_:
      return "exchange";
    case NORMUON_MPI_KIND_REDUCE_SCATTER_:
      return "all_reduce_sum_f32 (reduce-scatter phase)";
    case NORMUON_MPI_KIND_REDUCE_GATHER_:
      return "all_reduce_sum_f32 (all-gather phase)";
    default:
      return "all_gather";
  }
}

static inline int normuon_mpi_tag_(const normuon_mpi_ctx_* ctx, int kind) {
  return (int)(ctx->sequence % ctx->tag_period) * 4 + kind;
}

/* Room for n requests in the collective in flight. Grows only: steps after the first allocate
 * nothing. 0 on success. */
static inline int normuon_mpi_reserve_(normuon_mpi_ctx_* ctx, int64_t n) {
  int cap;
  if (n <= ctx->req_capacity) return 0;
  if (n > INT_MAX / 2) return -1;
  cap = (int)n;
  if (cap < 2 * ctx->req_capacity) cap = 2 * ctx->req_capacity;
  {
    MPI_Request* reqs = (MPI_Request*)realloc(ctx->reqs, (size_t)cap * sizeof(MPI_Request));
    if (reqs == NULL) return -1;
    ctx->reqs = reqs;
  }
  {
    MPI_Status* st = (MPI_Status*)realloc(ctx->statuses, (size_t)cap * sizeof(MPI_Status));
    if (st == NULL) return -1;
    ctx->statuses = st;
  }
  {
    int* p = (int*)realloc(ctx->indices, (size_t)cap * sizeof(int));
    if (p == NULL) return -1;
    ctx->indices = p;
  }
  {
    int* p = (int*)realloc(ctx->req_peer, (size_t)cap * sizeof(int));
    if (p == NULL) return -1;
    ctx->req_peer = p;
  }
  {
    int* p = (int*)realloc(ctx->req_is_recv, (size_t)cap * sizeof(int));
    if (p == NULL) return -1;
    ctx->req_is_recv = p;
  }
  {
    uint64_t* p = (uint64_t*)realloc(ctx->req_bytes, (size_t)cap * sizeof(uint64_t));
    if (p == NULL) return -1;
    ctx->req_bytes = p;
  }
  ctx->req_capacity = cap;
  return 0;
}

/* Records a failure: the message becomes the communicator's first failure, and the
 * communicator is failed from now on. Returns status. */
static inline normuon_status_t normuon_mpi_fail_(normuon_mpi_ctx_* ctx, normuon_status_t status) {
  if (!ctx->failed) {
    ctx->failed = 1;
    normuon_mpi_format_(ctx->first_failure, sizeof ctx->first_failure, "%s", ctx->message);
  }
  return status;
}

/* Posts one transfer (receive if is_recv) of `bytes` bytes; MPI_SUCCESS or MPI's error. */
static inline int normuon_mpi_post_(normuon_mpi_ctx_* ctx, int is_recv, void* buf, uint64_t bytes,
                                    int peer, int tag) {
  MPI_Request* req = &ctx->reqs[ctx->req_count];
  int rc;
  if (bytes <= (uint64_t)NORMUON_MPI_MAX_COUNT) {
    rc = is_recv ? MPI_Irecv(buf, (int)bytes, MPI_BYTE, peer, tag, ctx->comm, req)
                 : MPI_Isend(buf, (int)bytes, MPI_BYTE, peer, tag, ctx->comm, req);
  } else {
    /* One message of a derived datatype: `blocks` blocks of BLOCK bytes, then the rest. Its
     * signature is `bytes` MPI_BYTEs, so the peer's count check works as for MPI_BYTE. */
    const uint64_t block = (uint64_t)NORMUON_MPI_BLOCK_BYTES;
    const uint64_t blocks = bytes / block;
    int lengths[2];
    MPI_Aint displacements[2];
    MPI_Datatype types[2];
    MPI_Datatype block_type, message_type;
    if (blocks > (uint64_t)INT_MAX) return MPI_ERR_COUNT;
    rc = MPI_Type_contiguous((int)block, MPI_BYTE, &block_type);
    if (rc != MPI_SUCCESS) return rc;
    lengths[0] = (int)blocks;
    lengths[1] = (int)(bytes % block);
    displacements[0] = 0;
    displacements[1] = (MPI_Aint)(blocks * block);
    types[0] = block_type;
    types[1] = MPI_BYTE;
    rc = MPI_Type_create_struct(2, lengths, displacements, types, &message_type);
    MPI_Type_free(&block_type);
    if (rc != MPI_SUCCESS) return rc;
    rc = MPI_Type_commit(&message_type);
    if (rc == MPI_SUCCESS) {
      rc = is_recv ? MPI_Irecv(buf, 1, message_type, peer, tag, ctx->comm, req)
                   : MPI_Isend(buf, 1, message_type, peer, tag, ctx->comm, req);
    }
    /* Freeing a datatype does not affect communication already using it. */
    MPI_Type_free(&message_type);
  }
  if (rc != MPI_SUCCESS) return rc;
  ctx->req_peer[ctx->req_count] = peer;
  ctx->req_is_recv[ctx->req_count] = is_recv;
  ctx->req_bytes[ctx->req_count] = bytes;
  ctx->req_count++;
  return MPI_SUCCESS;
}

/* After a failure: cancels every request still pending and waits for the cancellations, at
 * most min(1 s, timeout). Requests that stay pending are counted in ctx->leaked and named in
 * the message. */
static inline void normuon_mpi_cancel_pending_(normuon_mpi_ctx_* ctx) {
  int i, pending = 0;
  double deadline;
  double grace = ctx->timeout_s < 1.0 ? ctx->timeout_s : 1.0;
  long pause_ns = 20000;
  for (i = 0; i < ctx->req_count; ++i) {
    if (ctx->reqs[i] != MPI_REQUEST_NULL) MPI_Cancel(&ctx->reqs[i]);
  }
  deadline = MPI_Wtime() + grace;
  for (;;) {
    pending = 0;
    for (i = 0; i < ctx->req_count; ++i) {
      int done = 0;
      MPI_Status status;
      if (ctx->reqs[i] == MPI_REQUEST_NULL) continue;
      if (MPI_Test(&ctx->reqs[i], &done, &status) != MPI_SUCCESS) {
        /* An erroneous request is complete: Open MPI frees it; forget it either way. */
        ctx->reqs[i] = MPI_REQUEST_NULL;
        continue;
      }
      if (!done) ++pending;
    }
    if (pending == 0 || MPI_Wtime() >= deadline) break;
    normuon_mpi_pause_(pause_ns);
    if (pause_ns < 1000000) pause_ns *= 2;
  }
  if (pending > 0) {
    ctx->leaked += pending;
    normuon_mpi_append_(ctx,
                        "; %d request(s) could not be cancelled, so MPI may still access their "
                        "buffers: end the job (MPI_Abort) instead of going on",
                        pending);
  }
  ctx->req_count = 0;
}

/* Appends "rank(s) 1, 4 (2 receives, 1 send)" for the requests still pending. */
static inline void normuon_mpi_name_pending_(normuon_mpi_ctx_* ctx) {
  int i, listed = 0, more = 0, recvs = 0, sends = 0, r;
  memset(ctx->peer_mark, 0, (size_t)ctx->world);
  for (i = 0; i < ctx->req_count; ++i) {
    if (ctx->reqs[i] == MPI_REQUEST_NULL) continue;
    ctx->peer_mark[ctx->req_peer[i]] = 1;
    if (ctx->req_is_recv[i]) {
      ++recvs;
    } else {
      ++sends;
    }
  }
  normuon_mpi_append_(ctx, "rank(s)");
  for (r = 0; r < ctx->world; ++r) {
    if (!ctx->peer_mark[r]) continue;
    if (listed < 16) {
      normuon_mpi_append_(ctx, "%s %d", listed == 0 ? "" : ",", r);
      ++listed;
    } else {
      ++more;
    }
  }
  if (more > 0) normuon_mpi_append_(ctx, " and %d more", more);
  normuon_mpi_append_(ctx, " (%d receive(s) and %d send(s) pending)", recvs, sends);
}

/* Waits for every posted request until `deadline` (MPI_Wtime), checking each receive's byte
 * count. On failure cancels what is pending, writes ctx->message and fails the communicator. */
static inline normuon_status_t normuon_mpi_wait_(normuon_mpi_ctx_* ctx, int kind, double start,
                                                 double deadline) {
  int remaining = 0, i;
  long pause_ns = 0;
  double spin_until = start + 50e-6;
  for (i = 0; i < ctx->req_count; ++i) {
    if (ctx->reqs[i] != MPI_REQUEST_NULL) ++remaining;
  }
  while (remaining > 0) {
    int outcount = 0, rc, j;
    if (NORMUON_MPI_LOAD_(&ctx->aborted)) {
      normuon_mpi_format_(ctx->message, sizeof ctx->message,
                          "MPI rank %d of %d: aborted (normuon_comm_abort) while %s (collective "
                          "#%lld) waited on ",
                          ctx->rank, ctx->world, normuon_mpi_kind_name_(kind),
                          (long long)ctx->sequence);
      normuon_mpi_name_pending_(ctx);
      normuon_mpi_cancel_pending_(ctx);
      return normuon_mpi_fail_(ctx, NORMUON_ERROR_COMM);
    }
    rc = MPI_Testsome(ctx->req_count, ctx->reqs, &outcount, ctx->indices, ctx->statuses);
    if (rc != MPI_SUCCESS && rc != MPI_ERR_IN_STATUS) {
      char text[MPI_MAX_ERROR_STRING + 64];
      normuon_mpi_error_text_(rc, text, sizeof text);
      normuon_mpi_format_(ctx->message, sizeof ctx->message,
                          "MPI rank %d of %d: MPI_Testsome failed in %s (collective #%lld): %s",
                          ctx->rank, ctx->world, normuon_mpi_kind_name_(kind),
                          (long long)ctx->sequence, text);
      normuon_mpi_cancel_pending_(ctx);
      return normuon_mpi_fail_(ctx, NORMUON_ERROR_COMM);
    }
    if (outcount == MPI_UNDEFINED) break;
    for (j = 0; j < outcount; ++j) {
      const int k = ctx->indices[j];
      const int err = rc == MPI_ERR_IN_STATUS ? ctx->statuses[j].MPI_ERROR : MPI_SUCCESS;
      if (err != MPI_SUCCESS) {
        char text[MPI_MAX_ERROR_STRING + 64];
        int error_class = 0;
        MPI_Error_class(err, &error_class);
        normuon_mpi_error_text_(err, text, sizeof text);
        normuon_mpi_format_(ctx->message, sizeof ctx->message,
                            "MPI rank %d of %d: %s (collective #%lld): the %s of %llu bytes %s "
                            "rank %d failed: %s%s",
                            ctx->rank, ctx->world, normuon_mpi_kind_name_(kind),
                            (long long)ctx->sequence, ctx->req_is_recv[k] ? "receive" : "send",
                            (unsigned long long)ctx->req_bytes[k],
                            ctx->req_is_recv[k] ? "from" : "to", ctx->req_peer[k], text,
                            error_class == MPI_ERR_TRUNCATE
                                ? " (the peer sent more bytes than this rank listed: the ranks "
                                  "disagree on the transfer)"
                                : "");
        ctx->reqs[k] = MPI_REQUEST_NULL;
        normuon_mpi_cancel_pending_(ctx);
        return normuon_mpi_fail_(ctx, NORMUON_ERROR_COMM);
      }
      if (ctx->req_is_recv[k]) {
        MPI_Count got = 0;
        if (MPI_Get_elements_x(&ctx->statuses[j], MPI_BYTE, &got) != MPI_SUCCESS ||
            got != (MPI_Count)ctx->req_bytes[k]) {
          normuon_mpi_format_(ctx->message, sizeof ctx->message,
                              "MPI rank %d of %d: %s (collective #%lld): rank %d sent %lld bytes "
                              "where this rank's receive from it lists %llu: the ranks disagree "
                              "on the transfer",
                              ctx->rank, ctx->world, normuon_mpi_kind_name_(kind),
                              (long long)ctx->sequence, ctx->req_peer[k], (long long)got,
                              (unsigned long long)ctx->req_bytes[k]);
          normuon_mpi_cancel_pending_(ctx);
          return normuon_mpi_fail_(ctx, NORMUON_ERROR_COMM);
        }
      }
      --remaining;
    }
    if (remaining == 0) break;
    if (outcount > 0) {
      pause_ns = 0;
      continue;
    }
    {
      const double now = MPI_Wtime();
      if (now >= deadline) {
        normuon_mpi_format_(ctx->message, sizeof ctx->message,
                            "MPI rank %d of %d: %s (collective #%lld) timed out after %g s "
                            "waiting on ",
                            ctx->rank, ctx->world, normuon_mpi_kind_name_(kind),
                            (long long)ctx->sequence, ctx->timeout_s);
        normuon_mpi_name_pending_(ctx);
        normuon_mpi_append_(ctx,
                            "; the communicator is unusable now: call normuon_comm_abort, then "
                            "end the job (MPI_Abort or exit)");
        normuon_mpi_cancel_pending_(ctx);
        return normuon_mpi_fail_(ctx, NORMUON_ERROR_TIMEOUT);
      }
      if (now >= spin_until) {
        pause_ns = pause_ns == 0 ? 20000 : (pause_ns < 1000000 ? 2 * pause_ns : 1000000);
        normuon_mpi_pause_(pause_ns);
      }
    }
  }
  ctx->req_count = 0;
  return NORMUON_SUCCESS;
}

/* The common start of every collective: refuses when aborted or failed, counts the call. */
static inline normuon_status_t normuon_mpi_begin_(normuon_mpi_ctx_* ctx, int kind) {
  ctx->req_count = 0;
  if (NORMUON_MPI_LOAD_(&ctx->aborted)) {
    normuon_mpi_format_(ctx->message, sizeof ctx->message,
                        "MPI rank %d of %d: %s refused: the communicator was aborted "
                        "(normuon_comm_abort)",
                        ctx->rank, ctx->world, normuon_mpi_kind_name_(kind));
    return normuon_mpi_fail_(ctx, NORMUON_ERROR_COMM);
  }
  if (ctx->failed) {
    normuon_mpi_format_(ctx->message, sizeof ctx->message,
                        "MPI rank %d of %d: %s refused: the communicator failed earlier: %s",
                        ctx->rank, ctx->world, normuon_mpi_kind_name_(kind), ctx->first_failure);
    return NORMUON_ERROR_COMM;
  }
  return NORMUON_SUCCESS;
}

/* A failed post: cancels what was posted before it. */
static inline normuon_status_t normuon_mpi_post_failed_(normuon_mpi_ctx_* ctx, int kind, int rc,
                                                        int is_recv, int peer, uint64_t bytes) {
  char text[MPI_MAX_ERROR_STRING + 64];
  normuon_mpi_error_text_(rc, text, sizeof text);
  normuon_mpi_format_(ctx->message, sizeof ctx->message,
                      "MPI rank %d of %d: %s (collective #%lld): posting the %s of %llu bytes "
                      "%s rank %d failed: %s",
                      ctx->rank, ctx->world, normuon_mpi_kind_name_(kind), (long long)ctx->sequence,
                      is_recv ? "receive" : "send", (unsigned long long)bytes,
                      is_recv ? "from" : "to", peer, text);
  normuon_mpi_cancel_pending_(ctx);
  return normuon_mpi_fail_(ctx, NORMUON_ERROR_COMM);
}

static inline normuon_status_t normuon_mpi_bad_argument_(normuon_mpi_ctx_* ctx, int kind,
                                                         const char* fmt, ...) {
  va_list ap;
  size_t used;
  normuon_mpi_format_(ctx->message, sizeof ctx->message,
                      "MPI rank %d of %d: %s (collective "
                      "#%lld): ",
                      ctx->rank, ctx->world, normuon_mpi_kind_name_(kind),
                      (long long)ctx->sequence);
  used = strlen(ctx->message);
  va_start(ap, fmt);
  normuon_mpi_vformat_(ctx->message + used, sizeof ctx->message - used, fmt, ap);
  va_end(ap);
  /* The peers now wait for transfers this rank never posts: the communicator is done. */
  return normuon_mpi_fail_(ctx, NORMUON_ERROR_INVALID_ARGUMENT);
}

static inline normuon_status_t normuon_mpi_check_list_(normuon_mpi_ctx_* ctx, const char* name,
                                                       const normuon_p2p_t* list, int32_t n) {
  int32_t i;
  if (n < 0) {
    return normuon_mpi_bad_argument_(ctx, NORMUON_MPI_KIND_EXCHANGE_, "n_%s = %d is negative", name,
                                     (int)n);
  }
  if (n > 0 && list == NULL) {
    return normuon_mpi_bad_argument_(ctx, NORMUON_MPI_KIND_EXCHANGE_, "%s is NULL with n_%s = %d",
                                     name, name, (int)n);
  }
  for (i = 0; i < n; ++i) {
    if (list[i].peer < 0 || list[i].peer >= ctx->world) {
      return normuon_mpi_bad_argument_(ctx, NORMUON_MPI_KIND_EXCHANGE_,
                                       "%s[%d].peer = %d is not in [0, world_size = %d)", name,
                                       (int)i, (int)list[i].peer, ctx->world);
    }
    if (list[i].buf == NULL && list[i].bytes > 0) {
      return normuon_mpi_bad_argument_(ctx, NORMUON_MPI_KIND_EXCHANGE_,
                                       "%s[%d].buf is NULL with bytes = %llu", name, (int)i,
                                       (unsigned long long)list[i].bytes);
    }
    if (list[i].bytes > (uint64_t)NORMUON_MPI_MAX_COUNT &&
        list[i].bytes / (uint64_t)NORMUON_MPI_BLOCK_BYTES > (uint64_t)INT_MAX) {
      return normuon_mpi_bad_argument_(ctx, NORMUON_MPI_KIND_EXCHANGE_,
                                       "%s[%d].bytes = %llu is too large for one MPI message", name,
                                       (int)i, (unsigned long long)list[i].bytes);
    }
  }
  return NORMUON_SUCCESS;
}

static inline normuon_status_t normuon_mpi_exchange_(void* opaque, const normuon_p2p_t* sends,
                                                     int32_t n_sends, const normuon_p2p_t* recvs,
                                                     int32_t n_recvs, void* stream) {
  normuon_mpi_ctx_* ctx = (normuon_mpi_ctx_*)opaque;
  const double start = MPI_Wtime();
  const int kind = NORMUON_MPI_KIND_EXCHANGE_;
  normuon_status_t s;
  int32_t i, j;
  int tag, rc;
  (void)stream;
  s = normuon_mpi_begin_(ctx, kind);
  if (s != NORMUON_SUCCESS) return s;
  s = normuon_mpi_check_list_(ctx, "sends", sends, n_sends);
  if (s == NORMUON_SUCCESS) s = normuon_mpi_check_list_(ctx, "recvs", recvs, n_recvs);
  if (s != NORMUON_SUCCESS) {
    ctx->sequence++;
    return s;
  }
  /* Transfers to this rank itself: the k-th send to self pairs with the k-th receive from
   * self; check them all before anything is posted. */
  for (i = 0, j = 0;; ++i, ++j) {
    while (i < n_sends && (sends[i].peer != ctx->rank)) ++i;
    while (j < n_recvs && (recvs[j].peer != ctx->rank)) ++j;
    if (i >= n_sends && j >= n_recvs) break;
    if (i >= n_sends || j >= n_recvs) {
      s = i >= n_sends
              ? normuon_mpi_bad_argument_(ctx, kind,
                                          "recvs[%d] lists this rank (%d) as peer but no send "
                                          "to itself pairs with it",
                                          (int)j, ctx->rank)
              : normuon_mpi_bad_argument_(ctx, kind,
                                          "sends[%d] lists this rank (%d) as peer but no receive "
                                          "from itself pairs with it",
                                          (int)i, ctx->rank);
      ctx->sequence++;
      return s;
    }
    if (sends[i].bytes != recvs[j].bytes) {
      s = normuon_mpi_bad_argument_(ctx, kind,
                                    "sends[%d] to itself has %llu bytes but the receive it pairs "
                                    "with, recvs[%d], has %llu",
                                    (int)i, (unsigned long long)sends[i].bytes, (int)j,
                                    (unsigned long long)recvs[j].bytes);
      ctx->sequence++;
      return s;
    }
  }
  if (normuon_mpi_reserve_(ctx, (int64_t)n_sends + n_recvs) != 0) {
    normuon_mpi_format_(ctx->message, sizeof ctx->message,
                        "MPI rank %d of %d: exchange: out of memory for %d requests", ctx->rank,
                        ctx->world, (int)(n_sends + n_recvs));
    ctx->sequence++;
    return normuon_mpi_fail_(ctx, NORMUON_ERROR_OUT_OF_MEMORY);
  }
  tag = normuon_mpi_tag_(ctx, kind);
  /* Receives first, so most messages find their receive posted. */
  for (j = 0; j < n_recvs; ++j) {
    if (recvs[j].peer == ctx->rank || recvs[j].bytes == 0) continue;
    rc = normuon_mpi_post_(ctx, 1, recvs[j].buf, recvs[j].bytes, recvs[j].peer, tag);
    if (rc != MPI_SUCCESS) {
      s = normuon_mpi_post_failed_(ctx, kind, rc, 1, recvs[j].peer, recvs[j].bytes);
      ctx->sequence++;
      return s;
    }
  }
  for (i = 0; i < n_sends; ++i) {
    if (sends[i].peer == ctx->rank || sends[i].bytes == 0) continue;
    rc = normuon_mpi_post_(ctx, 0, sends[i].buf, sends[i].bytes, sends[i].peer, tag);
    if (rc != MPI_SUCCESS) {
      s = normuon_mpi_post_failed_(ctx, kind, rc, 0, sends[i].peer, sends[i].bytes);
      ctx->sequence++;
      return s;
    }
  }
  for (i = 0, j = 0;; ++i, ++j) {
    while (i < n_sends && sends[i].peer != ctx->rank) ++i;
    while (j < n_recvs && recvs[j].peer != ctx->rank) ++j;
    if (i >= n_sends || j >= n_recvs) break;
    if (sends[i].bytes > 0 && recvs[j].buf != sends[i].buf) {
      memcpy(recvs[j].buf, sends[i].buf, (size_t)sends[i].bytes);
    }
  }
  s = normuon_mpi_wait_(ctx, kind, start, start + ctx->timeout_s);
  ctx->sequence++;
  return s;
}

/* Chunk c of a count-element vector cut into `world` chunks. */
static inline void normuon_mpi_chunk_(uint64_t count, int world, int c, uint64_t* begin,
                                      uint64_t* length) {
  const uint64_t base = count / (uint64_t)world;
  const uint64_t extra = count % (uint64_t)world;
  *begin = (uint64_t)c * base + ((uint64_t)c < extra ? (uint64_t)c : extra);
  *length = base + ((uint64_t)c < extra ? 1u : 0u);
}

static inline normuon_status_t normuon_mpi_all_reduce_(void* opaque, const float* in, float* out,
                                                       uint64_t count, void* stream) {
  normuon_mpi_ctx_* ctx = (normuon_mpi_ctx_*)opaque;
  const double start = MPI_Wtime();
  const double deadline = start + ctx->timeout_s;
  normuon_status_t s;
  uint64_t mine_begin, mine_length, b, l, e;
  int q, rc, tag;
  (void)stream;
  s = normuon_mpi_begin_(ctx, NORMUON_MPI_KIND_REDUCE_SCATTER_);
  if (s != NORMUON_SUCCESS) return s;
  if (count > 0 && (in == NULL || out == NULL)) {
    s = normuon_mpi_bad_argument_(ctx, NORMUON_MPI_KIND_REDUCE_SCATTER_,
                                  "%s is NULL with count = %llu", in == NULL ? "in" : "out",
                                  (unsigned long long)count);
    ctx->sequence++;
    return s;
  }
  if (count > (uint64_t)SIZE_MAX / sizeof(float) / (uint64_t)ctx->world) {
    s = normuon_mpi_bad_argument_(ctx, NORMUON_MPI_KIND_REDUCE_SCATTER_,
                                  "count = %llu is too large", (unsigned long long)count);
    ctx->sequence++;
    return s;
  }
  if (count == 0) {
    ctx->sequence++;
    return NORMUON_SUCCESS;
  }
  if (ctx->world == 1) {
    if (out != in) memmove(out, in, (size_t)count * sizeof(float));
    ctx->sequence++;
    return NORMUON_SUCCESS;
  }
  normuon_mpi_chunk_(count, ctx->world, ctx->rank, &mine_begin, &mine_length);
  /* Phase 1, reduce-scatter: chunk `rank` of every rank lands in scratch[r * mine_length]. */
  if (ctx->scratch_floats < mine_length * (uint64_t)ctx->world) {
    float* grown =
        (float*)realloc(ctx->scratch, (size_t)(mine_length * (uint64_t)ctx->world) * sizeof(float));
    if (grown == NULL) {
      normuon_mpi_format_(ctx->message, sizeof ctx->message,
                          "MPI rank %d of %d: all_reduce_sum_f32: out of memory for %llu floats",
                          ctx->rank, ctx->world,
                          (unsigned long long)(mine_length * (uint64_t)ctx->world));
      ctx->sequence++;
      return normuon_mpi_fail_(ctx, NORMUON_ERROR_OUT_OF_MEMORY);
    }
    ctx->scratch = grown;
    ctx->scratch_floats = mine_length * (uint64_t)ctx->world;
  }
  if (normuon_mpi_reserve_(ctx, 2 * (int64_t)ctx->world) != 0) {
    normuon_mpi_format_(ctx->message, sizeof ctx->message,
                        "MPI rank %d of %d: all_reduce_sum_f32: out of memory for requests",
                        ctx->rank, ctx->world);
    ctx->sequence++;
    return normuon_mpi_fail_(ctx, NORMUON_ERROR_OUT_OF_MEMORY);
  }
  tag = normuon_mpi_tag_(ctx, NORMUON_MPI_KIND_REDUCE_SCATTER_);
  for (q = 0; q < ctx->world && mine_length > 0; ++q) {
    if (q == ctx->rank) continue;
    rc = normuon_mpi_post_(ctx, 1, ctx->scratch + (uint64_t)q * mine_length,
                           mine_length * sizeof(float), q, tag);
    if (rc != MPI_SUCCESS) {
      s = normuon_mpi_post_failed_(ctx, NORMUON_MPI_KIND_REDUCE_SCATTER_, rc, 1, q,
                                   mine_length * sizeof(float));
      ctx->sequence++;
      return s;
    }
  }
  for (q = 0; q < ctx->world; ++q) {
    if (q == ctx->rank) continue;
    normuon_mpi_chunk_(count, ctx->world, q, &b, &l);
    if (l == 0) continue;
    rc = normuon_mpi_post_(ctx, 0, (void*)(in + b), l * sizeof(float), q, tag);
    if (rc != MPI_SUCCESS) {
      s = normuon_mpi_post_failed_(ctx, NORMUON_MPI_KIND_REDUCE_SCATTER_, rc, 0, q,
                                   l * sizeof(float));
      ctx->sequence++;
      return s;
    }
  }
  if (mine_length > 0) {
    memcpy(ctx->scratch + (uint64_t)ctx->rank * mine_length, in + mine_begin,
           (size_t)mine_length * sizeof(float));
  }
  s = normuon_mpi_wait_(ctx, NORMUON_MPI_KIND_REDUCE_SCATTER_, start, deadline);
  if (s != NORMUON_SUCCESS) {
    ctx->sequence++;
    return s;
  }
  /* Every send of `in` is complete: out (which may be in) can be written. The sum of each
   * element in rank order, as the in-process group sums. */
  for (e = 0; e < mine_length; ++e) {
    float acc = ctx->scratch[e];
    for (q = 1; q < ctx->world; ++q) acc += ctx->scratch[(uint64_t)q * mine_length + e];
    out[mine_begin + e] = acc;
  }
  /* Phase 2, all-gather of the summed chunks. */
  tag = normuon_mpi_tag_(ctx, NORMUON_MPI_KIND_REDUCE_GATHER_);
  for (q = 0; q < ctx->world; ++q) {
    if (q == ctx->rank) continue;
    normuon_mpi_chunk_(count, ctx->world, q, &b, &l);
    if (l == 0) continue;
    rc = normuon_mpi_post_(ctx, 1, out + b, l * sizeof(float), q, tag);
    if (rc != MPI_SUCCESS) {
      s = normuon_mpi_post_failed_(ctx, NORMUON_MPI_KIND_REDUCE_GATHER_, rc, 1, q,
                                   l * sizeof(float));
      ctx->sequence++;
      return s;
    }
  }
  for (q = 0; q < ctx->world && mine_length > 0; ++q) {
    if (q == ctx->rank) continue;
    rc = normuon_mpi_post_(ctx, 0, out + mine_begin, mine_length * sizeof(float), q, tag);
    if (rc != MPI_SUCCESS) {
      s = normuon_mpi_post_failed_(ctx, NORMUON_MPI_KIND_REDUCE_GATHER_, rc, 0, q,
                                   mine_length * sizeof(float));
      ctx->sequence++;
      return s;
    }
  }
  s = normuon_mpi_wait_(ctx, NORMUON_MPI_KIND_REDUCE_GATHER_, start, deadline);
  ctx->sequence++;
  return s;
}

static inline normuon_status_t normuon_mpi_all_gather_(void* opaque, const void* in, void* out,
                                                       uint64_t bytes_per_rank, void* stream) {
  normuon_mpi_ctx_* ctx = (normuon_mpi_ctx_*)opaque;
  const double start = MPI_Wtime();
  const int kind = NORMUON_MPI_KIND_ALL_GATHER_;
  char* dst = (char*)out;
  normuon_status_t s;
  int q, rc, tag;
  (void)stream;
  s = normuon_mpi_begin_(ctx, kind);
  if (s != NORMUON_SUCCESS) return s;
  if (bytes_per_rank > 0 && (in == NULL || out == NULL)) {
    s = normuon_mpi_bad_argument_(ctx, kind, "%s is NULL with bytes_per_rank = %llu",
                                  in == NULL ? "in" : "out", (unsigned long long)bytes_per_rank);
    ctx->sequence++;
    return s;
  }
  if (bytes_per_rank > (uint64_t)SIZE_MAX / (uint64_t)ctx->world ||
      (bytes_per_rank > (uint64_t)NORMUON_MPI_MAX_COUNT &&
       bytes_per_rank / (uint64_t)NORMUON_MPI_BLOCK_BYTES > (uint64_t)INT_MAX)) {
    s = normuon_mpi_bad_argument_(ctx, kind, "bytes_per_rank = %llu is too large",
                                  (unsigned long long)bytes_per_rank);
    ctx->sequence++;
    return s;
  }
  if (bytes_per_rank == 0) {
    ctx->sequence++;
    return NORMUON_SUCCESS;
  }
  if (normuon_mpi_reserve_(ctx, 2 * (int64_t)ctx->world) != 0) {
    normuon_mpi_format_(ctx->message, sizeof ctx->message,
                        "MPI rank %d of %d: all_gather: out of memory for requests", ctx->rank,
                        ctx->world);
    ctx->sequence++;
    return normuon_mpi_fail_(ctx, NORMUON_ERROR_OUT_OF_MEMORY);
  }
  tag = normuon_mpi_tag_(ctx, kind);
  for (q = 0; q < ctx->world; ++q) {
    if (q == ctx->rank) continue;
    rc = normuon_mpi_post_(ctx, 1, dst + (uint64_t)q * bytes_per_rank, bytes_per_rank, q, tag);
    if (rc != MPI_SUCCESS) {
      s = normuon_mpi_post_failed_(ctx, kind, rc, 1, q, bytes_per_rank);
      ctx->sequence++;
      return s;
    }
  }
  for (q = 0; q < ctx->world; ++q) {
    if (q == ctx->rank) continue;
    rc = normuon_mpi_post_(ctx, 0, (void*)in, bytes_per_rank, q, tag);
    if (rc != MPI_SUCCESS) {
      s = normuon_mpi_post_failed_(ctx, kind, rc, 0, q, bytes_per_rank);
      ctx->sequence++;
      return s;
    }
  }
  s = normuon_mpi_wait_(ctx, kind, start, start + ctx->timeout_s);
  /* This rank's own block last, once `in` is no longer read by a send. */
  if (s == NORMUON_SUCCESS && dst + (uint64_t)ctx->rank * bytes_per_rank != (const char*)in) {
    memmove(dst + (uint64_t)ctx->rank * bytes_per_rank, in, (size_t)bytes_per_rank);
  }
  ctx->sequence++;
  return s;
}

/* Safe from any thread: only marks the communicator (see "abort" in the file comment). */
static inline normuon_status_t normuon_mpi_abort_(void* opaque) {
  normuon_mpi_ctx_* ctx = (normuon_mpi_ctx_*)opaque;
  NORMUON_MPI_STORE_(&ctx->aborted, 1);
  return NORMUON_SUCCESS;
}

static inline const char* normuon_mpi_last_error_(void* opaque) {
  return ((normuon_mpi_ctx_*)opaque)->message;
}

static inline void normuon_mpi_destroy_(void* opaque) {
  normuon_mpi_ctx_* ctx = (normuon_mpi_ctx_*)opaque;
  int finalized = 1;
  if (ctx->leaked > 0) return; /* MPI may still write into ctx->scratch: keep everything */
  MPI_Finalized(&finalized);
  /* After a failure, MPI_Comm_free could wait on a dead peer in some MPI libraries: leak the
   * duplicate instead (the job is ending anyway). */
  if (!finalized && !ctx->failed) MPI_Comm_free(&ctx->comm);
  free(ctx->reqs);
  free(ctx->statuses);
  free(ctx->indices);
  free(ctx->req_peer);
  free(ctx->req_is_recv);
  free(ctx->req_bytes);
  free(ctx->peer_mark);
  free(ctx->scratch);
  free(ctx);
}

static inline normuon_status_t normuon_mpi_create_error_(char* error, size_t error_size,
                                                         normuon_status_t status, const char* fmt,
                                                         ...) {
  va_list ap;
  if (error == NULL || error_size == 0) return status;
  va_start(ap, fmt);
  normuon_mpi_vformat_(error, error_size, fmt, ap);
  va_end(ap);
  return status;
}

/* The context of a new communicator over a duplicate of comm (collective over comm). The
 * public create below wraps it; tests call the collectives on it directly. */
static inline normuon_status_t normuon_mpi_ctx_create_(MPI_Comm comm, double timeout_seconds,
                                                       normuon_mpi_ctx_** out, char* error,
                                                       size_t error_size) {
  int initialized = 0, finalized = 0, provided = 0, inter = 0, rc, done = 0, flag = 0;
  int rank = 0, world = 0;
  int* tag_ub = NULL;
  double deadline;
  long pause_ns = 20000;
  MPI_Comm dup = MPI_COMM_NULL;
  MPI_Request request = MPI_REQUEST_NULL;
  normuon_mpi_ctx_* ctx;
  char text[MPI_MAX_ERROR_STRING + 64];
  if (error == NULL && error_size > 0) return NORMUON_ERROR_INVALID_ARGUMENT;
  if (error != NULL && error_size > 0) error[0] = '\0';
  if (out == NULL) {
    return normuon_mpi_create_error_(error, error_size, NORMUON_ERROR_INVALID_ARGUMENT,
                                     "normuon_comm_create_mpi: out is NULL");
  }
  if (!(timeout_seconds > 0.0 && timeout_seconds <= 1e7)) {
    return normuon_mpi_create_error_(error, error_size, NORMUON_ERROR_INVALID_ARGUMENT,
                                     "normuon_comm_create_mpi: timeout_seconds = %g must be "
                                     "finite, > 0 and <= 1e7",
                                     timeout_seconds);
  }
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) {
    return normuon_mpi_create_error_(error, error_size, NORMUON_ERROR_INVALID_STATE,
                                     "normuon_comm_create_mpi: MPI is %s",
                                     finalized ? "already finalized"
                                               : "not initialized (call MPI_Init_thread with "
                                                 "MPI_THREAD_MULTIPLE first)");
  }
  MPI_Query_thread(&provided);
  if (provided != MPI_THREAD_SERIALIZED && provided != MPI_THREAD_MULTIPLE) {
    return normuon_mpi_create_error_(
        error, error_size, NORMUON_ERROR_INVALID_STATE,
        "normuon_comm_create_mpi: MPI was initialized with thread level %s; normuon needs "
        "MPI_THREAD_SERIALIZED or MPI_THREAD_MULTIPLE, because its pipelined schedules call MPI "
        "from a worker thread: initialize MPI with MPI_Init_thread(&argc, &argv, "
        "MPI_THREAD_MULTIPLE, &provided)",
        provided == MPI_THREAD_SINGLE     ? "MPI_THREAD_SINGLE"
        : provided == MPI_THREAD_FUNNELED ? "MPI_THREAD_FUNNELED"
                                          : "unknown");
  }
  if (comm == MPI_COMM_NULL) {
    return normuon_mpi_create_error_(error, error_size, NORMUON_ERROR_INVALID_ARGUMENT,
                                     "normuon_comm_create_mpi: comm is MPI_COMM_NULL");
  }
  rc = MPI_Comm_test_inter(comm, &inter);
  if (rc != MPI_SUCCESS || inter) {
    if (rc != MPI_SUCCESS) normuon_mpi_error_text_(rc, text, sizeof text);
    return normuon_mpi_create_error_(
        error, error_size, rc != MPI_SUCCESS ? NORMUON_ERROR_COMM : NORMUON_ERROR_INVALID_ARGUMENT,
        "normuon_comm_create_mpi: %s%s",
        rc != MPI_SUCCESS ? "MPI_Comm_test_inter(comm) failed: "
                          : "comm is an "
                            "inter-communicator; pass an "
                            "intra-communicator",
        rc != MPI_SUCCESS ? text : "");
  }
  /* The duplicate, bounded by the timeout (MPI_Comm_dup would block on a missing rank). */
  rc = MPI_Comm_idup(comm, &dup, &request);
  if (rc != MPI_SUCCESS) {
    normuon_mpi_error_text_(rc, text, sizeof text);
    return normuon_mpi_create_error_(error, error_size, NORMUON_ERROR_COMM,
                                     "normuon_comm_create_mpi: MPI_Comm_idup failed: %s", text);
  }
  deadline = MPI_Wtime() + timeout_seconds;
  for (;;) {
    rc = MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) {
      normuon_mpi_error_text_(rc, text, sizeof text);
      return normuon_mpi_create_error_(error, error_size, NORMUON_ERROR_COMM,
                                       "normuon_comm_create_mpi: MPI_Comm_idup failed: %s", text);
    }
    if (done) break;
    if (MPI_Wtime() >= deadline) {
      return normuon_mpi_create_error_(
          error, error_size, NORMUON_ERROR_TIMEOUT,
          "normuon_comm_create_mpi: MPI_Comm_idup did not complete within %g s: every rank of "
          "comm must call normuon_comm_create_mpi (the pending duplication cannot be cancelled: "
          "end the job)",
          timeout_seconds);
    }
    normuon_mpi_pause_(pause_ns);
    if (pause_ns < 1000000) pause_ns *= 2;
  }
  MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
  MPI_Comm_rank(dup, &rank);
  MPI_Comm_size(dup, &world);
  rc = MPI_Comm_get_attr(dup, MPI_TAG_UB, &tag_ub, &flag);
  ctx = (normuon_mpi_ctx_*)calloc(1, sizeof(normuon_mpi_ctx_));
  if (ctx != NULL) ctx->peer_mark = (char*)calloc((size_t)world, 1);
  if (ctx == NULL || ctx->peer_mark == NULL) {
    free(ctx);
    MPI_Comm_free(&dup);
    return normuon_mpi_create_error_(error, error_size, NORMUON_ERROR_OUT_OF_MEMORY,
                                     "normuon_comm_create_mpi: out of memory");
  }
  ctx->comm = dup;
  ctx->rank = rank;
  ctx->world = world;
  /* The standard guarantees MPI_TAG_UB >= 32767. */
  ctx->tag_period =
      (rc == MPI_SUCCESS && flag && tag_ub != NULL && *tag_ub >= 32767) ? *tag_ub / 4 : 32767 / 4;
  ctx->timeout_s = timeout_seconds;
  *out = ctx;
  return NORMUON_SUCCESS;
}

static inline normuon_status_t normuon_comm_create_mpi(MPI_Comm comm, double timeout_seconds,
                                                       normuon_comm_t* out, char* error,
                                                       size_t error_size) {
  normuon_mpi_ctx_* ctx = NULL;
  normuon_comm_ops_t ops;
  normuon_status_t s;
  if (error == NULL && error_size > 0) return NORMUON_ERROR_INVALID_ARGUMENT;
  if (out == NULL) {
    return normuon_mpi_create_error_(error, error_size, NORMUON_ERROR_INVALID_ARGUMENT,
                                     "normuon_comm_create_mpi: out is NULL");
  }
  s = normuon_mpi_ctx_create_(comm, timeout_seconds, &ctx, error, error_size);
  if (s != NORMUON_SUCCESS) return s;
  normuon_comm_ops_init(&ops);
  ops.ctx = ctx;
  ops.rank = ctx->rank;
  ops.world_size = ctx->world;
  ops.exchange = normuon_mpi_exchange_;
  ops.all_reduce_sum_f32 = normuon_mpi_all_reduce_;
  ops.all_gather = normuon_mpi_all_gather_;
  ops.abort = normuon_mpi_abort_;
  ops.destroy = normuon_mpi_destroy_;
  ops.last_error = normuon_mpi_last_error_;
  ops.device_memory = 0;
  s = normuon_comm_create_custom(&ops, out);
  if (s != NORMUON_SUCCESS) {
    normuon_mpi_create_error_(error, error_size, s,
                              "normuon_comm_create_mpi: normuon_comm_create_custom failed: %s",
                              normuon_comm_last_error(0));
    normuon_mpi_destroy_(ctx);
    return s;
  }
  return NORMUON_SUCCESS;
}

/* What rank 0 broadcasts in normuon_comm_create_nccl_mpi: its status, the id, and (on failure)
 * why. Bytes only: the layout is the same on every rank of one program. */
typedef struct normuon_mpi_nccl_id_ {
  int32_t status; /* normuon_status_t of rank 0's normuon_nccl_get_unique_id */
  unsigned char id[NORMUON_NCCL_UNIQUE_ID_BYTES];
  char message[512];
} normuon_mpi_nccl_id_;

static inline normuon_status_t normuon_comm_create_nccl_mpi(MPI_Comm comm, int32_t device,
                                                            double timeout_seconds,
                                                            normuon_comm_t* out, char* error,
                                                            size_t error_size) {
  int initialized = 0, finalized = 0, inter = 0, rank = 0, world = 0, rc, done = 0;
  long pause_ns = 20000;
  double deadline;
  MPI_Request request = MPI_REQUEST_NULL;
  normuon_mpi_nccl_id_ msg;
  normuon_comm_t made = 0;
  normuon_status_t s;
  char text[MPI_MAX_ERROR_STRING + 64];
  if (error == NULL && error_size > 0) return NORMUON_ERROR_INVALID_ARGUMENT;
  if (error != NULL && error_size > 0) error[0] = '\0';
  if (out == NULL) {
    return normuon_mpi_create_error_(error, error_size, NORMUON_ERROR_INVALID_ARGUMENT,
                                     "normuon_comm_create_nccl_mpi: out is NULL");
  }
  if (!(timeout_seconds > 0.0 && timeout_seconds <= 1e7)) {
    return normuon_mpi_create_error_(error, error_size, NORMUON_ERROR_INVALID_ARGUMENT,
                                     "normuon_comm_create_nccl_mpi: timeout_seconds = %g must be "
                                     "finite, > 0 and <= 1e7",
                                     timeout_seconds);
  }
  if (device < -1) {
    return normuon_mpi_create_error_(error, error_size, NORMUON_ERROR_INVALID_ARGUMENT,
                                     "normuon_comm_create_nccl_mpi: device = %d must be >= -1",
                                     (int)device);
  }
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) {
    return normuon_mpi_create_error_(error, error_size, NORMUON_ERROR_INVALID_STATE,
                                     "normuon_comm_create_nccl_mpi: MPI is %s",
                                     finalized ? "already finalized" : "not initialized");
  }
  if (comm == MPI_COMM_NULL) {
    return normuon_mpi_create_error_(error, error_size, NORMUON_ERROR_INVALID_ARGUMENT,
                                     "normuon_comm_create_nccl_mpi: comm is MPI_COMM_NULL");
  }
  rc = MPI_Comm_test_inter(comm, &inter);
  if (rc != MPI_SUCCESS || inter) {
    if (rc != MPI_SUCCESS) normuon_mpi_error_text_(rc, text, sizeof text);
    return normuon_mpi_create_error_(
        error, error_size, rc != MPI_SUCCESS ? NORMUON_ERROR_COMM : NORMUON_ERROR_INVALID_ARGUMENT,
        "normuon_comm_create_nccl_mpi: %s%s",
        rc != MPI_SUCCESS ? "MPI_Comm_test_inter(comm) failed: "
                          : "comm is an inter-communicator; pass an intra-communicator",
        rc != MPI_SUCCESS ? text : "");
  }
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &world);
  memset(&msg, 0, sizeof msg);
  if (rank == 0) {
    /* Whatever happens, rank 0 broadcasts: the id, or the failure instead of it. */
    msg.status = (int32_t)normuon_nccl_get_unique_id(msg.id);
    if (msg.status != (int32_t)NORMUON_SUCCESS) {
      normuon_mpi_format_(msg.message, sizeof msg.message, "%s", normuon_comm_last_error(0));
    }
  }
  rc = MPI_Ibcast(&msg, (int)sizeof msg, MPI_BYTE, 0, comm, &request);
  if (rc != MPI_SUCCESS) {
    normuon_mpi_error_text_(rc, text, sizeof text);
    return normuon_mpi_create_error_(error, error_size, NORMUON_ERROR_COMM,
                                     "normuon_comm_create_nccl_mpi: MPI_Ibcast failed: %s", text);
  }
  deadline = MPI_Wtime() + timeout_seconds;
  for (;;) {
    rc = MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) {
      normuon_mpi_error_text_(rc, text, sizeof text);
      return normuon_mpi_create_error_(
          error, error_size, NORMUON_ERROR_COMM,
          "normuon_comm_create_nccl_mpi: the broadcast of the NCCL unique id failed: %s", text);
    }
    if (done) break;
    if (MPI_Wtime() >= deadline) {
      return normuon_mpi_create_error_(
          error, error_size, NORMUON_ERROR_TIMEOUT,
          "normuon_comm_create_nccl_mpi: rank %d of %d: the broadcast of the NCCL unique id from "
          "rank 0 did not complete within %g s: every rank of comm must call "
          "normuon_comm_create_nccl_mpi (the pending broadcast cannot be cancelled: end the job)",
          rank, world, timeout_seconds);
    }
    normuon_mpi_pause_(pause_ns);
    if (pause_ns < 1000000) pause_ns *= 2;
  }
  if (msg.status != (int32_t)NORMUON_SUCCESS) {
    msg.message[sizeof msg.message - 1] = '\0';
    return normuon_mpi_create_error_(
        error, error_size, (normuon_status_t)msg.status,
        "normuon_comm_create_nccl_mpi: rank %d of %d: rank 0 could not make the NCCL unique id "
        "(normuon_nccl_get_unique_id: %s): %s",
        rank, world, normuon_status_string((normuon_status_t)msg.status), msg.message);
  }
  s = normuon_comm_create_nccl(msg.id, (int32_t)rank, (int32_t)world, device, timeout_seconds,
                               &made);
  if (s != NORMUON_SUCCESS) {
    return normuon_mpi_create_error_(
        error, error_size, s,
        "normuon_comm_create_nccl_mpi: rank %d of %d: normuon_comm_create_nccl: %s: %s", rank,
        world, normuon_status_string(s), normuon_comm_last_error(0));
  }
  *out = made;
  return NORMUON_SUCCESS;
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* NORMUON_MPI_H_ */
