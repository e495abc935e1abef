/* How a data-parallel trainer wires normuon, in C99: one optimizer runtime per rank, each rank
 * registering its FSDP2 row shard of every parameter, and a step after each gradient
 * reduce-scatter.
 *
 * Here the "ranks" are threads in one process joined by normuon's in-process group, so the
 * program runs anywhere (CI runs it). In a real multi-process trainer on GPUs only the
 * communicator changes; the NCCL wiring is shown in trainer_comm() below:
 *   1. rank 0 makes an id (normuon_nccl_get_unique_id) and the trainer broadcasts its 128 bytes
 *      over its own channel (MPI_Bcast, torch.distributed.broadcast, a TCP store, ...);
 *   2. every rank calls normuon_comm_create_nccl(id, rank, world, device, timeout, &comm);
 *   3. normuon_create(&config, comm, &rt) as below, with config.backend = NORMUON_BACKEND_CUDA
 *      and device pointers.
 * The CUDA backend runs the sharded step over any device communicator (NCCL, or the device
 * in-process group when the ranks share one GPU); NCCL between GPUs has not been run by this
 * project yet (no machine with two GPUs).
 *
 *   sharded_trainer [world_size] [steps]
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "normuon/comm.h"
#include "normuon/normuon.h"

/* The model: two linear layers and a bias, as a trainer would list them. */
typedef struct {
  const char* name;
  int64_t rows, cols; /* a 1-D parameter of N elements is rows = N, cols = 1 */
  int is_matrix;
} param_spec_t;

static const param_spec_t kModel[] = {
    {"fc1.weight", 96, 40, 1},
    {"fc1.bias", 96, 1, 0},
    {"fc2.weight", 40, 96, 1},
};
enum { kNumParams = 3 };

typedef struct {
  int rank, world, steps;
  normuon_comm_t comm;
  double checksum;
  int failed;
} rank_args_t;

/* FSDP2's dim-0 layout: ceil(rows / world) rows per rank, the last ranks short or empty. */
static void fsdp2_rows(int64_t rows, int rank, int world, int64_t* begin, int64_t* count) {
  const int64_t chunk = (rows + world - 1) / world;
  int64_t b = chunk * rank, e = chunk * (rank + 1);
  if (b > rows) b = rows;
  if (e > rows) e = rows;
  *begin = b;
  *count = e - b;
}

/* A deterministic stand-in for the gradient shard the reduce-scatter produced. */
static float fake_grad(int param, int64_t global_index, int step) {
  return (float)sin(0.37 * (double)global_index + 1.3 * param + 0.71 * step);
}

#define CHECK_OK(call)                                                              \
  do {                                                                              \
    normuon_status_t st_ = (call);                                                  \
    if (st_ != NORMUON_SUCCESS) {                                                   \
      fprintf(stderr, "rank %d: %s failed: %s: %s\n", a->rank, #call,               \
              normuon_status_string(st_), normuon_last_error(rt));                  \
      a->failed = 1;                                                                \
      goto done;                                                                    \
    }                                                                               \
  } while (0)

static void* rank_main(void* arg) {
  rank_args_t* a = (rank_args_t*)arg;
  normuon_runtime_t rt = 0;
  float* param[kNumParams] = {0};
  float* grad[kNumParams] = {0};
  int64_t begin[kNumParams], count[kNumParams];
  normuon_param_t id[kNumParams];
  normuon_config_t config;
  int i, s;
  int64_t k;

  normuon_config_init(&config);
  config.weight_decay = 0.01f;
  config.schedule = NORMUON_SCHEDULE_BUCKETED; /* overlap communication with Newton-Schulz */
  CHECK_OK(normuon_create(&config, a->comm, &rt));

  /* Register this rank's rows of every parameter, in the same order on every rank. */
  for (i = 0; i < kNumParams; ++i) {
    normuon_param_desc_t d;
    fsdp2_rows(kModel[i].rows, a->rank, a->world, &begin[i], &count[i]);
    param[i] = (float*)calloc((size_t)(count[i] * kModel[i].cols) + 1, sizeof(float));
    grad[i] = (float*)calloc((size_t)(count[i] * kModel[i].cols) + 1, sizeof(float));
    for (k = 0; k < count[i] * kModel[i].cols; ++k) {
      param[i][k] = 0.02f * (float)cos((double)(begin[i] * kModel[i].cols + k));
    }
    normuon_param_desc_init(&d);
    d.name = kModel[i].name;
    d.rows = kModel[i].rows; /* the global shape */
    d.cols = kModel[i].cols;
    d.row_begin = begin[i]; /* this rank's rows */
    d.row_count = count[i];
    d.param = param[i];
    d.grad = grad[i];
    d.group = kModel[i].is_matrix ? NORMUON_GROUP_MATRIX_DEFAULT : NORMUON_GROUP_ADAMW_DEFAULT;
    if (kModel[i].is_matrix) {
      CHECK_OK(normuon_register_matrix(rt, &d, &id[i]));
    } else {
      CHECK_OK(normuon_register_adamw(rt, &d, &id[i]));
    }
  }
  CHECK_OK(normuon_finalize(rt)); /* collective: checks every rank registered the same */

  for (s = 0; s < a->steps; ++s) {
    /* ... forward, backward, gradient reduce-scatter: each rank now holds its gradient rows. */
    for (i = 0; i < kNumParams; ++i) {
      for (k = 0; k < count[i] * kModel[i].cols; ++k) {
        grad[i][k] = fake_grad(i, begin[i] * kModel[i].cols + k, s);
      }
    }
    /* A learning-rate schedule: cosine over the run. */
    CHECK_OK(normuon_step(rt, 0.02f * (float)(0.5 * (1 + cos(3.14159265 * s / a->steps))),
                          0.01f, NULL));
  }

  a->checksum = 0.0;
  for (i = 0; i < kNumParams; ++i) {
    for (k = 0; k < count[i] * kModel[i].cols; ++k) a->checksum += param[i][k];
  }

done:
  if (rt != 0) normuon_destroy(rt);
  for (i = 0; i < kNumParams; ++i) {
    free(param[i]);
    free(grad[i]);
  }
  return NULL;
}

int main(int argc, char** argv) {
  const int world = argc > 1 ? atoi(argv[1]) : 4;
  const int steps = argc > 2 ? atoi(argv[2]) : 5;
  normuon_comm_t comms[64];
  pthread_t threads[64];
  rank_args_t args[64];
  double total = 0.0;
  int r, failed = 0;
  if (world < 1 || world > 64 || steps < 1) {
    fprintf(stderr, "usage: sharded_trainer [world_size 1..64] [steps >= 1]\n");
    return 2;
  }
  /* The trainer's communicator: here N threads; on GPUs, NCCL (see the file comment). */
  if (normuon_comm_create_inprocess_group(world, 60.0, comms) != NORMUON_SUCCESS) {
    fprintf(stderr, "in-process group: %s\n", normuon_comm_last_error(0));
    return 1;
  }
  for (r = 0; r < world; ++r) {
    args[r].rank = r;
    args[r].world = world;
    args[r].steps = steps;
    args[r].comm = comms[r];
    args[r].checksum = 0.0;
    args[r].failed = 0;
    pthread_create(&threads[r], NULL, rank_main, &args[r]);
  }
  for (r = 0; r < world; ++r) {
    pthread_join(threads[r], NULL);
    total += args[r].checksum;
    failed |= args[r].failed;
    normuon_comm_destroy(comms[r]);
  }
  if (failed) return 1;
  printf("sharded_trainer: %d ranks, %d steps, parameter checksum %.9e\n", world, steps, total);
  return 0;
}
