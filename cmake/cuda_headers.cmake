# CUDA headers for the ganx kernels: the toolkit's own first, pip's only for what it lacks.
#
# A pip-installed CUDA torch brings CUDA headers as pip dependencies
# (site-packages/nvidia/cu13/include, or nvidia/<library>/include in the CUDA 12 layout). Those
# folders hold the CUDA library headers that torch's headers include (cusparse.h, cublas_v2.h, ...)
# and which a toolkit may lack, but also a whole CUDA runtime and CCCL (cuda/std, cub, thrust) of
# the wheels' version. Put on the include path as they are, they shadow the toolkit's own headers,
# and a wheel newer than nvcc stops the build (CCCL: "CUDA compiler and CUDA toolkit headers are
# incompatible"). So ganx links, into one folder of the build tree, only the top-level entries of
# those folders that no toolkit include folder has, and puts that folder on the include path.

# ganx_cuda_pip_headers(OUT_DIR TOOLKIT_DIRS PIP_DIRS RESULT_VAR): makes OUT_DIR hold symbolic
# links to the entries of PIP_DIRS (';'-lists) missing from every TOOLKIT_DIRS folder, and nothing
# else; the first PIP_DIRS folder that has an entry wins. Links already right are left alone, so a
# re-configure does not touch them. RESULT_VAR: the linked names.
function(ganx_cuda_pip_headers out_dir toolkit_dirs pip_dirs result_var)
  file(MAKE_DIRECTORY "${out_dir}")
  set(_taken "")
  set(_targets "")
  foreach(_dir IN LISTS pip_dirs)
    file(GLOB _entries RELATIVE "${_dir}" "${_dir}/*")
    list(SORT _entries)
    foreach(_name IN LISTS _entries)
      if(_name IN_LIST _taken)
        continue()
      endif()
      set(_in_toolkit OFF)
      foreach(_tk IN LISTS toolkit_dirs)
        if(EXISTS "${_tk}/${_name}")
          set(_in_toolkit ON)
        endif()
      endforeach()
      if(NOT _in_toolkit)
        list(APPEND _taken "${_name}")
        list(APPEND _targets "${_dir}/${_name}")
      endif()
    endforeach()
  endforeach()
  # Remove what is there but should not be (or points elsewhere), then link what is missing.
  file(GLOB _present RELATIVE "${out_dir}" "${out_dir}/*")
  foreach(_name IN LISTS _present)
    list(FIND _taken "${_name}" _i)
    set(_keep OFF)
    if(_i GREATER -1 AND IS_SYMLINK "${out_dir}/${_name}")
      list(GET _targets ${_i} _want)
      file(READ_SYMLINK "${out_dir}/${_name}" _is)
      if(_is STREQUAL _want)
        set(_keep ON)
      endif()
    endif()
    if(NOT _keep)
      file(REMOVE_RECURSE "${out_dir}/${_name}")
    endif()
  endforeach()
  foreach(_name _want IN ZIP_LISTS _taken _targets)
    if(NOT IS_SYMLINK "${out_dir}/${_name}")
      file(CREATE_LINK "${_want}" "${out_dir}/${_name}" SYMBOLIC)
    endif()
  endforeach()
  set(${result_var} "${_taken}" PARENT_SCOPE)
endfunction()

# ganx_cuda_header_version(DIRS RESULT_VAR): the CUDA runtime version ("13.2") of the first
# cuda_runtime_api.h in DIRS, or "" when none has one.
function(ganx_cuda_header_version dirs result_var)
  set(_v "")
  foreach(_dir IN LISTS dirs)
    if(_v STREQUAL "" AND EXISTS "${_dir}/cuda_runtime_api.h")
      file(STRINGS "${_dir}/cuda_runtime_api.h" _line REGEX "^#define CUDART_VERSION +[0-9]+")
      if(_line MATCHES "CUDART_VERSION +([0-9]+)")
        math(EXPR _major "${CMAKE_MATCH_1} / 1000")
        math(EXPR _minor "(${CMAKE_MATCH_1} % 1000) / 10")
        set(_v "${_major}.${_minor}")
      endif()
    endif()
  endforeach()
  set(${result_var} "${_v}" PARENT_SCOPE)
endfunction()

# ganx_cuda_probe(NVCC ARCH STD INCLUDE_DIRS DEFINES OK_VAR ERROR_VAR): compiles a one-kernel .cu
# file that includes torch's CUDA headers (CUDAContext.h pulls in the CUDA runtime, CCCL and the
# cuBLAS/cuSPARSE/cuSOLVER headers), with the flags of the real build, for one architecture. OK_VAR: TRUE/FALSE; ERROR_VAR: the first error line. The result is
# cached per (nvcc, torch, include path, architecture), so only the first configure pays for it.
function(ganx_cuda_probe nvcc arch std include_dirs defines ok_var error_var)
  set(_key "${nvcc}|${TORCH_VERSION}|${arch}|${std}|${include_dirs}|${defines}")
  if(DEFINED CACHE{GANX_CUDA_PROBE_KEY} AND "$CACHE{GANX_CUDA_PROBE_KEY}" STREQUAL "${_key}")
    set(${ok_var} "$CACHE{GANX_CUDA_PROBE_OK}" PARENT_SCOPE)
    set(${error_var} "$CACHE{GANX_CUDA_PROBE_ERROR}" PARENT_SCOPE)
    return()
  endif()
  set(_dir "${CMAKE_BINARY_DIR}/ganx_cuda_probe")
  file(MAKE_DIRECTORY "${_dir}")
  file(WRITE "${_dir}/probe.cu"
    "#include <ATen/cuda/CUDAContext.h>\n"
    "#include <c10/cuda/CUDAGuard.h>\n"
    "__global__ void ganx_probe(float* p) { p[threadIdx.x] = 1.0f; }\n"
    "void ganx_probe_launch(float* p) { ganx_probe<<<1, 1, 0, at::cuda::getCurrentCUDAStream()>>>(p); }\n")
  set(_args -c "${_dir}/probe.cu" -o "${_dir}/probe.o" -std=c++${std} --expt-relaxed-constexpr
            "-gencode=arch=compute_${arch},code=sm_${arch}")
  foreach(_d IN LISTS include_dirs)
    list(APPEND _args "-I${_d}")
  endforeach()
  foreach(_d IN LISTS defines)
    list(APPEND _args "-D${_d}")
  endforeach()
  message(STATUS "ganx: checking that nvcc compiles torch's CUDA headers (sm_${arch}; once per build folder)")
  execute_process(COMMAND "${nvcc}" ${_args} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _out)
  set(_ok TRUE)
  set(_err "")
  if(NOT _rc EQUAL 0)
    set(_ok FALSE)
    string(REGEX MATCH "[^\n]*error[^\n]*" _err "${_out}")
    if(_err STREQUAL "")
      string(REGEX MATCH "[^\n]+" _err "${_out}")
    endif()
    string(STRIP "${_err}" _err)
    file(WRITE "${_dir}/probe.log" "${_out}")
  endif()
  set(GANX_CUDA_PROBE_KEY "${_key}" CACHE INTERNAL "")
  set(GANX_CUDA_PROBE_OK "${_ok}" CACHE INTERNAL "")
  set(GANX_CUDA_PROBE_ERROR "${_err}" CACHE INTERNAL "")
  set(${ok_var} "${_ok}" PARENT_SCOPE)
  set(${error_var} "${_err}" PARENT_SCOPE)
endfunction()
