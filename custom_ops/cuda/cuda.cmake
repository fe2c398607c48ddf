# The CUDA kernel of DynamicLearners: included by ../CMakeLists.txt once the target acmtool_ops exists.
#
#   ACMTOOL_CUDA=AUTO (default)  the CUDA kernel when nvcc and the cuBLAS headers are found, else a
#                                CPU-only library and a status line that says why
#   ACMTOOL_CUDA=ON              the CUDA kernel, or a configure error that says what is missing
#   ACMTOOL_CUDA=OFF             a CPU-only library; nothing here is looked for
#
# What it needs: nvcc (CMAKE_CUDA_COMPILER, $CUDACXX, PATH, /usr/local/cuda/bin) and the static CUDA
# runtime of its toolkit; the cuBLASLt headers of the same major version (ACMTOOL_CUBLAS_ROOT, cache
# or environment, a folder with include/cublasLt.h; else the toolkit; else the nvidia-cublas wheel
# that torch installs: site-packages/nvidia/cu<major>/ of ../.venv, of $VIRTUAL_ENV, or of the
# python3 found first). Only cublasLt.h and cublas_api.h are taken from the wheel (copied into the
# build tree), so the rest of the CUDA headers always come from nvcc's toolkit.
#
# Linking: the CUDA runtime statically (CUDA::cudart_static): the library then needs no
# libcudart.so of a matching version at load time, works beside whichever libcudart ONNX Runtime's
# CUDA provider brought (streams and device memory belong to the driver's primary context, which
# both runtimes share), and still loads on a machine without CUDA, where the CPU kernel runs as
# before. libcublasLt is not linked at all: cuda/cublaslt_loader.cc dlopens it on the first CUDA Run
# (the build records the folder it was found in as a last resort).
#
# Code: SASS for sm_90 (H100/H200) and PTX for compute_75, which the driver compiles for any other
# GPU that CUDA 13 supports (ACMTOOL_CUDA_ARCHITECTURES, CMake's CUDA_ARCHITECTURES syntax).

set(ACMTOOL_CUDA "AUTO" CACHE STRING "Build the CUDA kernel of DynamicLearners: AUTO, ON or OFF")
set_property(CACHE ACMTOOL_CUDA PROPERTY STRINGS AUTO ON OFF)
set(ACMTOOL_CUDA_ARCHITECTURES "90-real;75-virtual" CACHE STRING
    "CUDA architectures of the CUDA kernel (default: sm_90 SASS + compute_75 PTX)")
set(ACMTOOL_CUBLAS_ROOT "" CACHE PATH "A folder with include/cublasLt.h (and lib/libcublasLt.so.*)")
string(TOUPPER "${ACMTOOL_CUDA}" _acmtool_cuda_mode)
set(ACMTOOL_WITH_CUDA OFF)

# AUTO: a status line and a CPU-only build; ON: a configure error.
macro(_acmtool_cuda_unavailable why)
  if(_acmtool_cuda_mode STREQUAL "ON")
    message(FATAL_ERROR "ACMTOOL_CUDA=ON but ${why}")
  endif()
  message(STATUS "CUDA kernel: off (ACMTOOL_CUDA=AUTO and ${why})")
  return()
endmacro()

if(_acmtool_cuda_mode STREQUAL "OFF")
  message(STATUS "CUDA kernel: off (ACMTOOL_CUDA=OFF)")
  return()
elseif(NOT _acmtool_cuda_mode MATCHES "^(AUTO|ON)$")
  message(FATAL_ERROR "ACMTOOL_CUDA must be AUTO, ON or OFF; got '${ACMTOOL_CUDA}'")
endif()

# ---- nvcc (found without a test compile, so AUTO costs nothing on a machine without CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  set(_hints "")
  if(DEFINED ENV{CUDACXX} AND NOT "$ENV{CUDACXX}" STREQUAL "")
    get_filename_component(_dir "$ENV{CUDACXX}" DIRECTORY)
    list(APPEND _hints "${_dir}")
  endif()
  if(DEFINED ENV{CUDA_HOME})
    list(APPEND _hints "$ENV{CUDA_HOME}/bin")
  endif()
  find_program(ACMTOOL_NVCC nvcc HINTS ${_hints} PATHS /usr/local/cuda/bin /opt/cuda/bin)
  if(NOT ACMTOOL_NVCC)
    _acmtool_cuda_unavailable("nvcc was not found (set CMAKE_CUDA_COMPILER or CUDACXX, or put nvcc on PATH)")
  endif()
  set(CMAKE_CUDA_COMPILER "${ACMTOOL_NVCC}")
