/* comm.h: communicators for the normuon runtime, version 1.
 *
 * A communicator connects the ranks of one sharded optimizer (one rank per process or thread,
 * each holding a contiguous row block of every matrix). The runtime needs three collectives:
 * a grouped exchange of point-to-point transfers (the gather of matrix rows to their owner and
 * the scatter back, an all-to-all with uneven byte counts), an all-reduce sum of a small float
 * vector, and an all-gather of small metadata.
 *
 * The communicator is a C interface, a struct of function pointers, so that a trainer built on
 * MPI, Gloo or a torch process group can plug in its own transport (normuon_comm_create_custom).
 * The library also provides an in-process group: N ranks as N threads of one process, on host
 * buffers, used by tests, demos and CPU benchmarks, with fault injection.
 *
 * The conventions of normuon.h hold here too ([in]/[out] pointers, ownership, versioned
 * structs, statuses; docs/ARCHITECTURE.md section 7). Handles follow normuon.h: opaque 64-bit
 * ids with a generation count; 0 is never a live communicator (normuon_create(config, 0, ...)
 * means "single rank, no communicator"); a destroyed handle, or a runtime handle, is reported
 * as NORMUON_ERROR_INVALID_HANDLE, not dereferenced. A handle may be destroyed while a runtime
 * still uses it: the runtime keeps the communicator alive and it is torn down when the last
 * user lets go. The functions below may be called from any thread; none of them takes a
 * stream (the runtime passes its step's stream to the collectives).
 *
 * Failure is a state (docs/ARCHITECTURE.md section 6, "Blocking"): every blocking wait has a timeout that
 * becomes NORMUON_ERROR_TIMEOUT, never a hang; a failed collective leaves the library's own
 * communicators (in-process, NCCL) failed (later collectives fail at once) and
 * normuon_comm_get_async_error reports it. A custom communicator's errors are its transport's to
 * judge: see "After a failure" below normuon_comm_ops_t.
 *
 * Pure C99 (no bool, no C++): usable from C, C++, Python ctypes, Rust.
 */
#ifndef NORMUON_COMM_H_
#define NORMUON_COMM_H_

#include <stdint.h>

/* Relative include: works whether this header is reached as "normuon/comm.h" (installed
 * include directory) or through its path in the source tree. */
#include "normuon.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One point-to-point transfer of an exchange, seen from the rank that lists it.
 * In a send list: bytes from buf go to rank `peer`. In a receive list: bytes from rank `peer`
 * land in buf. buf may be NULL when bytes is 0. */
typedef struct normuon_p2p {
  int32_t peer;   /* 0 <= peer < world_size; may be the calling rank itself (a local copy) */
  void* buf;      /* host memory for host backends, device memory for device backends */
  uint64_t bytes; /* must equal the byte count the peer lists for the matching transfer */
} normuon_p2p_t;

