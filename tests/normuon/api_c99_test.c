/* The public header compiled as strict C99 and used from C: no C++ may leak into it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "normuon/normuon.h"

#define CHECK(cond)                                            \
  do {                                                         \
    if (!(cond)) {                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      return 1;                                                \
    }                                                          \
  } while (0)

int main(void) {
  normuon_config_t config;
  normuon_runtime_t rt = 0;
  normuon_param_desc_t desc;
  normuon_param_t id = -1;
  normuon_step_info_t info;
  float param[12 * 8];
  float grad[12 * 8];
  int i;
  for (i = 0; i < 12 * 8; ++i) {
    param[i] = 0.01f * (float)(i % 7);
    grad[i] = (float)((i * 37) % 11) - 5.0f;
  }
  normuon_config_init(&config);
  CHECK(normuon_create(&config, 0, &rt) == NORMUON_SUCCESS);
  normuon_param_desc_init(&desc);
  desc.name = "layer.weight";
  desc.rows = 12;
  desc.cols = 8;
  desc.row_begin = 0;
  desc.row_count = 12;
  desc.param = param;
  desc.grad = grad;
  desc.group = NORMUON_GROUP_MATRIX_DEFAULT;
  CHECK(normuon_register_matrix(rt, &desc, &id) == NORMUON_SUCCESS);
  CHECK(id == 0);
  CHECK(normuon_finalize(rt) == NORMUON_SUCCESS);
  CHECK(normuon_step(rt, 0.02f, 0.01f, NULL) == NORMUON_SUCCESS);
  normuon_step_info_init(&info);
  CHECK(normuon_step_result(rt, &info) == NORMUON_SUCCESS);
  CHECK(info.steps_taken == 1 && info.last_skipped == 0);
  CHECK(param[1] != 0.01f); /* the step moved the parameter */
  CHECK(normuon_step(rt, -1.0f, -1.0f, NULL) == NORMUON_SUCCESS);
  CHECK(normuon_destroy(rt) == NORMUON_SUCCESS);
  CHECK(normuon_destroy(rt) == NORMUON_ERROR_INVALID_HANDLE);
  CHECK(strlen(normuon_last_error(rt)) > 0);
  printf("C99 API test passed\n");
  return 0;
}
