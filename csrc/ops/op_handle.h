// What every typed caller in this folder shares. A caller (csrc/ops/<op family>.h) is the one
// place an op's C++ signature is written for code that calls the op through the dispatcher (the
// Autograd kernels in csrc/autograd.cpp, the Autocast kernels in csrc/autocast.cpp): it looks the
// op up once, typed with its own declaration (typed_op<decltype(caller)>), and calls it. The
// schema string stays in csrc/ops.cpp, where torch needs it; the dispatcher checks the caller's
// type against it on the first call, and each kernel's type against it when the kernel registers.
// The pattern is torchvision's (csrc/ops/roi_align.h and .cpp), header-only here: an inline
// function's static is one object in the whole module.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>

namespace ganx {
namespace ops {

template <typename Sig>
c10::TypedOperatorHandle<Sig> typed_op(const char* qualname) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(qualname, "").template typed<Sig>();
}

}  // namespace ops
}  // namespace ganx