/* A communicator supplied by the caller, one per rank. Fill it with normuon_comm_ops_init, then
 * set the fields. normuon_comm_create_custom copies the struct; the caller may free it after.
 * Versions: the first ended after last_error (72 bytes on 64-bit platforms); device_memory came
 * later (an older caller's communicator is a host communicator).
 *
 * Calling rules, for every function below:
 * - The runtime calls exchange, all_reduce_sum_f32 and all_gather from one thread at a time per
 *   communicator, and every rank issues the same collectives in the same order.
 * - Buffers belong to the runtime. They stay valid until the collective is complete: on a host
 *   backend (stream ignored), until the function returns, and the function returns only when the
 *   collective is complete on this rank (all its receives written, all its sends read); on a
 *   device backend, until the work queued on `stream` (a cudaStream_t) has executed, and the
 *   function should only enqueue.
 * - Blocking: no call may block forever. A host backend that waits on peers must give up after
 *   its own timeout and return NORMUON_ERROR_TIMEOUT; a device backend must turn a hang into an
 *   error by its watchdog and abort. The runtime cannot interrupt a call.
 * - Completion: NORMUON_SUCCESS means the collective is complete on this rank (host backend:
 *   every receive of this rank written, every send read; device backend: queued so that it
 *   completes in `stream` order). It says nothing about the peers: their calls of the same
 *   collective may still fail.
 * - Statuses: NORMUON_SUCCESS, NORMUON_ERROR_TIMEOUT (a peer did not arrive in time),
 *   NORMUON_ERROR_COMM (the transport failed), NORMUON_ERROR_INVALID_ARGUMENT (bad arguments on
 *   this rank), or any other normuon_status_t. On failure the runtime skips the commit of the
 *   step on this rank, reads last_error for the message, and reports both to its caller.
 *   An error may be one-sided: seen by this rank only, after the data moved (a TCP reset seen by
 *   one side, a rank killed after it sent), while the peers' calls succeed. That is allowed; the
 *   runtime copes with it as "After a failure" says.
 * - All counts are in bytes except all_reduce_sum_f32's (floats).
 *
 * After a failure (what the runtime does, and what it needs from the transport):
 * - The runtime keeps every rank on the same sequence of collectives. A step issues the same
 *   collectives on every rank whatever fails where: a rank whose collective or computation
 *   failed still issues the rest of the step's exchanges (their data is never used) and the
 *   step's last collective, an all-reduce that carries each rank's flags: whether the step
 *   failed there, and its epoch (the number of steps it has committed). A rank commits a step
 *   only if its own collectives all succeeded and the flags say that no rank failed and every
 *   rank has the same epoch. So a failure on one rank before the last collective fails the step
 *   on every rank (NORMUON_ERROR_COMM naming the rank that failed), and nothing changes anywhere.
 * - Only a one-sided failure of the step's last collective lets the ranks whose call succeeded
 *   commit while the failing one does not. The next step's flags show it (the epochs differ):
 *   that step, every later one, and a checkpoint save fail on every rank with
 *   NORMUON_ERROR_INVALID_STATE naming the ranks that did not commit and the step, and change
 *   nothing, until the state is restored on every rank with normuon_load_checkpoint (or the
 *   runtimes are created anew). This is detected at the next step's last collective, before
 *   anything is committed; the collectives before it in that step only move data.
 * - What the transport must do: after returning an error it is called again (the rest of the
 *   step, then later steps), so it must either go on working with its peers, if it can (the
 *   collectives then complete as usual and the runtime tells every rank what happened), or fail
 *   every later call promptly (a sticky failure of its own, as the library's communicators do),
 *   never hang. A transport that gave up on a collective (NORMUON_ERROR_TIMEOUT) must not let a
 *   later collective be matched with a peer's call of that one: the runtime ends a custom
 *   communicator after a timeout (later collectives are refused at once, without calling the
 *   ops) and after normuon_comm_abort, and after no other status the ops return. Collectives of
 *   different kinds or byte counts that meet (which the runtime never issues on healthy ranks)
 *   must fail or time out, never corrupt memory.
 * - What the runtime guarantees in return: no rank commits a step in which any rank's collective
 *   or computation failed before the last collective; no rank commits a step or saves a
 *   checkpoint while the ranks' epochs differ; every call returns within the transport's timeouts;
 *   a failure leaves this rank's parameters and state as they were. A transport whose peers
 *   cannot reach one another any more cannot tell them why: they time out
 *   (NORMUON_ERROR_TIMEOUT), and the failing rank's own message says whether the others may have
 *   committed. */
