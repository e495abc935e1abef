/* The MPI communicator (include/normuon/mpi.h) over real processes; run under mpirun by
 * mpi_test.sh. One program, several modes (argv[1]):
 *
 *   collectives  the three collectives called directly on the adapter (uneven exchange with
 *                self transfers and zero-byte transfers, all-reduce bitwise against a rank-order
 *                sum, all-gather in and out of place), byte-count mismatches, bad arguments,
 *                abort, a timeout naming the missing ranks, bad arguments to the create;
 *                then the runtime equivalence below.
 *   steps        FSDP2 row shards of small matrices and AdamW vectors (a 3-row matrix, so a
 *                rank at world 4 holds none of it), 3 steps with every schedule, with and
 *                without normuon_grad_ready, compared bitwise with a single-rank run computed
 *                in the same process from the same data.
 *   fault T      one step, then the last rank sleeps past the timeout T before the second:
 *                the others must get NORMUON_ERROR_TIMEOUT (or _COMM) within T + 30 s with their
 *                parameters bitwise unchanged; so must the sleeper when it comes back.
 *   fault T exit the same with a last rank that exits (without MPI_Finalize) instead of
 *                sleeping; needs `mpirun --enable-recovery` so that the others keep running.
 *   fault T kill the last rank is killed (SIGKILL, raised on itself) in the middle of the
 *                second step: from inside the communicator, on the runtime's worker thread
 *                (bucketed schedule, normuon_grad_ready), right after a collective of that step
 *                has exchanged its data, about half-way through the step's collectives. The
 *                others must fail that step within T + 30 s, naming the dead rank, with their
 *                parameters and optimizer state unchanged (checksums taken before the step).
 *                In every fault mode the survivors check parameters and state.
 *   mismatch shape  the last rank registers mlp.up with another width; every rank's finalize
 *                must fail (not time out) with a message naming the mismatch.
 *   mismatch order  the last rank registers mlp.up and mlp.down in the other order; the same.
 *   ckpt_save    2 steps, then a checkpoint into $TMPDIR/normuon_mpi_ckpt (at world 4 in the
 *                test), parameters checked bitwise against one rank.
 *   ckpt_load    in a later mpirun with another world size: the parameters after 2 steps (of
 *                the single-rank run, equal bitwise to the saving run's), the checkpoint loaded,
 *                2 more steps: bitwise equal to a single-rank run that saved and loaded its own
 *                checkpoint at the same step.
 *   funneled     MPI initialized with MPI_THREAD_FUNNELED: the create must refuse.
 *   nccl         normuon_comm_create_nccl_mpi where rank 0 cannot make an NCCL unique id (a
 *                CPU-only libnormuon, or NORMUON_NCCL_LIBRARY naming no file): every rank must
 *                return rank 0's NORMUON_ERROR_UNSUPPORTED promptly, with rank 0's reason, and
 *                write nothing; bad arguments are refused by name.
 *
 * OpenBLAS runs one thread in every process (openblas_set_num_threads(1), and the script sets
 * OPENBLAS_NUM_THREADS=1): the single-rank reference must use the same BLAS thread count as the
 * sharded run for the comparison to be bitwise.
 *
 * Every process prints "<mode> OK rank r" when all its checks passed, and exits 0; a failed
 * check prints "FAIL rank r: ..." and the process exits 1 at the end.
 */
#include "normuon/mpi.h"

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "normuon/comm.h"
#include "normuon/normuon.h"

void openblas_set_num_threads(int num_threads);

static int g_rank = 0, g_world = 1, g_failures = 0;

