// Division by a divisor fixed for a whole launch, as a multiply-high, an add and a shift
// (Granlund and Montgomery, "Division by invariant integers using multiplication", 1994;
// PyTorch's IntDivider does the same). For 1 <= d < 2^31 and 0 <= n < 2^31:
//   s = ceil(log2 d),  m = floor(2^32 (2^s - d) / d) + 1  (fits 32 bits: 2^s - d < d),
//   n / d = (umulhi(n, m) + n) >> s          (umulhi(n, m) <= n, so the sum fits 32 bits).
// A GPU has no integer divide: n / d is a ~20-instruction routine (a reciprocal, its
// refinement and two corrections); this is 3. The host computes m and s once per launch.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

namespace alexnet_cuda {

struct IntDivider {
  uint32_t d = 1, m = 1, s = 0;

  IntDivider() = default;
  // An empty dimension (divisor 0) divides as 1: no index of such a launch exists.
  explicit IntDivider(int divisor) : d(divisor > 1 ? static_cast<uint32_t>(divisor) : 1u) {
    while ((uint64_t(1) << s) < d) ++s;
    m = static_cast<uint32_t>(((uint64_t(1) << 32) * ((uint64_t(1) << s) - d)) / d + 1);
  }

  C10_HOST_DEVICE C10_ALWAYS_INLINE uint32_t div(uint32_t n) const {
#if defined(__CUDA_ARCH__)
    const uint32_t hi = __umulhi(n, m);
#else
    const uint32_t hi = static_cast<uint32_t>((uint64_t(n) * m) >> 32);
#endif
    return (hi + n) >> s;
  }

  // q = n / d, r = n % d for 0 <= n < 2^31 (launches that index with int): the multiply
  // alone, no 64-bit path.
  C10_HOST_DEVICE C10_ALWAYS_INLINE int divmod(int n, int* r) const {
    const int q = static_cast<int>(div(static_cast<uint32_t>(n)));
    *r = n - q * static_cast<int>(d);
    return q;
  }

  // q = n / d, r = n % d for any n >= 0: the multiply while n < 2^31 (every index of a
  // launch short of 2^31 items), a 64-bit division past that.
  C10_HOST_DEVICE C10_ALWAYS_INLINE void divmod(int64_t n, int64_t& q, int64_t& r) const {
    if ((n >> 31) == 0) {
      const uint32_t q32 = div(static_cast<uint32_t>(n));
      q = q32;
      r = static_cast<uint32_t>(n) - q32 * d;
    } else {
      q = n / d;
      r = n - q * d;
    }
  }
};

}  // namespace alexnet_cuda