typedef struct normuon_comm_ops {
  /* sizeof(normuon_comm_ops_t) as the caller compiled it (normuon_comm_ops_init sets it). */
  uint32_t struct_size;

  /* Passed as the first argument of every function below. Owned by the caller until the
   * communicator is torn down; then destroy(ctx), if set, is called once. */
  void* ctx;

  /* This rank (0 <= rank < world_size) and the number of ranks (>= 1). */
  int32_t rank;
  int32_t world_size;

  /* One grouped set of sends and receives: an all-to-all with uneven counts. Required.
   * sends[0..n_sends) and recvs[0..n_recvs) are read during the call only (copy them if the
   * transfer outlives it). Send i to rank d matches the receive on rank d that lists this rank
   * as peer at the same position among its receives from this rank; their byte counts agree (a
   * disagreement is the caller's bug: fail rather than truncate). A rank may list itself as peer:
   * that is a local copy. Zero-byte transfers are legal and may be skipped. Receive buffers do
   * not overlap any send buffer of the same exchange. Complete when every listed transfer on
   * this rank is done (NCCL: ncclGroupStart, ncclSend/ncclRecv each, ncclGroupEnd). */
  normuon_status_t (*exchange)(void* ctx, const normuon_p2p_t* sends, int32_t n_sends,
                               const normuon_p2p_t* recvs, int32_t n_recvs, void* stream);

  /* out[i] = sum over ranks of in[i], for i < count; the same `count` on every rank. in may
   * equal out (in place). The runtime relies on every rank getting the bitwise-same result; the
   * summation order is the backend's choice but must be the same on every rank. Required. */
  normuon_status_t (*all_reduce_sum_f32)(void* ctx, const float* in, float* out, uint64_t count,
                                         void* stream);

  /* out holds world_size * bytes_per_rank bytes: rank r's `in` lands at out + r*bytes_per_rank.
   * The same bytes_per_rank on every rank. In place when in == out + rank*bytes_per_rank.
   * Required. */
  normuon_status_t (*all_gather)(void* ctx, const void* in, void* out, uint64_t bytes_per_rank,
                                 void* stream);

  /* Tears the communicator down without waiting on peers (ncclCommAbort): a call in flight on
   * another thread must return an error soon after. May be called from any thread, at any time,
   * more than once. After it, the runtime issues no more collectives on this communicator.
   * Optional (NULL: the runtime only stops using the communicator). */
  normuon_status_t (*abort)(void* ctx);

  /* Frees ctx. Called once, when the communicator handle has been destroyed and no runtime
   * uses it any more; never called if normuon_comm_create_custom fails. Optional (NULL: the
   * caller frees ctx itself, after that point). */
  void (*destroy)(void* ctx);

  /* A human message for the last failure of a call on ctx, or NULL. Called right after a failed
   * call, on the thread that made it; the string is owned by ctx and read before the next call.
   * Optional (NULL: messages carry only the status name). */
  const char* (*last_error)(void* ctx);

  /* Where the buffers of the three collectives live. 0 (the default): host memory, `stream` is
   * ignored and a call returns when its collective is complete; for the CPU backend, and for the
   * CUDA backend at world size 1. 1: CUDA device memory, and a call enqueues its collective on
   * `stream` (torch.distributed or the trainer's own NCCL, say); required by the CUDA backend at
   * world size > 1, refused by the CPU backend. Any other value is refused. */
  int32_t device_memory;
} normuon_comm_ops_t;

/* [out] ops: zeroed, struct_size = this library's size, rank 0, world_size 1. NULL: does
 * nothing. Returns nothing; never blocks. */
NORMUON_API void normuon_comm_ops_init(normuon_comm_ops_t* ops);

/* Wraps caller-supplied operations as a communicator. [in] ops: copied (the versioned copy of
 * normuon.h, "Versioned structs"); the function pointers must stay callable, and ctx valid,
 * until the communicator is torn down. [out] out: the new handle. On success takes over ops->ctx
 * (see destroy). Fails with NORMUON_ERROR_INVALID_ARGUMENT naming the field when struct_size is
 * not a valid size, rank or world_size is out of range, device_memory is not 0 or 1, or a
 * required function pointer is NULL; nothing is taken over then (ops->destroy is never called
 * by a create that fails). Calls none of the functions; never blocks. */
NORMUON_API normuon_status_t normuon_comm_create_custom(const normuon_comm_ops_t* ops,
                                                        normuon_comm_t* out);

