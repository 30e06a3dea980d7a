"""Print what the build needs to know about the torch that will import ganx (KEY=value lines).

Run by CMakeLists.txt with the same interpreter that runs the build (no build isolation).
"""
import glob
import inspect
import os
import sys

import torch
import torch.utils.cpp_extension as cpp_extension

root = os.path.dirname(torch.__file__)
site = os.path.dirname(root)
includes = [os.path.join(root, "include"), os.path.join(root, "include", "torch", "csrc", "api", "include")]
# CUDA library headers shipped as pip dependencies of a CUDA torch (nvidia/cu13/include, or
# one folder per library in older layouts).
nvidia = sorted(glob.glob(os.path.join(site, "nvidia", "cu*", "include")))
nvidia += sorted(glob.glob(os.path.join(site, "nvidia", "*", "include")))
nvidia = [p for i, p in enumerate(nvidia) if p not in nvidia[:i]]

std = "20" if "-std=c++20" in inspect.getsource(cpp_extension) else "17"

archs = ""
if torch.version.cuda is not None and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
    try:
        if torch.cuda.is_available():
            caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
            archs = ";".join(f"{a}.{b}" for a, b in caps)
    except Exception:  # a broken driver must not break a CPU-capable build
        archs = ""


def out(key, value):
    sys.stdout.write(f"{key}={value}\n")


out("TORCH_VERSION", torch.__version__)
out("TORCH_CUDA_VERSION", torch.version.cuda)
out("TORCH_INCLUDE_DIRS", ";".join(includes))
out("TORCH_LIB_DIR", os.path.join(root, "lib"))
out("TORCH_CXX11_ABI", int(torch._C._GLIBCXX_USE_CXX11_ABI))
out("TORCH_CXX_STANDARD", std)
out("TORCH_NVIDIA_INCLUDE_DIRS", ";".join(nvidia))
out("TORCH_VISIBLE_ARCHS", archs)
