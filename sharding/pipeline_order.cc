#include "sharding/pipeline_order.h"

#include <algorithm>

namespace normuon::sharding {

std::vector<PipelineCollective> PipelineOrder(const std::vector<int64_t>& matrices_per_bucket,
                                              int world) {
  const int buckets = static_cast<int>(matrices_per_bucket.size());
  std::vector<PipelineCollective> order;
  order.reserve(2 * static_cast<size_t>(buckets));
  int gathered = 0;  // gathers issued so far: buckets [0, gathered)
  for (int k = 0; k < buckets; ++k) {
    // j: the last bucket whose gather must precede scatter(k).
    int j = k;
    int64_t in_flight = matrices_per_bucket[k];
    while (j + 1 < buckets && (j < k + 1 || in_flight < world)) {
      ++j;
      in_flight += matrices_per_bucket[j];
    }
    while (gathered <= j) order.push_back({true, gathered++});
    order.push_back({false, k});
  }
  return order;
}

}  // namespace normuon::sharding