/* Creates world_size communicators that form one in-process group: [out] out holds world_size
 * handles, rank r's written to out[r] (all of them on success, none on failure); destroy each
 * with normuon_comm_destroy. Each rank is driven by its own thread, on host buffers (stream is
 * ignored). Creation never blocks. Every collective is a rendezvous: a call returns when all ranks
 * have called the same collective, or after timeout_seconds (finite, > 0, <= 1e7) with
 * NORMUON_ERROR_TIMEOUT naming the ranks that did not arrive. Transfers are checked across ranks
 * before anything is copied: a mismatch (byte counts, collective kind, counts) fails the
 * collective on every rank and copies nothing. A failure of any kind (timeout, mismatch,
 * injected fault, abort) fails the whole group: later collectives on every rank return
 * NORMUON_ERROR_COMM at once. Results are deterministic: all_reduce_sum_f32 sums in rank order
 * 0, 1, ..., world_size-1 and gives the bitwise-same result on every rank.
 * 1 <= world_size <= 4096. */
NORMUON_API normuon_status_t normuon_comm_create_inprocess_group(int32_t world_size,
                                                                double timeout_seconds,
                                                                normuon_comm_t* out);

/* Where an in-process group's buffers live. */
typedef enum {
  NORMUON_COMM_MEMORY_HOST = 0,   /* host memory; stream ignored (normuon_comm_create_inprocess_group) */
  NORMUON_COMM_MEMORY_DEVICE = 1, /* CUDA device memory, for the CUDA backend's sharded step */
  NORMUON_COMM_MEMORY_MIN_ENUM = -0x7fffffff - 1, /* with MAX_ENUM: the enum holds any int32 */
  NORMUON_COMM_MEMORY_MAX_ENUM = 0x7fffffff
} normuon_comm_memory_t;

/* As normuon_comm_create_inprocess_group, with the buffers in `memory`. With
 * NORMUON_COMM_MEMORY_DEVICE the group is a device communicator, as NCCL is: every buffer is
 * device memory (ranks as threads sharing one machine's GPUs, each with the device of its buffers
 * current), and the runtime's CUDA backend accepts it at any world size. A collective waits for
 * the work queued on the calling rank's stream, copies on that stream, and returns when its
 * copies are complete (synchronous: a test and demo transport, not a fast one).
 * Errors: NORMUON_ERROR_INVALID_ARGUMENT (as above, or memory not one of the two values),
 * NORMUON_ERROR_UNSUPPORTED (DEVICE in a build without CUDA), NORMUON_ERROR_CUDA (DEVICE with no
 * usable CUDA device); nothing is created then. */
NORMUON_API normuon_status_t normuon_comm_create_inprocess_group_ex(int32_t world_size,
                                                                   double timeout_seconds,
                                                                   normuon_comm_memory_t memory,
                                                                   normuon_comm_t* out);

/* Releases the handle. The communicator is torn down when no runtime uses it any more (custom:
 * ops.destroy(ctx), on the thread that lets go of it last: this one or normuon_destroy's;
 * in-process: the group fails for the other ranks, as a dead peer would; NCCL: as
 * normuon_comm_create_nccl and normuon_comm_wrap_nccl say). Custom and in-process: does not
 * wait on peers; an owned NCCL communicator's finalize may wait, at most its timeout_seconds.
 * A second destroy returns NORMUON_ERROR_INVALID_HANDLE. */
NORMUON_API normuon_status_t normuon_comm_destroy(normuon_comm_t comm);

/* This rank and the group's size: [out] rank, [out] world_size. Never block. */
NORMUON_API normuon_status_t normuon_comm_rank(normuon_comm_t comm, int32_t* rank);
NORMUON_API normuon_status_t normuon_comm_world_size(normuon_comm_t comm, int32_t* world_size);

/* Tears the communicator down without waiting on peers; safe from any thread, also while a
 * collective is in flight on another thread. In-process group: fails the group, so that every
 * rank's pending and later collectives return NORMUON_ERROR_COMM at once. Custom: calls
 * ops.abort on the calling thread. Does not wait on peers. Aborting twice is not an error. */
