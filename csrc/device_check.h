// One wording for "an argument on the wrong device", shared by every op's checks and by the
// fake kernels' Python twin (python/ganx/ops/_checks.py, check_device), in torch's words:
// "<op>: <arg> on device meta is not on the expected device cpu (the device of <ref>)".
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace ganx {

inline void check_device(const char* op, const char* arg, const at::Tensor& t, const char* ref_arg,
                         const at::Tensor& ref) {
  TORCH_CHECK(t.device() == ref.device(), op, ": ", arg, " on device ", t.device(),
              " is not on the expected device ", ref.device(), " (the device of ", ref_arg, ")");
}

}  // namespace ganx