endif()

# ---- cuBLASLt headers (before enable_language, so AUTO can still back out)
execute_process(COMMAND "${CMAKE_CUDA_COMPILER}" --version OUTPUT_VARIABLE _nvcc_out RESULT_VARIABLE _nvcc_rc)
if(NOT _nvcc_rc EQUAL 0 OR NOT _nvcc_out MATCHES "release ([0-9]+)\\.([0-9]+)")
  _acmtool_cuda_unavailable("${CMAKE_CUDA_COMPILER} --version did not run")
endif()
set(_cuda_major "${CMAKE_MATCH_1}")
# The toolkit's folder, as nvcc itself sees it ("#$ TOP=..."): /usr/local/bin/nvcc may be a script
# that runs the real one elsewhere. The real nvcc is what CMake then drives.
execute_process(COMMAND "${CMAKE_CUDA_COMPILER}" --dryrun -E -x cu /dev/null
                OUTPUT_VARIABLE _dry ERROR_VARIABLE _dry RESULT_VARIABLE _dry_rc)
set(_toolkit_include "")
if(_dry MATCHES "#\\$ TOP=([^\n]*)")
  get_filename_component(_top "${CMAKE_MATCH_1}" ABSOLUTE)
  set(_toolkit_include "${_top}/include")
  if(EXISTS "${_top}/bin/nvcc")
    set(CMAKE_CUDA_COMPILER "${_top}/bin/nvcc")
  endif()
endif()

set(_cublas_candidates "")
foreach(_root IN ITEMS "${ACMTOOL_CUBLAS_ROOT}" "$ENV{ACMTOOL_CUBLAS_ROOT}")
  if(NOT "${_root}" STREQUAL "")
    list(APPEND _cublas_candidates "${_root}/include")
  endif()
endforeach()
if(_toolkit_include)
  list(APPEND _cublas_candidates "${_toolkit_include}")
endif()
list(APPEND _cublas_candidates /usr/local/cuda/include)
set(_site_globs "${CMAKE_CURRENT_SOURCE_DIR}/../.venv/lib/python3*/site-packages")
if(DEFINED ENV{VIRTUAL_ENV} AND NOT "$ENV{VIRTUAL_ENV}" STREQUAL "")
  list(APPEND _site_globs "$ENV{VIRTUAL_ENV}/lib/python3*/site-packages")
endif()
foreach(_glob IN LISTS _site_globs)
  file(GLOB _sites LIST_DIRECTORIES true "${_glob}")
  foreach(_site IN LISTS _sites)
    list(APPEND _cublas_candidates "${_site}/nvidia/cu${_cuda_major}/include" "${_site}/nvidia/cublas/include")
  endforeach()
endforeach()

set(_cublas_include "")
foreach(_dir IN LISTS _cublas_candidates)
  if(EXISTS "${_dir}/cublasLt.h" AND EXISTS "${_dir}/cublas_api.h")
    set(_cublas_include "${_dir}")
    break()
  endif()
endforeach()
if(NOT _cublas_include)
  # Last: the site-packages of the first python3 (slower: it runs the interpreter).
  find_package(Python3 COMPONENTS Interpreter QUIET)
  if(Python3_FOUND)
    foreach(_dir IN ITEMS "${Python3_SITELIB}/nvidia/cu${_cuda_major}/include" "${Python3_SITELIB}/nvidia/cublas/include")
      if(EXISTS "${_dir}/cublasLt.h")
        set(_cublas_include "${_dir}")
        break()
      endif()
    endforeach()
  endif()
endif()
if(NOT _cublas_include)
  _acmtool_cuda_unavailable("the cuBLAS headers (cublasLt.h) were not found: set ACMTOOL_CUBLAS_ROOT, or pip install nvidia-cublas (torch's CUDA wheels bring it)")
endif()
get_filename_component(_cublas_include "${_cublas_include}" ABSOLUTE)
file(STRINGS "${_cublas_include}/cublas_api.h" _ver REGEX "#define CUBLAS_VER_MAJOR")
string(REGEX MATCH "[0-9]+" _cublas_major "${_ver}")
if(NOT _cublas_major STREQUAL _cuda_major)
  _acmtool_cuda_unavailable("the cuBLAS headers in ${_cublas_include} are of CUDA ${_cublas_major}, nvcc is CUDA ${_cuda_major}")