NORMUON_API normuon_status_t normuon_comm_abort(normuon_comm_t comm);

/* The asynchronous error state (ncclCommGetAsyncError): [out] error = NORMUON_SUCCESS while
 * the communicator is usable, otherwise the status of the failure that ended it (its message
 * then is normuon_comm_last_error(comm)). A custom communicator is ended by a timeout and by
 * normuon_comm_abort only (see "After a failure"). Does not wait. */
NORMUON_API normuon_status_t normuon_comm_get_async_error(normuon_comm_t comm,
                                                          normuon_status_t* error);

/* The message of the last failed call on comm through this header ("" if none): a string owned
 * by the handle, valid until the next call on comm (normuon_comm_destroy included).
 * normuon_comm_last_error(0) (or any handle that is not live) gives the message of the last
 * failed create or handle lookup on this thread. Never NULL; never blocks. */
NORMUON_API const char* normuon_comm_last_error(normuon_comm_t comm);

/* Faults for tests, in-process groups only. Collectives of a rank are numbered from 0 in the
 * order the rank calls them (exchange, all-reduce and all-gather share one count), the same
 * numbers the group's error messages use ("collective #7"). */
typedef enum normuon_fault {
  NORMUON_FAULT_NONE = 0,         /* disarms a pending fault */
  NORMUON_FAULT_ERROR = 1,        /* this rank's collective #at_call returns NORMUON_ERROR_COMM
                                     without taking part; the group fails, so every rank of that
                                     collective returns an error naming this rank */
  NORMUON_FAULT_NEVER_ARRIVE = 2, /* this rank does not take part in its collective #at_call
                                     (a dead peer): its own call returns NORMUON_ERROR_COMM at
                                     once, the other ranks time out naming it */
  NORMUON_FAULT_WRONG_SIZE = 3,    /* this rank's first exchange with a send, at or after
                                     collective #at_call, posts its first send with one byte
                                     more than listed: every rank of that exchange fails with a
                                     message naming both ranks and both counts, nothing copied */
  NORMUON_FAULT_MIN_ENUM = -0x7fffffff - 1, /* with MAX_ENUM: the enum holds any int32 */
  NORMUON_FAULT_MAX_ENUM = 0x7fffffff
} normuon_fault_t;

/* Arms one fault on this rank of an in-process group (replacing a pending one; fires once).
 * at_call >= the rank's next collective number. NORMUON_ERROR_UNSUPPORTED for other kinds of
 * communicator. No pointers; never blocks. */
NORMUON_API normuon_status_t normuon_comm_inject_fault(normuon_comm_t comm, normuon_fault_t fault,
                                                       int64_t at_call);

/* ---- NCCL ----
 *
 * A communicator over NCCL, one rank per GPU, for the CUDA backend: every buffer is device
 * memory and `stream` is the step's cudaStream_t. normuon does not link NCCL: it uses the NCCL
 * already loaded in the process (a trainer's, e.g. PyTorch's), else the library named by the
 * environment variable NORMUON_NCCL_LIBRARY, else "libnccl.so.2" from the loader's search path,
 * and requires NCCL 2.18 or newer. A communicator must be driven by the NCCL library that made
 * it, which is why the one already in the process comes first.
 *
 * Collectives on an NCCL communicator enqueue work on the stream and return; they wait on the
 * host only until NCCL has issued the work, never for it to run. Communicators made here are
 * non-blocking (ncclConfig_t.blocking = 0): every call is bounded by the communicator's
 * timeout_seconds, and a timeout aborts the communicator (ncclCommAbort) and returns
 * NORMUON_ERROR_TIMEOUT. An error that NCCL reports (ncclCommGetAsyncError) returns
 * NORMUON_ERROR_COMM with NCCL's message. Either failure is final for the communicator, and its
 * message says that the step's parameters must be restored from a checkpoint: work already
 * enqueued may have run in part. Not detected: a kernel that waits forever on the device after
 * it was enqueued (a peer that skipped a collective); bound the wait for the step's completion
 * and call normuon_comm_abort.
 *
 * In a CPU-only build of normuon (no CUDA) these functions return NORMUON_ERROR_UNSUPPORTED. */

