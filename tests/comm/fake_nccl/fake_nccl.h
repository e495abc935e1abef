/* The test hooks of the stand-in NCCL (libnccl_fake.so, fake_nccl.cc): the functions a test
 * resolves with dlsym on the loaded library, next to the NCCL functions it exports. Prefixed
 * fake_nccl_ so that no NCCL name is ever shadowed. Plain C: the library exports them with C
 * linkage and tests reach them only through dlsym. */
#ifndef NORMUON_TESTS_COMM_FAKE_NCCL_FAKE_NCCL_H_
#define NORMUON_TESTS_COMM_FAKE_NCCL_FAKE_NCCL_H_

#ifdef __cplusplus
extern "C" {
#endif

/* A fault armed for one rank (of any communicator) by fake_nccl_inject; it fires once, at that
 * rank's next asynchronous operation: ncclCommInitRankConfig, a group (ncclGroupEnd, or a lone
 * collective), or ncclCommFinalize. Faults model non-blocking communicators; on a blocking one
 * FAKE_NCCL_HANG blocks the caller until the communicator is aborted from another thread. */
enum FakeNcclFault {
  FAKE_NCCL_NONE = 0,        /* disarms */
  FAKE_NCCL_ASYNC_ERROR = 1, /* the call returns ncclInProgress; then ncclCommGetAsyncError reports
                                ncclRemoteError and ncclGetLastError names the injection. The
                                rank's peers see the failure too (ncclRemoteError), as after a
                                network error. */
  FAKE_NCCL_HANG = 2,        /* the call returns ncclInProgress and the operation never finishes:
                                ncclCommGetAsyncError keeps reporting ncclInProgress until
                                ncclCommAbort. */
  FAKE_NCCL_CALL_ERROR = 3   /* the call itself returns ncclInternalError at once. */
};

/* What the library has seen since the last fake_nccl_reset. */
typedef struct FakeNcclCounters {
  long inits;     /* ncclCommInitRankConfig calls that made a communicator */
  long finalizes; /* ncclCommFinalize */
  long destroys;  /* ncclCommDestroy of a live communicator */
  long aborts;    /* ncclCommAbort of a live communicator */
  long misuses;   /* calls NCCL forbids: on a destroyed or aborted communicator, on one whose
                     previous operation is still ncclInProgress, destroy with work in flight,
                     ncclGroupEnd without ncclGroupStart. The text of the last one:
                     fake_nccl_last_misuse. */
} FakeNcclCounters;

/* Arms `kind` (enum FakeNcclFault) for `rank`; 0, or -1 for an unknown kind. */
int fake_nccl_inject(int rank, int kind);

/* The code ncclGetVersion reports (NCCL_VERSION encoding); the default is 2.28.9 (22809). */
void fake_nccl_set_version(int version_code);

/* How long an operation waits for a peer before it fails with ncclRemoteError (default 60 s). */
void fake_nccl_set_peer_timeout(double seconds);

/* Disarms every fault, zeroes the counters, restores the version and the peer timeout. */
void fake_nccl_reset(void);

void fake_nccl_counters(FakeNcclCounters* out);

/* "" if none. Valid until the next misuse. */
const char* fake_nccl_last_misuse(void);

/* The life of a communicator this library made: 0 live, 1 destroyed (ncclCommDestroy),
 * 2 aborted (ncclCommAbort), -1 not one of ours. Communicators are never freed, so the question
 * can be asked after the end. */
int fake_nccl_comm_state(const void* comm);

/* Groups dispatched on `comm` and the number of operations in the last one; 0, or -1 if comm is
 * not one of ours. */
int fake_nccl_group_stats(const void* comm, long* groups, long* last_group_ops);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* NORMUON_TESTS_COMM_FAKE_NCCL_FAKE_NCCL_H_ */