endif()
# The folder of libcublasLt.so.<major>, compiled in as the loader's last resort.
set(ACMTOOL_CUBLASLT_DIR "")
foreach(_dir IN ITEMS "${_cublas_include}/../lib" "${_cublas_include}/../lib64" "${_toolkit_include}/../lib64"
                      "${_toolkit_include}/../lib")
  if(EXISTS "${_dir}/libcublasLt.so.${_cuda_major}")
    get_filename_component(ACMTOOL_CUBLASLT_DIR "${_dir}" ABSOLUTE)
    break()
  endif()
endforeach()

# ---- the build
set(CMAKE_CUDA_ARCHITECTURES "${ACMTOOL_CUDA_ARCHITECTURES}")
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
if(NOT TARGET CUDA::cudart_static)
  _acmtool_cuda_unavailable("the toolkit of ${CMAKE_CUDA_COMPILER} has no static CUDA runtime (libcudart_static.a)")
endif()
set(ACMTOOL_WITH_CUDA ON)
set(_cublas_copy "${CMAKE_BINARY_DIR}/cublas_headers")
file(COPY "${_cublas_include}/cublasLt.h" "${_cublas_include}/cublas_api.h" DESTINATION "${_cublas_copy}")
message(STATUS "CUDA kernel: on (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${ACMTOOL_CUDA_ARCHITECTURES}, "
               "cuBLASLt headers ${_cublas_include}, libcublasLt.so.${_cuda_major} loaded at run time)")

# The kernels, the launchers and the cuBLASLt loader: no ONNX Runtime; shared by the library and the
# standalone test program.
add_library(acmtool_cuda_kernels STATIC
  cuda/dynamic_learners_cuda_impl.cu
  cuda/cublaslt_loader.cc
)
set_target_properties(acmtool_cuda_kernels PROPERTIES
  CUDA_ARCHITECTURES "${ACMTOOL_CUDA_ARCHITECTURES}"
  CUDA_STANDARD 17
  CUDA_STANDARD_REQUIRED ON
  CUDA_RUNTIME_LIBRARY Static
  CUDA_VISIBILITY_PRESET hidden
  POSITION_INDEPENDENT_CODE ON)
target_include_directories(acmtool_cuda_kernels PUBLIC "${CMAKE_CURRENT_SOURCE_DIR}")
target_include_directories(acmtool_cuda_kernels SYSTEM PUBLIC ${CUDAToolkit_INCLUDE_DIRS} "${_cublas_copy}")
if(ACMTOOL_CUBLASLT_DIR)
  target_compile_definitions(acmtool_cuda_kernels PRIVATE ACMTOOL_CUBLASLT_DIR="${ACMTOOL_CUBLASLT_DIR}")
endif()
target_compile_options(acmtool_cuda_kernels PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wno-unused-parameter>
  $<$<AND:$<COMPILE_LANGUAGE:CUDA>,$<CONFIG:Release,RelWithDebInfo>>:-O3>
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>)
target_link_libraries(acmtool_cuda_kernels PUBLIC CUDA::cudart_static ${CMAKE_DL_LIBS})

target_sources(acmtool_ops PRIVATE cuda/dynamic_learners_cuda.cc)
target_compile_definitions(acmtool_ops PRIVATE ACMTOOL_WITH_CUDA)
target_link_libraries(acmtool_ops PRIVATE acmtool_cuda_kernels)
set_target_properties(acmtool_ops PROPERTIES CUDA_RUNTIME_LIBRARY Static)

# The standalone test of the launchers (and the op benchmark, with --bench): needs a GPU to run,
# not ONNX Runtime.
add_executable(test_dynamic_learners_cuda cuda/tests/test_dynamic_learners_cuda.cc)
target_link_libraries(test_dynamic_learners_cuda PRIVATE acmtool_cuda_kernels)
target_compile_options(test_dynamic_learners_cuda PRIVATE -Wall -Wextra -Wno-unused-parameter)
set_target_properties(test_dynamic_learners_cuda PROPERTIES CUDA_RUNTIME_LIBRARY Static)