#define EXPECT(cond, ...)                                                    \
  do {                                                                       \
    if (!(cond)) {                                                           \
      fprintf(stderr, "FAIL rank %d (%s:%d): ", g_rank, __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                                          \
      fprintf(stderr, "\n");                                                 \
      ++g_failures;                                                          \
    }                                                                        \
  } while (0)

static int contains(const char* text, const char* part) {
  return text != NULL && strstr(text, part) != NULL;
}

static normuon_mpi_ctx_* new_ctx(double timeout) {
  normuon_mpi_ctx_* ctx = NULL;
  char why[512];
  normuon_status_t s = normuon_mpi_ctx_create_(MPI_COMM_WORLD, timeout, &ctx, why, sizeof why);
  if (s != NORMUON_SUCCESS) {
    fprintf(stderr, "FAIL rank %d: context: %s: %s\n", g_rank, normuon_status_string(s), why);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  return ctx;
}

/* ---- collectives ---- */

static uint64_t exchange_bytes(int from, int to, int k) {
  return (uint64_t)((from * 7 + to * 3 + k * 5) % 6) * 40; /* 0..200 bytes: zero included */
}

static unsigned char exchange_byte(int from, int to, int k, uint64_t i) {
  return (unsigned char)(from * 31 + to * 17 + k * 13 + (int)(i % 251));
}

static void test_exchange(void) {
  normuon_mpi_ctx_* ctx = new_ctx(20.0);
  const int per_peer = 2;
  const int n = g_world * per_peer;
  normuon_p2p_t* sends = (normuon_p2p_t*)calloc((size_t)n, sizeof(normuon_p2p_t));
  normuon_p2p_t* recvs = (normuon_p2p_t*)calloc((size_t)n, sizeof(normuon_p2p_t));
  int q, k, i = 0;
  uint64_t b;
  normuon_status_t s;
  /* Sends in peer order; receives in reverse peer order: only the order per peer matters. */
  for (q = 0; q < g_world; ++q) {
    for (k = 0; k < per_peer; ++k, ++i) {
      sends[i].peer = q;
      sends[i].bytes = exchange_bytes(g_rank, q, k);
      sends[i].buf = malloc((size_t)sends[i].bytes + 1);
      for (b = 0; b < sends[i].bytes; ++b) {
        ((unsigned char*)sends[i].buf)[b] = exchange_byte(g_rank, q, k, b);
      }
    }
  }
  i = 0;
  for (q = g_world - 1; q >= 0; --q) {
    for (k = 0; k < per_peer; ++k, ++i) {
      recvs[i].peer = q;
      recvs[i].bytes = exchange_bytes(q, g_rank, k);
      recvs[i].buf = calloc((size_t)recvs[i].bytes + 1, 1);
    }
  }
  s = normuon_mpi_exchange_(ctx, sends, n, recvs, n, NULL);
  EXPECT(s == NORMUON_SUCCESS, "exchange: %s: %s", normuon_status_string(s), ctx->message);
  i = 0;
  for (q = g_world - 1; q >= 0; --q) {
    for (k = 0; k < per_peer; ++k, ++i) {
      for (b = 0; b < recvs[i].bytes; ++b) {
        if (((unsigned char*)recvs[i].buf)[b] != exchange_byte(q, g_rank, k, b)) {
          EXPECT(0, "exchange: byte %llu of message %d from rank %d is wrong",
                 (unsigned long long)b, k, q);
          break;
        }
      }
    }
  }
  /* An empty exchange completes too. */
  s = normuon_mpi_exchange_(ctx, NULL, 0, NULL, 0, NULL);
  EXPECT(s == NORMUON_SUCCESS, "empty exchange: %s", ctx->message);
  /* Bad arguments fail on this rank alone, before anything is posted, naming the field; the
   * communicator is failed afterwards. */
  sends[0].peer = g_world;
  s = normuon_mpi_exchange_(ctx, sends, 1, NULL, 0, NULL);
  EXPECT(s == NORMUON_ERROR_INVALID_ARGUMENT && contains(ctx->message, "sends[0].peer = "),
         "bad peer: %s: %s", normuon_status_string(s), ctx->message);
  s = normuon_mpi_exchange_(ctx, NULL, 0, NULL, 0, NULL);
  EXPECT(s == NORMUON_ERROR_COMM && contains(ctx->message, "failed earlier"),
         "after a failure: %s: %s", normuon_status_string(s), ctx->message);
  normuon_mpi_destroy_(ctx);
  for (i = 0; i < n; ++i) {
    free(sends[i].buf);
    free(recvs[i].buf);
  }
  free(sends);
  free(recvs);
}

static void test_bad_arguments(void) {
  normuon_mpi_ctx_* ctx = new_ctx(20.0);
  normuon_p2p_t p;
  float f = 1.0f;
  normuon_status_t s;
  p.peer = g_rank;
  p.buf = NULL;
  p.bytes = 8;
  s = normuon_mpi_exchange_(ctx, NULL, 0, &p, 1, NULL);
  EXPECT(s == NORMUON_ERROR_INVALID_ARGUMENT && contains(ctx->message, "recvs[0].buf is NULL"),
         "null buffer: %s", ctx->message);
  normuon_mpi_destroy_(ctx);

  ctx = new_ctx(20.0);
  p.buf = &f;
  p.bytes = 4;
  s = normuon_mpi_exchange_(ctx, &p, 1, NULL, 0, NULL);
  EXPECT(s == NORMUON_ERROR_INVALID_ARGUMENT && contains(ctx->message, "sends[0]") &&
             contains(ctx->message, "no receive from itself"),
         "unpaired self send: %s", ctx->message);
  normuon_mpi_destroy_(ctx);

  ctx = new_ctx(20.0);
  s = normuon_mpi_all_reduce_(ctx, NULL, &f, 1, NULL);
  EXPECT(s == NORMUON_ERROR_INVALID_ARGUMENT && contains(ctx->message, "in is NULL"),
         "all-reduce null in: %s", ctx->message);
  normuon_mpi_destroy_(ctx);

  /* abort: the next call fails at once, and so does every later one. */
  ctx = new_ctx(20.0);
  EXPECT(normuon_mpi_abort_(ctx) == NORMUON_SUCCESS, "abort");
  s = normuon_mpi_all_gather_(ctx, &f, &f, 4, NULL);
  EXPECT(s == NORMUON_ERROR_COMM && contains(ctx->message, "aborted"), "after abort: %s",
         ctx->message);
  normuon_mpi_destroy_(ctx);
}

static float reduce_input(int rank, uint64_t i) {
  /* Mixed magnitudes, so the summation order shows in the bits. */
  return (float)(sin(0.61 * (double)i + 1.7 * rank) * pow(10.0, (double)((rank + (int)i) % 5) - 2));
}

static void test_all_reduce(void) {
  normuon_mpi_ctx_* ctx = new_ctx(20.0);
  const uint64_t counts[] = {0, 1, 3, (uint64_t)(g_world > 1 ? g_world - 1 : 1), 1000, 1001};
  size_t c;
  int in_place, r;
  for (in_place = 0; in_place < 2; ++in_place) {
    for (c = 0; c < sizeof counts / sizeof counts[0]; ++c) {
      const uint64_t n = counts[c];
      float* in = (float*)malloc((size_t)n * sizeof(float) + 4);
      float* out = in_place ? in : (float*)malloc((size_t)n * sizeof(float) + 4);
      float* want = (float*)malloc((size_t)n * sizeof(float) + 4);
      uint64_t i;
      normuon_status_t s;
      for (i = 0; i < n; ++i) {
        in[i] = reduce_input(g_rank, i);
        want[i] = reduce_input(0, i);
        for (r = 1; r < g_world; ++r) want[i] += reduce_input(r, i);
      }
      s = normuon_mpi_all_reduce_(ctx, in, out, n, NULL);
      EXPECT(s == NORMUON_SUCCESS, "all-reduce of %llu: %s", (unsigned long long)n, ctx->message);
      EXPECT(n == 0 || memcmp(out, want, (size_t)n * sizeof(float)) == 0,
             "all-reduce of %llu floats (in place %d) differs from the rank-order sum",
             (unsigned long long)n, in_place);
      if (!in_place) {
        for (i = 0; i < n; ++i) {
          if (in[i] != reduce_input(g_rank, i)) {
            EXPECT(0, "all-reduce wrote its input");
            break;
          }
        }
        free(out);
      }
      free(in);
      free(want);
    }
  }
  normuon_mpi_destroy_(ctx);
}

static void test_all_gather(void) {
  normuon_mpi_ctx_* ctx = new_ctx(20.0);
  const uint64_t sizes[] = {0, 1, 13, 4096};
  size_t c;
  int in_place, r;
  for (in_place = 0; in_place < 2; ++in_place) {
    for (c = 0; c < sizeof sizes / sizeof sizes[0]; ++c) {
      const uint64_t n = sizes[c];
      unsigned char* out = (unsigned char*)calloc((size_t)(n * (uint64_t)g_world) + 1, 1);
      unsigned char* mine = in_place ? out + n * (uint64_t)g_rank : (unsigned char*)malloc(n + 1);
      uint64_t i;
      int ok = 1;
      normuon_status_t s;
      for (i = 0; i < n; ++i) mine[i] = (unsigned char)(g_rank * 41 + (int)(i % 199));
      s = normuon_mpi_all_gather_(ctx, mine, out, n, NULL);
      EXPECT(s == NORMUON_SUCCESS, "all-gather of %llu: %s", (unsigned long long)n, ctx->message);
      for (r = 0; r < g_world && ok; ++r) {
        for (i = 0; i < n; ++i) {
          if (out[(uint64_t)r * n + i] != (unsigned char)(r * 41 + (int)(i % 199))) {
            EXPECT(0, "all-gather of %llu (in place %d): byte %llu of rank %d is wrong",
                   (unsigned long long)n, in_place, (unsigned long long)i, r);
            ok = 0;
            break;
          }
        }
      }
      if (!in_place) free(mine);
      free(out);
    }
  }
  normuon_mpi_destroy_(ctx);
}

/* Rank 0 sends `sent` bytes to rank 1, which lists `listed`: rank 1 must fail naming both. */
static void test_mismatch(uint64_t sent, uint64_t listed) {
  normuon_mpi_ctx_* ctx = new_ctx(10.0);
  unsigned char* buf = (unsigned char*)calloc((size_t)(sent > listed ? sent : listed), 1);
  normuon_p2p_t p;
  normuon_status_t s = NORMUON_SUCCESS;
  char expect_text[128];
  if (g_rank == 0) {
    p.peer = 1;
    p.buf = buf;
    p.bytes = sent;
    s = normuon_mpi_exchange_(ctx, &p, 1, NULL, 0, NULL);
    /* A short send completes on the sender; a long one may not (the receive rejects it). */
    EXPECT(s == NORMUON_SUCCESS || s == NORMUON_ERROR_TIMEOUT || s == NORMUON_ERROR_COMM,
           "mismatch sender: %s", ctx->message);
  } else if (g_rank == 1) {
    p.peer = 0;
    p.buf = buf;
    p.bytes = listed;
    s = normuon_mpi_exchange_(ctx, NULL, 0, &p, 1, NULL);
    EXPECT(s == NORMUON_ERROR_COMM, "mismatch %llu sent, %llu listed: %s: %s",
           (unsigned long long)sent, (unsigned long long)listed, normuon_status_string(s),
           ctx->message);
    normuon_mpi_format_(expect_text, sizeof expect_text, "%llu", (unsigned long long)listed);
    EXPECT(contains(ctx->message, "rank 0") && contains(ctx->message, expect_text) &&
               (contains(ctx->message, "disagree")),
           "mismatch message: %s", ctx->message);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  normuon_mpi_destroy_(ctx);
  free(buf);
}

/* Rank 0 all-gathers alone: it must time out within its 1 s timeout, naming every other rank. */
static void test_timeout(void) {
  normuon_mpi_ctx_* ctx = new_ctx(1.0);
  if (g_rank == 0) {
    char want[32];
    float in = 1.0f;
    float* out = (float*)calloc((size_t)g_world, sizeof(float));
    const double t0 = MPI_Wtime();
    normuon_status_t s = normuon_mpi_all_gather_(ctx, &in, out, sizeof(float), NULL);
    const double took = MPI_Wtime() - t0;
    EXPECT(s == NORMUON_ERROR_TIMEOUT, "lone all-gather: %s: %s", normuon_status_string(s),
           ctx->message);
    EXPECT(took >= 0.99 && took < 10.0, "lone all-gather took %g s with a 1 s timeout", took);
    normuon_mpi_format_(want, sizeof want, "rank(s) 1%s", g_world > 2 ? ", 2" : " (");
    EXPECT(contains(ctx->message, want) && contains(ctx->message, "timed out"),
           "timeout message lacks \"%s\": %s", want, ctx->message);
    free(out);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  normuon_mpi_destroy_(ctx);
}

/* normuon_comm_abort from another thread while a collective waits: it returns soon after. */
typedef struct {
  normuon_mpi_ctx_* ctx;
  double delay;
} abort_args_t;

static void* abort_later(void* arg) {
  const abort_args_t* a = (const abort_args_t*)arg;
  struct timespec ts;
  ts.tv_sec = (time_t)a->delay;
  ts.tv_nsec = (long)((a->delay - (double)ts.tv_sec) * 1e9);
  nanosleep(&ts, NULL);
  normuon_mpi_abort_(a->ctx); /* makes no MPI call: fine under MPI_THREAD_SERIALIZED */
  return NULL;
}

static void test_abort_in_flight(void) {
  normuon_mpi_ctx_* ctx = new_ctx(30.0);
  if (g_rank == 0) {
    pthread_t thread;
    abort_args_t a;
    float in = 2.0f, out = 0.0f;
    double t0, took;
    normuon_status_t s;
    a.ctx = ctx;
    a.delay = 0.3;
    pthread_create(&thread, NULL, abort_later, &a);
    t0 = MPI_Wtime();
    s = normuon_mpi_all_reduce_(ctx, &in, &out, 1, NULL); /* the others never join */
    took = MPI_Wtime() - t0;
    pthread_join(thread, NULL);
    EXPECT(s == NORMUON_ERROR_COMM && contains(ctx->message, "aborted"),
           "all-reduce aborted in flight: %s: %s", normuon_status_string(s), ctx->message);
    EXPECT(took >= 0.29 && took < 5.0, "the aborted all-reduce returned after %.2f s", took);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  normuon_mpi_destroy_(ctx);
}

/* Rank 0 alone creates on a communicator the others never use again: the duplication must
 * time out instead of hanging. */
static void test_create_timeout(void) {
  MPI_Comm lonely;
  MPI_Comm_dup(MPI_COMM_WORLD, &lonely);
  if (g_rank == 0) {
    normuon_comm_t comm = 0;
    char why[512];
    const double t0 = MPI_Wtime();
    normuon_status_t s = normuon_comm_create_mpi(lonely, 0.5, &comm, why, sizeof why);
    const double took = MPI_Wtime() - t0;
    EXPECT(s == NORMUON_ERROR_TIMEOUT && contains(why, "MPI_Comm_idup") && comm == 0,
           "lone create: %s: %s", normuon_status_string(s), why);
    EXPECT(took >= 0.49 && took < 5.0, "the lone create returned after %.2f s", took);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  /* lonely is left alone: rank 0 has a duplication pending on it. */
}

static void test_create_arguments(void) {
  normuon_comm_t comm = 0;
  char why[512];
  normuon_status_t s;
  s = normuon_comm_create_mpi(MPI_COMM_WORLD, 10.0, NULL, why, sizeof why);
  EXPECT(s == NORMUON_ERROR_INVALID_ARGUMENT && contains(why, "out is NULL"), "out NULL: %s", why);
  s = normuon_comm_create_mpi(MPI_COMM_WORLD, 0.0, &comm, why, sizeof why);
  EXPECT(s == NORMUON_ERROR_INVALID_ARGUMENT && contains(why, "timeout_seconds = 0"),
         "timeout 0: %s", why);
  s = normuon_comm_create_mpi(MPI_COMM_WORLD, NAN, &comm, why, sizeof why);
  EXPECT(s == NORMUON_ERROR_INVALID_ARGUMENT && contains(why, "timeout_seconds = nan"),
         "timeout nan: %s", why);
  s = normuon_comm_create_mpi(MPI_COMM_WORLD, 1e8, &comm, why, sizeof why);
  EXPECT(s == NORMUON_ERROR_INVALID_ARGUMENT && contains(why, "timeout_seconds"), "timeout 1e8: %s",
         why);
  s = normuon_comm_create_mpi(MPI_COMM_NULL, 10.0, &comm, why, sizeof why);
  EXPECT(s == NORMUON_ERROR_INVALID_ARGUMENT && contains(why, "MPI_COMM_NULL"), "null comm: %s",
         why);
  s = normuon_comm_create_mpi(MPI_COMM_WORLD, 10.0, &comm, NULL, 5);
  EXPECT(s == NORMUON_ERROR_INVALID_ARGUMENT, "error NULL with size 5");
  EXPECT(comm == 0, "a failed create wrote *out");
  /* A good one, with its rank and size. */
  s = normuon_comm_create_mpi(MPI_COMM_WORLD, 10.0, &comm, why, sizeof why);
  EXPECT(s == NORMUON_SUCCESS, "create: %s", why);
  if (s == NORMUON_SUCCESS) {
    int32_t rank = -1, world = -1;
    normuon_comm_rank(comm, &rank);
    normuon_comm_world_size(comm, &world);
    EXPECT(rank == g_rank && world == g_world, "comm says rank %d of %d", (int)rank, (int)world);
    EXPECT(normuon_comm_destroy(comm) == NORMUON_SUCCESS, "destroy");
  }
}

/* ---- the runtime over MPI ---- */

typedef struct {
  const char* name;
  int64_t rows, cols;
  int is_matrix;
} spec_t;

static const spec_t kModel[] = {
    {"embed", 11, 6, 0},                              /* AdamW, 2-D */
    {"attn.qkv", 24, 16, 1}, {"attn.bias", 24, 1, 0}, /* AdamW, 1-D */
    {"mlp.up", 40, 16, 1},   {"mlp.down", 16, 40, 1},
    {"tiny", 3, 8, 1}, /* at world 4 the last rank holds none of it */
    {"head", 9, 13, 1},
};
enum { kParams = sizeof kModel / sizeof kModel[0] };

static void fsdp2_rows(int64_t rows, int rank, int world, int64_t* begin, int64_t* count) {
  const int64_t chunk = (rows + world - 1) / world;
  int64_t b = chunk * rank, e = chunk * (rank + 1);
  if (b > rows) b = rows;
  if (e > rows) e = rows;
  *begin = b;
  *count = e - b;
}

static float init_value(int p, int64_t flat) {
  return 0.05f * (float)cos(0.9 * (double)flat + 0.4 * p);
}

static float grad_value(int p, int64_t flat, int step) {
  return (float)(sin(0.37 * (double)flat + 1.3 * p + 0.71 * step) * (1.0 + 0.1 * (flat % 7)));
}

typedef struct {
  normuon_runtime_t rt;
  float* param[kParams];
  float* grad[kParams];
  int64_t begin[kParams], count[kParams];
  normuon_param_t id[kParams];
} model_t;

static void free_model(model_t* m) {
  int p;
  if (m->rt != 0) normuon_destroy(m->rt);
  for (p = 0; p < kParams; ++p) {
    free(m->param[p]);
    free(m->grad[p]);
  }
  memset(m, 0, sizeof *m);
}

/* Mismatch modes: what the last rank of the world registers differently. */
enum { kMismatchNone = 0, kMismatchShape = 1, kMismatchOrder = 2 };
static int g_mismatch = kMismatchNone;

/* Creates, registers (rank's rows, or all rows when world is 1) and finalizes. Under a mismatch
 * mode the last rank of a world > 1 registers mlp.up one column wider, or mlp.up and mlp.down
 * swapped (only registration and finalize run then). */
static normuon_status_t build_model(model_t* m, normuon_comm_t comm, int rank, int world,
                                    normuon_schedule_t schedule) {
  normuon_config_t config;
  normuon_status_t s;
  int p;
  int64_t k;
  memset(m, 0, sizeof *m);
  normuon_config_init(&config);
  config.schedule = schedule;
  config.bucket_bytes = 2048; /* several buckets */
  config.weight_decay = 0.01f;
  config.adamw_weight_decay = 0.02f;
  s = normuon_create(&config, comm, &m->rt);
  if (s != NORMUON_SUCCESS) return s;
  for (p = 0; p < kParams; ++p) {
    normuon_param_desc_t d;
    const int odd = world > 1 && rank == world - 1;
    /* mlp.up is entry 3, mlp.down entry 4 */
    const int q = (odd && g_mismatch == kMismatchOrder && (p == 3 || p == 4)) ? 7 - p : p;
    const int64_t cols = kModel[q].cols + (odd && g_mismatch == kMismatchShape && q == 3 ? 1 : 0);
    fsdp2_rows(kModel[q].rows, rank, world, &m->begin[p], &m->count[p]);
    m->param[p] = (float*)calloc((size_t)(m->count[p] * cols) + 1, sizeof(float));
    m->grad[p] = (float*)calloc((size_t)(m->count[p] * cols) + 1, sizeof(float));
    for (k = 0; k < m->count[p] * cols; ++k) {
      m->param[p][k] = init_value(p, m->begin[p] * cols + k);
    }
    normuon_param_desc_init(&d);
    d.name = kModel[q].name;
    d.rows = kModel[q].rows;
    d.cols = cols;
    d.row_begin = m->begin[p];
    d.row_count = m->count[p];
    d.param = m->count[p] > 0 ? m->param[p] : NULL;
    d.grad = m->count[p] > 0 ? m->grad[p] : NULL;
    d.group = kModel[q].is_matrix ? NORMUON_GROUP_MATRIX_DEFAULT : NORMUON_GROUP_ADAMW_DEFAULT;
    s = kModel[q].is_matrix ? normuon_register_matrix(m->rt, &d, &m->id[p])
                            : normuon_register_adamw(m->rt, &d, &m->id[p]);
    if (s != NORMUON_SUCCESS) return s;
  }
  return normuon_finalize(m->rt);
}

static void fill_grads(model_t* m, int step) {
  int p;
  int64_t k;
  for (p = 0; p < kParams; ++p) {
    for (k = 0; k < m->count[p] * kModel[p].cols; ++k) {
      m->grad[p][k] = grad_value(p, m->begin[p] * kModel[p].cols + k, step);
    }
  }
}

static float step_lr(int step) { return 0.02f * (1.0f - 0.25f * (float)step); }

/* One step; with grad_ready, the matrices are marked ready in backward order, one by one. */
static normuon_status_t run_step(model_t* m, int step, int grad_ready) {
  normuon_status_t s;
  int p;
  fill_grads(m, step);
  if (grad_ready) {
    for (p = kParams - 1; p >= 0; --p) {
      if (!kModel[p].is_matrix) continue;
      s = normuon_grad_ready(m->rt, &m->id[p], 1, NULL);
      if (s != NORMUON_SUCCESS) return s;
    }
  }
  return normuon_step(m->rt, step_lr(step), 0.01f, NULL);
}

static const char* schedule_name(normuon_schedule_t s) {
  return s == NORMUON_SCHEDULE_SEQUENTIAL   ? "sequential"
         : s == NORMUON_SCHEDULE_PER_MATRIX ? "per_matrix"
                                            : "bucketed";
}

static void test_steps(void) {
  const int kSteps = 3;
  const normuon_schedule_t schedules[] = {NORMUON_SCHEDULE_SEQUENTIAL, NORMUON_SCHEDULE_PER_MATRIX,
                                          NORMUON_SCHEDULE_BUCKETED};
  model_t ref;
  int si, grad_ready, step, p;
  normuon_status_t s;
  char why[512];
  /* The single-rank reference, whole parameters, no communicator. */
  s = build_model(&ref, 0, 0, 1, NORMUON_SCHEDULE_SEQUENTIAL);
  EXPECT(s == NORMUON_SUCCESS, "reference: %s", normuon_last_error(ref.rt));
  for (step = 0; step < kSteps && s == NORMUON_SUCCESS; ++step) {
    s = run_step(&ref, step, 0);
    EXPECT(s == NORMUON_SUCCESS, "reference step: %s", normuon_last_error(ref.rt));
  }
  for (si = 0; si < 3; ++si) {
    for (grad_ready = 0; grad_ready < 2; ++grad_ready) {
      normuon_comm_t comm = 0;
      model_t m;
      normuon_step_info_t info;
      s = normuon_comm_create_mpi(MPI_COMM_WORLD, 30.0, &comm, why, sizeof why);
      EXPECT(s == NORMUON_SUCCESS, "create: %s", why);
      if (s != NORMUON_SUCCESS) continue;
      s = build_model(&m, comm, g_rank, g_world, schedules[si]);
      normuon_comm_destroy(comm); /* the runtime keeps it alive */
      EXPECT(s == NORMUON_SUCCESS, "%s: build: %s", schedule_name(schedules[si]),
             normuon_last_error(m.rt));
      for (step = 0; step < kSteps && s == NORMUON_SUCCESS; ++step) {
        s = run_step(&m, step, grad_ready);
        EXPECT(s == NORMUON_SUCCESS, "%s grad_ready %d step %d: %s", schedule_name(schedules[si]),
               grad_ready, step, normuon_last_error(m.rt));
      }
      if (s == NORMUON_SUCCESS) {
        normuon_step_info_init(&info);
        normuon_step_result(m.rt, &info);
        EXPECT(info.steps_taken == kSteps, "steps_taken %lld", (long long)info.steps_taken);
        for (p = 0; p < kParams; ++p) {
          const int64_t n = m.count[p] * kModel[p].cols;
          const float* want = ref.param[p] + m.begin[p] * kModel[p].cols;
          int64_t k;
          for (k = 0; k < n; ++k) {
            if (memcmp(&m.param[p][k], &want[k], sizeof(float)) != 0) {
              EXPECT(0,
                     "%s grad_ready %d: %s element %lld (global row %lld) is %.9g, the "
                     "single rank has %.9g",
                     schedule_name(schedules[si]), grad_ready, kModel[p].name, (long long)k,
                     (long long)(m.begin[p] + k / kModel[p].cols), m.param[p][k], want[k]);
              break;
            }
          }
          /* The parameters moved: the comparison is not vacuous. */
          if (n > 0) {
            EXPECT(m.param[p][0] != init_value(p, m.begin[p] * kModel[p].cols), "%s did not change",
                   kModel[p].name);
          }
        }
      }
      free_model(&m);
    }
  }
  free_model(&ref);
}

/* ---- fault ---- */

/* FNV-1a over bytes. */
static uint64_t fnv1a(uint64_t h, const void* data, size_t n) {
  const unsigned char* b = (const unsigned char*)data;
  size_t i;
  for (i = 0; i < n; ++i) {
    h ^= b[i];
    h *= 1099511628211ull;
  }
  return h;
}

/* A checksum of this rank's parameters and of every optimizer state buffer it holds (read
 * through normuon_get_state). *state_bytes: the state bytes it covered. */
static uint64_t model_checksum(const model_t* m, uint64_t* state_bytes) {
  static const normuon_state_kind_t kinds[] = {NORMUON_STATE_MOMENTUM, NORMUON_STATE_SECOND_MOMENT,
                                               NORMUON_STATE_EXP_AVG, NORMUON_STATE_EXP_AVG_SQ,
                                               NORMUON_STATE_STEP};
  uint64_t h = 14695981039346656037ull;
  int p;
  size_t k;
  *state_bytes = 0;
  for (p = 0; p < kParams; ++p) {
    h = fnv1a(h, m->param[p], (size_t)(m->count[p] * kModel[p].cols) * sizeof(float));
    for (k = 0; k < sizeof kinds / sizeof kinds[0]; ++k) {
      uint64_t bytes = 0;
      void* buf;
      normuon_status_t s = normuon_state_size(m->rt, m->id[p], kinds[k], &bytes);
      EXPECT(s == NORMUON_SUCCESS, "state_size of %s: %s", kModel[p].name,
             normuon_last_error(m->rt));
      if (s != NORMUON_SUCCESS || bytes == 0) continue;
      buf = malloc((size_t)bytes);
      s = normuon_get_state(m->rt, m->id[p], kinds[k], buf, bytes);
      EXPECT(s == NORMUON_SUCCESS, "get_state of %s kind %d: %s", kModel[p].name, (int)kinds[k],
             normuon_last_error(m->rt));
      if (s == NORMUON_SUCCESS) h = fnv1a(h, buf, (size_t)bytes);
      *state_bytes += bytes;
      free(buf);
    }
  }
  return h;
}

/* The MPI communicator behind a shim that counts the collectives of this process and, on the
 * victim, raises SIGKILL right after collective number kill_at completes (its data exchanged
 * with every peer): the process dies in the middle of a step, on whichever thread runs the
 * collective. */
typedef struct {
  normuon_mpi_ctx_* mpi;
  int64_t calls;
  int64_t kill_at; /* -1: never */
} killer_t;

static killer_t g_killer = {NULL, 0, -1};

static void after_collective(void) {
  g_killer.calls++;
  if (g_killer.kill_at >= 0 && g_killer.calls == g_killer.kill_at) {
    fprintf(stderr, "rank %d: SIGKILL on itself after collective %lld, mid-step\n", g_rank,
            (long long)g_killer.calls);
    fflush(stderr);
    raise(SIGKILL);
  }
}

static normuon_status_t killer_exchange(void* ctx, const normuon_p2p_t* sends, int32_t n_sends,
                                        const normuon_p2p_t* recvs, int32_t n_recvs,
                                        void* stream) {
  normuon_status_t s = normuon_mpi_exchange_(ctx, sends, n_sends, recvs, n_recvs, stream);
  after_collective();
  return s;
}

static normuon_status_t killer_all_reduce(void* ctx, const float* in, float* out, uint64_t count,
                                          void* stream) {
  normuon_status_t s = normuon_mpi_all_reduce_(ctx, in, out, count, stream);
  after_collective();
  return s;
}

static normuon_status_t killer_all_gather(void* ctx, const void* in, void* out, uint64_t bytes,
                                          void* stream) {
  normuon_status_t s = normuon_mpi_all_gather_(ctx, in, out, bytes, stream);
  after_collective();
  return s;
}

static normuon_comm_t killer_comm(double timeout) {
  normuon_comm_ops_t ops;
  normuon_comm_t comm = 0;
  g_killer.mpi = new_ctx(timeout);
  normuon_comm_ops_init(&ops);
  ops.ctx = g_killer.mpi;
  ops.rank = g_killer.mpi->rank;
  ops.world_size = g_killer.mpi->world;
  ops.exchange = killer_exchange;
  ops.all_reduce_sum_f32 = killer_all_reduce;
  ops.all_gather = killer_all_gather;
  ops.abort = normuon_mpi_abort_;
  ops.destroy = normuon_mpi_destroy_;
  ops.last_error = normuon_mpi_last_error_;
  if (normuon_comm_create_custom(&ops, &comm) != NORMUON_SUCCESS) {
    fprintf(stderr, "FAIL rank %d: create_custom: %s\n", g_rank, normuon_comm_last_error(0));
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  return comm;
}

/* Fault modes, how the last rank fails before or during the second step. */
enum { kFaultSleep = 0, kFaultExit = 1, kFaultKill = 2 };

/* One step, then the last rank stalls (sleeps past the timeout), dies before the second step
 * (exits without MPI_Finalize) or is killed in the middle of it: every other rank must fail
 * that step in time, naming the stall as a timeout, with its parameters and state unchanged. */
static void test_fault(double timeout, int how) {
  normuon_comm_t comm = 0;
  model_t m;
  normuon_status_t s;
  char why[512];
  const int victim = g_world - 1;
  int64_t step_calls;
  uint64_t before, after, state_bytes = 0, state_bytes_after = 0;
  double t0, took;
  if (how == kFaultKill) {
    comm = killer_comm(timeout);
  } else {
    s = normuon_comm_create_mpi(MPI_COMM_WORLD, timeout, &comm, why, sizeof why);
    EXPECT(s == NORMUON_SUCCESS, "create: %s", why);
    if (s != NORMUON_SUCCESS) return;
  }
  s = build_model(&m, comm, g_rank, g_world, NORMUON_SCHEDULE_BUCKETED);
  EXPECT(s == NORMUON_SUCCESS, "build: %s", normuon_last_error(m.rt));
  step_calls = g_killer.calls;
  if (s == NORMUON_SUCCESS) s = run_step(&m, 0, how == kFaultKill);
  step_calls = g_killer.calls - step_calls;
  EXPECT(s == NORMUON_SUCCESS, "first step: %s", normuon_last_error(m.rt));
  if (s != NORMUON_SUCCESS) {
    free_model(&m);
    normuon_comm_destroy(comm);
    return;
  }
  before = model_checksum(&m, &state_bytes);
  EXPECT(state_bytes > 0, "no optimizer state to check");
  if (g_rank == victim && how == kFaultExit) {
    /* A dead rank: it leaves without MPI_Finalize. */
    fprintf(stderr, "rank %d: exiting before the second step\n", g_rank);
    fflush(stderr);
    _exit(0);
  }
  if (g_rank == victim && how == kFaultSleep) {
    /* A stalled rank: it misses the step for longer than the timeout. */
    fprintf(stderr, "rank %d: sleeping %g s before the second step\n", g_rank, timeout + 3.0);
    sleep((unsigned)(timeout + 3.0));
  }
  if (how == kFaultKill) {
    /* The second step makes the same collectives as the first: die after half of them. */
    EXPECT(step_calls >= 3, "a step made only %lld collectives", (long long)step_calls);
    if (g_rank == victim) g_killer.kill_at = g_killer.calls + step_calls / 2;
  }
  t0 = MPI_Wtime();
  s = run_step(&m, 1, how == kFaultKill);
  took = MPI_Wtime() - t0;
  fprintf(stderr, "rank %d: second step returned %s after %.2f s: %s\n", g_rank,
          normuon_status_string(s), took, normuon_last_error(m.rt));
  EXPECT(s == NORMUON_ERROR_TIMEOUT || s == NORMUON_ERROR_COMM,
         "second step: %s, expected a timeout", normuon_status_string(s));
  EXPECT(took < timeout + 30.0, "second step took %.2f s with a %g s timeout", took, timeout);
  if (g_rank != victim) {
    /* The message names what happened and the rank the survivor waited on. */
    const char* msg = normuon_last_error(m.rt);
    char alone[32], listed[32], peer[32];
    normuon_mpi_format_(alone, sizeof alone, "rank(s) %d (", victim);
    normuon_mpi_format_(listed, sizeof listed, ", %d (", victim);
    normuon_mpi_format_(peer, sizeof peer, "rank %d ", victim);
    EXPECT(contains(msg, "timed out") || contains(msg, "MPI"), "message: %s", msg);
    EXPECT(contains(msg, alone) || contains(msg, listed) || contains(msg, peer),
           "message does not name rank %d: %s", victim, msg);
  }
  after = model_checksum(&m, &state_bytes_after);
  EXPECT(after == before && state_bytes_after == state_bytes,
         "the failed step changed parameters or optimizer state (checksum %016llx -> %016llx)",
         (unsigned long long)before, (unsigned long long)after);
  /* Later steps fail at once. */
  t0 = MPI_Wtime();
  s = run_step(&m, 2, 0);
  EXPECT(s != NORMUON_SUCCESS && MPI_Wtime() - t0 < 1.0, "step after the failure: %s in %.2f s",
         normuon_status_string(s), MPI_Wtime() - t0);
  /* The documented recipe after a failure: abort the communicator and end the job without
   * destroying the runtime (MPI may still read a send buffer it could not cancel). Here the
   * job ends with MPI_Finalize in main, which Open MPI completes with a stalled peer, or, with a
   * dead one, with _exit (mpirun --enable-recovery); the runtime and its buffers stay allocated
   * until exit. */
  EXPECT(normuon_comm_abort(comm) == NORMUON_SUCCESS, "abort");
}

/* ---- NCCL over MPI ---- */

static void test_nccl_over_mpi(void) {
  normuon_comm_t comm = 0;
  char why[1024];
  normuon_status_t s;
  double t0, took;
  /* No NCCL to be found, whatever this machine has: rank 0 cannot make the id. */
  setenv("NORMUON_NCCL_LIBRARY", "/nonexistent/normuon-test/libnccl.so.2", 1);
  t0 = MPI_Wtime();
  s = normuon_comm_create_nccl_mpi(MPI_COMM_WORLD, -1, 20.0, &comm, why, sizeof why);
  took = MPI_Wtime() - t0;
  fprintf(stderr, "rank %d: create_nccl_mpi returned %s after %.2f s: %s\n", g_rank,
          normuon_status_string(s), took, why);
  EXPECT(s == NORMUON_ERROR_UNSUPPORTED, "create_nccl_mpi: %s, expected NORMUON_ERROR_UNSUPPORTED",
         normuon_status_string(s));
  EXPECT(contains(why, "rank 0 could not make the NCCL unique id"),
         "the message does not say rank 0 failed: %s", why);
  /* Rank 0's own reason travels to every rank: a CPU-only library says so; otherwise the
   * message names the library it tried. */
  EXPECT(contains(why, normuon_has_cuda() ? "/nonexistent/normuon-test/libnccl.so.2" : "CUDA"),
         "rank 0's reason is missing: %s", why);
  EXPECT(took < 10.0, "create_nccl_mpi took %.2f s to fail", took);
  EXPECT(comm == 0, "a failed create wrote *out");
  s = normuon_comm_create_nccl_mpi(MPI_COMM_WORLD, -2, 20.0, &comm, why, sizeof why);
  EXPECT(s == NORMUON_ERROR_INVALID_ARGUMENT && contains(why, "device = -2"), "device -2: %s",
         why);
  s = normuon_comm_create_nccl_mpi(MPI_COMM_WORLD, 0, 0.0, &comm, why, sizeof why);
  EXPECT(s == NORMUON_ERROR_INVALID_ARGUMENT && contains(why, "timeout_seconds = 0"),
         "timeout 0: %s", why);
  s = normuon_comm_create_nccl_mpi(MPI_COMM_NULL, 0, 5.0, &comm, why, sizeof why);
  EXPECT(s == NORMUON_ERROR_INVALID_ARGUMENT && contains(why, "MPI_COMM_NULL"), "null comm: %s",
         why);
  s = normuon_comm_create_nccl_mpi(MPI_COMM_WORLD, 0, 5.0, NULL, why, sizeof why);
  EXPECT(s == NORMUON_ERROR_INVALID_ARGUMENT && contains(why, "out is NULL"), "out NULL: %s", why);
  EXPECT(comm == 0, "a failed create wrote *out");
}

/* ---- registration mismatch ---- */

/* The last rank registers differently (g_mismatch): finalize must fail on every rank, at once
 * (not by a timeout), with a message naming the mismatch; nothing is left half-built. */
static void test_mismatch_registration(int kind) {
  normuon_comm_t comm = 0;
  model_t m;
  normuon_status_t s;
  char why[512];
  const double timeout = 20.0;
  double t0, took;
  const char* msg;
  s = normuon_comm_create_mpi(MPI_COMM_WORLD, timeout, &comm, why, sizeof why);
  EXPECT(s == NORMUON_SUCCESS, "create: %s", why);
  if (s != NORMUON_SUCCESS) return;
  g_mismatch = kind;
  t0 = MPI_Wtime();
  s = build_model(&m, comm, g_rank, g_world, NORMUON_SCHEDULE_BUCKETED);
  took = MPI_Wtime() - t0;
  g_mismatch = kMismatchNone;
  msg = normuon_last_error(m.rt);
  fprintf(stderr, "rank %d: finalize returned %s after %.2f s: %s\n", g_rank,
          normuon_status_string(s), took, msg);
  EXPECT(s != NORMUON_SUCCESS && s != NORMUON_ERROR_TIMEOUT,
         "finalize with a mismatched registration: %s", normuon_status_string(s));
  EXPECT(took < timeout / 2, "finalize took %.2f s: a mismatch must not wait for the timeout",
         took);
  /* It names the rank, the parameter's position and both registrations. */
  normuon_mpi_format_(why, sizeof why, "rank %d registered parameter 3 as matrix '%s' %s",
                      g_world - 1, kind == kMismatchShape ? "mlp.up" : "mlp.down",
                      kind == kMismatchShape ? "40x17" : "16x40");
  EXPECT(contains(msg, why) && contains(msg, "'mlp.up' 40x16"),
         "the message does not name the mismatch (\"%s\" and rank 0's 'mlp.up' 40x16): %s", why,
         msg);
  free_model(&m);
  EXPECT(normuon_comm_destroy(comm) == NORMUON_SUCCESS, "destroy");
}

/* ---- checkpoints across processes ---- */

static void ckpt_dir(char* buf, size_t size, const char* leaf) {
  const char* tmp = getenv("TMPDIR");
  normuon_mpi_format_(buf, size, "%s/%s", tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp", leaf);
}

/* Compares this rank's rows with the single-rank model's; 1 when bitwise equal. */
static int rows_equal(const model_t* m, const model_t* ref, const char* what) {
  int p;
  for (p = 0; p < kParams; ++p) {
    const int64_t n = m->count[p] * kModel[p].cols;
    const float* want = ref->param[p] + m->begin[p] * kModel[p].cols;
    if (n > 0 && memcmp(m->param[p], want, (size_t)n * sizeof(float)) != 0) {
      EXPECT(0, "%s: %s differs from the single-rank run", what, kModel[p].name);
      return 0;
    }
  }
  return 1;
}

/* Steps [from, to) of model m; 0 on failure (reported). */
static int run_steps(model_t* m, int from, int to, const char* what) {
  int step;
  for (step = from; step < to; ++step) {
    normuon_status_t s = run_step(m, step, 0);
    if (s != NORMUON_SUCCESS) {
      EXPECT(0, "%s step %d: %s", what, step, normuon_last_error(m->rt));
      return 0;
    }
  }
  return 1;
}

/* ckpt_save: 2 steps at this world size, then a checkpoint into $TMPDIR/normuon_mpi_ckpt. */
static void test_ckpt_save(void) {
  model_t ref, m;
  normuon_comm_t comm = 0;
  normuon_status_t s;
  char dir[1024], why[512];
  ckpt_dir(dir, sizeof dir, "normuon_mpi_ckpt");
  if (g_rank == 0) {
    if (mkdir(dir, 0755) != 0) EXPECT(0, "mkdir %s failed", dir);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  s = build_model(&ref, 0, 0, 1, NORMUON_SCHEDULE_SEQUENTIAL);
  EXPECT(s == NORMUON_SUCCESS, "reference: %s", normuon_last_error(ref.rt));
  if (s == NORMUON_SUCCESS) run_steps(&ref, 0, 2, "reference");
  s = normuon_comm_create_mpi(MPI_COMM_WORLD, 30.0, &comm, why, sizeof why);
  EXPECT(s == NORMUON_SUCCESS, "create: %s", why);
  if (s == NORMUON_SUCCESS) {
    s = build_model(&m, comm, g_rank, g_world, NORMUON_SCHEDULE_BUCKETED);
    normuon_comm_destroy(comm);
    EXPECT(s == NORMUON_SUCCESS, "build: %s", normuon_last_error(m.rt));
    if (s == NORMUON_SUCCESS && run_steps(&m, 0, 2, "sharded") &&
        rows_equal(&m, &ref, "after 2 steps")) {
      s = normuon_save_checkpoint(m.rt, dir);
      EXPECT(s == NORMUON_SUCCESS, "save_checkpoint: %s", normuon_last_error(m.rt));
    }
    free_model(&m);
  }
  free_model(&ref);
}

/* ckpt_load: the checkpoint of ckpt_save (another world size) continues bitwise. */
static void test_ckpt_load(void) {
  model_t ref, ref2, m;
  normuon_comm_t comm = 0;
  normuon_status_t s;
  char dir[1024], ref_dir[1024], leaf[64], why[512];
  struct stat st;
  int p;
  ckpt_dir(dir, sizeof dir, "normuon_mpi_ckpt");
  EXPECT(stat(dir, &st) == 0, "no checkpoint at %s (ckpt_save must run first)", dir);
  /* The single-rank run: 2 steps, its own checkpoint (one per process), a new runtime loads
   * it, 2 more steps. */
  normuon_mpi_format_(leaf, sizeof leaf, "normuon_mpi_ref.%d.%d.%d", (int)getpid(), g_world,
                      g_rank);
  ckpt_dir(ref_dir, sizeof ref_dir, leaf);
  EXPECT(mkdir(ref_dir, 0755) == 0, "mkdir %s", ref_dir);
  s = build_model(&ref, 0, 0, 1, NORMUON_SCHEDULE_SEQUENTIAL);
  EXPECT(s == NORMUON_SUCCESS, "reference: %s", normuon_last_error(ref.rt));
  if (s != NORMUON_SUCCESS || !run_steps(&ref, 0, 2, "reference")) return;
  s = normuon_save_checkpoint(ref.rt, ref_dir);
  EXPECT(s == NORMUON_SUCCESS, "reference save: %s", normuon_last_error(ref.rt));
  s = build_model(&ref2, 0, 0, 1, NORMUON_SCHEDULE_SEQUENTIAL);
  EXPECT(s == NORMUON_SUCCESS, "reference 2: %s", normuon_last_error(ref2.rt));
  for (p = 0; p < kParams; ++p) {
    memcpy(ref2.param[p], ref.param[p], (size_t)(kModel[p].rows * kModel[p].cols) * sizeof(float));
  }
  s = normuon_load_checkpoint(ref2.rt, ref_dir);
  EXPECT(s == NORMUON_SUCCESS, "reference load: %s", normuon_last_error(ref2.rt));
  if (s != NORMUON_SUCCESS || !run_steps(&ref2, 2, 4, "reference 2")) return;

  /* This world: the parameters after 2 steps (ckpt_save checked that the saving processes had
   * exactly these), the optimizer state from the processes of the other world size. */
  s = normuon_comm_create_mpi(MPI_COMM_WORLD, 30.0, &comm, why, sizeof why);
  EXPECT(s == NORMUON_SUCCESS, "create: %s", why);
  if (s != NORMUON_SUCCESS) return;
  s = build_model(&m, comm, g_rank, g_world, NORMUON_SCHEDULE_BUCKETED);
  normuon_comm_destroy(comm);
  EXPECT(s == NORMUON_SUCCESS, "build: %s", normuon_last_error(m.rt));
  if (s == NORMUON_SUCCESS) {
    for (p = 0; p < kParams; ++p) {
      memcpy(m.param[p], ref.param[p] + m.begin[p] * kModel[p].cols,
             (size_t)(m.count[p] * kModel[p].cols) * sizeof(float));
    }
    s = normuon_load_checkpoint(m.rt, dir);
    EXPECT(s == NORMUON_SUCCESS, "load_checkpoint: %s", normuon_last_error(m.rt));
    if (s == NORMUON_SUCCESS && run_steps(&m, 2, 4, "sharded after the load")) {
      rows_equal(&m, &ref2, "2 steps after the load");
      /* Not vacuous: the 2 steps after the load moved the parameters. (Without the load, the
       * fresh state gives other values: the comparison above then fails.) */
      EXPECT(memcmp(ref2.param[1], ref.param[1], sizeof(float)) != 0, "no change after the load");
    }
  }
  free_model(&m);
  free_model(&ref);
  free_model(&ref2);
}

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "collectives";
  int provided = 0;
  const int funneled = strcmp(mode, "funneled") == 0;
  openblas_set_num_threads(1);
  MPI_Init_thread(&argc, &argv, funneled ? MPI_THREAD_FUNNELED : MPI_THREAD_SERIALIZED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_world);
  if (strcmp(mode, "collectives") == 0) {
    EXPECT(provided >= MPI_THREAD_SERIALIZED, "MPI gave thread level %d", provided);
    test_create_arguments();
    test_exchange();
    test_bad_arguments();
    test_all_reduce();
    test_all_gather();
    if (g_world >= 2) {
      test_mismatch(400, 200); /* longer than listed: MPI_ERR_TRUNCATE */
      test_mismatch(200, 400); /* shorter than listed: caught from the status */
      test_timeout();
      test_abort_in_flight();
      test_create_timeout();
    }
  } else if (strcmp(mode, "steps") == 0) {
    test_steps();
  } else if (strcmp(mode, "fault") == 0) {
    const char* how = argc > 3 ? argv[3] : "sleep";
    test_fault(argc > 2 ? atof(argv[2]) : 3.0, strcmp(how, "exit") == 0   ? kFaultExit
                                               : strcmp(how, "kill") == 0 ? kFaultKill
                                                                          : kFaultSleep);
  } else if (strcmp(mode, "mismatch") == 0) {
    test_mismatch_registration(argc > 2 && strcmp(argv[2], "order") == 0 ? kMismatchOrder
                                                                         : kMismatchShape);
  } else if (strcmp(mode, "nccl") == 0) {
    test_nccl_over_mpi();
  } else if (strcmp(mode, "ckpt_save") == 0) {
    test_ckpt_save();
  } else if (strcmp(mode, "ckpt_load") == 0) {
    test_ckpt_load();
  } else if (funneled) {
    normuon_comm_t comm = 0;
    char why[512];
    normuon_status_t s;
    if (provided != MPI_THREAD_FUNNELED) {
      fprintf(stderr, "rank %d: asked for MPI_THREAD_FUNNELED, got %d: cannot test\n", g_rank,
              provided);
      ++g_failures;
    } else {
      s = normuon_comm_create_mpi(MPI_COMM_WORLD, 10.0, &comm, why, sizeof why);
      EXPECT(s == NORMUON_ERROR_INVALID_STATE && contains(why, "MPI_THREAD_FUNNELED") &&
                 contains(why, "MPI_THREAD_SERIALIZED"),
             "create under FUNNELED: %s: %s", normuon_status_string(s), why);
    }
  } else {
    fprintf(stderr, "unknown mode %s\n", mode);
    ++g_failures;
  }
  if (g_failures == 0) printf("%s OK rank %d\n", mode, g_rank);
  fflush(stdout);
  fflush(stderr);
  /* With a dead peer the survivors end as the header's recipe says: without MPI_Finalize, which
   * may wait for the dead rank (seen under load: mpirun still running after 60 s). */
  if (strcmp(mode, "fault") == 0 && argc > 3 &&
      (strcmp(argv[3], "exit") == 0 || strcmp(argv[3], "kill") == 0)) {
    _exit(g_failures == 0 ? 0 : 1);
  }
  MPI_Finalize();
  return g_failures == 0 ? 0 : 1;
}