/* Bytes of an NCCL unique id (ncclUniqueId). */
#define NORMUON_NCCL_UNIQUE_ID_BYTES 128

/* Writes a new NCCL unique id (ncclGetUniqueId) to [out] id_out, which holds
 * NORMUON_NCCL_UNIQUE_ID_BYTES bytes (the caller's memory, written on success only). May block
 * while NCCL sets up its bootstrap (network interfaces). Call it on one rank and send the bytes
 * to every rank over the trainer's own channel (torch.distributed broadcast, MPI, a file); they
 * are opaque.
 * NORMUON_ERROR_UNSUPPORTED when NCCL cannot be loaded or is too old (the message names what
 * was tried, the version found and its path); NORMUON_ERROR_COMM when NCCL fails. */
NORMUON_API normuon_status_t normuon_nccl_get_unique_id(void* id_out);

/* Creates this process's rank of a new NCCL communicator of world_size ranks, owned by normuon:
 * normuon_comm_destroy finalizes and destroys it (ncclCommFinalize, ncclCommDestroy; or
 * ncclCommAbort if it failed or its finalize does not finish within timeout_seconds).
 * Collective: every rank calls it with the same [in] unique_id (NORMUON_NCCL_UNIQUE_ID_BYTES
 * bytes from normuon_nccl_get_unique_id, read during the call only) and world_size, each from
 * its own process or thread; the call returns when all have joined. device: the CUDA device of
 * this rank, made current for the call and restored after (-1: the device current on the
 * calling thread). timeout_seconds (finite, > 0, <= 1e7) bounds the creation and each later
 * collective.
 * Errors: NORMUON_ERROR_INVALID_ARGUMENT (NULL pointers, rank not in [0, world_size), device
 * < -1, bad timeout), NORMUON_ERROR_UNSUPPORTED (no usable NCCL; CPU-only build),
 * NORMUON_ERROR_CUDA (the device could not be made current), NORMUON_ERROR_TIMEOUT (not every
 * rank joined in time; nothing is left behind), NORMUON_ERROR_COMM (NCCL failed). [out] out is
 * written only on success. */
NORMUON_API normuon_status_t normuon_comm_create_nccl(const void* unique_id, int32_t rank,
                                                      int32_t world_size, int32_t device,
                                                      double timeout_seconds,
                                                      normuon_comm_t* out);

/* Wraps the caller's ncclComm_t ([in] nccl_comm, passed as void*; borrowed, see below), which
 * must come from the same NCCL library normuon uses (the one already loaded in the process: see
 * above). [out] out: the new handle. Rank and world size are
 * read from it. The communicator stays the caller's: normuon_comm_destroy releases only the
 * handle, never the ncclComm_t, and normuon_comm_abort only stops normuon's use of it.
 * One exception: when a collective of normuon's times out (NORMUON_ERROR_TIMEOUT), normuon
 * aborts the ncclComm_t (ncclCommAbort), which frees it: the caller must then neither use nor
 * destroy it again. NCCL's own errors on it are reported (NORMUON_ERROR_COMM) but not acted on:
 * the caller aborts it. The timeout can fire only if the communicator was created non-blocking;
 * a blocking one (PyTorch's default) blocks inside NCCL, and its owner's watchdog applies.
 * Errors: NORMUON_ERROR_INVALID_ARGUMENT (NULL, bad timeout, not a communicator of this NCCL),
 * NORMUON_ERROR_INVALID_STATE (it has already failed), NORMUON_ERROR_TIMEOUT (still
 * initializing after timeout_seconds; not aborted), NORMUON_ERROR_UNSUPPORTED (no usable NCCL;
 * CPU-only build). */
NORMUON_API normuon_status_t normuon_comm_wrap_nccl(void* nccl_comm, double timeout_seconds,
                                                    normuon_comm_t* out);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* NORMUON_COMM_H_ */
