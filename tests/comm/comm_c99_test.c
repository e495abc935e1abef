/* normuon/comm.h compiled as strict C99 and used from C: a custom loopback communicator, an
 * in-process group with a fault armed, handle misuse. No C++ may leak into the header. */
#include <stdio.h>
#include <string.h>

#include "normuon/comm.h"

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      return 1;                                                                \
    }                                                                          \
  } while (0)

typedef struct loopback {
  int destroyed;
  char message[64];
} loopback_t;

static normuon_status_t loop_exchange(void* ctx, const normuon_p2p_t* sends, int32_t n_sends,
                                      const normuon_p2p_t* recvs, int32_t n_recvs, void* stream) {
  int32_t i;
  (void)ctx;
  (void)stream;
  if (n_sends != n_recvs) return NORMUON_ERROR_INVALID_ARGUMENT;
  for (i = 0; i < n_sends; ++i) memcpy(recvs[i].buf, sends[i].buf, (size_t)sends[i].bytes);
  return NORMUON_SUCCESS;
}

static normuon_status_t loop_reduce(void* ctx, const float* in, float* out, uint64_t count,
                                    void* stream) {
  (void)ctx;
  (void)stream;
  if (in != out) memcpy(out, in, (size_t)count * sizeof(float));
  return NORMUON_SUCCESS;
}

static normuon_status_t loop_gather(void* ctx, const void* in, void* out, uint64_t bytes,
                                    void* stream) {
  (void)ctx;
  (void)stream;
  if (in != out) memcpy(out, in, (size_t)bytes);
  return NORMUON_SUCCESS;
}

static void loop_destroy(void* ctx) { ((loopback_t*)ctx)->destroyed += 1; }

static const char* loop_last_error(void* ctx) { return ((loopback_t*)ctx)->message; }

int main(void) {
  loopback_t loop;
  normuon_comm_ops_t ops;
  normuon_comm_t custom = 0;
  normuon_comm_t group[2] = {0, 0};
  normuon_status_t async_error = NORMUON_ERROR_INTERNAL;
  int32_t rank = -1;
  int32_t world = -1;

  memset(&loop, 0, sizeof(loop));
  normuon_comm_ops_init(&ops);
  CHECK(ops.struct_size == sizeof(normuon_comm_ops_t));
  ops.ctx = &loop;
  ops.exchange = loop_exchange;
  ops.all_reduce_sum_f32 = loop_reduce;
  ops.all_gather = loop_gather;
  ops.destroy = loop_destroy;
  ops.last_error = loop_last_error;
  CHECK(normuon_comm_create_custom(&ops, &custom) == NORMUON_SUCCESS);
  CHECK(normuon_comm_rank(custom, &rank) == NORMUON_SUCCESS && rank == 0);
  CHECK(normuon_comm_world_size(custom, &world) == NORMUON_SUCCESS && world == 1);
  CHECK(normuon_comm_get_async_error(custom, &async_error) == NORMUON_SUCCESS);
  CHECK(async_error == NORMUON_SUCCESS);
  CHECK(normuon_comm_inject_fault(custom, NORMUON_FAULT_ERROR, 0) == NORMUON_ERROR_UNSUPPORTED);
  CHECK(strlen(normuon_comm_last_error(custom)) > 0);
  CHECK(normuon_comm_destroy(custom) == NORMUON_SUCCESS);
  CHECK(loop.destroyed == 1);
  CHECK(normuon_comm_destroy(custom) == NORMUON_ERROR_INVALID_HANDLE);

  ops.exchange = NULL;
  CHECK(normuon_comm_create_custom(&ops, &custom) == NORMUON_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(normuon_comm_last_error(0), "exchange") != NULL);

  CHECK(normuon_comm_create_inprocess_group(2, 1.0, group) == NORMUON_SUCCESS);
  CHECK(normuon_comm_inject_fault(group[1], NORMUON_FAULT_NEVER_ARRIVE, 3) == NORMUON_SUCCESS);
  CHECK(normuon_comm_abort(group[0]) == NORMUON_SUCCESS);
  CHECK(normuon_comm_get_async_error(group[1], &async_error) == NORMUON_SUCCESS);
  CHECK(async_error == NORMUON_ERROR_COMM);
  CHECK(normuon_comm_destroy(group[0]) == NORMUON_SUCCESS);
  CHECK(normuon_comm_destroy(group[1]) == NORMUON_SUCCESS);
  CHECK(normuon_comm_rank(0, &rank) == NORMUON_ERROR_INVALID_HANDLE);
  printf("comm.h C99 test passed\n");
  return 0;
}
